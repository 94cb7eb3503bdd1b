import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from dklscope.config import SCALARIZER_KINDS, BiasWaveformConfig, ConfigError, ScalarizerConfig
from dklscope.model.scalarizers import (
    KINDS,
    BandRatio,
    LoopArea,
    Maximum,
    Robust,
    build_scalarizer,
    check_scalarizer,
)
from dklscope.simulators.ferroelectric import ferroelectric_sample
from dklscope.simulators.replay import load_replay

BEPS = Path(__file__).resolve().parents[3] / "shared" / "data" / "BEPS_PTO_50x50.h5"
FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))
WAVEFORM = BiasWaveformConfig(n=64, v_max=8.5)


def scalar(spectra, axis, **config):
    return build_scalarizer(ScalarizerConfig(**config))(spectra, axis)


def gaussian(axis, centre, sigma, height=1.0):
    return height * np.exp(-0.5 * ((axis - centre) / sigma) ** 2)


def test_peak_intensity_is_the_maximum_inside_the_window_only():
    axis = np.linspace(0.0, 3.0, 31)  # 0.1 eV steps
    spectrum = np.zeros(31)
    spectrum[5] = 100.0  # 0.5 eV: outside
    spectrum[12] = 7.0  # 1.2 eV: inside
    spectrum[11] = 3.0
    assert Maximum((1.0, 1.4))(spectrum, axis) == 7.0


def test_peak_intensity_works_on_stacks_of_spectra():
    axis = np.linspace(0.0, 1.0, 11)
    spectra = np.arange(2 * 3 * 11, dtype=float).reshape(2, 3, 11)
    values = Maximum((0.2, 0.5))(spectra, axis)
    assert values.shape == (2, 3)
    np.testing.assert_array_equal(values, spectra[..., 5])


def test_a_window_without_channels_is_an_error():
    with pytest.raises(ValueError, match="holds no channel"):
        Maximum((5.0, 6.0))(np.ones(10), np.linspace(0, 1, 10))


def test_every_kind_of_the_config_has_a_scalarizer_reading_the_keys_it_lists():
    assert set(KINDS) == set(SCALARIZER_KINDS)
    for kind, cls in KINDS.items():
        keys = {f.name for f in dataclasses.fields(cls)}
        assert keys == set(SCALARIZER_KINDS[kind]), kind


# -- in a window ----------------------------------------------------------------------------

AXIS = np.linspace(0.0, 1.0, 11)  # 0.1 steps
RAMP = 10 * AXIS  # 0, 1, ..., 10


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("sum", 2 + 3 + 4 + 5),
        ("mean", 3.5),
        ("maximum", 5.0),
        ("peak_intensity", 5.0),
        ("argmax", 0.5),
        ("integral", (2 + 5) / 2 * 0.3),  # exact for a straight line
        ("centre_of_mass", (0.2 * 2 + 0.3 * 3 + 0.4 * 4 + 0.5 * 5) / 14),
    ],
)
def test_window_reductions_have_known_values(kind, expected):
    value = scalar(RAMP, AXIS, kind=kind, window=(0.15, 0.55))  # channels 0.2 ... 0.5
    assert value == pytest.approx(expected)


def test_window_reductions_are_vectorised_over_leading_dimensions():
    cube = np.arange(4 * 5 * 11, dtype=np.float32).reshape(4, 5, 11)
    for kind in ("sum", "mean", "maximum", "argmax", "integral", "centre_of_mass"):
        values = scalar(cube, AXIS, kind=kind, window=(0.15, 0.55))
        assert values.shape == (4, 5)
        assert values[2, 3] == pytest.approx(
            scalar(cube[2, 3], AXIS, kind=kind, window=(0.15, 0.55))
        )


def test_centre_of_mass_of_a_symmetric_peak_is_its_centre():
    axis = np.linspace(0.0, 3.0, 301)
    spectrum = gaussian(axis, 1.234, 0.1)
    value = scalar(spectrum, axis, kind="centre_of_mass", window=(0.734, 1.734))  # +- 5 sigma
    assert value == pytest.approx(1.234, abs=1e-6)


