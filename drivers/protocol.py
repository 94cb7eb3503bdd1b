"""The wire format shared by `DriverServer` and `MicroscopeClient`.

A message is a ZeroMQ multipart message::

    frame 0   signature   b"dklscope/1"  (protocol name and major version)
    frame 1   header      UTF-8 JSON object
    frame 2…  arrays      raw bytes, one frame per array, C order

The header of a request is ``{"id": str, "cmd": str, "args": {...}, "arrays": [...]}``; the
header of a reply is ``{"id": str, "ok": true, "result": {...}, "arrays": [...]}`` or
``{"id": str, "ok": false, "error": {"code": str, "message": str}}``. ``arrays`` lists one
``{"dtype": "<f4", "shape": [...]}`` per array frame, with an explicit byte order. Nothing is
ever pickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SIGNATURE = b"dklscope/1"
MAX_HEADER_BYTES = 64 * 1024
# Numeric dtypes allowed in array frames; object and structured dtypes are refused.
ALLOWED_DTYPES = frozenset(
    np.dtype(t).str for t in ("<f4", "<f8", ">f4", ">f8", "<i4", "<i8", "<u2", "<u4", "|u1")
)


class ProtocolError(Exception):
    """A message that does not follow the wire format."""


class ErrorCode:
    """Error codes carried in ``reply["error"]["code"]``."""

    BAD_MESSAGE = "BAD_MESSAGE"  # not a well-formed message
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    BAD_ARGUMENT = "BAD_ARGUMENT"  # missing, extra or ill-typed arguments
    OUT_OF_LIMITS = "OUT_OF_LIMITS"  # a probe position or dwell outside the described limits
    BACKEND_ERROR = "BACKEND_ERROR"  # the instrument itself failed


@dataclass(frozen=True)
class SpectralAxis:
    """A linear calibration: channel ``i`` sits at ``offset + i * scale`` ``units``."""

    size: int
    offset: float
    scale: float
    units: str

    def values(self) -> np.ndarray:
        """The calibrated axis, shape ``(size,)``, float64."""
        return self.offset + self.scale * np.arange(self.size, dtype=np.float64)


@dataclass(frozen=True)
class InstrumentDescription:
    """What an instrument tells the controller about itself.

    Positions are overview pixel coordinates: ``x`` is the column and ``y`` the row, both
    floats, pixel centres at integers. ``pixel_size`` converts them to physical units.
    """

    name: str
    overview_shape: tuple[int, int]  # (rows, cols)
    pixel_size: float
    pixel_units: str
    spectral_axis: SpectralAxis
    spectrum_units: str
    dwell_range_s: tuple[float, float]
    # The probe may be parked where x_min <= x <= x_max and y_min <= y <= y_max.
    probe_limits: tuple[float, float, float, float] = field(default=(0.0, -1.0, 0.0, -1.0))

    def __post_init__(self) -> None:
        if self.probe_limits[1] < self.probe_limits[0]:  # default: the whole overview
            rows, cols = self.overview_shape
            object.__setattr__(self, "probe_limits", (0.0, cols - 1.0, 0.0, rows - 1.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InstrumentDescription:
        try:
            return cls(
                name=str(d["name"]),
                overview_shape=(int(d["overview_shape"][0]), int(d["overview_shape"][1])),
                pixel_size=float(d["pixel_size"]),
                pixel_units=str(d["pixel_units"]),
                spectral_axis=SpectralAxis(**d["spectral_axis"]),
                spectrum_units=str(d["spectrum_units"]),
                dwell_range_s=(float(d["dwell_range_s"][0]), float(d["dwell_range_s"][1])),
                probe_limits=_four_floats(d["probe_limits"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"malformed instrument description: {exc!r}") from exc

    def check_position(self, x: float, y: float) -> str | None:
        """Why the probe may not go to ``(x, y)``, or None if it may."""
        if not (math.isfinite(x) and math.isfinite(y)):
            return f"position ({x}, {y}) is not finite"
        x0, x1, y0, y1 = self.probe_limits
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            return (
                f"position (x={x}, y={y}) is outside the probe limits "
                f"x∈[{x0}, {x1}], y∈[{y0}, {y1}]"
            )
        return None

    def check_dwell(self, dwell_s: float) -> str | None:
        """Why ``dwell_s`` may not be used, or None if it may."""
        lo, hi = self.dwell_range_s
        if not (math.isfinite(dwell_s) and lo <= dwell_s <= hi):
            return f"dwell {dwell_s} s is outside the dwell range [{lo}, {hi}] s"
        return None


def _four_floats(values: Any) -> tuple[float, float, float, float]:
    x0, x1, y0, y1 = (float(v) for v in values)  # ValueError unless exactly four
    return x0, x1, y0, y1


def encode(header: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> list[bytes | memoryview]:
    """Frames for one message; the arrays are sent from their own memory without a copy."""
    arrays = [np.require(a, requirements="C") for a in arrays]  # keeps 0-d arrays 0-d
    header = {**header, "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]}
    return [SIGNATURE, json.dumps(header, allow_nan=False).encode(), *(a.data for a in arrays)]


def decode(frames: Sequence[bytes | memoryview]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The header and arrays of a message; raises `ProtocolError` on anything malformed."""
    if len(frames) < 2:
        raise ProtocolError(f"expected at least 2 frames, got {len(frames)}")
    signature = bytes(frames[0])
    if signature != SIGNATURE:
        raise ProtocolError(
            f"unknown protocol signature {signature[:32]!r}, expected {SIGNATURE!r}"
        )
    if len(frames[1]) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(frames[1])} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(bytes(frames[1]))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, absurd nesting or digits
        raise ProtocolError(f"header is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) != len(frames) - 2:
        raise ProtocolError(f"header describes {specs!r} but {len(frames) - 2} array frames came")
    arrays = [_decode_array(spec, frame) for spec, frame in zip(specs, frames[2:], strict=True)]
    return header, arrays


def _decode_array(spec: Any, frame: bytes | memoryview) -> np.ndarray:
    try:
        dtype = np.dtype(spec["dtype"])
        if not isinstance(spec["shape"], list) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in spec["shape"]
        ):
            raise TypeError("shape must be a list of integers")
        shape = tuple(spec["shape"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ProtocolError(f"bad array description {str(spec)[:200]}") from exc
    if dtype.str not in ALLOWED_DTYPES:
        raise ProtocolError(f"array dtype {dtype.str!r} is not allowed")
    if any(n < 0 for n in shape):
        raise ProtocolError(f"negative array shape {shape}")
    expected = math.prod(shape) * dtype.itemsize
    nbytes = memoryview(frame).nbytes
    if nbytes != expected:
        raise ProtocolError(f"array {dtype.str}{list(shape)} needs {expected} bytes, got {nbytes}")
    return np.frombuffer(frame, dtype=dtype).reshape(shape)
