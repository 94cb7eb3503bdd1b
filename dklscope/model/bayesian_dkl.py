"""Bayesian deep kernel learning: a GP on a network whose last layer is inferred, not fitted.

Deep kernel learning trained by maximum marginal likelihood overfits: every weight of the
network is tuned to the measured points, and the GP trusts the features it was given (Ober,
Rasmussen & van der Wilk 2021, "The promises and pitfalls of deep kernel learning", who
recommend a Bayesian treatment of the network). Here the network's last layer, the map from
its hidden units to the kernel's features, gets a Gaussian prior and a mean-field Gaussian
variational posterior (a "partially Bayesian" network, as in Harrison, Willes & Snoek 2024,
"Variational Bayesian last layers", and Kristiadi, Hein & Hennig 2020, "Being Bayesian, even
just a bit, fixes overconfidence in ReLU networks"); the hidden layers, the GP's
hyperparameters and the variational parameters are trained together by maximising the ELBO
with Pyro's SVI: the exact GP marginal likelihood of the measured scalars given the features
(`dklscope.model.training.GaussianFit`), in expectation over the last layer, minus its KL divergence
from the prior.

A prediction averages over ``n_samples`` draws of the last layer (fixed draws from the fitted
posterior, so a model predicts deterministically): a mixture of GPs that share their
hyperparameters, computed by `dklscope.model.ensemble.DKLEnsemble` (moment-matched for BoTorch,
exact for the leave-one-out density). Where the draws' features disagree (away from the patches the
data pin down), the GPs disagree, and the mixture is uncertain.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch import Tensor, nn

from .ensemble import DKLEnsemble
from .training import GaussianFit, WarmStart


class _Body(nn.Module):
    """The deterministic hidden layers ``in_dim -> hidden...`` with ReLUs (``... x h``)."""

    def __init__(self, in_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise([in_dim, *hidden]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class _Parameters(nn.Module):
    """Everything a Bayesian DKL learns: the body, the variational posterior of the last
    layer (``W`` ``h x k``, ``b`` ``k``) and the GP's unconstrained hyperparameters (the same
    parametrisation as `DKLEnsemble`'s)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], k: int) -> None:
        super().__init__()
        h = hidden[-1] if hidden else in_dim
        self.body = _Body(in_dim, hidden)
        self.W_loc = nn.Parameter(torch.randn(h, k) / math.sqrt(h))
        self.W_raw_scale = nn.Parameter(torch.full((h, k), -3.0))
        self.b_loc = nn.Parameter(torch.zeros(k))
        self.b_raw_scale = nn.Parameter(torch.full((k,), -3.0))
        self.raw_lengthscale = nn.Parameter(torch.zeros(k))
        self.raw_outputscale = nn.Parameter(torch.zeros(()))
        self.raw_noise = nn.Parameter(torch.full((), -2.0))
        self.constant = nn.Parameter(torch.zeros(()))
        self.prior_sd = 1.0 / math.sqrt(h)  # of the last layer's weights: unit-scale features


