"""`DriverServer`: serves a `Backend` over ZeroMQ (a ROUTER for requests, a PUB for events).

The commands, their arguments and the error codes are specified in ``PROTOCOL.md``; `COMMANDS`
is the same table in code: the server validates against it and returns it from ``hello``.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from .backend import Acquisition, Backend
from .protocol import (
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    ArrayFormat,
    ErrorCode,
    InstrumentDescription,
    ProtocolError,
    VersionMismatch,
    axis_meta,
    decode,
    encode,
    send,
)
from .security import ServerKeys, secure_server_socket, start_authenticator

log = logging.getLogger(__name__)

Frames = list[bytes | memoryview]


def _arg(kind: str, doc: str, *, required: bool = True, units: str | None = None) -> dict:
    spec: dict[str, Any] = {"type": kind, "required": required, "doc": doc}
    if units is not None:
        spec["units"] = units
    return spec


_UNITS = _arg("string", "'px' (default) or the described pixel_units", required=False)

# The explicit allow-list of commands. ``instrument`` commands use the backend: they wait their
# turn behind a running ``measure`` and are refused once their deadline has passed. ``replay``
# commands are never executed twice for one request id: a retry gets the first reply again.
COMMANDS: dict[str, dict[str, Any]] = {
    "hello": {
        "args": {
            "protocol": _arg("string", "the client's version 'MAJOR.MINOR'", required=False),
            "heartbeat_s": _arg(
                "number", "arms the dead-man switch for this client", required=False, units="s"
            ),
        },
        "arrays": 0,
    },
    "describe": {"args": {}, "arrays": 0},
    "get_overview": {
        "args": {"channel": _arg("string", "one of overview_channels", required=False)},
        "arrays": 1,
        "instrument": True,
    },
    "move": {
        "args": {"x": _arg("number", "column"), "y": _arg("number", "row"), "units": _UNITS},
        "arrays": 0,
        "instrument": True,
        "replay": True,
    },
    "acquire": {
        "args": {"dwell_s": _arg("number", "exposure", units="s")},
        "arrays": 1,
        "instrument": True,
        "replay": True,
    },
    "measure": {
        "args": {
            "points": _arg("points", "[[x, y], ...]: move and acquire at each, in order"),
            "dwell_s": _arg("number", "exposure per point", units="s"),
            "units": _UNITS,
        },
        "arrays": 1,
        "streams": True,
        "instrument": True,
        "replay": True,
    },
    "status": {"args": {}, "arrays": 0},
    # 1.2: move the probe to the instrument's safe position and blank the beam, as it can.
    "park": {"args": {}, "arrays": 0, "instrument": True},
    "abort": {"args": {"target": _arg("string", "id of the request to cancel")}, "arrays": 0},
    "heartbeat": {"args": {}, "arrays": 0},
    "results_since": {
        "args": {
            "seq": _arg("integer", "return results with a larger sequence number"),
            "limit": _arg(
                "integer", "at most this many (default and maximum 1000)", required=False
            ),
        },
        "arrays": -1,  # one per result
    },
}

COMMANDS_SINCE_1_2 = ("park",)  # commands a server speaking 1.0 or 1.1 does not have

MAX_ID_CHARS = 128
DEADMAN_CHECK_S = 0.01  # how often, at most, silent controllers are looked for
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: pyzmq's enums cost time
MAX_STRING_CHARS = 256
MAX_RESULTS_PER_REPLY = 1000


class Refusal(Exception):
    """A request the server answers with an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class _Request:
    identity: bytes
    id: str
    cmd: str
    args: dict[str, Any]
    deadline: float | None  # time.monotonic()
    client: str | None
    aborted: bool = False


@dataclass(slots=True)
class _Remembered:
    """The replies sent so far to one replayed request."""

    cmd: str
    replies: list[Frames]
    nbytes: int = 0


class _ResultStore:
    """The last ``size`` acquisitions, by consecutive sequence numbers from 0."""

    def __init__(self, size: int) -> None:
        self._items: collections.deque[tuple[dict[str, Any], np.ndarray]] = collections.deque(
            maxlen=size
        )
        self.next_seq = 0

    def add(self, meta: dict[str, Any], spectrum: np.ndarray) -> int:
        meta["seq"] = seq = self.next_seq
        self._items.append((meta, spectrum))
        self.next_seq += 1
        return seq

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self._items)

    def since(self, seq: int, limit: int) -> list[tuple[dict[str, Any], np.ndarray]]:
        start = max(seq + 1 - self.first_seq, 0)
        return [self._items[i] for i in range(start, min(start + limit, len(self._items)))]


