"""The `Backend` protocol: what an instrument must offer to be served by `DriverServer`.

A backend speaks in overview pixel coordinates (``x`` column, ``y`` row). It may assume its
arguments were already checked against the limits of its own `describe`; the server refuses
anything else before the backend sees it.

Optional hooks, used when present: ``park() -> None`` (move the probe to the instrument's safe
position, where it does no harm, and blank the beam if the instrument can) and ``blank() -> None``
(blank the beam). The server's ``park`` command (protocol 1.2) and its dead-man switch both call
``park()`` and then ``blank()``, each if the backend has it, and describe which it has
(``can_park``, ``can_blank``). The next ``move_probe`` un-parks: it moves the probe and unblanks
the beam. A backend that describes more than one overview channel must accept
``get_overview(channel)``.

Dose (protocol 1.2): a backend that describes ``dose_units`` and ``dose_per_s`` may set
`Acquisition.dose` to the dose it actually delivered; otherwise the server counts
``dwell_s * dose_per_s``.
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
    client from the reply; a backend leaves it None). ``dose`` is the dose this exposure
    delivered, in the described ``dose_units`` (None: not accounted; a backend may leave it
    None and the server counts ``dwell_s * dose_per_s``); ``dose_total`` is the server's running
    total for its session after it (set by the client from a 1.2 reply).
    """

    spectrum: np.ndarray
    dwell_s: float
    x: float
    y: float
    timestamp: float
    seq: int | None = None
    dose: float | None = None
    dose_total: float | None = None


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
