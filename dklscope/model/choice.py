"""Automatic model choice: fit several surrogate models, score each by its leave-one-out
predictive density on the measured data, and use the reference model unless another one
predicts clearly better.

`AutoLearner` holds one learner per candidate model (by name); the first is the *reference*.
At every fit it fits them all (each warm-started from its own last fit) and scores each by the
mean closed-form leave-one-out log predictive density per measured point (`dklscope.model.loo`). It
returns the model of the highest score if that beats the reference's by more than
`SE_MARGIN` standard errors of the paired pointwise difference, and the reference's otherwise.
`last_record` says what was scored, the stacking weights, the choice and the chosen model's
LOO calibration, for the campaign's journal.

Choosing the model that best predicts each measured point from the others is model choice by
predictive likelihood (Vehtari, Gelman & Gabry 2017, "Practical Bayesian model evaluation using
leave-one-out cross-validation and WAIC", §5.2: the difference of two models' expected log
predictive densities and its standard error ``sqrt(n var(dᵢ))`` from the pointwise differences
``dᵢ``); a difference within two standard errors is noise, and the reference stays. This is
what keeps a campaign safe while few points are measured: a structure model that happens to
explain three or five seed points is not trusted with the policy until the points show it
(on the BEPS replay, picking the best score outright sent EI into one patch and lost to random
sampling). The stacking weights (Yao, Vehtari, Simpson & Gelman 2018, "Using stacking to
average Bayesian predictive distributions") say how a combination would weigh the candidates,
and are journaled as a diagnostic.

Closed-form LOO holds the hyperparameters fixed, so it favours a model whose many trained
weights follow the measured points (a neural feature extractor) a little; the candidates of
the default list are GPs with a handful of hyperparameters each, for which the bias is small.
Below `MIN_POINTS` measurements the scores say little, and the reference is used.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from .dkl import members
from .loo import calibration, leave_one_out
from .training import DKLLearner

MIN_POINTS = 8  # measurements below which the reference is used without scoring
SE_MARGIN = 2.0  # standard errors by which a candidate must beat the reference to be used


def choose(log_density: Tensor, margin: float = SE_MARGIN) -> int:
    """The index of the model to use, from the LOO log densities ``log_density`` (``n x M``:
    point i under model m; model 0 is the reference): the best mean if its pointwise
    differences to the reference have a mean above ``margin`` standard errors, else 0."""
    n = log_density.shape[0]
    best = int(torch.argmax(log_density.mean(0)))
    if best == 0 or n < max(MIN_POINTS, 2):
        return 0
    d = log_density[:, best] - log_density[:, 0]
    return best if float(d.mean()) > margin * float(d.std() / n**0.5) else 0


def stacking_weights(log_density: Tensor, iterations: int = 200) -> Tensor:
    """The weights ``w`` (``(M,)``, on the simplex) that maximise ``Σᵢ log Σₘ wₘ pᵢₘ`` for the
    LOO predictive densities ``log_density`` (``n x M``: point i under model m), by the EM
    fixed point ``wₘ ← mean_i(wₘ pᵢₘ / Σₖ wₖ pᵢₖ)``, which increases the objective at every
    iteration (Yao et al. 2018, §3)."""
    m = log_density.shape[1]
    w = torch.full((m,), 1.0 / m, dtype=log_density.dtype)
    shifted = log_density - log_density.max(dim=1, keepdim=True).values  # per point: no overflow
    p = shifted.exp()
    for _ in range(iterations):
        mix = p * w
        w = (mix / mix.sum(1, keepdim=True)).mean(0)
    return w


class AutoLearner:
    """Fits every learner of ``learners`` (name -> a learner with `DKLLearner`'s interface; the
    first is the reference) to the same data and returns the model that `choose` picks by
    their LOO densities. ``seed`` seeds the subset LOO draws above
    `dklscope.model.loo.MAX_EXACT` points. The process' random state is untouched."""

    def __init__(self, learners: Mapping[str, DKLLearner], *, seed: int = 0) -> None:
        if not learners:
            raise ValueError("AutoLearner needs at least one candidate learner")
        self.learners = dict(learners)
        self._generator = torch.Generator().manual_seed(seed)
        self.last_record: dict[str, Any] | None = None

    def fit(self, X: Tensor, Y: Tensor) -> Any:
        """The chosen model of these data (``X`` ``n x d``, ``Y`` ``n`` or ``n x m``; the first
        output's scores decide); `last_record` describes the choice."""
        fitted = {name: learner.fit(X, Y) for name, learner in self.learners.items()}
        scalar = {name: members(model)[0] for name, model in fitted.items()}
        names = list(fitted)
        loos = {name: leave_one_out(scalar[name], self._generator) for name in names}
        densities = torch.stack([loos[name].log_density for name in names], dim=1)
        scores = densities.mean(0)
        n = densities.shape[0]
        chosen = names[choose(densities)]
        weights = stacking_weights(densities) if n >= 2 else torch.ones(len(names)) / len(names)
        self.last_record = {
            "scores": {name: float(s) for name, s in zip(names, scores, strict=True)},
            "weights": {name: float(w) for name, w in zip(names, weights, strict=True)},
            "chosen": chosen,
            **calibration(loos[chosen]).to_dict(),
        }
        return fitted[chosen]

    def reset(self) -> None:
        """Forget every candidate's weights: the next fit starts afresh."""
        for learner in self.learners.values():
            learner.reset()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Within this block, fits only condition on their data (see `DKLLearner.frozen`)."""
        with contextlib.ExitStack() as stack:
            for learner in self.learners.values():
                stack.enter_context(learner.frozen())
            yield

    def state_bytes(self) -> bytes:
        """Every candidate's state and the LOO subset generator's, serialised."""
        buffer = io.BytesIO()
        torch.save(
            {
                "learners": {name: lr.state_bytes() for name, lr in self.learners.items()},
                "generator": self._generator.get_state(),
            },
            buffer,
        )
        return buffer.getvalue()

    def load_state_bytes(self, data: bytes) -> None:
        """Continue from the state `state_bytes` wrote."""
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        for name, learner in self.learners.items():
            learner.load_state_bytes(saved["learners"][name])
        self._generator.set_state(saved["generator"])
