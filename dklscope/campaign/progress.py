"""`ProgressPublisher`: a running campaign's progress as ZeroMQ PUB events.

A notebook or a dashboard subscribes to the address given as ``runner.publish`` (docs/journal.md
lists the events and their fields). Each event is two frames: the topic ``b"dklscope"`` and one
UTF-8 JSON object with ``event`` (its kind), ``t`` (Unix seconds) and the event's fields;
non-finite numbers are sent as ``null``. PUB never blocks the campaign: a slow or absent
subscriber only misses events (the journal has them all). With ``keys`` the socket uses CURVE
and admits only the listed subscribers, as a driver server's sockets do.
"""

from __future__ import annotations

import json
import time
from typing import Any

import zmq

from dklscope.drivers.security import ServerKeys, ServingSocket

from .jsonsafe import json_safe

TOPIC = b"dklscope"


class ProgressPublisher:
    """Binds a PUB socket at ``address`` (``tcp://host:port``; port 0 picks a free one)."""

    def __init__(self, address: str, *, keys: ServerKeys | None = None) -> None:
        self._serving = ServingSocket(zmq.PUB, address, what="publish", keys=keys)
        self._socket = self._serving.socket
        self.address = self._serving.address

    def publish(self, event: str, **fields: Any) -> None:
        message = {"event": event, "t": time.time(), **fields}
        text = json.dumps(json_safe(message), allow_nan=False)
        try:
            self._socket.send_multipart([TOPIC, text.encode()], flags=zmq.NOBLOCK)
        except zmq.Again:  # no room: the subscriber misses it
            pass

    def close(self) -> None:
        self._serving.close()

    def __enter__(self) -> ProgressPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
