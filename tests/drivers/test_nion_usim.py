"""`NionBackend` on Nion's own simulated STEM (nionswift-usim), over the driver protocol.

The ground truth is the usim's own: its flake sample's features, drawn by the simulator's code
into the pixels of our overview, and its EELS model, in which each flake under the probe adds
0.3 mean free paths of thickness, so ln(total counts / zero-loss counts) = 0.3 x flakes.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from dklscope.drivers import InstrumentError, MicroscopeClient

pytestmark = pytest.mark.slow

T_OVER_LAMBDA_PER_FLAKE = 30 / 100  # the usim: 30 nm per flake, a 100 nm mean free path


@pytest.fixture(scope="module")
def flakes(nion_usim):
    """How many flakes lie over each overview pixel, (rows, cols), as the usim draws them."""
    from nion.usim_device import SampleSimulator
    from nion.utils import Geometry

    _, settings = nion_usim
    assert settings.sample == "flake"
    layers = np.zeros(settings.overview_shape)
    fov = Geometry.FloatSize(settings.fov_nm, settings.fov_nm)
    shape = Geometry.IntSize(*settings.overview_shape)
    for feature in SampleSimulator.RectangleFlakeSample(1000).features:  # its stage is 1 µm
        feature.plot(layers, Geometry.FloatPoint(), fov, Geometry.FloatPoint(), shape)
    return layers


@pytest.fixture
def client(nion_usim):
    with MicroscopeClient(nion_usim[0], timeout_s=30.0) as c:
        yield c


def interior_pixels(layers, n, k, seed=0):
    """``k`` pixels (x, y) with ``n`` flakes over them and over their 8 neighbours."""
    from scipy import ndimage

    flat = (ndimage.maximum_filter(layers, 3) == layers) & (
        ndimage.minimum_filter(layers, 3) == layers
    )
    rows, cols = np.nonzero(flat & (layers == n))
    pick = np.random.default_rng(seed).choice(len(rows), size=min(k, len(rows)), replace=False)
    return [(float(cols[i]), float(rows[i])) for i in pick]


def test_the_description_is_the_scan_frame_and_the_camera_calibration(client, nion_usim):
    _, settings = nion_usim
    d = client.describe()
    assert d.name.startswith("Nion Swift")
    assert d.overview_shape == settings.overview_shape == (64, 64)
    assert d.pixel_units == "nm"
    assert d.field_of_view == (settings.fov_nm, settings.fov_nm)
    axis = d.spectral_axis
    assert (axis.size, axis.offset, axis.scale, axis.units) == (1024, -20.0, 0.5, "eV")
    assert d.spectrum_units == "counts"
    assert d.overview_channels[:2] == ("HAADF", "MAADF")
    assert d.probe_limits == (0.0, 63.0, 0.0, 63.0)
    assert d.dwell_range_s == settings.dwell_range_s


def test_the_overview_shows_the_flakes_where_the_usim_put_them(client, flakes):
    image = client.get_overview()  # HAADF
    assert image.shape == flakes.shape and image.dtype == np.float32
    assert np.corrcoef(image.ravel(), flakes.ravel())[0, 1] > 0.6
    assert np.corrcoef(image.ravel(), flakes.T.ravel())[0, 1] < 0.3  # not transposed


def test_a_move_reads_back_where_it_was_asked_in_pixels_and_in_nm(client):
    for x, y in [(0.0, 0.0), (63.0, 63.0), (10.0, 50.0), (12.25, 3.75)]:
        assert client.move(x, y) == pytest.approx((x, y), abs=1e-9)
        acq = client.acquire(0.001)
        assert (acq.x, acq.y) == pytest.approx((x, y), abs=1e-9)
    size = client.describe().pixel_size
    assert client.move(10 * size, 50 * size, units="nm") == pytest.approx((10.0, 50.0))


def test_spectra_change_with_the_flakes_under_the_probe(client, flakes):
    """Vacuum gives the zero-loss peak alone; each flake over the probe adds plasmons, by
    exactly the thickness the usim gives it."""
    energy = client.describe().spectral_axis.values()
    zero_loss = (energy >= -3) & (energy <= 3)
    plasmons = (energy >= 8) & (energy <= 80)
    found = {}
    for n in np.unique(flakes):
        points = interior_pixels(flakes, n, k=3)
        for acq in client.measure(points, 0.01):
            s = acq.spectrum.astype(np.float64)
            found.setdefault(int(n), []).append(
                (np.log(s.sum() / s[zero_loss].sum()), s[plasmons].sum() / s[zero_loss].sum())
            )
    assert sorted(found) == [0, 1, 2, 3]  # vacuum and up to three stacked flakes
    for n, values in found.items():
        for t_over_lambda, ratio in values:
            assert t_over_lambda == pytest.approx(n * T_OVER_LAMBDA_PER_FLAKE, abs=0.01)
            assert ratio == pytest.approx(np.expm1(n * T_OVER_LAMBDA_PER_FLAKE), abs=0.05)


def test_the_dead_man_switch_parks_and_blanks_the_beam_until_the_next_move(nion_usim):
    with MicroscopeClient(nion_usim[0], timeout_s=30.0, heartbeat_s=0.2) as controller:
        assert {"park", "blank"} <= set(controller.hello()["capabilities"])
        controller.move(5.0, 5.0)
    # the controlling client is gone (and stopped heart-beating): the server blanks the beam
    with MicroscopeClient(nion_usim[0], timeout_s=30.0) as other:
        for _ in range(100):
            status = other.status()
            if status["state"] == "parked":
                break
            time.sleep(0.05)
        assert status["safe_state"]["action"] == "park"
        assert status["parked"]["blanked"] is True
        with pytest.raises(InstrumentError, match="blanked"):
            other.acquire(0.001)
        other.move(5.0, 5.0)
        assert other.acquire(0.001).spectrum.sum() > 0
