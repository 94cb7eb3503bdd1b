"""Scalarizers: a spectrum on its calibrated axis -> the one number a campaign optimises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Scalarizer(Protocol):
    """Maps spectra of shape (..., channels) on ``axis`` (channels,) to shape (...)."""

    def __call__(self, spectra: np.ndarray, axis: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class PeakIntensity:
    """The maximum of the spectrum inside ``window = (low, high)``, in the axis' units.

    A window that holds no channel of the axis is an error, not a NaN.
    """

    window: tuple[float, float]

    def __call__(self, spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
        inside = (axis >= self.window[0]) & (axis <= self.window[1])
        if not inside.any():
            raise ValueError(
                f"window {list(self.window)} holds no channel of the spectral axis "
                f"[{axis[0]:.4g}, {axis[-1]:.4g}]"
            )
        return np.asarray(spectra)[..., inside].max(axis=-1)
