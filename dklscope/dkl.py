"""Deep kernel learning: an exact Gaussian process on the features of a neural network.

`DKLModel` is the model (a BoTorch `Model`, so any BoTorch acquisition function applies);
`DKLLearner` trains it as data arrive, warm-starting each fit from the previous weights;
`posterior_mean_std` predicts over many candidates in bounded memory.

Training minimises the exact negative marginal log likelihood (`negative_mll`, a Cholesky
factorisation of the training covariance) on random subsets of at most ``train_subset`` points
per iteration. BoTorch's general posterior path factorises exactly up to `MAX_CHOLESKY` points
(gpytorch switches to iterative solvers above 800 by default). Marginal predictions over many
candidates
(`DKLModel.marginals`) reuse one factorisation per trained model and never form a covariance
between candidates.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import gpytorch
import numpy as np
import torch
from botorch.models.gpytorch import GPyTorchModel
from botorch.models.transforms.outcome import Standardize
from botorch.posteriors import GPyTorchPosterior
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean
from linear_operator.operators import DiagLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor, nn

Kernel = Literal["rbf", "matern52"]

MAX_CHOLESKY = 4096  # training sets up to this size are factorised exactly
EXACT_VARIANCE_MAX = 1024  # predictive variances are exact up to this many training points
VARIANCE_RANK = 256  # and conditioned on this many leading directions above


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """A fully connected feature extractor ``in_dim -> hidden... -> out_dim`` with ReLUs."""
    widths = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


class Passthrough(nn.Module):
    """``network`` on all but the last ``k`` input columns, with those ``k`` appended to its
    output unchanged (``... x d`` -> ``... x (features + k)``): e.g. the probe position beside
    a patch's learned features, so the kernel measures both similarities."""

    def __init__(self, network: nn.Module, k: int) -> None:
        super().__init__()
        self.network, self.k = network, k

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.network(x[..., : -self.k]), x[..., -self.k :]], dim=-1)


