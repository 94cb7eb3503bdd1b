"""Aggregation of a grid of simulated campaigns: medians over seeds with bootstrap confidence
intervals, the tables and the plots of ``dklscope bench campaigns``.

Input is one dict per finished campaign (JSON-serialisable, None for a missing value)::

    {"sample": "plasmonic", "arm": "dkl-ei", "seed": 3, "steps": 60, "pipeline": False,
     "n_measurements": 70, "n_seed_points": 10, "protocol_n": 70,
     "trace": {"n": [1, 2, ...], "best_fraction": [...], "top_found": [...]},
     "map": {"n": [10, 20, ...], "rmse": [...], "r2": [...],
             "coverage50": [...], "coverage95": [...]},
     "steps_to_90pct_best": 23 or None, "steps_to_top_percent": 41 or None,
     "final_best_fraction": 0.97, "best_fraction_at_protocol": 0.97, ..., "wall_s": 6.2}

Campaigns are grouped by `GROUP_KEYS` (everything but the seed). Each statistic is the median
over the group's seeds; its confidence interval is a percentile bootstrap of that median: the
seeds are resampled with replacement ``n_bootstrap`` times and the interval runs from the
``(1 - confidence) / 2`` to the ``(1 + confidence) / 2`` quantile of the resampled medians.
The bounds are order statistics of the resampled medians (the lower one for the low bound, the
higher one for the high bound), never interpolated, so a censored (infinite) median is never
mixed into a finite number. Each bootstrap draws from its own generator seeded by ``seed`` and
the group and metric, so a group's intervals do not change when other groups are added.

Arms are compared seed by seed with `paired` (the seeds of a grid pair the arms: same seed
points, same noise): the mean of the per-seed differences baseline - arm in best fraction at
the protocol budget, with a bias-corrected and accelerated (BCa) bootstrap confidence interval
of that mean (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 14; computed by
`scipy.stats.bootstrap`), and the ratio of the medians of steps-to-90%-of-best.

Plots are drawn on `matplotlib.figure.Figure` objects directly, so matplotlib's global state
(pyplot, the backend) is never touched. Nothing is written outside the folder given.
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
import math
import warnings
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.stats import bootstrap as scipy_bootstrap

from .jsonsafe import json_safe

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

#: The files `write_tables` writes, in order.
TABLE_FILES = ("campaigns.csv", "aggregate.json", "aggregate.csv")

#: The files `write_paired` writes, in order.
PAIRED_FILES = ("paired.json", "paired.csv")

#: The issue's criteria, read by `paired`'s ``pass_*`` columns: the upper end of the CI of the
#: mean paired difference (baseline - arm) in best fraction at the protocol budget at most
#: `CI_HIGH_LIMIT`; the ratio of median steps-to-90%-of-best (arm / baseline) at most the
#: baseline's entry of `STEPS_RATIO_LIMITS` (no entry: no criterion).
CI_HIGH_LIMIT = 0.02
STEPS_RATIO_LIMITS = {"random": 1 / 3, "gp-xy": 2 / 3}

#: The coverage targets the issue sets: the median coverage of the 50% and 95% intervals over
#: the unmeasured candidates should stay within these bounds (drawn as bands on the figures).
COVERAGE_TARGETS = {"coverage50": (0.4, 0.6), "coverage95": (0.85, 0.99)}

#: The series `write_curves` writes to ``curves.json``: where it lives and its key.
CURVE_SERIES: tuple[tuple[Literal["trace", "map"], str], ...] = (
    ("trace", "best_fraction"),
    ("trace", "top_found"),
    ("map", "rmse"),
    ("map", "coverage50"),
    ("map", "coverage95"),
)

#: The plots of `plot_curves`: file name, where the series lives, its key, y label, the
#: dashed reference line (None: none) and the y range (None: automatic).
CURVE_PLOTS: tuple[
    tuple[str, Literal["trace", "map"], str, str, float | None, tuple[float, float] | None], ...
] = (
    ("best_fraction.png", "trace", "best_fraction", "best found / true best", 0.9, (0, 1.02)),
    ("top_found.png", "trace", "top_found", "fraction of top locations found", None, (0, 1.02)),
    ("map_rmse.png", "map", "rmse", "map RMSE (scalar units)", None, None),
    ("coverage50.png", "map", "coverage50", "coverage of the 50% interval", 0.5, (0, 1.02)),
    ("coverage95.png", "map", "coverage95", "coverage of the 95% interval", 0.95, (0, 1.02)),
)

Group = tuple[Any, ...]

# `scipy.stats.bootstrap` took its generator as ``random_state`` before scipy 1.15, ``rng`` since.
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(scipy_bootstrap).parameters else "random_state"

# Bootstrap medians are computed in chunks of at most this many resampled values (memory bound).
_CHUNK_VALUES = 2_000_000


# -- statistics ---------------------------------------------------------------------------------


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
    _check_bootstrap(confidence, n_bootstrap)
    array = np.asarray(values, dtype=float).reshape(-1, 1)
    if array.size == 0:
        return math.nan, math.nan, math.nan
    if np.isnan(array).any():
        raise ValueError("median_ci: NaN among the values")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    median, low, high = _median_band(array, confidence, n_bootstrap, generator)
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
    _check_bootstrap(confidence, n_bootstrap)
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
    _check_bootstrap(confidence, n_bootstrap)
    rows = []
    for group, members in _groups(results).items():
        row: dict[str, Any] = dict(zip(GROUP_KEYS, group, strict=True))
        row["n_seeds"] = len(members)
        seeds = [m.get("seed") for m in members]
        if len(set(map(repr, seeds))) < len(seeds):
            log.warning("group %s has repeated seeds: %s", _label_of(group), seeds)
        for metric in SCALAR_METRICS:
            values = _metric_values(members, metric)
            rng = _rng(seed, group, metric)
            median, low, high = _stats(values, confidence, n_bootstrap, rng)
            row[f"{metric}_median"] = median
            row[f"{metric}_ci_low"] = low
            row[f"{metric}_ci_high"] = high
            if metric in CENSORED_METRICS:
                row[f"{metric}_reached"] = sum(math.isfinite(v) for v in values)
        row["coverage95_median"] = row["final_coverage95_median"]
        row["protocol_n"] = _first_value(members, "protocol_n")
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
    _check_bootstrap(confidence, n_bootstrap)
    out: dict[Group, dict[str, Any]] = {}
    for group, members in _groups(results).items():
        series = [s for s in (_series(m, where, metric) for m in members) if s]
        if not series:
            continue
        common = sorted(set.intersection(*(set(s) for s in series)))
        if not common:
            log.warning(
                "%s %s: no measurement count common to all seeds of %s",
                where,
                metric,
                _label_of(group),
            )
            continue
        values = np.array([[s[n] for n in common] for s in series], dtype=float)  # (S, K)
        rng = _rng(seed, group, f"{where}.{metric}")
        median, low, high = _median_band(values, confidence, n_bootstrap, rng)
        out[group] = {
            "n": np.array(common, dtype=int),
            "median": median,
            "ci_low": low,
            "ci_high": high,
            "n_seeds": len(series),
        }
    return out


def paired(
    results: Sequence[dict[str, Any]],
    baselines: Sequence[str] = ("random", "gp-xy"),
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Each arm against each baseline, seed by seed: one row per group (`GROUP_KEYS`) and
    baseline, the baseline's own group left out, sorted by group then baseline.

    The baseline's campaigns are those of the same sample and arm ``baseline``: its only group,
    or the one with the same steps and pipelining (a baseline run with several budgets and
    none equal is skipped, with a warning). The pairs are the seeds both have, with a finite
    ``best_fraction_at_protocol`` on each side. Per pair d = baseline - arm in that best
    fraction (positive: the baseline found more). The row holds:

    - the group keys, ``baseline``, ``n_pairs`` and ``protocol_n`` (measurements);
    - ``diff_mean``, ``diff_median`` of d, and ``diff_ci_low``, ``diff_ci_high``: the BCa
      bootstrap CI of its mean at ``confidence`` (`mean_ci`, ``n_bootstrap`` resamples, a
      generator seeded from ``seed``, the group and the baseline); ``ci_method``: ``"BCa"``;
    - ``steps90_median``, ``steps90_median_baseline``: the medians over the pairs of
      steps-to-90%-of-best (None: the median is not reached within the budget), and
      ``steps90_ratio``: arm / baseline (0 when only the baseline's is censored, None when the
      arm's is);
    - the verdicts: ``pass_ci`` (``diff_ci_high`` <= `CI_HIGH_LIMIT`), ``steps90_ratio_limit``
      (the baseline's entry of `STEPS_RATIO_LIMITS`, or None) and ``pass_steps`` (the ratio
      within it; None without a limit).

    A group without pairs gives a row with ``n_pairs`` 0 and the statistics None.
    """
    _check_bootstrap(confidence, n_bootstrap)
    groups = _groups(results)
    rows = []
    for group, members in groups.items():
        for baseline in baselines:
            if group[1] == baseline:
                continue
            others = _baseline_group(groups, group, baseline)
            if others is None:
                continue
            rows.append(
                _paired_row(group, baseline, members, others, confidence, n_bootstrap, seed)
            )
    return rows


