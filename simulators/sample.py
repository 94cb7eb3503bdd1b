"""`Sample`: a virtual specimen whose full hyperspectral ground truth is known."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dklscope.drivers import SpectralAxis


@dataclass(frozen=True)
class Sample:
    """A specimen on the overview's pixel grid.

    ``image`` is the overview, shape (rows, cols). ``rates`` is the noise-free spectrum at
    every pixel as a rate, shape (rows, cols, channels), in ``spectrum_units`` per second, so
    the expected spectrum after a dwell of ``t`` seconds is ``rates[row, col] * t``.
    ``labels`` holds the structural maps the sample was made from, each (rows, cols).
    """

    name: str
    image: np.ndarray
    rates: np.ndarray
    spectral_axis: SpectralAxis
    pixel_size: float
    pixel_units: str
    spectrum_units: str
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rates.shape != (*self.image.shape, self.spectral_axis.size):
            raise ValueError(
                f"rates shape {self.rates.shape} does not match image {self.image.shape} "
                f"and {self.spectral_axis.size} channels"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape  # type: ignore[return-value]

    def expected_spectra(self, dwell_s: float) -> np.ndarray:
        """The noise-free spectra after ``dwell_s`` seconds, shape (rows, cols, channels)."""
        return self.rates * np.float32(dwell_s)