class _EventPublisher:
    """A thread with a PUB socket: heartbeats every ``heartbeat_s`` and the events it is given."""

    def __init__(
        self,
        context: zmq.Context,
        address: str,
        heartbeat_s: float,
        snapshot: Callable[[], dict[str, Any]],
        keys: ServerKeys | None,
    ) -> None:
        self._queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._socket = context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            secure_server_socket(self._socket, keys)
        self._socket.bind(address)
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._heartbeat_s, self._snapshot = heartbeat_s, snapshot
        self._thread = threading.Thread(target=self._run, name="DriverServer-events", daemon=True)
        self._thread.start()  # the socket belongs to that thread from here on

    def publish(self, event: str, **fields: Any) -> None:
        self._queue.put({"event": event, "t": time.time(), **fields})

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        next_beat = time.monotonic()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, next_beat - time.monotonic()))
                except queue.Empty:
                    item = {"event": "heartbeat", "t": time.time(), **self._snapshot()}
                    next_beat = max(next_beat + self._heartbeat_s, time.monotonic())
                if item is None:
                    return
                self._socket.send_multipart(encode(item))
        finally:
            self._socket.close()


class DriverServer:
    """Serve ``backend`` on ``address`` until `stop` is called.

    Binds to loopback by default (``tcp://127.0.0.1:0`` picks a free port; read it back from
    `endpoint`); listening on other interfaces is an explicit choice of ``address``. Events
    (heartbeats every ``heartbeat_s``, state changes) are published on ``events_address``: by
    default the same interface as ``address`` on a free port, reported by ``hello``; None turns
    them off. With ``keys`` every socket uses CURVE and only the listed clients get in.

    Every request gets one reply (``measure`` one per point), malformed ones included, and the
    server keeps serving whatever a client sends. Positions and dwell times are checked against
    the backend's own description before the backend sees them. The replies of the last
    ``remember_ids`` move/acquire/measure requests (and at most ``remember_bytes`` of them,
    the newest always kept) are kept, so a retried request is answered again, never executed
    twice; the last ``store_size`` acquisitions are kept for ``results_since``.

    ``protocol_minor`` makes the server speak an older minor version of protocol 1 (``1`` for
    1.1: no ``park`` command, no dose fields), as an older server would; the default is the
    newest. Whatever it speaks, the dead-man switch parks the instrument as `park` does.
    Dose (1.2): the server adds up the dose of every acquisition (`dose_total`, in the
    described ``dose_units``) and reports it with each acquisition and in ``status``.
    """

    def __init__(
        self,
        backend: Backend,
        address: str = "tcp://127.0.0.1:0",
        *,
        max_message_bytes: int = 1024 * 1024,
        context: zmq.Context | None = None,
        events_address: str | None = "auto",
        heartbeat_s: float = 1.0,
        keys: ServerKeys | None = None,
        remember_ids: int = 1024,
        remember_bytes: int = 256 * 1024 * 1024,
        store_size: int = 10_000,
        max_points: int = 10_000,
        protocol_minor: int = PROTOCOL_MINOR,
    ) -> None:
        if not (isinstance(protocol_minor, int) and 0 <= protocol_minor <= PROTOCOL_MINOR):
            raise ValueError(
                f"protocol_minor must be an integer in [0, {PROTOCOL_MINOR}], got "
                f"{protocol_minor!r}"
            )
        self.protocol_minor = protocol_minor
        self.protocol_version = f"{PROTOCOL_MAJOR}.{protocol_minor}"
        self._command_table = {
            cmd: spec
            for cmd, spec in COMMANDS.items()
            if protocol_minor >= 2 or cmd not in COMMANDS_SINCE_1_2
        }
        self.backend = backend
        self.address = address
        self.max_message_bytes = max_message_bytes
        self.heartbeat_s = heartbeat_s
        self.max_points = max_points
        self.keys = keys
        self._context = context or zmq.Context()
        self._own_context = context is None
        self._hooks = tuple(
            name for name in ("park", "blank") if callable(getattr(backend, name, None))
        )
        described = backend.describe()
        self._description: InstrumentDescription = dataclasses.replace(
            described,
            can_park=described.can_park or "park" in self._hooks,
            can_blank=described.can_blank or "blank" in self._hooks,
        )
        if events_address == "auto":
            events_address = _same_interface(address)
        self._events_address = events_address
        self._commands: dict[str, Callable[[_Request, dict[str, Any]], Any]] = {
            "hello": self._hello,
            "describe": self._describe,
            "get_overview": self._get_overview,
            "move": self._move,
            "acquire": self._acquire,
            "status": self._status,
            "abort": self._abort,
            "heartbeat": self._heartbeat,
            "results_since": self._results_since,
            "park": self._park,
        }  # "measure" streams: see _measure
        self.session = uuid.uuid4().hex
        self._started = time.monotonic()
        axis = self._description.spectral_axis
        self._spectrum_format = ArrayFormat(
            "<f4",
            (axis.size,),
            {"units": self._description.spectrum_units, "axes": [axis_meta("spectral", axis)]},
        )
        self._replies: collections.OrderedDict[str, _Remembered] = collections.OrderedDict()
        self._remember_ids, self._remember_bytes = remember_ids, remember_bytes
        self._remembered_bytes = 0
        self._store = _ResultStore(store_size)
        self._pending: collections.deque[_Request] = collections.deque()
        self._streaming: _Request | None = None
        self._controllers: dict[str, list[float]] = {}  # client -> [heartbeat_s, last seen]
        self._next_deadman_check = -math.inf  # time.monotonic()
        self._position: tuple[float, float] | None = None
        self.safe_state: dict[str, Any] | None = None  # set when the dead-man switch fires
        # {"action", "reason", "t", "moved", "blanked"} from a park until the next move
        self.parked: dict[str, Any] | None = None
        self.dose_total = 0.0  # of every acquisition this session, in the described dose_units
        self._events: _EventPublisher | None = None
        self._auth: Any = None
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.endpoint: str | None = None
        self.events_endpoint: str | None = None

    # -- running ------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop` is called."""
        try:
            socket = self._open()
        except zmq.ZMQError as exc:
            self._error = exc
            self._bound.set()
            self._close_helpers()
            raise
        self._bound.set()
        log.info("serving %s on %s", self._description.name, self.endpoint)
        self._publish("started")
        try:
            while not self._stop.is_set():
                try:
                    if self._pending:
                        self._execute(socket, self._pending.popleft())
                    else:
                        self._receive(socket, deferring=False)  # waits up to RCVTIMEO
                    if self._controllers:
                        self._check_deadman()
                except Exception:  # never let one request end the service
                    log.exception("unhandled error while serving a request")
        finally:
            self._publish("stopping")
            socket.close()
            self._close_helpers()

    def _open(self) -> zmq.Socket:
        if self.keys is not None:
            self._auth = start_authenticator(self._context, self.keys)
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        socket.setsockopt(zmq.RCVTIMEO, 50)  # how often the loop looks at stop and dead-man
        # A ROUTER drops what exceeds the high-water mark: leave room for a whole measure.
        socket.setsockopt(zmq.SNDHWM, max(1000, 4 * self.max_points))
        if self.keys is not None:
            secure_server_socket(socket, self.keys)
        try:
            socket.bind(self.address)
            self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
            if self._events_address is not None:
                self._events = _EventPublisher(
                    self._context, self._events_address, self.heartbeat_s, self._snapshot, self.keys
                )
                self.events_endpoint = self._events.endpoint
        except zmq.ZMQError:
            socket.close()
            raise
        return socket

    def _close_helpers(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def start(self) -> str:
        """Serve in a background thread; return the bound endpoint."""
        self._thread = threading.Thread(target=self._run_quietly, name="DriverServer", daemon=True)
        self._thread.start()
        self._bound.wait()
        if self._error is not None:
            raise self._error
        assert self.endpoint is not None
        return self.endpoint

    def stop(self) -> None:
        """Stop serving and release the sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._own_context:
            self._context.term()

    def __enter__(self) -> DriverServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run_quietly(self) -> None:
        try:
            self.serve_forever()
        except zmq.ZMQError:
            pass  # reported to start() through self._error

    def _publish(self, event: str, **fields: Any) -> None:
        if self._events is not None:
            self._events.publish(event, session=self.session, **fields)

    def _snapshot(self) -> dict[str, Any]:
        streaming = self._streaming
        return {
            "session": self.session,
            "state": self._state(),
            "busy_with": streaming.id if streaming else None,
            "last_seq": self._store.next_seq - 1,
        }

    def _state(self) -> str:
        if self._streaming is not None:
            return "busy"
        return "parked" if self.parked is not None else "idle"

    # -- one message --------------------------------------------------------------------------

    def _receive(self, socket: zmq.Socket, *, deferring: bool) -> None:
        try:
            identity, *body = socket.recv_multipart()  # small: copying beats zero-copy
        except zmq.Again:
            return
        request = self._parse(socket, identity, body)
        if request is None or self._replay(socket, request):
            return
        if deferring and COMMANDS[request.cmd].get("instrument"):
            self._pending.append(request)  # waits for the running measure
        else:
            self._execute(socket, request)

    def _parse(self, socket: zmq.Socket, identity: bytes, body: Frames) -> _Request | None:
        """The request in ``body``, or None after replying with an error."""
        request_id = None
        try:
            size = sum(map(len, body))
            if size > self.max_message_bytes:
                raise ProtocolError(f"message of {size} bytes exceeds {self.max_message_bytes}")
            header, arrays = decode(body)
            request_id = header.get("id")
            if not (isinstance(request_id, str) and 0 < len(request_id) <= MAX_ID_CHARS):
                request_id = None
                raise ProtocolError(f"request needs a string 'id' of 1 to {MAX_ID_CHARS} chars")
            cmd, args = header.get("cmd"), header.get("args", {})
            if not isinstance(args, dict):
                raise ProtocolError("'args' is not a JSON object")
            if arrays:
                raise ProtocolError(f"command {str(cmd)[:64]!r} takes no array frames")
            deadline_s = header.get("deadline_s")
            if deadline_s is not None and not _is_positive_number(deadline_s):
                raise ProtocolError(f"'deadline_s' must be a positive number, got {deadline_s!r}")
            client = header.get("client")
            if client is not None and not (isinstance(client, str) and len(client) <= MAX_ID_CHARS):
                raise ProtocolError("'client' must be a string")
            if not isinstance(cmd, str) or cmd not in self._command_table:
                raise Refusal(ErrorCode.UNKNOWN_COMMAND, f"unknown command {str(cmd)[:64]!r}")
        except VersionMismatch as exc:
            self._send(socket, identity, _error_reply(None, ErrorCode.UNSUPPORTED_VERSION, exc))
            return None
        except ProtocolError as exc:
            self._send(socket, identity, _error_reply(request_id, ErrorCode.BAD_MESSAGE, exc))
            return None
        except Refusal as exc:
            self._send(socket, identity, _error_reply(request_id, exc.code, exc))
            return None
        now = time.monotonic()
        if client in self._controllers:
            self._controllers[client][1] = now
        deadline = None if deadline_s is None else now + min(deadline_s, 1e9)
        return _Request(identity, request_id, cmd, args, deadline, client)

    def _replay(self, socket: zmq.Socket, request: _Request) -> bool:
        """Answer a retry of a request already done, running or waiting; False if it is new."""
        remembered = self._replies.get(request.id)
        if remembered is not None:
            cmd, messages = remembered.cmd, remembered.replies
            if cmd != request.cmd:
                error = f"request id {request.id!r} was already used for {cmd!r}"
                self._send(
                    socket, request.identity, _error_reply(None, ErrorCode.BAD_MESSAGE, error)
                )
                return True
            for message in messages:
                self._send(socket, request.identity, message)
            if self._streaming is not None and self._streaming.id == request.id:
                self._streaming.identity = request.identity  # the rest of the stream goes here
            return True
        for waiting in self._pending:
            if waiting.id == request.id:
                waiting.identity = request.identity
                return True
        return False

    def _execute(self, socket: zmq.Socket, request: _Request) -> None:
        spec = COMMANDS[request.cmd]
        try:
            if spec.get("instrument") and request.deadline is not None:
                late = time.monotonic() - request.deadline
                if late > 0:
                    raise Refusal(
                        ErrorCode.DEADLINE_EXPIRED,
                        f"the caller's deadline passed {late:.3g} s before {request.cmd} could "
                        "start; nothing was done",
                    )
            if request.aborted:
                raise Refusal(ErrorCode.ABORTED, f"{request.cmd} was aborted before it started")
            args = _check_args(request.cmd, request.args, self.max_points)
            if request.cmd == "measure":
                self._measure(socket, request, args)
                return
            result, arrays, meta = self._commands[request.cmd](request, args)
            reply = encode({"id": request.id, "ok": True, "result": result}, arrays, meta)
        except Refusal as exc:
            reply = _error_reply(request.id, exc.code, exc)
        except Exception as exc:  # the backend failed: report it, keep serving
            log.exception("backend error in %s", request.cmd)
            reply = _error_reply(
                request.id, ErrorCode.BACKEND_ERROR, f"{type(exc).__name__}: {exc}"
            )
        if spec.get("replay"):
            self._remember_more(self._remember(request), reply)
        self._send(socket, request.identity, reply)

    def _remember(self, request: _Request) -> _Remembered:
        """Start remembering the replies to ``request`` (a replayed command)."""
        remembered = self._replies[request.id] = _Remembered(request.cmd, [])
        return remembered

    def _remember_more(self, remembered: _Remembered, message: Frames) -> None:
        """Add one more reply to ``remembered``; forget the oldest other requests' replies.

        The frames are kept as they are, without a copy: replayed replies are bytes and views
        of spectra the server copied for itself (`_store_acquisition`) and never changes.
        """
        nbytes = sum(frame.nbytes if type(frame) is memoryview else len(frame) for frame in message)
        remembered.replies.append(message)
        remembered.nbytes += nbytes
        self._remembered_bytes += nbytes
        while len(self._replies) > 1 and (
            len(self._replies) > self._remember_ids or self._remembered_bytes > self._remember_bytes
        ):
            _, forgotten = self._replies.popitem(last=False)
            self._remembered_bytes -= forgotten.nbytes

    @staticmethod
    def _send(socket: zmq.Socket, identity: bytes, frames: Frames) -> None:
        try:
            send(socket, [identity, *frames])
        except zmq.ZMQError as exc:  # e.g. the peer is gone and its queue full
            log.warning("could not send a reply: %s", exc)

    # -- the dead-man switch ------------------------------------------------------------------

    def _check_deadman(self) -> None:
        """Make the instrument safe for each controller silent for two heartbeat intervals;
        looks at most every `DEADMAN_CHECK_S`."""
        now = time.monotonic()
        if now < self._next_deadman_check:
            return
        self._next_deadman_check = now + DEADMAN_CHECK_S
        for client, (interval, last_seen) in list(self._controllers.items()):
            silent = now - last_seen
            if silent > 2 * interval:
                del self._controllers[client]
                self._make_safe(
                    f"controlling client {client!r} silent for {silent:.3g} s "
                    f"(heartbeat every {interval:.3g} s)"
                )

    def _make_safe(self, reason: str) -> None:
        """The dead-man switch: park the instrument as the ``park`` command does."""
        log.warning("dead-man switch: %s; parking (%s)", reason, ", ".join(self._hooks) or "none")
        try:
            parked = self._park_backend(reason)
            action = parked["action"]
        except Exception as exc:
            action = f"{self._action_name()} failed"
            log.exception("the backend's %s", action)
            reason += f"; {action}: {type(exc).__name__}: {exc}"
        self.safe_state = {"action": action, "reason": reason, "t": time.time()}
        self._publish("safe_state", **self.safe_state)

    def _action_name(self) -> str:
        """What a park does here: ``park`` (the probe moves to safety), ``blank`` or ``none``."""
        d = self._description
        return "park" if d.can_park else "blank" if d.can_blank else "none"

    def _park_backend(self, reason: str) -> dict[str, Any]:
        """Call the backend's ``park`` then ``blank``, each if it has it; record and return
        what was done (`parked`). A hook that raises propagates (the instrument was touched)."""
        if "park" in self._hooks:
            where = self.backend.park()  # type: ignore[attr-defined]
            # The probe moved: to where the backend says, if it says (x, y), or unknown.
            self._position = _position_or_none(where)
        if "blank" in self._hooks:
            self.backend.blank()  # type: ignore[attr-defined]
        d = self._description
        self.parked = {
            "action": self._action_name(),
            "reason": reason,
            "t": time.time(),
            "moved": d.can_park,
            "blanked": d.can_blank,
        }
        return self.parked

    # -- commands -----------------------------------------------------------------------------

    def _hello(self, request: _Request, args: dict[str, Any]) -> Any:
        if "protocol" in args:
            major = args["protocol"].partition(".")[0]
            if not major.isdigit():
                raise Refusal(ErrorCode.BAD_ARGUMENT, "'protocol' must look like '1.0'")
            if int(major) != PROTOCOL_MAJOR:
                raise Refusal(
                    ErrorCode.UNSUPPORTED_VERSION,
                    f"protocol {args['protocol']} is not supported; this server speaks "
                    f"{self.protocol_version}",
                )
        if "heartbeat_s" in args:
            interval = args["heartbeat_s"]
            client = request.client
            if not 0 < interval <= 3600:
                raise Refusal(ErrorCode.BAD_ARGUMENT, "'heartbeat_s' must be in (0, 3600]")
            if client is None:
                raise Refusal(ErrorCode.BAD_ARGUMENT, "'heartbeat_s' needs 'client' in the header")
            self._controllers[client] = [interval, time.monotonic()]
            self._publish("controller", client=client, heartbeat_s=interval)
        d = self._description
        capabilities = ["measure", "abort", "results_since", "physical_units"]
        if self._events is not None:
            capabilities.append("events")
        capabilities += [h for h in ("park", "blank") if getattr(self._description, f"can_{h}")]
        if self.keys is not None:
            capabilities.append("curve")
        result = {
            "protocol": self.protocol_version,
            "server": "dklscope.drivers",
            "session": self.session,
            "instrument": d.name,
            "commands": self._command_table,
            "limits": {
                "probe_limits": d.probe_limits,
                "forbidden_regions": d.forbidden_regions,
                "dwell_range_s": d.dwell_range_s,
                "max_message_bytes": self.max_message_bytes,
                "max_points": self.max_points,
                "max_id_chars": MAX_ID_CHARS,
            },
            "capabilities": capabilities,
            "events": self.events_endpoint,
            "heartbeat_s": self.heartbeat_s if self._events is not None else None,
        }
        return result, [], None

    def _describe(self, request: _Request, args: dict[str, Any]) -> Any:
        return self._description.to_dict(self.protocol_minor), [], None

    def _get_overview(self, request: _Request, args: dict[str, Any]) -> Any:
        d = self._description
        channel = args.get("channel", d.overview_channels[0])
        if channel not in d.overview_channels:
            raise Refusal(
                ErrorCode.BAD_ARGUMENT, f"unknown channel {channel!r}; have {d.overview_channels}"
            )
        raw = (
            self.backend.get_overview()
            if len(d.overview_channels) == 1
            else self.backend.get_overview(channel)  # type: ignore[call-arg]
        )
        image = np.asarray(raw, dtype=np.float32)
        if image.shape != d.overview_shape:
            raise RuntimeError(f"overview shape {image.shape} != described {d.overview_shape}")
        rows, cols = d.overview_shape
        meta = {"units": "arb", "axes": [_pixel_axis("y", rows, d), _pixel_axis("x", cols, d)]}
        return {"channel": channel}, [image], [meta]

    def _to_allowed_pixels(
        self, x: float, y: float, units: str, point: int | None = None
    ) -> tuple[float, float]:
        """``(x, y)`` in ``units`` as overview pixels, refused unless the probe may go there
        (``point``: its index in a measure, for the message)."""
        try:
            x, y = self._description.to_pixels(x, y, units)
        except ValueError as exc:
            raise Refusal(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        if (why := self._description.check_position(x, y)) is not None:
            where = "" if point is None else f"point {point}: "
            raise Refusal(ErrorCode.OUT_OF_LIMITS, f"{where}{why}")
        return x, y

    def _check_dwell(self, dwell_s: float) -> None:
        if (why := self._description.check_dwell(dwell_s)) is not None:
            raise Refusal(ErrorCode.OUT_OF_LIMITS, why)

    def _move(self, request: _Request, args: dict[str, Any]) -> Any:
        x, y = self._to_allowed_pixels(args["x"], args["y"], args.get("units", "px"))
        x_read, y_read = self.backend.move_probe(x, y)
        self._position = (float(x_read), float(y_read))
        self.safe_state = self.parked = None
        return {"x": _finite_or_none(x_read), "y": _finite_or_none(y_read)}, [], None

    def _acquire(self, request: _Request, args: dict[str, Any]) -> Any:
        self._check_dwell(args["dwell_s"])
        meta, spectrum = self._store_acquisition(request, self.backend.acquire(args["dwell_s"]))
        return meta, [spectrum], [self._spectrum_format]

    def _store_acquisition(
        self, request: _Request, acq: Acquisition
    ) -> tuple[dict[str, Any], np.ndarray]:
        spectrum = np.array(acq.spectrum, dtype=self._spectrum_format.dtype)  # the server's own
        expected = self._spectrum_format.shape
        if spectrum.shape != expected:
            raise RuntimeError(f"spectrum shape {spectrum.shape} != described {expected}")
        meta = {
            "request": request.id,
            "dwell_s": _finite_or_none(acq.dwell_s),
            "x": _finite_or_none(acq.x),
            "y": _finite_or_none(acq.y),
            "timestamp": _finite_or_none(acq.timestamp),
        }
        d = self._description
        if d.dose_per_s is not None:
            dose = acq.dose if acq.dose is not None else acq.dwell_s * d.dose_per_s
            if math.isfinite(dose):
                self.dose_total += dose
            if self.protocol_minor >= 2:
                meta["dose"] = _finite_or_none(dose)
                meta["dose_total"] = self.dose_total
        self._store.add(meta, spectrum)
        return meta, spectrum

    def _measure(self, socket: zmq.Socket, request: _Request, args: dict[str, Any]) -> None:
        units, dwell_s = args.get("units", "px"), args["dwell_s"]
        points = [
            self._to_allowed_pixels(x, y, units, i) for i, (x, y) in enumerate(args["points"])
        ]
        self._check_dwell(dwell_s)
        remembered = self._remember(request)
        self._streaming = request
        n = len(points)
        if n > 1:  # a one-point measure is just a fast move + acquire
            self._publish("state", state="busy", busy_with=request.id)
        try:
            for i, (x, y) in enumerate(points):
                if i:
                    self._drain(socket)
                reply, more = self._measure_point(request, i, n, x, y, dwell_s)
                self._remember_more(remembered, reply)
                self._send(socket, request.identity, reply)
                if not more:
                    break
        finally:
            self._streaming = None
            if n > 1:
                self._publish("state", state=self._state(), busy_with=None)

    def _measure_point(
        self, request: _Request, i: int, n: int, x: float, y: float, dwell_s: float
    ) -> tuple[Frames, bool]:
        """The reply for point ``i`` of ``n``, and whether the stream goes on."""
        if request.aborted:
            return _stream_end(request, i, ErrorCode.ABORTED, f"aborted after {i} of {n} points")
        if request.deadline is not None and time.monotonic() > request.deadline:
            message = f"deadline passed after {i} of {n} points"
            return _stream_end(request, i, ErrorCode.DEADLINE_EXPIRED, message)
        try:
            x_read, y_read = self.backend.move_probe(x, y)
            self._position = (float(x_read), float(y_read))
            self.safe_state = self.parked = None
            meta, spectrum = self._store_acquisition(request, self.backend.acquire(dwell_s))
        except Exception as exc:
            log.exception("backend error in measure, point %d", i)
            return _stream_end(request, i, ErrorCode.BACKEND_ERROR, f"{type(exc).__name__}: {exc}")
        more = i < n - 1
        result = {**meta, "index": i, "x_read": _finite_or_none(x_read)}
        result["y_read"] = _finite_or_none(y_read)
        header = {"id": request.id, "ok": True, "more": more, "result": result}
        return encode(header, [spectrum], [self._spectrum_format]), more

    def _drain(self, socket: zmq.Socket, limit: int = 100) -> None:
        """Answer what came in meanwhile: control commands now, instrument commands later."""
        for _ in range(limit):
            if not socket.getsockopt(_EVENTS) & _POLLIN:
                return
            self._receive(socket, deferring=True)
        if self._controllers:
            self._check_deadman()

    def _status(self, request: _Request, args: dict[str, Any]) -> Any:
        result = {
            **self._snapshot(),
            "position": self._position,
            "pending": [r.id for r in self._pending],
            "first_seq": self._store.first_seq,
            "safe_state": self.safe_state,
            "controllers": sorted(self._controllers),
            "uptime_s": time.monotonic() - self._started,
        }
        if self.protocol_minor >= 2:
            result["parked"] = self.parked
            result["dose_total"] = None if self._description.dose_per_s is None else self.dose_total
            result["dose_units"] = self._description.dose_units
        return result, [], None

    def _park(self, request: _Request, args: dict[str, Any]) -> Any:
        who = f"client {request.client!r}" if request.client else "a client"
        parked = self._park_backend(f"park requested by {who}")
        log.info("parked (%s) at the request of %s", parked["action"], who)
        self._publish("parked", **parked)
        result = {**parked, "state": self._state(), "position": self._position}
        return result, [], None

    def _abort(self, request: _Request, args: dict[str, Any]) -> Any:
        target = args["target"]
        state = "unknown"
        if self._streaming is not None and self._streaming.id == target:
            self._streaming.aborted, state = True, "running"
        elif waiting := [r for r in self._pending if r.id == target]:
            waiting[0].aborted, state = True, "pending"  # _execute answers it with ABORTED
        elif target in self._replies:
            state = "done"
        return (
            {"target": target, "state": state, "aborted": state in ("running", "pending")},
            [],
            None,
        )

    def _heartbeat(self, request: _Request, args: dict[str, Any]) -> Any:
        return {"session": self.session, "t": time.time()}, [], None

    def _results_since(self, request: _Request, args: dict[str, Any]) -> Any:
        limit = args.get("limit", MAX_RESULTS_PER_REPLY)
        if not 0 < limit <= MAX_RESULTS_PER_REPLY:
            raise Refusal(
                ErrorCode.BAD_ARGUMENT, f"'limit' must be in [1, {MAX_RESULTS_PER_REPLY}]"
            )
        items = self._store.since(args["seq"], limit)
        result = {
            "results": [meta for meta, _ in items],
            "first_seq": self._store.first_seq,
            "last_seq": self._store.next_seq - 1,
            "session": self.session,
        }
        return result, [spectrum for _, spectrum in items], [self._spectrum_format] * len(items)


# Per command: the names of its arguments, and (name, required, type) of each, from `COMMANDS`.
_SCHEMAS = {
    cmd: (
        frozenset(spec["args"]),
        tuple((name, arg["required"], arg["type"]) for name, arg in spec["args"].items()),
    )
    for cmd, spec in COMMANDS.items()
}


def _check_args(cmd: str, args: dict[str, Any], max_points: int) -> dict[str, Any]:
    """``args`` checked against the schema of ``cmd``; refuses missing, extra, ill-typed ones."""
    names, schema = _SCHEMAS[cmd]
    if not names.issuperset(args):
        extra = sorted(set(args) - names)
        raise Refusal(ErrorCode.BAD_ARGUMENT, f"{cmd}: unexpected arguments {extra}")
    checked = {}
    for name, required, kind in schema:
        if name not in args:
            if required:
                raise Refusal(ErrorCode.BAD_ARGUMENT, f"{cmd}: missing argument {name!r}")
            continue
        value = args[name]
        if kind == "number":
            checked[name] = _number(cmd, name, value)
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**53:
                raise Refusal(ErrorCode.BAD_ARGUMENT, f"{cmd}: {name!r} must be an integer")
            checked[name] = value
        elif kind == "string":
            if not isinstance(value, str) or len(value) > MAX_STRING_CHARS:
                raise Refusal(ErrorCode.BAD_ARGUMENT, f"{cmd}: {name!r} must be a short string")
            checked[name] = value
        else:  # "points"
            checked[name] = _points(cmd, name, value, max_points)
    return checked


def _number(cmd: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Refusal(
            ErrorCode.BAD_ARGUMENT, f"{cmd}: argument {name!r} must be a number, got {value!r}"
        )
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise Refusal(ErrorCode.BAD_ARGUMENT, f"{cmd}: argument {name!r} must be a finite number")
    return number


def _points(cmd: str, name: str, value: Any, max_points: int) -> list[tuple[float, float]]:
    if not isinstance(value, list) or not 0 < len(value) <= max_points:
        raise Refusal(
            ErrorCode.BAD_ARGUMENT, f"{cmd}: {name!r} must be a list of 1 to {max_points} points"
        )
    points = []
    for i, point in enumerate(value):
        if not isinstance(point, list) or len(point) != 2:
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"{cmd}: point {i} must be [x, y]")
        x, y = point
        if type(x) is float and type(y) is float and math.isfinite(x) and math.isfinite(y):
            points.append((x, y))  # the usual case, without naming the values for a message
        else:
            points.append((_number(cmd, f"{name}[{i}].x", x), _number(cmd, f"{name}[{i}].y", y)))
    return points


def _is_positive_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value > 0 and (isinstance(value, int) or math.isfinite(value))


def _position_or_none(where: Any) -> tuple[float, float] | None:
    """``where`` as a finite (x, y), or None."""
    try:
        x, y = (float(v) for v in where)
    except (TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _pixel_axis(name: str, size: int, d: InstrumentDescription) -> dict[str, Any]:
    return {
        "name": name,
        "size": size,
        "offset": 0.0,
        "scale": d.pixel_size,
        "units": d.pixel_units,
    }


def _same_interface(address: str) -> str | None:
    """``tcp://HOST:0`` for a TCP ``address``; None (no events) for other transports."""
    if not address.startswith("tcp://"):
        return None
    host = address[len("tcp://") :].rpartition(":")[0]
    return f"tcp://{host}:0"


def _stream_end(request: _Request, i: int, code: str, message: str) -> tuple[Frames, bool]:
    """The error reply that ends a measure's stream at point ``i``."""
    error = {"code": code, "message": message, "index": i}
    return encode({"id": request.id, "ok": False, "more": False, "error": error}), False


def _error_reply(request_id: str | None, code: str, message: object) -> Frames:
    return encode({"id": request_id, "ok": False, "error": {"code": code, "message": str(message)}})
