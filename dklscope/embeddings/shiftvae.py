"""shift-VAE: a VAE of 1-D spectra with a latent shift along the spectral axis.

Generative model, for spectra x of shape (C, L): z ~ Normal(0, I), shift ~ Normal(0,
``shift_prior_channels``) in channels, x ~ Normal(S(decoder(z); shift), sd), where the decoder
draws a canonical spectrum over ``canonical_extent`` (default 1.25) times the window and S
shifts it by linear interpolation. A peak that moves across spectra then moves the shift latent,
not the content.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .transform import shift_spectra
from .vae import VAE, VAEConfig


@dataclass(frozen=True)
class ShiftVAEConfig(VAEConfig):
    """`VAEConfig` with ``patch_shape`` = (C, L) spectra and a shift prior in channels; the
    rotation/translation/scale fields are ignored; only dense networks apply."""

    shift_prior_channels: float = 5.0


class ShiftVAE(VAE):
    """shift-VAE of `ShiftVAEConfig`; ``loss(x)`` for spectra x (B, C, L)."""

    kind: ClassVar[str] = "shiftvae"
    config_class: ClassVar[type] = ShiftVAEConfig
    config: ShiftVAEConfig

    def transform_names(self) -> list[str]:
        return ["shift"]

    def transform_prior_sd(self) -> Tensor:
        length = self.data_shape[-1]
        return torch.tensor([self.config.shift_prior_channels / (length / 2)])

    def extent(self) -> float:
        e = self.config.canonical_extent
        return 1.25 if e is None else float(e)

    def canonical_shape(self) -> tuple[int, ...]:
        c, length = self.data_shape
        return (c, math.ceil(length * self.extent()))

    def _apply_transforms(self, canonical: Tensor, t: Tensor) -> Tensor:
        return shift_spectra(canonical, self.data_shape[-1], extent=self.extent(), shift=t[:, 0])

    def _to_code(self, t: Tensor) -> Tensor:
        return t * self.data_shape[-1] / 2

    _scale_to_code = _to_code

    def _from_code(self, code: Tensor) -> Tensor:
        return code / (self.data_shape[-1] / 2)