def test_band_ratio_is_the_sum_in_one_band_over_the_sum_in_the_other():
    spectrum = np.where(AXIS < 0.45, 2.0, 8.0)  # 2 per channel below 0.45, 8 above
    value = scalar(
        spectrum, AXIS, kind="band_ratio", window=(0.55, 0.85), reference_window=(-0.05, 0.35)
    )
    assert value == pytest.approx((3 * 8.0) / (4 * 2.0))
    zero_reference = np.where(AXIS < 0.45, 0.0, 8.0)
    assert np.isnan(
        scalar(
            zero_reference,
            AXIS,
            kind="band_ratio",
            window=(0.55, 0.85),
            reference_window=(-0.05, 0.35),
        )
    )


def test_the_integral_of_dI_dV_above_zero_bias():
    bias = np.linspace(-2.0, 2.0, 401)
    didv = 1.0 + bias**2
    value = scalar(didv, bias, kind="integral", window=(0.0, 2.0))
    assert value == pytest.approx(2 + 8 / 3, rel=1e-4)


# -- peaks ----------------------------------------------------------------------------------


def test_peak_prominence_position_and_width_of_a_gaussian_have_closed_forms():
    axis = np.linspace(0.0, 3.0, 301)  # 0.01 eV channels
    sigma, centre = 0.08, 1.2
    spectrum = 2.0 + gaussian(axis, centre, sigma, height=5.0)  # on a flat background
    spectrum += gaussian(axis, 2.4, 0.05, height=50.0)  # a taller peak outside the window
    window = (1.0, 1.5)
    assert scalar(spectrum, axis, kind="peak_prominence", window=window) == pytest.approx(5.0)
    assert scalar(spectrum, axis, kind="peak_width", window=window) == pytest.approx(
        FWHM_PER_SIGMA * sigma, rel=2e-3
    )
    width_at_90 = 2 * sigma * np.sqrt(2 * np.log(1 / 0.1))  # 90% of the way down
    assert scalar(spectrum, axis, kind="peak_width", window=window, rel_height=0.9) == (
        pytest.approx(width_at_90, rel=2e-3)
    )
    shifted = 2.0 + gaussian(axis, 1.2345, sigma, height=5.0)  # between channels
    position = scalar(shifted, axis, kind="peak_position", window=window)
    assert position == pytest.approx(1.2345, abs=2e-4)  # a 20th of a channel


def test_peaks_pick_the_most_prominent_one_in_the_window_for_every_spectrum():
    axis = np.linspace(0.0, 3.0, 301)
    centres = np.array([[0.8, 1.0], [1.3, 1.5]])
    cube = gaussian(axis, centres[..., None], 0.05, height=3.0)
    cube += gaussian(axis, 1.9, 0.05, height=1.0)  # a smaller peak, also in the window
    positions = scalar(cube, axis, kind="peak_position", window=(0.5, 2.0))
    np.testing.assert_allclose(positions, centres, atol=1e-3)
    prominences = scalar(cube, axis, kind="peak_prominence", window=(1.7, 2.0))
    np.testing.assert_allclose(prominences, 1.0, atol=2e-3)


def test_no_peak_gives_nan_or_zero_as_configured():
    axis = np.linspace(0.0, 3.0, 301)
    tail = np.exp(-axis)  # falls through the window: no peak there
    for kind in ("peak_prominence", "peak_position", "peak_width"):
        assert np.isnan(scalar(tail, axis, kind=kind, window=(1.0, 2.0)))
        assert scalar(tail, axis, kind=kind, window=(1.0, 2.0), no_peak="zero") == 0.0
    small = tail + gaussian(axis, 1.5, 0.05, height=0.05)
    assert scalar(small, axis, kind="peak_prominence", window=(1.0, 2.0)) > 0.02
    assert np.isnan(
        scalar(small, axis, kind="peak_prominence", window=(1.0, 2.0), min_prominence=0.1)
    )


