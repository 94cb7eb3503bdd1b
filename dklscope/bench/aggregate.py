"""Aggregation of a grid of simulated campaigns: medians over seeds with bootstrap confidence
intervals (`aggregate`), the median curves against the measurements (`curves`), and the
grouping of the campaign results they share with the paired comparisons, tables and plots.

Input is one dict per finished campaign (JSON-serialisable, None for a missing value)::

    {"sample": "plasmonic", "arm": "dkl-ei", "seed": 3, "steps": 60, "pipeline": False,
     "n_measurements": 70, "n_seed_points": 10, "protocol_n": 70,
     "trace": {"n": [1, 2, ...], "best_fraction": [...], "top_found": [...]},
     "map": {"n": [10, 20, ...], "rmse": [...], "r2": [...],
             "coverage50": [...], "coverage95": [...]},
     "steps_to_90pct_best": 23 or None, "steps_to_top_percent": 41 or None,
     "final_best_fraction": 0.97, "best_fraction_at_protocol": 0.97, ..., "wall_s": 6.2}

Campaigns are grouped by `GROUP_KEYS` (everything but the seed). Each statistic is the median
over the group's seeds; its confidence interval is a percentile bootstrap of that median
(`dklscope.bench.statistics`): the seeds are resampled with replacement ``n_bootstrap`` times and
the interval runs from the ``(1 - confidence) / 2`` to the ``(1 + confidence) / 2`` quantile of
the resampled medians. The bounds are order statistics of the resampled medians (the lower one
for the low bound, the higher one for the high bound), never interpolated, so a censored
(infinite) median is never mixed into a finite number. Each bootstrap draws from its own
generator seeded by ``seed`` and the group and metric, so a group's intervals do not change
when other groups are added.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from dklscope.campaign.jsonsafe import json_safe

from .statistics import bootstrap_rng, check_bootstrap, median_band

log = logging.getLogger(__name__)

#: The keys that define a group of campaigns (all but the seed), in sorting order.
GROUP_KEYS = ("sample", "arm", "steps", "pipeline")

#: Steps-to-target metrics: None means "not reached within the budget" (censored, +inf).
CENSORED_METRICS = ("steps_to_90pct_best", "steps_to_top_percent")

#: The per-campaign scalars that `aggregate` summarises, in the order of its columns.
SCALAR_METRICS = (
    "best_fraction_at_protocol",
    "final_best_fraction",
    "final_top_found",
    "final_map_rmse",
    "final_map_r2",
    "final_coverage50",
    "final_coverage95",
    "median_decision_latency_s",
    "idle_fraction",
    "wall_s",
    *CENSORED_METRICS,
)

#: The coverage targets the issue sets: the median coverage of the 50% and 95% intervals over
#: the unmeasured candidates should stay within these bounds (drawn as bands on the figures).
COVERAGE_TARGETS = {"coverage50": (0.4, 0.6), "coverage95": (0.85, 0.99)}

Group = tuple[Any, ...]


def aggregate(
    results: Sequence[dict[str, Any]],
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per group of campaigns (`GROUP_KEYS`), sorted by sample, arm, steps, pipeline.

    Each row holds the group keys, ``n_seeds`` (campaigns in the group), and for every metric
    of `SCALAR_METRICS`: ``<metric>_median``, ``<metric>_ci_low`` and ``<metric>_ci_high``
    (median over seeds and its bootstrap CI at ``confidence``, ``n_bootstrap`` resamples,
    generators seeded from ``seed``; units those of the metric: fractions, scalar units for the
    RMSE, seconds, measurements for ``steps_to_*``). ``coverage95_median`` repeats
    ``final_coverage95_median``.

    Censoring (`CENSORED_METRICS`): a None means the target was not reached within the budget
    and counts as +inf in the median and the bootstrap; a median or CI bound that is infinite
    is reported as None, and ``<metric>_reached`` counts the seeds that reached the target. A
    campaign that lacks the key altogether is left out of that metric.

    Other metrics: None, NaN or a missing key is dropped; with nothing left the three
    statistics are None. All values in the rows are plain Python (str, int, float, bool, None).

    ``protocol_n``: the group's protocol budget (measurements; None when the results lack it).
    ``coverage50_min``, ``coverage50_max``, ``coverage95_min``, ``coverage95_max``: the least
    and the largest, over the map evaluations after the seed points (n > ``n_seed_points``), of
    the median over seeds of the coverage of the 50% and 95% intervals (the curves of `curves`:
    the evaluations common to every seed); None without such evaluations. ``pass_coverage``:
    whether both ranges lie within `COVERAGE_TARGETS` (the issue's criterion; None when a range
    is missing).
    """
    check_bootstrap(confidence, n_bootstrap)
    rows = []
    for group, members in grouped(results).items():
        row: dict[str, Any] = dict(zip(GROUP_KEYS, group, strict=True))
        row["n_seeds"] = len(members)
        seeds = [m.get("seed") for m in members]
        if len(set(map(repr, seeds))) < len(seeds):
            log.warning("group %s has repeated seeds: %s", label_of(group), seeds)
        for metric in SCALAR_METRICS:
            values = _metric_values(members, metric)
            rng = bootstrap_rng(seed, group, metric)
            median, low, high = _stats(values, confidence, n_bootstrap, rng)
            row[f"{metric}_median"] = median
            row[f"{metric}_ci_low"] = low
            row[f"{metric}_ci_high"] = high
            if metric in CENSORED_METRICS:
                row[f"{metric}_reached"] = sum(math.isfinite(v) for v in values)
        row["coverage95_median"] = row["final_coverage95_median"]
        row["protocol_n"] = first_value(members, "protocol_n")
        for metric in COVERAGE_TARGETS:
            low, high = _coverage_range(members, metric)
            row[f"{metric}_min"], row[f"{metric}_max"] = low, high
        row["pass_coverage"] = _coverage_passes(row)
        rows.append(row)
    return rows


