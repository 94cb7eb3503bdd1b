"""Spatial transformers: place a decoded canonical patch or spectrum in the observed frame.

Rather than decoding every pixel from its (rotated) coordinates, as coordinate-conditioned rVAE
decoders do, the decoder draws one canonical patch on a field of view ``extent`` times wider
than the patch, and `transform_patches` resamples it rotated, shifted and scaled (one
``affine_grid`` + bilinear ``grid_sample``). The cost per patch is then one decoder pass, not
one per pixel.

Conventions: coordinates are (x, y) = (col, row) normalised so that the patch spans [-1, 1] in
each (``align_corners=False``); an offset of 1 is half a patch. The observed patch is the
canonical one rotated by ``angle`` (radians, from +x towards +y), scaled by ``exp(log_scale)``
about the centre, then shifted by ``offset``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def transform_patches(
    canonical: Tensor,
    out_hw: tuple[int, int],
    *,
    extent: float,
    angle: Tensor | None = None,
    offset: Tensor | None = None,
    log_scale: Tensor | None = None,
) -> Tensor:
    """Resample ``canonical`` (M, C, Hc, Wc), which covers ``extent`` times the patch's field of
    view, to patches (M, C, *out_hw). ``angle`` (M,) radians, ``offset`` (M, 2) normalised
    (x, y), ``log_scale`` (M,); ``None`` means 0. Outside the canonical field of view is 0."""
    m = canonical.shape[0]
    zeros = canonical.new_zeros(m)
    angle = zeros if angle is None else angle
    log_scale = zeros if log_scale is None else log_scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    k = torch.exp(-log_scale) / extent
    # source = k R(-angle) (target - offset)
    a = (
        torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
        * k[:, None, None]
    )
    b = torch.zeros_like(a[..., 0]) if offset is None else -(a @ offset[..., None])[..., 0]
    theta = torch.cat([a, b[..., None]], -1)
    grid = F.affine_grid(theta, [m, canonical.shape[1], *out_hw], align_corners=False)
    return F.grid_sample(
        canonical, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def shift_spectra(canonical: Tensor, length: int, *, extent: float, shift: Tensor) -> Tensor:
    """Resample canonical spectra (M, C, Lc), covering ``extent`` times the observed window, to
    (M, C, length) shifted by ``shift`` (M,) in normalised units (1 = half the window)."""
    x = torch.linspace(-1 + 1 / length, 1 - 1 / length, length, device=canonical.device)
    x = (x[None, :] - shift[:, None]) / extent
    grid = torch.stack([x, torch.zeros_like(x)], -1)[:, None]  # (M, 1, L, 2)
    out = F.grid_sample(
        canonical[:, :, None], grid.to(canonical.dtype), align_corners=False, padding_mode="zeros"
    )
    return out[:, :, 0]
