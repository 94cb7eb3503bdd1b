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
- Strain: atoms relax towards each vacancy cluster by up to ``relaxation_px`` (a Gaussian
  displacement field of width ``cluster_radius_px``), and domain B's lattice parameter is
  larger by ``mismatch``; the ``strain`` label is the volumetric strain div(u) plus the mismatch.
- With ``spectra="core-loss"`` the spectrum is instead a Ti-L2,3 edge (445-470 eV) whose onset
  and crystal-field splitting follow the local reduction near vacancies, the domain and the
  strain (see `_ti_l23_edge`).

The defect mode is the feature a campaign hunts for with a window around 1.2 eV: it is visible in
the spectrum only where vacancies are visible in the image, so structure predicts it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage, spatial

from dklscope.drivers import SpectralAxis

from .sample import PoissonCounts, Sample

ENERGY_AXIS = SpectralAxis(size=256, offset=0.2, scale=0.011, units="eV")
CORE_LOSS_AXIS = SpectralAxis(size=256, offset=445.0, scale=0.1, units="eV")


def _gaussian_line(energy: np.ndarray, centre: np.ndarray | float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((energy - centre) / sigma) ** 2)


def _ti_l23_edge(
    energy: np.ndarray,
    material: np.ndarray,
    domain: np.ndarray,
    vacancy_density: np.ndarray,
    strain: np.ndarray,
) -> np.ndarray:
    """Ti-L2,3 core-loss rates (counts/s per channel), shape (rows, cols, channels).

    A power-law background plus, in the material, two edge steps (L3 at 458 eV, L2 at 463.5 eV)
    each with a t2g and an eg white line split by the crystal field (2.0 eV in domain A, 1.8 eV
    in domain B, widened by tensile strain). Near vacancies Ti is reduced: the reduced fraction
    ``1 - exp(-vacancy_density)`` moves the edge 1.5 eV down and halves the splitting.
    """
    e = energy[None, None, :]
    reduced = (1 - np.exp(-vacancy_density))[..., None]
    splitting = (np.where(domain == 0, 2.0, 1.8) * (1 + 5 * strain))[..., None]
    splitting = splitting * (1 - 0.5 * reduced)
    shift = -1.5 * reduced
    rates = 3.0e4 * (e / energy[0]) ** -4.0
    for onset, weight in ((458.0, 1.0), (463.5, 0.6)):
        centre = onset + shift
        step = 0.5 + np.arctan((e - centre) / 0.5) / np.pi
        lines = _gaussian_line(e, centre - splitting / 2, 0.35) + 0.8 * _gaussian_line(
            e, centre + splitting / 2, 0.5
        )
        rates = rates + material[..., None] * weight * (2.0e3 * step + 8.0e3 * lines)
    return rates


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
    relaxation_px: float = 0.5,
    mismatch: float = 0.04,
    spectra: Literal["low-loss", "core-loss"] = "low-loss",
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
        spacing = spacing_px * (1 + mismatch * label)  # domain B's lattice is larger
        x, y = _lattice_points(shape, spacing, angle, rng.uniform(0, spacing, size=2))
        r = np.clip(np.rint(y).astype(int), 0, rows - 1)
        c = np.clip(np.rint(x).astype(int), 0, cols - 1)
        keep = material[r, c] & (domain[r, c] == label)
        atoms_x.append(x[keep])
        atoms_y.append(y[keep])
        atoms_amp.append(np.full(keep.sum(), amplitude))
    # No two atoms on top of each other at the domain boundary: B yields to A.
    tree = spatial.cKDTree(np.column_stack([atoms_x[0], atoms_y[0]]))
    distance, _ = tree.query(np.column_stack([atoms_x[1], atoms_y[1]]))
    apart = distance >= 0.6 * spacing_px
    atoms_x[1], atoms_y[1], atoms_amp[1] = atoms_x[1][apart], atoms_y[1][apart], atoms_amp[1][apart]
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

    # Strain: atoms relax towards each cluster centre, u = -a (r - c)/L exp(-|r - c|^2 / 2L^2).
    def displacement(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ux, uy = np.zeros_like(x), np.zeros_like(y)
        for k in centres:
            dx, dy = x - ax[k], y - ay[k]
            g = (
                relaxation_px
                / cluster_radius_px
                * np.exp(-(dx**2 + dy**2) / (2 * cluster_radius_px**2))
            )
            ux, uy = ux - g * dx, uy - g * dy
        return ux, uy

    ux, uy = displacement(ax, ay)
    ax, ay = ax + ux, ay + uy
    field_x, field_y = displacement(xx, yy)
    strain = np.gradient(field_x, axis=1) + np.gradient(field_y, axis=0) + mismatch * domain

    image = np.zeros(shape)
    for x, y, a in zip(ax[~vacant], ay[~vacant], amp[~vacant], strict=True):
        image += a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * atom_sigma_px**2))
    image += image_noise * rng.standard_normal(shape)

    vacancy_density = np.zeros(shape)
    for x, y in zip(ax[vacant], ay[vacant], strict=True):
        vacancy_density += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * defect_length_px**2))
    edge_distance = np.where(material, depth, ndimage.distance_transform_edt(~material))

    if spectra == "low-loss":
        axis = ENERGY_AXIS
        energy = axis.values()
        bulk_energy = np.where(domain == 0, 2.2, 2.5)[..., None]
        rates = (
            zlp_rate * (energy / energy[0]) ** -3.0
            + bulk_rate * material[..., None] * _gaussian_line(energy, bulk_energy, 0.3)
            + edge_rate
            * np.exp(-edge_distance / spacing_px)[..., None]
            * _gaussian_line(energy, 0.8, 0.08)
            + defect_rate * vacancy_density[..., None] * _gaussian_line(energy, 1.2, 0.1)
        )
    elif spectra == "core-loss":
        axis = CORE_LOSS_AXIS
        rates = _ti_l23_edge(axis.values(), material, domain, vacancy_density, strain)
    else:
        raise ValueError(f"spectra must be 'low-loss' or 'core-loss', got {spectra!r}")
    return Sample(
        name=f"lattice ({spectra})",
        image=image.astype(np.float32),
        signal=rates.astype(np.float32),
        noise=PoissonCounts(),
        spectral_axis=axis,
        pixel_size=pixel_size_nm,
        pixel_units="nm",
        spectrum_units="counts",
        labels={
            "material": material,
            "domain": domain,
            "vacancy_density": vacancy_density.astype(np.float32),
            "edge_distance_px": edge_distance.astype(np.float32),
            "strain": strain.astype(np.float32),
        },
    )
