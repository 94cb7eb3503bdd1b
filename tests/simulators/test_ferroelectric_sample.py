"""`ferroelectric_sample`, `bias_waveform` and `loop_area`: determinism, shapes, the bias
waveform, the shoelace area, and the physics of the hysteresis loops."""

import numpy as np
import pytest

from dklscope.drivers import SpectralAxis
from dklscope.simulators.ferroelectric import (
    C_MINUS,
    C_PLUS,
    bias_waveform,
    ferroelectric_sample,
    loop_area,
)
from dklscope.simulators.sample import GaussianNoise

# The defaults of ferroelectric_sample, restated: the tests check the loops against them.
STEPS = 64
V_MAX = 8.5
SATURATION_RESPONSE = 1.0e-4
IMPRINT_V = 0.5
LABELS = {"domain", "wall_distance_px", "coercive_plus_V", "coercive_minus_V", "loop_area"}


@pytest.fixture(scope="module")
def sample():
    return ferroelectric_sample((50, 50), seed=0)


def _branch_crossings(bias: np.ndarray, loops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bias where the rising and the falling part of each loop (..., n) cross zero,
    by linear interpolation between the steps either side of the sign change."""
    rising = np.r_[True, np.diff(bias) > 0]
    out = []
    for part, sign in ((rising, 1), (~rising, -1)):
        v, r = bias[part], sign * loops[..., part]
        # Along the bias order of this part, r goes from negative to positive exactly once.
        order = np.argsort(sign * v)
        v, r = v[order], r[..., order]
        k = np.argmax(r > 0, axis=-1)
        r0 = np.take_along_axis(r, k[..., None] - 1, -1)[..., 0]
        r1 = np.take_along_axis(r, k[..., None], -1)[..., 0]
        out.append(v[k - 1] + (v[k] - v[k - 1]) * r0 / (r0 - r1))
    return out[0], out[1]


def test_same_seed_gives_the_same_sample(sample):
    again = ferroelectric_sample((50, 50), seed=0)
    np.testing.assert_array_equal(again.image, sample.image)
    np.testing.assert_array_equal(again.signal, sample.signal)
    assert again.labels.keys() == sample.labels.keys()
    for key in sample.labels:
        np.testing.assert_array_equal(again.labels[key], sample.labels[key])
    assert again.noise == sample.noise


def test_a_different_seed_gives_a_different_sample(sample):
    other = ferroelectric_sample((50, 50), seed=1)
    assert not np.array_equal(other.image, sample.image)
    assert not np.array_equal(other.signal, sample.signal)
    assert not np.array_equal(other.labels["domain"], sample.labels["domain"])


@pytest.mark.parametrize("shape", [(50, 50), (32, 48), (48, 32)])
def test_shapes_dtypes_and_labels(shape):
    s = ferroelectric_sample(shape, seed=2)
    rows, cols = shape
    assert s.shape == shape
    assert s.image.shape == shape and s.image.dtype == np.float32
    assert s.signal.shape == (rows, cols, STEPS) and s.signal.dtype == np.float32
    assert set(s.labels) == LABELS
    for label in s.labels.values():
        assert label.shape == shape
    assert np.issubdtype(s.labels["domain"].dtype, np.integer)
    for key in LABELS - {"domain"}:
        assert s.labels[key].dtype == np.float32
    assert set(np.unique(s.labels["domain"])) == {C_MINUS, C_PLUS}
    assert np.all(np.isfinite(s.image)) and np.all(np.isfinite(s.signal))
    assert s.labels["wall_distance_px"].min() == 0.5
    assert np.all(s.labels["coercive_plus_V"] > 0) and np.all(s.labels["coercive_minus_V"] < 0)
    assert np.all(s.labels["loop_area"] > 0)


def test_metadata(sample):
    assert sample.spectral_axis == SpectralAxis(size=STEPS, offset=0.0, scale=1.0, units="step")
    assert sample.pixel_units == "nm" and sample.pixel_size == 40.0
    assert sample.spectrum_units == "a.u."
    assert isinstance(sample.noise, GaussianNoise)


def test_bias_waveform_is_a_triangle():
    bias = bias_waveform(STEPS, V_MAX)
    assert bias.shape == (STEPS,)
    assert bias[0] == 0 and bias[-1] == 0
    assert bias.max() == V_MAX and bias.min() == -V_MAX
    top, bottom = int(np.argmax(bias)), int(np.argmin(bias))
    assert 0 < top < bottom < STEPS - 1
    steps = np.diff(bias)
    assert np.all(steps[:top] > 0) and np.all(steps[top:bottom] < 0) and np.all(steps[bottom:] > 0)
    # Linear legs: constant step within each leg.
    for leg in (steps[:top], steps[top:bottom], steps[bottom:]):
        np.testing.assert_allclose(leg, leg[0])
    # Rising and falling legs are equally long, each a quarter of the sweep.
    assert top == STEPS - 1 - bottom == round((STEPS - 1) / 4)
    short = bias_waveform(9, 2.0)
    np.testing.assert_allclose(short, [0, 1, 2, 1, 0, -1, -2, -1, 0])


def test_loop_area_of_known_polygons():
    # A 3 V x 2 a.u. rectangle, counter-clockwise: area +6; clockwise: -6.
    x = np.array([0.0, 3.0, 3.0, 0.0])
    y = np.array([0.0, 0.0, 2.0, 2.0])
    assert loop_area(x, y) == pytest.approx(6.0)
    assert loop_area(x[::-1], y[::-1]) == pytest.approx(-6.0)
    # An ideal square hysteresis loop run on the bias waveform: up-branch -1 below Vc = 2 V,
    # +1 above; down-branch +1 above -Vc, -1 below; the enclosed parallelogram has area
    # (Vc+ - Vc-) * 2 = 8 V·a.u. up to the discretisation of the bias at the switching steps.
    bias = bias_waveform(401, 8.0)  # 0.08 V per step
    rising = np.r_[True, np.diff(bias) > 0]
    loop = np.where(rising, np.sign(bias - 2.0), np.sign(bias + 2.0))
    assert loop_area(bias, loop) == pytest.approx(8.0, abs=2 * 0.08 * 2)
    # A parallelogram with slanted sides: vertices (-1, 0), (1, 0), (2, 1), (0, 1) -> area 2.
    px = np.array([-1.0, 1.0, 2.0, 0.0])
    py = np.array([0.0, 0.0, 1.0, 1.0])
    assert loop_area(px, py) == pytest.approx(2.0)
    # Stacked loops (..., n) and a shared bias broadcast to one area per loop.
    stacked = np.stack([y, 2 * y, -y]).reshape(3, 1, 4)
    np.testing.assert_allclose(loop_area(x, stacked), [[6.0], [12.0], [-6.0]])


def test_labelled_loop_area_matches_the_signal(sample):
    bias = bias_waveform(STEPS, V_MAX)
    measured = loop_area(bias, sample.signal)
    assert measured.shape == sample.shape
    np.testing.assert_allclose(sample.labels["loop_area"], measured, rtol=1e-5)
    # A saturated tanh loop encloses about 2 a1 (Vc+ - Vc-): check against the labels.
    width = sample.labels["coercive_plus_V"] - sample.labels["coercive_minus_V"]
    half_height = (sample.signal.max(axis=-1) - sample.signal.min(axis=-1)) / 2
    np.testing.assert_allclose(measured, 2 * half_height * width, rtol=0.1)


def test_coercive_labels_match_the_loops(sample):
    up, down = _branch_crossings(bias_waveform(STEPS, V_MAX), sample.signal.astype(np.float64))
    np.testing.assert_allclose(up, sample.labels["coercive_plus_V"], atol=0.1)
    np.testing.assert_allclose(down, sample.labels["coercive_minus_V"], atol=0.1)


def test_loops_near_walls_are_smaller_and_switch_more_easily(sample):
    distance = sample.labels["wall_distance_px"]
    near, far = distance < 1, distance > 3
    assert near.sum() > 50 and far.sum() > 50
    area = sample.labels["loop_area"]
    half_width = (sample.labels["coercive_plus_V"] - sample.labels["coercive_minus_V"]) / 2
    assert area[near].mean() < 0.75 * area[far].mean()
    assert half_width[near].mean() < 0.75 * half_width[far].mean()
    # The same seen in the signal itself, not only in the labels.
    up, down = _branch_crossings(bias_waveform(STEPS, V_MAX), sample.signal.astype(np.float64))
    assert (up - down)[near].mean() < 0.75 * (up - down)[far].mean()
    # Walls also lower the saturated piezoresponse.
    half_height = (sample.signal.max(axis=-1) - sample.signal.min(axis=-1)) / 2
    assert half_height[near].mean() < 0.85 * half_height[far].mean()


def test_both_domains_with_opposite_imprint(sample):
    domain = sample.labels["domain"]
    plus, minus = domain == C_PLUS, domain == C_MINUS
    assert 0.3 < plus.mean() < 0.7 and minus.sum() + plus.sum() == domain.size
    up, down = _branch_crossings(bias_waveform(STEPS, V_MAX), sample.signal.astype(np.float64))
    imprint = (up + down) / 2
    assert imprint[plus].mean() == pytest.approx(-IMPRINT_V, abs=0.1)
    assert imprint[minus].mean() == pytest.approx(IMPRINT_V, abs=0.1)
    assert np.all(imprint[plus] < 0) and np.all(imprint[minus] > 0)
    # The overview shows the domains: c+ brighter than c-, walls darker than either.
    image, distance = sample.image, sample.labels["wall_distance_px"]
    inner = distance > 3
    assert image[plus & inner].mean() > image[minus & inner].mean()
    assert image[distance < 1].mean() < image[minus & inner].mean()


def test_noise_at_10ms_is_five_percent_of_the_loop_amplitude(sample):
    far = sample.labels["wall_distance_px"] > 3
    loops = sample.signal[far]
    amplitude = np.median((loops.max(axis=-1) - loops.min(axis=-1)) / 2)
    assert amplitude == pytest.approx(SATURATION_RESPONSE, rel=0.15)
    rng = np.random.default_rng(0)
    noisy = sample.noise.measure(loops, 0.01, rng)
    sd = np.std(noisy.astype(np.float64) - loops)
    assert sd / amplitude == pytest.approx(0.05, rel=0.15)
    np.testing.assert_array_equal(sample.noise.expected(loops, 0.01), loops)
    # The noise falls as 1/sqrt(dwell).
    sd_long = np.std(sample.noise.measure(loops, 1.0, rng).astype(np.float64) - loops)
    assert sd_long / sd == pytest.approx(0.1, rel=0.1)
