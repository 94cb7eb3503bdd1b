"""jVAE / jrVAE: a discrete class latent beside the continuous ones.

Generative model: y ~ Categorical(uniform over ``n_classes``), z ~ Normal(0, I), the transform
latents of `VAEConfig` (a jrVAE has ``rotation=True``), and x ~ Normal(T(decoder(z, y)), sd).
The guide is q(y | x) q(z, transforms | x). With ``discrete="enumerate"`` the ELBO sums exactly
over the classes (Pyro's ``TraceEnum_ELBO``, parallel enumeration); with ``"relaxed"`` y is a
Gumbel-softmax (``RelaxedOneHotCategorical`` at ``temperature``) sample instead, cheaper for
many classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO
from torch import Tensor, nn

from .networks import make_decoder
from .vae import VAE, VAEConfig, _np


@dataclass(frozen=True)
class JVAEConfig(VAEConfig):
    """`VAEConfig` plus ``n_classes`` and how the class latent is handled (``discrete``:
    ``"enumerate"`` or ``"relaxed"`` at ``temperature``)."""

    n_classes: int = 2
    discrete: Literal["enumerate", "relaxed"] = "enumerate"
    temperature: float = 0.5


class JVAE(VAE):
    """jVAE (jrVAE with ``rotation=True``) of `JVAEConfig`; ``loss(x)`` as `VAE`."""

    kind: ClassVar[str] = "jvae"
    config_class: ClassVar[type] = JVAEConfig
    config: JVAEConfig

    def _build(self) -> None:
        super()._build()
        # One canonical patch per class from a shared network (a mixture of decoders): the
        # class then has to matter, which a one-hot input to a single decoder does not force.
        c = self.config
        k, (ch, *rest) = c.n_classes, self.canonical_shape()
        self.decoder = make_decoder(
            c.decoder, c.latent_dim, tuple(reversed(c.hidden)), (k * ch, *rest)
        )
        self.classifier = nn.Linear(self.encoder.out_dim, self.config.n_classes)
        if self.config.discrete == "enumerate":
            self.elbo = TraceEnum_ELBO(max_plate_nesting=1)
        elif self.config.discrete != "relaxed":
            raise ValueError(
                f"discrete must be 'enumerate' or 'relaxed', got {self.config.discrete}"
            )

    def _class_prior(self, x: Tensor, observed: bool) -> dist.Distribution:
        logits = x.new_zeros(self.config.n_classes)
        if self.config.discrete == "relaxed" and not observed:
            return dist.RelaxedOneHotCategorical(
                torch.tensor(self.config.temperature), logits=logits
            )
        return dist.OneHotCategorical(logits=logits)

    def model(self, x: Tensor, y: Tensor | None = None) -> None:  # type: ignore[override]
        """p(x, y, z, transforms); ``y`` (B, K) one-hot when the classes are known."""
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", self._class_prior(x, y is not None), obs=y)
            z, t = self._prior_sample(x)
            self._observe(x, z, t, y)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:  # type: ignore[override]
        """q(y | x) q(z, transforms | x); no y site when y is observed."""
        h = self._features(x)
        with pyro.plate("data", x.shape[0]):
            if y is None:
                logits = self.classifier(h)
                if self.config.discrete == "enumerate":
                    pyro.sample(
                        "y", dist.OneHotCategorical(logits=logits), infer={"enumerate": "parallel"}
                    )
                else:
                    temperature = torch.tensor(self.config.temperature)
                    pyro.sample("y", dist.RelaxedOneHotCategorical(temperature, logits=logits))
            self._posterior_sample(h)

    def loss(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.elbo.differentiable_loss(self.model, self.guide, x) / x.shape[0]

    def _render(self, z: Tensor, t: Tensor | None, extra: Tensor | None = None) -> Tensor:
        if extra is None:
            raise ValueError("a jVAE renders a patch of a class")
        k, ch = self.config.n_classes, self.canonical_shape()[0]
        canonical = self.decoder(z).unflatten(-3, (k, ch))  # (..., K, C, Hc, Wc)
        lead = torch.broadcast_shapes(canonical.shape[:-4], extra.shape[:-1])
        weights = extra.expand(*lead, k)[..., :, None, None, None]
        canonical = (canonical * weights).sum(-4)
        return self._place(canonical, lead, t)

    def _extra_encoding(self, h: Tensor) -> dict[str, np.ndarray]:
        return {"class_probs": _np(torch.softmax(self.classifier(h), -1))}

    def decode(self, code: Tensor, extra: Tensor | None = None) -> Tensor:
        """As `VAE.decode`; ``extra`` is the class: integer labels (...,) or one-hot /
        probabilities (..., K); default class 0."""
        k = self.config.n_classes
        if extra is None:
            extra = torch.zeros(code.shape[:-1], dtype=torch.long, device=code.device)
        if not extra.is_floating_point():
            extra = torch.nn.functional.one_hot(extra.long(), k).to(code.dtype)
        return super().decode(code, extra)
