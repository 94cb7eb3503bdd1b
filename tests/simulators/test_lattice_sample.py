"""`lattice_sample` and `Sample`: determinism, shapes, structure and the physics of the spectra."""

import numpy as np
import pytest

from dklscope.drivers import SpectralAxis
from dklscope.simulators import Sample, lattice_sample

# The defaults of lattice_sample, restated: the tests check the spectra against them.
ZLP_RATE = 2.0e4
BULK_RATE = 4.0e3
CHANNELS = 256


@pytest.fixture(scope="module")
def sample():
    return lattice_sample((48, 48), seed=0)


def test_same_seed_gives_the_same_sample(sample):
    again = lattice_sample((48, 48), seed=0)
    np.testing.assert_array_equal(again.image, sample.image)
    np.testing.assert_array_equal(again.signal, sample.signal)
    assert again.labels.keys() == sample.labels.keys()
    for key in sample.labels:
        np.testing.assert_array_equal(again.labels[key], sample.labels[key])


def test_a_different_seed_gives_a_different_sample(sample):
    other = lattice_sample((48, 48), seed=1)
    assert not np.array_equal(other.image, sample.image)
    assert not np.array_equal(other.signal, sample.signal)
    assert not np.array_equal(other.labels["vacancy_density"], sample.labels["vacancy_density"])


@pytest.mark.parametrize("shape", [(48, 48), (40, 64), (64, 40)])
def test_shapes_and_labels(shape):
    s = lattice_sample(shape, seed=3)
    rows, cols = shape
    assert s.shape == shape
    assert s.image.shape == shape and s.image.dtype == np.float32
    assert s.signal.shape == (rows, cols, CHANNELS) and s.signal.dtype == np.float32
    assert s.spectral_axis.size == CHANNELS
    assert set(s.labels) == {"material", "domain", "vacancy_density", "edge_distance_px", "strain"}
    for label in s.labels.values():
        assert label.shape == shape
    assert s.labels["material"].dtype == bool
    assert set(np.unique(s.labels["domain"])) <= {0, 1}
    assert np.all(np.isfinite(s.image)) and np.all(np.isfinite(s.signal))
    assert np.all(s.signal > 0)
    # The structure every campaign relies on: vacuum at the top, two domains, vacancies.
    material = s.labels["material"]
    assert not material[0].all() and material[-1].all()
    assert set(np.unique(s.labels["domain"][material])) == {0, 1}
    assert s.labels["vacancy_density"].max() > 0.5
    assert s.labels["vacancy_density"].min() >= 0


def test_metadata(sample):
    assert sample.spectral_axis == SpectralAxis(size=256, offset=0.2, scale=0.011, units="eV")
    assert (sample.pixel_size, sample.pixel_units, sample.spectrum_units) == (0.08, "nm", "counts")


def test_the_image_shows_atoms_in_the_material_and_nothing_in_the_vacuum(sample):
    material = sample.labels["material"]
    far_vacuum = ~material & (sample.labels["edge_distance_px"] >= 4)
    assert far_vacuum.any()
    assert np.abs(sample.image[far_vacuum]).max() < 0.2  # noise only (sigma 0.03)
    assert sample.image[material].max() > 0.8  # atom columns


def zlp_tail(energy):
    return ZLP_RATE * (energy / energy[0]) ** -3.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_defect_mode_peaks_at_1_2_ev_where_vacancies_are(seed):
    s = lattice_sample((48, 48), seed=seed)
    energy = s.spectral_axis.values()
    density = s.labels["vacancy_density"]
    row, col = np.unravel_index(np.argmax(density), density.shape)
    spectrum = s.signal[row, col]

    # A local maximum within 0.05 eV of 1.2 eV.
    near = np.flatnonzero(np.abs(energy - 1.2) <= 0.05)
    peak = near[np.argmax(spectrum[near])]
    assert near[0] < peak < near[-1], "the maximum sits on the window's edge"
    assert spectrum[peak - 1] < spectrum[peak] > spectrum[peak + 1]

    # Stronger than at a vacancy-free pixel of the same domain, well inside the material.
    material, domain = s.labels["material"], s.labels["domain"]
    clean = (
        material
        & (domain == domain[row, col])
        & (density < 1e-3)
        & (s.labels["edge_distance_px"] > 10)
    )
    assert clean.any()
    clean_row, clean_col = np.argwhere(clean)[0]
    at = np.argmin(np.abs(energy - 1.2))
    assert spectrum[at] > s.signal[clean_row, clean_col, at] + 0.5 * 8.0e3 * density.max()
    # ... where the spectrum has no peak near 1.2 eV at all.
    c = s.signal[clean_row, clean_col, near]
    assert not np.any((c[1:-1] > c[:-2]) & (c[1:-1] > c[2:]))


