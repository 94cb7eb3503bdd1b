"""Acquisition policies: given the model and what was measured, choose the next candidate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.models.model import Model
from torch import Tensor

from .dkl import posterior_mean_std


@dataclass(frozen=True)
class Decision:
    """The chosen candidate, its acquisition value and the model's prediction there
    (NaN where the policy used no model)."""

    index: int
    acquisition_value: float = math.nan
    predicted_mean: float = math.nan
    predicted_std: float = math.nan


class Policy(Protocol):
    """Chooses one of the candidates not yet measured.

    ``candidates`` is ``N x d``; ``measured`` is a boolean mask of shape ``(N,)``; ``best_f`` is
    the best scalar measured so far; ``model`` is None when ``needs_model`` is False.
    """

    needs_model: bool

    def choose(
        self,
        model: Model | None,
        candidates: Tensor,
        measured: np.ndarray,
        best_f: float,
        rng: np.random.Generator,
    ) -> Decision: ...


class ExpectedImprovement:
    """Maximise expected improvement over the incumbent ``best_f`` (the best measured value).

    EI(x) = E[max(f(x) - best_f, 0)] under the model's posterior of the noise-free f. Ranked
    through BoTorch's `LogExpectedImprovement`, which stays finite where EI underflows to 0
    (far from the incumbent), so the argmax is well defined on tens of thousands of candidates;
    the reported ``acquisition_value`` is EI itself.
    """

    needs_model = True

    def __init__(self, batch_size: int = 4096) -> None:
        self.batch_size = batch_size

    def choose(
        self,
        model: Model | None,
        candidates: Tensor,
        measured: np.ndarray,
        best_f: float,
        rng: np.random.Generator,
    ) -> Decision:
        assert model is not None
        acquisition = LogExpectedImprovement(model, best_f=best_f)
        with torch.no_grad():
            log_ei = torch.cat(
                [
                    acquisition(candidates[s : s + self.batch_size].unsqueeze(-2))
                    for s in range(0, candidates.shape[0], self.batch_size)
                ]
            )
        log_ei[torch.as_tensor(measured, device=log_ei.device)] = -math.inf
        index = int(torch.argmax(log_ei))
        mean, std = posterior_mean_std(model, candidates[index : index + 1])
        return Decision(index, math.exp(float(log_ei[index])), float(mean[0]), float(std[0]))


class RandomChoice:
    """A baseline: a uniformly random candidate among those not yet measured."""

    needs_model = False

    def choose(
        self,
        model: Model | None,
        candidates: Tensor,
        measured: np.ndarray,
        best_f: float,
        rng: np.random.Generator,
    ) -> Decision:
        return Decision(int(rng.choice(np.flatnonzero(~measured))))


POLICIES: dict[str, type] = {"ei": ExpectedImprovement, "random": RandomChoice}
