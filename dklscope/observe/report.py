"""What a campaign leaves for people: ``summary.json`` and PNG plots.

`write_report` writes them all into one folder; it needs only what a campaign read back from
its journal has (``Campaign.from_journal``), so a report can be redrawn at any time, also of a
campaign that is still running or that stopped on a fault.

Plots are drawn on `matplotlib.figure.Figure` objects directly, so matplotlib's global state
(pyplot, the backend) is never touched.

Positions are overview pixels (``x`` the column, ``y`` the row) unless a key says otherwise;
times are seconds.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dklscope.campaign.jsonsafe import json_safe

from .model_records import ModelRecord, model_figure, model_records, model_summary

if TYPE_CHECKING:
    from dklscope.campaign.journal import Measurement
    from dklscope.campaign.loop import Campaign
    from dklscope.simulators import Sample

log = logging.getLogger(__name__)

#: The files `write_report` may write, in the order it writes them.
REPORT_FILES = (
    "visits.png",
    "prediction.png",
    "scalars.png",
    "timeline.png",
    "latent.png",
    "spectra.png",
    "model.png",
    "summary.json",
)


def write_report(
    campaign: Campaign,
    out: Path,
    *,
    wall_s: float | None = None,
    sample: Sample | None = None,
    prediction: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Path]:
    """Write the campaign's plots and ``summary.json`` into the folder ``out`` (made if needed).

    ``wall_s``: the run's wall time, seconds, for the summary (None: not known). ``sample``: the
    simulated sample measured, for the summary's ``ground_truth``. ``prediction``: the model's
    (mean, std) of the scalar over the candidates, each (N,), if already computed; else
    `Campaign.predict_outputs` (the scalar's maps, and those of ``config.predict``'s outputs,
    which the figure adds) is called once when at least two finite scalars were measured.

    Returns the paths written, in the order of `REPORT_FILES`: ``prediction.png`` is left out
    when there is no prediction, ``latent.png`` when the campaign has no embedding,
    ``spectra.png`` when no spectrum with a finite scalar was measured and ``model.png`` when
    the journal holds no model records (`dklscope.observe.model_records`; they also give the
    summary's ``model`` block).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_visits(campaign, out / "visits.png")]
    maps = {"scalar": prediction} if prediction is not None else None
    if maps is None and len(_scored(campaign.history)) >= 2:
        maps = campaign.predict_outputs()
    if maps is not None:
        written.append(plot_prediction(campaign, maps, out / "prediction.png"))
    else:
        log.info("fewer than two finite scalars: no prediction.png")
    written.append(plot_scalars(campaign, out / "scalars.png"))
    written.append(plot_timeline(campaign, out / "timeline.png"))
    if campaign.embedding is not None:
        written.append(plot_latent(campaign, out / "latent.png"))
    if _scored(campaign.history):
        written.append(plot_spectra(campaign, out / "spectra.png"))
    records = model_records(campaign.journal)
    figure = model_figure(records)
    if figure is not None:
        written.append(_save(figure, out / "model.png"))
        if (warning := records[-1].warning()) is not None:
            flagged = sum(r.flag is not None for r in records)
            log.warning("model flagged at %d of %d refits; now: %s", flagged, len(records), warning)
    summary = summarize(campaign, wall_s, records=records)
    if sample is not None:
        summary["ground_truth"] = ground_truth_figures(campaign, sample)
    write_summary(out / "summary.json", summary)
    written.append(out / "summary.json")
    return written


# -- figures of merit ---------------------------------------------------------------------------


def summarize(
    campaign: Campaign,
    wall_s: float | None = None,
    *,
    records: Sequence[ModelRecord] | None = None,
) -> dict[str, Any]:
    """The campaign's figures of merit, as ``summary.json`` holds them.

    - ``n_measurements``: measurements that succeeded (status ``ok``); ``n_attempts`` every
      attempt in the journal, ``n_failed`` and ``n_retried`` those with that status;
      ``n_seed_points``: random seed decisions.
    - ``best_value`` and ``best_position`` (overview pixels and ``pixel_size`` units).
    - ``wall_s`` as given (None: not known).
    - ``median_step_latency_s``: the median time between the replies of consecutive
      measurements of one run (`step_latencies_s`); left out when none can be computed.
    - ``median_decision_latency_s``: the median fit + choose time of the policy's decisions.
    - ``idle_fraction``: see `idle_fraction`.
    - ``model``: with model records in the journal (``records``, if already read), the newest
      record's model choice and calibration and how many refits were flagged
      (`dklscope.observe.model_records.model_summary`); left out without records.
    """
    history = campaign.history
    best = campaign.best()
    d = campaign.description
    decision_latencies: dict[int, float] = {}
    for m in history:
        if m.kind == "policy":
            decision_latencies.setdefault(m.decision, m.decision_latency_s)
    summary: dict[str, Any] = {
        "n_measurements": sum(m.ok for m in history),
        "n_attempts": len(history),
        "n_failed": sum(m.status == "failed" for m in history),
        "n_retried": sum(m.status == "retried" for m in history),
        "n_seed_points": len({m.decision for m in history if m.kind == "seed"}),
        "best_value": json_safe(best.scalar) if best else None,
        "best_position": None,
        "wall_s": wall_s,
        "median_decision_latency_s": _median(list(decision_latencies.values())),
        "idle_fraction": idle_fraction(history),
        "instrument": d.name,
        "scalarizer": {
            k: v for k, v in campaign.config.to_dict()["scalarizer"].items() if v is not None
        },
        "policy": campaign.config.policy.kind,
    }
    step = _median(step_latencies_s(history))
    if step is not None:
        summary["median_step_latency_s"] = step
    if records is None:
        records = model_records(campaign.journal)
    model = model_summary(records)
    if model is not None:
        summary["model"] = model
    if best is not None:
        summary["best_position"] = {
            "x_px": best.x,
            "y_px": best.y,
            "x": best.x * d.pixel_size,
            "y": best.y * d.pixel_size,
            "units": d.pixel_units,
        }
    return summary


def idle_fraction(history: Sequence[Measurement]) -> float | None:
    """The fraction of the time the instrument waited for the controller.

    ``sum(idle_s) / (sum(t_done - t_requested) + sum(idle_s))``, the idle sum over the
    measurements whose ``idle_s`` is known (not None, finite), the busy sum over those whose
    ``t_requested`` and ``t_done`` are finite. None when no measurement has ``idle_s``.
    """
    idle = [m.idle_s for m in history if m.idle_s is not None and math.isfinite(m.idle_s)]
    if not idle:
        return None
    busy = sum(
        m.t_done - m.t_requested
        for m in history
        if math.isfinite(m.t_done) and math.isfinite(m.t_requested)
    )
    total = busy + sum(idle)
    return sum(idle) / total if total > 0 else None


def step_latencies_s(history: Sequence[Measurement]) -> list[float]:
    """Seconds between the replies (``t_done``) of consecutive attempts, one per attempt that
    is not the first of its run (``idle_s`` None marks the first: the gap before it is a pause
    between runs, not a step). Attempts without a finite ``t_done`` give none."""
    return [
        b.t_done - a.t_done
        for a, b in pairwise(history)
        if b.idle_s is not None and math.isfinite(a.t_done) and math.isfinite(b.t_done)
    ]


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write ``summary`` as indented JSON (non-finite floats become null)."""
    text = json.dumps(json_safe(summary), indent=2, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def ground_truth_figures(campaign: Campaign, sample: Sample) -> dict[str, Any]:
    """How well the campaign did against the noise-free truth of a simulated ``sample``.

    ``true_best_found`` is the largest true scalar over the successfully measured candidates
    (None: none yet) and ``best_fraction`` its ratio to the largest true scalar of any candidate
    (1.0: the true maximum was measured). Truth, not the noisy measured values, so luck in the
    noise does not count.
    """
    from .evaluation import true_scalars

    at_candidates = true_scalars(campaign, sample)
    measured = [at_candidates[m.candidate] for m in campaign.history if m.ok]
    found = float(max(measured)) if measured else None
    best = float(at_candidates.max())
    return {
        "true_best_value": best,
        "true_best_found": found,
        "best_fraction": found / best if best and found is not None else None,
    }


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _scored(history: Sequence[Measurement]) -> list[Measurement]:
    """The successful measurements with a finite scalar, in order."""
    return [m for m in history if m.ok and math.isfinite(m.scalar)]


# -- plots --------------------------------------------------------------------------------------
# Each ``*_figure`` returns a Figure (shown inline in a notebook); each ``plot_*`` saves one.


def visits_figure(campaign: Campaign) -> Figure:
    """The overview with every successful measurement, coloured by the order of measurement;
    random seed points framed, the best one starred, failed attempts a red x."""
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(campaign.overview, cmap="gray")
    ok = [m for m in campaign.history if m.ok]
    failed = [m for m in campaign.history if not m.ok]
    xs = np.array([m.x for m in ok])
    ys = np.array([m.y for m in ok])
    seeds = np.array([m.kind == "seed" for m in ok], dtype=bool)
    points = ax.scatter(
        xs,
        ys,
        c=[m.seq for m in ok],
        cmap="viridis",
        s=28,
        edgecolors="white",
        linewidths=0.6,
    )
    if seeds.any():
        ax.scatter(
            xs[seeds],
            ys[seeds],
            marker="s",
            s=60,
            facecolors="none",
            edgecolors="red",
            linewidths=1.0,
            label="random seed points",
        )
    if failed:
        ax.scatter(
            [m.x for m in failed],
            [m.y for m in failed],
            marker="x",
            s=40,
            c="red",
            linewidths=1.2,
            label=f"failed attempts ({len(failed)})",
        )
    best = campaign.best()
    if best is not None:
        ax.scatter(
            [best.x], [best.y], marker="*", s=260, c="gold", edgecolors="black", label="best"
        )
    if seeds.any() or failed or best is not None:  # below the axes: it hides no point
        fig.legend(loc="outside lower center", ncols=3, fontsize=8)
    if ok:
        fig.colorbar(points, ax=ax, label="measurement order (seq)")
    ax.set_title(f"{len(ok)} measurements on the overview")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    return fig


def grid_extent(campaign: Campaign) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` in overview pixels of the candidate grid drawn as an
    image of ``patches.grid_shape``, one cell per candidate centred on its position (bottom
    is the last row: the image's origin is the top left, as the overview's)."""
    p = campaign.patches
    step = campaign.config.patches.stride
    return (
        float(p.cols.min() - step / 2),
        float(p.cols.max() + step / 2),
        float(p.rows.max() + step / 2),
        float(p.rows.min() - step / 2),
    )


def prediction_figure(campaign: Campaign, maps: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Predicted mean and standard deviation at every candidate, each (N,), as maps on the
    candidate grid with the measured points: a row for each of ``maps`` (by output name:
    ``"scalar"``, and any of ``config.predict``'s, as `Campaign.predict_outputs` gives)."""
    p = campaign.patches
    extent = grid_extent(campaign)
    fig = Figure(figsize=(11, 4.6 * len(maps)), layout="constrained")
    ok = [m for m in campaign.history if m.ok]
    xs = [m.x for m in ok]
    ys = [m.y for m in ok]
    for row, (name, (mean, std)) in enumerate(maps.items()):
        if name == "scalar":
            label, what = campaign.config.scalarizer.kind, ""
        else:
            label, what = f"{name} ({campaign.config.predict[name].kind})", f" of {name}"
        for i, (values, title, cmap) in enumerate(
            ((mean, "predicted mean", "magma"), (std, "predicted std", "viridis"))
        ):
            ax = fig.add_subplot(len(maps), 2, 2 * row + i + 1)
            image = ax.imshow(np.asarray(values).reshape(p.grid_shape), extent=extent, cmap=cmap)
            ax.scatter(xs, ys, s=8, c="cyan", edgecolors="none")
            fig.colorbar(image, ax=ax, label=label)
            ax.set_title(title + what)
            ax.set_xlabel("x (px)")
            ax.set_ylabel("y (px)")
    return fig


def scalars_figure(campaign: Campaign) -> Figure:
    """The measured scalar and the best so far against the measurement's ``seq``; seed points
    as squares, the policy's as dots. Failed attempts and non-finite scalars are left out."""
    scored = _scored(campaign.history)
    seq = np.array([m.seq for m in scored], dtype=float)
    scalar = np.array([m.scalar for m in scored], dtype=float)
    seeds = np.array([m.kind == "seed" for m in scored], dtype=bool)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    if seeds.any():
        ax.scatter(seq[seeds], scalar[seeds], marker="s", s=22, c="tab:orange", label="seed")
    if (~seeds).any():
        ax.scatter(seq[~seeds], scalar[~seeds], s=14, c="tab:blue", label="policy")
    if len(seq):
        ax.step(seq, np.maximum.accumulate(scalar), where="post", c="black", label="best so far")
        ax.legend(loc="lower right", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("measurement (seq)")
    ax.set_ylabel(campaign.config.scalarizer.kind)
    ax.set_title(f"scalar of {len(scored)} measurements")
    return fig


def timeline_figure(campaign: Campaign) -> Figure:
    """Per attempt, against its ``seq``: the decision latency (fit + choose) and the time the
    instrument stood idle before the request (``idle_s``), with the idle fraction in words.
    Failed attempts are marked with a red x."""
    history = campaign.history
    seq = np.array([m.seq for m in history], dtype=float)
    latency = np.array([m.decision_latency_s for m in history], dtype=float)
    idle = np.array([np.nan if m.idle_s is None else m.idle_s for m in history], dtype=float)
    seeds = np.array([m.kind == "seed" for m in history], dtype=bool)
    failed = np.array([not m.ok for m in history], dtype=bool)

    fig = Figure(figsize=(8, 5.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    if seeds.any():
        top.scatter(seq[seeds], latency[seeds], marker="s", s=14, c="tab:orange", label="seed")
    if (~seeds).any():
        top.plot(seq[~seeds], latency[~seeds], ".-", ms=4, lw=0.8, c="tab:blue", label="policy")
    if failed.any():
        top.scatter(seq[failed], latency[failed], marker="x", s=40, c="red", label="failed")
    if len(seq):
        top.legend(loc="best", fontsize=8)
    top.set_ylabel("decision latency (s)")
    known = np.isfinite(idle)
    bottom.bar(seq[known], idle[known], width=0.8, color="tab:gray")
    bottom.set_ylabel("instrument idle before (s)")
    bottom.set_xlabel("measurement (seq)")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    fraction = idle_fraction(history)
    text = (
        "idle fraction: not recorded"
        if fraction is None
        else f"instrument idle {100 * fraction:.1f}% of the time"
    )
    bottom.set_title(text, fontsize=9, loc="left")  # a title: never over the bars
    top.set_title("decision latency and instrument idle time")
    return fig


def candidate_latents(campaign: Campaign) -> np.ndarray:
    """The embedding's latent means of every candidate patch, (N, latent_dim).

    The patches are standardised as the campaign standardised them to train the embedding:
    with the mean and standard deviation of the whole overview.
    """
    if campaign.embedding is None:
        raise ValueError("the campaign has no embedding")
    overview = np.asarray(campaign.overview, dtype=np.float64)
    scaled = (campaign.patches.data - overview.mean()) / (overview.std() or 1.0)
    z = campaign.embedding.encode(scaled[:, None].astype(np.float32)).z_loc
    return np.asarray(z, dtype=np.float64).reshape(len(scaled), -1)


def latent_figure(campaign: Campaign) -> Figure:
    """The first two latent dimensions of every candidate in grey, the measured ones coloured
    by their scalar (a one-dimensional latent is drawn against zero)."""
    z = candidate_latents(campaign)
    z2 = z[:, :2] if z.shape[1] >= 2 else np.column_stack([z[:, 0], np.zeros(len(z))])
    scored = _scored(campaign.history)
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(z2[:, 0], z2[:, 1], s=6, c="lightgray", edgecolors="none", label="candidates")
    if scored:
        at = z2[[m.candidate for m in scored]]
        points = ax.scatter(
            at[:, 0],
            at[:, 1],
            c=[m.scalar for m in scored],
            cmap="magma",
            s=30,
            edgecolors="black",
            linewidths=0.5,
            label="measured",
        )
        fig.colorbar(points, ax=ax, label=campaign.config.scalarizer.kind)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]" if z.shape[1] >= 2 else "")
    ax.set_title(f"latent space: {len(z)} candidates, {len(scored)} measured")
    return fig


def example_spectra(campaign: Campaign) -> dict[str, Measurement]:
    """The successful measurements with the largest, the median and the smallest finite scalar
    (``"best"``, ``"median"``, ``"worst"``; the median is the lower one of an even count)."""
    scored = sorted(
        (m for m in _scored(campaign.history) if len(m.spectrum)), key=lambda m: m.scalar
    )
    if not scored:
        return {}
    return {"best": scored[-1], "median": scored[(len(scored) - 1) // 2], "worst": scored[0]}


def spectra_figure(campaign: Campaign) -> Figure:
    """The best, median and worst measured spectra (`example_spectra`) against the spectral
    axis, in the instrument's units."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    axis = np.asarray(campaign.axis)
    for (name, m), colour in zip(
        example_spectra(campaign).items(), ("tab:red", "tab:green", "tab:blue"), strict=False
    ):
        spectrum = np.asarray(m.spectrum)
        x = axis if len(axis) == len(spectrum) else np.arange(len(spectrum))
        label = f"{name}: {m.scalar:.4g} at (x={m.x:g}, y={m.y:g}) px, seq {m.seq}"
        ax.plot(x, spectrum, lw=1.0, c=colour, label=label)
    ax.legend(loc="upper right", fontsize=8)
    d = campaign.description
    ax.set_xlabel(f"spectral axis ({d.spectral_axis.units})")
    ax.set_ylabel(f"spectrum ({d.spectrum_units})")
    ax.set_title("example spectra")
    return fig


def plot_visits(campaign: Campaign, path: Path) -> Path:
    """Save `visits_figure` as a PNG at ``path``; returns ``path``."""
    return _save(visits_figure(campaign), path)


def plot_prediction(
    campaign: Campaign, maps: dict[str, tuple[np.ndarray, np.ndarray]], path: Path
) -> Path:
    """Save `prediction_figure` as a PNG at ``path``; returns ``path``."""
    return _save(prediction_figure(campaign, maps), path)


def plot_scalars(campaign: Campaign, path: Path) -> Path:
    """Save `scalars_figure` as a PNG at ``path``; returns ``path``."""
    return _save(scalars_figure(campaign), path)


def plot_timeline(campaign: Campaign, path: Path) -> Path:
    """Save `timeline_figure` as a PNG at ``path``; returns ``path``."""
    return _save(timeline_figure(campaign), path)


def plot_latent(campaign: Campaign, path: Path) -> Path:
    """Save `latent_figure` as a PNG at ``path``; returns ``path``."""
    return _save(latent_figure(campaign), path)


def plot_spectra(campaign: Campaign, path: Path) -> Path:
    """Save `spectra_figure` as a PNG at ``path``; returns ``path``."""
    return _save(spectra_figure(campaign), path)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
