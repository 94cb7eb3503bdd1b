"""The controller's control socket: pause, resume, stop and status of a running campaign.

With ``runner.control: tcp://127.0.0.1:5601`` `dklscope run` serves a `ControlServer` there (a
ZeroMQ ROUTER, in its own thread), and a `ControlClient` (the live view's buttons, a script)
sends it one request at a time. A request is one frame, a UTF-8 JSON object ``{"cmd": ...}``;
the reply is one frame, ``{"ok": true, "cmd": ..., **Campaign.status()}`` or ``{"ok": false,
"error": "..."}``. Commands:

- ``status``: nothing changes.
- ``pause``: finish and journal the measurement under way, then wait (the instrument is asked
  nothing; the heartbeats to the driver go on).
- ``resume``: go on after a pause.
- ``stop``: finish and journal the measurement under way, then end the run as Ctrl-C does:
  the journal is resumable; the stop reason is ``stopped by the operator``.

The socket binds to loopback unless the address names another interface. With ``keys``
(`dklscope.drivers.security`, keys from ``dklscope keys``) it uses CURVE and admits only the
listed clients, exactly as a driver server does.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

import zmq

from dklscope.drivers.security import ClientKeys, ServerKeys, ServingSocket, secure_client_socket

from .jsonsafe import json_safe

if TYPE_CHECKING:
    from .loop import Campaign

log = logging.getLogger(__name__)

COMMANDS = ("status", "pause", "resume", "stop")
OPERATOR_STOP = "stopped by the operator"  # the stop reason of a ``stop`` request
MAX_REQUEST_BYTES = 4096


class ControlError(Exception):
    """No answer from the control socket, or a refusal (the message says which)."""


class ControlServer:
    """Answers control requests for a campaign on ``address`` from a thread of its own.

    Binds at once (``tcp://127.0.0.1:0`` picks a free port: read `address`), so a bad or busy
    address is found before anything else is done; answers from `serve` on (at once when
    ``campaign`` is given), registering the bound address in ``campaign.endpoints["control"]``
    so that the journal's ``run_started`` event names it. `close` (or leaving the ``with``
    block) stops the thread.
    """

    def __init__(
        self, address: str, *, keys: ServerKeys | None = None, campaign: Campaign | None = None
    ) -> None:
        self._serving = ServingSocket(
            zmq.ROUTER,
            address,
            what="serve control requests",
            keys=keys,
            max_message_bytes=MAX_REQUEST_BYTES,
        )
        self._socket = self._serving.socket
        self.address = self._serving.address
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if campaign is not None:
            self.serve(campaign)

    def serve(self, campaign: Campaign) -> None:
        """Answer requests about ``campaign`` from now on."""
        self.campaign = campaign
        campaign.endpoints["control"] = self.address
        self._thread = threading.Thread(target=self._serve, name="dklscope-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            envelope, body = frames[:-1], frames[-1]  # a REQ client adds an empty delimiter
            reply = self.handle(body)
            try:
                self._socket.send_multipart([*envelope, json.dumps(reply).encode()])
            except zmq.ZMQError as exc:  # the client is gone: nothing to tell it
                log.debug("control reply not sent: %s", exc)

    def handle(self, body: bytes) -> dict[str, Any]:
        """The reply to one request ``body`` (see the module's documentation)."""
        try:
            request = json.loads(body.decode())
            command = request["cmd"]
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError):
            return {"ok": False, "error": 'not a control request: send {"cmd": "status"}'}
        if command not in COMMANDS:
            return {
                "ok": False,
                "error": f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}",
            }
        campaign = self.campaign
        if command == "pause":
            campaign.request_pause()
        elif command == "resume":
            campaign.resume()
        elif command == "stop":
            campaign.request_stop(OPERATOR_STOP)
        if command != "status":
            log.info("control: %s requested", command)
        return json_safe({"ok": True, "cmd": command, **campaign.status()})

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._serving.close()

    def __enter__(self) -> ControlServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ControlClient:
    """Sends control requests to the `ControlServer` at ``address`` (or the one each request
    names); each waits at most ``timeout_s`` for its reply. ``keys``: CURVE, as for a driver
    server. A socket is made per request, so one client may serve several threads."""

    def __init__(
        self, address: str | None = None, *, keys: ClientKeys | None = None, timeout_s: float = 2.0
    ) -> None:
        self.address, self.keys, self.timeout_s = address, keys, timeout_s
        self._context = zmq.Context()

    def request(
        self, command: str, *, address: str | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Send ``command`` (one of `COMMANDS`) to ``address`` (default: the client's); the
        reply, or `ControlError`."""
        address = address or self.address
        if address is None:
            raise ControlError("no control address: the campaign serves no runner.control")
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        socket = self._context.socket(zmq.REQ)  # one per request: a lost reply costs nothing
        socket.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:
            secure_client_socket(socket, self.keys)
        try:
            socket.connect(address)
            socket.send(json.dumps({"cmd": command}).encode())
            if not socket.poll(int(1000 * timeout_s)):
                raise ControlError(f"no reply from the controller at {address}")
            reply = json.loads(socket.recv())
        except zmq.ZMQError as exc:  # a malformed address
            raise ControlError(f"cannot reach the controller at {address}: {exc}") from None
        except ValueError:  # not JSON: not a dklscope controller
            raise ControlError(f"the reply from {address} is not a controller's") from None
        finally:
            socket.close()
        if not isinstance(reply, dict):
            raise ControlError(f"the reply from {address} is not a controller's")
        if not reply.get("ok"):
            raise ControlError(f"the controller refused {command!r}: {reply.get('error')}")
        return reply

    def close(self) -> None:
        self._context.term()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
