"""The surrogate models a campaign can use (``model.kind``), built from its config.

Every model is a Gaussian process over some view of a candidate:

- ``gp-xy``: the probe position alone: spatial smoothness, blind to structure (the same model
  as ``kind: dkl`` with ``input: coordinates``, the benchmarks' gp-xy baseline).
- ``gp-structure``: the patch's structure features: its leading principal components
  (`principal_components`: the linear embedding, trained on every patch, measured or not).
- ``gp-latents``: the embedding's latents (a VAE trained on every patch, when the config has an
  ``embedding:``), the non-linear structural embedding.
- ``gp-structure-xy``, ``gp-latents-xy``: structure and position in one product kernel with a
  lengthscale per feature: the GP is sure only where a measured point is near in structure
  *and* in place, and as the marginal likelihood stretches the lengthscales of what does not
  matter, it falls back on position where structure says little, and on structure where
  position says little.
- ``dkl``: a neural network's features of the patch (``model.input`` says which network and
  inputs), deep kernel learning as in `dklscope.model.dkl`.
- ``dkl-ensemble``: ``model.ensemble_size`` such networks with a GP each, trained together on
  Bayesian-bootstrap weights; their mixture is the prediction (`dklscope.model.ensemble`).
- ``bayesian-dkl``: one network whose last layer has a variational posterior (Pyro), the
  prediction a mixture over draws of it (`dklscope.model.bayesian_dkl`).
- ``auto`` (the default): the ``model.candidates`` above scored at every refit by their
  leave-one-out predictive density on the measured data; the first (``gp-xy``) is the
  reference, used unless another predicts clearly better
  (`dklscope.model.choice.AutoLearner`). By default the GPs on position, principal components
  and both, and with an embedding the GPs on its latents and on latents and position too: so
  the VAE's embedding is used where it predicts the measured points better than the linear one.

All of them see one candidate tensor (`ModelInputs`), whose columns hold the blocks they need;
each model's network starts with `Columns`, which takes its own columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from dklscope.config import CANDIDATE_KINDS, LATENT_KINDS

from .bayesian_dkl import BayesianDKLLearner
from .ensemble import EnsembleLearner
from .training import DKLLearner

if TYPE_CHECKING:
    from dklscope.config import ModelConfig
    from dklscope.embeddings import ModelEmbedding

# Training of the GPs without a network: a handful of hyperparameters that cannot overfit, so
# they train until they settle. The GPs on structure train by maximum a posteriori with
# BoTorch's priors (`DKLLearner`'s ``priors``): with the marginal likelihood alone, on a few
# BEPS points one of their lengthscales shrank to a pixel. The GP on position, auto's reference,
# trains by the marginal likelihood alone, as the field's gp-xy baseline does (`input:
# coordinates`, the same model): on the measured BEPS replay, the priors' long lengthscales made
# it smoother than the patchy map and its 50 % intervals too wide.
GP_FIRST_FIT_ITERATIONS = 200
GP_REFIT_ITERATIONS = 10
GP_LEARNING_RATE = 0.03
GP_XY_REFIT_ITERATIONS = 50
GP_XY_LEARNING_RATE = 0.01


class Learner(Protocol):
    """Fits a model to the data seen so far (`DKLLearner`, `AutoLearner`)."""

    def fit(self, X: Tensor, Y: Tensor) -> Any:
        """A BoTorch model of these data (``X`` ``n x d``; ``Y`` ``n`` or ``n x m``)."""
        ...

    def reset(self) -> None:
        """Forget what was learned: the next fit starts afresh."""
        ...

    def frozen(self) -> contextlib.AbstractContextManager[None]:
        """A block within which fits only condition on their data, without training."""
        ...

    def state_bytes(self) -> bytes:
        """Everything the next fit depends on, serialised."""
        ...

    def load_state_bytes(self, data: bytes) -> None:
        """Continue from what `state_bytes` wrote."""
        ...


class Columns(nn.Module):
    """``network`` on the columns ``index`` of its input (``... x d`` -> ``... x k``); without
    a network, the columns themselves (a GP on them)."""

    def __init__(self, index: Sequence[int], network: nn.Module | None = None) -> None:
        super().__init__()
        self.register_buffer("index", torch.as_tensor(list(index), dtype=torch.long))
        self.network = network if network is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x.index_select(-1, self.index))


@dataclass(frozen=True)
class ModelInputs:
    """The candidates as every model sees them: ``tensor`` (``N x d``, float64) and the column
    range of each block by name (``patches``: flattened standardised patches; ``structure``:
    standardised structure features; ``xy``: standardised probe positions)."""

    tensor: Tensor
    blocks: dict[str, tuple[int, int]]


def standardised(x: Tensor) -> Tensor:
    """Each column of ``x`` (``N x k``) to mean 0 and standard deviation 1."""
    return (x - x.mean(0)) / x.std(0).clamp_min(1e-12)


def principal_components(patches: np.ndarray, k: int) -> np.ndarray:
    """The scores of the ``k`` leading principal components of ``patches`` (``N x ...``,
    flattened per patch), each standardised: ``N x k``. Probabilistic PCA is the linear
    Gaussian latent-variable model, the VAE with a linear decoder (Tipping & Bishop 1999)."""
    flat = patches.reshape(len(patches), -1).astype(np.float64)
    flat = flat - flat.mean(0)
    k = min(k, *flat.shape)
    # The leading right singular vectors from the small p x p Gram matrix (p = pixels per patch).
    _, vectors = np.linalg.eigh(flat.T @ flat)
    scores = flat @ vectors[:, ::-1][:, :k]
    return scores / np.maximum(scores.std(0), 1e-12)


def model_inputs(
    model: ModelConfig,
    patches: np.ndarray,
    positions: np.ndarray,
    embedding: ModelEmbedding | None,
) -> tuple[ModelInputs, nn.Module | None]:
    """The candidates' model inputs for ``model``, from the standardised candidate ``patches``
    (``N x size x size``), their ``positions`` (``N x 2``) and the embedding, if any; and, for
    ``kind: dkl``, its network (None: a fresh MLP)."""
    xy = standardised(torch.as_tensor(positions, dtype=torch.float64))
    flat = torch.as_tensor(patches.reshape(len(patches), -1), dtype=torch.float64)
    if model.family == "dkl":
        return _dkl_inputs(model, patches, flat, xy, embedding)
    columns = {
        "structure": torch.as_tensor(
            principal_components(patches, model.structure_dim), dtype=torch.float64
        ),
        "xy": xy,
    }
    if embedding is not None:
        z = embedding.encode(patches[:, None].astype(np.float32)).z_loc
        columns["latents"] = standardised(torch.as_tensor(z, dtype=torch.float64))
    if {"dkl-ensemble", "bayesian-dkl"} & {model.family, *model.candidates}:
        columns["patches"] = flat
    blocks, start = {}, 0
    for name, block in columns.items():
        blocks[name] = (start, start + block.shape[1])
        start += block.shape[1]
    return ModelInputs(torch.cat(list(columns.values()), dim=1), blocks), None


def _dkl_inputs(
    model: ModelConfig,
    patches: np.ndarray,
    flat: Tensor,
    xy: Tensor,
    embedding: ModelEmbedding | None,
) -> tuple[ModelInputs, nn.Module | None]:
    """``kind: dkl``'s inputs and network, as ``model.input`` says."""
    p = flat.shape[1]
    if model.dkl_input == "coordinates":
        return ModelInputs(xy, {"xy": (0, 2)}), nn.Identity()
    if model.dkl_input == "patches":
        return ModelInputs(flat, {"patches": (0, p)}), None
    if model.dkl_input == "patches_and_position":  # the learner passes the last 2 columns through
        return ModelInputs(torch.cat([flat, xy], 1), {"patches": (0, p), "xy": (p, p + 2)}), None
    assert embedding is not None  # the config checks this
    if model.dkl_input == "latents":
        z = embedding.encode(patches[:, None].astype(np.float32)).z_loc
        latents = standardised(torch.as_tensor(z, dtype=torch.float64))
        return ModelInputs(latents, {"structure": (0, latents.shape[1])}), nn.Identity()
    return ModelInputs(flat, {"patches": (0, p)}), embedding.feature_extractor()


