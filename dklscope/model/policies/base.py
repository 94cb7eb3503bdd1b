"""The policy protocol (`PolicyState`, `Choice`, `Policy`), the checking of a policy's answer
(`checked_choice`, `decide`) and the helpers the built-in policies share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.models.model import Model
from torch import Tensor

from ..dkl import posterior_mean_std

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
    """Chooses where to measure next; see the package's documentation."""

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


def require_model(state: PolicyState, policy: object) -> Model:
    if state.model is None:
        raise ValueError(f"policy {type(policy).__name__} needs a model; state.model is None")
    return state.model


def require_one_point(state: PolicyState, policy: object) -> None:
    if state.q != 1:
        raise ValueError(
            f"policy {type(policy).__name__} chooses one point at a time, not q = {state.q}"
        )


def require_incumbent(state: PolicyState, policy: object) -> float:
    if not math.isfinite(state.best_f):
        raise ValueError(
            f"policy {type(policy).__name__} needs a finite incumbent best_f, got {state.best_f}"
        )
    return state.best_f


def free_indices(measured: np.ndarray) -> np.ndarray:
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
    free = free_indices(measured)
    s = torch.nan_to_num(scores.detach().cpu()[free], nan=-math.inf)
    order = torch.sort(s, descending=True, stable=True).indices[:k].numpy()
    return [int(i) for i in free[order]]