@pytest.mark.parametrize("kind", sorted(SCALARIZER_KINDS))
def test_a_spectrum_with_a_nan_gives_nan_and_leaves_the_others_alone(kind):
    reads = SCALARIZER_KINDS[kind]
    if "bias" in reads:  # three parallelogram loops
        axis, spectra = STEPS, np.stack([PARALLELOGRAM] * 3)
        config = {"bias": PARALLELOGRAM_BIAS, "branch": "rising" if "branch" in reads else None}
    else:  # three spectra with a peak at 0.5
        axis = np.linspace(0.0, 1.0, 12)
        spectra = np.stack([1 + gaussian(axis, 0.5, 0.1)] * 3)
        config = {
            "window": (0.2, 0.9),
            "reference_window": (0.0, 0.5) if "reference_window" in reads else None,
        }
    spectra[1, 0] = np.nan  # a failed acquisition; its other channels are fine
    values = scalar(spectra, axis, kind=kind, **config)
    assert np.isnan(values[1])
    assert np.isfinite(values[[0, 2]]).all()
    assert values[0] == values[2]


# -- robust options -------------------------------------------------------------------------


def test_a_median_filter_removes_a_single_channel_spike_along_the_channel_axis_only():
    axis = np.linspace(0.0, 1.0, 11)
    spectra = np.ones((3, 11))
    spectra[1, 5] = 1000.0  # a cosmic ray
    assert scalar(spectra, axis, window=(0.4, 0.6))[1] == 1000.0
    np.testing.assert_array_equal(scalar(spectra, axis, window=(0.4, 0.6), median_filter=3), 1.0)
    # Not across spectra: a spike in every spectrum at one channel is not smoothed away by
    # the neighbours of the grid, only by the channel's own neighbours.
    column = np.ones((3, 11))
    column[:, 2:5] = 9.0  # a real three-channel feature survives a 3-channel filter
    np.testing.assert_array_equal(
        scalar(column, axis, kind="sum", window=(0.0, 1.0), median_filter=3), 8 + 27
    )


def test_clipping_by_values_and_by_each_spectrums_percentiles():
    axis = np.linspace(0.0, 1.0, 101)
    spectrum = np.linspace(0.0, 100.0, 101)  # percentile p is the value p
    spectrum[50] = 1e6
    assert scalar(spectrum, axis, window=(0, 1), clip_values=(-5.0, 70.0)) == 70.0
    # The spike took the place of 50: the 90th percentile of the 101 values is 91.
    assert scalar(spectrum, axis, window=(0, 1), clip_percentiles=(0, 90)) == pytest.approx(91.0)
    assert scalar(spectrum, axis, kind="argmax", window=(0, 1)) == 0.5


def test_robust_keeps_the_windows_and_the_nan_of_failed_spectra():
    robust = build_scalarizer(ScalarizerConfig(window=(0.0, 0.5), median_filter=3))
    assert isinstance(robust, Robust)
    assert robust.windows == ((0.0, 0.5),)
    spectra = np.ones((2, 11))
    spectra[0, 9] = np.inf
    values = robust(spectra, AXIS)
    assert np.isnan(values[0]) and values[1] == 1.0


def test_windows_lists_what_a_scalarizer_reads():
    assert BandRatio((1.0, 2.0), (3.0, 4.0)).windows == ((1.0, 2.0), (3.0, 4.0))
    assert LoopArea((0.0, 1.0, 0.0)).windows == ()


@pytest.mark.skipif(
    not BEPS.is_file() and not os.environ.get("CI"), reason=f"real data not found: {BEPS}"
)
def test_a_robust_loop_area_map_of_real_beps_data_is_not_made_of_spikes():
    """About a third of the loops of the PbTiO3 file carry SHO-fit spikes of 1e-3..1e-2 on a
    loop of ~1e-4, in runs of up to ~20 steps near the turning points. Raw, a few per cent of
    the pixels have an area 10x the median and the median area is twice that of the median
    loop. Clipped at 3x the typical loop amplitude and median-filtered, the map's areas are
    those of loops."""
    replay = load_replay(BEPS)
    loops, steps = replay.sample.signal, replay.sample.spectral_axis.values()
    bias = tuple(replay.axis_values.tolist())  # 0 -> +8.5 -> -8.5 -> 0 V
    median_loop = np.median(loops.reshape(-1, loops.shape[-1]), axis=0)

    def spikiness(scalarizer):
        areas = scalarizer(loops, steps)
        assert areas.shape == (50, 50)
        typical = np.median(areas)
        return np.mean(np.abs(areas) > 10 * typical), typical / scalarizer(median_loop, steps)

    raw = build_scalarizer(ScalarizerConfig(kind="loop_area", bias=bias))
    robust = build_scalarizer(
        ScalarizerConfig(kind="loop_area", bias=bias, clip_values=(-3e-4, 3e-4), median_filter=3)
    )
    raw_outliers, raw_ratio = spikiness(raw)
    outliers, ratio = spikiness(robust)
    assert raw_outliers > 0.05 and raw_ratio > 1.5
    assert outliers < 0.005
    assert ratio == pytest.approx(1.0, abs=0.05)


