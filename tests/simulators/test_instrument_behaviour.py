"""`Behaviour`: drift, positioning error, latency, beam damage and injected faults of the
`SimulatedMicroscope`, each against a known answer, and all of it off by default."""

import logging
import time

import numpy as np
import pytest
from scipy import ndimage

from dklscope.drivers import (
    DriverServer,
    ErrorCode,
    InstrumentError,
    InstrumentTimeout,
    MicroscopeClient,
)
from dklscope.simulators import SimulatedMicroscope, lattice_sample
from dklscope.simulators.microscope import FAULT_KINDS, Behaviour


@pytest.fixture(scope="module")
def sample():
    return lattice_sample((40, 64), seed=2)


def truth(sample, dwell_s, x, y):
    """The noise-free spectrum of the specimen at overview position (x, y), nearest pixel."""
    i, j = sample.spectrum_pixel(round(y), round(x))
    return sample.expected_spectra(dwell_s)[i, j]


def measured_shift(reference, moved):
    """The (dy, dx) by which ``moved`` is ``reference`` shifted, to a few hundredths of a pixel:
    windowed cross-correlation, its peak refined by a parabola along each axis."""
    window = np.outer(np.hanning(reference.shape[0]), np.hanning(reference.shape[1]))
    a = np.fft.fft2((reference - reference.mean()) * window)
    b = np.fft.fft2((moved - moved.mean()) * window)
    corr = np.fft.ifft2(b * np.conj(a)).real
    peak = np.unravel_index(np.argmax(corr), corr.shape)
    shift = []
    for axis, p in enumerate(peak):
        n = corr.shape[axis]
        before, after = list(peak), list(peak)
        before[axis], after[axis] = (p - 1) % n, (p + 1) % n
        lo, mid, hi = corr[tuple(before)], corr[peak], corr[tuple(after)]
        shift.append((p + n // 2) % n - n // 2 + 0.5 * (lo - hi) / (lo - 2 * mid + hi))
    return np.array(shift)


# -- defaults ---------------------------------------------------------------------------------


def test_default_behaviour_is_all_off():
    b = Behaviour()
    assert b.drift_px_per_s == (0.0, 0.0)
    assert (b.position_sd_px, b.overhead_s, b.overview_time_s) == (0.0, 0.0, 0.0)
    assert (b.damage_per_dose, b.fault_rate) == (0.0, 0.0)


def test_defaults_reproduce_the_ideal_instrument_exactly(sample):
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=Behaviour())
    for _ in range(3):  # repeated visits: no drift, no damage, no faults
        np.testing.assert_array_equal(microscope.get_overview(), sample.image)
        for x, y in [(10.4, 20.6), (0.0, 0.0), (63.0, 39.0), (31.7, 12.2)]:
            assert microscope.move_probe(x, y) == (x, y)
            acq = microscope.acquire(0.3)
            np.testing.assert_array_equal(acq.spectrum, truth(sample, 0.3, x, y))
            assert (acq.x, acq.y) == (x, y)
    assert microscope.fault_log == []
    assert microscope.clock_s == pytest.approx(12 * 0.3)


def test_the_noise_is_keyed_by_seed_pixel_and_visit(sample):
    """Noise from default_rng([seed, i, j, visit]): the same whatever was measured before."""
    microscope = SimulatedMicroscope(sample, seed=9)
    visits = [(5.0, 35.0, 0), (40.2, 20.9, 0), (5.0, 35.0, 1)]
    for x, y, visit in visits:
        microscope.move_probe(x, y)
        i, j = sample.spectrum_pixel(round(y), round(x))
        rng = np.random.default_rng([9, i, j, visit])
        expected = sample.noise.measure(sample.signal[i, j], 0.05, rng)
        np.testing.assert_array_equal(microscope.acquire(0.05).spectrum, expected)
    fresh = SimulatedMicroscope(sample, seed=9)  # a restarted instrument, in another order
    fresh.move_probe(40.2, 20.9)
    again = fresh.acquire(0.05).spectrum
    microscope = SimulatedMicroscope(sample, seed=9)
    microscope.move_probe(5.0, 35.0)
    microscope.acquire(0.05)
    microscope.move_probe(40.2, 20.9)
    np.testing.assert_array_equal(microscope.acquire(0.05).spectrum, again)


# -- the instrument clock and drift -----------------------------------------------------------


def test_the_clock_advances_by_dwell_plus_overhead_and_overview_time(sample):
    behaviour = Behaviour(overhead_s=0.25, overview_time_s=2.0)
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=behaviour)
    assert microscope.clock_s == 0.0
    for dwell in (0.1, 0.5, 1.0):
        microscope.acquire(dwell)
    assert microscope.clock_s == pytest.approx(1.6 + 3 * 0.25)
    microscope.get_overview()
    microscope.get_overview()
    assert microscope.clock_s == pytest.approx(1.6 + 3 * 0.25 + 2 * 2.0)


