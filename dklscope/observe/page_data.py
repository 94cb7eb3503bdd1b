"""What the live view's page shows, computed from a `LiveCampaign`: the rows its plots'
column-data sources stream or are set to, and the HTML of its title, cards and notes.

Plain functions of the campaign and its measurements, with no Bokeh models: the page
(`dklscope.observe.page`) puts what they return into its document.
"""

from __future__ import annotations

import html
import math
import statistics
from typing import Any

import numpy as np

from .live import LiveCampaign, Prediction
from .model_records import ModelRecord
from .page_style import FONT, NOTE
from .report import idle_fraction

STATE_COLOURS = {
    "running": "#1a7f37",
    "pausing": "#9a6700",
    "paused": "#9a6700",
    "resuming": "#9a6700",
    "stopping": "#9a6700",
    "stopped": "#57606a",
    "error": "#cf222e",
    "waiting": "#57606a",
    "unknown": "#57606a",
}


# -- text ---------------------------------------------------------------------------------------


def card_html(label: str, value: str, detail: str = "") -> str:
    """A card's HTML: a small capitalised label, a large value (HTML), a detail line."""
    return (
        '<div style="color:#57606a;font-size:12px;text-transform:uppercase;'
        f'letter-spacing:0.05em">{html.escape(label)}</div>'
        f'<div style="font-size:21px;font-weight:600;color:#1f2328">{value}</div>'
        f'<div style="{NOTE}">{detail or "&nbsp;"}</div>'
    )


def _badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#57606a")
    return (
        f'<span style="background:{colour};color:white;border-radius:6px;padding:0 10px;'
        f'font-size:17px;letter-spacing:0.06em">{html.escape(state.upper())}</span>'
    )


