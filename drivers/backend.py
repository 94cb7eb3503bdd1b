"""The `Backend` protocol: what an instrument must offer to be served by `DriverServer`.

A backend speaks in overview pixel coordinates (``x`` column, ``y`` row). It may assume its
arguments were already checked against the limits of its own `describe`; the server refuses
anything else before the backend sees it.

Optional hooks, used when present: ``park() -> None`` (move the probe to a safe place) and
``blank() -> None`` (blank the beam). The server calls the first of them that the backend has
when the controlling client stops heart-beating (the dead-man switch). A backend that describes
more than one overview channel must accept ``get_overview(channel)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .protocol import InstrumentDescription


@dataclass(frozen=True)
class Acquisition:
    """One spectrum and how it was taken.

    ``spectrum`` has shape ``(channels,)`` on the instrument's spectral axis; ``x`` and ``y``
    are where the probe actually was (overview pixels); ``timestamp`` is Unix time in seconds
    at the end of the exposure. ``seq`` is the server's sequence number for it (set by the
    client from the reply; a backend leaves it None).
    """

    spectrum: np.ndarray
    dwell_s: float
    x: float
    y: float
    timestamp: float
    seq: int | None = None


@runtime_checkable
class Backend(Protocol):
    """An instrument, real or simulated."""

    def describe(self) -> InstrumentDescription:
        """The instrument's geometry, calibrations and limits."""
        ...

    def get_overview(self) -> np.ndarray:
        """The overview image, shape ``overview_shape`` (rows, cols), float32."""
        ...

    def move_probe(self, x: float, y: float) -> tuple[float, float]:
        """Park the probe at ``(x, y)`` overview pixels; return where it actually is."""
        ...

    def acquire(self, dwell_s: float) -> Acquisition:
        """Expose for ``dwell_s`` seconds at the current probe position."""
        ...
