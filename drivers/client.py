"""`MicroscopeClient`: the controller's handle on an instrument served by `DriverServer`."""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import zmq

from .backend import Acquisition
from .protocol import (
    FIELDS_SINCE_1_2,
    MAX_HEADER_BYTES,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    ErrorCode,
    InstrumentDescription,
    ProtocolError,
    decode,
    encode,
    recv,
    send,
)
from .security import ClientKeys, secure_client_socket

log = logging.getLogger(__name__)

# While waiting for a reply, look at the server's heartbeats (and at the call's own deadline)
# at least this often, milliseconds.
WAIT_SLICE_MS = 100
# With heartbeats on, the server counts as lost after this many intervals without any reply
# (and at least LOST_AFTER_MIN_S) while no call is under way: `MicroscopeClient.server_lost`.
LOST_AFTER_BEATS = 5
LOST_AFTER_MIN_S = 1.0
_RCVTIMEO = int(zmq.RCVTIMEO)  # plain ints: pyzmq's option enums cost microseconds a call
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


class InstrumentError(Exception):
    """The instrument refused or failed a command; ``code`` is the protocol's error code.

    ``DEADLINE_EXPIRED`` means the server did not start the work before the caller's deadline
    (the caller gave up; nothing was done), unlike `InstrumentTimeout` (no reply came).
    """

    def __init__(self, command: str, address: str, code: str, message: str) -> None:
        super().__init__(f"{command} on {address} failed [{code}]: {message}")
        self.command, self.address, self.code = command, address, code


class InstrumentTimeout(Exception):
    """No reply to a command within its timeout, after every retry (the action timed out)."""

    def __init__(
        self, command: str, address: str, timeout_s: float, attempts: int = 1, why: str = ""
    ) -> None:
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{command} on {address}: no reply within {timeout_s:.3g} s{tries}{why}")
        self.command, self.address, self.timeout_s = command, address, timeout_s