def test_the_vacuum_has_no_bulk_plasmon(sample):
    energy = sample.spectral_axis.values()
    vacuum = ~sample.labels["material"]
    distance = np.where(vacuum, sample.labels["edge_distance_px"], -1)
    row, col = np.unravel_index(np.argmax(distance), distance.shape)
    assert distance[row, col] >= 4
    high = energy >= 1.8  # away from the edge plasmon (0.8 eV) and the defect mode (1.2 eV)
    np.testing.assert_allclose(sample.signal[row, col, high], zlp_tail(energy)[high], rtol=1e-3)


@pytest.mark.parametrize("domain_label, plasmon_ev", [(0, 2.2), (1, 2.5)])
def test_the_material_has_the_bulk_plasmon_of_its_domain(sample, domain_label, plasmon_ev):
    energy = sample.spectral_axis.values()
    inside = (
        sample.labels["material"]
        & (sample.labels["domain"] == domain_label)
        & (sample.labels["edge_distance_px"] > 10)
        & (sample.labels["vacancy_density"] < 1e-3)
    )
    row, col = np.argwhere(inside)[0]
    excess = sample.signal[row, col] - zlp_tail(energy)
    at = np.argmin(np.abs(energy - plasmon_ev))
    assert excess[at] == pytest.approx(BULK_RATE, rel=0.02)
    assert abs(energy[np.argmax(excess * (energy > 1.8))] - plasmon_ev) <= 0.011


# -- Sample ---------------------------------------------------------------------------------

AXIS = SpectralAxis(size=5, offset=0.0, scale=1.0, units="eV")


def make_sample(image_shape, signal_shape):
    return Sample(
        name="tiny",
        image=np.zeros(image_shape, dtype=np.float32),
        signal=np.ones(signal_shape, dtype=np.float32),
        spectral_axis=AXIS,
        pixel_size=1.0,
        pixel_units="nm",
        spectrum_units="counts",
    )


@pytest.mark.parametrize(
    "signal_shape", [(3, 4, 4), (3, 4, 6), (4, 3, 5), (3, 5, 5), (3, 4), (3, 4, 5, 1), (5,)]
)
def test_sample_refuses_a_signal_that_does_not_match(signal_shape):
    with pytest.raises(ValueError, match="signal shape"):
        make_sample((3, 4), signal_shape)


def test_sample_with_a_matching_signal():
    s = make_sample((3, 4), (3, 4, 5))
    assert s.shape == (3, 4)
    assert s.labels == {}
    expected = s.expected_spectra(0.5)
    assert expected.shape == (3, 4, 5)
    np.testing.assert_array_equal(expected, np.full((3, 4, 5), 0.5, dtype=np.float32))


def test_strain_compresses_around_vacancy_clusters_and_expands_domain_b():
    s = lattice_sample((64, 64), seed=4)
    # Inward relaxation: compressive (negative) strain at the cluster centres.
    assert s.labels["strain"][s.labels["vacancy_density"] > 1.0].mean() < -0.02
    # Without relaxation the strain is the mismatch of each domain: 0 in A, 0.04 in B.
    mismatch_only = lattice_sample((64, 64), seed=4, relaxation_px=0.0)
    np.testing.assert_allclose(
        mismatch_only.labels["strain"], 0.04 * mismatch_only.labels["domain"], atol=1e-7
    )
    unstrained = lattice_sample((64, 64), seed=4, relaxation_px=0.0, mismatch=0.0)
    np.testing.assert_allclose(unstrained.labels["strain"], 0.0, atol=1e-12)


def test_core_loss_spectra_shift_down_where_titanium_is_reduced():
    s = lattice_sample((64, 64), seed=4, spectra="core-loss")
    energy = s.spectral_axis.values()
    assert s.spectral_axis.units == "eV" and energy[0] == 445.0
    density, material = s.labels["vacancy_density"], s.labels["material"]
    domain = s.labels["domain"]
    reduced = np.unravel_index(np.argmax(np.where(material, density, -1)), density.shape)
    clean_mask = material & (density < 1e-3) & (domain == domain[reduced])
    clean = np.argwhere(clean_mask)[0]
    background = 3.0e4 * (energy / energy[0]) ** -4.0
    l3 = (energy > 452) & (energy < 461)

    def centre_of_l3(spectrum):
        weight = spectrum[l3] - background[l3]
        return np.sum(energy[l3] * weight) / np.sum(weight)

    # Reduction moves the L3 lines down by 1.5 eV x the reduced fraction (about 0.75 here).
    assert centre_of_l3(s.signal[reduced]) < centre_of_l3(s.signal[tuple(clean)]) - 0.5
    # The vacuum has no edge: the pre-edge power law only.
    vacuum = np.argwhere(~material)[0]
    np.testing.assert_allclose(s.signal[tuple(vacuum)], background, rtol=1e-5)


def test_no_two_atoms_overlap_at_the_domain_boundary():
    # Atoms are Gaussians of amplitude <= 1; overlapping pairs would reach about 1.7.
    for seed in range(5):
        s = lattice_sample((64, 64), seed=seed, image_noise=0.0)
        assert s.image.max() < 1.3
