"""`DriverServer`: serves a `Backend` over ZeroMQ (a ROUTER socket)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from .backend import Backend
from .protocol import ErrorCode, InstrumentDescription, ProtocolError, decode, encode

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], tuple[dict[str, Any], list[np.ndarray]]]


class Refusal(Exception):
    """A request the server answers with an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class DriverServer:
    """Serve ``backend`` on ``address`` until `stop` is called.

    Binds to loopback by default; ``tcp://127.0.0.1:0`` picks a free port, read it back from
    `endpoint`. Every request gets exactly one reply, malformed ones included, and the server
    keeps serving whatever a client sends. Positions and dwell times are checked against the
    backend's own description before the backend sees them.
    """

    def __init__(
        self,
        backend: Backend,
        address: str = "tcp://127.0.0.1:0",
        *,
        max_message_bytes: int = 16 * 1024 * 1024,
        context: zmq.Context | None = None,
    ) -> None:
        self.backend = backend
        self.address = address
        self.max_message_bytes = max_message_bytes
        self._context = context or zmq.Context()
        self._own_context = context is None
        self._description: InstrumentDescription = backend.describe()
        self._commands: dict[str, Handler] = {
            "describe": self._describe,
            "get_overview": self._get_overview,
            "move": self._move,
            "acquire": self._acquire,
        }
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.endpoint: str | None = None

    # -- running ------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop` is called."""
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        try:
            socket.bind(self.address)
            self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            socket.close()
            self._error = exc
            self._bound.set()
            raise
        self._bound.set()
        log.info("serving %s on %s", self._description.name, self.endpoint)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if not poller.poll(50):
                    continue
                frames = socket.recv_multipart(copy=False)
                try:
                    self._handle(socket, frames)
                except Exception:  # never let one request end the service
                    log.exception("unhandled error while serving a request")
        finally:
            socket.close()

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
        """Stop serving and release the socket."""
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

    # -- one request --------------------------------------------------------------------------

    def _handle(self, socket: zmq.Socket, frames: list[zmq.Frame]) -> None:
        identity, body = frames[0], [f.buffer for f in frames[1:]]
        request_id = None
        try:
            header, arrays = decode(body)
            if not isinstance(header.get("id"), str):
                raise ProtocolError("request has no string 'id'")
            request_id = header["id"]
            cmd, args = header.get("cmd"), header.get("args", {})
            if not isinstance(args, dict):
                raise ProtocolError("'args' is not a JSON object")
            if arrays:
                raise ProtocolError(f"command {cmd!r} takes no array frames")
            handler = self._commands.get(cmd) if isinstance(cmd, str) else None
            if handler is None:
                raise Refusal(ErrorCode.UNKNOWN_COMMAND, f"unknown command {cmd!r}")
            result, out_arrays = handler(args)
            reply = encode({"id": request_id, "ok": True, "result": result}, out_arrays)
        except ProtocolError as exc:
            reply = _error_reply(request_id, ErrorCode.BAD_MESSAGE, str(exc))
        except Refusal as exc:
            reply = _error_reply(request_id, exc.code, str(exc))
        except Exception as exc:  # the backend failed: report it, keep serving
            log.exception("backend error")
            reply = _error_reply(
                request_id, ErrorCode.BACKEND_ERROR, f"{type(exc).__name__}: {exc}"
            )
        socket.send_multipart([identity, *reply], copy=False)

    # -- commands -----------------------------------------------------------------------------

    def _describe(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[np.ndarray]]:
        _arguments(args)
        return self._description.to_dict(), []

    def _get_overview(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[np.ndarray]]:
        _arguments(args)
        image = np.asarray(self.backend.get_overview(), dtype=np.float32)
        if image.shape != self._description.overview_shape:
            raise RuntimeError(
                f"overview shape {image.shape} != described {self._description.overview_shape}"
            )
        return {}, [image]

    def _move(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[np.ndarray]]:
        x, y = _arguments(args, "x", "y")
        if (why := self._description.check_position(x, y)) is not None:
            raise Refusal(ErrorCode.OUT_OF_LIMITS, why)
        x_read, y_read = self.backend.move_probe(x, y)
        return {"x": float(x_read), "y": float(y_read)}, []

    def _acquire(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[np.ndarray]]:
        (dwell_s,) = _arguments(args, "dwell_s")
        if (why := self._description.check_dwell(dwell_s)) is not None:
            raise Refusal(ErrorCode.OUT_OF_LIMITS, why)
        acq = self.backend.acquire(dwell_s)
        meta = {"dwell_s": acq.dwell_s, "x": acq.x, "y": acq.y, "timestamp": acq.timestamp}
        return meta, [np.asarray(acq.spectrum, dtype=np.float32)]


def _arguments(args: dict[str, Any], *names: str) -> tuple[float, ...]:
    """The named numeric arguments, refusing missing, extra and non-numeric ones."""
    extra = sorted(set(args) - set(names))
    if extra:
        raise Refusal(ErrorCode.BAD_ARGUMENT, f"unexpected arguments {extra}")
    values = []
    for name in names:
        value = args.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Refusal(
                ErrorCode.BAD_ARGUMENT, f"argument {name!r} must be a number, got {value!r}"
            )
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number):
            raise Refusal(ErrorCode.BAD_ARGUMENT, f"argument {name!r} must be a finite number")
        values.append(number)
    return tuple(values)


def _error_reply(request_id: str | None, code: str, message: str) -> list[bytes | memoryview]:
    return encode({"id": request_id, "ok": False, "error": {"code": code, "message": message}})
