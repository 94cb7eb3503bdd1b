"""The baseline policies: random choice, the serpentine raster scan and a GP on the probe
coordinates."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from botorch.acquisition import analytic
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from .base import (
    BATCH_SIZE,
    Choice,
    PolicyState,
    analytic_values,
    best_unmeasured,
    free_indices,
    require_incumbent,
    require_one_point,
)

log = logging.getLogger(__name__)


class RandomChoice:
    """A baseline: ``q`` distinct candidates drawn uniformly among those not yet measured."""

    needs_model = False

    def choose(self, state: PolicyState) -> Choice:
        free = free_indices(state.measured)
        picks = state.rng.choice(free, size=min(state.q, free.size), replace=False)
        return Choice(tuple(int(i) for i in picks))


def serpentine_order(positions: np.ndarray) -> np.ndarray:
    """Candidate indices in serpentine raster order: rows of increasing y, each scanned in x,
    rightwards on the first row, leftwards on the next, and so on. ``positions`` is ``N x 2``
    (x, y); returns ``(N,)``."""
    x, y = positions[:, 0], positions[:, 1]
    row = np.unique(y, return_inverse=True)[1].reshape(-1)
    along = np.where(row % 2 == 0, x, -x)
    return np.lexsort((along, row))


class RasterScan:
    """A baseline: the next ``q`` unmeasured candidates in serpentine raster order
    (`serpentine_order`), as a scanning instrument would visit them."""

    needs_model = False

    def choose(self, state: PolicyState) -> Choice:
        order = serpentine_order(np.asarray(state.positions))
        left = order[~np.asarray(state.measured, dtype=bool)[order]]
        if left.size == 0:
            raise ValueError("every candidate is already measured")
        return Choice(tuple(int(i) for i in left[: state.q]))


class CoordinateGP:
    """A baseline that ignores structure: a BoTorch ``SingleTaskGP`` (Matérn 5/2 with ARD) on
    the probe positions (x, y), scaled to the unit square, fitted by maximum likelihood to the
    measured scalars; chooses by analytic expected improvement over ``best_f``. The value is
    EI in the scalar's units. Each fit starts from the last one's hyperparameters and runs at
    most ``max_iterations`` L-BFGS iterations."""

    needs_model = False

    def __init__(self, max_iterations: int = 50, batch_size: int = BATCH_SIZE) -> None:
        self.max_iterations, self.batch_size = max_iterations, batch_size
        self._hyperparameters: dict[str, Tensor] | None = None

    def fit(self, state: PolicyState) -> SingleTaskGP:
        """The coordinate GP fitted to the measurements in ``state``."""
        positions = torch.as_tensor(np.asarray(state.positions), dtype=torch.float64)
        lo, hi = positions.min(0).values, positions.max(0).values
        bounds = torch.stack([lo, torch.maximum(hi, lo + 1)])
        X = positions[torch.as_tensor(state.measured_indices, dtype=torch.long)]
        Y = torch.as_tensor(state.scalars, dtype=torch.float64).reshape(-1, 1)
        gp = SingleTaskGP(
            X, Y, input_transform=Normalize(d=2, bounds=bounds), outcome_transform=Standardize(1)
        )
        if self._hyperparameters is not None:  # warm start from the last fit
            gp.load_state_dict(self._hyperparameters, strict=False)
        try:  # one attempt: later ones would draw from the global random state
            fit_gpytorch_mll(
                ExactMarginalLogLikelihood(gp.likelihood, gp),
                max_attempts=1,
                optimizer_kwargs={"options": {"maxiter": self.max_iterations}},
            )
        except ModelFittingError as exc:
            log.warning("coordinate GP: fit failed (%s); keeping its initial hyperparameters", exc)
        gp.eval()
        self._hyperparameters = {
            k: v.detach().clone()
            for k, v in gp.state_dict().items()
            if not k.startswith(("outcome_transform.", "input_transform."))
        }
        return gp

    def choose(self, state: PolicyState) -> Choice:
        require_one_point(state, self)
        best_f = require_incumbent(state, self)
        gp = self.fit(state)
        positions = torch.as_tensor(np.asarray(state.positions), dtype=torch.float64)
        acquisition = analytic.LogExpectedImprovement(gp, best_f=best_f)
        scores = analytic_values(acquisition, positions, self.batch_size)
        (index,) = best_unmeasured(scores, state.measured)
        return Choice((index,), (math.exp(float(scores[index])),))
