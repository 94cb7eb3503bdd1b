"""What a campaign leaves for people: ``summary.json`` and PNG plots.

Plots are drawn on `matplotlib.figure.Figure` objects directly, so matplotlib's global state
(pyplot, the backend) is never touched.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .campaign import Campaign
from .simulators import Sample


def summarize(campaign: Campaign, wall_s: float) -> dict[str, Any]:
    """The campaign's figures of merit; positions in overview pixels and physical units."""
    best = campaign.best()
    d = campaign.description
    latencies = [m.decision_latency_s for m in campaign.history if m.kind == "policy"]
    summary: dict[str, Any] = {
        "n_measurements": len(campaign.history),
        "n_seed_points": sum(m.kind == "seed" for m in campaign.history),
        "best_value": best.scalar if best else None,
        "best_position": None,
        "wall_s": wall_s,
        "median_step_latency_s": _median(campaign.step_latencies_s),
        "median_decision_latency_s": _median(latencies),
        "instrument": d.name,
        "scalarizer": {
            k: v for k, v in campaign.config.to_dict()["scalarizer"].items() if v is not None
        },
        "policy": campaign.config.policy.kind,
    }
    if best is not None:
        summary["best_position"] = {
            "x_px": best.x,
            "y_px": best.y,
            "x": best.x * d.pixel_size,
            "y": best.y * d.pixel_size,
            "units": d.pixel_units,
        }
    return summary


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def plot_visits(campaign: Campaign, path: Path) -> None:
    """The overview with every measured point, coloured by the order of measurement."""
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(campaign.overview, cmap="gray")
    xs = [m.x for m in campaign.history]
    ys = [m.y for m in campaign.history]
    seeds = [m.kind == "seed" for m in campaign.history]
    points = ax.scatter(
        xs, ys, c=np.arange(len(xs)), cmap="viridis", s=28, edgecolors="white", linewidths=0.6
    )
    if any(seeds):
        ax.scatter(
            np.array(xs)[seeds],
            np.array(ys)[seeds],
            marker="s",
            s=60,
            facecolors="none",
            edgecolors="red",
            linewidths=1.0,
            label="random seed points",
        )
        ax.legend(loc="upper right", fontsize=8)
    best = campaign.best()
    if best is not None:
        ax.scatter(
            [best.x], [best.y], marker="*", s=260, c="gold", edgecolors="black", label="best"
        )
    fig.colorbar(points, ax=ax, label="measurement order")
    ax.set_title(f"{len(xs)} measurements on the overview")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    fig.savefig(path, dpi=110)


def plot_prediction(campaign: Campaign, mean: np.ndarray, std: np.ndarray, path: Path) -> None:
    """Predicted mean and standard deviation of the scalar at every candidate, as maps."""
    p = campaign.patches
    rows, cols = p.rows.reshape(p.grid_shape), p.cols.reshape(p.grid_shape)
    step = campaign.config.patches.stride
    extent = (
        cols.min() - step / 2,
        cols.max() + step / 2,
        rows.max() + step / 2,
        rows.min() - step / 2,
    )
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    xs = [m.x for m in campaign.history]
    ys = [m.y for m in campaign.history]
    for i, (values, title, cmap) in enumerate(
        ((mean, "predicted mean", "magma"), (std, "predicted std", "viridis"))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        image = ax.imshow(values.reshape(p.grid_shape), extent=extent, cmap=cmap)
        ax.scatter(xs, ys, s=8, c="cyan", edgecolors="none")
        fig.colorbar(image, ax=ax, label=campaign.config.scalarizer.kind)
        ax.set_title(title)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    fig.savefig(path, dpi=110)


def ground_truth_figures(campaign: Campaign, sample: Sample) -> dict[str, Any]:
    """How well the campaign did against the noise-free truth of a simulated ``sample``.

    ``true_best_found`` is the largest true scalar over the measured candidates and
    ``best_fraction`` its ratio to the largest true scalar of any candidate (1.0: the true
    maximum was measured). Truth, not the noisy measured values, so luck in the noise does not
    count.
    """
    truth = campaign.scalarizer(sample.expected_spectra(campaign.config.dwell_s), campaign.axis)
    p = campaign.patches
    at_candidates = truth[sample.spectrum_pixel(p.rows, p.cols)]
    found = max(at_candidates[m.candidate] for m in campaign.history)
    best = float(at_candidates.max())
    return {
        "true_best_value": best,
        "true_best_found": float(found),
        "best_fraction": float(found / best) if best else None,
    }