def test_realtime_acquisition_takes_at_least_dwell_plus_overhead(sample):
    behaviour = Behaviour(overhead_s=0.08)
    microscope = SimulatedMicroscope(sample, noise=False, realtime=True, behaviour=behaviour)
    started = time.monotonic()
    microscope.acquire(0.05)
    assert time.monotonic() - started >= 0.05 + 0.08
    assert microscope.clock_s >= 0.13  # wall time since the microscope was made


@pytest.mark.parametrize("vx, vy", [(0.5, -0.25), (-0.2, 0.3)])
def test_drift_shifts_the_overview_by_velocity_times_instrument_time(sample, vx, vy):
    behaviour = Behaviour(drift_px_per_s=(vx, vy), overhead_s=0.5)
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=behaviour)
    np.testing.assert_array_equal(microscope.get_overview(), sample.image)  # at t = 0
    for _ in range(4):
        microscope.acquire(1.0)  # 4 × (1.0 s dwell + 0.5 s overhead) = 6 s
    overview = microscope.get_overview()
    assert overview.dtype == np.float32 and overview.shape == sample.shape
    dy, dx = measured_shift(sample.image.astype(np.float64), overview.astype(np.float64))
    assert dx == pytest.approx(vx * 6.0, abs=0.1)
    assert dy == pytest.approx(vy * 6.0, abs=0.1)


def test_an_integer_drift_moves_the_overview_pixel_for_pixel(sample):
    behaviour = Behaviour(drift_px_per_s=(3.0, -2.0), overview_time_s=1.0)
    microscope = SimulatedMicroscope(sample, behaviour=behaviour)
    microscope.get_overview()  # at t = 0; one second passes
    overview = microscope.get_overview()  # the specimen moved by (+3, -2)
    np.testing.assert_allclose(overview[5:-5, 5:-5], sample.image[7:-3, 2:-8], atol=1e-4)


def test_a_spectrum_under_drift_is_the_truth_where_the_specimen_was(sample):
    behaviour = Behaviour(drift_px_per_s=(0.4, 0.3), overhead_s=1.0)
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=behaviour)
    for _ in range(10):
        microscope.acquire(1.0)  # t = 20 s: the specimen has moved by (8, 6) pixels
    dx, dy = microscope.drift_px()
    assert (dx, dy) == pytest.approx((8.0, 6.0))
    for x, y in [(30.0, 25.0), (50.3, 33.6), (20.0, 30.0)]:
        microscope.move_probe(x, y)
        t = microscope.clock_s
        acq = microscope.acquire(0.2)
        expected = truth(sample, 0.2, x - 0.4 * t, y - 0.3 * t)
        assert not np.array_equal(expected, truth(sample, 0.2, x, y))  # drift does matter here
        np.testing.assert_array_equal(acq.spectrum, expected)
        assert (acq.x, acq.y) == (x, y)  # the instrument reports where its probe is


def test_drift_beyond_the_edge_measures_the_edge_pixel(sample):
    behaviour = Behaviour(drift_px_per_s=(100.0, 100.0), overview_time_s=1.0)
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=behaviour)
    microscope.get_overview()  # the specimen moves 100 px: the probe now sees its corner
    microscope.move_probe(10.0, 10.0)
    np.testing.assert_array_equal(microscope.acquire(0.1).spectrum, truth(sample, 0.1, 0, 0))


# -- positioning error ------------------------------------------------------------------------


def test_probe_positions_scatter_with_the_configured_sd(sample):
    sd, n, target = 1.5, 400, (30.0, 20.0)
    behaviour = Behaviour(position_sd_px=sd)
    microscope = SimulatedMicroscope(sample, noise=False, seed=3, behaviour=behaviour)
    positions = np.array([microscope.move_probe(*target) for _ in range(n)])
    errors = positions - np.array(target)
    assert np.all(errors.std(axis=0) > 0)
    # Mean within 5 standard errors of 0; sd within 5 standard errors of the configured sd.
    np.testing.assert_array_less(np.abs(errors.mean(axis=0)), 5 * sd / np.sqrt(n))
    np.testing.assert_array_less(
        np.abs(errors.std(axis=0, ddof=1) - sd), 5 * sd / np.sqrt(2 * (n - 1))
    )
    assert abs(np.corrcoef(errors.T)[0, 1]) < 5 / np.sqrt(n)  # x and y errors independent


