"""`SimulatedMicroscope`: exact noise-free spectra, Poisson statistics, and serving it."""

import time

import numpy as np
import pytest

from dklscope.drivers import Backend, DriverServer, MicroscopeClient
from dklscope.simulators import Behaviour, SimulatedMicroscope, lattice_sample


@pytest.fixture(scope="module")
def sample():
    return lattice_sample((40, 64), seed=2)


def spectra(microscope, dwell_s, n):
    return np.stack([microscope.acquire(dwell_s).spectrum for _ in range(n)])


def test_it_is_a_backend(sample):
    assert isinstance(SimulatedMicroscope(sample), Backend)


def test_describe_matches_the_sample(sample):
    description = SimulatedMicroscope(sample, dwell_range_s=(0.01, 5.0)).describe()
    assert description.overview_shape == (40, 64)
    assert description.spectral_axis == sample.spectral_axis
    assert description.pixel_size == sample.pixel_size
    assert description.pixel_units == sample.pixel_units == "nm"
    assert description.spectrum_units == sample.spectrum_units == "counts"
    assert description.dwell_range_s == (0.01, 5.0)
    assert description.probe_limits == (0.0, 63.0, 0.0, 39.0)


def test_overview_is_the_sample_image(sample):
    np.testing.assert_array_equal(SimulatedMicroscope(sample).get_overview(), sample.image)


@pytest.mark.parametrize(
    "x, y, row, col",
    [(10.4, 20.6, 21, 10), (0.0, 0.0, 0, 0), (63.0, 39.0, 39, 63), (0.49, 38.51, 39, 0)],
)
def test_noise_free_acquire_is_the_rate_at_the_nearest_pixel_times_the_dwell(
    sample, x, y, row, col
):
    microscope = SimulatedMicroscope(sample, noise=False)
    assert microscope.move_probe(x, y) == (x, y)
    acq = microscope.acquire(0.37)
    assert acq.spectrum.dtype == np.float32
    assert acq.spectrum.shape == (256,)
    np.testing.assert_array_equal(acq.spectrum, sample.signal[row, col] * np.float32(0.37))
    np.testing.assert_array_equal(acq.spectrum, sample.expected_spectra(0.37)[row, col])
    assert (acq.x, acq.y, acq.dwell_s) == (x, y, 0.37)
    assert abs(acq.timestamp - time.time()) < 60  # Unix time, not a monotonic clock


def test_noisy_spectra_are_poisson_with_mean_dwell_times_rate(sample):
    microscope = SimulatedMicroscope(sample, seed=11)
    microscope.move_probe(30.0, 25.0)
    dwell, n = 0.02, 2000
    counts = spectra(microscope, dwell, n).astype(np.float64)
    rate = sample.signal[25, 30].astype(np.float64) * dwell
    assert rate.min() < 5 and rate.max() > 100  # from sparse to plentiful counts

    # Counts: whole, non-negative numbers.
    assert np.all(counts >= 0) and np.all(counts == np.round(counts))

    # Per channel, mean and variance within 5 standard errors of Poisson(rate).
    mean, var = counts.mean(axis=0), counts.var(axis=0, ddof=1)
    np.testing.assert_array_less(np.abs(mean - rate), 5 * np.sqrt(rate / n))
    np.testing.assert_array_less(np.abs(var - rate), 5 * np.sqrt((rate + 2 * rate**2) / n))

    # Over all channels together, far tighter: var/mean is 1 (Poisson), the mean is the rate.
    total = rate.sum()
    assert mean.sum() == pytest.approx(total, abs=5 * np.sqrt(total / n))
    fano = var.sum() / mean.sum()
    assert fano == pytest.approx(1.0, abs=0.03)


def test_four_times_the_dwell_gives_four_times_the_counts(sample):
    microscope = SimulatedMicroscope(sample, seed=5)
    microscope.move_probe(12.0, 30.0)
    n = 1000
    short = spectra(microscope, 0.01, n).astype(np.float64).sum(axis=1)
    long = spectra(microscope, 0.04, n).astype(np.float64).sum(axis=1)
    total = sample.signal[30, 12].astype(np.float64).sum()
    assert short.mean() == pytest.approx(0.01 * total, abs=5 * np.sqrt(0.01 * total / n))
    assert long.mean() == pytest.approx(0.04 * total, abs=5 * np.sqrt(0.04 * total / n))
    assert long.mean() / short.mean() == pytest.approx(4.0, rel=0.01)
    # Relative noise falls as 1/sqrt(dwell): the variance grows 4x too, not 16x.
    assert long.var(ddof=1) / short.var(ddof=1) == pytest.approx(4.0, rel=0.25)


