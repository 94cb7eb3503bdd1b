"""The plots of ``dklscope bench campaigns``: the median curves over seeds with their bands
(`curve_figure`, written by `plot_curves`) and the grid on one figure (`summary_figure`).

Plots are drawn on `matplotlib.figure.Figure` objects directly, so matplotlib's global state
(pyplot, the backend) is never touched. Nothing is written outside the folder given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .aggregate import COVERAGE_TARGETS, Group, curves, first_value, group_of, grouped, unique
from .comparison import CI_HIGH_LIMIT

log = logging.getLogger(__name__)

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
    groups = list(grouped(results))
    samples = unique(g[0] for g in groups)
    arms = unique(g[1] for g in groups)
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
    groups = list(grouped(results))
    samples = unique(g[0] for g in groups)
    arms = unique(g[1] for g in groups)
    lines = _Lines(groups)
    styles = ["-", "-.", ":", (0, (3, 1, 1, 1, 1, 1)), (0, (5, 1)), (0, (1, 2, 5, 2))]
    baselines = unique(r["baseline"] for r in paired_rows)
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
        protocol = first_value([r for r in results if r.get("sample") == sample], "protocol_n")
        if protocol is not None:
            ax_best.axvline(protocol, color="0.35", linestyle=":", linewidth=1, zorder=0)
        for ax, (metric, (low, high)) in zip((ax50, ax95), COVERAGE_TARGETS.items(), strict=True):
            ax.axhspan(low, high, color="0.85", zorder=0, linewidth=0)
            ax.axhline(0.5 if metric == "coverage50" else 0.95, color="0.35", linestyle="--")
        mine = [r for r in paired_rows if r["sample"] == sample and r["n_pairs"]]
        labels = unique(lines.label(group_of(r)) for r in mine)
        for row in mine:
            x = labels.index(lines.label(group_of(row)))
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


# -- helpers ------------------------------------------------------------------------------------


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
