"""Training of deep kernel learning models (`dklscope.model.dkl.DKLModel`).

`DKLLearner` trains a model as data arrive, warm-starting each fit from the previous weights
(the schedule of `WarmStart`, which the other learners share). Training minimises the exact
negative marginal log likelihood (`negative_mll`, a Cholesky factorisation of the training
covariance) on random subsets of at most ``train_subset`` points per iteration.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from botorch.models import ModelListGP
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor, nn

from .dkl import (
    DKLModel,
    Kernel,
    Passthrough,
    correlation,
    is_matern,
    members,
    mlp,
    scaled_sq_dist,
)

NOISE_PRIOR = (-4.0, 1.0)  # LogNormal (loc, scale) of the standardised noise variance


class GaussianFit(torch.autograd.Function):
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
        E, slope = correlation(scaled_sq_dist(z, z, lengthscale), matern, slope=True)
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
    of its work per iteration (`GaussianFit`)."""
    z = model.feature_extractor(X)
    kernel = model.covar_module
    lengthscale = kernel.base_kernel.lengthscale
    fit = GaussianFit.apply(
        z,
        lengthscale.reshape(-1),
        kernel.outputscale.reshape(()),
        model.likelihood.noise.reshape(()),
        y - model.mean_module(z),
        is_matern(kernel.base_kernel),
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
