"""Cut images into patches, keeping where each patch came from.

`grid_patches` cuts one image on a regular grid (the campaign's candidates). `extract_patches`
cuts patches around any centres (atoms from `dklscope.embeddings.atoms`, or a grid:
`grid_patch_set`) in one image or a stack, with several channels, an explicit edge policy and
recorded normalisation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    from .atoms import Atoms


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


# --- Patches at arbitrary centres (atoms or a grid), in stacks, with several channels --------

Edge = Literal["drop", "pad", "reflect"]
NormMethod = Literal["none", "global", "per-patch", "minmax"]


@dataclass(frozen=True)
class Normalisation:
    """How patch values were scaled: ``stored = (raw - offset) / scale``.

    ``method``: ``"none"``; ``"global"`` (each channel's mean and standard deviation over all
    the images); ``"per-patch"`` (each patch and channel to zero mean and unit variance);
    ``"minmax"`` (each channel's minimum and range over all the images, to [0, 1]).
    ``offset`` and ``scale`` broadcast against the data (N, C, h, w): shape (1, C, 1, 1) or
    (N, C, 1, 1).
    """

    method: NormMethod
    offset: np.ndarray
    scale: np.ndarray

    def invert(self, data: np.ndarray) -> np.ndarray:
        """Patch values back in the raw image units."""
        return data * self.scale + self.offset


@dataclass(frozen=True)
class PatchSet:
    """``data[i]`` is the patch centred on pixel (``rows[i]``, ``cols[i]``) of frame
    ``frames[i]``, shape (N, channels, height, width), float32.

    ``rows`` and ``cols`` are the centres asked for (float, image pixels; sub-pixel atom
    positions stay as given) and the patch is cut around the nearest pixel; for an even size
    the centre is the pixel just below and right of the middle. ``index[i]`` is the position of
    patch ``i``'s centre in the list of centres asked for, of which there were ``n_requested``:
    with ``edge="drop"`` some centres have no patch, and `scatter` puts per-patch values back
    in the order of the centres. ``grid_shape`` is set for grid patches (``n_requested`` =
    rows x cols of the grid). ``pixel_size`` is the size of an image pixel in ``units``.
    """

    data: np.ndarray
    frames: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    index: np.ndarray
    n_requested: int
    edge: Edge
    normalisation: Normalisation
    pixel_size: float = 1.0
    units: str = "px"
    grid_shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.data.shape[1:])  # type: ignore[return-value]

    @property
    def positions(self) -> np.ndarray:
        """The centres as (row, col) in physical ``units``, shape (N, 2)."""
        return np.column_stack([self.rows, self.cols]) * self.pixel_size

    def flat(self) -> np.ndarray:
        """The patches as rows of a matrix, shape (N, channels * height * width)."""
        return self.data.reshape(len(self), -1)

    def scatter(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Per-patch ``values`` (N, ...) placed at their centres' positions, shape
        (n_requested, ...), ``fill`` where a centre has no patch; for grid patches reshape with
        ``grid_shape`` to get a map."""
        values = np.asarray(values)
        out = np.full(
            (self.n_requested, *values.shape[1:]), fill, dtype=np.result_type(values, fill)
        )
        out[self.index] = values
        return out


def extract_patches(
    images: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    size: int | tuple[int, int],
    *,
    frames: np.ndarray | None = None,
    edge: Edge = "drop",
    channel_axis: int | None = None,
    normalise: NormMethod = "none",
    pixel_size: float = 1.0,
    units: str = "px",
    pad_value: float = 0.0,
) -> PatchSet:
    """Patches of ``size`` pixels centred on (``rows``, ``cols``) of frames ``frames``.

    ``images``: one image (rows, cols) or a stack (frames, rows, cols); with ``channel_axis``
    the given axis holds detector channels, e.g. ``channel_axis=-1`` for (rows, cols, C) or
    (frames, rows, cols, C). ``rows``, ``cols`` (and ``frames``, default 0) have shape (N,).

    ``edge``: ``"drop"`` keeps only patches wholly inside their image; ``"pad"`` fills outside
    pixels with ``pad_value`` (in raw units); ``"reflect"`` mirrors the image at its border.
    Either way ``PatchSet.index`` says which centre each patch belongs to. Centres outside
    the image are refused. Normalisation statistics come from the images, not the patches
    (except ``"per-patch"``), and are recorded in ``PatchSet.normalisation``.
    """
    stack = _as_stack(images, channel_axis)  # (F, C, H, W)
    n_frames, n_channels, height, width = stack.shape
    h, w = (size, size) if isinstance(size, int) else size
    if not (1 <= h <= height and 1 <= w <= width):
        raise ValueError(f"patch size {(h, w)} does not fit images of {(height, width)} pixels")
    rows = np.asarray(rows, dtype=np.float64).ravel()
    cols = np.asarray(cols, dtype=np.float64).ravel()
    frames = np.zeros(rows.shape, np.int64) if frames is None else np.asarray(frames).ravel()
    if not (rows.shape == cols.shape == frames.shape):
        raise ValueError("rows, cols and frames must have the same length")
    r0 = np.rint(rows).astype(np.int64)
    c0 = np.rint(cols).astype(np.int64)
    outside = (r0 < 0) | (r0 >= height) | (c0 < 0) | (c0 >= width)
    if outside.any() or ((frames < 0) | (frames >= n_frames)).any():
        raise ValueError("a centre lies outside the images")
    bh, bw = h // 2, w // 2  # pixels before the centre
    if edge == "drop":
        keep = (r0 - bh >= 0) & (r0 - bh + h <= height) & (c0 - bw >= 0) & (c0 - bw + w <= width)
        padded, pr, pc = stack, 0, 0
    elif edge in ("pad", "reflect"):
        keep = np.ones(rows.shape, bool)
        widths = ((0, 0), (0, 0), (bh, h - 1 - bh), (bw, w - 1 - bw))
        if edge == "pad":
            padded = np.pad(stack, widths, mode="constant", constant_values=pad_value)
        else:
            if bh >= height or bw >= width:
                raise ValueError("reflect needs a patch smaller than twice the image")
            padded = np.pad(stack, widths, mode="reflect")
        pr, pc = bh, bw
    else:
        raise ValueError(f"edge must be 'drop', 'pad' or 'reflect', got {edge!r}")
    index = np.flatnonzero(keep)
    top = r0[index] - bh + pr
    left = c0[index] - bw + pc
    dr, dc = np.arange(h), np.arange(w)
    data = padded[
        frames[index, None, None, None],
        np.arange(n_channels)[None, :, None, None],
        top[:, None, None, None] + dr[None, None, :, None],
        left[:, None, None, None] + dc[None, None, None, :],
    ].astype(np.float32)
    data, norm = _normalise(data, stack, normalise)
    return PatchSet(
        data=data,
        frames=frames[index].astype(np.int64),
        rows=rows[index],
        cols=cols[index],
        index=index,
        n_requested=len(rows),
        edge=edge,
        normalisation=norm,
        pixel_size=pixel_size,
        units=units,
    )


def atom_patches(
    images: np.ndarray, atoms: Atoms, size: int | tuple[int, int], **kwargs: Any
) -> PatchSet:
    """Patches centred on ``atoms`` (from `dklscope.embeddings.atoms.find_atoms`); keywords as
    `extract_patches` (default ``edge="drop"``: atoms too near the border get no patch)."""
    return extract_patches(images, atoms.rows, atoms.cols, size, frames=atoms.frames, **kwargs)


def grid_patch_set(
    images: np.ndarray,
    size: int | tuple[int, int],
    *,
    stride: int = 1,
    channel_axis: int | None = None,
    **kwargs: Any,
) -> PatchSet:
    """Patches centred every ``stride`` pixels of every frame, in (frame, row, col) order;
    keywords as `extract_patches` (default ``edge="drop"``). ``grid_shape`` is the
    (rows, cols) of the grid of centres of one frame, so with ``edge`` "pad" or "reflect"
    ``scatter(values).reshape(frames, *grid_shape)`` is a map of a per-patch quantity."""
    stack = _as_stack(images, channel_axis)
    n_frames, _, height, width = stack.shape
    gr, gc = np.arange(0, height, stride), np.arange(0, width, stride)
    f, r, c = (a.ravel() for a in np.meshgrid(np.arange(n_frames), gr, gc, indexing="ij"))
    patches = extract_patches(images, r, c, size, frames=f, channel_axis=channel_axis, **kwargs)
    return dataclasses.replace(patches, grid_shape=(len(gr), len(gc)))


def _as_stack(images: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """Images as (frames, channels, rows, cols)."""
    images = np.asarray(images, dtype=np.float64)
    if channel_axis is None:
        if images.ndim not in (2, 3):
            raise ValueError(f"expected (rows, cols) or (frames, rows, cols), got {images.shape}")
        stack = images[None] if images.ndim == 2 else images
        return stack[:, None]
    images = np.moveaxis(images, channel_axis, 0)  # (C, [F,] rows, cols)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"expected 3 or 4 dimensions with a channel axis, got {images.ndim}")
    return np.ascontiguousarray(np.moveaxis(images, 0, 1))


def _normalise(data: np.ndarray, stack: np.ndarray, method: NormMethod):
    n_channels = stack.shape[1]
    if method == "none":
        offset, scale = np.zeros((1, n_channels, 1, 1)), np.ones((1, n_channels, 1, 1))
    elif method == "global":
        offset = stack.mean(axis=(0, 2, 3)).reshape(1, -1, 1, 1)
        scale = stack.std(axis=(0, 2, 3)).reshape(1, -1, 1, 1)
    elif method == "minmax":
        offset = stack.min(axis=(0, 2, 3)).reshape(1, -1, 1, 1)
        scale = (stack.max(axis=(0, 2, 3)) - stack.min(axis=(0, 2, 3))).reshape(1, -1, 1, 1)
    elif method == "per-patch":
        offset = data.mean(axis=(2, 3), keepdims=True).astype(np.float64)
        scale = data.std(axis=(2, 3), keepdims=True).astype(np.float64)
    else:
        raise ValueError(f"normalise must be none, global, per-patch or minmax, got {method!r}")
    scale = np.where(scale > 0, scale, 1.0)
    normalised = ((data - offset) / scale).astype(np.float32)
    return normalised, Normalisation(method, offset, scale)