class DKLModel(gpytorch.models.ExactGP, GPyTorchModel):
    """``y = f(g(x)) + noise`` with ``f ~ GP(c, s * k(., .))`` and ``g`` a neural network.

    Args:
        train_X: ``n x d`` inputs (flattened patches).
        train_Y: ``n x 1`` observations; standardised inside, reported back in their units.
        feature_extractor: maps ``... x d`` to ``... x k``.
        kernel: the base kernel ``k`` on the ``k`` features, with one lengthscale per feature.
        noise_floor: the smallest noise variance, as a fraction of the variance of
            ``train_Y``. Measured scalars are noisy; without a floor the network can learn to
            interpolate them and the GP then trusts its own extrapolations far too much.
    """

    _num_outputs = 1

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        feature_extractor: nn.Module,
        kernel: Kernel = "rbf",
        noise_floor: float = 0.01,
    ) -> None:
        outcome_transform = Standardize(m=1)
        standardized_Y, _ = outcome_transform(train_Y)
        likelihood = GaussianLikelihood(noise_constraint=GreaterThan(noise_floor))
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
        self._marginal_cache: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self.to(train_X)

    def forward(self, x: Tensor) -> MultivariateNormal:
        z = self.feature_extractor(x)
        return MultivariateNormal(self.mean_module(z), self.covar_module(z))

    def posterior(
        self,
        X: Tensor,
        observation_noise: bool | Tensor = False,
        posterior_transform: Any = None,
        **kwargs: Any,
    ) -> Any:
        """BoTorch's posterior of the latent function at ``X`` (``batch x q x d``).

        For ``q = 1`` (the analytic acquisition functions, and `posterior_mean_std`) the
        ``batch`` points are independent marginals, computed by `marginals` without any
        covariance between candidates. Other shapes take BoTorch's general path.
        """
        if X.shape[-2] != 1 or observation_noise is not False:
            with gpytorch.settings.max_cholesky_size(MAX_CHOLESKY):
                return super().posterior(X, observation_noise, posterior_transform, **kwargs)
        mean, variance = self.marginals(X.reshape(-1, X.shape[-1]))
        batch = X.shape[:-1]
        independent = MultivariateNormal(
            mean.reshape(batch), DiagLinearOperator(variance.reshape(batch))
        )
        posterior = self.outcome_transform.untransform_posterior(GPyTorchPosterior(independent))
        if posterior_transform is not None:
            return posterior_transform(posterior)
        return posterior

    def marginals(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Predictive mean and variance of the latent function at each row of ``X`` (``b x
        d``), each of shape ``(b,)``, in standardised units.

        The mean is exact. The variance is ``k(x, x) - k_x^T W W^T k_x``: with ``n`` training
        points up to `EXACT_VARIANCE_MAX`, ``W W^T = K^-1`` and it is exact (cost ``b n^2``);
        above, ``W`` conditions on the `VARIANCE_RANK` leading directions of ``K`` (a
        randomised range finder), which costs ``b n r`` and can only overstate the variance.
        The training-side factors are computed once per trained model.
        """
        self.eval()
        cache = self._marginal_cache
        if cache is None:
            cache = self._marginal_cache = self._factorise()
        features, alpha, W, constant = cache
        z = self.feature_extractor(X)
        cross = self.covar_module(z, features).to_dense()  # b x n
        prior = self.covar_module(z, diag=True)
        mean = constant + cross @ alpha
        variance = prior - (cross @ W).pow(2).sum(-1)
        return mean, variance.clamp_min(1e-12 * float(prior.detach().max()))

    def condition_on_pending(self, X_pending: Tensor) -> DKLModel:
        """A copy of this model that has also seen ``X_pending`` (``p x d``, points being
        measured) at its own predicted mean: the "kriging believer". The predictive mean stays
        the same everywhere; the variance shrinks around the pending points, so an acquisition
        function looks elsewhere. The hyperparameters and the network are not refitted."""
        if X_pending.shape[0] == 0:
            return self
        with torch.no_grad():
            believed, _ = self.marginals(X_pending)
        believer = copy.deepcopy(self)
        believer.set_train_data(
            torch.cat([self.train_inputs[0], X_pending]),
            torch.cat([self.train_targets, believed]),
            strict=False,
        )
        believer._marginal_cache = None
        return believer

    def _factorise(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        inputs, targets = self.train_inputs[0], self.train_targets
        with torch.no_grad():
            features = self.feature_extractor(inputs)
            noise = self.likelihood.noise.reshape(())
            K = self.covar_module(features).to_dense()
            K = K + noise * torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
            constant = self.mean_module(features[:1]).reshape(())
            L = psd_safe_cholesky(K)
            alpha = torch.cholesky_solve((targets - constant).unsqueeze(-1), L).squeeze(-1)
            n = K.shape[0]
            if n <= EXACT_VARIANCE_MAX:
                W = torch.linalg.solve_triangular(
                    L, torch.eye(n, dtype=K.dtype, device=K.device), upper=False
                ).T
            else:
                W = _leading_root(K, VARIANCE_RANK)
        return features, alpha, W, constant

    def train(self, mode: bool = True) -> DKLModel:
        if mode:  # training changes the weights the factors were made with
            self._marginal_cache = None
        return super().train(mode)


def _leading_root(K: Tensor, rank: int) -> Tensor:
    """``W`` (``n x r``) with ``W W^T = Q (Q^T K Q)^-1 Q^T``, where ``Q`` spans the leading
    ``r`` directions of the positive definite ``K``, found by a randomised range finder with
    two power iterations and a fixed seed (deterministic)."""
    generator = torch.Generator(device=K.device).manual_seed(0)
    omega = torch.randn(K.shape[0], rank, dtype=K.dtype, device=K.device, generator=generator)
    Q = torch.linalg.qr(K @ omega).Q
    for _ in range(2):
        Q = torch.linalg.qr(K @ Q).Q
    C = psd_safe_cholesky(Q.T @ K @ Q)
    return torch.linalg.solve_triangular(C, Q.T, upper=False).T


def _output_dim(module: nn.Module, train_X: Tensor) -> int:
    with torch.no_grad():
        return int(module(train_X[:1]).shape[-1])


def negative_mll(model: DKLModel, X: Tensor, y: Tensor) -> Tensor:
    """``-log p(y | X) / n``, the exact negative marginal log likelihood per point of the GP on
    the network's features: ``X`` is ``n x d``, ``y`` is ``(n,)`` (standardised), the result a
    scalar with gradients. The same value as gpytorch's ``ExactMarginalLogLikelihood`` for this
    model (Gaussian noise, no priors), with a third of the Python overhead per iteration."""
    z = model.feature_extractor(X)
    n = y.shape[-1]
    K = model.covar_module(z).to_dense()
    K = K + model.likelihood.noise * torch.eye(n, dtype=K.dtype, device=K.device)
    L = psd_safe_cholesky(K)
    residual = (y - model.mean_module(z)).unsqueeze(-1)
    alpha = torch.cholesky_solve(residual, L)
    fit = 0.5 * (residual * alpha).sum() + L.diagonal().log().sum()
    return fit / n + 0.5 * math.log(2 * math.pi)


def train_exact_mll(
    model: DKLModel,
    iterations: int,
    learning_rate: float,
    *,
    subset: int | None = None,
    generator: torch.Generator | None = None,
    weight_decay: float = 0.0,
) -> list[float]:
    """Minimise `negative_mll` with Adam; returns the loss per iteration.

    With ``subset``, each iteration uses a random subset of at most ``subset`` training points
    (drawn with ``generator``), so the cost of an iteration stays bounded however many points
    there are; the model stays conditioned on all of them. ``weight_decay`` shrinks the
    network's weights (decoupled, as AdamW; the GP's hyperparameters are not decayed): the
    marginal likelihood alone lets the network overfit and the GP grow overconfident. Leaves
    the model in eval mode.
    """
    network = {id(p) for p in model.feature_extractor.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in network], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) not in network], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") for p in trainable)
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, fused=fused or None)
    inputs, targets = model.train_inputs[0], model.train_targets
    n = targets.shape[0]
    model.train()
    losses = []
    for _ in range(iterations):
        X, y = inputs, targets
        if subset is not None and n > subset:
            chosen = torch.randperm(n, generator=generator)[:subset].to(inputs.device)
            X, y = inputs[chosen], targets[chosen]
        optimizer.zero_grad()
        loss = negative_mll(model, X, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())  # no device sync per iteration
    model.eval()
    return torch.stack(losses).tolist() if losses else []


class DKLLearner:
    """Fits a `DKLModel` to the data seen so far, each fit warm-started from the last.

    The network is ``network`` when given (a trained encoder mapping ``... x in_dim`` to
    features, or ``nn.Identity()`` for a GP on fixed features; ``freeze_network`` keeps its
    weights), else a fresh MLP ``in_dim -> hidden -> feature_dim`` initialised from ``seed``
    (with ``passthrough`` k: on all but the last k input columns, which reach the kernel as
    they are, `Passthrough`).
    The first fit runs ``first_fit_iterations`` Adam steps from it; later fits start from the
    previous weights and hyperparameters and run ``refit_iterations`` steps (0: keep them and
    only condition on the new data). Every ``full_refit_every`` fits (0: never) a fit starts
    afresh, as the first did. Iterations use random subsets of at most ``train_subset`` points
    (None: all), so a warm fit costs about the same at 2,000 points as at 500. The process'
    random state is left untouched.
    """

    def __init__(
        self,
        in_dim: int,
        *,
        hidden: Sequence[int] = (64, 32),
        feature_dim: int = 2,
        kernel: Kernel = "rbf",
        noise_floor: float = 0.01,
        network: nn.Module | None = None,
        freeze_network: bool = False,
        first_fit_iterations: int = 200,
        refit_iterations: int = 50,
        full_refit_every: int = 0,
        train_subset: int | None = 512,
        learning_rate: float = 0.01,
        weight_decay: float = 0.0,
        passthrough: int = 0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        if network is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                network = mlp(in_dim - passthrough, hidden, feature_dim)
            if passthrough:
                network = Passthrough(network, passthrough)
        else:
            network = copy.deepcopy(network)
        self._initial_network = network.to(dtype=dtype, device=device)
        for parameter in self._initial_network.parameters():
            parameter.requires_grad_(not freeze_network)
        self.kernel: Kernel = kernel
        self.noise_floor = noise_floor
        self.first_fit_iterations = first_fit_iterations
        self.refit_iterations = refit_iterations
        self.full_refit_every = full_refit_every
        self.train_subset = train_subset
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dtype, self.device = dtype, torch.device(device)
        self._generator = torch.Generator().manual_seed(seed)
        self._state: dict[str, Tensor] | None = None
        self._since_fresh = 0  # fits since (and including) the last fresh start
        self.last_losses: list[float] = []

    def reset(self) -> None:
        """Forget the learned weights: the next fit starts afresh."""
        self._state = None

    def state_bytes(self) -> bytes:
        """Everything the next fit depends on (weights and hyperparameters, the count of fits
        since the last fresh start, the subset generator), serialised: a learner given these
        bytes by `load_state_bytes` fits exactly as this one would."""
        buffer = io.BytesIO()
        torch.save(
            {
                "state": self._state,
                "since_fresh": self._since_fresh,
                "generator": self._generator.get_state(),
            },
            buffer,
        )
        return buffer.getvalue()

    def load_state_bytes(self, data: bytes) -> None:
        """Continue from the state `state_bytes` wrote."""
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        self._state = saved["state"]
        self._since_fresh = int(saved["since_fresh"])
        self._generator.set_state(saved["generator"])

    def fit(self, X: Tensor, Y: Tensor) -> DKLModel:
        """A model of exactly these data: ``X`` is ``n x d``, ``Y`` is ``n`` or ``n x 1``."""
        X = X.to(dtype=self.dtype, device=self.device)
        Y = Y.to(dtype=self.dtype, device=self.device).reshape(-1, 1)
        # Each model owns its network, so a returned model never changes under a later fit.
        model = DKLModel(X, Y, copy.deepcopy(self._initial_network), self.kernel, self.noise_floor)
        afresh = self._state is None or (
            self.full_refit_every > 0 and self._since_fresh >= self.full_refit_every
        )
        if afresh:
            iterations, self._since_fresh = self.first_fit_iterations, 1
        else:
            model.load_state_dict(self._state, strict=False)
            iterations, self._since_fresh = self.refit_iterations, self._since_fresh + 1
        self.last_losses = train_exact_mll(
            model,
            iterations,
            self.learning_rate,
            subset=self.train_subset,
            generator=self._generator,
            weight_decay=self.weight_decay,
        )
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
    for batch in X.split(batch_size):
        posterior = model.posterior(batch.unsqueeze(-2))
        means.append(posterior.mean.reshape(-1))
        stds.append(posterior.variance.clamp_min(0).sqrt().reshape(-1))
    return torch.cat(means).cpu().numpy(), torch.cat(stds).cpu().numpy()
