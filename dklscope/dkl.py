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

import contextlib
import copy
import io
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gpytorch
import numpy as np
import torch
from botorch.models import ModelListGP
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
VARIANCE_RANK = 256  # and given this many of them above (an upper bound)
CHUNK_ELEMENTS = 2**20  # candidates x training points per chunk of a prediction
# With priors: the least lengthscale, standardised input units (BoTorch's 0.025 of the unit cube)
MIN_LENGTHSCALE = 0.025 * math.sqrt(12)
NOISE_PRIOR = (-4.0, 1.0)  # LogNormal (loc, scale) of the standardised noise variance


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
        priors: train by maximum a posteriori instead of maximum likelihood, with BoTorch's
            priors for GPs on few data (Hvarfner, Hellsten & Nardi 2024, "Vanilla Bayesian
            optimization performs great in high dimensions"): each lengthscale LogNormal with
            ``loc = sqrt(2) + log(k) / 2`` and ``scale = sqrt(3)`` for inputs in the unit cube,
            here shifted by ``log(sqrt(12))`` because the inputs are standardised (a uniform
            input's standard deviation is ``1 / sqrt(12)`` of its range), starting at the
            prior's mode and never below `MIN_LENGTHSCALE`; the noise variance LogNormal(-4,
            1). Without them the marginal likelihood of a few dozen rough measurements often
            prefers lengthscales of a pixel (a flat map with spikes at the measured points) or
            of the whole image, and the GP is sure of values it knows nothing about.
    """

    _num_outputs = 1

    def __init__(
        self,
        train_X: Tensor,
        train_Y: Tensor,
        feature_extractor: nn.Module,
        kernel: Kernel = "rbf",
        noise_floor: float = 0.01,
        priors: bool = False,
    ) -> None:
        outcome_transform = Standardize(m=1)
        standardized_Y, _ = outcome_transform(train_Y)
        likelihood = GaussianLikelihood(noise_constraint=GreaterThan(noise_floor))
        super().__init__(train_X, standardized_Y.squeeze(-1), likelihood)
        n_features = _output_dim(feature_extractor, train_X)
        self.lengthscale_prior: tuple[float, float] | None = None
        constraint = None
        if priors:
            loc = math.sqrt(2) + 0.5 * math.log(n_features) + math.log(math.sqrt(12))
            self.lengthscale_prior = (loc, math.sqrt(3))
            constraint = GreaterThan(MIN_LENGTHSCALE, initial_value=math.exp(loc - 3.0))
        base = (
            RBFKernel(ard_num_dims=n_features, lengthscale_constraint=constraint)
            if kernel == "rbf"
            else MaternKernel(nu=2.5, ard_num_dims=n_features, lengthscale_constraint=constraint)
        )
        self.feature_extractor = feature_extractor
        self.mean_module = ConstantMean()
        self.covar_module = ScaleKernel(base)
        self.outcome_transform = outcome_transform
        self._marginal_cache: _Factors | None = None
        self._exact_cache: tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None = None
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
        covariance between candidates. Other shapes, and inputs that need gradients (an
        acquisition function optimised over ``X``), take BoTorch's general path.
        """
        general = X.shape[-2] != 1 or observation_noise is not False
        if general or (X.requires_grad and torch.is_grad_enabled()):
            with gpytorch.settings.max_cholesky_size(MAX_CHOLESKY):
                return super().posterior(X, observation_noise, posterior_transform, **kwargs)
        with torch.no_grad():
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

        The mean is exact. With ``n`` training points up to `EXACT_VARIANCE_MAX` so is the
        variance (cost ``b n^2``). Above, it is the variance given ``r`` = `VARIANCE_RANK`
        sums of observations instead of the ``n`` observations themselves: the training
        points are grouped around the first ``r`` pivots of a pivoted Cholesky factorisation
        (each point with the pivot it is most correlated with), and the GP conditions on each
        group's sum. Knowing less can only overstate the variance (by a few percent on compact
        groups), and it costs ``b (n + r^2)``. The training-side factors are computed once
        per trained model; the candidates go through in chunks of about `CHUNK_ELEMENTS`
        cross-covariances, computed in place: call it under ``torch.no_grad()``.
        """
        self.eval()
        if self._marginal_cache is None:
            self._marginal_cache = self._factorise()
        f = self._marginal_cache
        means, variances = [], []
        for chunk in X.split(max(1, CHUNK_ELEMENTS // len(f.alpha))):
            z = self.feature_extractor(chunk)
            cross = cross_covariance(self.covar_module, z, f.features)  # b x n
            prior = self.covar_module.outputscale.expand(len(z))
            means.append(f.constant + cross @ f.alpha)
            known = cross if f.groups is None else _group_sums(cross, f.groups, len(f.L))
            root = torch.linalg.solve_triangular(f.L, known.T, upper=False)  # L^-1 k, r x b
            variances.append(prior - root.pow(2).sum(0))
        variance = torch.cat(variances)
        floor = 1e-12 * float(self.covar_module.outputscale.detach())
        return torch.cat(means), variance.clamp_min(floor)

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
        believer._marginal_cache = believer._exact_cache = None
        return believer

    def exact_factors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The training ``features`` (``n x k``), the covariance of the observations ``K``
        (``n x n``, noise included), its lower Cholesky factor ``L``, ``alpha = K^-1 (y -
        constant)`` (``(n,)``) and the ``constant`` mean, as trained; computed once per trained
        model (predictions and `dklscope.loo` share them)."""
        if self._exact_cache is None:
            inputs, targets = self.train_inputs[0], self.train_targets
            with torch.no_grad():
                features = self.feature_extractor(inputs)
                K = cross_covariance(self.covar_module, features, features)
                K.diagonal().add_(self.likelihood.noise.reshape(()))
                constant = self.mean_module(features[:1]).reshape(())
                L = psd_safe_cholesky(K)
                alpha = torch.cholesky_solve((targets - constant).unsqueeze(-1), L).squeeze(-1)
            self._exact_cache = (features, K, L, alpha, constant)
        return self._exact_cache

    def _factorise(self) -> _Factors:
        features, K, L, alpha, constant = self.exact_factors()
        with torch.no_grad():
            groups = None
            if K.shape[0] > EXACT_VARIANCE_MAX:
                pivots = greedy_pivots(K, VARIANCE_RANK)
                groups = K[:, pivots].argmax(1)
                groups[pivots] = torch.arange(len(pivots), device=K.device)
                r = len(pivots)
                L = psd_safe_cholesky(_group_sums(_group_sums(K, groups, r).T, groups, r))
        return _Factors(features, alpha, L, constant, groups)

    def train(self, mode: bool = True) -> DKLModel:
        if mode:  # training changes the weights the factors were made with
            self._marginal_cache = self._exact_cache = None
        return super().train(mode)


