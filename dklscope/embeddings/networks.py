"""Encoder and decoder networks shared by the models of `dklscope.embeddings`.

Every network maps a batch with any number of leading dimensions: an encoder takes
``... x *in_shape`` to ``... x features``, a decoder ``... x in_dim`` to ``... x *out_shape``.
``"dense"`` networks flatten their input and work on any shape (patches (C, H, W), spectra
(C, L)); ``"conv"`` networks are for patches (C, H, W) only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

NetworkKind = Literal["dense", "conv"]


def _mlp(widths: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return layers


class DenseEncoder(nn.Module):
    """``... x *in_shape -> ... x hidden[-1]``: flatten, then Linear + SiLU layers."""

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int]) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_dim = hidden[-1]
        self.net = nn.Sequential(*_mlp([math.prod(self.in_shape), *hidden]))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[: x.dim() - len(self.in_shape)]
        return self.net(x.reshape(*lead, -1))


class ConvEncoder(nn.Module):
    """``... x C x H x W -> ... x hidden[-1]``: stride-2 3x3 convolutions (``channels`` wide),
    then Linear + SiLU layers."""

    def __init__(
        self, in_shape: Sequence[int], hidden: Sequence[int], channels: Sequence[int] = (16, 32)
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(f"a conv encoder takes (C, H, W) patches, got shape {in_shape}")
        self.in_shape = tuple(in_shape)
        self.out_dim = hidden[-1]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise([in_shape[0], *channels]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.SiLU()]
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            n = self.conv(torch.zeros(1, *in_shape)).numel()
        self.dense = nn.Sequential(*_mlp([n, *hidden]))

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-3]
        h = self.conv(x.reshape(-1, *self.in_shape))
        return self.dense(h.reshape(h.shape[0], -1)).reshape(*lead, -1)


class DenseDecoder(nn.Module):
    """``... x in_dim -> ... x *out_shape``: Linear + SiLU layers and a linear output."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_shape: Sequence[int]) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = nn.Sequential(
            *_mlp([in_dim, *hidden]), nn.Linear(hidden[-1], math.prod(self.out_shape))
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).reshape(*z.shape[:-1], *self.out_shape)


class ConvDecoder(nn.Module):
    """``... x in_dim -> ... x C x H x W``: Linear + SiLU layers to a ``channels[0]`` x H/4 x W/4
    map, then two (upsample x2, 3x3 conv) stages, cropped to H x W."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_shape: Sequence[int],
        channels: Sequence[int] = (32, 16),
    ) -> None:
        super().__init__()
        if len(out_shape) != 3:
            raise ValueError(f"a conv decoder makes (C, H, W) patches, got shape {out_shape}")
        self.out_shape = tuple(out_shape)
        c, h, w = out_shape
        self.start = (channels[0], math.ceil(h / 4), math.ceil(w / 4))
        self.dense = nn.Sequential(*_mlp([in_dim, *hidden, math.prod(self.start)]))
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise([*channels, channels[-1]]):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(a, b, 3, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(channels[-1], c, 3, padding=1))
        self.conv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        x = self.conv(self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start))
        _, h, w = self.out_shape
        return x[..., :h, :w].reshape(*lead, *self.out_shape)


def make_encoder(
    kind: NetworkKind, in_shape: Sequence[int], hidden: Sequence[int]
) -> DenseEncoder | ConvEncoder:
    """An encoder of ``kind`` for inputs of ``in_shape``; its ``out_dim`` is ``hidden[-1]``."""
    if kind == "dense":
        return DenseEncoder(in_shape, hidden)
    if kind == "conv":
        return ConvEncoder(in_shape, hidden)
    raise ValueError(f"encoder must be 'dense' or 'conv', got {kind!r}")


def make_decoder(
    kind: NetworkKind, in_dim: int, hidden: Sequence[int], out_shape: Sequence[int]
) -> DenseDecoder | ConvDecoder:
    """A decoder of ``kind`` from ``in_dim`` latents to ``out_shape``."""
    if kind == "dense":
        return DenseDecoder(in_dim, hidden, out_shape)
    if kind == "conv":
        return ConvDecoder(in_dim, hidden, out_shape)
    raise ValueError(f"decoder must be 'dense' or 'conv', got {kind!r}")
