"""`plasmonic_sample`: determinism, shapes, geometry, and the physics of the low-loss spectra
(zero-loss tail, bulk plasmon, edge and corner plasmons)."""

import numpy as np
import pytest

from dklscope.drivers import SpectralAxis
from dklscope.simulators.plasmonic import plasmonic_sample
from dklscope.simulators.sample import PoissonCounts

# The defaults of plasmonic_sample, restated: the tests check the spectra against them.
PIXEL_NM = 2.0
ZLP_RATE = 2.0e4
BULK_EV, BULK_HWHM, BULK_RATE_PER_NM = 3.8, 0.25, 300.0
EDGE_EV, EDGE_HWHM, EDGE_RATE, EDGE_DECAY = 2.8, 0.15, 5.0e3, 8.0
CORNER_EV, CORNER_HWHM, CORNER_RATE, CORNER_DECAY = 1.8, 0.12, 6.0e3, 6.0
RIM_EV = 3.3
SIZE_REFERENCE, SIZE_EXPONENT = 28.0, 0.3
CHANNELS = 256
CORNER_WINDOW = (1.5, 2.2)  # eV: the window a campaign hunting the corner mode would use
LABELS = {
    "particle",
    "film",
    "hole",
    "thickness_nm",
    "particle_size_nm",
    "edge_distance_nm",
    "corner_distance_nm",
    "edge_plasmon_eV",
    "corner_plasmon_eV",
}


@pytest.fixture(scope="module")
def sample():
    return plasmonic_sample((64, 64), seed=0)


def lorentzian(energy, centre, hwhm):
    return 1.0 / (1.0 + ((energy - centre) / hwhm) ** 2)


def zlp_tail(energy):
    return ZLP_RATE * (energy / energy[0]) ** -3.0


def model_spectra(s):
    """The documented model, recomputed in float64 from the labels: (rows, cols, channels)."""
    e = s.spectral_axis.values()
    lab = {k: np.asarray(v, dtype=np.float64)[..., None] for k, v in s.labels.items()}
    return (
        zlp_tail(e)
        + BULK_RATE_PER_NM * lab["thickness_nm"] * lorentzian(e, BULK_EV, BULK_HWHM)
        + EDGE_RATE
        * np.exp(-np.abs(lab["edge_distance_nm"]) / EDGE_DECAY)
        * lorentzian(e, lab["edge_plasmon_eV"], EDGE_HWHM)
        + CORNER_RATE
        * np.exp(-lab["corner_distance_nm"] / CORNER_DECAY)
        * lorentzian(e, lab["corner_plasmon_eV"], CORNER_HWHM)
    )


def channel(s, ev):
    return int(np.argmin(np.abs(s.spectral_axis.values() - ev)))


def window_max(s, window):
    e = s.spectral_axis.values()
    inside = (e >= window[0]) & (e <= window[1])
    return s.signal[..., inside].max(axis=-1)


def corner_and_edge_centre(s, k):
    """The pixel of particle ``k`` nearest a vertex, and its edge pixel farthest from one."""
    labels = s.labels
    mine = labels["particle"] == k
    corner_d = np.where(mine, labels["corner_distance_nm"], np.inf)
    corner = np.unravel_index(np.argmin(corner_d), corner_d.shape)
    rim = mine & (labels["edge_distance_nm"] == -0.5 * PIXEL_NM)
    centre_d = np.where(rim, labels["corner_distance_nm"], -np.inf)
    edge_centre = np.unravel_index(np.argmax(centre_d), centre_d.shape)
    return corner, edge_centre


# -- determinism, shapes, metadata ------------------------------------------------------------


def test_same_seed_gives_the_same_sample(sample):
    again = plasmonic_sample((64, 64), seed=0)
    np.testing.assert_array_equal(again.image, sample.image)
    np.testing.assert_array_equal(again.signal, sample.signal)
    assert again.labels.keys() == sample.labels.keys()
    for key in sample.labels:
        np.testing.assert_array_equal(again.labels[key], sample.labels[key])


def test_a_different_seed_gives_a_different_sample(sample):
    other = plasmonic_sample((64, 64), seed=1)
    assert not np.array_equal(other.image, sample.image)
    assert not np.array_equal(other.signal, sample.signal)
    assert not np.array_equal(other.labels["particle"], sample.labels["particle"])


