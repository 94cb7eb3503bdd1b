"""Paired comparisons of the arms of a grid of simulated campaigns with the baselines.

Arms are compared seed by seed with `paired` (the seeds of a grid pair the arms: same seed
points, same noise): the mean of the per-seed differences baseline - arm in best fraction at
the protocol budget, with a bias-corrected and accelerated (BCa) bootstrap confidence interval
of that mean (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 14; computed by
`scipy.stats.bootstrap`), and the ratio of the medians of steps-to-90%-of-best.

Because the arms share their seed points, the steps criterion has a floor no model can beat: on
a seed where the baseline's seed points already hold a candidate within 90 % of the best, every
arm gets there at the same measurement, and on any other seed no arm gets there before its
first decision (measurement ``seed_points + 1``). The median of ``min(baseline's steps,
seed_points + 1)`` over the pairs is therefore the least median an arm can have, and when it is
above the limit times the baseline's median, the criterion cannot pass on that protocol
(``steps_reachable`` False): only fewer seed points or a rarer target would make it reachable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dklscope.campaign.jsonsafe import json_safe

from .aggregate import GROUP_KEYS, Group, as_float, first_value, grouped, label_of
from .statistics import bootstrap_rng, check_bootstrap, mean_ci

log = logging.getLogger(__name__)

#: The issue's criteria, read by `paired`'s ``pass_*`` columns: the upper end of the CI of the
#: mean paired difference (baseline - arm) in best fraction at the protocol budget at most
#: `CI_HIGH_LIMIT`; the ratio of median steps-to-90%-of-best (arm / baseline) at most the
#: baseline's entry of `STEPS_RATIO_LIMITS` (no entry: no criterion).
CI_HIGH_LIMIT = 0.02
STEPS_RATIO_LIMITS = {"random": 1 / 3, "gp-xy": 2 / 3}


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
      within it; None without a limit);
    - ``steps90_floor``: the least median steps-to-90% any arm sharing the baseline's seed
      points can have (the median of ``min(baseline's steps, n_seed_points + 1)``), and
      ``steps_reachable``: whether that floor is within the limit (None without a limit).

    A group without pairs gives a row with ``n_pairs`` 0 and the statistics None.
    """
    check_bootstrap(confidence, n_bootstrap)
    groups = grouped(results)
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
            log.warning("%s: no single %s group to pair with", label_of(group), baseline)
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
    diffs, steps_mine, steps_theirs, floors = [], [], [], []
    for s in seeds:
        a = as_float(mine[s].get("best_fraction_at_protocol"))
        b = as_float(theirs[s].get("best_fraction_at_protocol"))
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            continue
        diffs.append(b - a)
        steps_mine.append(_censored(mine[s].get("steps_to_90pct_best")))
        steps_theirs.append(_censored(theirs[s].get("steps_to_90pct_best")))
        seed_points = as_float(theirs[s].get("n_seed_points"))
        floors.append(math.nan if seed_points is None else min(steps_theirs[-1], seed_points + 1))
    row: dict[str, Any] = dict(zip(GROUP_KEYS, group, strict=True))
    row["baseline"] = baseline
    row["n_pairs"] = len(diffs)
    row["protocol_n"] = first_value(members, "protocol_n")
    limit = STEPS_RATIO_LIMITS.get(baseline)
    if not diffs:
        row.update(dict.fromkeys(_PAIRED_STATS))
        row.update(
            ci_method="BCa",
            steps90_ratio_limit=limit,
            pass_ci=None,
            pass_steps=None,
            steps_reachable=None,
        )
        return row
    rng = bootstrap_rng(seed, group, f"paired.{baseline}")
    mean, low, high = mean_ci(diffs, confidence=confidence, n_bootstrap=n_bootstrap, rng=rng)
    median_mine = float(np.median(steps_mine))
    median_theirs = float(np.median(steps_theirs))
    floor = float(np.median(floors))  # NaN: a campaign without its seed points' count
    ratio = _ratio(median_mine, median_theirs)
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
        steps90_floor=json_safe(floor),
        steps_reachable=None
        if limit is None or math.isnan(floor)
        else bool(_ratio(floor, median_theirs) <= limit),
    )
    return row


def _ratio(mine: float, theirs: float) -> float:
    """``mine / theirs`` of two median steps, +inf when ``mine`` is censored and 0 when only
    ``theirs`` is."""
    if math.isinf(mine):
        return math.inf
    if math.isinf(theirs):
        return 0.0
    return mine / theirs


_PAIRED_STATS = (
    "diff_mean",
    "diff_median",
    "diff_ci_low",
    "diff_ci_high",
    "steps90_median",
    "steps90_median_baseline",
    "steps90_ratio",
    "steps90_floor",
)


def _by_seed(members: Sequence[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """The group's campaigns by seed, the first of a repeated seed kept."""
    out: dict[Any, dict[str, Any]] = {}
    for member in members:
        out.setdefault(member.get("seed"), member)
    return out


def _censored(value: Any) -> float:
    """A steps-to-target value as a float, +inf when not reached (None)."""
    number = as_float(value)
    return math.inf if number is None else number
