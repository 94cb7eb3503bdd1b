"""Parking the beam whenever a campaign stops using the instrument (a pause, a stop, Ctrl-C, the
end of its budget, an error, the instrument server's heartbeats lost): why, in a word
(`park_reason`), and the protocol's ``park`` asked for and journaled (`park`)."""

from __future__ import annotations

import logging
from typing import Any

from dklscope.drivers import MicroscopeClient

from .journal import Journal

log = logging.getLogger(__name__)

HEARTBEAT_LOST = "lost heartbeat"  # how the stop reason of a silent instrument server begins


def park_reason(stop_reason: str, stop_requested: str | None) -> str:
    """Why the beam is parked at the end of a run, in a word: ``interrupted`` (Ctrl-C),
    ``stop`` (asked to, ``stop_requested`` the reason given), ``heartbeat`` (the instrument
    server fell silent), ``error`` (a failed measurement stopped it) or ``finished`` (budget,
    dose, target...)."""
    if stop_requested is not None:
        return "interrupted" if stop_requested == "interrupted" else "stop"
    if stop_reason.startswith(HEARTBEAT_LOST):
        return "heartbeat"
    if stop_reason.startswith("measurement"):  # runner.on_failure: stop
        return "error"
    return "finished"


def park(
    client: MicroscopeClient, journal: Journal, reason: str, detail: str, measurements: int
) -> dict[str, Any]:
    """Park the beam (protocol 1.2 ``park``) and journal a ``parked`` event: ``reason`` in
    a word (`park_reason`, or ``pause``), ``detail`` the stop reason; ``action`` what was
    done (``park``, ``blank``, ``none``: the instrument can do neither, ``unsupported``:
    its server speaks an older protocol, ``failed``: with ``error``); ``measurements`` the
    number journaled. Returns the event's fields. Never raises: a failure to park must not
    hide why the run ended."""
    fields: dict[str, Any] = {"reason": reason, "detail": detail}
    try:
        result = client.park()
    except Exception as exc:  # the server is gone, or the instrument failed to park
        log.error("could not park the beam (%s): %s", reason, exc)
        fields.update(action="failed", error=str(exc))
    else:
        if result is None:
            log.warning(
                "the instrument's server has no park (protocol %s): the beam stays where it is",
                (client.server or {}).get("protocol"),
            )
            fields["action"] = "unsupported"
        else:
            fields.update(
                action=result.get("action"),
                moved=bool(result.get("moved")),
                blanked=bool(result.get("blanked")),
            )
            log.info("beam parked (%s): %s", reason, fields["action"])
    fields["measurements"] = measurements
    try:
        journal.log_event("parked", **fields)
    except Exception:  # the journal's own failure is reported by what ends the run
        log.exception("could not journal the parked event")
    return fields