@pytest.mark.parametrize("shape", [(64, 64), (48, 48), (32, 32), (32, 48), (48, 32), (16, 16)])
@pytest.mark.parametrize("seed", [0, 5])
def test_shapes_dtypes_and_labels(shape, seed):
    s = plasmonic_sample(shape, seed=seed)
    rows, cols = shape
    assert s.shape == shape
    assert s.image.shape == shape and s.image.dtype == np.float32
    assert s.signal.shape == (rows, cols, CHANNELS) and s.signal.dtype == np.float32
    assert set(s.labels) == LABELS
    for label in s.labels.values():
        assert label.shape == shape
    assert np.all(np.isfinite(s.image)) and np.all(np.isfinite(s.signal))
    assert np.all(s.signal > 0)

    particle, film, hole = s.labels["particle"], s.labels["film"], s.labels["hole"]
    assert np.issubdtype(particle.dtype, np.integer)
    assert film.dtype == bool and hole.dtype == bool
    n = particle.max()
    assert n >= 1 and set(np.unique(particle)) == set(range(n + 1))  # ids 1..n, 0 elsewhere
    assert not (film & hole).any() and not ((particle > 0) & (film | hole)).any()
    metal = (particle > 0) | film
    np.testing.assert_array_equal(s.labels["thickness_nm"] > 0, metal)
    np.testing.assert_array_equal(s.labels["particle_size_nm"] > 0, particle > 0)
    # Signed edge distance: negative in the metal, positive outside, ±half a pixel at an edge.
    d = s.labels["edge_distance_nm"]
    np.testing.assert_array_equal(d < 0, metal)
    assert np.abs(d).min() == 0.5 * PIXEL_NM
    assert np.all(s.labels["corner_distance_nm"] >= 0)
    assert s.labels["corner_distance_nm"].min() < 1.5 * PIXEL_NM  # particle 1 is a triangle


def test_metadata(sample):
    assert sample.spectral_axis == SpectralAxis(size=256, offset=0.5, scale=0.02, units="eV")
    assert (sample.pixel_size, sample.pixel_units, sample.spectrum_units) == (2.0, "nm", "counts")
    assert sample.name == "plasmonic nanoparticles"
    assert isinstance(sample.noise, PoissonCounts)
    assert sample.oversampling == 1


def test_the_default_field_holds_several_particles_a_film_and_holes():
    for seed in range(5):
        s = plasmonic_sample((64, 64), seed=seed)
        assert s.labels["particle"].max() >= 4
        assert s.labels["film"].any() and s.labels["hole"].any()


# -- geometry and overview --------------------------------------------------------------------


def test_the_overview_shows_bright_metal_grey_substrate_and_dark_holes(sample):
    labels, image = sample.labels, sample.image
    d = labels["edge_distance_nm"]
    deep_metal = d <= -2.5 * PIXEL_NM  # away from the blurred edges
    substrate = (d >= 2.5 * PIXEL_NM) & ~labels["hole"]
    hole_core = labels["hole"] & (d >= 1.5 * PIXEL_NM)
    assert deep_metal.any() and substrate.any() and hole_core.any()
    assert np.median(image[deep_metal]) > np.median(image[substrate]) + 0.3
    assert np.median(image[substrate]) > np.median(image[hole_core]) + 0.1
    # Thicker particles are brighter (HAADF ~ thickness).
    thick = labels["thickness_nm"]
    inside = deep_metal & (labels["particle"] > 0)
    assert np.corrcoef(thick[inside], image[inside])[0, 1] > 0.5


def test_particles_keep_apart_from_each_other_and_from_the_film():
    from scipy import ndimage

    for seed in range(5):
        s = plasmonic_sample((64, 64), seed=seed)
        particle, film_zone = s.labels["particle"], s.labels["film"] | s.labels["hole"]
        for k in range(1, particle.max() + 1):
            others = ((particle > 0) & (particle != k)) | film_zone
            gap = ndimage.distance_transform_edt(~others)[particle == k].min()
            assert gap > 4.0 / PIXEL_NM  # gap_nm


# -- spectra ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_noise_free_spectra_follow_the_documented_formula(seed):
    s = plasmonic_sample((64, 64), seed=seed)
    np.testing.assert_allclose(s.signal, model_spectra(s), rtol=1e-5)


