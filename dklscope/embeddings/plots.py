"""Figures of an embedding: latents drawn on the image at the patches' centres, a latent
traversal grid, and class maps. Each function draws on a matplotlib ``Axes`` (a new figure if
none is given) and returns the figure; nothing is written unless ``path`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _axes(ax: Any, figsize: tuple[float, float] = (5, 5)) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.add_subplot()


def _save(fig: Any, path: str | Path | None) -> None:
    if path is not None:
        fig.savefig(Path(path), dpi=150, bbox_inches="tight")


def latent_map(
    image: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    *,
    ax: Any = None,
    label: str = "latent",
    cmap: str = "coolwarm",
    marker_size: float = 20.0,
    path: str | Path | None = None,
) -> Any:
    """``image`` (rows, cols) in grey with one dot per patch at (``rows``, ``cols``) pixels,
    coloured by ``values`` (N,) (a latent, an angle, ...)."""
    fig, ax = _axes(ax)
    ax.imshow(image, cmap="gray")
    dots = ax.scatter(cols, rows, c=values, s=marker_size, cmap=cmap, edgecolors="none")
    fig.colorbar(dots, ax=ax, label=label)
    ax.set_axis_off()
    _save(fig, path)
    return fig


def class_map(
    image: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    classes: np.ndarray,
    *,
    ax: Any = None,
    marker_size: float = 20.0,
    path: str | Path | None = None,
) -> Any:
    """``image`` with one dot per patch coloured by its class (N,) integers, with a legend."""
    fig, ax = _axes(ax)
    ax.imshow(image, cmap="gray")
    for k in np.unique(classes):
        keep = classes == k
        ax.scatter(cols[keep], rows[keep], s=marker_size, label=f"class {k}", edgecolors="none")
    ax.legend(loc="upper right", fontsize="small")
    ax.set_axis_off()
    _save(fig, path)
    return fig


def traversal_codes(
    latent_dim: int, dims: tuple[int, int] = (0, 1), n: int = 8, span: float = 2.0
) -> np.ndarray:
    """Codes (n * n, latent_dim) on an n x n grid over [-span, span] in latents ``dims``
    (prior standard deviations), 0 in the others; row-major, first dim along the columns."""
    grid = np.linspace(-span, span, n)
    codes = np.zeros((n, n, latent_dim), np.float32)
    codes[..., dims[0]] = grid[None, :]
    codes[..., dims[1]] = grid[::-1, None]
    return codes.reshape(n * n, latent_dim)


def traversal_grid(decoded: np.ndarray, *, ax: Any = None, path: str | Path | None = None) -> Any:
    """Tile decoded patches (n * n, C, H, W) (of `traversal_codes`) into one n x n image of
    their first channel."""
    m = len(decoded)
    n = round(float(np.sqrt(m)))
    if n * n != m:
        raise ValueError(f"expected n * n patches, got {m}")
    _, _, h, w = decoded.shape
    tiles = decoded[:, 0].reshape(n, n, h, w).transpose(0, 2, 1, 3).reshape(n * h, n * w)
    fig, ax = _axes(ax)
    ax.imshow(tiles, cmap="gray")
    ax.set_axis_off()
    _save(fig, path)
    return fig
