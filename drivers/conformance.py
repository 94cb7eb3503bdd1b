"""Conformance checks: does a running server follow ``PROTOCOL.md``?

`run_checks` talks to a server at an address, as any client would, and returns one
`CheckResult` per check; ``dklscope conformance tcp://HOST:PORT`` prints them. The checks move
the probe only within the described limits and acquire only at the smallest allowed dwell.
numpy and pyzmq only, so a vendor can run it next to their own server.

The checks speak the newest protocol version by default and check what the server's ``hello``
says it speaks (a 1.2 server: also ``park`` and the dose account); ``protocol_minor=1`` runs
them as a 1.1 client would, to show that an older client still works with a newer server.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from .client import InstrumentError, MicroscopeClient
from .protocol import (
    PROTOCOL_MINOR,
    SIGNATURE,
    ErrorCode,
    InstrumentDescription,
    decode,
    encode,
)
from .security import ClientKeys, secure_client_socket

REQUIRED_COMMANDS = (
    "hello",
    "describe",
    "get_overview",
    "move",
    "acquire",
    "measure",
    "status",
    "abort",
    "heartbeat",
    "results_since",
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str = ""


class _Harness:
    def __init__(
        self, address: str, timeout_s: float, keys: ClientKeys | None, protocol_minor: int
    ) -> None:
        self.address, self.timeout_s, self.keys = address, timeout_s, keys
        self.client = MicroscopeClient(
            address, timeout_s=timeout_s, retries=0, keys=keys, protocol_minor=protocol_minor
        )
        self.description: InstrumentDescription | None = None

    @property
    def d(self) -> InstrumentDescription:
        if self.description is None:
            self.description = self.client.describe()
        return self.description

    @property
    def minor(self) -> int:
        """The minor version both sides speak."""
        if self.client.server is None:
            self.client.hello()
        minor = self.client.protocol_minor_in_use
        assert minor is not None
        return minor

    @property
    def dwell(self) -> float:
        return max(self.d.dwell_range_s[0], 0.0)

    def allowed_points(self, n: int) -> list[tuple[float, float]]:
        """``n`` distinct allowed points, spread over the probe limits, whole pixels first."""
        x0, x1, y0, y1 = self.d.probe_limits
        found = []
        for fx, fy in [(0.5, 0.5), (0.25, 0.25), (0.75, 0.75), (0.25, 0.75), (0.75, 0.25)]:
            for x, y in [
                (float(round(x0 + fx * (x1 - x0))), float(round(y0 + fy * (y1 - y0)))),
                (x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)),
            ]:
                if self.d.check_position(x, y) is None and (x, y) not in found:
                    found.append((x, y))
                    break
        if len(found) < n:
            raise AssertionError(f"could not find {n} allowed points inside the probe limits")
        return found[:n]

    def raw(self, frames: list[bytes], timeout_s: float | None = None) -> dict[str, Any] | None:
        """Send ``frames`` on a fresh DEALER; the decoded reply header, or None."""
        socket = self.client._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            secure_client_socket(socket, self.keys)
        socket.connect(self.address)
        wait_ms = int(1000 * (timeout_s or self.timeout_s))
        socket.setsockopt(zmq.SNDTIMEO, wait_ms)  # no server connected: give up, do not hang
        try:
            socket.send_multipart(frames)
            if not socket.poll(wait_ms):
                return None
            return decode(socket.recv_multipart())[0]
        except zmq.Again:
            return None
        finally:
            socket.close()

    def refused(self, code: str, command: str, args: dict[str, Any]) -> None:
        try:
            self.client.call(command, args, n_arrays=None)
        except InstrumentError as exc:
            if exc.code != code:
                raise AssertionError(f"{command} {args}: expected {code}, got {exc.code}") from None
            return
        raise AssertionError(f"{command} {args} was accepted; expected {code}")


def _check_hello(h: _Harness) -> None:
    hello = h.client.hello()
    assert str(hello["protocol"]).split(".")[0] == "1", f"protocol {hello['protocol']!r}"
    missing = [c for c in REQUIRED_COMMANDS if c not in hello["commands"]]
    assert not missing, f"hello lists no {missing}"
    for key in ("probe_limits", "dwell_range_s", "max_message_bytes"):
        assert key in hello["limits"], f"hello.limits has no {key!r}"
    assert list(hello["limits"]["probe_limits"]) == list(h.d.probe_limits), "limits != describe"


def _check_describe(h: _Harness) -> None:
    d = h.d
    rows, cols = d.overview_shape
    assert rows > 0 and cols > 0, f"overview_shape {d.overview_shape}"
    assert d.pixel_size > 0 and d.spectral_axis.size > 0
    lo, hi = d.dwell_range_s
    assert 0 <= lo <= hi, f"dwell_range_s {d.dwell_range_s}"
    x0, x1, y0, y1 = d.probe_limits
    assert 0 <= x0 <= x1 <= cols - 1 and 0 <= y0 <= y1 <= rows - 1, "probe limits off the overview"


def _check_overview(h: _Harness) -> None:
    image = h.client.get_overview()
    assert image.shape == h.d.overview_shape, f"shape {image.shape} != {h.d.overview_shape}"
    assert image.dtype == np.float32, f"dtype {image.dtype}"


def _check_move(h: _Harness) -> None:
    (x, y), _ = h.allowed_points(2)
    x_read, y_read = h.client.move(x, y)
    assert math.isfinite(x_read) and math.isfinite(y_read), f"read back ({x_read}, {y_read})"


def _check_move_in_physical_units(h: _Harness) -> None:
    (x, y), _ = h.allowed_points(2)
    size, units = h.d.pixel_size, h.d.pixel_units
    got = h.client.move(x * size, y * size, units=units)
    reference = h.client.move(x, y)
    assert np.allclose(got, reference, atol=2.0), f"{got} in {units} vs {reference} in px"


def _check_limits(h: _Harness) -> None:
    x0, x1, y0, y1 = h.d.probe_limits
    for x, y in [(x1 + 1, y0), (x0 - 1, y0), (x0, y1 + 1), (x0, y0 - 1), (1e12, 1e12)]:
        h.refused(ErrorCode.OUT_OF_LIMITS, "move", {"x": x, "y": y})
    for rx0, rx1, ry0, ry1 in h.d.forbidden_regions:
        h.refused(ErrorCode.OUT_OF_LIMITS, "move", {"x": (rx0 + rx1) / 2, "y": (ry0 + ry1) / 2})
        h.refused(ErrorCode.OUT_OF_LIMITS, "measure", {"points": [[rx0, ry0]], "dwell_s": h.dwell})


def _check_non_finite_and_bad_arguments(h: _Harness) -> None:
    header = b'{"id": "%s", "cmd": "move", "args": {"x": NaN, "y": 0}}' % _id().encode()
    reply = h.raw([SIGNATURE, header])
    assert reply is not None and reply["error"]["code"] == ErrorCode.BAD_ARGUMENT, f"{reply}"
    h.refused(ErrorCode.BAD_ARGUMENT, "move", {"x": "1", "y": 0})
    h.refused(ErrorCode.BAD_ARGUMENT, "move", {"x": 1, "y": 0, "z": 0})
    h.refused(ErrorCode.BAD_ARGUMENT, "acquire", {})


def _check_dwell_range(h: _Harness) -> None:
    lo, hi = h.d.dwell_range_s
    h.refused(ErrorCode.OUT_OF_LIMITS, "acquire", {"dwell_s": hi * 2 + 1})
    h.refused(ErrorCode.OUT_OF_LIMITS, "acquire", {"dwell_s": -1.0})
    if lo > 0:
        h.refused(ErrorCode.OUT_OF_LIMITS, "acquire", {"dwell_s": lo / 2})


def _check_acquire(h: _Harness) -> None:
    (x, y), _ = h.allowed_points(2)
    h.client.move(x, y)
    acq = h.client.acquire(h.dwell)
    assert acq.spectrum.shape == (h.d.spectral_axis.size,), f"shape {acq.spectrum.shape}"
    assert acq.seq is not None and acq.seq >= 0, f"seq {acq.seq}"
    assert acq.dwell_s == acq.dwell_s and acq.dwell_s >= 0, f"dwell {acq.dwell_s}"
    assert math.isfinite(acq.timestamp) and acq.timestamp > 0, f"timestamp {acq.timestamp}"


def _check_measure(h: _Harness) -> None:
    points = h.allowed_points(3)
    got = list(h.client.measure(points, h.dwell))
    assert len(got) == 3, f"{len(got)} replies for 3 points"
    seqs = [a.seq for a in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3, f"sequence numbers {seqs}"


def _check_retry_deduplicated(h: _Harness) -> None:
    frames = encode({"id": _id(), "cmd": "acquire", "args": {"dwell_s": h.dwell}})
    frames = [bytes(f) for f in frames]
    first, again = h.raw(frames), h.raw(frames)
    assert first is not None and again is not None, "no reply"
    assert first.get("ok") and again.get("ok"), f"{first} / {again}"
    assert first["result"]["seq"] == again["result"]["seq"], "a retried acquire measured again"


def _check_results_since(h: _Harness) -> None:
    acq = h.client.acquire(h.dwell)
    assert acq.seq is not None
    since = h.client.results_since(acq.seq - 1)
    assert [a.seq for a in since] == [acq.seq], f"results_since gave {[a.seq for a in since]}"
    np.testing.assert_array_equal(since[0].spectrum, acq.spectrum)


def _check_status_abort_heartbeat(h: _Harness) -> None:
    status = h.client.status()
    assert status["state"] in ("idle", "busy", "parked"), f"state {status.get('state')!r}"
    assert isinstance(status["last_seq"], int)
    assert h.client.abort(_id())["state"] == "unknown"
    assert "t" in h.client.heartbeat()


def _check_park(h: _Harness) -> None:
    if h.minor < 2:  # an older server, or this client plays an older one: no park is sent
        assert "park" not in h.client.server["commands"] or h.client.protocol_minor < 2, (
            f"a {h.client.server['protocol']} server lists park"
        )
        assert h.client.park() is None, "park was sent to a server that does not speak 1.2"
        return
    d = h.d
    assert "park" in h.client.server["commands"], "a 1.2 server's hello lists no park"
    (x, y), _ = h.allowed_points(2)
    h.client.move(x, y)
    parked = h.client.park()
    assert parked is not None
    expected = "park" if d.can_park else "blank" if d.can_blank else "none"
    assert parked["action"] == expected, f"park did {parked['action']!r}, described {expected!r}"
    assert (parked["moved"], parked["blanked"]) == (d.can_park, d.can_blank), f"{parked}"
    status = h.client.status()
    assert status["state"] == "parked", f"state {status['state']!r} after park"
    assert status["parked"] is not None and status["parked"]["action"] == expected, f"{status}"
    if d.can_blank:  # a blanked beam exposes nothing
        h.refused(ErrorCode.BACKEND_ERROR, "acquire", {"dwell_s": h.dwell})
    h.client.move(x, y)
    status = h.client.status()
    assert status["state"] == "idle" and status["parked"] is None, f"not un-parked: {status}"
    h.client.acquire(h.dwell)


def _check_dose(h: _Harness) -> None:
    d = h.d
    if h.minor < 2 or d.dose_units is None:  # no dose account: none may be claimed
        if h.minor < 2:
            assert d.dose_units is None, "a description before 1.2 has dose_units"
        return
    assert d.dose_per_s is not None and d.dose_per_s >= 0, f"dose_per_s {d.dose_per_s}"
    (x, y), _ = h.allowed_points(2)
    h.client.move(x, y)
    first, second = h.client.acquire(h.dwell), h.client.acquire(h.dwell)
    for acq in (first, second):
        assert acq.dose is not None and acq.dose >= 0, f"dose {acq.dose}"
        assert acq.dose_total is not None, "no dose_total in the acquisition"
    assert first.dose_total is not None and second.dose is not None
    assert math.isclose(second.dose_total, first.dose_total + second.dose, rel_tol=1e-9), (
        f"dose_total {second.dose_total} != {first.dose_total} + {second.dose}"
    )
    status = h.client.status()
    assert status["dose_units"] == d.dose_units, f"status dose_units {status['dose_units']!r}"
    assert math.isclose(status["dose_total"], second.dose_total, rel_tol=1e-9), f"{status}"


def _check_malformed(h: _Harness) -> None:
    cases = {
        ErrorCode.BAD_MESSAGE: [SIGNATURE, b"{not json"],
        ErrorCode.UNSUPPORTED_VERSION: [b"dklscope/99", b'{"id": "v", "cmd": "describe"}'],
        ErrorCode.UNKNOWN_COMMAND: [bytes(f) for f in encode({"id": _id(), "cmd": "__class__"})],
    }
    for code, frames in cases.items():
        reply = h.raw(frames)
        assert reply is not None and reply.get("error", {}).get("code") == code, f"{code}: {reply}"
    h.client.describe()  # still serving


CHECKS: dict[str, Callable[[_Harness], None]] = {
    "hello": _check_hello,
    "describe": _check_describe,
    "get_overview": _check_overview,
    "move": _check_move,
    "move in physical units": _check_move_in_physical_units,
    "limits and forbidden regions": _check_limits,
    "bad and non-finite arguments": _check_non_finite_and_bad_arguments,
    "dwell range": _check_dwell_range,
    "acquire": _check_acquire,
    "measure streams": _check_measure,
    "retried acquire is not repeated": _check_retry_deduplicated,
    "results_since": _check_results_since,
    "status, abort, heartbeat": _check_status_abort_heartbeat,
    "park (1.2)": _check_park,
    "dose account (1.2)": _check_dose,
    "malformed messages": _check_malformed,
}


def run_checks(
    address: str,
    *,
    timeout_s: float = 10.0,
    keys: ClientKeys | None = None,
    protocol_minor: int = PROTOCOL_MINOR,
) -> list[CheckResult]:
    """Run every check against the server at ``address``, as a client of protocol
    ``1.protocol_minor`` would; one result per check."""
    harness = _Harness(address, timeout_s, keys, protocol_minor)
    results = []
    try:
        for name, check in CHECKS.items():
            try:
                check(harness)
                results.append(CheckResult(name, True))
            except Exception as exc:  # a failed check, whatever it raised
                results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
    finally:
        harness.client.close()
    return results


def _id() -> str:
    return f"conformance-{uuid.uuid4().hex}"