# -- hysteresis loops -----------------------------------------------------------------------

# A parallelogram loop, run counter-clockwise: bottom edge at -1 from -2 V to 1 V, up to
# (2 V, 1) through (1.5 V, 0), back along the top at 1 to -1 V, down through (-1.5 V, 0). Its
# area is base x height = 3 V x 2.
PARALLELOGRAM_BIAS = (-2.0, -1.0, 0.0, 1.0, 1.5, 2.0, 1.0, 0.0, -1.0, -1.5, -1.75)
PARALLELOGRAM = np.array([-1.0, -1, -1, -1, 0, 1, 1, 1, 1, 0, -0.5])
STEPS = np.arange(11.0)


def test_loop_area_of_a_parallelogram_is_base_times_height_and_signed():
    config = {"kind": "loop_area", "bias": PARALLELOGRAM_BIAS}
    assert scalar(PARALLELOGRAM, STEPS, **config) == pytest.approx(6.0)
    reversed_config = {"kind": "loop_area", "bias": PARALLELOGRAM_BIAS[::-1]}
    assert scalar(PARALLELOGRAM[::-1], STEPS, **reversed_config) == pytest.approx(-6.0)


@pytest.mark.parametrize(
    ("kind", "branch", "expected"),
    [
        ("coercive_bias", "rising", 1.5),
        ("coercive_bias", "falling", -1.5),
        ("coercive_bias", "difference", 3.0),
        ("remanence", "rising", -1.0),
        ("remanence", "falling", 1.0),
        ("remanence", "difference", 2.0),  # the loop's opening at 0 V
    ],
)
def test_loop_scalars_of_a_parallelogram(kind, branch, expected):
    config = {"kind": kind, "branch": branch, "bias": PARALLELOGRAM_BIAS}
    assert scalar(PARALLELOGRAM, STEPS, **config) == pytest.approx(expected)


def test_loop_scalars_of_simulated_tanh_loops_match_the_sample_labels():
    sample = ferroelectric_sample((30, 30), seed=4, linear_slope=0.0, switching_width_V=0.7)
    loops, steps = sample.signal, sample.spectral_axis.values()
    plus, minus = sample.labels["coercive_plus_V"], sample.labels["coercive_minus_V"]
    waveform = {"bias_waveform": WAVEFORM}

    rising = scalar(loops, steps, kind="coercive_bias", branch="rising", **waveform)
    falling = scalar(loops, steps, kind="coercive_bias", branch="falling", **waveform)
    width = scalar(loops, steps, kind="coercive_bias", branch="difference", **waveform)
    np.testing.assert_allclose(rising, plus, atol=0.02)
    np.testing.assert_allclose(falling, minus, atol=0.02)
    np.testing.assert_allclose(width, plus - minus, atol=0.04)

    # The simulator's nucleation bias is Vc -+ 2 w: tanh(-2), (1 - tanh 2) / 2 of the way.
    onset = (1 - np.tanh(2)) / 2
    nucleation = scalar(
        loops, steps, kind="nucleation_bias", branch="rising", onset=onset, **waveform
    )
    np.testing.assert_allclose(nucleation, plus - 2 * 0.7, atol=0.15)  # 0.53 V steps

    area = scalar(loops, steps, kind="loop_area", **waveform)
    np.testing.assert_allclose(area, sample.labels["loop_area"], rtol=1e-5)


