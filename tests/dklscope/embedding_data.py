"""Synthetic patches with known rotation, offset, scale, strain and class, for the embedding
tests. Coordinates: x = col, y = row, relative to the patch centre at ((S - 1) / 2, (S - 1) / 2);
angles from +x towards +y, as in `dklscope.embeddings.transform`."""

import numpy as np

# Atoms (x, y, brightness) of each class's motif, in pixels, before any transform.
MOTIFS = {
    0: np.array([[0.0, 0.0, 1.0], [4.0, 0.0, 0.8], [0.0, 2.5, 0.5]]),  # an L: no symmetry
    1: np.array([[-3.0, 0.0, 1.0], [3.0, 0.0, 1.0], [0.0, -3.0, 0.6], [0.0, 3.0, 0.6]]),  # rhombus
}


def motif_patches(
    n,
    size=16,
    *,
    seed=0,
    classes=None,
    angle=None,
    offset=None,
    log_scale=None,
    strain=None,
    trait=None,
    sigma=1.0,
):
    """n patches (n, 1, size, size). Each argument is an array (n,) ((n, 2) for the offset in
    (row, col) pixels) or None for 0; ``trait`` stretches the motif's second atom outwards by
    that many pixels (a continuous content variable); ``strain`` stretches along x by (1 + s)."""
    rng = np.random.default_rng(seed)
    classes = np.zeros(n, int) if classes is None else np.asarray(classes)
    zeros = np.zeros(n)
    angle = zeros if angle is None else np.asarray(angle)
    log_scale = zeros if log_scale is None else np.asarray(log_scale)
    strain = zeros if strain is None else np.asarray(strain)
    trait = zeros if trait is None else np.asarray(trait)
    offset = np.zeros((n, 2)) if offset is None else np.asarray(offset)
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    out = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        atoms = MOTIFS[int(classes[i])].copy()
        atoms[1, :2] *= 1 + trait[i] / np.hypot(*atoms[1, :2])
        x, y = atoms[:, 0] * (1 + strain[i]), atoms[:, 1]
        ca, sa = np.cos(angle[i]), np.sin(angle[i])
        k = np.exp(log_scale[i])
        xr, yr = k * (ca * x - sa * y), k * (sa * x + ca * y)
        xr, yr = xr + c + offset[i, 1], yr + c + offset[i, 0]
        img = sum(
            b * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * (sigma * k) ** 2))
            for px, py, b in zip(xr, yr, atoms[:, 2], strict=True)
        )
        out[i, 0] = img
    return out + 0.02 * rng.standard_normal(out.shape).astype(np.float32)


def one_thread():
    """Generator for a fixture: torch on one thread while the module's tests run (a 2-core
    machine shared with other jobs thrashes with two), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
