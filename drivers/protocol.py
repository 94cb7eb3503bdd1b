"""The wire format shared by `DriverServer` and `MicroscopeClient` (see ``PROTOCOL.md``).

A message is a ZeroMQ multipart message::

    frame 0   signature   b"dklscope/1"  (protocol name and major version)
    frame 1   header      UTF-8 JSON object
    frame 2…  arrays      raw bytes, one frame per array, C order

The header of a request is ``{"id": str, "cmd": str, "args": {...}, "arrays": [...]}`` (plus the
optional ``deadline_s`` and ``client``); the header of a reply is ``{"id": str, "ok": true,
"result": {...}, "arrays": [...]}`` or ``{"id": str, "ok": false, "error": {"code": str,
"message": str}}``. ``arrays`` lists one ``{"dtype": "<f4", "shape": [...]}`` per array frame,
with an explicit byte order, and optionally ``units`` and calibrated ``axes``. Nothing is ever
pickled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zmq
import zmq.backend

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 2  # 1.1: saturation_level; 1.2: park and dose
PROTOCOL_VERSION = f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}"
SIGNATURE_PREFIX = b"dklscope/"
SIGNATURE = SIGNATURE_PREFIX + str(PROTOCOL_MAJOR).encode()
MAX_HEADER_BYTES = 1024 * 1024  # room for a measure of 10,000 points, 1,000 results
# Numeric dtypes allowed in array frames; object and structured dtypes are refused.
_DTYPES = {
    np.dtype(t).str: np.dtype(t)
    for t in ("<f4", "<f8", ">f4", ">f8", "<i4", "<i8", "<u2", "<u4", "|u1")
}
ALLOWED_DTYPES = frozenset(_DTYPES)
# One encoder and decoder for every message: json.dumps and json.loads build a new one per call
# when given options, which costs as much as encoding a small header. Headers are trees built
# by this package, never circular: the encoder need not look for cycles.
_JSON_ENCODER = json.JSONEncoder(allow_nan=False, check_circular=False, separators=(",", ":"))
_JSON_DECODER = json.JSONDecoder()
_SNDMORE = int(zmq.SNDMORE)  # plain ints: or-ing pyzmq's flag enums costs a microsecond
_RCVMORE = int(zmq.RCVMORE)
_backend_send = zmq.backend.Socket.send


class ProtocolError(Exception):
    """A message that does not follow the wire format."""


class VersionMismatch(ProtocolError):
    """A message signed ``dklscope/N`` with a major version ``N`` this side does not speak."""


class ErrorCode:
    """Error codes carried in ``reply["error"]["code"]``."""

    BAD_MESSAGE = "BAD_MESSAGE"  # not a well-formed message
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    BAD_ARGUMENT = "BAD_ARGUMENT"  # missing, extra or ill-typed arguments
    OUT_OF_LIMITS = "OUT_OF_LIMITS"  # a probe position or dwell outside the described limits
    BACKEND_ERROR = "BACKEND_ERROR"  # the instrument itself failed
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"  # signature names another major version
    DEADLINE_EXPIRED = "DEADLINE_EXPIRED"  # the caller gave up before the work could start
    ABORTED = "ABORTED"  # cancelled by an ``abort`` request

    ALL = (
        "BAD_MESSAGE",
        "UNKNOWN_COMMAND",
        "BAD_ARGUMENT",
        "OUT_OF_LIMITS",
        "BACKEND_ERROR",
        "UNSUPPORTED_VERSION",
        "DEADLINE_EXPIRED",
        "ABORTED",
    )


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


Rectangle = tuple[float, float, float, float]  # (x_min, x_max, y_min, y_max), overview pixels
# The description's fields that protocol 1.2 ("park and dose") added.
FIELDS_SINCE_1_2 = ("dose_units", "dose_per_s", "can_park", "can_blank")


@dataclass(frozen=True)
class InstrumentDescription:
    """What an instrument tells the controller about itself.

    Positions are overview pixel coordinates: ``x`` is the column and ``y`` the row, both
    floats, pixel centres at integers. ``pixel_size`` converts them to physical units
    (``pixel_units``), with the physical origin at the centre of pixel (0, 0). The probe may
    go where it is inside ``probe_limits`` and outside every one of ``forbidden_regions``;
    both are rectangles ``(x_min, x_max, y_min, y_max)``, edges included.

    Dose (protocol 1.2): an instrument that accounts the dose it delivers says in which
    ``dose_units`` and how much one second of exposure delivers (``dose_per_s``, so a controller
    can tell the dose of a dwell before it asks for it); ``can_park`` and ``can_blank`` say what
    the ``park`` command does on it (move the probe to its safe position, blank the beam).
    """

    name: str
    overview_shape: tuple[int, int]  # (rows, cols)
    pixel_size: float
    pixel_units: str
    spectral_axis: SpectralAxis
    spectrum_units: str
    dwell_range_s: tuple[float, float]
    probe_limits: Rectangle = field(default=(0.0, -1.0, 0.0, -1.0))
    forbidden_regions: tuple[Rectangle, ...] = ()
    overview_channels: tuple[str, ...] = ("overview",)
    saturation_level: float | None = None  # the detector's full scale (spectrum units), if any
    # Added in 1.2 ("park and dose"):
    dose_units: str | None = None  # units of the dose the instrument accounts; None: no account
    dose_per_s: float | None = None  # dose one second of exposure delivers, in dose_units
    can_park: bool = False  # `park` moves the probe to the instrument's safe position
    can_blank: bool = False  # `park` blanks the beam

    def __post_init__(self) -> None:
        if self.probe_limits[1] < self.probe_limits[0]:  # default: the whole overview
            rows, cols = self.overview_shape
            object.__setattr__(self, "probe_limits", (0.0, cols - 1.0, 0.0, rows - 1.0))
        regions = tuple(_four_floats(r) for r in self.forbidden_regions)
        object.__setattr__(self, "forbidden_regions", regions)
        object.__setattr__(self, "overview_channels", tuple(self.overview_channels))
        if self.dose_per_s is not None and not (
            math.isfinite(self.dose_per_s) and self.dose_per_s >= 0
        ):
            raise ValueError(f"dose_per_s must be a finite number >= 0, got {self.dose_per_s!r}")
        if (self.dose_per_s is None) != (self.dose_units is None):
            raise ValueError("dose_units and dose_per_s come together (both or neither)")

    @property
    def field_of_view(self) -> tuple[float, float]:
        """(width, height) of the overview in ``pixel_units``."""
        rows, cols = self.overview_shape
        return cols * self.pixel_size, rows * self.pixel_size

    def to_dict(self, minor: int = PROTOCOL_MINOR) -> dict[str, Any]:
        """Plain data for ``describe``, as protocol ``1.minor`` has it (the fields added after
        that minor version left out)."""
        d = {**asdict(self), "field_of_view": self.field_of_view}
        if minor < 2:
            for key in FIELDS_SINCE_1_2:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InstrumentDescription:
        """The description in ``d``; unknown fields (from a later minor version) are ignored."""
        try:
            axis = d["spectral_axis"]
            return cls(
                name=str(d["name"]),
                overview_shape=(int(d["overview_shape"][0]), int(d["overview_shape"][1])),
                pixel_size=float(d["pixel_size"]),
                pixel_units=str(d["pixel_units"]),
                spectral_axis=SpectralAxis(
                    size=int(axis["size"]),
                    offset=float(axis["offset"]),
                    scale=float(axis["scale"]),
                    units=str(axis["units"]),
                ),
                spectrum_units=str(d["spectrum_units"]),
                dwell_range_s=(float(d["dwell_range_s"][0]), float(d["dwell_range_s"][1])),
                probe_limits=_four_floats(d["probe_limits"]),
                forbidden_regions=tuple(_four_floats(r) for r in d.get("forbidden_regions", ())),
                overview_channels=tuple(str(c) for c in d.get("overview_channels", ["overview"])),
                saturation_level=_float_or_none(d.get("saturation_level")),
                dose_units=None if d.get("dose_units") is None else str(d["dose_units"]),
                dose_per_s=_float_or_none(d.get("dose_per_s")),
                can_park=d.get("can_park") is True,
                can_blank=d.get("can_blank") is True,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"malformed instrument description: {exc!r}") from exc

    def to_pixels(self, x: float, y: float, units: str) -> tuple[float, float]:
        """``(x, y)`` given in ``units`` (``"px"`` or ``pixel_units``) as overview pixels."""
        if units == "px":
            return x, y
        if units == self.pixel_units:
            return x / self.pixel_size, y / self.pixel_size
        raise ValueError(f"units must be 'px' or {self.pixel_units!r}, got {units!r}")

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
        for i, (x0, x1, y0, y1) in enumerate(self.forbidden_regions):
            if x0 <= x <= x1 and y0 <= y <= y1:
                return (
                    f"position (x={x}, y={y}) is inside forbidden region {i}: "
                    f"x∈[{x0}, {x1}], y∈[{y0}, {y1}]"
                )
        return None

    def check_dwell(self, dwell_s: float) -> str | None:
        """Why ``dwell_s`` may not be used, or None if it may."""
        lo, hi = self.dwell_range_s
        if not (math.isfinite(dwell_s) and lo <= dwell_s <= hi):
            return f"dwell {dwell_s} s is outside the dwell range [{lo}, {hi}] s"
        return None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _four_floats(values: Any) -> tuple[float, float, float, float]:
    x0, x1, y0, y1 = (float(v) for v in values)  # ValueError unless exactly four
    return x0, x1, y0, y1


class ArrayFormat:
    """One kind of array a side sends again and again (a spectrum on the instrument's axis):
    its ``dtype``, ``shape`` and further description ``meta`` (``units``, ``axes``), with the
    JSON text of that description written once instead of in every message."""

    def __init__(
        self, dtype: str | np.dtype, shape: Sequence[int], meta: dict[str, Any] | None = None
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(n) for n in shape)
        self.spec = {**(meta or {}), "dtype": self.dtype.str, "shape": list(self.shape)}
        self.json = _JSON_ENCODER.encode(self.spec)


def encode(
    header: dict[str, Any],
    arrays: Sequence[np.ndarray] = (),
    meta: Sequence[dict[str, Any] | ArrayFormat] | None = None,
) -> list[bytes | memoryview]:
    """Frames for one message; the arrays are sent from their own memory without a copy.

    ``meta`` optionally gives, per array, more fields of its description (``units``,
    ``axes``), or its whole `ArrayFormat` (which the array must have).
    """
    if meta is not None and len(meta) != len(arrays):
        raise ValueError(f"{len(meta)} array descriptions for {len(arrays)} arrays")
    frames: list[bytes | memoryview] = [SIGNATURE, b""]
    specs = []
    for i, a in enumerate(arrays):
        if not (isinstance(a, np.ndarray) and a.flags.c_contiguous):
            a = np.require(a, requirements="C")  # keeps 0-d arrays 0-d
        m = None if meta is None else meta[i]
        if isinstance(m, ArrayFormat):
            if a.shape != m.shape or a.dtype != m.dtype:
                raise ValueError(f"array {a.dtype.str}{list(a.shape)} is not of {m.spec}")
            specs.append(m.json)
        else:
            spec = {**(m or {}), "dtype": a.dtype.str, "shape": list(a.shape)}
            specs.append(_JSON_ENCODER.encode(spec))
        frames.append(a.data)
    if "arrays" in header:
        header = {k: v for k, v in header.items() if k != "arrays"}
    # The header's JSON object with the "arrays" member spliced in as text: the descriptions
    # of an `ArrayFormat` are not encoded again.
    text = _JSON_ENCODER.encode(header)
    described = '"arrays":[' + ",".join(specs) + "]"
    text = text[:-1] + "," + described + "}" if len(text) > 2 else "{" + described + "}"
    frames[1] = text.encode()
    return frames


def send(socket: zmq.Socket, frames: Sequence[bytes | memoryview]) -> None:
    """Send ``frames`` as one multipart message, each frame copied into ZeroMQ.

    Does what ``socket.send_multipart(frames)`` does for bytes and memoryviews, without its
    per-frame type checks and flag enums, and with pyzmq's own send (`zmq.backend.Socket`)
    rather than the Python layer over it: on a round trip of 0.1 ms these cost more than the
    sends themselves.
    """
    for frame in frames[:-1]:
        _backend_send(socket, frame, _SNDMORE)
    _backend_send(socket, frames[-1], 0)


def recv(socket: zmq.Socket) -> list[bytes | zmq.Frame]:
    """The frames of the next message on ``socket``: the signature and the header as bytes,
    array frames as `zmq.Frame` objects, which own the received memory (no copy is made; an
    array decoded from one keeps it alive)."""
    frames = [socket.recv()]
    while socket.getsockopt(_RCVMORE):
        frames.append(socket.recv(copy=len(frames) < 2))
    return frames


def axis_meta(name: str, axis: SpectralAxis) -> dict[str, Any]:
    """The description of one calibrated array axis: ``offset + i * scale`` ``units``."""
    return {"name": name, **asdict(axis)}


def decode(frames: Sequence[bytes | memoryview]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The header and arrays of a message; raises `ProtocolError` on anything malformed."""
    signature = bytes(frames[0]) if frames else b""
    if signature != SIGNATURE:
        if signature.startswith(SIGNATURE_PREFIX) and signature[len(SIGNATURE_PREFIX) :].isdigit():
            raise VersionMismatch(
                f"protocol major version {signature[len(SIGNATURE_PREFIX) :].decode()} is not "
                f"supported; this side speaks {SIGNATURE.decode()}"
            )
        raise ProtocolError(
            f"unknown protocol signature {signature[:32]!r}, expected {SIGNATURE!r}"
        )
    if len(frames) < 2:
        raise ProtocolError(f"expected at least 2 frames, got {len(frames)}")
    if len(frames[1]) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(frames[1])} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = _JSON_DECODER.decode(str(frames[1], "utf-8"))
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
        dtype = _DTYPES.get(spec["dtype"])
        if dtype is None:  # another spelling, e.g. "float32", or a refused type
            dtype = np.dtype(spec["dtype"])
            if dtype.str not in ALLOWED_DTYPES:
                raise ProtocolError(f"array dtype {dtype.str!r} is not allowed")
        shape = spec["shape"]
        if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
            raise TypeError("shape must be a list of non-negative integers")
    except (TypeError, KeyError, ValueError) as exc:
        raise ProtocolError(f"bad array description {str(spec)[:200]}") from exc
    expected = math.prod(shape) * dtype.itemsize
    nbytes = len(frame) if type(frame) is bytes else memoryview(frame).nbytes
    if nbytes != expected:
        raise ProtocolError(f"array {dtype.str}{shape} needs {expected} bytes, got {nbytes}")
    try:
        return np.frombuffer(frame, dtype=dtype).reshape(shape)
    except (ValueError, OverflowError) as exc:  # e.g. an empty array with an absurd dimension
        raise ProtocolError(f"bad array shape {shape[:8]}: {exc}") from exc
