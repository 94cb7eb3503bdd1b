"""Batches of q points by Monte Carlo acquisition: greedy sequential q-LogEI and q-UCB."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from botorch.acquisition import analytic
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.acquisition.monte_carlo import qUpperConfidenceBound
from botorch.models.model import Model
from botorch.sampling.normal import SobolQMCNormalSampler

from .analytic import beta_schedule
from .base import (
    Choice,
    PolicyState,
    analytic_values,
    best_unmeasured,
    require_incumbent,
    require_model,
)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


class _Batch:
    """Greedy sequential batches: the first point maximises the MC acquisition function alone,
    each next one the acquisition of the batch so far plus it (BoTorch's pending points). Only
    a shortlist of the ``shortlist`` (at least q) best unmeasured candidates by the analytic
    q = 1 counterpart is scored by Monte Carlo, so a decision stays fast on many candidates.
    ``values[i]`` is the acquisition value of the first i + 1 points together."""

    needs_model = True

    def __init__(self, mc_samples: int = 256, shortlist: int = 128, batch_size: int = 32) -> None:
        self.mc_samples, self.shortlist, self.batch_size = mc_samples, shortlist, batch_size

    def _analytic(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        raise NotImplementedError

    def _mc(
        self, model: Model, state: PolicyState, sampler: SobolQMCNormalSampler
    ) -> AcquisitionFunction:
        raise NotImplementedError

    def _value(self, score: float) -> float:
        return score

    def choose(self, state: PolicyState) -> Choice:
        model = require_model(state, self)
        ranking = analytic_values(self._analytic(model, state), state.candidates)
        shortlist = best_unmeasured(ranking, state.measured, max(self.shortlist, state.q))
        sampler = SobolQMCNormalSampler(torch.Size([self.mc_samples]), seed=_seed(state.rng))
        acquisition = self._mc(model, state, sampler)
        chosen: list[int] = []
        values: list[float] = []
        with torch.no_grad():
            for _ in range(min(state.q, len(shortlist))):
                pending = state.candidates[chosen] if chosen else None
                acquisition.set_X_pending(pending)
                left = [i for i in shortlist if i not in chosen]
                scores = analytic_values(acquisition, state.candidates[left], self.batch_size)
                best = int(torch.argmax(torch.nan_to_num(scores, nan=-math.inf)))
                chosen.append(left[best])
                values.append(self._value(float(scores[best])))
        return Choice(tuple(chosen), tuple(values))


class QLogExpectedImprovement(_Batch):
    """Batch expected improvement over ``best_f``: BoTorch's `qLogExpectedImprovement`
    (the smoothed log of qEI), shortlisted by analytic LogEI; values are qEI, scalar units."""

    def _analytic(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.LogExpectedImprovement(model, best_f=require_incumbent(state, self))

    def _mc(
        self, model: Model, state: PolicyState, sampler: SobolQMCNormalSampler
    ) -> AcquisitionFunction:
        return qLogExpectedImprovement(model, best_f=state.best_f, sampler=sampler)

    def _value(self, score: float) -> float:
        return math.exp(score)


class QUpperConfidenceBound(_Batch):
    """Batch upper confidence bound: BoTorch's `qUpperConfidenceBound`, E[max_i μ_i +
    sqrt(β π / 2) |Y_i - μ_i|], which for one point is μ + sqrt(β) σ as in
    `UpperConfidenceBound` (same β convention and schedule); shortlisted by analytic UCB."""

    def __init__(
        self,
        beta: float | None = None,
        schedule: str | None = None,
        decay: float | None = None,
        betas: Sequence[float] | None = None,
        mc_samples: int = 256,
        shortlist: int = 128,
        batch_size: int = 32,
    ) -> None:
        super().__init__(mc_samples, shortlist, batch_size)
        self.schedule = beta_schedule(beta, schedule, decay, betas)

    def _analytic(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.UpperConfidenceBound(model, beta=self.schedule.at(state.step))

    def _mc(
        self, model: Model, state: PolicyState, sampler: SobolQMCNormalSampler
    ) -> AcquisitionFunction:
        return qUpperConfidenceBound(model, beta=self.schedule.at(state.step), sampler=sampler)
