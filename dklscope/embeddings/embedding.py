"""`ModelEmbedding`: a VAE-family model and its trainer behind the `Embedding` protocol.

embedding = build_embedding(EmbeddingConfig(kind="rvae", latent_dim=2))
history = embedding.fit(patches)          # a PatchSet or an array (N, C, H, W)
enc = embedding.encode(patches)           # Encoding: enc.z_loc (N, d), enc.angle_loc (N,)
extractor = embedding.feature_extractor() # nn.Module: (N, C*H*W) -> (N, d)
embedding.save("rvae.pt"); embedding = ModelEmbedding.load("rvae.pt")
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .base import Encoding
from .io import load_model, save_model
from .networks import NetworkKind
from .trainer import SVITrainer, TrainerConfig, TrainingHistory

EmbeddingKind = Literal["vae", "rvae", "jvae", "jrvae", "ssvae", "cvae"]


@dataclass(frozen=True)
class EmbeddingConfig:
    """Which model embeds the patches and how it is trained.

    ``kind``: ``vae``; ``rvae`` (rotation latent, plus ``translation`` / ``scale`` if set);
    ``jvae`` / ``jrvae`` (``n_classes`` discrete classes, without / with rotation); ``ssvae``
    (classes, some labelled, with rotation if ``rotation``); ``cvae`` (conditioned on known
    values). Other fields as `dklscope.embeddings.vae.VAEConfig` and `TrainerConfig`.
    """

    kind: EmbeddingKind = "rvae"
    latent_dim: int = 2
    encoder: NetworkKind = "dense"
    decoder: NetworkKind = "dense"
    hidden: tuple[int, ...] = (256, 128)
    rotation: bool = False  # for ssvae and cvae; implied by rvae and jrvae
    translation: bool = False
    scale: bool = False
    rotation_prior: float = math.pi
    translation_prior_px: float = 1.0
    scale_prior: float = 0.1
    n_classes: int = 2
    discrete: Literal["enumerate", "relaxed"] = "enumerate"
    condition_dim: int = 1
    likelihood_sd: float = 0.1
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EmbeddingConfig:
        values = dict(values)
        trainer = TrainerConfig(**values.pop("trainer", {}))
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values, trainer=trainer)


def build_embedding(config: EmbeddingConfig | None = None) -> ModelEmbedding:
    """An untrained embedding of ``config``; the network is built at the first `fit`."""
    return ModelEmbedding(config or EmbeddingConfig())


class ModelEmbedding:
    """A model of the VAE family, trained on patches and encoding them (`Embedding`)."""

    def __init__(self, config: EmbeddingConfig, model: nn.Module | None = None) -> None:
        self.config = config
        self.model = model
        self.trainer = SVITrainer(config.trainer)

    def _build(self, patch_shape: tuple[int, ...]) -> nn.Module:
        from .cvae import ConditionalVAE, ConditionalVAEConfig
        from .jvae import JVAE, JVAEConfig
        from .ssvae import SSVAE, SSVAEConfig
        from .vae import VAE, VAEConfig

        c = self.config
        common = dict(
            patch_shape=patch_shape,
            latent_dim=c.latent_dim,
            encoder=c.encoder,
            decoder=c.decoder,
            hidden=c.hidden,
            rotation=c.rotation or c.kind in ("rvae", "jrvae"),
            translation=c.translation,
            scale=c.scale,
            rotation_prior=c.rotation_prior,
            translation_prior_px=c.translation_prior_px,
            scale_prior=c.scale_prior,
            likelihood_sd=c.likelihood_sd,
            seed=c.seed,
        )
        if c.kind in ("vae", "rvae"):
            return VAE(VAEConfig(**common))
        if c.kind in ("jvae", "jrvae"):
            return JVAE(JVAEConfig(**common, n_classes=c.n_classes, discrete=c.discrete))
        if c.kind == "ssvae":
            return SSVAE(SSVAEConfig(**common, n_classes=c.n_classes, discrete=c.discrete))
        if c.kind == "cvae":
            return ConditionalVAE(ConditionalVAEConfig(**common, condition_dim=c.condition_dim))
        raise ValueError(f"unknown embedding kind {c.kind!r}")

    def fit(self, patches: Any, labels: np.ndarray | None = None) -> TrainingHistory:
        """Train on ``patches`` (`PatchSet` or (N, C, H, W) / (N, H, W)); ``labels``: ssvae
        class labels (N,) with -1 where unknown, or cvae conditions (N, condition_dim). A
        second fit continues from the current weights."""
        x = as_patch_array(patches)
        if self.model is None:
            self.model = self._build(tuple(x.shape[1:]))
        arrays = [x] if labels is None else [x, np.asarray(labels)]
        if self.config.kind in ("ssvae", "cvae") and labels is None:
            raise ValueError(f"{self.config.kind} needs labels")
        return self.trainer.fit(self.model, *arrays)

    def _require(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError("fit (or load) the embedding first")
        return self.model

    def _device(self) -> torch.device:
        return next(self._require().parameters()).device

    def encode(
        self, patches: Any, labels: np.ndarray | None = None, *, batch_size: int = 4096
    ) -> Encoding:
        """Posterior means and scales of every patch (see `Encoding`); ``labels``: the cvae's
        conditions (N, condition_dim)."""
        model = self._require()
        x = as_patch_array(patches)
        device = self._device()
        parts = []
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size], device=device)
            args = []
            if labels is not None:
                cb = np.asarray(labels[i : i + batch_size], dtype=np.float32)
                args = [torch.as_tensor(cb, device=device)]
            parts.append(model.encode(xb, *args))  # type: ignore[operator]
        return Encoding.concatenate(parts)

    def decode(self, code: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """Patches (N, C, H, W) from codes (N, d) or full codes (N, d + transforms);
        ``extra``: classes (N,) for j/ss-VAE, conditions (N, k) for cvae."""
        model = self._require()
        device = self._device()
        z = torch.as_tensor(np.asarray(code, dtype=np.float32), device=device)
        e = None if extra is None else torch.as_tensor(np.asarray(extra), device=device)
        if e is not None and e.is_floating_point():
            e = e.to(torch.float32)
        return model.decode(z, e).cpu().numpy()  # type: ignore[operator]

    def evaluate(self, patches: Any, labels: np.ndarray | None = None) -> float:
        """Mean negative ELBO per patch (nats); changes no parameter."""
        x = as_patch_array(patches)
        arrays = [x] if labels is None else [x, np.asarray(labels)]
        return self.trainer.evaluate(self._require(), *arrays)  # type: ignore[arg-type]

    def feature_extractor(self) -> nn.Module:
        """A copy of the trained encoder: flattened patches (N, C*H*W) -> content means (N, d),
        float32 on the model's device (``.to(torch.float64)`` for the DKL)."""
        return self._require().feature_extractor()  # type: ignore[operator]

    def save(self, path: str | Path) -> None:
        """Write the embedding config, model config and weights to one file."""
        extra = {"embedding": dataclasses.asdict(self.config)}
        save_model(self._require(), path, extra=extra)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ModelEmbedding:
        """The embedding saved at ``path``, on ``device``."""
        model, extra = load_model(path, device)
        config = EmbeddingConfig.from_dict(extra["embedding"])
        config = dataclasses.replace(
            config, trainer=dataclasses.replace(config.trainer, device=str(device))
        )
        return cls(config, model)


def as_patch_array(patches: Any) -> np.ndarray:
    """Patches as float32 (N, C, H, W): from a `PatchSet`, (N, C, H, W) or (N, H, W)."""
    data = getattr(patches, "data", patches)
    x = np.asarray(data, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"expected patches (N, C, H, W) or (N, H, W), got shape {x.shape}")
    return x
