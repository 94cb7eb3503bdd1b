"""`ScanGeometry`: overview pixels and Nion Swift's normalised probe positions, one to the other.

Three coordinate systems meet on a Nion STEM:

- **overview pixels** (the driver protocol's, ``PROTOCOL.md`` §3): ``x`` the column, ``y`` the
  row, pixel centres at integers, ``(0, 0)`` the centre of the first pixel;
- **normalised probe positions** (``STEMController.probe_position``, a ``FloatPoint(y, x)``):
  each in [0, 1], ``(0, 0)`` the top-left corner of the scan frame and ``(1, 1)`` its
  bottom-right corner, so the centre of pixel (row r, column c) is at
  ``((r + 0.5) / rows, (c + 0.5) / cols)``;
- **physical units** (nm): ``x_nm = x × pixel_size_nm``, with the pixels' origin (§3); the pixel
  size is the scan context's field of view over its longer side, as in Nion's
  ``ScanContext.calibration``.

All three live in the scan frame. The scan context's centre and rotation place that frame on
the specimen; they enter none of these conversions, and are kept here so that a scan context
changed after the overview was described is noticed (`NionBackend` refuses to move then).

numpy-free and Nion-free: plain arithmetic, testable anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ScanGeometry:
    """A scan frame: ``shape`` (rows, cols) pixels over ``fov_nm`` (its longer side), rotated by
    ``rotation_rad`` about ``center_nm`` ((y, x), nm) on the specimen."""

    shape: tuple[int, int]
    fov_nm: float
    rotation_rad: float = 0.0
    center_nm: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        rows, cols = self.shape
        if rows < 1 or cols < 1:
            raise ValueError(f"scan shape must be at least 1 x 1 pixels, got {self.shape}")
        if not (math.isfinite(self.fov_nm) and self.fov_nm > 0):
            raise ValueError(f"field of view must be a positive number of nm, got {self.fov_nm}")

    @classmethod
    def from_scan_context(cls, context: Any) -> ScanGeometry:
        """The geometry of a Nion ``stem_controller.ScanContext`` (``size``, ``fov_nm``,
        ``rotation_rad``, ``center_nm``)."""
        if not context.size or context.fov_nm is None:
            raise ValueError("the scan context is empty: take a scan in Nion Swift first")
        center = context.center_nm
        return cls(
            shape=(int(context.size.height), int(context.size.width)),
            fov_nm=float(context.fov_nm),
            rotation_rad=float(context.rotation_rad),
            center_nm=(float(center.y), float(center.x)) if center is not None else (0.0, 0.0),
        )

    @property
    def pixel_size_nm(self) -> float:
        """The side of one (square) pixel, nm."""
        return self.fov_nm / max(self.shape)

    @property
    def field_of_view_nm(self) -> tuple[float, float]:
        """(width, height) of the frame, nm."""
        rows, cols = self.shape
        return cols * self.pixel_size_nm, rows * self.pixel_size_nm

    @property
    def probe_limits(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) in pixels: every pixel centre of the frame."""
        rows, cols = self.shape
        return 0.0, cols - 1.0, 0.0, rows - 1.0

    def to_normalised(self, x: float, y: float) -> tuple[float, float]:
        """Overview pixel ``(x, y)`` as Nion's normalised ``(y, x)`` probe position."""
        rows, cols = self.shape
        return (y + 0.5) / rows, (x + 0.5) / cols

    def from_normalised(self, ny: float, nx: float) -> tuple[float, float]:
        """Nion's normalised ``(y, x)`` probe position as overview pixel ``(x, y)``."""
        rows, cols = self.shape
        return nx * cols - 0.5, ny * rows - 0.5
