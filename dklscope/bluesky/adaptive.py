"""`RunEvaluation`: bluesky-adaptive's evaluation function for a `DKLAgent`.

bluesky-adaptive 1.0's ``optimize`` plan asks an `Optimizer` (the agent's ``suggest``) for
points, acquires them in a run of their own (its ``default_acquire``: a list scan of the
motors, reading the detector), then calls an evaluation function with that run's uid to turn
the acquired data into outcomes, and ``ingest``\\ s them. Its reference set-up reads the run
back from a Tiled server; `RunEvaluation` instead keeps the documents it is sent (subscribe it
to the RunEngine: ``RE.subscribe(evaluation.collect)``) and scalarizes each event's spectrum
with the agent's scalarizer (or takes a named scalar field), so the loop runs in one process
with no server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .agent import DKLAgent


class RunEvaluation:
    """The outcome of each suggestion of a run, from the run's own documents.

    ``collect(name, doc)`` is the RunEngine callback; calling the object with ``(uid,
    suggestions)`` returns ``[{"_id": ..., agent.outcome: scalar}]``, one per suggestion, from
    the run ``uid``'s primary events in acquisition order (the start document's
    ``blop_acquisition_order``). The scalar: ``float(data[scalar_field])`` if given, else
    ``agent.scalarize(data[spectrum])`` (default spectrum: the event's only one-dimensional
    array field). Documents of a run are dropped once it has been evaluated.
    """

    def __init__(
        self, agent: DKLAgent, *, spectrum: str | None = None, scalar_field: str | None = None
    ) -> None:
        if spectrum is not None and scalar_field is not None:
            raise ValueError("RunEvaluation: give spectrum or scalar_field, not both")
        self.agent, self.spectrum, self.scalar_field = agent, spectrum, scalar_field
        self._starts: dict[str, Mapping[str, Any]] = {}
        self._stream_of: dict[str, tuple[str, str]] = {}  # descriptor uid -> (run uid, stream)
        self._events: dict[str, list[Mapping[str, Any]]] = {}  # run uid -> primary events

    def collect(self, name: str, doc: Mapping[str, Any]) -> None:
        """Keep what evaluation needs of one document (a RunEngine subscription)."""
        if name == "start":
            self._starts[doc["uid"]] = doc
            self._events[doc["uid"]] = []
        elif name == "descriptor":
            self._stream_of[doc["uid"]] = (doc["run_start"], doc.get("name", "primary"))
        elif name == "event":
            run, stream = self._stream_of.get(doc["descriptor"], ("", ""))
            if stream == "primary" and run in self._events:
                self._events[run].append(doc)

    def __call__(self, uid: Any, suggestions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        run = uid[0] if isinstance(uid, tuple) else uid
        if run not in self._starts:
            raise KeyError(
                f"run {run!r} was not seen: subscribe RunEvaluation.collect to the RunEngine"
            )
        order = list(self._starts[run].get("blop_acquisition_order", []))
        events = sorted(self._events[run], key=lambda e: e["seq_num"])
        if not order:
            order = [s["_id"] for s in suggestions]
        if len(events) != len(order):
            raise ValueError(f"run {run}: {len(events)} events for {len(order)} suggestions")
        outcomes = [
            {"_id": point_id, self.agent.outcome: self._scalar(event["data"])}
            for point_id, event in zip(order, events, strict=True)
        ]
        del self._starts[run], self._events[run]
        return outcomes

    def _scalar(self, data: Mapping[str, Any]) -> float:
        value = self.agent.scalar_from(
            data, spectrum=self.spectrum, scalar_field=self.scalar_field, where="event"
        )
        if self.scalar_field is not None:
            return value
        return value if math.isfinite(value) else math.nan
