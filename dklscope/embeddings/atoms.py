"""Find atoms (bright, roughly Gaussian blobs) in an image or a stack of images.

A finder is anything that follows the `AtomFinder` protocol: it takes one 2-D image and returns
the integer-ish (row, col) positions of the atoms in image pixels. Two are provided, both built
on scikit-image: `LocalMaxima` and `LoGBlobs`; a segmentation network wrapped in a class with
the same ``__call__`` drops in. `find_atoms` runs a finder over every frame of a stack and
refines each position to sub-pixel accuracy (`refine_positions`).

Coordinates are always (row, col) in image pixels, with pixel ``(i, j)`` centred at
``(i, j)``; physical units are the patches' business (`dklscope.embeddings.patches`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

Refinement = Literal["none", "centroid", "quadratic"]


@runtime_checkable
class AtomFinder(Protocol):
    """Finds atoms in one image: ``(rows, cols)`` float image -> ``(N, 2)`` (row, col) pixels."""

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class LocalMaxima:
    """Local maxima of the image smoothed by a Gaussian of ``smoothing_px`` (0: none).

    ``min_distance_px`` is the smallest separation of two atoms (about half the atomic spacing);
    ``threshold_rel`` the fraction of the brightest peak's height a maximum must reach.
    """

    min_distance_px: int = 2
    threshold_rel: float = 0.3
    smoothing_px: float = 0.0
    exclude_border_px: int = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.feature import peak_local_max

        image = _smooth(image, self.smoothing_px)
        peaks = peak_local_max(
            image,
            min_distance=self.min_distance_px,
            threshold_rel=self.threshold_rel,
            exclude_border=self.exclude_border_px,
        )
        return peaks.astype(np.float64).reshape(-1, 2)


@dataclass(frozen=True)
class LoGBlobs:
    """Laplacian-of-Gaussian blobs with a Gaussian width between ``min_sigma_px`` and
    ``max_sigma_px``; ``threshold`` is on the scale-normalised LoG response of the image scaled
    to [0, 1]."""

    min_sigma_px: float = 0.8
    max_sigma_px: float = 2.5
    num_sigma: int = 5
    threshold: float = 0.05
    overlap: float = 0.5

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from skimage.feature import blob_log

        lo, hi = float(image.min()), float(image.max())
        scaled = (image - lo) / ((hi - lo) or 1.0)
        blobs = blob_log(
            scaled,
            min_sigma=self.min_sigma_px,
            max_sigma=self.max_sigma_px,
            num_sigma=self.num_sigma,
            threshold=self.threshold,
            overlap=self.overlap,
        )
        return blobs[:, :2].astype(np.float64).reshape(-1, 2)


@dataclass(frozen=True)
class Atoms:
    """Atom positions in a stack: atom ``i`` is at (``rows[i]``, ``cols[i]``) pixels of frame
    ``frames[i]``. All arrays have shape (N,)."""

    frames: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def in_frame(self, frame: int) -> np.ndarray:
        """The (row, col) positions of the atoms of ``frame``, shape (n, 2)."""
        keep = self.frames == frame
        return np.column_stack([self.rows[keep], self.cols[keep]])


def find_atoms(
    images: np.ndarray,
    finder: AtomFinder | None = None,
    *,
    refine: Refinement = "centroid",
    radius_px: int = 2,
) -> Atoms:
    """Find the atoms of a 2-D image ``(rows, cols)`` or of each frame of a stack
    ``(frames, rows, cols)``, then refine each position (see `refine_positions`).

    ``finder`` defaults to ``LocalMaxima()``. Frame indices of a single image are 0.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(
            f"expected an image (rows, cols) or a stack (frames, rows, cols), "
            f"got shape {images.shape}"
        )
    finder = LocalMaxima() if finder is None else finder
    frames, rows, cols = [], [], []
    for f, image in enumerate(images):
        found = np.asarray(finder(image), dtype=np.float64).reshape(-1, 2)
        found = refine_positions(image, found, method=refine, radius_px=radius_px)
        frames.append(np.full(len(found), f, dtype=np.int64))
        rows.append(found[:, 0])
        cols.append(found[:, 1])
    return Atoms(np.concatenate(frames), np.concatenate(rows), np.concatenate(cols))