def build_learner(
    model: ModelConfig, inputs: ModelInputs, network: nn.Module | None, *, seed: int = 0
) -> Learner:
    """The learner of ``model`` (its ``kind``) over ``inputs``, initialised from ``seed``: a
    `DKLLearner`, an `EnsembleLearner`, a `BayesianDKLLearner`, or for ``auto`` an
    `AutoLearner` of one learner per candidate."""
    from .choice import AutoLearner

    if model.family == "dkl":
        return _dkl_learner(model, inputs, network, seed)
    if model.family != "auto":
        return _candidate(model, inputs, model.family, seed)
    candidates = model.candidates
    if "latents" in inputs.blocks and candidates == CANDIDATE_KINDS:  # the default list
        candidates = (*candidates, *LATENT_KINDS)
    learners = {name: _candidate(model, inputs, name, seed) for name in candidates}
    return AutoLearner(learners, seed=seed)


def _candidate(m: ModelConfig, inputs: ModelInputs, kind: str, seed: int) -> Learner:
    if kind in ("dkl-ensemble", "bayesian-dkl"):
        return _network_learner(m, inputs, kind, seed)
    return _gp_learner(m, inputs, kind, seed)


def _network_learner(m: ModelConfig, inputs: ModelInputs, kind: str, seed: int) -> Learner:
    """``model.ensemble_size`` DKL members, or a Bayesian DKL with as many draws of its last
    layer, on the patches block of ``inputs``."""
    start, stop = inputs.blocks["patches"]
    index = range(start, stop)
    cls: type = EnsembleLearner if kind == "dkl-ensemble" else BayesianDKLLearner
    size = {"n_members" if kind == "dkl-ensemble" else "n_samples": m.ensemble_size}
    return cls(
        stop - start,
        **size,
        network=Columns(index),
        **_network_training(m),
        seed=seed,
    )