def _baseline_group(
    groups: dict[Group, list[dict[str, Any]]], group: Group, baseline: str
) -> list[dict[str, Any]] | None:
    """The baseline's campaigns to pair with ``group``'s (None: none, or no single choice)."""
    candidates = [g for g in groups if g[0] == group[0] and g[1] == baseline]
    if len(candidates) > 1:
        candidates = [g for g in candidates if g[2:] == group[2:]]
    if len(candidates) != 1:
        if candidates or any(g[1] == baseline for g in groups):
            log.warning("%s: no single %s group to pair with", _label_of(group), baseline)
        return None
    return groups[candidates[0]]


def _paired_row(
    group: Group,
    baseline: str,
    members: Sequence[dict[str, Any]],
    others: Sequence[dict[str, Any]],
    confidence: float,
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    mine = _by_seed(members)
    theirs = _by_seed(others)
    seeds = [s for s in mine if s in theirs]
    diffs, steps_mine, steps_theirs = [], [], []
    for s in seeds:
        a = _as_float(mine[s].get("best_fraction_at_protocol"))
        b = _as_float(theirs[s].get("best_fraction_at_protocol"))
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            continue
        diffs.append(b - a)
        steps_mine.append(_censored(mine[s].get("steps_to_90pct_best")))
        steps_theirs.append(_censored(theirs[s].get("steps_to_90pct_best")))
    row: dict[str, Any] = dict(zip(GROUP_KEYS, group, strict=True))
    row["baseline"] = baseline
    row["n_pairs"] = len(diffs)
    row["protocol_n"] = _first_value(members, "protocol_n")
    limit = STEPS_RATIO_LIMITS.get(baseline)
    if not diffs:
        row.update(dict.fromkeys(_PAIRED_STATS))
        row.update(ci_method="BCa", steps90_ratio_limit=limit, pass_ci=None, pass_steps=None)
        return row
    rng = _rng(seed, group, f"paired.{baseline}")
    mean, low, high = mean_ci(diffs, confidence=confidence, n_bootstrap=n_bootstrap, rng=rng)
    median_mine = float(np.median(steps_mine))
    median_theirs = float(np.median(steps_theirs))
    if math.isinf(median_mine):
        ratio = math.inf
    elif math.isinf(median_theirs):
        ratio = 0.0
    else:
        ratio = median_mine / median_theirs
    row.update(
        diff_mean=mean,
        diff_median=float(np.median(diffs)),
        diff_ci_low=low,
        diff_ci_high=high,
        ci_method="BCa",
        steps90_median=json_safe(median_mine),
        steps90_median_baseline=json_safe(median_theirs),
        steps90_ratio=json_safe(ratio),
        steps90_ratio_limit=limit,
        pass_ci=bool(high <= CI_HIGH_LIMIT),
        pass_steps=None if limit is None else bool(ratio <= limit),
    )
    return row


_PAIRED_STATS = (
    "diff_mean",
    "diff_median",
    "diff_ci_low",
    "diff_ci_high",
    "steps90_median",
    "steps90_median_baseline",
    "steps90_ratio",
)


# -- files --------------------------------------------------------------------------------------


def write_tables(
    results: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], folder: Path
) -> list[Path]:
    """Write `TABLE_FILES` into ``folder`` (made if needed); returns their paths, in that order.

    ``campaigns.csv``: one line per campaign, sorted by group and seed, with its scalar fields
    (the ``trace`` and ``map`` series and any other list or dict left out); ``aggregate.json``:
    ``rows`` (from `aggregate`) as strict JSON, NaN and infinities as null; ``aggregate.csv``:
    the same rows. Empty cells in the CSVs are None, NaN or infinite values.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(results, key=lambda r: (_sort_key(_group_of(r)), _sort_key((r.get("seed"),))))
    scalar_keys = _union_keys(
        {k: v for k, v in r.items() if not isinstance(v, (dict, list, tuple))} for r in ordered
    )
    paths = [
        _write_csv(folder / "campaigns.csv", ordered, scalar_keys),
        folder / "aggregate.json",
        _write_csv(folder / "aggregate.csv", rows, _union_keys(rows)),
    ]
    text = json.dumps(json_safe(list(rows)), indent=2, allow_nan=False)
    paths[1].write_text(text + "\n", encoding="utf-8")
    for path in paths:
        log.info("wrote %s", path)
    return paths


def write_paired(rows: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """Write the rows of `paired` to `PAIRED_FILES` in ``folder`` (made if needed): strict
    JSON (infinities as null) and CSV (empty cells for None); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "paired.json"
    text = json.dumps(json_safe(list(rows)), indent=2, allow_nan=False)
    json_path.write_text(text + "\n", encoding="utf-8")
    paths = [json_path, _write_csv(folder / "paired.csv", rows, _union_keys(rows))]
    for path in paths:
        log.info("wrote %s", path)
    return paths