def refine_positions(
    image: np.ndarray,
    positions: np.ndarray,
    *,
    method: Refinement = "centroid",
    radius_px: int = 2,
    iterations: int = 20,
) -> np.ndarray:
    """Sub-pixel (row, col) of the atoms near ``positions`` (N, 2), returned as (N, 2).

    ``"centroid"``: the centre of mass of the intensity (above the window's minimum) times a
    Gaussian of width ``0.6 * radius_px`` pixels centred on the current estimate, iterated up to
    ``iterations`` times; its fixed point is the centre of a symmetric atom. ``"quadratic"``:
    the vertex of a paraboloid fitted to the log intensity of the 3 x 3 neighbourhood, exact
    for an isolated Gaussian atom. A position whose refinement leaves the image or moves more than
    ``radius_px`` keeps its starting value.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if method == "none" or len(positions) == 0:
        return positions.copy()
    image = np.asarray(image, dtype=np.float64)
    if method == "centroid":
        refined = _centroid(image, positions, radius_px, iterations)
    elif method == "quadratic":
        refined = _quadratic(image, positions)
    else:
        raise ValueError(f"refine must be 'none', 'centroid' or 'quadratic', got {method!r}")
    shape = np.array(image.shape) - 1
    bad = (
        ~np.isfinite(refined).all(axis=1)
        | (refined < 0).any(axis=1)
        | (refined > shape).any(axis=1)
        | (np.abs(refined - positions) > radius_px).any(axis=1)
    )
    refined[bad] = positions[bad]
    return refined


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    return ndimage.gaussian_filter(image, sigma) if sigma > 0 else image


def _centroid(image: np.ndarray, positions: np.ndarray, radius: int, iterations: int) -> np.ndarray:
    # Gaussian-weighted centre of mass: the weight is centred on the current estimate, so the
    # iteration's fixed point is the centre of any symmetric atom, background included.
    width = max(radius, 1) * 0.6
    half = int(np.ceil(3 * width)) + 1
    padded = np.pad(image, half, mode="edge")
    dr, dc = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    current = positions.copy()
    for _ in range(iterations):
        centre = np.clip(np.rint(current).astype(np.int64), 0, np.array(image.shape) - 1)
        r_idx = centre[:, 0, None, None] + half + dr[None].astype(np.int64)
        c_idx = centre[:, 1, None, None] + half + dc[None].astype(np.int64)
        windows = padded[r_idx, c_idx]  # (N, 2h+1, 2h+1) around centre[i]
        windows = windows - windows.min(axis=(1, 2), keepdims=True)
        sub = (current - centre)[:, :, None, None]
        mask = np.exp(-((dr - sub[:, 0]) ** 2 + (dc - sub[:, 1]) ** 2) / (2 * width**2))
        weights = windows * mask
        total = weights.sum(axis=(1, 2))
        total = np.where(total > 0, total, np.nan)
        new = np.column_stack(
            [
                centre[:, 0] + (weights * dr).sum(axis=(1, 2)) / total,
                centre[:, 1] + (weights * dc).sum(axis=(1, 2)) / total,
            ]
        )
        new = np.where(np.isfinite(new), new, current)
        done = np.allclose(new, current, atol=1e-4)
        current = new
        if done:
            break
    return current


def _quadratic(image: np.ndarray, positions: np.ndarray) -> np.ndarray:
    centre = np.clip(np.rint(positions).astype(np.int64), 1, np.array(image.shape) - 2)
    r, c = centre[:, 0], centre[:, 1]
    floor = max(image.max() * 1e-6, 1e-12)
    logi = np.log(np.clip(image, floor, None))
    v = logi[r, c]
    up, down = logi[r - 1, c], logi[r + 1, c]
    left, right = logi[r, c - 1], logi[r, c + 1]
    curv_r = up + down - 2 * v
    curv_c = left + right - 2 * v
    with np.errstate(divide="ignore", invalid="ignore"):
        dr = np.where(curv_r < 0, 0.5 * (up - down) / curv_r, np.nan)
        dc = np.where(curv_c < 0, 0.5 * (left - right) / curv_c, np.nan)
    return np.column_stack([r + dr, c + dc])
