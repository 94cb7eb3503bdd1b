"""Ensembles of deep-kernel GPs: K networks with a GP on each, computed as one batched model.

Deep kernel learning trained by maximising the marginal likelihood (ML-II) lets the network
follow the measured points ever more closely, and the GP becomes confident about candidates
whose patches merely resemble measured ones (Ober, Rasmussen & van der Wilk 2021, "The promises
and pitfalls of deep kernel learning"). Averaging over networks is the classic remedy: deep
ensembles (Lakshminarayanan, Pritzel & Blundell 2017) disagree where the data do not pin the
network down, and their disagreement is the uncertainty a single ML-II network leaves out.

`DKLEnsemble` holds K members, each its own MLP (`BatchedMLP`: the K networks' weights are
stacked and evaluated in one batched matrix product) and its own GP hyperparameters. Members
differ in their initialisation and in their Bayesian-bootstrap weights (Rubin 1981): member k
weighs measured point i by ``wₖᵢ ~ Exp(1)`` (at least 0.05), which in a GP with Gaussian
noise is the noise variance ``σₖ² / wₖᵢ`` for that point. Training minimises the sum of the
members' negative marginal log likelihoods.

The posterior is the equal-weight mixture of the members' Gaussian posteriors. BoTorch sees its
moment-matched Gaussian: mean ``μ = mean_k μₖ`` and covariance ``mean_k (Cₖ + μₖ μₖᵀ) - μ μᵀ``
(the exact mean and covariance of the mixture), for analytic and Monte Carlo acquisition
functions alike; `member_marginals` gives each member's for a policy that wants them.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from botorch.models.model import Model
from botorch.posteriors import GPyTorchPosterior
from gpytorch.distributions import MultivariateNormal
from linear_operator.operators import DiagLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor, nn

from .dkl import CHUNK_ELEMENTS, correlation, scaled_sq_dist
from .training import WarmStart


class BatchedMLP(nn.Module):
    """K fully connected networks ``in_dim -> hidden... -> out_dim`` with ReLUs, evaluated
    together: ``n x in_dim`` -> ``K x n x out_dim``. Member k is initialised as PyTorch's
    ``nn.Linear`` would be, from ``torch.Generator().manual_seed(seed + k)``."""

    def __init__(
        self, n_members: int, in_dim: int, hidden: Sequence[int], out_dim: int, seed: int = 0
    ) -> None:
        super().__init__()
        widths = [in_dim, *hidden, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        generators = [torch.Generator().manual_seed(seed + k) for k in range(n_members)]
        for a, b in itertools.pairwise(widths):
            bound = 1.0 / math.sqrt(a)
            W = torch.stack([(torch.rand(a, b, generator=g) * 2 - 1) * bound for g in generators])
            c = torch.stack([(torch.rand(1, b, generator=g) * 2 - 1) * bound for g in generators])
            self.weights.append(nn.Parameter(W))
            self.biases.append(nn.Parameter(c))

    @property
    def n_members(self) -> int:
        return int(self.weights[0].shape[0])

    def forward(self, x: Tensor) -> Tensor:
        h = x.unsqueeze(0).expand(self.n_members, *x.shape)
        last = len(self.weights) - 1
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, W)
            if i < last:
                h = F.relu(h)
        return h


class DKLEnsemble(Model):
    """K deep-kernel GPs on the same data, one batched model (see the module's documentation).

    Args:
        train_X: ``n x d`` inputs.
        train_Y: ``n x 1`` (or ``(n,)``) observations, standardised inside.
        network: a `BatchedMLP` (``n x d`` -> ``K x n x k``).
        point_weights: ``K x n`` Bayesian-bootstrap weights (mean 1).
        noise_floor: the least noise variance, a fraction of the variance of ``train_Y``.
        matern: Matérn-5/2 kernels instead of RBF.
    """

    _num_outputs = 1

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        network: BatchedMLP,
        point_weights: Tensor,
        *,
        noise_floor: float = 0.01,
        matern: bool = False,
    ) -> None:
        super().__init__()
        y = train_Y.reshape(-1)
        self.y_mean = y.mean()
        self.y_std = y.std().clamp_min(1e-12) if len(y) > 1 else torch.ones_like(y.mean())
        self.train_X, self.train_y = train_X, (y - self.y_mean) / self.y_std
        self.member_y = self.train_y.expand(network.n_members, -1)  # each member's targets
        self.network = network
        self.point_weights = point_weights
        self.noise_floor, self.matern = noise_floor, matern
        K = network.n_members
        k = int(network(train_X[:1]).shape[-1])
        like = dict(dtype=train_X.dtype, device=train_X.device)
        # Unconstrained hyperparameters: softplus gives lengthscale, outputscale, noise - floor.
        self.raw_lengthscale = nn.Parameter(torch.full((K, k), 0.0, **like))
        self.raw_outputscale = nn.Parameter(torch.full((K,), 0.0, **like))
        self.raw_noise = nn.Parameter(torch.full((K,), -2.0, **like))
        self.constant = nn.Parameter(torch.zeros(K, **like))
        self._factors: tuple[Tensor, Tensor, Tensor] | None = None
        self.to(train_X)

    # -- hyperparameters ---------------------------------------------------------------------

    @property
    def lengthscale(self) -> Tensor:
        return F.softplus(self.raw_lengthscale) + 1e-6  # K x k

    @property
    def outputscale(self) -> Tensor:
        return F.softplus(self.raw_outputscale) + 1e-6  # (K,)

    @property
    def noise(self) -> Tensor:
        return F.softplus(self.raw_noise) + self.noise_floor  # (K,)

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def n_members(self) -> int:
        return self.network.n_members

    # -- the GP algebra ----------------------------------------------------------------------

    def _covariance(self, z: Tensor, Z: Tensor) -> Tensor:
        """``K x b x n`` prior covariances between member features ``z`` (``K x b x k``) and
        ``Z`` (``K x n x k``)."""
        D = torch.stack(
            [scaled_sq_dist(z[m], Z[m], self.lengthscale[m]) for m in range(self.n_members)]
        )
        return correlation(D, self.matern) * self.outputscale.reshape(-1, 1, 1)

    def negative_mll(self, X: Tensor, y: Tensor, w: Tensor) -> Tensor:
        """The members' summed negative marginal log likelihood per point of the standardised
        ``y`` (``(n,)``) at ``X`` (``n x d``) with point weights ``w`` (``K x n``): a scalar
        with gradients. Autograd through a batched Cholesky factorisation."""
        z = self.network(X)
        A = self._covariance(z, z) + torch.diag_embed(self.noise.reshape(-1, 1) / w)
        L = torch.linalg.cholesky(A)
        r = (y.unsqueeze(0) - self.constant.reshape(-1, 1)).unsqueeze(-1)  # K x n x 1
        a = torch.cholesky_solve(r, L)
        fit = 0.5 * (r * a).sum((1, 2)) + L.diagonal(dim1=1, dim2=2).log().sum(1)
        return fit.sum() / y.shape[0] + 0.5 * self.n_members * math.log(2 * math.pi)

    def _factorise(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._factors is None:
            with torch.no_grad():
                Z = self.network(self.train_X)
                A = self._covariance(Z, Z)
                A = A + torch.diag_embed(self.noise.reshape(-1, 1) / self.point_weights)
                L = psd_safe_cholesky(A)
                r = (self.member_y - self.constant.reshape(-1, 1)).unsqueeze(-1)
                alpha = torch.cholesky_solve(r, L).squeeze(-1)  # K x n
            self._factors = (Z, L, alpha)
        return self._factors

    def train(self, mode: bool = True) -> DKLEnsemble:
        if mode:
            self._factors = None
        return super().train(mode)

    def noise_variance(self) -> float:
        """The members' mean noise variance, in the units of the training data."""
        return float(self.noise.detach().mean() * self.y_std**2)

    def member_marginals(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Each member's predictive mean and variance of the latent function at each row of
        ``X`` (``b x d``): each ``K x b``, standardised units. Call under ``torch.no_grad()``."""
        Z, L, alpha = self._factorise()
        means, variances = [], []
        n = Z.shape[1]
        for chunk in X.split(max(1, CHUNK_ELEMENTS // (n * self.n_members))):
            z = self.network(chunk)
            cross = self._covariance(z, Z)  # K x b x n
            means.append(self.constant.reshape(-1, 1) + (cross @ alpha.unsqueeze(-1)).squeeze(-1))
            root = torch.linalg.solve_triangular(L, cross.transpose(1, 2), upper=False)
            variances.append(self.outputscale.reshape(-1, 1) - root.pow(2).sum(1))
        floor = 1e-12 * float(self.outputscale.detach().max())
        return torch.cat(means, 1), torch.cat(variances, 1).clamp_min(floor)

    def marginals(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """The mixture's mean and variance at each row of ``X`` (``b x d``), each ``(b,)``,
        standardised units: ``mean_k μₖ`` and ``mean_k (σₖ² + μₖ²) - μ²``."""
        mu, var = self.member_marginals(X)
        mean = mu.mean(0)
        return mean, (var + mu.pow(2)).mean(0) - mean.pow(2)

    def _joint(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """The mixture's mean (``batch x q``) and covariance (``batch x q x q``) at ``X``
        (``batch x q x d``), standardised units, differentiable in ``X``."""
        Z, L, alpha = self._factorise()
        batch, q = X.shape[:-2], X.shape[-2]
        flat = X.reshape(-1, X.shape[-1])
        z = self.network(flat)  # K x (B q) x k
        cross = self._covariance(z, Z)  # K x (B q) x n
        mu = self.constant.reshape(-1, 1) + (cross @ alpha.unsqueeze(-1)).squeeze(-1)
        root = torch.linalg.solve_triangular(L, cross.transpose(1, 2), upper=False)  # K n (Bq)
        K_ = self.n_members
        zq = z.reshape(K_, -1, q, z.shape[-1])
        prior = torch.stack(
            [
                torch.stack(
                    [
                        correlation(
                            scaled_sq_dist(zq[m, i], zq[m, i], self.lengthscale[m]), self.matern
                        )
                        * self.outputscale[m]
                        for i in range(zq.shape[1])
                    ]
                )
                for m in range(K_)
            ]
        )  # K x B x q x q
        rq = root.transpose(1, 2).reshape(K_, -1, q, root.shape[1])  # K x B x q x n
        cov = prior - rq @ rq.transpose(-1, -2)
        muq = mu.reshape(K_, -1, q)
        mean = muq.mean(0)
        second = (cov + muq.unsqueeze(-1) * muq.unsqueeze(-2)).mean(0)
        covariance = second - mean.unsqueeze(-1) * mean.unsqueeze(-2)
        jitter = 1e-9 * float(self.outputscale.detach().max()) * torch.eye(q, dtype=X.dtype)
        return mean.reshape(*batch, q), (covariance + jitter).reshape(*batch, q, q)

    def posterior(
        self,
        X: Tensor,
        output_indices: Any = None,
        observation_noise: bool | Tensor = False,
        posterior_transform: Any = None,
        **kwargs: Any,
    ) -> GPyTorchPosterior:
        """The moment-matched Gaussian of the mixture at ``X`` (``batch x q x d``), in the
        units of the training data. For ``q = 1`` without gradients the ``batch`` points are
        independent marginals (`marginals`), never a covariance between candidates."""
        self.eval()
        if X.shape[-2] == 1 and not (X.requires_grad and torch.is_grad_enabled()):
            with torch.no_grad():
                mean, variance = self.marginals(X.reshape(-1, X.shape[-1]))
            shape = X.shape[:-1]
            mean, variance = mean.reshape(shape), variance.reshape(shape)
            if observation_noise is not False:
                variance = variance + self.noise.mean()
            mvn = MultivariateNormal(
                mean * self.y_std + self.y_mean, DiagLinearOperator(variance * self.y_std**2)
            )
        else:
            mean, covariance = self._joint(X)
            if observation_noise is not False:
                covariance = covariance + self.noise.mean() * torch.eye(X.shape[-2])
            mvn = MultivariateNormal(mean * self.y_std + self.y_mean, covariance * self.y_std**2)
        posterior = GPyTorchPosterior(mvn)
        return posterior_transform(posterior) if posterior_transform is not None else posterior

    def condition_on_pending(self, X_pending: Tensor) -> DKLEnsemble:
        """A copy that has also seen ``X_pending`` (``p x d``) at each member's own predicted
        mean (the kriging believer, as `dklscope.model.dkl.DKLModel.condition_on_pending`): the
        mixture's mean stays, its variance shrinks around the pending points."""
        if X_pending.shape[0] == 0:
            return self
        with torch.no_grad():
            mu, _ = self.member_marginals(X_pending)  # K x p
        believer = copy.deepcopy(self)
        believer.train_X = torch.cat([self.train_X, X_pending])
        believer.member_y = torch.cat([self.member_y, mu], dim=1)
        believer.point_weights = torch.cat([self.point_weights, torch.ones_like(mu)], dim=1)
        believer._factors = None
        return believer

    def leave_one_out(self) -> tuple[Tensor, Tensor, Tensor]:
        """Each training point's prediction from all the others, by every member (closed form,
        as `dklscope.model.loo`): the standardised ``y`` (``(n,)``) and the members' LOO means and
        variances of the observation (``K x n`` each; a member's own bootstrap weight of the
        point left out is replaced by 1, as for a new measurement)."""
        _, L, alpha = self._factorise()
        with torch.no_grad():
            diagonal = torch.cholesky_inverse(L).diagonal(dim1=1, dim2=2)  # K x n
            latent = 1.0 / diagonal - self.noise.reshape(-1, 1) / self.point_weights
            mean = self.member_y - alpha / diagonal
        return self.train_y, mean, latent.clamp_min(0) + self.noise.reshape(-1, 1)


class EnsembleLearner(WarmStart):
    """Fits a `DKLEnsemble` of ``n_members`` to the data seen so far, each fit warm-started from
    the last (the interface of `dklscope.model.training.DKLLearner`: ``first_fit_iterations`` Adam
    steps from the initial networks, then ``refit_iterations`` per fit, a fresh start every
    ``full_refit_every`` fits, at most ``train_subset`` points per step). The bootstrap weights
    of each point are drawn once per point from ``seed``, so a point keeps its weights as the
    data grow. One output only."""

    def __init__(
        self,
        in_dim: int,
        *,
        n_members: int = 4,
        network: nn.Module | None = None,
        hidden: Sequence[int] = (64, 32),
        feature_dim: int = 2,
        kernel: str = "rbf",
        noise_floor: float = 0.01,
        first_fit_iterations: int = 100,
        refit_iterations: int = 20,
        full_refit_every: int = 0,
        train_subset: int | None = 256,
        learning_rate: float = 0.01,
        seed: int = 0,
    ) -> None:
        self._initial = BatchedMLP(n_members, in_dim, hidden, feature_dim, seed=seed).double()
        self._prefix = network  # a module applied before the ensemble (the inputs' columns)
        self.n_members = n_members
        self.matern = kernel == "matern52"
        self.noise_floor = noise_floor
        self.first_fit_iterations = first_fit_iterations
        self.refit_iterations = refit_iterations
        self.full_refit_every = full_refit_every
        self.train_subset = train_subset
        self.learning_rate = learning_rate
        self.seed = seed
        self._init_warm_start(seed)

    def bootstrap_weights(self, n: int) -> Tensor:
        """``K x n`` Bayesian-bootstrap weights of the first ``n`` points: the same for a point
        whatever n is (each point's K weights come from its own generator)."""
        w = torch.stack(
            [
                torch.empty(self.n_members, dtype=torch.float64).exponential_(
                    generator=torch.Generator().manual_seed(self.seed * 1_000_003 + i)
                )
                for i in range(n)
            ],
            dim=1,
        )
        return w.clamp_min(0.05)  # Exp(1): mean 1; no point all but ignored

    def fit(self, X: Tensor, Y: Tensor) -> DKLEnsemble:
        """An ensemble of exactly these data: ``X`` ``n x d``, ``Y`` ``n`` or ``n x 1``."""
        X = X.to(torch.float64)
        Y = Y.to(torch.float64).reshape(len(X), -1)
        if Y.shape[1] != 1:
            raise ValueError("a DKL ensemble models one output; use kind dkl for several")
        keep = torch.isfinite(Y[:, 0])
        X, y = X[keep], Y[keep, 0]
        network: nn.Module = copy.deepcopy(self._initial)
        if self._prefix is not None:
            network = _Prefixed(copy.deepcopy(self._prefix), network)
        weights = self.bootstrap_weights(len(y))
        model = DKLEnsemble(
            X, y, network, weights, noise_floor=self.noise_floor, matern=self.matern
        )
        iterations, afresh = self._next_iterations()
        if not afresh:
            model.load_state_dict(self._state, strict=False)
        self._train(model, iterations)
        self._state = {
            k: v.detach().clone()
            for k, v in model.state_dict().items()
            if k not in ("y_mean", "y_std")
        }
        return model

    def _train(self, model: DKLEnsemble, iterations: int) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        n = len(model.train_y)
        model.train()
        for _ in range(iterations):
            if self.train_subset is not None and n > self.train_subset:
                chosen = torch.randperm(n, generator=self._generator)[: self.train_subset]
            else:
                chosen = torch.arange(n)
            optimizer.zero_grad()
            loss = model.negative_mll(
                model.train_X[chosen], model.train_y[chosen], model.point_weights[:, chosen]
            )
            loss.backward()
            optimizer.step()
        model.eval()


class _Prefixed(nn.Module):
    """``ensemble(prefix(x))``, exposing the ensemble's ``n_members``."""

    def __init__(self, prefix: nn.Module, ensemble: BatchedMLP) -> None:
        super().__init__()
        self.prefix, self.ensemble = prefix, ensemble

    @property
    def n_members(self) -> int:
        return self.ensemble.n_members

    def forward(self, x: Tensor) -> Tensor:
        return self.ensemble(self.prefix(x))
