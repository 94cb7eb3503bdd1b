"""`MicroscopeClient`: the controller's handle on an instrument served by `DriverServer`."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from typing import Any

import numpy as np
import zmq

from .backend import Acquisition
from .protocol import InstrumentDescription, ProtocolError, decode, encode

log = logging.getLogger(__name__)


class InstrumentError(Exception):
    """The instrument refused or failed a command; ``code`` is the protocol's error code."""

    def __init__(self, command: str, address: str, code: str, message: str) -> None:
        super().__init__(f"{command} on {address} failed [{code}]: {message}")
        self.command, self.address, self.code = command, address, code


class InstrumentTimeout(Exception):
    """No reply to a command within its timeout."""

    def __init__(self, command: str, address: str, timeout_s: float) -> None:
        super().__init__(f"{command} on {address}: no reply within {timeout_s:.3g} s")
        self.command, self.address, self.timeout_s = command, address, timeout_s


class MicroscopeClient:
    """Talks to one instrument over a DEALER socket; every call has a timeout.

    ``timeout_s`` bounds each call; an acquisition is given ``timeout_s + 1.5 * dwell_s``.
    After a timeout the socket is closed and reopened, so a late reply to the abandoned call
    can never be taken for the answer to a later one.
    """

    def __init__(
        self, address: str, *, timeout_s: float = 10.0, context: zmq.Context | None = None
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._context = context or zmq.Context()
        self._own_context = context is None
        self._ids = (f"{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())
        self._socket: zmq.Socket = self._connect()

    def _connect(self) -> zmq.Socket:
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.address)
        return socket

    def close(self) -> None:
        self._socket.close()
        if self._own_context:
            self._context.term()

    def __enter__(self) -> MicroscopeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------------------

    def describe(self) -> InstrumentDescription:
        result, _ = self.call("describe")
        return InstrumentDescription.from_dict(result)

    def get_overview(self) -> np.ndarray:
        """The overview image, shape (rows, cols), float32."""
        _, arrays = self.call("get_overview", n_arrays=1)
        return arrays[0]

    def move(self, x: float, y: float) -> tuple[float, float]:
        """Park the probe at overview pixel ``(x, y)``; return where it actually is."""
        result, _ = self.call("move", {"x": float(x), "y": float(y)})
        return float(result["x"]), float(result["y"])

    def acquire(self, dwell_s: float) -> Acquisition:
        """Expose for ``dwell_s`` seconds at the current probe position."""
        result, arrays = self.call(
            "acquire",
            {"dwell_s": float(dwell_s)},
            timeout_s=self.timeout_s + 1.5 * dwell_s,
            n_arrays=1,
        )
        return Acquisition(
            spectrum=arrays[0],
            dwell_s=float(result["dwell_s"]),
            x=float(result["x"]),
            y=float(result["y"]),
            timestamp=float(result["timestamp"]),
        )

    # -- transport ----------------------------------------------------------------------------

    def call(
        self,
        command: str,
        args: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        n_arrays: int = 0,
    ) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Send one request and wait for its reply; returns ``(result, arrays)``."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        request_id = next(self._ids)
        self._socket.send_multipart(encode({"id": request_id, "cmd": command, "args": args or {}}))
        deadline = time.monotonic() + timeout_s
        while (left_ms := (deadline - time.monotonic()) * 1000) > 0:
            if not self._socket.poll(max(1, int(left_ms))):
                continue
            try:
                header, arrays = decode(self._socket.recv_multipart())
            except ProtocolError as exc:
                raise ProtocolError(f"{command} on {self.address}: {exc}") from exc
            if header.get("id") != request_id:
                log.debug("dropping a stale reply %r", header.get("id"))
                continue
            if not header.get("ok"):
                error = header.get("error") or {}
                raise InstrumentError(
                    command, self.address, str(error.get("code")), str(error.get("message"))
                )
            if len(arrays) != n_arrays or not isinstance(header.get("result"), dict):
                raise ProtocolError(
                    f"{command} on {self.address}: expected a result and {n_arrays} arrays, "
                    f"got {len(arrays)}"
                )
            return header["result"], arrays
        self._socket.close()
        self._socket = self._connect()
        raise InstrumentTimeout(command, self.address, timeout_s)
