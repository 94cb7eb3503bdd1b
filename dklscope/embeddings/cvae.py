"""Conditional VAE: known labels or parameters c enter both the encoder and the decoder.

Generative model: z ~ Normal(0, I), x ~ Normal(T(decoder(z, c)), sd), with the transform
latents of `VAEConfig` if asked; guide q(z, transforms | x, c). ``c`` (B, condition_dim) is a
one-hot label or any continuous parameters (scaled to about unit range), so z describes what
c does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from .base import Encoding
from .vae import VAE, VAEConfig


@dataclass(frozen=True)
class ConditionalVAEConfig(VAEConfig):
    """`VAEConfig` plus the number of conditioning values."""

    condition_dim: int = 1


class ConditionalVAE(VAE):
    """Conditional VAE of `ConditionalVAEConfig`; ``loss(x, c)``."""

    kind: ClassVar[str] = "cvae"
    config_class: ClassVar[type] = ConditionalVAEConfig
    config: ConditionalVAEConfig

    @property
    def n_decoder_inputs(self) -> int:  # type: ignore[override]
        return self.config.condition_dim

    @property
    def n_encoder_inputs(self) -> int:  # type: ignore[override]
        return self.config.condition_dim

    def loss(self, x: Tensor, c: Tensor) -> Tensor:  # type: ignore[override]
        return self.elbo.differentiable_loss(self.model, self.guide, x, c) / x.shape[0]

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Encoding:
        if cond is None:
            raise ValueError("a conditional VAE encodes a patch with its condition")
        return super().encode(x, cond)

    def feature_extractor(self) -> nn.Module:
        raise NotImplementedError("a conditional VAE's encoder needs the condition as input")
