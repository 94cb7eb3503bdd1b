"""`DKLAgent`: dklscope's model and policy as a tell/ask agent, for Bluesky.

The agent holds what a `Campaign` decides with (the candidate patches of an overview, their
probe positions, the DKL learner, the policy and the scalarizer, all built from a `Config` by
the same functions the campaign uses), but none of its instrument, journal or loop: the
caller measures. ``ask(n)`` returns the next ``n`` probe positions (overview pixels; the
first ``budget.seed_points`` at random, then the policy's on a freshly fitted model) and
``tell(x, y, value)`` reports the scalar measured at one of them. A Bluesky plan
(`dklscope.bluesky.plans.dkl_campaign`) moves, triggers, reads and tells in between.

It follows bluesky-adaptive's agent interface in spirit (``tell``/``ask``), and also offers
that package's 1.0 `Optimizer` protocol (``suggest``/``ingest``/``get_best_points``) for its
``optimize`` plans, with the motors' names as the suggestions' keys.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dklscope.campaign.resume import check_config_against
from dklscope.config import Config, ConfigError
from dklscope.drivers import InstrumentDescription
from dklscope.drivers.ophyd_async.backend import StageGeometry
from dklscope.embeddings.patches import grid_patches
from dklscope.model.dkl import members, posterior_mean_std
from dklscope.model.family import Learner, build_learner, model_inputs
from dklscope.model.policies import Policy, PolicyState, build_policy, decide
from dklscope.model.scalarizers import Scalarizer, build_scalarizer, check_scalarizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentDecision:
    """One point the agent asked for. ``x``, ``y``: overview pixels (column, row) of candidate
    ``candidate``; ``kind``: ``seed`` (random) or ``policy``; the policy's acquisition value
    and the model's predicted mean and standard deviation there (scalar units; NaN for a seed
    point); ``latency_s``: how long the decision took, seconds."""

    number: int
    kind: str
    candidate: int
    x: float
    y: float
    acquisition_value: float = math.nan
    predicted_mean: float = math.nan
    predicted_std: float = math.nan
    latency_s: float = 0.0


class DKLAgent:
    """A DKL campaign's decisions without its instrument: ``ask`` where, ``tell`` what.

    ``config`` is a campaign config (its ``patches``, ``model``, ``policy``, ``scalarizer``,
    ``budget``, ``stop.target``, ``dwell_s`` and ``seed`` are used; ``instrument``,
    ``runner`` and ``predict`` are not: the agent learns the one scalar).
    ``overview`` ``(rows, cols)`` is the image whose patches are the candidates, one per
    ``patches.stride`` pixels. ``axis`` ``(channels,)`` is the spectral axis that `scalarize`
    reads spectra on (needed only for it). ``description`` (optional) is the instrument's:
    candidates outside its probe limits or inside a forbidden region are never asked for.
    ``policy``, ``scalarizer`` and ``learner`` replace the config's. An ``embedding:`` section
    is not supported here (train one with `dklscope.embeddings` and run a `Campaign`).

    For bluesky-adaptive's `Optimizer` protocol: ``names`` are the suggestions' keys for x and
    y (the motors' names), ``outcome`` the outcomes' key for the scalar, and ``geometry``
    maps pixels to motor positions (default: motors in pixels).
    """

    def __init__(
        self,
        config: Config,
        overview: np.ndarray,
        *,
        axis: np.ndarray | None = None,
        description: InstrumentDescription | None = None,
        policy: Policy | None = None,
        scalarizer: Scalarizer | None = None,
        learner: Learner | None = None,
        names: tuple[str, str] = ("x", "y"),
        outcome: str = "scalar",
        geometry: StageGeometry | None = None,
    ) -> None:
        if config.embedding.kind != "none":
            raise ConfigError("embedding", "DKLAgent takes no embedding: remove the section")
        overview = np.asarray(overview, dtype=np.float64)
        if overview.ndim != 2:
            raise ValueError(f"overview: expected an image (rows, cols), got {overview.shape}")
        if description is not None:
            check_config_against(config, description)
            if overview.shape != description.overview_shape:
                raise ValueError(
                    f"overview: shape {overview.shape}, the instrument's is "
                    f"{description.overview_shape}"
                )
            axis = description.spectral_axis.values() if axis is None else axis
        elif config.patches.size > min(overview.shape):
            raise ConfigError(
                "patches.size", f"{config.patches.size} does not fit the overview {overview.shape}"
            )
        self.config, self.overview, self.description = config, overview, description
        self.axis = None if axis is None else np.asarray(axis, dtype=np.float64)
        if self.axis is not None and scalarizer is None:
            check_scalarizer(config.scalarizer, self.axis, "")
        self.scalarizer: Scalarizer = scalarizer or build_scalarizer(config.scalarizer)
        self.patches = grid_patches(
            overview, config.patches.size, stride=config.patches.stride, edge=config.patches.edge
        )
        # As the campaign does: standardised with the whole overview's statistics.
        scaled = (self.patches.data - overview.mean()) / (overview.std() or 1.0)
        self.positions = np.stack([self.patches.cols, self.patches.rows], axis=1).astype(float)
        inputs, network = model_inputs(config.model, scaled, self.positions, None)
        self.candidates = inputs.tensor
        self.policy: Policy = policy or build_policy(config.policy)
        self.learner: Learner = learner or build_learner(
            config.model, inputs, network, seed=config.seed
        )
        self.names, self.outcome = names, outcome
        self.geometry = geometry or StageGeometry()
        self.decisions: list[AgentDecision] = []
        self.pending: list[int] = []  # asked, not yet told, in order
        self.told: list[tuple[int, float]] = []  # (candidate, value), in order
        self.taken = np.zeros(len(self.positions), dtype=bool)  # asked already, or unreachable
        if description is not None:
            self.taken |= np.array(
                [description.check_position(x, y) is not None for x, y in self.positions]
            )

    @classmethod
    def for_instrument(
        cls, config: Config, description: InstrumentDescription, overview: np.ndarray, **kw: Any
    ) -> DKLAgent:
        """An agent for the instrument ``description`` says, over its ``overview``: the config is
        checked against it (dwell, scalarizer window, patch size) and its limits respected."""
        return cls(config, overview, description=description, **kw)

    # -- ask and tell -------------------------------------------------------------------------

    def ask(self, n: int = 1) -> np.ndarray:
        """The next ``n`` probe positions, ``(k, 2)`` (x column, y row) overview pixels, ``k <=
        n`` (fewer only when no candidate is left); each is also in `decisions`. Positions
        asked and not yet told count as pending: never asked again, and the model conditions
        on them at its own prediction."""
        if n < 1:
            raise ValueError(f"ask: n must be >= 1, got {n}")
        chosen: list[AgentDecision] = []
        while len(chosen) < n and not self.taken.all():
            chosen += self._decide(n - len(chosen))
        return np.array([[d.x, d.y] for d in chosen], dtype=float).reshape(-1, 2)

    def tell(self, x: float, y: float, value: float) -> None:
        """The scalar ``value`` measured at ``(x, y)`` overview pixels, a candidate position
        (asked or not). NaN is kept (a failed measurement: never asked again, not fitted)."""
        index = self.candidate_at(x, y)
        if index in self.pending:
            self.pending.remove(index)
        self.taken[index] = True
        self.told.append((index, float(value)))

    def candidate_at(self, x: float, y: float) -> int:
        """The candidate at ``(x, y)`` overview pixels; a ValueError names the position when
        no candidate is nearer than half a stride (half a pixel at stride 1)."""
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"tell: position ({x}, {y}) is not finite")
        distance = np.hypot(self.positions[:, 0] - x, self.positions[:, 1] - y)
        index = int(np.argmin(distance))
        if distance[index] >= max(self.config.patches.stride, 1) / 2:  # ambiguous, or off
            raise ValueError(
                f"tell: ({x:g}, {y:g}) px is no candidate position (nearest: "
                f"({self.positions[index, 0]:g}, {self.positions[index, 1]:g}))"
            )
        return index

    def scalarize(self, spectrum: np.ndarray) -> float:
        """The config's scalarizer on one ``spectrum`` ``(channels,)`` on `axis`."""
        if self.axis is None:
            raise ValueError("scalarize: the agent has no spectral axis (give axis=)")
        spectrum = np.asarray(spectrum, dtype=np.float64)
        if spectrum.shape != self.axis.shape:
            raise ValueError(
                f"scalarize: spectrum of shape {spectrum.shape}, the axis has {self.axis.shape}"
            )
        return float(self.scalarizer(spectrum, self.axis))

    def scalar_from(
        self,
        fields: Mapping[str, Any],
        *,
        spectrum: str | None = None,
        scalar_field: str | None = None,
        where: str = "reading",
    ) -> float:
        """The scalar of one measurement's ``fields`` (name -> value, as in a Bluesky event or
        a reading's values): the field ``scalar_field``, or `scalarize` of the field
        ``spectrum`` (None: the only one-dimensional field). ``where`` names the fields in
        the errors."""
        if scalar_field is not None:
            if scalar_field not in fields:
                raise KeyError(
                    f"scalar_field {scalar_field!r} not in the {where}: {sorted(fields)}"
                )
            return float(fields[scalar_field])
        if spectrum is None:
            arrays = [k for k, v in fields.items() if np.ndim(v) == 1]
            if len(arrays) != 1:
                raise KeyError(
                    f"the {where} has {len(arrays)} one-dimensional fields {arrays}: name the "
                    "spectrum (spectrum=) or the scalar (scalar_field=)"
                )
            spectrum = arrays[0]
        if spectrum not in fields:
            raise KeyError(f"spectrum {spectrum!r} not in the {where}: {sorted(fields)}")
        return self.scalarize(np.asarray(fields[spectrum]))

    def best(self) -> tuple[float, float, float] | None:
        """``(x, y, value)`` of the largest finite value told, or None."""
        good = [(v, i) for i, v in self.told if math.isfinite(v)]
        if not good:
            return None
        value, index = max(good)
        return float(self.positions[index, 0]), float(self.positions[index, 1]), value

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """The model's predicted mean and standard deviation of the scalar at every candidate,
        each ``(N,)``, fitted to everything told (the learner's state restored afterwards)."""
        saved = self.learner.state_bytes()
        try:
            model = self._fit()
        finally:
            self.learner.load_state_bytes(saved)
        if model is None:
            raise ValueError("predict: fewer than 2 finite values told")
        return posterior_mean_std(model, self.candidates)

    def stop_reason(self, *, budget: bool = True) -> str | None:
        """Why the config says stop now, or None: ``stop.target`` reached, every candidate
        asked and told, or (with ``budget``) ``budget.seed_points + budget.steps`` values told.
        (``stop.max_std`` and the wall-clock and dose budgets are the runner's, not the
        agent's.)"""
        target, best = self.config.stop.target, self.best()
        if target is not None and best is not None and best[2] >= target:
            return f"target {target:g} reached: {best[2]:g} at ({best[0]:g}, {best[1]:g}) px"
        if self.taken.all() and not self.pending:
            return "every candidate measured"
        planned = self.config.budget.seed_points + self.config.budget.steps
        if budget and len(self.told) >= planned:
            return f"budget of {planned} measurements told"
        return None

    # -- bluesky-adaptive's Optimizer protocol --------------------------------------------------

    def should_stop(self) -> tuple[bool, str | None]:
        """bluesky-adaptive's stopping criterion: `stop_reason`, budget included."""
        reason = self.stop_reason()
        return reason is not None, reason

    def suggest(self, num_points: int | None = None) -> list[dict[str, Any]]:
        """``num_points`` (default 1) suggestions ``{names[0]: x, names[1]: y, "_id": k}``, the
        positions in motor units (`geometry`), ``_id`` the decision number."""
        start = len(self.decisions)
        self.ask(num_points or 1)
        suggestions = []
        for d in self.decisions[start:]:
            mx, my = self.geometry.to_motor(d.x, d.y)
            suggestions.append({self.names[0]: mx, self.names[1]: my, "_id": d.number})
        return suggestions

    def ingest(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Outcomes ``{"_id": k, outcome: value}`` of suggested points (or, without ``_id``,
        of any point with the motors' positions ``names``)."""
        for point in points:
            if self.outcome not in point:
                raise KeyError(f"ingest: a point has no {self.outcome!r}: {dict(point)}")
            if "_id" in point and point["_id"] is not None:
                number = int(point["_id"])
                if not 0 <= number < len(self.decisions):
                    raise KeyError(f"ingest: no suggestion has _id {point['_id']!r}")
                x, y = self.decisions[number].x, self.decisions[number].y
            else:
                x, y = self.geometry.to_pixels(point[self.names[0]], point[self.names[1]])
            self.tell(x, y, float(point[self.outcome]))

    def get_best_points(self) -> list[tuple[Any, dict[str, float], dict[str, float]]]:
        """``[(_id, parameters, outcomes)]`` of the best finite value told (empty if none)."""
        best = self.best()
        if best is None:
            return []
        x, y, value = best
        index = self.candidate_at(x, y)
        number = next((d.number for d in self.decisions if d.candidate == index), None)
        mx, my = self.geometry.to_motor(x, y)
        return [(number, {self.names[0]: mx, self.names[1]: my}, {self.outcome: value})]

    # -- deciding -------------------------------------------------------------------------------

    def _decide(self, n: int) -> list[AgentDecision]:
        """One decision: a seed point, or the policy's (up to ``n`` of its ``q``)."""
        number = len(self.decisions)
        started = time.perf_counter()
        rng = np.random.default_rng([self.config.seed, number])
        free = np.flatnonzero(~self.taken)
        model = None
        if number >= self.config.budget.seed_points:
            model = self._fit() if self.policy.needs_model else None
            if self.policy.needs_model and model is None:
                log.info("decision %d: fewer than 2 finite values told, a random point", number)
        if number < self.config.budget.seed_points or (self.policy.needs_model and model is None):
            picks = [(int(rng.choice(free)), math.nan, math.nan, math.nan)]
            kind = "seed"
        else:
            kind = "policy"
            pending = np.array(self.pending, dtype=np.intp)
            if model is not None and len(pending):
                model = model.condition_on_pending(self.candidates[pending])
            state = self._state(model, rng, pending)
            picks = [
                (d.index, d.acquisition_value, d.predicted_mean, d.predicted_std)
                for d in decide(self.policy, state)
            ][:n]
        latency = time.perf_counter() - started
        made = [
            AgentDecision(
                number=number + k,
                kind=kind,
                candidate=index,
                x=float(self.positions[index, 0]),
                y=float(self.positions[index, 1]),
                acquisition_value=float(value),
                predicted_mean=float(mean),
                predicted_std=float(std),
                latency_s=latency,
            )
            for k, (index, value, mean, std) in enumerate(picks)
        ]
        for d in made:
            self.taken[d.candidate] = True
            self.pending.append(d.candidate)
        self.decisions += made
        return made

    def _fit(self) -> Any:
        """The scalar's model fitted to every finite value told, or None with fewer than 2."""
        good = [(i, v) for i, v in self.told if math.isfinite(v)]
        if len(good) < 2:
            return None
        X = self.candidates[[i for i, _ in good]]
        Y = torch.tensor([[v] for _, v in good], dtype=torch.float64)
        return members(self.learner.fit(X, Y))[0]

    def _state(self, model: Any, rng: np.random.Generator, pending: np.ndarray) -> PolicyState:
        good = [(i, v) for i, v in self.told if math.isfinite(v)]
        scalars = np.array([v for _, v in good], dtype=np.float64)
        return PolicyState(
            model=model,
            candidates=self.candidates,
            positions=self.positions,
            measured=self.taken.copy(),
            scalars=scalars,
            measured_indices=np.array([i for i, _ in good], dtype=np.intp),
            best_f=float(scalars.max()) if len(scalars) else -math.inf,
            step=sum(d.kind == "policy" for d in self.decisions),
            rng=rng,
            q=self.config.policy.q,
            pending=pending,
        )