def _seconds(value: float) -> str:
    """A duration for people: 75 ms, 1.2 s, 3 min 20 s."""
    if not math.isfinite(value):
        return "-"
    if value < 1:
        return f"{1000 * value:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    return f"{int(value // 60)} min {value % 60:.0f} s"


def _number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def title_html(live: LiveCampaign) -> str:
    """The page's title: the campaign's, and what it runs, in words."""
    return (
        f'<span style="font-family:{html.escape(FONT)};font-size:21px;font-weight:650">'
        f"dklscope live view · {html.escape(live.title)}</span>"
        f'<br><span style="{NOTE}">{html.escape(live.about)}</span>'
    )


# -- the plots' data ----------------------------------------------------------------------------


def overview_data(overview: np.ndarray) -> dict[str, list]:
    """The overview image's column data: the image, its pixels' centres at whole numbers."""
    rows, cols = overview.shape
    return {
        "image": [overview],
        "x": [-0.5],
        "y": [-0.5],
        "dw": [cols],
        "dh": [rows],
    }


def next_points_data(pending: list) -> dict[str, list]:
    """The next chosen point(s)."""
    return {
        "x": [d.x for d in pending],
        "y": [d.y for d in pending],
        "number": [d.number for d in pending],
    }


def scored_measurements(history: list) -> list:
    """The measurements with a finite scalar."""
    return [m for m in history if m.ok and math.isfinite(m.scalar)]


def measured_rows(ok: list) -> dict[str, list]:
    """The rows that new successful measurements add to the overview's points."""
    return {
        "x": [m.x for m in ok],
        "y": [m.y for m in ok],
        "seq": [m.seq for m in ok],
        "scalar": [m.scalar for m in ok],
        "kind": [m.kind for m in ok],
    }


def failed_rows(bad: list) -> dict[str, list]:
    """The rows that new failed attempts add to the overview's red crosses."""
    return {
        "x": [m.x for m in bad],
        "y": [m.y for m in bad],
        "seq": [m.seq for m in bad],
        "error": [m.error or "" for m in bad],
    }


def scalar_rows(ok: list, best_so_far: float) -> tuple[dict[str, list], float]:
    """The rows that new successful measurements add to the scalar plot, and the best so far
    after them (``best_so_far``: the best before them)."""
    rows: dict[str, list] = {"seq": [], "scalar": [], "best": [], "kind": []}
    for m in ok:
        if math.isfinite(m.scalar):
            best_so_far = max(best_so_far, m.scalar)
            rows["seq"].append(m.seq)
            rows["scalar"].append(m.scalar)
            rows["best"].append(best_so_far)
            rows["kind"].append(m.kind)
    return rows, best_so_far


def timeline_rows(new: list) -> dict[str, list]:
    """The rows that new measurements add to the decision latency and idle time plot."""
    return {
        "seq": [m.seq for m in new],
        "latency": [m.decision_latency_s for m in new],
        "idle": [math.nan if m.idle_s is None else m.idle_s for m in new],
    }


def best_point_data(scored: list) -> dict[str, list]:
    """The best measurement's star (``scored``: not empty)."""
    best = max(scored, key=lambda m: m.scalar)
    return {"x": [best.x], "y": [best.y], "scalar": [best.scalar]}


def spectra_data(
    live: LiveCampaign, history: list, scored: list
) -> tuple[dict[str, Any], dict[str, Any] | None, str] | None:
    """The last spectrum's column data, the best one's (None: none to show) and the plot's
    subtitle; None while no measurement has a spectrum."""
    with_spectrum = [m for m in history if m.ok and len(m.spectrum)]
    if not with_spectrum:
        return None
    last = with_spectrum[-1]
    axis = live.axis
    if axis is None or len(axis) != len(last.spectrum):
        axis = np.arange(len(last.spectrum), dtype=float)
    spectrum = {"axis": axis, "value": np.asarray(last.spectrum, dtype=float)}
    best_spectrum = None
    best = max((m for m in scored if len(m.spectrum)), key=lambda m: m.scalar, default=None)
    if best is not None and len(best.spectrum) == len(axis):
        best_spectrum = {"axis": axis, "value": np.asarray(best.spectrum, float)}
    subtitle = (
        f"seq {last.seq} at (x={last.x:g}, y={last.y:g}) px: {live.scalar_name} "
        f"{_number(last.scalar)}"
        + (f"; window {live.window[0]:g}-{live.window[1]:g} shaded" if live.window else "")
    )
    return spectrum, best_spectrum, subtitle


def prediction_data(
    live: LiveCampaign, prediction: Prediction
) -> dict[str, tuple[dict[str, list], tuple[float, float] | None, str]]:
    """For each predicted map ("mean", "std"): its image's column data, its colour range (None:
    no finite value) and its subtitle."""
    assert live.grid_extent is not None
    left, right, bottom, top = live.grid_extent
    maps = {}
    for name, values in (("mean", prediction.mean), ("std", prediction.std)):
        finite = values[np.isfinite(values)]
        limits = (float(finite.min()), float(finite.max())) if finite.size else None
        image = {
            "image": [values],
            "x": [left],
            "y": [top],
            "dw": [right - left],
            "dh": [bottom - top],
        }
        subtitle = (
            f"model of decision {prediction.decision}, fitted to {prediction.n_train} measurements"
        )
        maps[name] = (image, limits, subtitle)
    return maps


# -- the header's cards and notes ---------------------------------------------------------------


def model_card(record: ModelRecord) -> str:
    """The model card, from the newest model record: which model, its weights, its LOO
    calibration and its flag."""
    weights = " · ".join(
        f"{html.escape(name)} {weight:.2f}"
        for name, weight in sorted(record.weights.items(), key=lambda item: -item[1])
    )
    calibration = (
        f"LOO coverage 50 % {_fraction(record.coverage50)} · 95 % "
        f"{_fraction(record.coverage95)} · z sd {_number(record.z_sd)}"
    )
    value = html.escape(record.chosen)
    if record.flag is not None:
        flag = html.escape(record.flag)
        value += f' <span style="color:#cf222e;font-size:15px">{flag}</span>'
    return card_html(
        f"model ({record.kind}) · decision {record.decision}",
        value,
        f"{weights}<br>{calibration}",
    )


def model_warning(record: ModelRecord) -> str | None:
    """The red warning while the newest model record is flagged; None while it is not."""
    warning = record.warning()
    if warning is None:
        return None
    return (
        f"&#9888; Miscalibrated model at decision {record.decision} ({record.flag}): "
        f"{html.escape(warning)}."
    )


def state_card(
    state: str,
    reason: str | None,
    t_state: float,
    t_activity: float | None,
    controller: str | None,
    now: float,
) -> str:
    """The campaign's state, why, and for how long nothing has happened."""
    badge = _badge(state)
    details = []
    if reason:
        details.append(html.escape(reason))
    if state in ("running", "pausing") and t_activity is not None and now - t_activity > 10:
        details.append(f"nothing new for {_seconds(now - t_activity)}")
    if state in ("paused", "stopped", "error"):
        details.append(f"since {_seconds(now - t_state)}")
    if controller == "silent" and state not in ("stopped", "error"):
        details.append("the controller does not answer")
    return card_html("campaign", badge, " · ".join(details))


def budget_card(history: list, budget: dict[str, Any] | None, n_planned: int | None) -> str:
    """The decisions finished (of those planned) and the budget left."""
    finished = len({m.decision for m in history if m.status != "retried"})
    measured = sum(m.ok for m in history)
    if n_planned is not None:
        value = f"{finished} of {n_planned}"
    else:
        value = f"{finished}"
    detail = [f"{measured} measured"]
    if n_planned is not None and budget is not None:
        detail = [f"{budget['decisions']} left"]
        if budget.get("wall_s") is not None:
            detail.append(f"{_seconds(budget['wall_s'])} of wall time")
        if budget.get("dose_s") is not None:
            detail.append(f"{budget['dose_s']:.3g} s of dose")
    failed = sum(m.status == "failed" for m in history)
    if failed:
        detail.append(f"{failed} failed")
    return card_html("measured points", value, " · ".join(detail))


def best_card(history: list, scalar_name: str) -> str:
    """The best scalar so far, where and when it was measured."""
    scored = scored_measurements(history)
    if scored:
        best = max(scored, key=lambda m: m.scalar)
        return card_html(
            f"best {scalar_name}",
            _number(best.scalar),
            f"at (x={best.x:g}, y={best.y:g}) px · seq {best.seq}",
        )
    return card_html(f"best {scalar_name}", "-")


def latency_card(history: list) -> str:
    """The last decision latency, its median and the instrument's idle fraction."""
    latencies = [m.decision_latency_s for m in history if m.kind == "policy"]
    fraction = idle_fraction(history)
    idle = "-" if fraction is None else f"{100 * fraction:.1f}%"
    if latencies:
        return card_html(
            "decision latency",
            _seconds(latencies[-1]),
            f"median {_seconds(statistics.median(latencies))} · instrument idle {idle}",
        )
    return card_html("decision latency", "-", f"seed points · instrument idle {idle}")


def notes_html(
    live: LiveCampaign, state: str, source: str, has_control: bool, has_buttons: bool
) -> str:
    """The notes below the plots: what this page cannot show, and why."""
    notes = []
    if source == "events":
        notes.append(
            "Following the progress events only (since this page's server connected): "
            "no overview, spectra, predicted maps or model records. Open the campaign's "
            "folder "
            "(dklscope view DIR) for those."
        )
    elif state == "waiting":
        notes.append(f"Waiting for a campaign to begin in {html.escape(live.title)}…")
    if has_buttons and not has_control and state not in ("stopped", "error", "waiting"):
        notes.append(
            "The buttons need the campaign's control socket: set runner.control in its "
            "config (with an events address, give --control)."
        )
    if live.prediction is None and source == "journal" and state != "waiting":
        notes.append("The predicted maps appear with the model's first checkpoint.")
    return "".join(f'<p style="{NOTE}">{n}</p>' for n in notes)
