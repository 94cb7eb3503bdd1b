"""Cut an image into patches on a regular grid, keeping where each patch came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


@dataclass(frozen=True)
class Patches:
    """``data[i]`` is the patch centred on pixel ``(rows[i], cols[i])`` of the image.

    ``data`` has shape (N, size, size); for an even ``size`` the centre is the pixel just
    below and right of the patch's middle. ``grid_shape`` is the (rows, cols) shape of the
    grid of centres, so a per-patch quantity of shape (N,) reshapes to a map.
    """

    data: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    grid_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.rows)


def grid_patches(
    image: np.ndarray,
    size: int,
    *,
    stride: int = 1,
    edge: Literal["reflect", "drop"] = "reflect",
) -> Patches:
    """Patches of ``size`` x ``size`` pixels centred every ``stride`` pixels of ``image``.

    ``edge="reflect"`` pads the image by reflection so that every grid pixel gets a patch;
    ``edge="drop"`` keeps only centres whose patch lies wholly inside the image.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    if not 1 <= size <= min(image.shape):
        raise ValueError(f"patch size {size} does not fit an image of shape {image.shape}")
    before = size // 2  # pixels of the patch before its centre
    if edge == "reflect":
        padded = np.pad(image, ((before, size - 1 - before),) * 2, mode="reflect")
        first = 0
    elif edge == "drop":
        padded, first = image, before
    else:
        raise ValueError(f"edge must be 'reflect' or 'drop', got {edge!r}")
    windows = sliding_window_view(padded, (size, size))[::stride, ::stride]
    grid_shape = windows.shape[:2]
    centres_r = first + stride * np.arange(grid_shape[0])
    centres_c = first + stride * np.arange(grid_shape[1])
    rows, cols = (a.ravel() for a in np.meshgrid(centres_r, centres_c, indexing="ij"))
    return Patches(
        data=np.ascontiguousarray(windows.reshape(-1, size, size)),
        rows=rows,
        cols=cols,
        grid_shape=grid_shape,
    )