def test_the_spectrum_is_that_of_the_reported_position(sample):
    behaviour = Behaviour(position_sd_px=2.0)
    microscope = SimulatedMicroscope(sample, noise=False, seed=4, behaviour=behaviour)
    moved = 0
    for _ in range(30):
        x, y = microscope.move_probe(30.0, 20.0)
        moved += (round(x), round(y)) != (30, 20)
        acq = microscope.acquire(0.1)
        assert (acq.x, acq.y) == (x, y)
        np.testing.assert_array_equal(acq.spectrum, truth(sample, 0.1, x, y))
    assert moved > 10  # most moves land on another pixel than the one asked for


def test_positioning_error_stays_inside_the_probe_limits(sample):
    microscope = SimulatedMicroscope(sample, behaviour=Behaviour(position_sd_px=3.0))
    positions = np.array([microscope.move_probe(0.0, 39.0) for _ in range(100)])
    assert positions[:, 0].min() == 0.0 and positions[:, 0].max() > 0.0
    assert positions[:, 1].max() == 39.0 and positions[:, 1].min() < 39.0


# -- beam damage ------------------------------------------------------------------------------


def test_repeated_acquisitions_decay_with_the_dose_and_other_spots_are_spared(sample):
    rate, dwell = 2.0, 0.1
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=Behaviour(damage_per_dose=rate))
    microscope.move_probe(30.0, 25.0)
    fresh = truth(sample, dwell, 30.0, 25.0)
    for k in range(6):  # the k-th acquisition follows a dose of k × dwell
        spectrum = microscope.acquire(dwell).spectrum
        np.testing.assert_allclose(spectrum, fresh * np.exp(-rate * k * dwell), rtol=1e-6)
    assert microscope.dose_s[sample.spectrum_pixel(25, 30)] == pytest.approx(6 * dwell)
    microscope.move_probe(10.0, 30.0)
    np.testing.assert_array_equal(
        microscope.acquire(dwell).spectrum, truth(sample, dwell, 10.0, 30.0)
    )


# -- faults -----------------------------------------------------------------------------------


def always(kind, **kwargs):
    return Behaviour(fault_rate=1.0, faults=(kind,), **kwargs)


def test_a_timeout_fault_raises_and_is_logged(sample, caplog):
    microscope = SimulatedMicroscope(sample, behaviour=always("timeout"))
    with caplog.at_level(logging.WARNING, logger="dklscope.simulators.microscope"):
        for _ in range(2):
            with pytest.raises(TimeoutError, match="detector readout timed out"):
                microscope.acquire(0.1)
    assert microscope.fault_log == [(0, "timeout"), (1, "timeout")]
    assert sum("timeout" in r.getMessage() for r in caplog.records) == 2


def test_a_nan_fault_gives_a_nan_spectrum(sample):
    microscope = SimulatedMicroscope(sample, behaviour=always("nan"))
    acq = microscope.acquire(0.1)
    assert acq.spectrum.shape == (256,) and np.all(np.isnan(acq.spectrum))
    assert microscope.fault_log == [(0, "nan")]


def test_a_saturated_fault_clips_at_the_saturation_level(sample):
    level = 500.0
    microscope = SimulatedMicroscope(
        sample, noise=False, behaviour=always("saturated", saturation_level=level)
    )
    microscope.move_probe(30.0, 25.0)
    fresh = truth(sample, 0.1, 30.0, 25.0)
    assert fresh.max() > level > fresh.min()
    acq = microscope.acquire(0.1)
    np.testing.assert_array_equal(acq.spectrum, np.minimum(fresh, np.float32(level)))
    assert acq.spectrum.max() == level
    assert microscope.fault_log == [(0, "saturated")]


def test_a_hang_fault_sleeps_then_answers(sample):
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=always("hang", hang_s=0.2))
    microscope.move_probe(30.0, 25.0)
    started = time.monotonic()
    acq = microscope.acquire(0.1)
    assert time.monotonic() - started >= 0.2
    np.testing.assert_array_equal(acq.spectrum, truth(sample, 0.1, 30.0, 25.0))
    assert microscope.fault_log == [(0, "hang")]
    assert microscope.clock_s == pytest.approx(0.1 + 0.2)


def test_served_timeout_fault_is_a_backend_error_and_the_server_keeps_serving(sample):
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=always("timeout"))
    with DriverServer(microscope, "tcp://127.0.0.1:0") as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            for _ in range(2):
                with pytest.raises(InstrumentError) as info:
                    client.acquire(0.1)
                assert info.value.code == ErrorCode.BACKEND_ERROR
                assert "detector readout timed out" in str(info.value)
            assert client.move(12.0, 30.0) == (12.0, 30.0)
            np.testing.assert_array_equal(client.get_overview(), sample.image)
    assert microscope.fault_log == [(0, "timeout"), (1, "timeout")]


