"""Acquisition policies: given what was measured and what the model predicts, choose where to
measure next.

A policy is any object with a ``needs_model`` attribute and a ``choose(state)`` method (the
`Policy` protocol). The campaign hands it a `PolicyState`: the model (a BoTorch `Model` of the
scalar, fitted to every finite measurement, or None when ``needs_model`` is False), the
candidates (``N x d`` model inputs), their probe positions (``N x 2`` (x, y) overview pixels),
the mask of those already measured, the measured scalars in measurement order, the incumbent
``best_f``, the policy step, the campaign's random generator and ``q``, the number of points to
choose. The policy returns a `Choice`: up to ``q`` distinct unmeasured candidate indices, first
measured first, with an acquisition value for each (written to the journal) or None; a plain
list of indices is accepted too. The campaign measures the chosen points in order, each one
journaled before the probe moves on, and asks again. `decide` checks a policy's answer and
adds the model's prediction at each chosen point.

Built-in policies (`POLICIES`; YAML ``policy: {kind: ...}``, see `dklscope.config.PolicyConfig`):

``ei`` `ExpectedImprovement`, ``pi`` `ProbabilityOfImprovement`, ``ucb``
`UpperConfidenceBound` (``mean + sqrt(beta) * std``, BoTorch's convention, with a constant,
annealed or listed `BetaSchedule`), ``max_variance`` `MaximumVariance`, ``thompson``
`ThompsonSampling` (random-Fourier-feature prior paths updated by Matheron's rule, see
`draw_posterior_paths`), ``qlogei`` `QLogExpectedImprovement` and ``qucb``
`QUpperConfidenceBound` (greedy batches of q points), and the baselines ``random``
`RandomChoice`, ``raster`` `RasterScan` and ``coordinate_gp`` `CoordinateGP`.

The analytic policies evaluate the model's independent marginals (``model.posterior`` on
``batch x 1 x d``) in batches of at most ``batch_size`` candidates: memory grows with the
batch, never with ``N x N``. The incumbent of ``ei``, ``pi`` and ``qlogei`` is ``best_f``, the
largest finite scalar measured (noisy measurements make it optimistic; the model's values are
of the noise-free scalar).

Writing your own policy. A policy that ranks by the upper confidence bound, but only within
``radius`` pixels of the best measurement while any candidate there is left::

    # my_policies.py, somewhere on the Python path
    import numpy as np

    from dklscope.dkl import posterior_mean_std
    from dklscope.policies import Choice, PolicyState


    class LocalUCB:
        needs_model = True  # the campaign fits the model before each choice

        def __init__(self, radius: float = 10.0, kappa: float = 2.0) -> None:
            self.radius, self.kappa = radius, kappa

        def choose(self, state: PolicyState) -> Choice:
            mean, std = posterior_mean_std(state.model, state.candidates)  # each (N,)
            score = mean + self.kappa * std
            score[state.measured] = -np.inf
            best = state.measured_indices[np.argmax(state.scalars)]
            distance = np.hypot(*(state.positions - state.positions[best]).T)  # pixels
            near = np.where(distance <= self.radius, score, -np.inf)
            if np.isfinite(near).any():
                score = near
            i = int(np.argmax(score))
            return Choice((i,), (float(score[i]),))

and in the campaign's YAML::

    policy:
      kind: my_policies:LocalUCB
      params: {radius: 8, kappa: 2.0}

`build_policy` imports the class, builds it with ``params`` as keyword arguments and checks
that it has ``choose`` and ``needs_model``; a policy that needs more than one point at a time
reads ``state.q`` (``policy: {q: 4}``). Use ``state.rng`` for any randomness, so a campaign
replays from its seed.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from botorch.acquisition import analytic
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.acquisition.monte_carlo import qUpperConfidenceBound
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.sampling.normal import SobolQMCNormalSampler
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from .config import POLICY_KINDS, ConfigError, PolicyConfig
from .dkl import posterior_mean_std

log = logging.getLogger(__name__)

BATCH_SIZE = 4096  # candidates per posterior evaluation


# -- the public protocol ----------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyState:
    """What a policy sees when it chooses."""

    model: Model | None  # BoTorch model of the scalar at candidate inputs (None if no model)
    candidates: Tensor  # N x d model inputs (flattened patches or embeddings)
    positions: np.ndarray  # N x 2 (x, y) probe positions in overview pixels
    measured: np.ndarray  # (N,) bool: measured, pending or out of reach (never choose these)
    scalars: np.ndarray  # (n,) scalars of the measured candidates, measurement order (finite)
    measured_indices: np.ndarray  # (n,) their candidate indices, same order
    best_f: float  # the largest finite scalar measured (-inf if none): the incumbent
    step: int  # policy measurements so far: 0 for the first policy step after the seed points
    rng: np.random.Generator  # the campaign's generator: use it for any randomness
    q: int = 1  # how many points to choose at once
    # (p,) candidates being measured while the policy chooses; the model has seen them at its
    # own predicted mean (`DKLModel.condition_on_pending`)
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    # With `config.predict`: the model of each output by name ("scalar", which is ``model``,
    # then each of config.predict's with 2 finite values or more), for policies that weigh
    # other properties too (a constraint, a second objective); None otherwise. Only the
    # scalar's has seen the ``pending`` points.
    outputs: dict[str, Model] | None = None


@dataclass(frozen=True)
class Choice:
    """A policy's answer: ``indices`` are distinct unmeasured candidate indices, at least one
    and at most ``q``, first measured first; ``values`` the acquisition value of each (written
    to the journal), or None."""

    indices: tuple[int, ...]
    values: tuple[float, ...] | None = None


class Policy(Protocol):
    """Chooses where to measure next; see the module's documentation."""

    needs_model: bool  # False: ``state.model`` is None and the campaign fits no model for it

    def choose(self, state: PolicyState) -> Choice | Sequence[int]: ...


