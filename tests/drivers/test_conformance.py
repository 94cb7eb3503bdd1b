"""The conformance suite, run against every backend we ship; and it catches a broken server."""

from __future__ import annotations

import numpy as np
import pytest

from dklscope.drivers import Acquisition, DriverServer
from dklscope.drivers.conformance import CHECKS, run_checks

from .conftest import FakeBackend, make_description


def simulated_microscope():
    from dklscope.simulators import SimulatedMicroscope, lattice_sample

    return SimulatedMicroscope(lattice_sample(shape=(24, 32), seed=3), seed=1)


BACKENDS = {
    "fake": lambda: FakeBackend(),
    "fake with forbidden regions": lambda: FakeBackend(
        make_description(probe_limits=(1.0, 6.0, 0.5, 4.5), forbidden_regions=[(2, 3, 1, 2)])
    ),
    "simulated microscope": simulated_microscope,
}


@pytest.mark.parametrize("make_backend", BACKENDS.values(), ids=BACKENDS.keys())
def test_every_backend_passes_every_check(make_backend):
    with DriverServer(make_backend(), "tcp://127.0.0.1:0") as server:
        results = run_checks(server.endpoint, timeout_s=5.0)
    assert [r.name for r in results] == list(CHECKS)
    assert [r for r in results if not r.passed] == []


class WrongSpectrum(FakeBackend):
    def acquire(self, dwell_s):
        acq = super().acquire(dwell_s)
        return Acquisition(np.zeros(3), acq.dwell_s, acq.x, acq.y, acq.timestamp)


def test_a_broken_backend_fails_the_checks_that_see_it():
    with DriverServer(WrongSpectrum(), "tcp://127.0.0.1:0") as server:
        failed = {
            r.name: r.detail for r in run_checks(server.endpoint, timeout_s=5.0) if not r.passed
        }
    assert "acquire" in failed and "BACKEND_ERROR" in failed["acquire"]
    assert "describe" not in failed


def test_an_absent_server_fails_cleanly():
    results = run_checks("tcp://127.0.0.1:9", timeout_s=0.1)
    assert not any(r.passed for r in results)
    assert "InstrumentTimeout" in results[0].detail
