import numpy as np
import pytest

from dklscope.scalarizers import PeakIntensity


def test_peak_intensity_is_the_maximum_inside_the_window_only():
    axis = np.linspace(0.0, 3.0, 31)  # 0.1 eV steps
    spectrum = np.zeros(31)
    spectrum[5] = 100.0  # 0.5 eV: outside
    spectrum[12] = 7.0  # 1.2 eV: inside
    spectrum[11] = 3.0
    assert PeakIntensity((1.0, 1.4))(spectrum, axis) == 7.0


def test_peak_intensity_works_on_stacks_of_spectra():
    axis = np.linspace(0.0, 1.0, 11)
    spectra = np.arange(2 * 3 * 11, dtype=float).reshape(2, 3, 11)
    values = PeakIntensity((0.2, 0.5))(spectra, axis)
    assert values.shape == (2, 3)
    np.testing.assert_array_equal(values, spectra[..., 5])


def test_a_window_without_channels_is_an_error():
    with pytest.raises(ValueError, match="holds no channel"):
        PeakIntensity((5.0, 6.0))(np.ones(10), np.linspace(0, 1, 10))