class MicroscopeClient:
    """Talks to one instrument over a DEALER socket; every call has a timeout.

    ``timeout_s`` bounds each attempt of a call; an acquisition is given ``timeout_s + 1.5 *
    dwell_s`` (a measure, that per point). The timeout travels with the request as its deadline,
    so the server refuses work it could only start after the caller gave up. After a timeout the
    socket is closed and reopened (the Lazy Pirate pattern), so a late reply to the abandoned
    attempt can never be taken for the answer to a later call, and the request is sent again with
    the same id, up to ``retries`` times: the server answers a retried move, acquire or measure
    from its memory and never executes it twice.

    `hello` subscribes to the server's events: from then on a server that stops heart-beating
    is given up on after two heartbeat intervals rather than the full timeout. With
    ``heartbeat_s`` the client also heart-beats (from a thread with its own socket) and `hello`
    arms the server's dead-man switch: should the heartbeats stop, the server parks the beam.
    The other way round, `server_lost` says when the server has stopped answering them.
    ``keys`` turns on CURVE encryption and authentication.

    Versions: `hello` announces ``1.protocol_minor`` (default: the newest this client speaks;
    an older one makes it behave as an older client: no ``park``, no dose fields) and the
    client then speaks the older of the two minor versions (`protocol_minor_in_use`): `park`
    is only sent to a server that has it.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 10.0,
        context: zmq.Context | None = None,
        retries: int = 2,
        heartbeat_s: float | None = None,
        keys: ClientKeys | None = None,
        protocol_minor: int = PROTOCOL_MINOR,
    ) -> None:
        if not (isinstance(protocol_minor, int) and 0 <= protocol_minor <= PROTOCOL_MINOR):
            raise ValueError(
                f"protocol_minor must be an integer in [0, {PROTOCOL_MINOR}], got "
                f"{protocol_minor!r}"
            )
        self.protocol_minor = protocol_minor
        self.address = address
        self.timeout_s = timeout_s
        self.retries = retries
        self.heartbeat_s = heartbeat_s
        self.keys = keys
        self.client_id = uuid.uuid4().hex[:12]
        self._context = context or zmq.Context()
        self._own_context = context is None
        self._ids = (f"{self.client_id}-{n}" for n in itertools.count())
        self._socket: zmq.Socket = self._connect(zmq.DEALER, address)
        self._rcvtimeo_ms = -1  # what the request socket's RCVTIMEO is set to
        self._events: zmq.Socket | None = None
        self._events_heartbeat_s = math.inf
        self._last_event = self._next_drain = -math.inf  # time.monotonic()
        self._rehello = False
        self.server: dict[str, Any] | None = None  # the last hello reply
        self._beating = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._last_heard = time.monotonic()  # the last reply of any kind, from any thread
        self._calls = 0  # calls under way (their own timeouts watch the server meanwhile)

    def _connect(self, kind: int, address: str) -> zmq.Socket:
        socket = self._context.socket(kind)
        socket.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            secure_client_socket(socket, self.keys)
        if kind == zmq.SUB:
            socket.setsockopt(zmq.SUBSCRIBE, b"")
        else:
            socket.setsockopt(zmq.RCVHWM, 0)  # never drop the replies of a long measure
            # A DEALER with no connection to queue on (a refused CURVE handshake, say) blocks
            # on send; never longer than a call may.
            socket.setsockopt(zmq.SNDTIMEO, max(1, int(1000 * self.timeout_s)))
        socket.connect(address)
        return socket

    def _send(self, message: list[bytes], wait_ms: int) -> bool:
        """Send ``message``; False if no server took it within ``timeout_s`` (none connected,
        or a refused CURVE handshake), which counts as an attempt without a reply.

        The receive timeout of the reply's first wait, ``wait_ms``, is set beforehand, so that
        nothing stands between sending and waiting.
        """
        self._set_rcvtimeo(wait_ms)
        try:
            send(self._socket, message)
        except zmq.Again:
            return False
        return True

    def _set_rcvtimeo(self, ms: int) -> None:
        if ms != self._rcvtimeo_ms:
            self._socket.setsockopt(_RCVTIMEO, ms)
            self._rcvtimeo_ms = ms

    def close(self) -> None:
        if self._beat_thread is not None:
            self._beating.set()
            self._beat_thread.join()
        self._socket.close()
        if self._events is not None:
            self._events.close()
        if self._own_context:
            self._context.term()

    def __enter__(self) -> MicroscopeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """Versions, commands with their argument schemas, limits and capabilities.

        Also subscribes to the server's events and, with ``heartbeat_s``, arms its dead-man
        switch and starts heart-beating.
        """
        args: dict[str, Any] = {"protocol": f"{PROTOCOL_MAJOR}.{self.protocol_minor}"}
        if self.heartbeat_s is not None:
            args["heartbeat_s"] = self.heartbeat_s
        result, _ = self.call("hello", args)
        self.server = result
        if self._events is not None:
            self._events.close()
            self._events = None
        if result.get("events") and result.get("heartbeat_s"):
            port = str(result["events"]).rpartition(":")[2]
            self._events = self._connect(zmq.SUB, f"{self.address.rpartition(':')[0]}:{port}")
            self._events_heartbeat_s = float(result["heartbeat_s"])
            self._last_event = self._next_drain = time.monotonic()
        if self.heartbeat_s is not None and self._beat_thread is None:
            self._last_heard = time.monotonic()
            self._beat_thread = threading.Thread(
                target=self._heartbeat_loop, name="MicroscopeClient-heartbeat", daemon=True
            )
            self._beat_thread.start()
        return result

    @property
    def server_lost(self) -> str | None:
        """Why the server counts as lost, or None: with ``heartbeat_s``, after `hello`, no
        reply (to a heartbeat or anything else) for ``LOST_AFTER_BEATS`` heartbeat intervals
        (at least ``LOST_AFTER_MIN_S``) while no call is under way. Safe from any thread; a
        server that answers again is no longer lost."""
        if self.heartbeat_s is None or self._beat_thread is None or self._calls:
            return None
        silent = time.monotonic() - self._last_heard
        if silent <= max(LOST_AFTER_BEATS * self.heartbeat_s, LOST_AFTER_MIN_S):
            return None
        return (
            f"{self.address} has not answered for {silent:.3g} s "
            f"(heartbeats every {self.heartbeat_s:g} s)"
        )

    @property
    def protocol_minor_in_use(self) -> int | None:
        """The minor version both sides speak (the older of the two), known after `hello`."""
        if self.server is None:
            return None
        minor = str(self.server.get("protocol", "")).partition(".")[2]
        return min(int(minor), self.protocol_minor) if minor.isdigit() else 0

    @property
    def can_park(self) -> bool:
        """Whether the server takes ``park`` (protocol 1.2), as far as `hello` said."""
        minor = self.protocol_minor_in_use
        return minor is not None and minor >= 2 and "park" in self.server.get("commands", {})  # type: ignore[union-attr]

    def describe(self) -> InstrumentDescription:
        result, _ = self.call("describe")
        if self.protocol_minor < 2:  # an older client does not know the later fields
            result = {k: v for k, v in result.items() if k not in FIELDS_SINCE_1_2}
        return InstrumentDescription.from_dict(result)

    def park(self) -> dict[str, Any] | None:
        """Move the probe to the instrument's safe position and blank the beam, as far as the
        instrument can (protocol 1.2 ``park``); the next `move` or `measure` un-parks.

        Returns the server's answer: ``action`` (``park``, ``blank`` or ``none``), ``moved``,
        ``blanked``, ``reason``, ``state``, ``position``; None when the server speaks an older
        protocol without ``park`` (nothing was sent, or it answered ``UNKNOWN_COMMAND``).
        Sends `hello` first if it has not been sent.
        """
        if self.server is None:
            self.hello()
        if not self.can_park:
            log.info("%s speaks protocol %s: it has no park", self.address, self._server_version())
            return None
        try:
            result, _ = self.call("park")
        except InstrumentError as exc:
            if exc.code != ErrorCode.UNKNOWN_COMMAND:
                raise
            log.info("%s has no park: %s", self.address, exc)
            return None
        return result

    def _server_version(self) -> str:
        return str((self.server or {}).get("protocol", "unknown"))

    def get_overview(self, channel: str | None = None) -> np.ndarray:
        """The overview image (of ``channel``, default the first), shape (rows, cols), float32."""
        _, arrays = self.call(
            "get_overview", {} if channel is None else {"channel": channel}, n_arrays=1
        )
        return arrays[0]

    def move(self, x: float, y: float, units: str = "px") -> tuple[float, float]:
        """Park the probe at ``(x, y)``; return where it actually is, in overview pixels.

        ``units`` is ``"px"`` (overview pixels, ``x`` column, ``y`` row) or the instrument's
        ``pixel_units`` (physical units from the centre of pixel (0, 0)).
        """
        args = {"x": float(x), "y": float(y)}
        if units != "px":
            args["units"] = units
        result, _ = self.call("move", args)
        return _float(result["x"]), _float(result["y"])

    def acquire(self, dwell_s: float) -> Acquisition:
        """Expose for ``dwell_s`` seconds at the current probe position."""
        result, arrays = self.call(
            "acquire",
            {"dwell_s": float(dwell_s)},
            n_arrays=1,
            timeout_s=self.timeout_s + 1.5 * dwell_s,
        )
        return _acquisition(result, arrays[0])

    def measure(
        self, points: Iterable[tuple[float, float]], dwell_s: float, units: str = "px"
    ) -> Iterator[Acquisition]:
        """Move to each point and acquire there, in order; yields each as it completes.

        One request for all points: the fast path. Stops at the first error, raising it.
        """
        args: dict[str, Any] = {
            "points": [[float(x), float(y)] for x, y in points],
            "dwell_s": float(dwell_s),
        }
        if units != "px":
            args["units"] = units
        per_point = self.timeout_s + 1.5 * dwell_s
        for result, arrays in self._stream("measure", args, per_point):
            yield _acquisition(result, arrays[0])

    def status(self) -> dict[str, Any]:
        """The server's state, position, last sequence number and safe state."""
        return self.call("status")[0]

    def abort(self, request_id: str) -> dict[str, Any]:
        """Cancel the request ``request_id`` (a running measure stops before its next point)."""
        return self.call("abort", {"target": request_id})[0]

    def heartbeat(self) -> dict[str, Any]:
        return self.call("heartbeat")[0]

    def results_since(self, seq: int, limit: int | None = None) -> list[Acquisition]:
        """The stored acquisitions with a sequence number above ``seq`` (-1: all kept)."""
        args = {"seq": int(seq)} if limit is None else {"seq": int(seq), "limit": int(limit)}
        result, arrays = self.call("results_since", args, n_arrays=None)
        metas = result.get("results")
        if not isinstance(metas, list) or len(metas) != len(arrays):
            raise ProtocolError(f"results_since on {self.address}: results do not match arrays")
        return [_acquisition(meta, spectrum) for meta, spectrum in zip(metas, arrays, strict=True)]

    # -- transport ----------------------------------------------------------------------------

    def call(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        n_arrays: int | None = 0,
    ) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Send one request and wait for its reply; returns ``(result, arrays)``.

        ``n_arrays`` is how many array frames the reply must have (None: any number).
        """
        ((result, arrays),) = self._stream(command, args or {}, timeout_s, n_arrays=n_arrays)
        return result, arrays

    def _stream(
        self,
        command: str,
        args: dict[str, Any],
        timeout_s: float | None,
        *,
        n_arrays: int | None = 1,
    ) -> Iterator[tuple[dict[str, Any], list[np.ndarray]]]:
        """Send one request; yield ``(result, arrays)`` per reply until one says no ``more``."""
        self._calls += 1
        try:
            yield from self._stream_replies(command, args, timeout_s, n_arrays=n_arrays)
        finally:
            self._calls -= 1

    def _stream_replies(
        self,
        command: str,
        args: dict[str, Any],
        timeout_s: float | None,
        *,
        n_arrays: int | None,
    ) -> Iterator[tuple[dict[str, Any], list[np.ndarray]]]:
        if self._rehello and command != "hello":
            self._rehello = False
            self.hello()  # a new server process: learn its events address, re-arm the switch
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        request_id = next(self._ids)
        header = {
            "id": request_id,
            "cmd": command,
            "args": args,
            "deadline_s": timeout_s,
            "client": self.client_id,
        }
        message = encode(header)
        if len(message[1]) > MAX_HEADER_BYTES:
            raise ProtocolError(
                f"{command} on {self.address}: a request header of {len(message[1])} bytes "
                f"exceeds {MAX_HEADER_BYTES}; split it"
            )
        if self._events is not None and time.monotonic() >= self._next_drain:
            self._drain_events()  # keeps the events queue short while replies come fast
        wait_ms = max(1, min(WAIT_SLICE_MS, int(1000 * timeout_s)))
        sent = self._send(message, wait_ms)
        attempt, seen = 0, -1  # seen: the index of the last streamed reply yielded
        while True:
            reply = self._wait(request_id, timeout_s, wait_ms) if sent else None
            if reply is None:
                attempt += 1
                why = self._silence_note() if sent else "; no server took the request"
                self._reconnect()
                if attempt > self.retries:
                    raise InstrumentTimeout(command, self.address, timeout_s, attempt, why)
                log.warning("%s on %s: no reply, retrying (%d)", command, self.address, attempt)
                sent = self._send(message, wait_ms)  # same id: never executed twice
                continue
            header, arrays = reply
            self._last_heard = time.monotonic()
            if not header.get("ok"):
                error = header.get("error") or {}
                raise InstrumentError(
                    command, self.address, str(error.get("code")), str(error.get("message"))
                )
            result = header.get("result")
            if not isinstance(result, dict) or (n_arrays is not None and len(arrays) != n_arrays):
                raise ProtocolError(
                    f"{command} on {self.address}: expected a result and {n_arrays} arrays, "
                    f"got {len(arrays)}"
                )
            index = result.get("index", 0)
            if isinstance(index, int) and index > seen:  # a replayed stream repeats itself
                seen = index
                yield result, arrays
            if not header.get("more"):
                return

    def _wait(
        self, request_id: str, timeout_s: float, slice_ms: int
    ) -> tuple[dict[str, Any], list[np.ndarray]] | None:
        """The next reply to ``request_id``; None after ``timeout_s`` or when the server fell
        silent (no heartbeat for two intervals).

        Blocks in the socket's receive (a blocking receive beats a poll and a receive) for at
        most ``slice_ms`` at a time, the socket's RCVTIMEO, and looks at the deadline and at
        the heartbeats between slices.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                frames = recv(self._socket)
            except zmq.Again:
                left_ms = (deadline - time.monotonic()) * 1000
                if left_ms <= 0 or self._server_silent():
                    return None
                self._set_rcvtimeo(max(1, int(min(slice_ms, left_ms))))
                continue
            try:
                header, arrays = decode(frames)
            except ProtocolError as exc:
                raise ProtocolError(f"on {self.address}: {exc}") from exc
            if header.get("id") == request_id:
                return header, arrays
            log.debug("dropping a stale reply %r", header.get("id"))
            if time.monotonic() > deadline:
                return None

    def _drain_events(self) -> None:
        """Read the events that came since the last look: each is a sign of life (their
        content does not matter here)."""
        assert self._events is not None
        events = self._events
        came = False
        while events.getsockopt(_EVENTS) & _POLLIN:
            events.recv(zmq.NOBLOCK)  # frame by frame: all of every queued event
            came = True
        now = time.monotonic()
        if came:
            self._last_event = now
        self._next_drain = now + self._events_heartbeat_s

    def _server_silent(self) -> bool:
        """Whether the server has sent no event for two heartbeat intervals (False without
        events)."""
        if self._events is None:
            return False
        self._drain_events()
        return time.monotonic() - self._last_event > 2 * self._events_heartbeat_s

    def _silence_note(self) -> str:
        if self._events is None:
            return ""
        silent = time.monotonic() - self._last_event
        if silent <= 2 * self._events_heartbeat_s:
            return ""
        return f"; the server fell silent: no heartbeat for {silent:.3g} s"

    def _reconnect(self) -> None:
        self._socket.close()
        self._socket = self._connect(zmq.DEALER, self.address)
        self._rcvtimeo_ms = -1
        if self._events is not None:
            self._events.close()
            self._events = None
            self._rehello = True

    def _heartbeat_loop(self) -> None:
        socket = self._connect(zmq.DEALER, self.address)
        try:
            for n in itertools.count():
                if self._beating.wait(self.heartbeat_s):
                    return
                header = {"id": f"{self.client_id}-hb{n}", "cmd": "heartbeat", "args": {}}
                try:
                    socket.send_multipart(
                        encode({**header, "client": self.client_id}), flags=zmq.NOBLOCK
                    )
                except zmq.Again:  # no server to take it: this beat is missed, as it should be
                    pass
                while socket.poll(0):  # replies are drained: the beat is what counts to the
                    socket.recv_multipart()  # server; a reply, that the server is there
                    self._last_heard = time.monotonic()
        finally:
            socket.close()


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _acquisition(result: dict[str, Any], spectrum: np.ndarray) -> Acquisition:
    dose, total = result.get("dose"), result.get("dose_total")
    try:
        return Acquisition(
            spectrum=spectrum,
            dwell_s=_float(result["dwell_s"]),
            x=_float(result["x"]),
            y=_float(result["y"]),
            timestamp=_float(result["timestamp"]),
            seq=None if result.get("seq") is None else int(result["seq"]),
            dose=None if dose is None else float(dose),
            dose_total=None if total is None else float(total),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed acquisition result {str(result)[:200]}") from exc
