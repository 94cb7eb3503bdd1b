"""Bootstrap statistics over seeds: the median with its percentile-bootstrap confidence
interval (`median_ci`, `median_band` for several points at once) and the mean with its BCa
bootstrap confidence interval (`mean_ci`).

The percentile bootstrap of a median resamples the seeds with replacement ``n_bootstrap`` times;
the interval runs from the ``(1 - confidence) / 2`` to the ``(1 + confidence) / 2`` quantile of
the resampled medians. The bounds are order statistics of the resampled medians (the lower one
for the low bound, the higher one for the high bound), never interpolated, so a censored
(infinite) median is never mixed into a finite number. `bootstrap_rng` gives each bootstrap a
generator of its own, seeded by ``seed`` and the group and metric, so a group's intervals do not
change when other groups are added.

The mean's interval is bias-corrected and accelerated (BCa; Efron & Tibshirani, *An
Introduction to the Bootstrap*, 1993, ch. 14), computed by `scipy.stats.bootstrap`.
"""

from __future__ import annotations

import inspect
import math
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import bootstrap as scipy_bootstrap

# `scipy.stats.bootstrap` took its generator as ``random_state`` before scipy 1.15, ``rng`` since.
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(scipy_bootstrap).parameters else "random_state"

# Bootstrap medians are computed in chunks of at most this many resampled values (memory bound).
_CHUNK_VALUES = 2_000_000


def median_ci(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    rng: np.random.Generator | int = 0,
) -> tuple[float, float, float]:
    """The median of ``values`` and its percentile-bootstrap confidence interval.

    ``values``: (S,) floats, +inf allowed (a censored value); NaN is not allowed. ``rng``: a
    generator, or a seed for a fresh local one. Returns (median, ci_low, ci_high), which may be
    +inf; all NaN when ``values`` is empty.
    """
    check_bootstrap(confidence, n_bootstrap)
    array = np.asarray(values, dtype=float).reshape(-1, 1)
    if array.size == 0:
        return math.nan, math.nan, math.nan
    if np.isnan(array).any():
        raise ValueError("median_ci: NaN among the values")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    median, low, high = median_band(array, confidence, n_bootstrap, generator)
    return float(median[0]), float(low[0]), float(high[0])


def mean_ci(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    rng: np.random.Generator | int = 0,
) -> tuple[float, float, float]:
    """The mean of ``values`` and its BCa bootstrap confidence interval.

    ``values``: (S,) finite floats. BCa (bias-corrected and accelerated; Efron & Tibshirani
    1993, ch. 14) by `scipy.stats.bootstrap` with ``n_bootstrap`` resamples. One value, or all
    values equal, give a zero-width interval at the mean (BCa is undefined there). Returns
    (mean, ci_low, ci_high); all NaN when ``values`` is empty.
    """
    check_bootstrap(confidence, n_bootstrap)
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        return math.nan, math.nan, math.nan
    if not np.isfinite(array).all():
        raise ValueError("mean_ci: a value is not finite")
    mean = float(array.mean())
    if array.size == 1 or np.all(array == array[0]):
        return mean, mean, mean
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    with warnings.catch_warnings():
        # A resample distribution too degenerate for BCa (a few distinct values) warns and
        # gives NaN; the percentile interval is then used.
        warnings.simplefilter("ignore")
        for method in ("BCa", "percentile"):
            interval = scipy_bootstrap(
                (array,),
                np.mean,
                n_resamples=n_bootstrap,
                confidence_level=confidence,
                method=method,
                **{_RNG_KEYWORD: generator},
            ).confidence_interval
            if np.isfinite(interval.low) and np.isfinite(interval.high):
                break
    return mean, float(interval.low), float(interval.high)


def check_bootstrap(confidence: float, n_bootstrap: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")


def bootstrap_rng(seed: int, group: tuple[Any, ...], metric: str) -> np.random.Generator:
    """A generator of its own for one bootstrap, from ``seed``, the group and the metric."""
    key = zlib.crc32(repr((group, metric)).encode())
    return np.random.default_rng([seed, key])


def median_band(
    values: np.ndarray, confidence: float, n_bootstrap: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median over axis 0 of ``values`` (S, K), S >= 1, and its percentile-bootstrap band.

    Returns (median, ci_low, ci_high), each (K,); +inf in ``values`` propagates.
    """
    n_seeds, n_points = values.shape
    median = np.median(values, axis=0)
    if n_seeds == 1:
        return median, median.copy(), median.copy()
    boot = np.empty((n_bootstrap, n_points))
    chunk = max(1, _CHUNK_VALUES // (n_seeds * n_points))
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        index = rng.integers(0, n_seeds, size=(size, n_seeds))
        boot[start : start + size] = np.median(values[index], axis=1)
    alpha = (1 - confidence) / 2
    low = np.quantile(boot, alpha, axis=0, method="lower")
    high = np.quantile(boot, 1 - alpha, axis=0, method="higher")
    return median, low, high