def _network_training(m: ModelConfig) -> dict[str, Any]:
    """The config's network widths, kernel and training schedule, as a learner takes them."""
    return {
        "hidden": m.hidden,
        "feature_dim": m.feature_dim,
        "kernel": m.kernel,
        "noise_floor": m.noise_floor,
        "first_fit_iterations": m.first_fit_iterations,
        "refit_iterations": m.refit_iterations,
        "full_refit_every": m.full_refit_every,
        "train_subset": m.train_subset,
        "learning_rate": m.learning_rate,
    }


def _gp_learner(m: ModelConfig, inputs: ModelInputs, kind: str, seed: int) -> DKLLearner:
    """A GP on the blocks ``kind`` names: ``gp-`` then ``xy``, ``structure``, ``latents``, or
    one of the last two then ``-xy``."""
    names = kind.removeprefix("gp-").split("-")
    index = [i for name in names for i in range(*inputs.blocks[name])]
    on_position = names == ["xy"]  # the reference: trained as the gp-xy baseline
    return DKLLearner(
        inputs.tensor.shape[1],
        network=Columns(index),
        kernel=m.kernel,
        noise_floor=m.noise_floor,
        first_fit_iterations=GP_FIRST_FIT_ITERATIONS,
        refit_iterations=GP_XY_REFIT_ITERATIONS if on_position else GP_REFIT_ITERATIONS,
        full_refit_every=m.full_refit_every,
        train_subset=m.train_subset,
        learning_rate=GP_XY_LEARNING_RATE if on_position else GP_LEARNING_RATE,
        priors=not on_position,
        seed=seed,
    )


def _dkl_learner(
    m: ModelConfig, inputs: ModelInputs, network: nn.Module | None, seed: int
) -> DKLLearner:
    return DKLLearner(
        inputs.tensor.shape[1],
        network=network,
        freeze_network=m.dkl_input == "frozen_encoder",
        **_network_training(m),
        weight_decay=m.weight_decay,
        passthrough=2 if m.dkl_input == "patches_and_position" else 0,
        seed=seed,
    )
