"""VED: a variational encoder-decoder from one kind of data to another.

im2spec maps a structure patch (C, H, W) to a spectrum (C', L); spec2im the reverse. Model:
z ~ Normal(0, I_d), y ~ Normal(decoder(z), sd); guide q(z | x) = Normal(encoder(x)). The ELBO
E_q[log p(y | z)] - KL(q(z | x) || p(z)) bounds log p(y | x), so the latent is a bottleneck
through which the input must explain the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO
from torch import Tensor, nn

from .base import Encoding
from .networks import NetworkKind, make_decoder, make_encoder
from .trainer import isolated_rng
from .vae import _np


@dataclass(frozen=True)
class VEDConfig:
    """Inputs of ``input_shape`` to outputs of ``output_shape`` through ``latent_dim`` latents;
    networks as `dklscope.embeddings.vae.VAEConfig` (conv only for (C, H, W) shapes);
    ``likelihood_sd`` in the outputs' units."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    latent_dim: int = 4
    encoder: NetworkKind = "dense"
    decoder: NetworkKind = "dense"
    hidden: tuple[int, ...] = (256, 128)
    likelihood_sd: float = 0.1
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VEDConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class VED(nn.Module):
    """VED of `VEDConfig`; ``loss(x, y)`` is the mean negative ELBO per pair."""

    kind: ClassVar[str] = "ved"
    config_class: ClassVar[type] = VEDConfig

    def __init__(self, config: VEDConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        with isolated_rng(c.seed):
            self.encoder = make_encoder(c.encoder, c.input_shape, c.hidden)
            self.head = nn.Linear(self.encoder.out_dim, 2 * c.latent_dim)
            self.decoder = make_decoder(
                c.decoder, c.latent_dim, tuple(reversed(c.hidden)), c.output_shape
            )
        self.elbo = Trace_ELBO(max_plate_nesting=1)

    def _posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loc, raw = self.head(self.encoder(x)).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-4

    def model(self, x: Tensor, y: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.config.latent_dim), 1.0).to_event(1))
            ndim = len(self.config.output_shape)
            loc = self.decoder(z)
            pyro.sample("y", dist.Normal(loc, self.config.likelihood_sd).to_event(ndim), obs=y)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        loc, scale = self._posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return self.elbo.differentiable_loss(self.model, self.guide, x, y) / x.shape[0]

    @torch.no_grad()
    def encode(self, x: Tensor) -> Encoding:
        loc, scale = self._posterior(x)
        return Encoding(z_loc=_np(loc), z_scale=_np(scale))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The decoded output at the posterior mean of each input: (B, *output_shape)."""
        return self.decoder(self._posterior(x)[0])

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Outputs (..., *output_shape) for latents z (..., d)."""
        return self.decoder(z)

    @property
    def n_outputs(self) -> int:
        return math.prod(self.config.output_shape)
