"""A synthetic band-excitation PFM (BEPS) sample: a ferroelectric film with c+/c- polarization
domains separated by domain walls, and a piezoresponse hysteresis loop at every pixel.

Physics model (biases in V, distances in nm unless marked px, response in arbitrary units a.u.):

- Domains: white noise smoothed by a Gaussian of standard deviation ``domain_size_nm / 2``,
  thresholded at its ``c_plus_fraction`` quantile: above it c+ (polarization up, label 1),
  below it c- (polarization down, label 0). Walls are the boundaries between them; the wall
  distance ``d`` of a pixel is its distance to the nearest pixel of the other domain minus
  half a pixel (so pixels touching a wall sit at 0.5 px).
- Wall proximity ``p = exp(-d / wall_length_nm)`` (1 at a wall, 0 far away) softens switching:
  the coercive half-width is ``Vc = coercive_V * (1 - wall_coercive_drop * p)`` and the
  saturation response is ``a1 = saturation_response * (1 - wall_response_drop * p)``, both with
  a few per cent of smooth seeded disorder. Switching is thus easier and the loop smaller
  near walls.
- Imprint (a horizontal loop shift) ``Vi = -imprint_V`` in c+ and ``+imprint_V`` in c-: the
  built-in field of a domain favours its own polarization. Coercive biases are
  ``Vc+ = Vi + Vc`` and ``Vc- = Vi - Vc``; the nucleation bias (onset of switching, 2 % of
  the way) is ``Vi ± (Vc - 2 w)`` with the switching width ``w = switching_width_V``.
- Bias waveform (`bias_waveform`): a triangle of ``n_steps`` points 0 -> +v_max -> -v_max -> 0.
  The spectral axis is the step index (``units="step"``); the bias of step ``i`` is
  ``bias_waveform(n_steps, v_max)[i]``.
- Loop (the widely used phenomenological tanh model): on steps where the bias rises (the
  first step included) the response follows the up-branch ``a1 * tanh((V - Vc+) / w) + s V``,
  where it falls the down-branch ``a1 * tanh((V - Vc-) / w) + s V``; ``s = linear_slope * a1``
  per V is a small non-switching (electrostatic) term. A saturated loop has area about
  ``2 a1 (Vc+ - Vc-)`` in V·a.u. (`loop_area`, shoelace formula, positive when traversed
  counter-clockwise as here).
- Overview (PFM-amplitude-like, a.u. around 1): ``(1 - wall_amplitude_dip * p) *
  (1 ± phase_contrast)`` (+ in c+, - in c-): domains differ in brightness and walls are dark
  lines; plus a smooth topographic roughness and white noise, both ``image_noise`` scaled.
- Noise: `GaussianNoise` whose standard deviation at a dwell of 0.01 s is
  ``noise_at_10ms * saturation_response``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dklscope.drivers import SpectralAxis

from .sample import GaussianNoise, Sample

C_MINUS = 0
C_PLUS = 1


def bias_waveform(n_points: int = 64, v_max: float = 8.5) -> np.ndarray:
    """The BEPS bias of each step in V, shape (n_points,), float64: a triangle that rises
    linearly from 0 to +v_max, falls to -v_max and rises back to 0. The first and last steps
    are 0 V; the turning points are the steps nearest a quarter and three quarters of the way
    (steps 16 and 47 of 64), where the bias is exactly +v_max and -v_max."""
    if n_points < 5:
        raise ValueError(f"a bias waveform needs at least 5 points, got {n_points}")
    last = n_points - 1
    knots = [0, round(last / 4), round(3 * last / 4), last]
    return np.interp(np.arange(n_points), knots, [0.0, v_max, -v_max, 0.0])


def loop_area(bias: np.ndarray, response: np.ndarray) -> float | np.ndarray:
    """The signed area enclosed by the closed polygon through the points (bias, response), by
    the shoelace formula, in bias units × response units (V·a.u.).

    ``bias`` and ``response`` broadcast together over (..., n): n points per loop along the
    last axis, the last joined back to the first. The area is positive for a counter-clockwise
    path (as a piezoresponse loop run 0 -> +V -> -V -> 0 is) and negative for a clockwise one.
    Returns a float for a single loop, an array of shape (...) otherwise.
    """
    x = np.asarray(bias, dtype=np.float64)
    y = np.asarray(response, dtype=np.float64)
    x, y = np.broadcast_arrays(x, y)
    area = 0.5 * np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y, axis=-1)
    return float(area) if area.ndim == 0 else area


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float):
    """White noise smoothed by a Gaussian of ``sigma_px``, rescaled to zero mean, unit sd."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    return (field - field.mean()) / field.std()


