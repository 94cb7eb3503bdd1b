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

    from dklscope import Choice, PolicyState, posterior_mean_std


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

from dklscope.config import POLICY_KINDS, ConfigError, PolicyConfig

from .analytic import (
    BetaSchedule,
    ExpectedImprovement,
    MaximumVariance,
    ProbabilityOfImprovement,
    UpperConfidenceBound,
)
from .base import (
    BATCH_SIZE,
    Choice,
    Decision,
    Policy,
    PolicyState,
    analytic_values,
    best_unmeasured,
    checked_choice,
    decide,
)
from .baselines import CoordinateGP, RandomChoice, RasterScan, serpentine_order
from .batch import QLogExpectedImprovement, QUpperConfidenceBound
from .thompson import PosteriorPaths, ThompsonSampling, draw_posterior_paths

__all__ = [
    "BATCH_SIZE",
    "POLICIES",
    "BetaSchedule",
    "Choice",
    "CoordinateGP",
    "Decision",
    "ExpectedImprovement",
    "MaximumVariance",
    "Policy",
    "PolicyState",
    "PosteriorPaths",
    "ProbabilityOfImprovement",
    "QLogExpectedImprovement",
    "QUpperConfidenceBound",
    "RandomChoice",
    "RasterScan",
    "ThompsonSampling",
    "UpperConfidenceBound",
    "analytic_values",
    "best_unmeasured",
    "build_policy",
    "checked_choice",
    "decide",
    "draw_posterior_paths",
    "serpentine_order",
]

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
