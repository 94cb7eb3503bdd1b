"""The analytic single-point policies: expected improvement, probability of improvement, the
upper confidence bound with its `BetaSchedule`, and maximum variance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from botorch.acquisition import analytic
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.models.model import Model
from torch import Tensor

from .base import (
    BATCH_SIZE,
    Choice,
    PolicyState,
    analytic_values,
    best_unmeasured,
    require_incumbent,
    require_model,
    require_one_point,
)


class _Analytic:
    """Ranks every unmeasured candidate by a BoTorch analytic acquisition function."""

    needs_model = True

    def __init__(self, batch_size: int = BATCH_SIZE) -> None:
        self.batch_size = batch_size

    def _acquisition(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        raise NotImplementedError

    def _value(self, score: float) -> float:
        return score

    def scores(self, state: PolicyState) -> Tensor:
        """The ranking score of every candidate, shape ``(N,)`` (measured ones included)."""
        model = require_model(state, self)
        return analytic_values(self._acquisition(model, state), state.candidates, self.batch_size)

    def choose(self, state: PolicyState) -> Choice:
        require_one_point(state, self)
        scores = self.scores(state)
        (index,) = best_unmeasured(scores, state.measured)
        return Choice((index,), (self._value(float(scores[index])),))


class ExpectedImprovement(_Analytic):
    """Maximise expected improvement over the incumbent ``best_f`` (the best measured value).

    EI(x) = E[max(f(x) - best_f, 0)] under the posterior of the noise-free f. Ranked through
    BoTorch's `LogExpectedImprovement`, which stays finite where EI underflows to 0 (far below
    the incumbent), so the argmax is well defined on tens of thousands of candidates; the
    reported value is EI itself, in the scalar's units.
    """

    def _acquisition(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.LogExpectedImprovement(model, best_f=require_incumbent(state, self))

    def _value(self, score: float) -> float:
        return math.exp(score)


class ProbabilityOfImprovement(_Analytic):
    """Maximise PI(x) = P(f(x) > best_f) = Φ((μ(x) - best_f) / σ(x)), ranked through BoTorch's
    `LogProbabilityOfImprovement` (finite where PI underflows); the value is PI, in [0, 1]."""

    def _acquisition(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.LogProbabilityOfImprovement(model, best_f=require_incumbent(state, self))

    def _value(self, score: float) -> float:
        return math.exp(score)


@dataclass(frozen=True)
class BetaSchedule:
    """β of the upper confidence bound at each policy step t (0, 1, 2, ...).

    ``constant``: β_t = ``beta``; ``annealed``: β_t = ``beta * decay**t``; ``list``: β_t =
    ``betas[t]``, the last value holding after the list ends. β is dimensionless and multiplies
    the variance: UCB = mean + sqrt(β) std.
    """

    beta: float = 4.0
    schedule: str = "constant"  # constant, annealed or list
    decay: float = 0.95
    betas: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "annealed", "list"):
            raise ValueError(f"schedule must be constant, annealed or list, not {self.schedule!r}")
        if self.schedule == "list" and not self.betas:
            raise ValueError("schedule 'list' needs betas")
        if min(self.betas or (self.beta,)) <= 0 or self.beta <= 0:
            raise ValueError("beta must be > 0")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")

    def at(self, step: int) -> float:
        """β at policy step ``step`` (>= 0)."""
        if self.schedule == "annealed":
            return self.beta * self.decay**step
        if self.schedule == "list":
            assert self.betas is not None
            return self.betas[min(step, len(self.betas) - 1)]
        return self.beta


def beta_schedule(
    beta: float | None, schedule: str | None, decay: float | None, betas: Sequence[float] | None
) -> BetaSchedule:
    return BetaSchedule(
        beta=4.0 if beta is None else beta,
        schedule=schedule or "constant",
        decay=0.95 if decay is None else decay,
        betas=None if betas is None else tuple(betas),
    )


class UpperConfidenceBound(_Analytic):
    """Maximise UCB_t(x) = μ(x) + sqrt(β_t) σ(x), BoTorch's convention (β multiplies the
    variance: the default β = 4 is two standard deviations), with β_t from a `BetaSchedule`
    at the policy step. The value is UCB in the scalar's units."""

    def __init__(
        self,
        beta: float | None = None,
        schedule: str | None = None,
        decay: float | None = None,
        betas: Sequence[float] | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        super().__init__(batch_size)
        self.schedule = beta_schedule(beta, schedule, decay, betas)

    def _acquisition(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.UpperConfidenceBound(model, beta=self.schedule.at(state.step))


class MaximumVariance(_Analytic):
    """Pure exploration: the largest posterior standard deviation σ(x) of the noise-free f
    (BoTorch's `PosteriorStandardDeviation`); the value is σ in the scalar's units."""

    def _acquisition(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.PosteriorStandardDeviation(model)
