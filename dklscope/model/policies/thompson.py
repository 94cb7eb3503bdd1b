"""Thompson sampling: posterior sample paths of a GP (`draw_posterior_paths`, by random Fourier
features and Matheron's rule) and the `ThompsonSampling` policy that maximises them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from botorch.models.model import Model
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from .base import BATCH_SIZE, Choice, PolicyState, best_unmeasured, free_indices, require_model


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
    `dklscope.model.dkl.DKLModel` or BoTorch's ``SingleTaskGP``.

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
        model = require_model(state, self)
        k = min(state.q, free_indices(state.measured).size)
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