@dataclass(frozen=True)
class _Factors:
    """What a trained model's predictions need from its training data: the training
    ``features`` (``n x k``), ``alpha = K^-1 (y - constant)`` (``(n,)``), and ``L`` (``r x r``),
    the lower Cholesky factor of the covariance of the observations the variance is
    conditioned on: all of them (``groups`` None, ``r = n``), or the sums over ``groups``
    (``(n,)``, each training point's group in ``0..r-1``)."""

    features: Tensor
    alpha: Tensor
    L: Tensor
    constant: Tensor
    groups: Tensor | None


def _group_sums(M: Tensor, groups: Tensor, r: int) -> Tensor:
    """The columns of ``M`` (``b x n``) summed by ``groups`` (``(n,)`` in ``0..r-1``): ``b x r``."""
    return M.new_zeros(M.shape[0], r).index_add_(1, groups, M)


def greedy_pivots(K: Tensor, rank: int) -> Tensor:
    """The first ``rank`` pivots of a pivoted Cholesky factorisation of the positive definite
    ``K`` (``n x n``): each the index of the largest variance left given the ones before
    (Harbrecht et al. 2012). Returns ``(rank,)`` indices, deterministic."""
    rank = min(rank, K.shape[0])
    residual = K.diagonal().clone()
    rows = K.new_zeros(rank, K.shape[0])
    pivots = torch.empty(rank, dtype=torch.long, device=K.device)
    for m in range(rank):
        i = torch.argmax(residual)
        pivots[m] = i
        rows[m] = (K[i] - rows[:m, i] @ rows[:m]) / residual[i].sqrt()
        residual -= rows[m] * rows[m]
        residual[pivots[: m + 1]] = -math.inf  # never chosen twice
    return pivots


