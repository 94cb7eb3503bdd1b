"""How a campaign runs: its ``budget:``, ``dose:`` and ``stop:`` limits and its ``runner:``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .errors import ADDRESS, check


@dataclass(frozen=True)
class BudgetConfig:
    """How much a campaign may measure; it stops at the first limit reached."""

    seed_points: int = 10  # random measurements before the model takes over
    steps: int = 25  # measurements chosen by the policy
    wall_s: float | None = None  # seconds this run may take (a resumed run starts its own clock)
    dose_s: float | None = None  # summed exposure of every attempt, seconds (dose / beam current);
    #                             see `DoseConfig` for a dose in the instrument's own units

    def __post_init__(self) -> None:
        check(self.seed_points >= 2, "seed_points", f"must be >= 2, got {self.seed_points}")
        check(self.steps >= 0, "steps", f"must be >= 0, got {self.steps}")
        for key in ("wall_s", "dose_s"):
            value = getattr(self, key)
            check(value is None or value > 0, key, f"must be > 0, got {value}")


@dataclass(frozen=True)
class DoseConfig:
    """How much dose the specimen may take, in the instrument's ``dose_units`` (its description,
    protocol 1.2: e.g. ``"s"`` of exposure, ``"e-"``). Enforced before every move, never after:
    a point whose dose (``dwell_s`` x the described ``dose_per_s``) exceeds ``per_point`` is
    refused (the campaign does not start), and the campaign stops, journaled and resumable
    only into the same stop, before the measurement that would take its dose over ``total``.
    Every attempt counts, failed ones too. Unlike ``budget.dose_s`` (seconds of exposure,
    whatever the instrument), this needs an instrument that accounts dose."""

    per_point: float | None = None  # the most one measurement may deliver (dose_units)
    total: float | None = None  # the most the whole campaign may deliver (dose_units)

    def __post_init__(self) -> None:
        for key in ("per_point", "total"):
            value = getattr(self, key)
            check(
                value is None or (math.isfinite(value) and value > 0),
                key,
                f"must be a finite number > 0 (in the instrument's dose units), got {value}",
            )

    @property
    def limited(self) -> bool:
        """Whether either limit is set."""
        return self.per_point is not None or self.total is not None


@dataclass(frozen=True)
class StopConfig:
    """Stop early once the campaign has found what it was looking for."""

    target: float | None = None  # a measured scalar at least this large (scalar units)
    max_std: float | None = None  # the model's largest predictive std over unmeasured candidates
    #                               below this (scalar units): nothing left worth learning

    def __post_init__(self) -> None:
        check(
            self.max_std is None or self.max_std > 0,
            "max_std",
            f"must be > 0, got {self.max_std}",
        )


@dataclass(frozen=True)
class RunnerConfig:
    """How the campaign drives the instrument."""

    pipeline: bool = True  # choose the next point while the instrument measures this one
    on_failure: Literal["retry", "skip", "stop"] = "retry"  # a failed measurement (timeout,
    #   NaN or saturated spectrum): measure it again up to `retries` times, then skip; skip it
    #   at once (kept in the journal, marked failed); or stop the campaign
    retries: int = 2  # with on_failure: retry
    drift_every: int = 0  # re-acquire the overview every this many measurements and correct
    #                       positions by its shift against the first (0: never)
    checkpoint_every: int = 10  # keep the model's state every this many decisions (the newest
    #                             is always kept, for --resume)
    publish: str | None = None  # tcp://host:port to publish progress events on (ZeroMQ PUB)
    control: str | None = None  # tcp://host:port to take pause/resume/stop requests on

    def __post_init__(self) -> None:
        check(self.retries >= 0, "retries", f"must be >= 0, got {self.retries}")
        check(self.drift_every >= 0, "drift_every", f"must be >= 0, got {self.drift_every}")
        check(
            self.checkpoint_every >= 0,
            "checkpoint_every",
            f"must be >= 0, got {self.checkpoint_every}",
        )
        for key in ("publish", "control"):
            address = getattr(self, key)
            check(
                address is None or ADDRESS.fullmatch(address) is not None,
                key,
                f"must look like tcp://host:port, got {address!r}",
            )
