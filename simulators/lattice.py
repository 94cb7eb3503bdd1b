"""A synthetic STEM-EELS sample: an atomic lattice with a vacuum edge, two domains and vacancy
clusters, and a low-loss spectrum at every pixel that depends on the local structure.

Physics model (all energies in eV, rates in counts/s per channel, distances in pixels):

- Overview (HAADF-like): a sum of Gaussian atoms of width ``atom_sigma_px``. Domain A is a
  square lattice; domain B, right of a wavy boundary, is the same lattice rotated by 45° with
  dimmer atoms. Above a wavy edge is vacuum. Vacancy clusters remove atoms near random centres.
- Spectrum at each pixel: the sum of
    * the zero-loss tail ``zlp_rate * (E / E0)^-3`` (everywhere);
    * a bulk plasmon at 2.2 eV (domain A) or 2.5 eV (domain B), inside the material;
    * an edge plasmon at 0.8 eV whose strength decays as ``exp(-d / spacing)`` with the
      distance ``d`` to the vacuum edge (on both sides);
    * a defect mode at 1.2 eV proportional to the local vacancy density, a sum of Gaussians of
      width ``defect_length_px`` (about half a lattice spacing) centred on the vacancies.
  Each peak is a Gaussian line shape normalised to 1 at its centre.

The defect mode is the feature a campaign hunts for with a window around 1.2 eV: it is visible in
the spectrum only where vacancies are visible in the image, so structure predicts it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dklscope.drivers import SpectralAxis

from .sample import PoissonCounts, Sample

ENERGY_AXIS = SpectralAxis(size=256, offset=0.2, scale=0.011, units="eV")


def _gaussian_line(energy: np.ndarray, centre: np.ndarray | float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((energy - centre) / sigma) ** 2)


def _lattice_points(shape: tuple[int, int], spacing: float, angle: float, offset: np.ndarray):
    """Points of a square lattice covering ``shape``, as (x, y) arrays."""
    rows, cols = shape
    n = int(np.hypot(rows, cols) / spacing) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1))
    c, s = np.cos(angle), np.sin(angle)
    x = offset[0] + spacing * (c * i - s * j)
    y = offset[1] + spacing * (s * i + c * j)
    keep = (x > -3) & (x < cols + 2) & (y > -3) & (y < rows + 2)
    return x[keep], y[keep]


def lattice_sample(
    shape: tuple[int, int] = (48, 48),
    *,
    seed: int = 0,
    spacing_px: float = 5.0,
    atom_sigma_px: float = 1.1,
    n_defect_clusters: int = 3,
    cluster_radius_px: float = 7.0,
    vacancy_probability: float = 0.6,
    defect_length_px: float = 2.5,
    pixel_size_nm: float = 0.08,
    image_noise: float = 0.03,
    zlp_rate: float = 2.0e4,
    bulk_rate: float = 4.0e3,
    edge_rate: float = 5.0e3,
    defect_rate: float = 8.0e3,
) -> Sample:
    """Generate the sample; the same arguments always give the same sample."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)

    # Where the material is, and which domain.
    phase = rng.uniform(0, 2 * np.pi, size=2)
    edge_y = rows * (0.14 + 0.06 * np.sin(2 * np.pi * xx / cols + phase[0]))
    material = yy >= edge_y
    boundary_x = cols * (0.62 + 0.07 * np.sin(2 * np.pi * yy / rows + phase[1]))
    domain = (xx >= boundary_x).astype(np.int8)  # 0: A, 1: B

    # Atoms of each domain, kept where their domain and the material are.
    atoms_x, atoms_y, atoms_amp = [], [], []
    for label, angle, amplitude in ((0, 0.0, 1.0), (1, np.pi / 4, 0.7)):
        x, y = _lattice_points(shape, spacing_px, angle, rng.uniform(0, spacing_px, size=2))
        r = np.clip(np.rint(y).astype(int), 0, rows - 1)
        c = np.clip(np.rint(x).astype(int), 0, cols - 1)
        keep = material[r, c] & (domain[r, c] == label)
        atoms_x.append(x[keep])
        atoms_y.append(y[keep])
        atoms_amp.append(np.full(keep.sum(), amplitude))
    ax, ay, amp = (np.concatenate(v) for v in (atoms_x, atoms_y, atoms_amp))

    # Vacancy clusters around atoms well inside the material.
    depth = ndimage.distance_transform_edt(material)
    inside = depth[
        np.clip(np.rint(ay).astype(int), 0, rows - 1), np.clip(np.rint(ax).astype(int), 0, cols - 1)
    ]
    eligible = np.flatnonzero(inside > 2 * spacing_px)
    centres = rng.choice(eligible, size=min(n_defect_clusters, eligible.size), replace=False)
    vacant = np.zeros(ax.size, dtype=bool)
    for k in centres:
        near = np.hypot(ax - ax[k], ay - ay[k]) <= cluster_radius_px
        vacant |= near & (rng.random(ax.size) < vacancy_probability)
        vacant[k] = True

    image = np.zeros(shape)
    for x, y, a in zip(ax[~vacant], ay[~vacant], amp[~vacant], strict=True):
        image += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * atom_sigma_px**2))
    image += image_noise * rng.standard_normal(shape)

    vacancy_density = np.zeros(shape)
    for x, y in zip(ax[vacant], ay[vacant], strict=True):
        vacancy_density += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * defect_length_px**2))
    edge_distance = np.where(material, depth, ndimage.distance_transform_edt(~material))

    energy = ENERGY_AXIS.values()
    bulk_energy = np.where(domain == 0, 2.2, 2.5)[..., None]
    rates = (
        zlp_rate * (energy / energy[0]) ** -3.0
        + bulk_rate * material[..., None] * _gaussian_line(energy, bulk_energy, 0.3)
        + edge_rate
        * np.exp(-edge_distance / spacing_px)[..., None]
        * _gaussian_line(energy, 0.8, 0.08)
        + defect_rate * vacancy_density[..., None] * _gaussian_line(energy, 1.2, 0.1)
    )
    return Sample(
        name="lattice",
        image=image.astype(np.float32),
        signal=rates.astype(np.float32),
        noise=PoissonCounts(),
        spectral_axis=ENERGY_AXIS,
        pixel_size=pixel_size_nm,
        pixel_units="nm",
        spectrum_units="counts",
        labels={
            "material": material,
            "domain": domain,
            "vacancy_density": vacancy_density.astype(np.float32),
            "edge_distance_px": edge_distance.astype(np.float32),
        },
    )