def cross_covariance(kernel: ScaleKernel, z: Tensor, Z: Tensor) -> Tensor:
    """``kernel(z, Z)`` (``b x n``) for a ``ScaleKernel`` over an RBF or Matérn-5/2 kernel
    with one lengthscale per feature, evaluated in place: the same values as gpytorch's, in
    about a third of the time and memory, for predicting over many candidates."""
    base = kernel.base_kernel
    D = _scaled_sq_dist(z, Z, base.lengthscale.reshape(-1))
    return _correlation(D, _matern(base)).mul_(kernel.outputscale)


def _matern(base: Any) -> bool:
    """Whether ``base`` is a Matérn-5/2 kernel (False: RBF); TypeError for any other."""
    if isinstance(base, RBFKernel):
        return False
    if isinstance(base, MaternKernel) and base.nu == 2.5:
        return True
    raise TypeError(f"no fast path for {type(base).__name__}: RBF or Matérn 5/2 only")


def _scaled_sq_dist(z: Tensor, Z: Tensor, lengthscale: Tensor) -> Tensor:
    """``|z_i / l - Z_j / l|^2`` (``b x n``), from centred inputs (fewer digits lost)."""
    centre = Z.mean(0)
    a, A = (z - centre) / lengthscale, (Z - centre) / lengthscale
    D = torch.addmm((A * A).sum(-1), a, A.T, alpha=-2.0)
    return D.add_((a * a).sum(-1, keepdim=True)).clamp_min_(0.0)


def _correlation(D: Tensor, matern: bool, slope: bool = False) -> Any:
    """The kernel's correlation at squared scaled distances ``D``, overwriting ``D``: RBF
    ``exp(-D / 2)`` or Matérn 5/2 ``(1 + d + d^2 / 3) exp(-d)`` with ``d = sqrt(5 D)``; with
    ``slope`` also its derivative in ``D``, as ``(correlation, derivative)``."""
    if not matern:
        E = D.mul_(-0.5).exp_()
        return (E, -0.5 * E) if slope else E
    d = D.mul_(5.0).sqrt_()
    e = torch.exp(-d)
    E = d.square().div_(3.0).add_(d).add_(1.0).mul_(e)
    return (E, e.mul_(d.add_(1.0)).mul_(-5.0 / 6.0)) if slope else E


def _output_dim(module: nn.Module, train_X: Tensor) -> int:
    with torch.no_grad():
        return int(module(train_X[:1]).shape[-1])


