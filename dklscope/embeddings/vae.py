"""VAE and rVAE: a Gaussian latent code for each patch, optionally with rotation, translation
and scale latents that a spatial transformer applies to the decoded patch.

Generative model, for a patch x of shape (C, H, W) standardised to about unit variance:

    z ~ Normal(0, I_d)                         content
    angle ~ Normal(0, rotation_prior)          radians        (rotation=True)
    offset ~ Normal(0, translation_prior_px)   pixels (x, y)  (translation=True)
    log_scale ~ Normal(0, scale_prior)                        (scale=True)
    x ~ Normal(T(decoder(z); angle, offset, log_scale), likelihood_sd)

where the decoder draws a canonical patch over ``canonical_extent`` times the field of view and
``T`` rotates, scales and shifts it (`dklscope.embeddings.transform`). The guide is
q(z, transforms | x) = Normal(encoder(x)), diagonal. Because the transforms are explicit, the
content latents cannot need to describe orientation, position or magnification: rotating a
patch moves its angle latent, not its content.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO
from torch import Tensor, nn

from .base import Encoding
from .networks import NetworkKind, make_decoder, make_encoder
from .trainer import isolated_rng
from .transform import transform_patches


@dataclass(frozen=True)
class VAEConfig:
    """A VAE of patches of ``patch_shape`` (C, H, W) with ``latent_dim`` content latents.

    ``encoder``/``decoder``: ``"dense"`` or ``"conv"`` networks with ``hidden`` widths (the
    decoder's reversed). ``rotation``, ``translation``, ``scale``: add those latents (an rVAE
    has ``rotation=True``) with Normal priors of standard deviation ``rotation_prior``
    (radians), ``translation_prior_px`` (pixels) and ``scale_prior`` (log magnification).
    ``canonical_extent``: the decoded canonical patch's field of view in patch widths (None:
    1 without transforms, 1.5 with). ``likelihood_sd``: the Gaussian noise of a pixel, in the
    patches' units. ``kl_weight``: the weight of the content latents' KL term (beta of a
    beta-VAE; > 1 pushes information into the other latents). ``seed``: initial weights.
    """

    patch_shape: tuple[int, ...]
    latent_dim: int = 2
    encoder: NetworkKind = "dense"
    decoder: NetworkKind = "dense"
    hidden: tuple[int, ...] = (256, 128)
    rotation: bool = False
    translation: bool = False
    scale: bool = False
    rotation_prior: float = math.pi
    translation_prior_px: float = 1.0
    scale_prior: float = 0.1
    canonical_extent: float | None = None
    likelihood_sd: float = 0.1
    kl_weight: float = 1.0
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VAEConfig:
        """The config of `dataclasses.asdict` output (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


class VAE(nn.Module):
    """VAE / rVAE of `VAEConfig`; a Pyro ``model``/``guide`` pair plus its networks.

    Train it with `dklscope.embeddings.trainer.SVITrainer`; ``loss(x)`` is the mean negative
    ELBO of a batch x (B, C, H, W) in nats per patch.
    """

    kind: ClassVar[str] = "vae"
    config_class: ClassVar[type] = VAEConfig
    n_decoder_inputs: int = 0  # inputs of the decoder beside the latents (classes, conditions)
    n_encoder_inputs: int = 0  # inputs of the encoder's head beside the patch (conditions)

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        with isolated_rng(config.seed):
            self._build()

    # --- structure ------------------------------------------------------------------------

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.config.patch_shape)

    def transform_names(self) -> list[str]:
        """The transform latents, in the order of the code: angle, offset_x, offset_y,
        log_scale (those in the config)."""
        c = self.config
        return (
            ["angle"] * c.rotation
            + ["offset_x", "offset_y"] * c.translation
            + ["log_scale"] * c.scale
        )

    def transform_prior_sd(self) -> Tensor:
        """Prior standard deviations of the transform latents in internal units (offsets
        normalised to half a patch)."""
        c = self.config
        _, h, w = self.data_shape
        sd = {
            "angle": c.rotation_prior,
            "offset_x": c.translation_prior_px / (w / 2),
            "offset_y": c.translation_prior_px / (h / 2),
            "log_scale": c.scale_prior,
        }
        return torch.tensor([sd[n] for n in self.transform_names()])

    def canonical_shape(self) -> tuple[int, ...]:
        c, h, w = self.data_shape
        e = self.extent()
        return (c, math.ceil(h * e), math.ceil(w * e))

    def extent(self) -> float:
        if self.config.canonical_extent is not None:
            return float(self.config.canonical_extent)
        return 1.5 if self.transform_names() else 1.0

    def _build(self) -> None:
        c = self.config
        d, n_t = c.latent_dim, len(self.transform_names())
        self.encoder = make_encoder(c.encoder, self.data_shape, c.hidden)
        self.head = nn.Linear(self.encoder.out_dim + self.n_encoder_inputs, 2 * (d + n_t))
        self.decoder = make_decoder(
            c.decoder, d + self.n_decoder_inputs, tuple(reversed(c.hidden)), self.canonical_shape()
        )
        self.register_buffer("_prior_sd", self.transform_prior_sd(), persistent=False)
        self.elbo = Trace_ELBO(max_plate_nesting=1)

    # --- Pyro model and guide -------------------------------------------------------------

    def model(self, x: Tensor, extra: Tensor | None = None) -> None:
        """p(x, z, transforms) for a batch x (B, *data_shape); ``extra`` (B, k) decoder inputs."""
        with pyro.plate("data", x.shape[0]):
            z, t = self._prior_sample(x)
            self._observe(x, z, t, extra)

    def guide(self, x: Tensor, extra: Tensor | None = None) -> None:
        """q(z, transforms | x)."""
        with pyro.plate("data", x.shape[0]):
            self._posterior_sample(self._features(x), extra if self.n_encoder_inputs else None)

    def loss(self, x: Tensor) -> Tensor:
        """Mean negative ELBO of the batch x, nats per sample (differentiable)."""
        return self.elbo.differentiable_loss(self.model, self.guide, x) / x.shape[0]

    def _prior_sample(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        d = self.config.latent_dim
        with poutine.scale(scale=self.config.kl_weight):
            z = pyro.sample("z", dist.Normal(x.new_zeros(d), 1.0).to_event(1))
        t = None
        if len(self._prior_sd):
            t = pyro.sample(
                "t", dist.Normal(torch.zeros_like(self._prior_sd), self._prior_sd).to_event(1)
            )
        return z, t

    def _observe(self, x: Tensor, z: Tensor, t: Tensor | None, extra: Tensor | None) -> None:
        loc = self._render(z, t, extra)
        ndim = len(self.data_shape)
        pyro.sample("x", dist.Normal(loc, self.config.likelihood_sd).to_event(ndim), obs=x)

    def _features(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def _posterior(self, h: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if cond is not None:
            h = torch.cat([h, cond], -1)
        loc, raw = self.head(h).chunk(2, -1)
        return loc, F.softplus(raw) + 1e-4

    def _posterior_sample(self, h: Tensor, cond: Tensor | None = None) -> None:
        loc, scale = self._posterior(h, cond)
        d = self.config.latent_dim
        with poutine.scale(scale=self.config.kl_weight):
            pyro.sample("z", dist.Normal(loc[..., :d], scale[..., :d]).to_event(1))
        if loc.shape[-1] > d:
            pyro.sample("t", dist.Normal(loc[..., d:], scale[..., d:]).to_event(1))

    # --- rendering ------------------------------------------------------------------------

    def _render(self, z: Tensor, t: Tensor | None, extra: Tensor | None = None) -> Tensor:
        """Decoded patches (..., *data_shape) for latents z (..., d), internal transforms t
        (..., n_t) and decoder inputs ``extra`` (..., k), all broadcast together."""
        if extra is not None:
            lead = torch.broadcast_shapes(z.shape[:-1], extra.shape[:-1])
            z = torch.cat([z.expand(*lead, -1), extra.expand(*lead, -1)], -1)
        return self._place(self.decoder(z), z.shape[:-1], t)

    def _place(self, canonical: Tensor, lead: tuple[int, ...], t: Tensor | None) -> Tensor:
        """Canonical patches (*lead, *canonical_shape) transformed by t (..., n_t)."""
        if not self.transform_names():
            return canonical
        if t is None:
            t = canonical.new_zeros(len(self.transform_names()))
        lead = torch.broadcast_shapes(tuple(lead), t.shape[:-1])
        cshape = self.canonical_shape()
        canonical = canonical.expand(*lead, *cshape).reshape(-1, *cshape)
        t = t.expand(*lead, -1).reshape(-1, t.shape[-1])
        out = self._apply_transforms(canonical, t)
        return out.reshape(*lead, *self.data_shape)

    def _apply_transforms(self, canonical: Tensor, t: Tensor) -> Tensor:
        names = self.transform_names()
        get = {n: t[:, i] for i, n in enumerate(names)}
        offset = None
        if "offset_x" in get:
            offset = torch.stack([get["offset_x"], get["offset_y"]], -1)
        return transform_patches(
            canonical,
            tuple(self.data_shape[1:]),
            extent=self.extent(),
            angle=get.get("angle"),
            offset=offset,
            log_scale=get.get("log_scale"),
        )

    # --- units of the code ----------------------------------------------------------------

    def _to_code(self, t: Tensor) -> Tensor:
        """Internal transforms (..., n_t) to the reported units: offsets in pixels (row, col)."""
        names = self.transform_names()
        if "offset_x" not in names:
            return t
        _, h, w = self.data_shape
        i = names.index("offset_x")
        px = torch.stack([t[..., i + 1] * h / 2, t[..., i] * w / 2], -1)
        return torch.cat([t[..., :i], px, t[..., i + 2 :]], -1)

    def _from_code(self, code: Tensor) -> Tensor:
        names = self.transform_names()
        if "offset_x" not in names:
            return code
        _, h, w = self.data_shape
        i = names.index("offset_x")
        norm = torch.stack([code[..., i + 1] / (w / 2), code[..., i] / (h / 2)], -1)
        return torch.cat([code[..., :i], norm, code[..., i + 2 :]], -1)

    def _scale_to_code(self, s: Tensor) -> Tensor:
        names = self.transform_names()
        if "offset_x" not in names:
            return s
        _, h, w = self.data_shape
        i = names.index("offset_x")
        px = torch.stack([s[..., i + 1] * h / 2, s[..., i] * w / 2], -1)
        return torch.cat([s[..., :i], px, s[..., i + 2 :]], -1)

    # --- public inference -----------------------------------------------------------------

    @torch.no_grad()
    def encode(self, x: Tensor, cond: Tensor | None = None) -> Encoding:
        """Posterior means and standard deviations of a batch x (B, *data_shape)."""
        h = self._features(x)
        loc, scale = self._posterior(h, cond if self.n_encoder_inputs else None)
        d = self.config.latent_dim
        out: dict[str, np.ndarray] = {
            "z_loc": _np(loc[:, :d]),
            "z_scale": _np(scale[:, :d]),
        }
        t_loc, t_scale = self._to_code(loc[:, d:]), self._scale_to_code(scale[:, d:])
        out.update(self._split_code(t_loc, t_scale))
        out.update(self._extra_encoding(h))
        return Encoding(**out)

    def _split_code(self, t_loc: Tensor, t_scale: Tensor) -> dict[str, np.ndarray]:
        names = self.transform_names()
        out: dict[str, np.ndarray] = {}
        if "angle" in names:
            i = names.index("angle")
            out["angle_loc"], out["angle_scale"] = _np(t_loc[:, i]), _np(t_scale[:, i])
        if "offset_x" in names:
            i = names.index("offset_x")
            out["offset_loc"] = _np(t_loc[:, i : i + 2])
            out["offset_scale"] = _np(t_scale[:, i : i + 2])
        if "log_scale" in names:
            i = names.index("log_scale")
            out["log_scale_loc"], out["log_scale_scale"] = _np(t_loc[:, i]), _np(t_scale[:, i])
        if "shift" in names:
            i = names.index("shift")
            out["shift_loc"], out["shift_scale"] = _np(t_loc[:, i]), _np(t_scale[:, i])
        return out

    def _extra_encoding(self, h: Tensor) -> dict[str, np.ndarray]:
        return {}

    @torch.no_grad()
    def decode(self, code: Tensor, extra: Tensor | None = None) -> Tensor:
        """Patches (..., *data_shape) decoded from ``code`` (..., d) (transforms 0) or the full
        code (..., d + n_t) as `Encoding.code` gives it; ``extra``: the decoder's other
        inputs (class one-hots, conditions), (..., k)."""
        d, n_t = self.config.latent_dim, len(self.transform_names())
        if code.shape[-1] not in (d, d + n_t):
            raise ValueError(f"a code has {d} or {d + n_t} values, got {code.shape[-1]}")
        t = self._from_code(code[..., d:]) if code.shape[-1] > d else None
        return self._render(code[..., :d], t, extra)

    def feature_extractor(self) -> nn.Module:
        """A copy of the encoder mapping flattened patches (N, C*H*W) to the content latents'
        means (N, d): a starting point for the DKL feature extractor."""
        return _ContentEncoder(self)


class _ContentEncoder(nn.Module):
    """Flattened patches (..., prod(data_shape)) -> content means (..., d)."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        import copy

        self.data_shape = vae.data_shape
        self.latent_dim = vae.config.latent_dim
        self.encoder = copy.deepcopy(vae.encoder)
        self.head = copy.deepcopy(vae.head)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        h = self.encoder(x.reshape(-1, *self.data_shape))
        return self.head(h)[:, : self.latent_dim].reshape(*lead, self.latent_dim)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