def write_curves(
    results: Sequence[dict[str, Any]],
    folder: Path,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> Path:
    """Write ``curves.json`` into ``folder``: the median curves with their bands (`curves`) of
    every series of `CURVE_SERIES`, a list of {the group keys, ``where``, ``metric``, ``n``,
    ``median``, ``ci_low``, ``ci_high`` (lists), ``n_seeds``}; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for where, metric in CURVE_SERIES:
        data = curves(
            results,
            metric,
            where=where,
            confidence=confidence,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
        for group, curve in data.items():
            entry: dict[str, Any] = dict(zip(GROUP_KEYS, group, strict=True))
            entry.update(where=where, metric=metric, n_seeds=curve["n_seeds"])
            for key in ("n", "median", "ci_low", "ci_high"):
                entry[key] = curve[key].tolist()
            out.append(entry)
    path = folder / "curves.json"
    path.write_text(json.dumps(json_safe(out), allow_nan=False) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return path


def curve_figure(
    results: Sequence[dict[str, Any]],
    metric: str,
    *,
    where: Literal["trace", "map"],
    ylabel: str | None = None,
    reference: float | None = None,
    ylim: tuple[float, float] | None = None,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> Figure | None:
    """The figure of `curves` (same arguments): one subplot per sample, one line per arm and
    variant (median, with the CI as a shaded band), x the number of measurements.

    A line's label is the arm, with the budget (``60 steps``) when the arm ran several budgets
    and ``pipelined`` when it ran both pipeline settings; colour follows the arm, line style
    the variant. ``reference``: y of a dashed horizontal line (None: none).
    ``ylim``: the y range (None: automatic). None when no group has data for ``metric``.
    """
    data = curves(
        results, metric, where=where, confidence=confidence, n_bootstrap=n_bootstrap, seed=seed
    )
    if not data:
        return None
    groups = list(_groups(results))
    samples = _unique(g[0] for g in groups)
    arms = _unique(g[1] for g in groups)
    lines = _Lines(groups)
    colors = [f"C{i % 10}" for i in range(len(arms))]
    styles = ["-", "-.", ":", (0, (3, 1, 1, 1, 1, 1)), (0, (5, 1)), (0, (1, 2, 5, 2))]

    ncols = min(3, len(samples))
    nrows = math.ceil(len(samples) / ncols)
    fig = Figure(figsize=(4.2 * ncols + 1.8, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles: dict[str, Any] = {}
    for ax, sample in zip(axes, samples, strict=False):
        for group, curve in data.items():
            if group[0] != sample:
                continue
            color = colors[arms.index(group[1])]
            style = styles[lines.variant(group) % len(styles)]
            label = lines.label(group)
            x = curve["n"]
            (line,) = ax.plot(
                x,
                curve["median"],
                color=color,
                linestyle=style,
                linewidth=1.5,
                marker="o" if len(x) <= 20 else None,
                markersize=3,
                label=label,
            )
            ax.fill_between(
                x, curve["ci_low"], curve["ci_high"], color=color, alpha=0.2, linewidth=0
            )
            handles.setdefault(label, line)
        if reference is not None:
            reference_line = ax.axhline(
                reference, color="0.35", linestyle="--", linewidth=1, zorder=0
            )
        ax.set_title(str(sample))
        ax.set_xlabel("measurements")
        ax.set_ylabel(ylabel or metric)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    if reference is not None:
        handles[f"{reference:g}"] = reference_line  # last in the legend
    for ax in axes[len(samples) :]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize="small")
    fig.suptitle(f"median over seeds, {confidence:.0%} bootstrap CI", fontsize="medium")
    return fig


def summary_figure(
    results: Sequence[dict[str, Any]],
    paired_rows: Sequence[dict[str, Any]],
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> Figure | None:
    """The grid on one figure: a row per sample, four panels.

    1. best fraction against the measurements (median over seeds, its CI shaded; a line per
       arm and variant), the 0.9 line dashed and the protocol budget dotted;
    2. and 3. the coverage of the 50% and the 95% intervals on the unmeasured candidates
       against the measurements, the targets (0.5, 0.95) dashed and the issue's bands
       (`COVERAGE_TARGETS`) shaded;
    4. the paired differences of ``paired_rows`` (`paired`): per arm, the mean of
       baseline - arm in best fraction at the protocol budget with its CI, a marker shape
       per baseline, a dashed line at `CI_HIGH_LIMIT` (below it: the arm is not worse).

    None when the results hold no trace at all.
    """
    kwargs = {"confidence": confidence, "n_bootstrap": n_bootstrap, "seed": seed}
    best = curves(results, "best_fraction", where="trace", **kwargs)
    if not best:
        return None
    coverage = {m: curves(results, m, where="map", **kwargs) for m in COVERAGE_TARGETS}
    groups = list(_groups(results))
    samples = _unique(g[0] for g in groups)
    arms = _unique(g[1] for g in groups)
    lines = _Lines(groups)
    styles = ["-", "-.", ":", (0, (3, 1, 1, 1, 1, 1)), (0, (5, 1)), (0, (1, 2, 5, 2))]
    baselines = _unique(r["baseline"] for r in paired_rows)
    markers = ["o", "s", "^", "D", "v"]

    fig = Figure(figsize=(17, 3.3 * len(samples) + 0.6), layout="constrained")
    axes = fig.subplots(len(samples), 4, squeeze=False)
    handles: dict[str, Any] = {}
    for (ax_best, ax50, ax95, ax_diff), sample in zip(axes, samples, strict=True):
        panels = [
            (ax_best, best, "best found / true best"),
            (ax50, coverage["coverage50"], "coverage of the 50% interval"),
            (ax95, coverage["coverage95"], "coverage of the 95% interval"),
        ]
        for ax, data, ylabel in panels:
            for group, curve in data.items():
                if group[0] != sample:
                    continue
                color = f"C{arms.index(group[1]) % 10}"
                style = styles[lines.variant(group) % len(styles)]
                label = lines.label(group)
                (line,) = ax.plot(
                    curve["n"], curve["median"], color=color, linestyle=style, label=label
                )
                ax.fill_between(
                    curve["n"],
                    curve["ci_low"],
                    curve["ci_high"],
                    color=color,
                    alpha=0.2,
                    linewidth=0,
                )
                handles.setdefault(label, line)
            ax.set_xlabel("measurements")
            ax.set_ylabel(ylabel)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        ax_best.set_title(str(sample), loc="left", fontweight="bold")
        ax_best.axhline(0.9, color="0.35", linestyle="--", linewidth=1, zorder=0)
        protocol = _first_value([r for r in results if r.get("sample") == sample], "protocol_n")
        if protocol is not None:
            ax_best.axvline(protocol, color="0.35", linestyle=":", linewidth=1, zorder=0)
        for ax, (metric, (low, high)) in zip((ax50, ax95), COVERAGE_TARGETS.items(), strict=True):
            ax.axhspan(low, high, color="0.85", zorder=0, linewidth=0)
            ax.axhline(0.5 if metric == "coverage50" else 0.95, color="0.35", linestyle="--")
        mine = [r for r in paired_rows if r["sample"] == sample and r["n_pairs"]]
        labels = _unique(lines.label(_group_of(r)) for r in mine)
        for row in mine:
            x = labels.index(lines.label(_group_of(row)))
            k = baselines.index(row["baseline"])
            offset = (k - (len(baselines) - 1) / 2) * 0.2
            mean = row["diff_mean"]
            ax_diff.errorbar(
                x + offset,
                mean,
                yerr=[[mean - row["diff_ci_low"]], [row["diff_ci_high"] - mean]],
                fmt=markers[k % len(markers)],
                color=f"C{arms.index(row['arm']) % 10}",
                capsize=3,
            )
        ax_diff.axhline(0, color="0.35", linewidth=1, zorder=0)
        ax_diff.axhline(CI_HIGH_LIMIT, color="C3", linestyle="--", linewidth=1, zorder=0)
        ax_diff.set_xticks(range(len(labels)), labels, rotation=20, fontsize="small")
        ax_diff.set_xlim(-0.6, max(len(labels), 1) - 0.4)
        ax_diff.set_ylabel("baseline - arm, best fraction at budget")
        ax_diff.grid(alpha=0.3, axis="y")
        if baselines:
            ax_diff.legend(
                [
                    Line2D([], [], marker=markers[k % len(markers)], color="0.3", linestyle="")
                    for k in range(len(baselines))
                ],
                [f"vs {b}" for b in baselines],
                fontsize="small",
                loc="best",
            )
    fig.legend(list(handles.values()), list(handles), loc="outside right center", fontsize="small")
    fig.suptitle(
        f"median over seeds with {confidence:.0%} bootstrap CI; paired differences: mean with "
        f"{confidence:.0%} BCa CI",
        fontsize="medium",
    )
    return fig


def plot_curves(
    results: Sequence[dict[str, Any]],
    folder: Path,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> list[Path]:
    """Write the PNGs of `CURVE_PLOTS` into ``folder`` (made if needed); returns their paths.

    ``best_fraction.png`` and ``top_found.png`` (from the traces; dashed line at 0.9 on the
    first), ``map_rmse.png`` and ``coverage95.png`` (from the map series; dashed line at 0.95
    on the second), each drawn by `curve_figure`. A plot is skipped (and logged) when no
    campaign has data for it, e.g. the map plots of campaigns without map evaluations.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, where, metric, ylabel, reference, ylim in CURVE_PLOTS:
        fig = curve_figure(
            results,
            metric,
            where=where,
            ylabel=ylabel,
            reference=reference,
            ylim=ylim,
            confidence=confidence,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
        if fig is None:
            log.info("no %s %s data: no %s", where, metric, name)
            continue
        path = folder / name
        fig.savefig(path, dpi=110)
        log.info("wrote %s", path)
        written.append(path)
    return written


def write_all(
    results: Sequence[dict[str, Any]],
    folder: Path,
    *,
    baselines: Sequence[str] = ("random", "gp-xy"),
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[Path]]:
    """`aggregate` the results and compare the arms with the ``baselines`` (`paired`), then
    write the tables (`write_tables`, `write_paired`), ``curves.json`` (`write_curves`), the
    plots (`plot_curves`) and ``summary.png`` (`summary_figure`) into ``folder``.

    Returns (the aggregate rows, the paths written: tables, paired tables, curves, then plots).
    """
    kwargs = {"confidence": confidence, "n_bootstrap": n_bootstrap, "seed": seed}
    rows = aggregate(results, **kwargs)
    paired_rows = paired(results, baselines, **kwargs)
    paths = write_tables(results, rows, folder)
    paths += write_paired(paired_rows, folder)
    paths.append(write_curves(results, folder, **kwargs))
    paths += plot_curves(results, folder, **kwargs)
    fig = summary_figure(results, paired_rows, **kwargs)
    if fig is not None:
        path = Path(folder) / "summary.png"
        fig.savefig(path, dpi=100)
        log.info("wrote %s", path)
        paths.append(path)
    return rows, paths


# -- helpers ------------------------------------------------------------------------------------


def _check_bootstrap(confidence: float, n_bootstrap: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")


def _group_of(result: dict[str, Any]) -> Group:
    missing = [k for k in GROUP_KEYS if k not in result]
    if missing:
        raise ValueError(f"a campaign result lacks {', '.join(missing)}: {_brief(result)}")
    return tuple(result[k] for k in GROUP_KEYS)


def _brief(result: dict[str, Any]) -> str:
    return repr({k: v for k, v in result.items() if not isinstance(v, (dict, list))})[:200]


def _sort_key(values: Iterable[Any]) -> tuple[tuple[bool, Any], ...]:
    """Sorts None last, without comparing None to a value."""
    return tuple((v is None, v) for v in values)


def _groups(results: Sequence[dict[str, Any]]) -> dict[Group, list[dict[str, Any]]]:
    """The results by group, groups in sorted order, members in input order."""
    groups: dict[Group, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(_group_of(result), []).append(result)
    return {g: groups[g] for g in sorted(groups, key=_sort_key)}


def _label_of(group: Group) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(GROUP_KEYS, group, strict=True))


def _rng(seed: int, group: Group, metric: str) -> np.random.Generator:
    """A generator of its own for one bootstrap, from ``seed``, the group and the metric."""
    key = zlib.crc32(repr((group, metric)).encode())
    return np.random.default_rng([seed, key])


def _as_float(value: Any) -> float | None:
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
        value = _as_float(member[metric])
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
    median, low, high = _median_band(
        np.asarray(values, dtype=float).reshape(-1, 1), confidence, n_bootstrap, rng
    )
    return (
        json_safe(float(median[0])),
        json_safe(float(low[0])),
        json_safe(float(high[0])),
    )


def _median_band(
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
        number = _as_float(value)
        if n is not None and number is not None and math.isfinite(number):
            series[int(n)] = number
    return series


def _by_seed(members: Sequence[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """The group's campaigns by seed, the first of a repeated seed kept."""
    out: dict[Any, dict[str, Any]] = {}
    for member in members:
        out.setdefault(member.get("seed"), member)
    return out


def _censored(value: Any) -> float:
    """A steps-to-target value as a float, +inf when not reached (None)."""
    number = _as_float(value)
    return math.inf if number is None else number


def _first_value(members: Sequence[dict[str, Any]], key: str) -> Any:
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
    after = max(int(_as_float(m.get("n_seed_points")) or 0) for m in members)
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


def _unique(items: Iterable[Any]) -> list[Any]:
    """The items without repeats, in first-seen order."""
    return list(dict.fromkeys(items))


def _union_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    return _unique(k for row in rows for k in row)


class _Lines:
    """Labels and line styles of the groups' lines: a line is labelled by its arm, with the
    budget (``60 steps``) when that arm ran several budgets and ``pipelined`` when it ran both
    pipeline settings; its style is its variant's index among the arm's variants."""

    def __init__(self, groups: Sequence[Group]) -> None:
        self.variants: dict[Any, list[tuple[Any, ...]]] = {}
        for group in groups:
            variants = self.variants.setdefault(group[1], [])
            if group[2:] not in variants:
                variants.append(group[2:])

    def variant(self, group: Group) -> int:
        return self.variants[group[1]].index(group[2:])

    def label(self, group: Group) -> str:
        variants = self.variants[group[1]]
        parts = []
        if len({v[0] for v in variants}) > 1:
            parts.append(f"{group[2]} steps")
        if len({bool(v[1]) for v in variants}) > 1 and group[3]:
            parts.append("pipelined")
        return f"{group[1]} ({', '.join(parts)})" if parts else str(group[1])


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(keys), restval="", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items() if k in keys})
    return path


def _csv_cell(value: Any) -> Any:
    value = json_safe(value)
    return "" if value is None else value