class _GaussianFit(torch.autograd.Function):
    """``0.5 r^T A^-1 r + 0.5 log det A`` for the covariance ``A = s c(z / l) + noise I`` of
    features ``z`` (``n x k``) under a ``ScaleKernel`` of outputscale ``s`` over an RBF or
    Matérn-5/2 correlation ``c`` with lengthscales ``l`` (``(k,)``), and a residual ``r``
    (``(n,)``), with the gradients written out: ``dA = 0.5 (A^-1 - a a^T)`` for
    ``a = A^-1 r``, ``dnoise = trace(dA)``, ``ds = sum(dA c)``, ``dr = a``, and through the
    squared scaled distances ``D`` (``dD = s dA c'(D)``) to ``z`` and ``l``. One Cholesky
    factorisation forward, one inverse from it backward, and a few passes over ``n x n``
    arrays: a fraction of the work of autograd through gpytorch's kernel and the
    factorisation."""

    @staticmethod
    def forward(
        ctx: Any,
        z: Tensor,
        lengthscale: Tensor,
        outputscale: Tensor,
        noise: Tensor,
        r: Tensor,
        matern: bool,
    ) -> Tensor:
        u = z / lengthscale
        E, slope = _correlation(_scaled_sq_dist(z, z, lengthscale), matern, slope=True)
        A = E * outputscale
        A.diagonal().add_(noise)
        L = psd_safe_cholesky(A)
        a = torch.cholesky_solve(r.unsqueeze(-1), L).squeeze(-1)
        ctx.save_for_backward(u, lengthscale, outputscale, E, slope, L, a)
        return 0.5 * (r @ a) + L.diagonal().log().sum()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        u, lengthscale, outputscale, E, slope, L, a = ctx.saved_tensors
        dA = torch.addr(torch.cholesky_inverse(L), a, a, beta=0.5 * grad, alpha=-0.5 * grad)
        d_noise = dA.diagonal().sum()
        d_outputscale = (dA * E).sum()
        dD = dA.mul_(slope).mul_(outputscale)  # symmetric, as D is
        du = 4.0 * (dD.sum(1, keepdim=True) * u - dD @ u)  # D_ij = |u_i - u_j|^2
        d_lengthscale = -(du * u).sum(0) / lengthscale
        return du / lengthscale, d_lengthscale, d_outputscale, d_noise, grad * a, None


def negative_mll(model: DKLModel, X: Tensor, y: Tensor) -> Tensor:
    """``-log p(y | X) / n``, the exact negative marginal log likelihood per point of the GP on
    the network's features: ``X`` is ``n x d``, ``y`` is ``(n,)`` (standardised), the result a
    scalar with gradients. The same value and gradients as gpytorch's
    ``ExactMarginalLogLikelihood`` for this model (Gaussian noise, no priors), with a fraction
    of its work per iteration (`_GaussianFit`)."""
    z = model.feature_extractor(X)
    kernel = model.covar_module
    lengthscale = kernel.base_kernel.lengthscale
    fit = _GaussianFit.apply(
        z,
        lengthscale.reshape(-1),
        kernel.outputscale.reshape(()),
        model.likelihood.noise.reshape(()),
        y - model.mean_module(z),
        _matern(kernel.base_kernel),
    )
    fit = fit + _negative_log_prior(model)
    return fit / y.shape[-1] + 0.5 * math.log(2 * math.pi)


def _negative_log_prior(model: DKLModel) -> Tensor | float:
    """``-log p(lengthscales, noise)`` under the model's priors (0 without)."""
    if model.lengthscale_prior is None:
        return 0.0
    lengthscale = model.covar_module.base_kernel.lengthscale.reshape(-1)
    noise = model.likelihood.noise.reshape(-1)
    return -(
        _log_normal_density(lengthscale, *model.lengthscale_prior).sum()
        + _log_normal_density(noise, *NOISE_PRIOR).sum()
    )


def _log_normal_density(x: Tensor, loc: float, scale: float) -> Tensor:
    """The LogNormal(loc, scale) log density at ``x`` (> 0), elementwise."""
    log_x = x.log()
    return -log_x - math.log(scale * math.sqrt(2 * math.pi)) - (log_x - loc) ** 2 / (2 * scale**2)


def members(model: Any) -> list[Any]:
    """The model of each output: the models of a `ModelListGP`, else ``[model]``."""
    return list(model.models) if isinstance(model, ModelListGP) else [model]


def train_exact_mll(
    model: DKLModel | ModelListGP,
    iterations: int,
    learning_rate: float,
    *,
    subset: int | None = None,
    generator: torch.Generator | None = None,
    weight_decay: float = 0.0,
) -> list[float]:
    """Minimise `negative_mll` with Adam; returns the loss per iteration. A `ModelListGP`
    of models sharing one network (several outputs) minimises the sum over its outputs.

    With ``subset``, each iteration uses a random subset of at most ``subset`` training points
    (drawn with ``generator``), so the cost of an iteration stays bounded however many points
    there are; the model stays conditioned on all of them. ``weight_decay`` shrinks the
    network's weights (decoupled, as AdamW; the GP's hyperparameters are not decayed): the
    marginal likelihood alone lets the network overfit and the GP grow overconfident. Leaves
    the model in eval mode.
    """
    outputs = members(model)
    network = {id(p) for p in outputs[0].feature_extractor.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in network], "weight_decay": weight_decay},
        {"params": [p for p in trainable if id(p) not in network], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") for p in trainable)
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, fused=fused or None)
    model.train()
    losses = []
    for _ in range(iterations):
        optimizer.zero_grad()
        loss = sum(negative_mll(output, *_subset(output, subset, generator)) for output in outputs)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())  # no device sync per iteration
    model.eval()
    return torch.stack(losses).tolist() if losses else []