def ferroelectric_sample(
    shape: tuple[int, int] = (50, 50),
    *,
    seed: int = 0,
    pixel_size_nm: float = 40.0,
    domain_size_nm: float = 200.0,
    c_plus_fraction: float = 0.5,
    n_steps: int = 64,
    v_max: float = 8.5,
    coercive_V: float = 3.0,
    imprint_V: float = 0.5,
    switching_width_V: float = 0.7,
    saturation_response: float = 1.0e-4,
    linear_slope: float = 0.005,
    wall_length_nm: float = 80.0,
    wall_coercive_drop: float = 0.5,
    wall_response_drop: float = 0.3,
    disorder: float = 0.04,
    wall_amplitude_dip: float = 0.6,
    phase_contrast: float = 0.25,
    image_noise: float = 0.03,
    noise_at_10ms: float = 0.05,
) -> Sample:
    """Generate the sample; the same arguments always give the same sample. See the module
    docstring for the model and the meaning of each parameter."""
    rng = np.random.default_rng(seed)

    # Domains and walls.
    field = _smooth_field(rng, shape, domain_size_nm / pixel_size_nm / 2)
    domain = np.where(field > np.quantile(field, 1 - c_plus_fraction), C_PLUS, C_MINUS)
    domain = domain.astype(np.int8)
    plus = domain == C_PLUS
    if plus.all() or not plus.any():
        wall_distance = np.full(shape, np.inf)
    else:
        wall_distance = (
            np.where(
                plus, ndimage.distance_transform_edt(plus), ndimage.distance_transform_edt(~plus)
            )
            - 0.5
        )
    proximity = np.exp(-wall_distance * pixel_size_nm / wall_length_nm)

    # Loop parameters per pixel.
    corr_px = max(wall_length_nm / pixel_size_nm, 1.0)
    coercive = coercive_V * (1 - wall_coercive_drop * proximity)
    coercive *= 1 + disorder * _smooth_field(rng, shape, corr_px)
    response = saturation_response * (1 - wall_response_drop * proximity)
    response *= 1 + disorder * _smooth_field(rng, shape, corr_px)
    imprint = np.where(plus, -imprint_V, imprint_V)
    v_plus, v_minus = imprint + coercive, imprint - coercive

    # Loops.
    bias = bias_waveform(n_steps, v_max)
    rising = np.r_[True, np.diff(bias) > 0]
    v_switch = np.where(rising, v_plus[..., None], v_minus[..., None])
    a1 = response[..., None]
    loops = a1 * (np.tanh((bias - v_switch) / switching_width_V) + linear_slope * bias)
    signal = loops.astype(np.float32)

    # Overview.
    image = (1 - wall_amplitude_dip * proximity) * (1 + phase_contrast * np.where(plus, 1, -1))
    image += image_noise * _smooth_field(rng, shape, 3.0)
    image += image_noise * rng.standard_normal(shape)

    return Sample(
        name="ferroelectric",
        image=image.astype(np.float32),
        signal=signal,
        noise=GaussianNoise(sd_at_1s=noise_at_10ms * saturation_response * np.sqrt(0.01)),
        spectral_axis=SpectralAxis(size=n_steps, offset=0.0, scale=1.0, units="step"),
        pixel_size=pixel_size_nm,
        pixel_units="nm",
        spectrum_units="a.u.",
        labels={
            "domain": domain,
            "wall_distance_px": wall_distance.astype(np.float32),
            "coercive_plus_V": v_plus.astype(np.float32),
            "coercive_minus_V": v_minus.astype(np.float32),
            "loop_area": loop_area(bias, signal).astype(np.float32),
        },
    )
