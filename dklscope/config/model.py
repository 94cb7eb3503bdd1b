"""The ``patches:``, ``model:`` and ``embedding:`` sections: what the surrogate model sees and
which model it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import check


@dataclass(frozen=True)
class PatchConfig:
    """Square patches of the overview around each candidate probe position."""

    size: int = 10  # pixels a side
    stride: int = 1  # pixels between candidate positions
    edge: Literal["reflect", "drop"] = "reflect"  # pad the image by reflection, or drop edges

    def __post_init__(self) -> None:
        check(self.size >= 2, "size", f"must be >= 2, got {self.size}")
        check(self.stride >= 1, "stride", f"must be >= 1, got {self.stride}")


CANDIDATE_KINDS = ("gp-xy", "gp-structure-xy", "gp-structure")  # auto's default candidates
LATENT_KINDS = ("gp-latents-xy", "gp-latents")  # and with an embedding, these too
AUTO_CANDIDATES = (*CANDIDATE_KINDS, *LATENT_KINDS, "dkl-ensemble", "bayesian-dkl")


@dataclass(frozen=True)
class ModelConfig:
    """The surrogate model: a Gaussian process over the probe position, the patch's structure
    features, or a neural network's features of the patch (`dklscope.model.family`)."""

    # Which model (`dklscope.model.family`): ``auto`` (the default) scores the ``candidates``
    # at every refit by their leave-one-out predictive density on the measured points and uses
    # the best; ``gp-xy`` a GP on the probe position; ``gp-structure`` a GP on the patches'
    # leading principal components; ``gp-latents`` on the embedding's latents (needs an
    # ``embedding:``); ``gp-structure-xy``, ``gp-latents-xy`` either with the position in one
    # kernel; ``dkl`` deep kernel
    # learning, a network's features of the patches (``input`` says which); ``dkl-ensemble``
    # ``ensemble_size`` such networks with a GP each, their mixture the prediction;
    # ``bayesian-dkl`` one network whose last layer is inferred by variational Bayes (Pyro),
    # ``ensemble_size`` draws of it mixed (several times slower to train). Default:
    # ``dkl`` when ``input`` is given (as configs before ``kind`` existed), else ``auto``.
    kind: (
        Literal[
            "auto",
            "gp-xy",
            "gp-structure",
            "gp-structure-xy",
            "gp-latents",
            "gp-latents-xy",
            "dkl",
            "dkl-ensemble",
            "bayesian-dkl",
        ]
        | None
    ) = None
    # auto: the models it chooses among, the first its reference (used unless another predicts
    # clearly better); by default CANDIDATE_KINDS, and LATENT_KINDS too with an embedding
    candidates: tuple[str, ...] = CANDIDATE_KINDS
    structure_dim: int = 4  # principal components of the patches, without an embedding
    ensemble_size: int = 4  # dkl-ensemble: members; bayesian-dkl: draws of the last layer
    # kind dkl: what the GP's network sees: the raw patches through a fresh MLP (``patches``,
    # the default); the embedding's fixed latents, the GP on them directly (``latents``); the
    # patches through the embedding's trained encoder, trained further (``encoder``) or not
    # (``frozen_encoder``); only the probe positions, a plain GP on (x, y) blind to structure
    # (``coordinates``); or the raw patches through a fresh MLP with the positions beside its
    # features, so the GP needs both a similar structure and a near place to be sure
    # (``patches_and_position``).
    input: (
        Literal[
            "patches",
            "latents",
            "encoder",
            "frozen_encoder",
            "coordinates",
            "patches_and_position",
        ]
        | None
    ) = None
    hidden: tuple[int, ...] = (64, 32)  # widths of the hidden layers
    feature_dim: int = 2  # dimension of the learned features the kernel sees
    kernel: Literal["rbf", "matern52"] = "rbf"
    noise_floor: float = 0.01  # least noise variance, as a fraction of the scalars' variance
    # Adam steps of the first fit: more fit the measured points more closely and make the GP
    # overconfident elsewhere (on held-out truths of simulated samples, 95% intervals held
    # 91% after 200 steps and 95% after 100, with the same campaign quality).
    first_fit_iterations: int = 100
    refit_iterations: int = 20  # Adam steps of each later fit, warm-started (0: condition only)
    full_refit_every: int = 0  # every this many fits start afresh (0: never)
    # Points per training step at most (null: all of them): at 500 measurements, 256 per step
    # gave maps as good as all 500 (held-out r and RMSE on three samples) at an eighth of the
    # factorisation's cost.
    train_subset: int | None = 256
    learning_rate: float = 0.01
    weight_decay: float = 0.0  # shrinks the network's weights each step (AdamW), against overfit

    def __post_init__(self) -> None:
        check(
            self.kind in (None, "dkl") or self.input is None,
            "input",
            f"is read only by kind 'dkl', not {self.kind!r}",
        )
        check(len(self.candidates) >= 1, "candidates", "must name at least one model")
        for name in self.candidates:
            check(
                name in AUTO_CANDIDATES,
                "candidates",
                f"must be among {', '.join(AUTO_CANDIDATES)}; got {name!r}",
            )
        check(
            len(set(self.candidates)) == len(self.candidates),
            "candidates",
            f"names a model twice: {list(self.candidates)}",
        )
        check(self.structure_dim >= 1, "structure_dim", f"must be >= 1, got {self.structure_dim}")
        check(self.ensemble_size >= 1, "ensemble_size", f"must be >= 1, got {self.ensemble_size}")
        check(
            all(h >= 1 for h in self.hidden),
            "hidden",
            f"widths must be >= 1, got {list(self.hidden)}",
        )
        check(self.feature_dim >= 1, "feature_dim", f"must be >= 1, got {self.feature_dim}")
        check(
            self.first_fit_iterations >= 1,
            "first_fit_iterations",
            f"must be >= 1, got {self.first_fit_iterations}",
        )
        check(
            self.refit_iterations >= 0,
            "refit_iterations",
            f"must be >= 0, got {self.refit_iterations}",
        )
        check(
            0 < self.noise_floor < 1,
            "noise_floor",
            f"must be in (0, 1), got {self.noise_floor}",
        )
        check(
            self.full_refit_every >= 0,
            "full_refit_every",
            f"must be >= 0, got {self.full_refit_every}",
        )
        check(
            self.train_subset is None or self.train_subset >= 2,
            "train_subset",
            f"must be >= 2 or null, got {self.train_subset}",
        )
        check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")

    @property
    def family(self) -> str:
        """The model used: ``kind``, or when it is not given ``dkl`` if ``input`` is and
        ``auto`` otherwise."""
        return self.kind or ("dkl" if self.input is not None else "auto")

    @property
    def dkl_input(self) -> str:
        """What kind ``dkl``'s network sees: ``input``, ``patches`` by default."""
        return self.input or "patches"


@dataclass(frozen=True)
class EmbeddingSection:
    """A structural embedding of the overview's patches (`dklscope.embeddings`), made before
    the first measurement: trained on every candidate patch, or read from ``load``."""

    kind: Literal["none", "vae", "rvae", "jvae", "jrvae"] = "none"
    latent_dim: int = 2  # content latents
    epochs: int = 30  # at most; training stops early when the held-out ELBO stalls
    load: str | None = None  # an embedding.pt from an earlier campaign instead of training

    def __post_init__(self) -> None:
        check(self.latent_dim >= 1, "latent_dim", f"must be >= 1, got {self.latent_dim}")
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