def _subset(
    model: DKLModel, size: int | None, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """The model's training inputs and targets, or a random ``size`` of them."""
    inputs, targets = model.train_inputs[0], model.train_targets
    n = targets.shape[0]
    if size is None or n <= size:
        return inputs, targets
    chosen = torch.randperm(n, generator=generator)[:size].to(inputs.device)
    return inputs[chosen], targets[chosen]


class WarmStart:
    """What a learner keeps from one fit to the next, and its schedule: the learned state
    (``_state``; None: the next fit starts afresh), the fits since the last fresh start, and
    the generator of its random subsets. A fresh fit trains ``first_fit_iterations`` steps,
    later ones ``refit_iterations`` from the last state, and every ``full_refit_every`` fits
    (0: never) one starts afresh. Learners set these with `_init_warm_start`."""

    first_fit_iterations: int
    refit_iterations: int
    full_refit_every: int

    def _init_warm_start(self, seed: int) -> None:
        self._generator = torch.Generator().manual_seed(seed)
        self._state: dict[str, Tensor] | None = None
        self._since_fresh = 0  # fits since (and including) the last fresh start

    def _next_iterations(self, *, changed: bool = False) -> tuple[int, bool]:
        """The training steps of the fit about to start, and whether it starts afresh (no
        state yet, the schedule says so, or ``changed``: the model's shape is not the
        state's); counts the fit."""
        afresh = (
            self._state is None
            or (self.full_refit_every > 0 and self._since_fresh >= self.full_refit_every)
            or changed
        )
        if afresh:
            self._since_fresh = 1
            return self.first_fit_iterations, True
        self._since_fresh += 1
        return self.refit_iterations, False

    def reset(self) -> None:
        """Forget the learned weights: the next fit starts afresh."""
        self._state = None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Within this block, a fit only conditions on its data with the weights it has (no
        training, no fresh start); the settings are restored afterwards."""
        saved = self.refit_iterations, self.full_refit_every
        self.refit_iterations, self.full_refit_every = 0, 0
        try:
            yield
        finally:
            self.refit_iterations, self.full_refit_every = saved

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


class DKLLearner(WarmStart):
    """Fits a `DKLModel` (a `ModelListGP` of them for several outputs) to the data seen so
    far, each fit warm-started from the last.

    The network is ``network`` when given (a trained encoder mapping ``... x in_dim`` to
    features, or ``nn.Identity()`` for a GP on fixed features; ``freeze_network`` keeps its
    weights), else a fresh MLP ``in_dim -> hidden -> feature_dim`` initialised from ``seed``
    (with ``passthrough`` k: on all but the last k input columns, which reach the kernel as
    they are, `Passthrough`).
    The first fit runs ``first_fit_iterations`` Adam steps from it; later fits start from the
    previous weights and hyperparameters and run ``refit_iterations`` steps (0: keep them and
    only condition on the new data). Every ``full_refit_every`` fits (0: never) a fit starts
    afresh, as the first did. Iterations use random subsets of at most ``train_subset`` points
    (None: all), so a warm fit costs about the same at 2,000 points as at 500. ``priors``
    trains by maximum a posteriori (`DKLModel`'s priors: for GPs without a network). The
    process' random state is left untouched.
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
        first_fit_iterations: int = 100,
        refit_iterations: int = 20,
        full_refit_every: int = 0,
        train_subset: int | None = 256,
        learning_rate: float = 0.01,
        weight_decay: float = 0.0,
        passthrough: int = 0,
        priors: bool = False,
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
        self.priors = priors
        self.dtype, self.device = dtype, torch.device(device)
        self._init_warm_start(seed)
        self.last_losses: list[float] = []

    def fit(self, X: Tensor, Y: Tensor) -> DKLModel | ModelListGP:
        """A model of exactly these data: ``X`` is ``n x d``, ``Y`` is ``n`` or ``n x m``.

        One output gives a `DKLModel`; ``m`` outputs a BoTorch `ModelListGP` of ``m``
        `DKLModel`, one GP per output (its own kernel hyperparameters, noise and
        standardisation) on the features of one shared network, trained together on the sum
        of their marginal likelihoods. Each output learns from its rows with a finite value
        (at least 2 of them). A fit with another number of outputs than the last starts
        afresh.
        """
        X = X.to(dtype=self.dtype, device=self.device)
        Y = Y.to(dtype=self.dtype, device=self.device).reshape(len(X), -1)
        # Each model owns its network, so a returned model never changes under a later fit.
        network = copy.deepcopy(self._initial_network)
        outputs = []
        for j, column in enumerate(Y.T):
            finite = torch.isfinite(column)
            if int(finite.sum()) < 2:
                raise ValueError(f"output {j} has {int(finite.sum())} finite values; a fit needs 2")
            y = column[finite].unsqueeze(-1)
            outputs.append(
                DKLModel(X[finite], y, network, self.kernel, self.noise_floor, self.priors)
            )
        model = outputs[0] if len(outputs) == 1 else ModelListGP(*outputs)
        changed = self._state is not None and set(self._state) != set(_learned_state(model))
        iterations, afresh = self._next_iterations(changed=changed)  # changed: outputs differ
        if not afresh:
            model.load_state_dict(self._state, strict=False)
        self.last_losses = train_exact_mll(
            model,
            iterations,
            self.learning_rate,
            subset=self.train_subset,
            generator=self._generator,
            weight_decay=self.weight_decay,
        )
        self._state = {k: v.detach().clone() for k, v in _learned_state(model).items()}
        return model


def _learned_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's state but its outcome transforms, whose statistics belong to its data."""
    return {k: v for k, v in model.state_dict().items() if "outcome_transform." not in k}


@torch.no_grad()
def posterior_mean_std(
    model: GPyTorchModel,
    X: Tensor,
    *,
    batch_size: int = 4096,
    observation_noise: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Marginal predictive mean and standard deviation of the latent function at each row of
    ``X`` (``N x d``), in the units of the training data: each of shape ``(N,)`` for a model
    of one output, ``N x m`` for ``m`` outputs. With ``observation_noise``, the standard
    deviation of a new measurement there (the model's noise variance added).

    Works through ``X`` in batches of independent points, so memory grows with
    ``batch_size x n_train``, never with ``N x N``.
    """
    means, stds = [], []
    noise = [noise_variance(m) if observation_noise else 0.0 for m in members(model)]
    added = torch.tensor(noise, dtype=X.dtype, device=X.device)
    for batch in X.split(batch_size):
        posterior = model.posterior(batch.unsqueeze(-2))
        means.append(posterior.mean.reshape(len(batch), -1))
        variance = posterior.variance.reshape(len(batch), -1) + added
        stds.append(variance.clamp_min(0).sqrt())
    mean, std = torch.cat(means), torch.cat(stds)
    if mean.shape[1] == 1:
        mean, std = mean.squeeze(1), std.squeeze(1)
    return mean.cpu().numpy(), std.cpu().numpy()


def noise_variance(model: Any) -> float:
    """The variance of a measurement about the latent function, in the units of the training
    data: a `DKLModel`'s Gaussian noise, or a model's own ``noise_variance()``."""
    if hasattr(model, "noise_variance"):
        return float(model.noise_variance())
    noise = float(model.likelihood.noise.detach().reshape(-1)[0])
    return noise * float(model.outcome_transform.stdvs.reshape(-1)[0]) ** 2
