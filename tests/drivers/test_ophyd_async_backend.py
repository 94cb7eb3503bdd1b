"""`OphydAsyncBackend`: dklscope's runner driving ophyd-async devices (a motor pair and a
spectrum detector) through the driver protocol. The devices are real ophyd-async devices on
bluesky's event loop: `SimMotor`\\ s and a detector over the simulated microscope."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bluesky")
pytest.importorskip("ophyd_async")

from bluesky import RunEngine
from ophyd_async.core import init_devices, soft_signal_rw

from dklscope.drivers import DriverServer, MicroscopeClient
from dklscope.drivers.conformance import CHECKS, run_checks
from dklscope.drivers.ophyd_async import OphydAsyncBackend, StageGeometry, simulated_devices
from dklscope.simulators import SimulatedMicroscope, lattice_sample


@pytest.fixture(scope="module")
def run_engine():
    """A RunEngine: it starts bluesky's event loop, where the devices connect and run."""
    return RunEngine({})


def make_backend(run_engine, *, seed=1, **overrides):
    """The simulated microscope as ophyd-async devices, and the backend over those devices
    (motors in nm: the pixel size is not 1, so the conversion is exercised)."""
    scope = SimulatedMicroscope(lattice_sample(shape=(24, 32), seed=3), seed=seed)
    with init_devices():
        sim = simulated_devices(scope, name="stage")
    kwargs = dict(
        description=scope.describe(),
        overview=scope.get_overview,
        spectrum=sim.detector.spectrum,
        dwell=sim.detector.acquire_time,
        geometry=sim.geometry,
    )
    kwargs.update(overrides)
    return OphydAsyncBackend(sim.x, sim.y, sim.detector, **kwargs), sim, scope


def test_the_ophyd_async_backend_passes_the_conformance_suite(run_engine):
    backend, _, _ = make_backend(run_engine)
    with DriverServer(backend, "tcp://127.0.0.1:0") as server:
        results = run_checks(server.endpoint, timeout_s=10.0)
    assert [r.name for r in results] == list(CHECKS)
    assert [r for r in results if not r.passed] == []


def test_moves_set_the_motors_and_spectra_are_the_instruments(run_engine):
    backend, sim, scope = make_backend(run_engine)
    twin = SimulatedMicroscope(scope.sample, seed=1)  # the same noise for the same visits
    size = scope.describe().pixel_size
    for x, y in [(3.0, 4.0), (31.0, 0.0), (3.0, 4.0), (10.0, 23.0)]:
        assert backend.move_probe(x, y) == pytest.approx((x, y))
        acq = backend.acquire(0.02)
        twin.move_probe(x, y)
        np.testing.assert_array_equal(acq.spectrum, twin.acquire(0.02).spectrum)
        assert (acq.x, acq.y, acq.dwell_s) == pytest.approx((x, y, 0.02))
        assert acq.spectrum.dtype == np.float32 and math.isfinite(acq.timestamp)
    # The motors are in nm; the detector took the dwell it was given.
    assert sim.geometry.to_motor(10.0, 23.0) == pytest.approx((10.0 * size, 23.0 * size))
    assert scope.n_acquisitions == 4 and scope.visits.sum() == 4
    np.testing.assert_array_equal(backend.get_overview(), scope.get_overview())


def test_a_short_campaign_runs_against_the_served_devices(run_engine):
    from dklscope.campaign.journal import Journal
    from dklscope.campaign.loop import Campaign
    from dklscope.config import parse_config

    backend, _, scope = make_backend(run_engine)
    with DriverServer(backend, "tcp://127.0.0.1:0") as server:
        config = parse_config(
            f"instrument: {{address: '{server.endpoint}'}}\n"
            "dwell_s: 0.02\n"
            "scalarizer: {kind: peak_intensity, window: [1.05, 1.35]}\n"
            "budget: {seed_points: 3, steps: 2}\npatches: {size: 6}\n"
        )
        with MicroscopeClient(server.endpoint) as client, Journal(":memory:") as journal:
            campaign = Campaign(config, client, journal)
            assert campaign.run() == "budget of steps spent"
            history = campaign.history
    twin = SimulatedMicroscope(scope.sample, seed=1)
    axis = scope.describe().spectral_axis.values()
    assert [m.status for m in history] == ["ok"] * 5
    for m in history:
        assert (m.x_read, m.y_read) == pytest.approx((m.x, m.y))
        twin.move_probe(m.x, m.y)
        truth = twin.acquire(0.02).spectrum
        np.testing.assert_array_equal(m.spectrum, truth)
        assert m.scalar == pytest.approx(float(campaign.scalarizer(truth, axis)))


