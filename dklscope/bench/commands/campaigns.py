"""``dklscope bench campaigns GRID``: simulated campaigns on ground truth, compared.

Runs the grid of samples x arms x seeds x budgets a grid file describes (`dklscope.bench.grid`;
`configs/bench_*.yaml`), each campaign through the same code as a real experiment, on local
processes (every core, each campaign single-threaded) or a Ray cluster, and writes into OUT:
``campaigns/*.json`` (one per campaign, as it finishes: an interrupted grid resumes),
``campaigns.csv``, ``aggregate.json`` and ``aggregate.csv`` (medians over seeds with bootstrap
confidence intervals, per sample, arm, budget and pipelining), ``paired.json`` and
``paired.csv`` (each arm against each baseline, seed by seed: the mean difference in best
fraction at the protocol budget with its BCa CI, the ratio of median steps-to-90%-of-best, and
the issue's pass/fail verdicts), ``curves.json`` (the median curves with their bands), plots of
each metric against the number of measurements, one line per arm, and ``summary.png`` (the
grid on one figure). Two tables are printed: the paired comparisons, then the aggregate's
headline columns (which ``--json`` writes).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DESCRIPTION = "simulated campaigns on ground truth: policies, models and embeddings compared"
HEADLINE = (
    "sample",
    "arm",
    "steps",
    "pipeline",
    "n_seeds",
    "final_best_fraction_median",
    "protocol_n",
    "best_fraction_at_protocol_median",
    "steps_to_90pct_best_median",
    "steps_to_90pct_best_reached",
    "final_map_rmse_median",
    "coverage50_min",
    "coverage50_max",
    "coverage95_min",
    "coverage95_max",
    "pass_coverage",
    "median_decision_latency_s_median",
)
PAIRED = (
    "sample",
    "arm",
    "baseline",
    "n_pairs",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "pass_ci",
    "steps90_median",
    "steps90_median_baseline",
    "steps90_ratio",
    "steps90_ratio_limit",
    "pass_steps",
    "steps90_floor",
    "steps_reachable",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's own options."""
    parser.add_argument("grid", type=Path, help="grid file, e.g. configs/bench_plasmonic.yaml")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="results folder (default: runs/bench-GRIDNAME)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: every core; 1: this one)"
    )
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument(
        "--address", default=None, help="with --executor ray: the cluster (default: start one)"
    )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the grid (what is not done yet), aggregate, write files and plots."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ..comparison import paired
    from ..grid import load_grid, run_grid
    from ..tables import write_all
    from . import report

    grid = load_grid(args.grid)
    out = args.out or Path("runs") / f"bench-{args.grid.stem}"
    log.info("%d campaigns; results in %s", len(grid.points), out)
    with Progress(
        "[bold]campaigns",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task("grid", total=len(grid.points))
        results = run_grid(
            grid,
            out,
            workers=args.workers,
            executor=args.executor,
            address=args.address,
            on_result=lambda _: progress.advance(task),
        )
    rows, _ = write_all(results, out, baselines=grid.baselines)  # each writer logs its files
    comparisons = paired(results, grid.baselines)  # as in paired.json: the same seeded bootstrap
    report(
        [{key: row.get(key) for key in PAIRED} for row in comparisons],
        title="paired: baseline - arm in best fraction at the protocol budget (pass_ci: CI high "
        "<= 0.02); steps to 90% of best, arm / baseline (pass_steps: within the limit; "
        "steps_reachable: whether the shared seed points let any arm pass)",
        json_path=None,
    )
    return [{key: row.get(key) for key in HEADLINE} for row in rows]