def test_the_same_seed_gives_the_same_noise(sample):
    def run(seed):
        microscope = SimulatedMicroscope(sample, seed=seed)
        microscope.move_probe(5.0, 35.0)
        return spectra(microscope, 0.05, 3)

    first, again, other = run(4), run(4), run(5)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first[0], first[1])  # each acquisition draws new noise


def test_realtime_acquisition_takes_at_least_its_dwell(sample):
    microscope = SimulatedMicroscope(sample, noise=False, realtime=True)
    started = time.monotonic()
    microscope.acquire(0.05)
    assert time.monotonic() - started >= 0.05


def test_served_noise_free_spectra_are_exactly_the_truth(sample):
    microscope = SimulatedMicroscope(sample, noise=False)
    with DriverServer(microscope, "tcp://127.0.0.1:0") as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            assert client.describe() == microscope.describe()
            np.testing.assert_array_equal(client.get_overview(), sample.image)
            for x, y, row, col in [(10.4, 20.6, 21, 10), (0.0, 39.0, 39, 0), (63.0, 7.2, 7, 63)]:
                assert client.move(x, y) == (x, y)
                acq = client.acquire(0.25)
                np.testing.assert_array_equal(acq.spectrum, sample.expected_spectra(0.25)[row, col])
                assert (acq.x, acq.y, acq.dwell_s) == (x, y, 0.25)


def test_parking_blanks_the_beam_until_the_next_move(sample):
    microscope = SimulatedMicroscope(sample, noise=False)
    microscope.move_probe(3.0, 4.0)
    microscope.park()
    with pytest.raises(RuntimeError, match="parked"):
        microscope.acquire(0.01)
    assert microscope.dose_s.sum() == 0  # no dose while blanked
    microscope.move_probe(3.0, 4.0)
    assert microscope.acquire(0.01).spectrum.shape == (sample.spectral_axis.size,)


def test_park_moves_the_probe_to_its_safe_position_and_blank_only_blanks(sample):
    microscope = SimulatedMicroscope(sample, noise=False)
    microscope.move_probe(30.0, 20.0)
    assert microscope.park() == (0.0, 0.0)  # the corner of the probe limits by default
    assert microscope.parked and microscope.n_parks == 1
    elsewhere = SimulatedMicroscope(sample, noise=False, park_position=(63.0, 39.0))
    elsewhere.move_probe(30.0, 20.0)
    elsewhere.blank()  # blanks where it is
    assert elsewhere.parked and elsewhere.n_parks == 0
    elsewhere.move_probe(30.0, 20.0)
    assert elsewhere.acquire(0.1).x == 30.0
    assert elsewhere.park() == (63.0, 39.0)
    with pytest.raises(ValueError, match="park_position"):
        SimulatedMicroscope(sample, park_position=(64.0, 0.0))  # off the overview


def test_the_dose_account_counts_every_exposure_and_nothing_while_parked(sample):
    electrons = Behaviour(dose_per_s=6.25e8, dose_units="e-")  # a 100 pA probe
    microscope = SimulatedMicroscope(sample, noise=False, behaviour=electrons)
    d = microscope.describe()
    assert (d.dose_units, d.dose_per_s, d.can_park, d.can_blank) == ("e-", 6.25e8, True, True)
    microscope.move_probe(5.0, 5.0)
    assert microscope.acquire(0.2).dose == pytest.approx(1.25e8)
    assert microscope.acquire(0.4).dose == pytest.approx(2.5e8)
    assert microscope.dose_total == pytest.approx(3.75e8)
    assert microscope.dose_s.sum() == pytest.approx(0.6)  # the damage counts exposure seconds
    microscope.park()
    with pytest.raises(RuntimeError, match="parked"):
        microscope.acquire(0.4)
    assert microscope.dose_total == pytest.approx(3.75e8)
    # by default, the dose is the exposure in seconds
    plain = SimulatedMicroscope(sample, noise=False)
    assert (plain.describe().dose_units, plain.acquire(0.3).dose) == ("s", 0.3)


@pytest.mark.parametrize(
    "fields, message",
    [({"dose_units": ""}, "dose_units"), ({"dose_per_s": -1.0}, "dose_per_s")],
)
def test_a_bad_dose_account_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Behaviour(**fields)


def test_the_dead_man_switch_parks_the_simulated_beam(sample):
    """A campaign that stops heart-beating leaves the simulated beam parked."""
    microscope = SimulatedMicroscope(sample, noise=False)
    with DriverServer(microscope, "tcp://127.0.0.1:0") as server:
        client = MicroscopeClient(server.endpoint, timeout_s=5.0, heartbeat_s=0.1)
        assert "park" in client.hello()["capabilities"]
        client.move(3.0, 4.0)
        client.close()  # the heartbeats stop
        deadline = time.monotonic() + 5.0
        while not microscope.parked and time.monotonic() < deadline:
            time.sleep(0.05)
        assert microscope.parked
        assert server.safe_state is not None
