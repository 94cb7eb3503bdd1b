"""`Sample`: a virtual specimen whose full hyperspectral ground truth is known, and the noise
models that say how a measurement of it scatters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from dklscope.drivers import SpectralAxis


class NoiseModel(Protocol):
    """How a measurement of a noise-free ``signal`` (channels,) depends on the dwell."""

    def expected(self, signal: np.ndarray, dwell_s: float) -> np.ndarray:
        """The mean measurement after ``dwell_s`` seconds, same shape as ``signal``."""
        ...

    def measure(self, signal: np.ndarray, dwell_s: float, rng: np.random.Generator) -> np.ndarray:
        """One noisy measurement after ``dwell_s`` seconds, float32."""
        ...


@dataclass(frozen=True)
class PoissonCounts:
    """``signal`` is a count rate (counts/s per channel); a measurement counts
    Poisson(rate × dwell), so its relative noise falls as 1/sqrt(dwell)."""

    def expected(self, signal: np.ndarray, dwell_s: float) -> np.ndarray:
        return signal * np.float32(dwell_s)

    def measure(self, signal: np.ndarray, dwell_s: float, rng: np.random.Generator) -> np.ndarray:
        return rng.poisson(self.expected(signal, dwell_s)).astype(np.float32)


@dataclass(frozen=True)
class GaussianNoise:
    """``signal`` does not depend on the dwell (a PFM loop, a dI/dV curve); a measurement adds
    Gaussian noise of standard deviation ``sd_at_1s / sqrt(dwell)`` in the signal's units."""

    sd_at_1s: float

    def expected(self, signal: np.ndarray, dwell_s: float) -> np.ndarray:
        return signal

    def measure(self, signal: np.ndarray, dwell_s: float, rng: np.random.Generator) -> np.ndarray:
        sd = self.sd_at_1s / np.sqrt(dwell_s)
        return (signal + sd * rng.standard_normal(signal.shape)).astype(np.float32)


@dataclass(frozen=True)
class Sample:
    """A specimen seen through an overview image and a grid of spectra.

    ``image`` is the overview, shape (rows, cols). ``signal`` is the noise-free spectrum of
    every spectrum pixel, shape (rows // oversampling, cols // oversampling, channels), and
    ``noise`` turns it into measurements. ``oversampling`` is the number of overview pixels
    per spectrum pixel along each axis: overview pixel (row, col) lies in spectrum pixel
    (row // oversampling, col // oversampling). ``labels`` holds the structural maps the
    sample was made from, each on the overview's grid.
    """

    name: str
    image: np.ndarray
    signal: np.ndarray
    spectral_axis: SpectralAxis
    pixel_size: float
    pixel_units: str
    spectrum_units: str
    noise: NoiseModel = field(default_factory=PoissonCounts)
    oversampling: int = 1
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rows, cols = self.image.shape
        expected = (rows // self.oversampling, cols // self.oversampling, self.spectral_axis.size)
        if self.signal.shape != expected:
            raise ValueError(
                f"signal shape {self.signal.shape} does not match the image {self.image.shape} "
                f"at oversampling {self.oversampling} with {self.spectral_axis.size} channels: "
                f"expected {expected}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """The overview's (rows, cols)."""
        return self.image.shape  # type: ignore[return-value]

    def spectrum_pixel(self, row: np.ndarray | int, col: np.ndarray | int) -> tuple:
        """The spectrum pixel (i, j) under overview pixel (row, col); works on arrays too."""
        return np.asarray(row) // self.oversampling, np.asarray(col) // self.oversampling

    def expected_spectra(self, dwell_s: float) -> np.ndarray:
        """The mean measurement of every spectrum pixel after ``dwell_s`` seconds,
        shape (rows // oversampling, cols // oversampling, channels)."""
        return self.noise.expected(self.signal, dwell_s)