@dataclass(frozen=True)
class Decision:
    """One chosen candidate as the campaign journals it: its acquisition value and the model's
    predicted mean and standard deviation there, in the scalar's units (NaN where unknown)."""

    index: int
    acquisition_value: float = math.nan
    predicted_mean: float = math.nan
    predicted_std: float = math.nan


def checked_choice(policy: object, answer: object, state: PolicyState) -> Choice:
    """``answer`` (a `Choice` or a sequence of indices) as a `Choice`, or a `ValueError`
    naming the policy's class when the indices are not 1 to ``state.q`` distinct, in-range,
    unmeasured candidates or the values do not match them."""
    name = type(policy).__name__
    if isinstance(answer, Choice):
        raw, values = answer.indices, answer.values
    elif isinstance(answer, Tensor):
        raw, values = tuple(answer.detach().reshape(-1).tolist()), None
    elif isinstance(answer, Sequence | np.ndarray) and not isinstance(answer, str):
        raw, values = tuple(np.asarray(answer).reshape(-1).tolist()), None
    else:
        raise ValueError(
            f"policy {name} returned {type(answer).__name__}, not a Choice or a list of indices"
        )
    n = len(state.measured)
    if not 1 <= len(raw) <= state.q:
        raise ValueError(f"policy {name} chose {len(raw)} points; it must choose 1 to {state.q}")
    for i in raw:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise ValueError(f"policy {name} chose {i!r}, which is not a candidate index")
        if not 0 <= i < n:
            raise ValueError(f"policy {name} chose index {i}, outside the {n} candidates")
        if state.measured[i]:
            raise ValueError(f"policy {name} chose candidate {i}, which is already measured")
    indices = tuple(int(i) for i in raw)
    if len(set(indices)) != len(indices):
        raise ValueError(f"policy {name} chose a candidate twice: {list(indices)}")
    if values is not None:
        values = tuple(float(v) for v in values)
        if len(values) != len(indices):
            raise ValueError(
                f"policy {name} gave {len(values)} values for {len(indices)} chosen points"
            )
    return Choice(indices, values)


def decide(policy: Policy, state: PolicyState) -> list[Decision]:
    """Ask ``policy`` to choose, check its answer (`checked_choice`) and return one `Decision`
    per chosen point, in order, with the model's predicted mean and standard deviation there
    when ``state.model`` is given."""
    choice = checked_choice(policy, policy.choose(state), state)
    k = len(choice.indices)
    values = choice.values if choice.values is not None else (math.nan,) * k
    mean, std = np.full(k, math.nan), np.full(k, math.nan)
    if state.model is not None:
        mean, std = posterior_mean_std(state.model, state.candidates[list(choice.indices)])
    return [
        Decision(i, v, float(m), float(s))
        for i, v, m, s in zip(choice.indices, values, mean, std, strict=True)
    ]


# -- helpers ----------------------------------------------------------------------------------


def _model(state: PolicyState, policy: object) -> Model:
    if state.model is None:
        raise ValueError(f"policy {type(policy).__name__} needs a model; state.model is None")
    return state.model


def _one_point(state: PolicyState, policy: object) -> None:
    if state.q != 1:
        raise ValueError(
            f"policy {type(policy).__name__} chooses one point at a time, not q = {state.q}"
        )