def curves(
    results: Sequence[dict[str, Any]],
    metric: str,
    *,
    where: Literal["trace", "map"],
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict[Group, dict[str, Any]]:
    """Median curve of ``metric`` against the number of measurements, per group, with its band.

    ``where``: ``"trace"`` (one point per measurement: ``best_fraction``, ``top_found``) or
    ``"map"`` (every few measurements: ``rmse``, ``r2``, ``coverage50``, ``coverage95``).

    Ragged series: a point (n, value) counts only when the value is a finite number; a seed
    with no such point for ``metric`` is left out of its group, and the curve keeps only the n
    present in every remaining seed of the group (the intersection; for traces of different
    lengths this truncates to the shortest). A group with no common n is left out.

    Returns {group (the values of `GROUP_KEYS`): {"n": (K,) int array of measurement counts,
    increasing; "median", "ci_low", "ci_high": (K,) float arrays, the median over seeds and its
    pointwise bootstrap CI at ``confidence``; "n_seeds": seeds used}}, groups in sorted order.
    """
    if where not in ("trace", "map"):
        raise ValueError(f"curves: where must be 'trace' or 'map', got {where!r}")
    check_bootstrap(confidence, n_bootstrap)
    out: dict[Group, dict[str, Any]] = {}
    for group, members in grouped(results).items():
        series = [s for s in (_series(m, where, metric) for m in members) if s]
        if not series:
            continue
        common = sorted(set.intersection(*(set(s) for s in series)))
        if not common:
            log.warning(
                "%s %s: no measurement count common to all seeds of %s",
                where,
                metric,
                label_of(group),
            )
            continue
        values = np.array([[s[n] for n in common] for s in series], dtype=float)  # (S, K)
        rng = bootstrap_rng(seed, group, f"{where}.{metric}")
        median, low, high = median_band(values, confidence, n_bootstrap, rng)
        out[group] = {
            "n": np.array(common, dtype=int),
            "median": median,
            "ci_low": low,
            "ci_high": high,
            "n_seeds": len(series),
        }
    return out


# -- helpers ------------------------------------------------------------------------------------


def group_of(result: dict[str, Any]) -> Group:
    missing = [k for k in GROUP_KEYS if k not in result]
    if missing:
        raise ValueError(f"a campaign result lacks {', '.join(missing)}: {_brief(result)}")
    return tuple(result[k] for k in GROUP_KEYS)


def _brief(result: dict[str, Any]) -> str:
    return repr({k: v for k, v in result.items() if not isinstance(v, (dict, list))})[:200]


def sort_key(values: Iterable[Any]) -> tuple[tuple[bool, Any], ...]:
    """Sorts None last, without comparing None to a value."""
    return tuple((v is None, v) for v in values)


def grouped(results: Sequence[dict[str, Any]]) -> dict[Group, list[dict[str, Any]]]:
    """The results by group, groups in sorted order, members in input order."""
    groups: dict[Group, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(group_of(result), []).append(result)
    return {g: groups[g] for g in sorted(groups, key=sort_key)}


def label_of(group: Group) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(GROUP_KEYS, group, strict=True))


def as_float(value: Any) -> float | None:
    """``value`` as a float; None for None, NaN and what is not a number."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _metric_values(members: Sequence[dict[str, Any]], metric: str) -> list[float]:
    """The group's values of one scalar metric, censored ones as +inf, missing ones dropped."""
    values = []
    for member in members:
        if metric not in member:
            continue
        value = as_float(member[metric])
        if metric in CENSORED_METRICS:
            values.append(math.inf if value is None else value)
        elif value is not None and math.isfinite(value):
            values.append(value)
    return values


def _stats(
    values: Sequence[float], confidence: float, n_bootstrap: int, rng: np.random.Generator
) -> tuple[float | None, float | None, float | None]:
    """(median, ci_low, ci_high) as floats, None where infinite or where there are no values."""
    if not values:
        return None, None, None
    median, low, high = median_band(
        np.asarray(values, dtype=float).reshape(-1, 1), confidence, n_bootstrap, rng
    )
    return (
        json_safe(float(median[0])),
        json_safe(float(low[0])),
        json_safe(float(high[0])),
    )


def _series(result: dict[str, Any], where: str, metric: str) -> dict[int, float]:
    """{n: value} of one campaign's series, finite values only; empty without the series."""
    block = result.get(where) or {}
    if block.get(metric) is None:
        return {}
    ns, values = block.get("n") or [], block[metric]
    if len(ns) != len(values):
        raise ValueError(
            f"{where}.{metric} has {len(values)} values for {len(ns)} n: {_brief(result)}"
        )
    series = {}
    for n, value in zip(ns, values, strict=True):
        number = as_float(value)
        if n is not None and number is not None and math.isfinite(number):
            series[int(n)] = number
    return series


def first_value(members: Sequence[dict[str, Any]], key: str) -> Any:
    """The first non-None ``key`` among the campaigns (None if none has one)."""
    return next((m[key] for m in members if m.get(key) is not None), None)


def _coverage_range(
    members: Sequence[dict[str, Any]], metric: str
) -> tuple[float | None, float | None]:
    """(least, largest) over the evaluations after the seed points of the median coverage
    over the seeds (the evaluations common to every seed with the series)."""
    series = [s for s in (_series(m, "map", metric) for m in members) if s]
    if not series:
        return None, None
    after = max(int(as_float(m.get("n_seed_points")) or 0) for m in members)
    common = sorted(n for n in set.intersection(*(set(s) for s in series)) if n > after)
    if not common:
        return None, None
    medians = np.median([[s[n] for n in common] for s in series], axis=0)
    return float(medians.min()), float(medians.max())


def _coverage_passes(row: dict[str, Any]) -> bool | None:
    """Whether the row's coverage ranges lie within `COVERAGE_TARGETS` (None: a range is
    missing)."""
    verdict = True
    for metric, (low, high) in COVERAGE_TARGETS.items():
        least, largest = row[f"{metric}_min"], row[f"{metric}_max"]
        if least is None or largest is None:
            return None
        verdict = verdict and low <= least and largest <= high
    return verdict


def unique(items: Iterable[Any]) -> list[Any]:
    """The items without repeats, in first-seen order."""
    return list(dict.fromkeys(items))
