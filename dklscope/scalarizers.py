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

    def channels(self, axis: np.ndarray) -> np.ndarray:
        """Boolean mask of the channels of ``axis`` inside the window; a window that holds no
        channel is a `ValueError`."""
        inside = (axis >= self.window[0]) & (axis <= self.window[1])
        if not inside.any():
            raise ValueError(
                f"{list(self.window)} holds no channel of the spectral axis "
                f"[{axis.min():.4g}, {axis.max():.4g}]"
            )
        return inside

    def __call__(self, spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
        return np.asarray(spectra)[..., self.channels(axis)].max(axis=-1)