def test_a_spectrum_at_a_chosen_pixel(sample):
    # Particle 1's corner pixel, written out term by term from its labels.
    corner, _ = corner_and_edge_centre(sample, 1)
    e = sample.spectral_axis.values()
    lab = {k: float(v[corner]) for k, v in sample.labels.items()}
    expected = (
        ZLP_RATE * (e / 0.5) ** -3
        + BULK_RATE_PER_NM * lab["thickness_nm"] / (1 + ((e - BULK_EV) / BULK_HWHM) ** 2)
        + EDGE_RATE
        * np.exp(-abs(lab["edge_distance_nm"]) / EDGE_DECAY)
        / (1 + ((e - lab["edge_plasmon_eV"]) / EDGE_HWHM) ** 2)
        + CORNER_RATE
        * np.exp(-lab["corner_distance_nm"] / CORNER_DECAY)
        / (1 + ((e - lab["corner_plasmon_eV"]) / CORNER_HWHM) ** 2)
    )
    np.testing.assert_allclose(sample.signal[corner], expected, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_the_corner_plasmon_is_stronger_at_a_corner_than_at_an_edge_centre(seed):
    s = plasmonic_sample((64, 64), seed=seed)
    corner, edge_centre = corner_and_edge_centre(s, 1)  # particle 1 is always a triangle
    assert s.labels["corner_distance_nm"][corner] < 1.5 * PIXEL_NM
    at = channel(s, float(s.labels["corner_plasmon_eV"][corner]))
    assert s.signal[corner][at] > 1.5 * s.signal[edge_centre][at]
    # The corner peak is a local maximum of the corner pixel's spectrum.
    spectrum = s.signal[corner]
    peak = at - 3 + int(np.argmax(spectrum[at - 3 : at + 4]))
    assert abs(peak - at) <= 1 and spectrum[peak - 1] < spectrum[peak] > spectrum[peak + 1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_the_corner_window_peaks_at_a_vertex(seed):
    # What a campaign's peak_intensity scalarizer (the maximum in the window) sees.
    s = plasmonic_sample((64, 64), seed=seed)
    scalar = window_max(s, CORNER_WINDOW)
    best = np.unravel_index(np.argmax(scalar), scalar.shape)
    assert s.labels["corner_distance_nm"][best] <= 1.5 * PIXEL_NM
    far = s.labels["corner_distance_nm"] >= 20.0
    assert scalar[best] > 3 * np.median(scalar[far])


def test_the_corner_peak_has_useful_counts_at_a_short_dwell(sample):
    corner, _ = corner_and_edge_centre(sample, 1)
    at = channel(sample, float(sample.labels["corner_plasmon_eV"][corner]))
    counts = sample.expected_spectra(0.05)[corner]
    background = 0.05 * zlp_tail(sample.spectral_axis.values())
    assert counts[at] - background[at] > 100


def test_the_edge_plasmon_decays_outside_a_particle():
    # One triangle, no film, no corner mode: outside, S - ZLP is the aloof edge mode alone.
    s = plasmonic_sample((64, 64), seed=2, n_particles=1, film_fraction=0.0, corner_rate=0.0)
    e = s.spectral_axis.values()
    d = s.labels["edge_distance_nm"]
    edge_ev = float(s.labels["edge_plasmon_eV"][0, 0])
    np.testing.assert_allclose(s.labels["edge_plasmon_eV"], edge_ev)  # one particle, one mode
    at = channel(s, edge_ev)
    excess = (s.signal[..., at] - zlp_tail(e)[at]) / lorentzian(e[at], edge_ev, EDGE_HWHM)
    means = [excess[np.isclose(d, dist)].mean() for dist in (1.0, 5.0, 9.0, 13.0)]
    assert means[0] > 0.8 * EDGE_RATE  # strong aloof excitation just outside the edge
    assert means[0] > means[1] > means[2] > means[3] > 0
    np.testing.assert_allclose(np.diff(np.log(means)), -4.0 / EDGE_DECAY, rtol=1e-3)


def test_the_bulk_plasmon_is_only_in_the_metal():
    s = plasmonic_sample((64, 64), seed=1, edge_rate=0.0, corner_rate=0.0)
    e = s.spectral_axis.values()
    thickness = s.labels["thickness_nm"]
    metal = thickness > 0
    excess = s.signal - zlp_tail(e)
    # Outside the metal (substrate and holes) there is the zero-loss tail only.
    np.testing.assert_allclose(
        s.signal[~metal], np.broadcast_to(zlp_tail(e), (int((~metal).sum()), CHANNELS)), rtol=1e-6
    )
    # Inside, a peak at 3.8 eV whose height is proportional to the thickness.
    at = channel(s, BULK_EV)
    np.testing.assert_allclose(excess[metal][:, at], BULK_RATE_PER_NM * thickness[metal], rtol=1e-4)
    assert np.all(np.argmax(excess[metal], axis=-1) == at)


def test_bigger_particles_have_lower_plasmon_energies():
    peaks, labelled = [], []
    for size in (20.0, 40.0):
        s = plasmonic_sample(
            (64, 64), seed=0, n_particles=1, film_fraction=0.0, particle_size_nm=(size, size)
        )
        assert s.labels["particle_size_nm"].max() == pytest.approx(size)
        # Just outside the middle of an edge: aloof, no bulk plasmon, far from the corners.
        _, edge_centre = corner_and_edge_centre(s, 1)
        d = s.labels["edge_distance_nm"]
        outside = np.isclose(d, 0.5 * PIXEL_NM)
        rows, cols = np.nonzero(outside)
        near = np.argmin(np.hypot(rows - edge_centre[0], cols - edge_centre[1]))
        pixel = rows[near], cols[near]
        e = s.spectral_axis.values()
        band = (e >= 2.2) & (e <= 3.6)
        excess = s.signal[pixel] - zlp_tail(e)
        peaks.append(e[band][np.argmax(excess[band])])
        labelled.append(float(s.labels["edge_plasmon_eV"][pixel]))
        assert peaks[-1] == pytest.approx(labelled[-1], abs=0.05)
        expected = EDGE_EV * (SIZE_REFERENCE / size) ** SIZE_EXPONENT
        assert labelled[-1] == pytest.approx(expected, rel=1e-5)
    assert peaks[1] < peaks[0] - 0.4


def test_labelled_mode_energies_fall_with_particle_size(sample):
    labels = sample.labels
    particle = labels["particle"]
    sizes, edges = [], []
    for k in range(1, particle.max() + 1):
        mine = particle == k
        sizes.append(labels["particle_size_nm"][mine][0])
        edges.append(labels["edge_plasmon_eV"][mine][0])
        np.testing.assert_array_equal(labels["edge_plasmon_eV"][mine], edges[-1])
    order = np.argsort(sizes)
    assert len(set(sizes)) == len(sizes) >= 4
    assert np.all(np.diff(np.asarray(edges)[order]) < 0)
    # Film pixels and hole interiors see the rim mode.
    np.testing.assert_allclose(labels["edge_plasmon_eV"][labels["film"]], RIM_EV)
    np.testing.assert_allclose(labels["edge_plasmon_eV"][labels["hole"]], RIM_EV)


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"shape": (15, 64)}, "shape"),
        ({"shape": (64,)}, "shape"),
        ({"pixel_size_nm": 0.0}, "pixel_size_nm"),
        ({"n_particles": 0}, "n_particles"),
        ({"n_particles": 2.5}, "n_particles"),
        ({"n_holes": -1}, "n_holes"),
        ({"particle_size_nm": (-5.0, 20.0)}, "particle_size_nm"),
        ({"particle_size_nm": (30.0, 20.0)}, "particle_size_nm"),
        ({"particle_thickness_nm": (0.0, 10.0)}, "particle_thickness_nm"),
        ({"hole_radius_nm": (5.0, float("inf"))}, "hole_radius_nm"),
        ({"film_fraction": 0.6}, "film_fraction"),
        ({"film_fraction": -0.1}, "film_fraction"),
        ({"gap_nm": -1.0}, "gap_nm"),
        ({"edge_decay_nm": 0.0}, "edge_decay_nm"),
        ({"corner_decay_nm": -2.0}, "corner_decay_nm"),
        ({"corner_hwhm_ev": 0.0}, "corner_hwhm_ev"),
        ({"corner_ev": float("nan")}, "corner_ev"),
        ({"zlp_rate": 0.0}, "zlp_rate"),
        ({"edge_rate": -1.0}, "edge_rate"),
        ({"image_noise": -0.1}, "image_noise"),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(kwargs, name):
    kwargs = {"shape": (32, 32), **kwargs}
    shape = kwargs.pop("shape")
    with pytest.raises(ValueError, match=name):
        plasmonic_sample(shape, **kwargs)


def test_a_field_with_no_room_for_a_particle_is_refused():
    with pytest.raises(ValueError, match="too small"):
        plasmonic_sample((16, 16), film_fraction=0.5, gap_nm=20.0)