def test_stage_geometry_round_trips_and_refuses_nonsense():
    g = StageGeometry(origin_x=-1.5, origin_y=20.0, scale_x=0.25, scale_y=-0.5)
    assert g.to_motor(4.0, 6.0) == pytest.approx((-0.5, 17.0))
    assert g.to_pixels(*g.to_motor(7.25, 3.5)) == pytest.approx((7.25, 3.5))
    with pytest.raises(ValueError, match=r"StageGeometry\.scale_y: must not be 0"):
        StageGeometry(scale_y=0.0)
    with pytest.raises(ValueError, match=r"StageGeometry\.origin_x: must be a finite number"):
        StageGeometry(origin_x=math.nan)


def test_what_the_devices_cannot_do_is_a_clear_error(run_engine):
    backend, sim, scope = make_backend(run_engine, overview=np.zeros((5, 5)))
    with pytest.raises(ValueError, match=r"the overview is \(5, 5\), the description says"):
        backend.get_overview()
    backend, _, _ = make_backend(run_engine, spectrum="stage-det-nothing")
    backend.move_probe(1.0, 1.0)
    with pytest.raises(KeyError, match="no 'stage-det-nothing'"):
        backend.acquire(0.01)
    with pytest.raises(TypeError, match=r"detector .* has no trigger"):
        OphydAsyncBackend(
            sim.x,
            sim.y,
            object(),
            description=scope.describe(),
            overview=scope.get_overview,
            spectrum="x",
        )
    stopped = asyncio.new_event_loop()
    try:
        backend, _, _ = make_backend(run_engine, loop=stopped)
        with pytest.raises(RuntimeError, match="event loop is not running"):
            backend.move_probe(1.0, 1.0)
    finally:
        stopped.close()


class HungDetector:
    """A detector whose exposure never ends."""

    name = "hung"

    async def trigger(self) -> None:
        await asyncio.sleep(60)

    async def read(self) -> dict:
        return {}


def test_a_hung_device_times_out_and_the_backend_answers_again(run_engine):
    _, sim, scope = make_backend(run_engine)
    hung = OphydAsyncBackend(
        sim.x,
        sim.y,
        HungDetector(),
        description=scope.describe(),
        overview=scope.get_overview,
        spectrum="hung",
        timeout_s=0.2,
    )
    with pytest.raises(TimeoutError, match=r"acquire: no answer from the devices in 0\.21 s"):
        hung.acquire(0.01)
    assert hung.move_probe(2.0, 3.0) == pytest.approx((2.0, 3.0))


def test_the_readme_example_serves_simulated_devices_that_pass_every_check():
    readme = Path(__file__).resolve().parents[2] / "drivers" / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    (example,) = [b for b in blocks if "OphydAsyncBackend(" in b]
    serve = 'DriverServer(backend, "tcp://127.0.0.1:5555").serve_forever()\n'
    assert example.endswith(serve)
    namespace: dict = {}
    exec(compile(example.removesuffix(serve), str(readme), "exec"), namespace)
    with DriverServer(namespace["backend"], "tcp://127.0.0.1:0") as server:
        results = run_checks(server.endpoint, timeout_s=10.0)
    assert [r for r in results if not r.passed] == []


def test_a_shutter_is_the_dead_man_switch_and_the_next_move_opens_it(run_engine):
    with init_devices():
        shutter = soft_signal_rw(str, "open", name="shutter")
    backend, _, _ = make_backend(run_engine, shutter=(shutter, "closed", "open"))
    with DriverServer(backend, "tcp://127.0.0.1:0") as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            assert "blank" in client.hello()["capabilities"]
    backend.blank()
    assert backend.blanked
    assert _value(shutter) == "closed"
    backend.move_probe(2.0, 2.0)
    assert _value(shutter) == "open" and not backend.blanked
    plain, _, _ = make_backend(run_engine)
    assert not hasattr(plain, "blank")  # no shutter: the server has no hook to call


def _value(signal):
    from bluesky.run_engine import call_in_bluesky_event_loop

    return call_in_bluesky_event_loop(signal.get_value(), timeout=5.0)
