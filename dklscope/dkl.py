"""Deep kernel learning: an exact Gaussian process on the features of a neural network.

`DKLModel` is the model (a BoTorch `Model`, so any BoTorch acquisition function applies);
`DKLLearner` trains it as data arrive, warm-starting each fit from the previous weights;
`posterior_mean_std` predicts over many candidates in bounded memory.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Literal

import gpytorch
import numpy as np
import torch
from botorch.models.gpytorch import GPyTorchModel
from botorch.models.transforms.outcome import Standardize
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor, nn

Kernel = Literal["rbf", "matern52"]


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """A fully connected feature extractor ``in_dim -> hidden... -> out_dim`` with ReLUs."""
    widths = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


class DKLModel(gpytorch.models.ExactGP, GPyTorchModel):
    """``y = f(g(x)) + noise`` with ``f ~ GP(c, s * k(., .))`` and ``g`` a neural network.

    Args:
        train_X: ``n x d`` inputs (flattened patches).
        train_Y: ``n x 1`` observations; standardised inside, reported back in their units.
        feature_extractor: maps ``... x d`` to ``... x k``.
        kernel: the base kernel ``k`` on the ``k`` features, with one lengthscale per feature.
    """

    _num_outputs = 1

    def __init__(
        self, train_X: Tensor, train_Y: Tensor, feature_extractor: nn.Module, kernel: Kernel = "rbf"
    ) -> None:
        outcome_transform = Standardize(m=1)
        standardized_Y, _ = outcome_transform(train_Y)
        likelihood = GaussianLikelihood(noise_constraint=GreaterThan(1e-4))
        super().__init__(train_X, standardized_Y.squeeze(-1), likelihood)
        n_features = _output_dim(feature_extractor, train_X)
        base = (
            RBFKernel(ard_num_dims=n_features)
            if kernel == "rbf"
            else MaternKernel(nu=2.5, ard_num_dims=n_features)
        )
        self.feature_extractor = feature_extractor
        self.mean_module = ConstantMean()
        self.covar_module = ScaleKernel(base)
        self.outcome_transform = outcome_transform
        self.to(train_X)

    def forward(self, x: Tensor) -> MultivariateNormal:
        z = self.feature_extractor(x)
        return MultivariateNormal(self.mean_module(z), self.covar_module(z))


def _output_dim(module: nn.Module, train_X: Tensor) -> int:
    with torch.no_grad():
        return int(module(train_X[:1]).shape[-1])


def train_exact_mll(model: DKLModel, iterations: int, learning_rate: float) -> list[float]:
    """Maximise the exact marginal log likelihood with Adam; returns the loss per iteration.

    Leaves the model in eval mode.
    """
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    model.train()
    losses = []
    inputs, targets = model.train_inputs[0], model.train_targets
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = -mll(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


class DKLLearner:
    """Fits a `DKLModel` to the data seen so far, each fit warm-started from the last.

    The first fit runs ``first_fit_iterations`` Adam steps from a fresh network initialised
    from ``seed``; later fits start from the previous weights and hyperparameters and run
    ``refit_iterations`` steps. The process' random state is left untouched.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        hidden: Sequence[int] = (64, 32),
        feature_dim: int = 2,
        kernel: Kernel = "rbf",
        first_fit_iterations: int = 200,
        refit_iterations: int = 50,
        learning_rate: float = 0.01,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self._initial_network = mlp(in_dim, hidden, feature_dim).to(dtype=dtype, device=device)
        self.kernel: Kernel = kernel
        self.first_fit_iterations = first_fit_iterations
        self.refit_iterations = refit_iterations
        self.learning_rate = learning_rate
        self.dtype, self.device = dtype, torch.device(device)
        self._state: dict[str, Tensor] | None = None
        self.last_losses: list[float] = []

    def fit(self, X: Tensor, Y: Tensor) -> DKLModel:
        """A model of exactly these data: ``X`` is ``n x d``, ``Y`` is ``n`` or ``n x 1``."""
        X = X.to(dtype=self.dtype, device=self.device)
        Y = Y.to(dtype=self.dtype, device=self.device).reshape(-1, 1)
        # Each model owns its network, so a returned model never changes under a later fit.
        model = DKLModel(X, Y, copy.deepcopy(self._initial_network), self.kernel)
        if self._state is None:
            iterations = self.first_fit_iterations
        else:
            model.load_state_dict(self._state, strict=False)
            iterations = self.refit_iterations
        self.last_losses = train_exact_mll(model, iterations, self.learning_rate)
        # Everything but the outcome transform, whose statistics belong to these data.
        self._state = {
            k: v.detach().clone()
            for k, v in model.state_dict().items()
            if not k.startswith("outcome_transform.")
        }
        return model


@torch.no_grad()
def posterior_mean_std(
    model: GPyTorchModel, X: Tensor, *, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Marginal predictive mean and standard deviation of the latent function at each row of
    ``X`` (``N x d``), both of shape ``(N,)``, in the units of the training data.

    Works through ``X`` in batches of independent points, so memory grows with
    ``batch_size x n_train``, never with ``N x N``.
    """
    means, stds = [], []
    with gpytorch.settings.fast_pred_var():
        for start in range(0, X.shape[0], batch_size):
            posterior = model.posterior(X[start : start + batch_size].unsqueeze(-2))
            means.append(posterior.mean.reshape(-1))
            stds.append(posterior.variance.clamp_min(0).sqrt().reshape(-1))
    return torch.cat(means).cpu().numpy(), torch.cat(stds).cpu().numpy()