def _incumbent(state: PolicyState, policy: object) -> float:
    if not math.isfinite(state.best_f):
        raise ValueError(
            f"policy {type(policy).__name__} needs a finite incumbent best_f, got {state.best_f}"
        )
    return state.best_f


def _free(measured: np.ndarray) -> np.ndarray:
    free = np.flatnonzero(~np.asarray(measured, dtype=bool))
    if free.size == 0:
        raise ValueError("every candidate is already measured")
    return free


@torch.no_grad()
def analytic_values(
    acquisition: AcquisitionFunction, X: Tensor, batch_size: int = BATCH_SIZE
) -> Tensor:
    """A q = 1 acquisition function at each row of ``X`` (``N x d``): shape ``(N,)``, computed
    in batches of independent points (``batch x 1 x d``)."""
    return torch.cat([acquisition(b.unsqueeze(-2)).reshape(-1) for b in X.split(batch_size)])


def best_unmeasured(scores: Tensor, measured: np.ndarray, k: int = 1) -> list[int]:
    """The ``k`` unmeasured indices with the largest ``scores`` (``(N,)``), best first; ties go
    to the lower index and NaN ranks last."""
    free = _free(measured)
    s = torch.nan_to_num(scores.detach().cpu()[free], nan=-math.inf)
    order = torch.sort(s, descending=True, stable=True).indices[:k].numpy()
    return [int(i) for i in free[order]]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


# -- analytic single-point policies ------------------------------------------------------------


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
        model = _model(state, self)
        return analytic_values(self._acquisition(model, state), state.candidates, self.batch_size)

    def choose(self, state: PolicyState) -> Choice:
        _one_point(state, self)
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
        return analytic.LogExpectedImprovement(model, best_f=_incumbent(state, self))

    def _value(self, score: float) -> float:
        return math.exp(score)


