"""A synthetic STEM-EELS plasmonics sample: silver-like nanoparticles (triangles, rectangles and
discs) beside a metal film with holes, on a thin substrate, and a low-loss spectrum at every
pixel whose plasmon peaks depend on the distance to the particle edges and corners.

Physics model (energies in eV, rates in counts/s per channel, distances in nm unless marked
px; pixel (row, col) is centred at x = col, y = row px):

- Geometry: ``n_particles`` flat particles, the first a triangle (so every sample has corners),
  the next a rectangle and a disc, the rest drawn at random among the three. Each has a random
  orientation, a size ``L`` drawn from ``particle_size_nm`` (the side of an equilateral
  triangle, the longer side of a rectangle whose shorter side is 0.5-1 L, the diameter of a
  disc) and a uniform thickness drawn from ``particle_thickness_nm``. Particles lie wholly in
  the field of view, at least ``gap_nm`` from each other and from the film. A particle that
  does not fit is left out, except the first, which is made smaller until it fits (the
  triangle is placed first, the others from the largest down). Along one side (chosen at
  random) a metal film of thickness ``film_thickness_nm`` covers ``film_fraction`` of the
  field of view; ``n_holes`` circular holes (radius from
  ``hole_radius_nm``, capped to fit inside the film) go through the film and its support.
  Masks sample each shape at the pixel centres; "metal" is the particles plus the film.
- Distances: the signed edge distance ``d`` of a pixel is its distance to the nearest metal
  surface, negative inside the metal and positive outside: ``|d| = (EDT - 0.5 px) *
  pixel_size_nm`` with ``EDT`` the Euclidean distance transform (to the nearest pixel of the
  other kind), so pixels touching an edge sit at ±0.5 px. The corner distance ``r`` is the
  exact distance from the pixel centre to the nearest triangle or rectangle vertex.
- Mode energies: the corner (dipolar) mode of a particle of size ``L`` sits at
  ``E_c = corner_ev * (size_reference_nm / L) ** size_exponent`` and its edge mode at
  ``E_e = edge_ev * (size_reference_nm / L) ** size_exponent``: bigger particles have lower
  plasmon energies. The film's edge and the hole rims carry a rim mode at ``rim_ev``, whatever
  their size. A pixel sees the edge-type mode of the object owning its nearest edge (its own
  particle or film inside the metal; the nearest metal pixel's owner outside) and the corner
  mode of the particle owning its nearest vertex.
- Spectrum at each pixel, on ``ENERGY_AXIS`` (0.5-5.6 eV, 0.02 eV per channel):
  ``S(E) = zlp_rate * (E / E0)^-3``                                 zero-loss tail, everywhere;
  ``    + bulk_rate_per_nm * t * L(E; bulk_ev, bulk_hwhm_ev)``       bulk plasmon, metal only;
  ``    + edge_rate * exp(-|d| / edge_decay_nm) * L(E; E_e, edge_hwhm_ev)``     edge or rim mode;
  ``    + corner_rate * exp(-r / corner_decay_nm) * L(E; E_c, corner_hwhm_ev)`` corner mode;
  with ``E0 = 0.5 eV`` the first channel, ``t`` the metal thickness (0 outside the metal) and
  ``L(E; c, w) = 1 / (1 + ((E - c) / w)^2)`` a Lorentzian of half width at half maximum ``w``
  normalised to 1 at its centre. Edge and corner modes are excited inside the metal and, by
  aloof (non-penetrating) trajectories, outside it, decaying the same way on both sides.
- Overview (HAADF-like, a.u.): ``substrate_level`` where the substrate is (everywhere but the
  holes, which are vacuum and read 0) plus ``haadf_per_nm * t``, blurred by a Gaussian probe
  of ``probe_sigma_px``, plus white noise of ``image_noise``. Particles and film are bright,
  the substrate grey, holes dark.
- Noise: `PoissonCounts`. At a 0.05 s dwell the pixel nearest a vertex counts about 250-300
  in its corner peak above a zero-loss tail of about 20 there.

The corner mode is the feature a campaign hunts for with a window around 1.5-2.2 eV: it is
strong only near the vertices of triangles and rectangles, which the overview shows.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dklscope.drivers import SpectralAxis

from .sample import PoissonCounts, Sample

ENERGY_AXIS = SpectralAxis(size=256, offset=0.5, scale=0.02, units="eV")
KINDS = ("triangle", "rectangle", "disc")
_MARGIN_PX = 1.0  # particles keep this far from the border of the field of view
_MIN_SIZE_PX = 6.0  # the first particle is not shrunk below this to make it fit
_TRIES = 200  # random placements tried per particle or hole


def _lorentzian(energy: np.ndarray, centre: np.ndarray | float, hwhm: float) -> np.ndarray:
    """A Lorentzian of half width at half maximum ``hwhm``, normalised to 1 at ``centre``."""
    return 1.0 / (1.0 + ((energy - centre) / hwhm) ** 2)


def _vertices(kind: str, size_px: float, aspect: float, angle: float) -> np.ndarray:
    """The vertices (k, 2) as (x, y) relative to the centre; a disc has none."""
    if kind == "triangle":
        radius = size_px / np.sqrt(3.0)  # circumradius of an equilateral triangle
        phi = angle + 2 * np.pi * np.arange(3) / 3
        return radius * np.column_stack([np.cos(phi), np.sin(phi)])
    if kind == "rectangle":
        half = 0.5 * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [size_px, aspect * size_px]
        c, s = np.cos(angle), np.sin(angle)
        return half @ np.array([[c, s], [-s, c]])
    return np.zeros((0, 2))


def _mask(
    kind: str,
    size_px: float,
    vertices: np.ndarray,
    centre: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
) -> np.ndarray:
    """The pixels whose centre lies inside the shape (convex polygon or disc)."""
    if kind == "disc":
        return np.hypot(xx - centre[0], yy - centre[1]) <= size_px / 2
    v = vertices + centre
    w = np.roll(v, -1, axis=0)
    cross = (w[:, 0, None, None] - v[:, 0, None, None]) * (yy - v[:, 1, None, None]) - (
        w[:, 1, None, None] - v[:, 1, None, None]
    ) * (xx - v[:, 0, None, None])
    return np.all(cross >= 0, axis=0) | np.all(cross <= 0, axis=0)


def _forbidden(blocked: np.ndarray, gap_px: float) -> np.ndarray:
    """Pixels closer than ``gap_px`` to a blocked pixel (the blocked ones included)."""
    if not blocked.any():
        return np.zeros_like(blocked)
    return ndimage.distance_transform_edt(~blocked) <= gap_px


def _check_range(name: str, value: tuple[float, float]) -> None:
    lo, hi = value
    if not (0 < lo <= hi and np.isfinite(hi)):
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {value}")


def _check_parameters(shape: tuple[int, int], values: dict[str, float]) -> None:
    if len(shape) != 2 or min(shape) < 16:
        raise ValueError(f"shape must be (rows, cols), each at least 16 pixels, got {shape}")
    for name, value in values.items():
        if name in ("n_particles", "n_holes"):
            low = 1 if name == "n_particles" else 0
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        elif name in ("film_fraction",):
            if not 0 <= value <= 0.5:
                raise ValueError(f"{name} must be between 0 and 0.5, got {value}")
        elif name in ("gap_nm", "bulk_rate_per_nm", "edge_rate", "corner_rate", "image_noise"):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value}")
        elif name in ("substrate_level", "haadf_per_nm", "probe_sigma_px", "size_exponent"):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value}")
        elif not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value}")


def plasmonic_sample(
    shape: tuple[int, int] = (64, 64),
    *,
    seed: int = 0,
    pixel_size_nm: float = 2.0,
    n_particles: int = 6,
    particle_size_nm: tuple[float, float] = (16.0, 40.0),
    particle_thickness_nm: tuple[float, float] = (10.0, 20.0),
    gap_nm: float = 4.0,
    film_fraction: float = 0.2,
    film_thickness_nm: float = 15.0,
    n_holes: int = 2,
    hole_radius_nm: tuple[float, float] = (5.0, 10.0),
    corner_ev: float = 1.8,
    edge_ev: float = 2.8,
    rim_ev: float = 3.3,
    bulk_ev: float = 3.8,
    size_reference_nm: float = 28.0,
    size_exponent: float = 0.3,
    corner_hwhm_ev: float = 0.12,
    edge_hwhm_ev: float = 0.15,
    bulk_hwhm_ev: float = 0.25,
    corner_decay_nm: float = 6.0,
    edge_decay_nm: float = 8.0,
    zlp_rate: float = 2.0e4,
    bulk_rate_per_nm: float = 300.0,
    edge_rate: float = 5.0e3,
    corner_rate: float = 6.0e3,
    substrate_level: float = 0.2,
    haadf_per_nm: float = 0.04,
    probe_sigma_px: float = 0.7,
    image_noise: float = 0.02,
) -> Sample:
    """Generate the sample; the same arguments always give the same sample. See the module
    docstring for the model and the meaning of each parameter.

    Labels, each of shape ``shape``: ``particle`` (int16: 0 off the particles, k on particle
    k = 1, 2, ...), ``film`` (bool: the metal film, holes excluded), ``hole`` (bool),
    ``thickness_nm`` (metal thickness, 0 off the metal), ``particle_size_nm`` (``L`` of the
    particle, 0 off the particles), ``edge_distance_nm`` (signed ``d``), ``corner_distance_nm``
    (``r``), ``edge_plasmon_eV`` (``E_e`` or ``rim_ev``, as seen at that pixel) and
    ``corner_plasmon_eV`` (``E_c`` of the nearest vertex's particle); all floats are float32.
    """
    _check_range("particle_size_nm", particle_size_nm)
    _check_range("particle_thickness_nm", particle_thickness_nm)
    _check_range("hole_radius_nm", hole_radius_nm)
    _check_parameters(
        tuple(shape),
        {
            "pixel_size_nm": pixel_size_nm,
            "n_particles": n_particles,
            "gap_nm": gap_nm,
            "film_fraction": film_fraction,
            "film_thickness_nm": film_thickness_nm,
            "n_holes": n_holes,
            "corner_ev": corner_ev,
            "edge_ev": edge_ev,
            "rim_ev": rim_ev,
            "bulk_ev": bulk_ev,
            "size_reference_nm": size_reference_nm,
            "size_exponent": size_exponent,
            "corner_hwhm_ev": corner_hwhm_ev,
            "edge_hwhm_ev": edge_hwhm_ev,
            "bulk_hwhm_ev": bulk_hwhm_ev,
            "corner_decay_nm": corner_decay_nm,
            "edge_decay_nm": edge_decay_nm,
            "zlp_rate": zlp_rate,
            "bulk_rate_per_nm": bulk_rate_per_nm,
            "edge_rate": edge_rate,
            "corner_rate": corner_rate,
            "substrate_level": substrate_level,
            "haadf_per_nm": haadf_per_nm,
            "probe_sigma_px": probe_sigma_px,
            "image_noise": image_noise,
        },
    )
    rng = np.random.default_rng(seed)
    rows, cols = int(shape[0]), int(shape[1])
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    gap_px = gap_nm / pixel_size_nm

    # The film along one side, and its holes.
    side = int(rng.integers(4))  # 0 top, 1 bottom, 2 left, 3 right
    depth = int(np.rint(film_fraction * (rows if side < 2 else cols)))
    from_side = (yy, rows - 1 - yy, xx, cols - 1 - xx)[side]
    film_zone = from_side < depth
    hole = np.zeros((rows, cols), dtype=bool)
    for _ in range(int(n_holes) if depth > 0 else 0):
        radius = rng.uniform(*hole_radius_nm) / pixel_size_nm
        radius = min(radius, (depth - 1 - 2 * _MARGIN_PX) / 2)
        if radius < 1.0:
            continue
        taken = _forbidden(hole, gap_px)
        for _ in range(_TRIES):
            inward = rng.uniform(_MARGIN_PX + radius, depth - 1 - _MARGIN_PX - radius)
            along = rng.uniform(radius, (cols if side < 2 else rows) - 1 - radius)
            cx, cy = (
                (along, inward),
                (along, rows - 1 - inward),
                (inward, along),
                (cols - 1 - inward, along),
            )[side]
            disc = np.hypot(xx - cx, yy - cy) <= radius
            if disc.any() and not (disc & (taken | ~film_zone)).any():
                hole |= disc
                break
    film = film_zone & ~hole

    # The particles, off the film: the triangle first, then the others from the largest down.
    kinds = list(KINDS[: int(n_particles)])
    kinds += [KINDS[k] for k in rng.integers(3, size=max(0, int(n_particles) - 3))]
    drawn = [
        (
            kind,
            rng.uniform(*particle_size_nm) / pixel_size_nm,
            rng.uniform(0.5, 1.0),
            rng.uniform(0, 2 * np.pi),
            rng.uniform(*particle_thickness_nm),
        )
        for kind in kinds
    ]
    drawn = drawn[:1] + sorted(drawn[1:], key=lambda d: -d[1])
    particle = np.zeros((rows, cols), dtype=np.int16)
    thickness = np.where(film, film_thickness_nm, 0.0)
    size_map = np.zeros((rows, cols))
    corners: list[np.ndarray] = []
    corner_energy: list[float] = []
    edge_energy = {0: rim_ev}  # owner id -> edge-type mode energy; 0 is the film
    for kind, size_px, aspect, angle, t in drawn:
        blocked = _forbidden(film_zone | (particle > 0), gap_px)
        placed = None
        while placed is None:
            vertices = _vertices(kind, size_px, aspect, angle)
            reach = np.abs(vertices).max(axis=0) if len(vertices) else np.full(2, size_px / 2)
            lo = reach + _MARGIN_PX
            hi = np.array([cols - 1, rows - 1]) - reach - _MARGIN_PX
            for _ in range(_TRIES if np.all(hi >= lo) else 0):
                centre = rng.uniform(lo, hi)
                mask = _mask(kind, size_px, vertices, centre, xx, yy)
                if mask.any() and not (mask & blocked).any():
                    placed = mask, vertices + centre
                    break
            if placed is None:
                if particle.any():
                    break  # only the first particle is made to fit
                size_px *= 0.9
                if size_px < _MIN_SIZE_PX:
                    raise ValueError(
                        f"shape {tuple(shape)} is too small for a particle of "
                        f"{_MIN_SIZE_PX * pixel_size_nm:g} nm beside the film "
                        f"(film_fraction {film_fraction}, pixel_size_nm {pixel_size_nm})"
                    )
        if placed is None:
            continue
        mask, vertices = placed
        k = int(particle.max()) + 1
        size_nm = size_px * pixel_size_nm
        scale = (size_reference_nm / size_nm) ** size_exponent
        particle[mask] = k
        thickness[mask] = t
        size_map[mask] = size_nm
        edge_energy[k] = edge_ev * scale
        corners.append(vertices)
        corner_energy += [corner_ev * scale] * len(vertices)

    # Edge distance and the owner of the nearest edge.
    metal = thickness > 0
    inside = ndimage.distance_transform_edt(metal)
    outside, (near_r, near_c) = ndimage.distance_transform_edt(~metal, return_indices=True)
    edge_distance = np.where(metal, -(inside - 0.5), outside - 0.5) * pixel_size_nm
    owner = particle[near_r, near_c]  # inside the metal this is the pixel itself
    lookup = np.array([edge_energy[k] for k in range(int(particle.max()) + 1)])
    edge_plasmon = lookup[owner]

    # Corner distance and the nearest vertex's mode.
    vertices = np.concatenate(corners)  # the first particle is a triangle: never empty
    to_corner = np.hypot(xx[..., None] - vertices[:, 0], yy[..., None] - vertices[:, 1])
    nearest = np.argmin(to_corner, axis=-1)
    corner_distance = np.take_along_axis(to_corner, nearest[..., None], -1)[..., 0]
    corner_distance = corner_distance * pixel_size_nm
    corner_plasmon = np.asarray(corner_energy)[nearest]

    # Spectra, a block of rows at a time to bound the memory of the temporaries.
    energy = ENERGY_AXIS.values()
    zlp = zlp_rate * (energy / energy[0]) ** -3.0
    bulk_line = bulk_rate_per_nm * _lorentzian(energy, bulk_ev, bulk_hwhm_ev)
    edge_amp = edge_rate * np.exp(-np.abs(edge_distance) / edge_decay_nm)
    corner_amp = corner_rate * np.exp(-corner_distance / corner_decay_nm)
    signal = np.empty((rows, cols, ENERGY_AXIS.size), dtype=np.float32)
    block = max(1, 2**21 // (cols * ENERGY_AXIS.size))
    for r0 in range(0, rows, block):
        b = slice(r0, r0 + block)
        signal[b] = (
            zlp
            + thickness[b, :, None] * bulk_line
            + edge_amp[b, :, None] * _lorentzian(energy, edge_plasmon[b, :, None], edge_hwhm_ev)
            + corner_amp[b, :, None]
            * _lorentzian(energy, corner_plasmon[b, :, None], corner_hwhm_ev)
        )

    # Overview.
    image = np.where(hole, 0.0, substrate_level) + haadf_per_nm * thickness
    if probe_sigma_px > 0:
        image = ndimage.gaussian_filter(image, probe_sigma_px, mode="nearest")
    image = image + image_noise * rng.standard_normal((rows, cols))

    return Sample(
        name="plasmonic nanoparticles",
        image=image.astype(np.float32),
        signal=signal,
        noise=PoissonCounts(),
        spectral_axis=ENERGY_AXIS,
        pixel_size=pixel_size_nm,
        pixel_units="nm",
        spectrum_units="counts",
        labels={
            "particle": particle,
            "film": film,
            "hole": hole,
            "thickness_nm": thickness.astype(np.float32),
            "particle_size_nm": size_map.astype(np.float32),
            "edge_distance_nm": edge_distance.astype(np.float32),
            "corner_distance_nm": corner_distance.astype(np.float32),
            "edge_plasmon_eV": edge_plasmon.astype(np.float32),
            "corner_plasmon_eV": corner_plasmon.astype(np.float32),
        },
    )