class BayesianDKLLearner(WarmStart):
    """Fits a Bayesian DKL (see the module's documentation) to the data seen so far, each fit
    warm-started from the last, with `dklscope.model.training.DKLLearner`'s interface and schedule
    (``first_fit_iterations`` SVI steps, then ``refit_iterations`` per fit, a fresh start every
    ``full_refit_every`` fits, at most ``train_subset`` points per step: the GP factor of a
    subset is scaled to the whole data set). ``network`` (e.g. `dklscope.model.family.Columns`)
    picks the inputs the body sees. Predictions mix ``n_samples`` draws of the last layer. One
    output only. Pyro's global parameter store is not used; the process' random state is
    untouched (every draw comes from generators seeded by ``seed``)."""

    def __init__(
        self,
        in_dim: int,
        *,
        network: nn.Module | None = None,
        hidden: Sequence[int] = (64, 32),
        feature_dim: int = 2,
        kernel: str = "rbf",
        noise_floor: float = 0.01,
        n_samples: int = 8,
        first_fit_iterations: int = 100,
        refit_iterations: int = 20,
        full_refit_every: int = 0,
        train_subset: int | None = 256,
        learning_rate: float = 0.01,
        seed: int = 0,
    ) -> None:
        self.prefix = network if network is not None else nn.Identity()
        self.in_dim, self.hidden, self.feature_dim = in_dim, tuple(hidden), feature_dim
        self.matern = kernel == "matern52"
        self.noise_floor, self.n_samples = noise_floor, n_samples
        self.first_fit_iterations = first_fit_iterations
        self.refit_iterations = refit_iterations
        self.full_refit_every = full_refit_every
        self.train_subset = train_subset
        self.learning_rate = learning_rate
        self.seed = seed
        self._init_warm_start(seed)

    def _fresh(self, in_dim: int) -> _Parameters:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return _Parameters(in_dim, self.hidden, self.feature_dim).double()

    def fit(self, X: Tensor, Y: Tensor) -> DKLEnsemble:
        """A Bayesian DKL of these data (``X`` ``n x d``, ``Y`` ``n`` or ``n x 1``), as a
        mixture of ``n_samples`` GPs (a `DKLEnsemble`)."""
        X = X.to(torch.float64)
        Y = Y.to(torch.float64).reshape(len(X), -1)
        if Y.shape[1] != 1:
            raise ValueError("a Bayesian DKL models one output; use kind dkl for several")
        keep = torch.isfinite(Y[:, 0])
        X, y_raw = X[keep], Y[keep, 0]
        y = (y_raw - y_raw.mean()) / y_raw.std().clamp_min(1e-12)
        inputs = self.prefix(X)
        params = self._fresh(inputs.shape[-1])
        iterations, afresh = self._next_iterations()
        if not afresh:
            params.load_state_dict(self._state)
        self._train(params, inputs, y, iterations)
        self._state = {k: v.detach().clone() for k, v in params.state_dict().items()}
        return self._mixture(params, X, y_raw)

    def _train(self, params: _Parameters, inputs: Tensor, y: Tensor, iterations: int) -> None:
        elbo = Trace_ELBO()
        optimizer = torch.optim.Adam(params.parameters(), lr=self.learning_rate)
        n = len(y)
        for _ in range(iterations):
            chosen = torch.arange(n)
            if self.train_subset is not None and n > self.train_subset:
                chosen = torch.randperm(n, generator=self._generator)[: self.train_subset]
            optimizer.zero_grad()
            seed = int(torch.randint(2**31 - 1, (), generator=self._generator))
            with pyro.poutine.seed(rng_seed=seed), torch.random.fork_rng(devices=[]):
                loss = elbo.differentiable_loss(
                    self._model, self._guide, params, inputs[chosen], y[chosen], n
                )
            (loss / n).backward()
            optimizer.step()

    def _model(self, params: _Parameters, inputs: Tensor, y: Tensor, n_total: int) -> None:
        h, k = params.W_loc.shape
        W = pyro.sample("W", dist.Normal(inputs.new_zeros(h, k), params.prior_sd).to_event(2))
        b = pyro.sample("b", dist.Normal(inputs.new_zeros(k), 1.0).to_event(1))
        z = params.body(inputs) @ W + b
        fit = GaussianFit.apply(
            z,
            F.softplus(params.raw_lengthscale) + 1e-6,
            F.softplus(params.raw_outputscale) + 1e-6,
            F.softplus(params.raw_noise) + self.noise_floor,
            y - params.constant,
            self.matern,
        )
        log_likelihood = -(fit + 0.5 * len(y) * math.log(2 * math.pi))
        pyro.factor("gp", log_likelihood * n_total / len(y))

    def _guide(self, params: _Parameters, inputs: Tensor, y: Tensor, n_total: int) -> None:
        pyro.sample(
            "W", dist.Normal(params.W_loc, F.softplus(params.W_raw_scale) + 1e-6).to_event(2)
        )
        pyro.sample(
            "b", dist.Normal(params.b_loc, F.softplus(params.b_raw_scale) + 1e-6).to_event(1)
        )

    def _mixture(self, params: _Parameters, X: Tensor, y: Tensor) -> DKLEnsemble:
        """The mixture of ``n_samples`` draws of the last layer from the fitted posterior
        (the same draws at every fit: a model's predictions do not jitter between steps)."""
        draws = torch.Generator().manual_seed(self.seed + 7919)
        h, k = params.W_loc.shape
        S = self.n_samples
        with torch.no_grad():
            eps_W = torch.randn(S, h, k, generator=draws, dtype=torch.float64)
            eps_b = torch.randn(S, 1, k, generator=draws, dtype=torch.float64)
            W = params.W_loc + (F.softplus(params.W_raw_scale) + 1e-6) * eps_W
            b = params.b_loc + (F.softplus(params.b_raw_scale) + 1e-6) * eps_b
        network = _SampledLastLayer(self.prefix, params.body, W, b)
        model = DKLEnsemble(
            X,
            y,
            network,
            torch.ones(S, len(y), dtype=torch.float64),
            noise_floor=self.noise_floor,
            matern=self.matern,
        )
        with torch.no_grad():
            model.raw_lengthscale.copy_(params.raw_lengthscale.expand(S, -1))
            model.raw_outputscale.fill_(float(params.raw_outputscale))
            model.raw_noise.fill_(float(params.raw_noise))
            model.constant.fill_(float(params.constant))
        model.eval()
        return model


class _SampledLastLayer(nn.Module):
    """``prefix -> body -> S`` drawn last layers: ``n x d`` -> ``S x n x k``."""

    def __init__(self, prefix: nn.Module, body: nn.Module, W: Tensor, b: Tensor) -> None:
        super().__init__()
        self.prefix, self.body = prefix, body
        self.register_buffer("W", W)  # S x h x k
        self.register_buffer("b", b)  # S x 1 x k

    @property
    def n_members(self) -> int:
        return int(self.W.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.body(self.prefix(x))
        return torch.baddbmm(self.b, hidden.unsqueeze(0).expand(self.n_members, -1, -1), self.W)