def test_served_hang_fault_times_the_client_out(sample):
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=always("hang", hang_s=1.0))
    with DriverServer(microscope, "tcp://127.0.0.1:0") as server:
        with MicroscopeClient(server.endpoint, timeout_s=0.2) as client:
            started = time.monotonic()
            with pytest.raises(InstrumentTimeout):
                client.acquire(0.01)
            assert time.monotonic() - started >= 0.2
            client.timeout_s = 5.0  # once the hang is over, the server answers again
            assert client.describe() == microscope.describe()
    assert microscope.fault_log == [(0, "hang")]


def run_with_faults(sample, seed, n=200, rate=0.3):
    behaviour = Behaviour(fault_rate=rate, faults=("nan", "saturated"), saturation_level=1.0)
    microscope = SimulatedMicroscope(sample, seed=seed, behaviour=behaviour)
    microscope.move_probe(30.0, 25.0)
    spectra = np.stack([microscope.acquire(0.05).spectrum for _ in range(n)])
    return microscope.fault_log, spectra


def test_faults_occur_at_the_configured_rate_and_are_all_logged(sample):
    n, rate = 200, 0.3
    log, spectra = run_with_faults(sample, seed=1, n=n, rate=rate)
    # Binomial(200, 0.3): mean 60, sd 6.5; allow 4 sd.
    assert abs(len(log) - n * rate) < 4 * np.sqrt(n * rate * (1 - rate))
    kinds = {kind for _, kind in log}
    assert kinds == {"nan", "saturated"}
    observed_nan = set(np.flatnonzero(np.isnan(spectra).all(axis=1)))
    observed_saturated = set(np.flatnonzero(spectra.max(axis=1) == 1.0))
    assert observed_nan == {i for i, kind in log if kind == "nan"}
    assert observed_saturated == {i for i, kind in log if kind == "saturated"}


def test_the_same_seed_gives_the_same_faults(sample):
    first, _ = run_with_faults(sample, seed=7)
    again, _ = run_with_faults(sample, seed=7)
    other, _ = run_with_faults(sample, seed=8)
    assert first == again
    assert first != other


def test_faults_do_not_change_the_noise_of_the_other_acquisitions(sample):
    log, faulty = run_with_faults(sample, seed=5)
    _, clean = run_with_faults(sample, seed=5, rate=0.0)
    spared = np.setdiff1d(np.arange(len(clean)), [i for i, _ in log])
    assert 100 < len(spared) < 200
    np.testing.assert_array_equal(faulty[spared], clean[spared])
    assert not np.array_equal(clean[spared[0]], clean[spared[1]])  # noise is on


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"drift_px_per_s": (1.0,)}, "drift_px_per_s"),
        ({"drift_px_per_s": (0.0, float("nan"))}, "drift_px_per_s"),
        ({"position_sd_px": -0.1}, "position_sd_px"),
        ({"overhead_s": -1.0}, "overhead_s"),
        ({"overview_time_s": float("inf")}, "overview_time_s"),
        ({"damage_per_dose": -2.0}, "damage_per_dose"),
        ({"fault_rate": 1.5}, "fault_rate"),
        ({"fault_rate": -0.1}, "fault_rate"),
        ({"faults": ("timeout", "explode")}, "faults"),
        ({"faults": "nan"}, "faults"),
        ({"faults": (), "fault_rate": 0.1}, "faults"),
        ({"saturation_level": 0.0}, "saturation_level"),
        ({"hang_s": -1.0}, "hang_s"),
        ({"hang_s": "long"}, "hang_s"),
    ],
)
def test_invalid_behaviour_is_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Behaviour(**kwargs)


def test_every_fault_kind_is_accepted():
    assert Behaviour(fault_rate=1.0, faults=FAULT_KINDS).faults == FAULT_KINDS
    assert Behaviour(faults=["nan"]).faults == ("nan",)  # a list is kept as a tuple


def test_overview_drift_interpolates_like_scipy(sample):
    """The drifted overview is the sample image moved by the drift, sub-pixel."""
    behaviour = Behaviour(drift_px_per_s=(0.7, -0.45), overview_time_s=1.0)
    microscope = SimulatedMicroscope(sample, behaviour=behaviour)
    microscope.get_overview()
    expected = ndimage.shift(sample.image, (-0.45, 0.7), mode="nearest")
    np.testing.assert_allclose(microscope.get_overview(), expected, rtol=1e-6)