def test_coercive_biases_of_noisy_loops_stay_close_to_the_truth():
    """Noise of 5% of the loop amplitude (the sample's own at a 10 ms dwell)."""
    sample = ferroelectric_sample((20, 20), seed=5)
    rng = np.random.default_rng(0)
    noisy = sample.noise.measure(sample.signal, 0.01, rng)  # 5% of the loop amplitude
    config = {"kind": "coercive_bias", "branch": "rising", "bias_waveform": WAVEFORM}
    rising = scalar(noisy, sample.spectral_axis.values(), **config)
    error = np.abs(rising - sample.labels["coercive_plus_V"])
    assert np.median(error) < 0.05 and error.max() < 0.3


def test_a_branch_without_a_crossing_gives_nan():
    flat = np.full(11, 1.0)
    for kind in ("coercive_bias", "nucleation_bias"):
        assert np.isnan(scalar(flat, STEPS, kind=kind, branch="rising", bias=PARALLELOGRAM_BIAS))


# -- your own ---------------------------------------------------------------------------------


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_scalars.py").write_text(
        "import numpy as np\n"
        "def spread(spectra, axis):\n"
        "    return spectra.max(axis=-1) - spectra.min(axis=-1)\n"
        "def wrong_shape(spectra, axis):\n"
        "    return spectra\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_scalars"
    sys.modules.pop("my_scalars", None)


def test_a_user_function_is_imported_by_its_path_and_given_spectra_and_axis(user_module):
    spectra = np.arange(24.0).reshape(2, 12)
    values = scalar(spectra, np.linspace(0, 1, 12), kind=f"{user_module}:spread")
    np.testing.assert_array_equal(values, [11.0, 11.0])
    spectra[1, 3] = np.nan  # the NaN policy holds for user functions too
    values = scalar(spectra, np.linspace(0, 1, 12), kind=f"{user_module}:spread", median_filter=3)
    assert values[0] == 11.0 and np.isnan(values[1])


def test_a_user_function_must_return_one_value_per_spectrum(user_module):
    with pytest.raises(ValueError, match="must return shape"):
        scalar(np.ones((2, 12)), np.arange(12.0), kind=f"{user_module}:wrong_shape")


@pytest.mark.parametrize("kind", ["no_such_module:f", "numpy:no_such_function"])
def test_a_user_function_that_cannot_be_imported_names_the_kind(kind):
    with pytest.raises(ConfigError) as info:
        build_scalarizer(ScalarizerConfig(kind=kind))
    assert info.value.path == "scalarizer.kind"
    assert "cannot import" in info.value.message


# -- against an instrument's axis ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "path", "message"),
    [
        (
            ScalarizerConfig(window=(5.0, 6.0)),
            "scalarizer.window",
            "[5.0, 6.0] holds no channel of the spectral axis [0.2, 3] eV",
        ),
        (
            ScalarizerConfig(kind="band_ratio", window=(1.0, 2.0), reference_window=(4.0, 6.0)),
            "scalarizer.reference_window",
            "[4.0, 6.0] holds no channel",
        ),
        (
            ScalarizerConfig(kind="loop_area", bias=(0.0, 1, 2, 1, 0, -1)),
            "scalarizer.bias",
            "6 biases for a spectral axis of 15 channels",
        ),
        (
            ScalarizerConfig(kind="loop_area", bias_waveform=WAVEFORM),
            "scalarizer.bias_waveform.n",
            "64 biases for a spectral axis of 15 channels",
        ),
        (ScalarizerConfig(kind="nowhere:f"), "scalarizer.kind", "cannot import 'nowhere:f'"),
    ],
)
def test_check_scalarizer_names_the_key_that_does_not_fit_the_axis(config, path, message):
    axis = np.linspace(0.2, 3.0, 15)
    with pytest.raises(ConfigError) as info:
        check_scalarizer(config, axis, "eV")
    assert info.value.path == path
    assert message in str(info.value)


def test_check_scalarizer_passes_what_fits():
    check_scalarizer(ScalarizerConfig(window=(1.0, 1.4)), np.linspace(0.2, 3.0, 15), "eV")
    check_scalarizer(
        ScalarizerConfig(kind="loop_area", bias_waveform=WAVEFORM), np.arange(64.0), "step"
    )