class ProbabilityOfImprovement(_Analytic):
    """Maximise PI(x) = P(f(x) > best_f) = Φ((μ(x) - best_f) / σ(x)), ranked through BoTorch's
    `LogProbabilityOfImprovement` (finite where PI underflows); the value is PI, in [0, 1]."""

    def _acquisition(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.LogProbabilityOfImprovement(model, best_f=_incumbent(state, self))

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


def _schedule(
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
        self.schedule = _schedule(beta, schedule, decay, betas)

    def _acquisition(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.UpperConfidenceBound(model, beta=self.schedule.at(state.step))


class MaximumVariance(_Analytic):
    """Pure exploration: the largest posterior standard deviation σ(x) of the noise-free f
    (BoTorch's `PosteriorStandardDeviation`); the value is σ in the scalar's units."""

    def _acquisition(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.PosteriorStandardDeviation(model)


# -- Thompson sampling ------------------------------------------------------------------------


class PosteriorPaths:
    """``n_paths`` functions drawn from (approximately) the posterior of a GP's noise-free f,
    each evaluated on any inputs: ``paths(X)`` for ``X`` of shape ``N x d`` is ``n_paths x N``,
    in the units of the training data. Built by `draw_posterior_paths`."""

    def __init__(
        self,
        model: Model,
        omega: Tensor,
        phase: Tensor,
        weights: Tensor,
        amplitude: float,
        update: Tensor,
        train_features: Tensor,
    ) -> None:
        self.model = model
        self.omega, self.phase, self.weights = omega, phase, weights  # P x L x k, P x L, P x L
        self.amplitude = amplitude
        self.update, self.train_features = update, train_features  # P x n, n x k

    @property
    def n_paths(self) -> int:
        return int(self.weights.shape[0])

    def _features(self, X: Tensor) -> Tensor:
        return _features(self.model, X)

    def prior(self, Z: Tensor) -> Tensor:
        """The prior paths at features ``Z`` (``M x k``), standardised units: ``P x M``."""
        angles = torch.einsum("mk,plk->pml", Z, self.omega) + self.phase.unsqueeze(-2)
        waves = self.amplitude * torch.einsum("pml,pl->pm", torch.cos(angles), self.weights)
        return waves + self.model.mean_module(Z).reshape(1, -1)

    @torch.no_grad()
    def __call__(self, X: Tensor, batch_size: int = BATCH_SIZE) -> Tensor:
        # Keep the P x batch x L angles within about 2^24 numbers.
        per_batch = self.n_paths * self.omega.shape[1]
        batch = max(1, min(batch_size, 2**24 // per_batch))
        out = []
        for xb in X.split(batch):
            Z = self._features(xb)
            cross = self.model.covar_module(Z, self.train_features).to_dense()  # B x n
            out.append(self.prior(Z) + self.update @ cross.T)
        values = torch.cat(out, dim=-1)
        return _untransform(self.model, values)


def _features(model: Model, X: Tensor, *, transform: bool = True) -> Tensor:
    """The inputs the model's kernel sees: its input transform (unless ``transform`` is False:
    a BoTorch model in eval mode keeps its training inputs transformed), then its feature
    extractor."""
    if transform and hasattr(model, "transform_inputs"):
        X = model.transform_inputs(X)
    extractor = getattr(model, "feature_extractor", None)
    return X if extractor is None else extractor(X)


def _untransform(model: Model, values: Tensor) -> Tensor:
    transform = getattr(model, "outcome_transform", None)
    if transform is None:
        return values
    return values * transform.stdvs.reshape(()) + transform.means.reshape(())


def _spectral_frequencies(
    base: Any, n_paths: int, n_features: int, rng: np.random.Generator, like: Tensor
) -> Tensor:
    """Frequencies of the kernel's spectral density, scaled by its lengthscales: P x L x k."""
    lengthscale = base.lengthscale.detach().reshape(-1)
    k = lengthscale.numel()
    normal = rng.standard_normal((n_paths, n_features, k))
    if isinstance(base, MaternKernel):
        # Matérn-ν's spectral density is a Student t with 2ν degrees of freedom.
        dof = 2 * float(base.nu)
        normal = normal / np.sqrt(rng.chisquare(dof, (n_paths, n_features, 1)) / dof)
    elif not isinstance(base, RBFKernel):
        raise TypeError(f"Thompson sampling supports RBF and Matérn kernels, not {type(base)}")
    return torch.as_tensor(normal, dtype=like.dtype, device=like.device) / lengthscale


@torch.no_grad()
def draw_posterior_paths(
    model: Model, n_paths: int, rng: np.random.Generator, n_features: int = 1024
) -> PosteriorPaths:
    """Draw ``n_paths`` sample paths of an exact GP's posterior of the noise-free f.

    Works on an exact gpytorch GP with a ``ScaleKernel`` over an RBF or Matérn kernel (ARD),
    a Gaussian likelihood and optionally a ``feature_extractor`` (deep kernel learning: the
    kernel sees g(x)), an input transform and a ``Standardize`` outcome transform, such as
    `dklscope.dkl.DKLModel` or BoTorch's ``SingleTaskGP``.

    The method (pathwise conditioning, Wilson et al. 2020): each path's prior is a random
    Fourier feature expansion ``f0(z) = m(z) + sqrt(2 s / L) Σ_l w_l cos(ω_l·z + b_l)`` on the
    features ``z = g(x)``, with ω_l drawn from the kernel's spectral density (scaled by the
    lengthscales), b_l uniform in [0, 2π), w_l standard normal and L = ``n_features``; it is
    then updated exactly with the n training data by Matheron's rule,
    ``f(x) = f0(x) + k(x, X) (K + σ²I)⁻¹ (y - f0(X) - ε)`` with ε ~ N(0, σ²I). Each path has its
    own frequencies, so over many draws the mean and covariance of the paths are exactly the
    posterior's (the prior's covariance is the kernel in expectation over the frequencies);
    a single path is a finite-rank, slightly non-Gaussian approximation whose prior error
    shrinks as 1/sqrt(L). Evaluating a path costs ``O(N (L k + n))``, never ``N x N``; drawing
    costs one ``n x n`` Cholesky factorisation. All randomness comes from ``rng``.
    """
    if not isinstance(getattr(model, "covar_module", None), ScaleKernel):
        raise TypeError(
            "Thompson sampling needs an exact GP with a ScaleKernel covar_module, "
            f"not {type(model).__name__}"
        )
    model.eval()
    X = model.train_inputs[0]
    y = model.train_targets.reshape(-1)
    Z = _features(model, X, transform=False)
    kernel = model.covar_module
    omega = _spectral_frequencies(kernel.base_kernel, n_paths, n_features, rng, Z)
    as_tensor = lambda a: torch.as_tensor(a, dtype=Z.dtype, device=Z.device)  # noqa: E731
    phase = as_tensor(rng.uniform(0, 2 * math.pi, (n_paths, n_features)))
    weights = as_tensor(rng.standard_normal((n_paths, n_features)))
    amplitude = math.sqrt(2 * float(kernel.outputscale) / n_features)
    n = y.shape[0]
    noise = model.likelihood.noise.detach().reshape(-1).expand(n)
    chol = psd_safe_cholesky(kernel(Z).to_dense() + torch.diag(noise))
    paths = PosteriorPaths(model, omega, phase, weights, amplitude, torch.empty(0), Z)
    epsilon = as_tensor(rng.standard_normal((n_paths, n))) * noise.sqrt()
    residual = y.reshape(1, -1) - paths.prior(Z) - epsilon  # P x n
    paths.update = torch.cholesky_solve(residual.T, chol).T
    return paths


class ThompsonSampling:
    """Draw one posterior sample path per point to choose (`draw_posterior_paths`, with
    ``features`` random Fourier features) and take each path's maximum over the unmeasured
    candidates not yet chosen. The value is the sampled f there, in the scalar's units."""

    needs_model = True

    def __init__(self, features: int = 1024, batch_size: int = BATCH_SIZE) -> None:
        self.features, self.batch_size = features, batch_size

    def choose(self, state: PolicyState) -> Choice:
        model = _model(state, self)
        k = min(state.q, _free(state.measured).size)
        paths = draw_posterior_paths(model, k, state.rng, self.features)
        samples = paths(state.candidates, self.batch_size)  # k x N
        taken = np.asarray(state.measured, dtype=bool).copy()
        indices, values = [], []
        for path in samples:
            (index,) = best_unmeasured(path, taken)
            taken[index] = True
            indices.append(index)
            values.append(float(path[index]))
        return Choice(tuple(indices), tuple(values))


# -- batches by Monte Carlo acquisition ---------------------------------------------------------


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
        model = _model(state, self)
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
        return analytic.LogExpectedImprovement(model, best_f=_incumbent(state, self))

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
        self.schedule = _schedule(beta, schedule, decay, betas)

    def _analytic(self, model: Model, state: PolicyState) -> AcquisitionFunction:
        return analytic.UpperConfidenceBound(model, beta=self.schedule.at(state.step))

    def _mc(
        self, model: Model, state: PolicyState, sampler: SobolQMCNormalSampler
    ) -> AcquisitionFunction:
        return qUpperConfidenceBound(model, beta=self.schedule.at(state.step), sampler=sampler)


# -- baselines --------------------------------------------------------------------------------


class RandomChoice:
    """A baseline: ``q`` distinct candidates drawn uniformly among those not yet measured."""

    needs_model = False

    def choose(self, state: PolicyState) -> Choice:
        free = _free(state.measured)
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
        _one_point(state, self)
        best_f = _incumbent(state, self)
        gp = self.fit(state)
        positions = torch.as_tensor(np.asarray(state.positions), dtype=torch.float64)
        acquisition = analytic.LogExpectedImprovement(gp, best_f=best_f)
        scores = analytic_values(acquisition, positions, self.batch_size)
        (index,) = best_unmeasured(scores, state.measured)
        return Choice((index,), (math.exp(float(scores[index])),))


# -- registry and factory ---------------------------------------------------------------------

POLICIES: dict[str, type] = {
    "ei": ExpectedImprovement,
    "pi": ProbabilityOfImprovement,
    "ucb": UpperConfidenceBound,
    "max_variance": MaximumVariance,
    "thompson": ThompsonSampling,
    "qlogei": QLogExpectedImprovement,
    "qucb": QUpperConfidenceBound,
    "random": RandomChoice,
    "raster": RasterScan,
    "coordinate_gp": CoordinateGP,
}
"""The built-in policies by their YAML ``kind``; `dklscope.config.POLICY_KINDS` lists the keys
each reads, which `build_policy` passes to its constructor."""


def build_policy(config: PolicyConfig) -> Policy:
    """The policy ``config`` describes. A ``"package.module:ClassName"`` kind is imported and
    built with ``config.params`` as keyword arguments; a failure is a `ConfigError` naming
    ``policy.kind`` (cannot import, not a policy) or ``policy.params`` (refused arguments)."""
    if config.kind in POLICIES:
        given = {
            key: getattr(config, key)
            for key in POLICY_KINDS[config.kind]
            if getattr(config, key) is not None
        }
        try:
            return POLICIES[config.kind](**given)
        except ValueError as exc:
            raise ConfigError("policy", str(exc)) from None
    module, _, name = config.kind.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception as exc:  # any failure to import the user's module
        raise ConfigError(
            "policy.kind", f"cannot import {config.kind!r}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        policy = cls(**(config.params or {}))
    except Exception as exc:  # the user's constructor refusing its parameters
        raise ConfigError(
            "policy.params", f"{config.kind} refused {config.params or {}}: {exc}"
        ) from None
    if not callable(getattr(policy, "choose", None)) or not isinstance(
        getattr(policy, "needs_model", None), bool
    ):
        raise ConfigError(
            "policy.kind",
            f"{config.kind} is not a policy: it needs a choose(state) method and a "
            "needs_model attribute (True or False)",
        )
    return policy
