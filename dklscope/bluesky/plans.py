"""`dkl_campaign`: a DKL campaign as a Bluesky plan, in a beamline's own RunEngine.

Each step asks a `DKLAgent` for the next probe position (overview pixels), moves the motor
pair there (``bps.mv``, through a `StageGeometry`), triggers the detector and reads it, the
motors and the decision into one event of the ``primary`` stream, turns the reading into the
scalar (the agent's scalarizer on a spectrum, or a named scalar field of the reading) and
tells the agent. One run: its start document holds the campaign's config and the geometry,
each event the motors' read-back positions, the detector's readings, and the ``dkl`` fields
(the position asked in pixels, the scalar, the decision's kind and number, the model's
prediction and the acquisition value there), so whatever the RunEngine's subscribers keep
(a data broker, Tiled, a file writer) holds the whole campaign.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Generator
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.utils import Msg

from dklscope.drivers.ophyd_async.backend import StageGeometry

from .agent import AgentDecision, DKLAgent

log = logging.getLogger(__name__)

#: The fields each event gets from the campaign, under the plan's ``prefix`` (``dkl_x`` ...).
DKL_FIELDS = (
    "x",  # the position asked, overview pixels (column)
    "y",  # (row)
    "scalar",  # the scalar measured there
    "decision",  # the decision's number (0, 1, ...)
    "seed",  # 1 for a random seed point, 0 for the policy's
    "predicted_mean",  # the model's prediction there before measuring (NaN for a seed point)
    "predicted_std",
    "acquisition_value",  # the policy's acquisition value there (NaN for a seed point)
)


class DecisionReadable:
    """The campaign's fields of one step, as a Bluesky `Readable` (read into each event)."""

    parent = None

    def __init__(self, prefix: str = "dkl") -> None:
        self.name = prefix
        self._values: dict[str, float] = dict.fromkeys(DKL_FIELDS, math.nan)
        self._timestamp = time.time()

    def update(self, decision: AgentDecision, scalar: float) -> None:
        """What to read next: ``decision`` and the ``scalar`` measured for it."""
        self._values = {
            "x": decision.x,
            "y": decision.y,
            "scalar": scalar,
            "decision": float(decision.number),
            "seed": float(decision.kind == "seed"),
            "predicted_mean": decision.predicted_mean,
            "predicted_std": decision.predicted_std,
            "acquisition_value": decision.acquisition_value,
        }
        self._timestamp = time.time()

    def read(self) -> dict[str, dict[str, Any]]:
        return {
            f"{self.name}_{k}": {"value": v, "timestamp": self._timestamp}
            for k, v in self._values.items()
        }

    def describe(self) -> dict[str, dict[str, Any]]:
        units = {"x": "px", "y": "px"}
        return {
            f"{self.name}_{k}": {
                "source": "dklscope",
                "dtype": "number",
                "shape": [],
                **({"units": units[k]} if k in units else {}),
            }
            for k in DKL_FIELDS
        }


def dkl_campaign(
    agent: DKLAgent,
    x_motor: Any,
    y_motor: Any,
    detector: Any,
    n_steps: int | None = None,
    *,
    spectrum: str | None = None,
    scalar_field: str | None = None,
    geometry: StageGeometry | None = None,
    dwell: Any | None = None,
    readables: tuple[Any, ...] = (),
    prefix: str = "dkl",
    md: dict[str, Any] | None = None,
) -> Generator[Msg, Any, None]:
    """Measure ``n_steps`` points chosen by ``agent``, in one run; by default as many as the
    config's budget (``budget.seed_points + budget.steps`` told, counting what the agent was
    told before). Either way the run ends early once ``stop.target`` is reached or no
    candidate is left (`DKLAgent.stop_reason`, logged).

    ``x_motor``, ``y_motor``: movables; ``geometry`` maps the agent's pixels to their
    positions (default: the agent's own `geometry`, which is motors in pixels unless given).
    ``detector``: triggered, then read with the motors and ``readables`` into each event;
    ``dwell`` (a movable, e.g. the detector's ``acquire_time``, seconds) is set to the config's
    ``dwell_s`` at the start when given.
    The scalar is ``float(reading[scalar_field])`` when ``scalar_field`` names a field of the
    reading; otherwise ``agent.scalarize`` of the spectrum field ``spectrum`` (default: the
    reading's only one-dimensional array field). The agent is told each scalar before it is
    asked for the next point; a NaN scalar is recorded and never fitted.
    """
    if n_steps is not None and n_steps < 0:
        raise ValueError(f"dkl_campaign: n_steps must be >= 0, got {n_steps}")
    if spectrum is not None and scalar_field is not None:
        raise ValueError("dkl_campaign: give spectrum or scalar_field, not both")
    geometry = geometry or agent.geometry
    names = [str(getattr(d, "name", d)) for d in (x_motor, y_motor)]
    dkl = DecisionReadable(prefix)
    _md = {
        "plan_name": "dkl_campaign",
        "detectors": [str(getattr(detector, "name", detector))],
        "motors": names,
        "num_points": n_steps,
        "plan_args": {"n_steps": n_steps, "spectrum": spectrum, "scalar_field": scalar_field},
        "dwell_s": agent.config.dwell_s if dwell is not None else None,
        "hints": {"dimensions": [([names[0]], "primary"), ([names[1]], "primary")]},
        "dklscope": {
            "config": agent.config.to_dict(),
            "overview_shape": list(agent.overview.shape),
            "n_candidates": len(agent.positions),
            "geometry": {
                "origin_x": geometry.origin_x,
                "origin_y": geometry.origin_y,
                "scale_x": geometry.scale_x,
                "scale_y": geometry.scale_y,
            },
            "prefix": prefix,
        },
        **(md or {}),
    }

    @bpp.stage_decorator([detector, x_motor, y_motor])
    @bpp.run_decorator(md=_md)
    def inner() -> Generator[Msg, Any, None]:
        if dwell is not None:
            yield from bps.mv(dwell, agent.config.dwell_s)
        for _ in range(n_steps) if n_steps is not None else itertools.count():
            if (reason := agent.stop_reason(budget=n_steps is None)) is not None:
                log.info("dkl_campaign stops: %s", reason)
                break
            before = len(agent.decisions)
            if len(agent.ask(1)) == 0:
                break  # every candidate asked (some not told)
            decision = agent.decisions[before]
            mx, my = geometry.to_motor(decision.x, decision.y)
            yield from bps.mv(x_motor, mx, y_motor, my)
            yield from bps.trigger(detector, wait=True)
            yield from bps.create("primary")
            reading = yield from bps.read(detector)
            for device in (x_motor, y_motor, *readables):
                yield from bps.read(device)
            value = agent.scalar_from(
                {name: r["value"] for name, r in reading.items()},
                spectrum=spectrum,
                scalar_field=scalar_field,
            )
            dkl.update(decision, value)
            yield from bps.read(dkl)
            yield from bps.save()
            agent.tell(decision.x, decision.y, value)
            yield from bps.checkpoint()

    return (yield from inner())
