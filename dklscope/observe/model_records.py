"""The model records of a campaign: which model was chosen at each refit, and whether its error
bars can be trusted.

At every refit the campaign journals an event of kind ``model`` (docs/journal.md): the leave-
one-out (LOO) scores of the candidate models, their stacking weights, the model chosen, and the
LOO calibration of the predictive intervals on the measured points, with a ``flag`` when they
are miscalibrated. This module reads those events (`model_records`), sums them up for
``summary.json`` (`model_summary`), says in words what a flag means (`ModelRecord.warning`)
and draws them (`model_figure`, the report's ``model.png``). The live view shows the newest
record the same way. Journals without such events (older ones, or a policy without a model)
give no records, and then no block, no plot and no error.

No torch here: the report and the live view read records without building a model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from dklscope.campaign.journal import Journal

log = logging.getLogger(__name__)

#: The event kind of a model record in the journal.
EVENT_KIND = "model"

#: What each flag says about the error bars.
FLAG_MEANINGS = {
    "overconfident": "the error bars are too narrow",
    "underconfident": "the error bars are too wide",
}

#: The nominal coverage of the central 50 % and 95 % intervals: a calibrated model's LOO
#: coverage is near these, and its standardised LOO residuals have a standard deviation near 1.
TARGETS = {"coverage50": 0.5, "coverage95": 0.95, "z_sd": 1.0}


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """One refit's model record, as journaled in a ``model`` event.

    ``decision``: the decision the fit is behind; ``n_train``: measurements fitted; ``kind``:
    the config's ``model.kind``; ``scores``: per candidate model, the mean LOO log predictive
    density per measured point (nats, on standardised scalars; higher is better);
    ``weights``: the stacking weights (sum 1); ``chosen``: the model of the largest weight;
    ``coverage50``, ``coverage95``: the fraction of left-out measurements inside the central
    50 % and 95 % predictive intervals; ``z_sd``: the standard deviation of the standardised
    LOO residuals (1: calibrated); ``flag``: None, ``"overconfident"`` or
    ``"underconfident"``; ``t``: when it was journaled (Unix s).
    """

    decision: int
    n_train: int
    kind: str
    scores: dict[str, float]
    weights: dict[str, float]
    chosen: str
    coverage50: float | None = None
    coverage95: float | None = None
    z_sd: float | None = None
    flag: str | None = None
    t: float | None = None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> ModelRecord:
        """The record of a journal event (`Journal.events`, whose ``kind`` is the detail's,
        the config's ``model.kind``, since the detail is laid over the event's own keys); a
        `ValueError` naming the key when the event is not a model record."""
        try:
            return cls(
                decision=_integer(event, "decision"),
                n_train=_integer(event, "n_train"),
                kind=_text(event, "model_kind" if "model_kind" in event else "kind"),
                scores=_numbers(event, "scores"),
                weights=_numbers(event, "weights"),
                chosen=_text(event, "chosen"),
                coverage50=_fraction(event, "coverage50"),
                coverage95=_fraction(event, "coverage95"),
                z_sd=_optional_number(event, "z_sd"),
                flag=_optional_text(event, "flag"),
                t=_optional_number(event, "t"),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model event of decision {event.get('decision')!r}: {exc}") from None

    def warning(self) -> str | None:
        """What the flag means, in words (None when not flagged), e.g. "95 % intervals held
        only 71 % of left-out measurements: the error bars are too narrow"."""
        if self.flag is None:
            return None
        meaning = FLAG_MEANINGS.get(self.flag, f"the model is flagged {self.flag!r}")
        held = []
        if self.coverage95 is not None:
            only = "only " if self.flag == "overconfident" else ""
            held.append(f"95 % intervals held {only}{_percent(self.coverage95)} ")
        if self.coverage50 is not None:
            held.append(f"50 % intervals {_percent(self.coverage50)} ")
        if not held:
            return meaning[0].upper() + meaning[1:]
        return f"{'and '.join(held)}of left-out measurements: {meaning}"


def model_records(journal: Journal) -> list[ModelRecord]:
    """Every model record of ``journal``, oldest first; a malformed event is logged and left
    out (it never stops a report)."""
    records = []
    for event in journal.events(EVENT_KIND):
        try:
            records.append(ModelRecord.from_event(event))
        except ValueError as exc:
            log.warning("%s: left out", exc)
    return records


def model_summary(records: Sequence[ModelRecord]) -> dict[str, Any] | None:
    """The ``model`` block of ``summary.json``: the newest record's ``kind``, ``chosen``,
    ``weights``, ``coverage50``, ``coverage95``, ``z_sd``, ``flag`` and ``decision``, with
    ``n_refits`` (records) and ``n_flagged`` (records with a flag). None without records."""
    if not records:
        return None
    last = records[-1]
    return {
        "kind": last.kind,
        "chosen": last.chosen,
        "weights": dict(last.weights),
        "coverage50": last.coverage50,
        "coverage95": last.coverage95,
        "z_sd": last.z_sd,
        "flag": last.flag,
        "decision": last.decision,
        "n_refits": len(records),
        "n_flagged": sum(r.flag is not None for r in records),
    }


def model_figure(records: Sequence[ModelRecord]) -> Figure | None:
    """The records against the decision, four panels sharing the x axis: the LOO score of
    each candidate model (nats per point), its stacking weight, the LOO coverage of the 50 %
    and 95 % intervals with the targets dashed, and the spread of the standardised residuals
    (target 1). Flagged refits are marked red on every panel. None without records."""
    if not records:
        return None
    decisions = np.array([r.decision for r in records], dtype=float)
    flagged = np.array([r.flag is not None for r in records], dtype=bool)
    names = list(dict.fromkeys(name for r in records for name in (*r.scores, *r.weights)))
    fig = Figure(figsize=(8, 9.5), layout="constrained")
    scores_ax, weights_ax, coverage_ax, z_ax = fig.subplots(4, 1, sharex=True)
    for i, name in enumerate(names):
        colour = f"C{i % 10}"
        for ax, field in ((scores_ax, "scores"), (weights_ax, "weights")):
            values = np.array([getattr(r, field).get(name, np.nan) for r in records], dtype=float)
            ax.plot(decisions, values, ".-", color=colour, label=name, ms=5, lw=1)
    chosen = [r.chosen for r in records]
    changes = [i for i in range(1, len(chosen)) if chosen[i] != chosen[i - 1]]
    for i in changes:
        weights_ax.annotate(
            chosen[i], (decisions[i], 1.0), fontsize=7, rotation=90, va="top", ha="right"
        )
    scores_ax.set_ylabel("LOO log density\n(nats per point)")
    scores_ax.legend(fontsize=8, loc="best")
    scores_ax.set_title(
        f"model records of {len(records)} refits · now {records[-1].chosen}"
        f" ({records[-1].kind}) · {int(flagged.sum())} flagged"
    )
    weights_ax.set_ylabel("stacking weight")
    weights_ax.set_ylim(-0.02, 1.02)
    for field, colour in (("coverage50", "tab:blue"), ("coverage95", "tab:green")):
        values = np.array([_nan(getattr(r, field)) for r in records], dtype=float)
        label = "50 % interval" if field == "coverage50" else "95 % interval"
        coverage_ax.plot(decisions, values, ".-", color=colour, label=label, ms=5, lw=1)
        coverage_ax.axhline(TARGETS[field], color=colour, linestyle="--", linewidth=1)
    coverage_ax.set_ylabel("LOO coverage")
    coverage_ax.set_ylim(-0.02, 1.02)
    z = np.array([_nan(r.z_sd) for r in records], dtype=float)
    z_ax.plot(decisions, z, ".-", color="0.3", ms=5, lw=1, label="sd of LOO z")
    z_ax.axhline(TARGETS["z_sd"], color="0.3", linestyle="--", linewidth=1)
    z_ax.set_ylabel("sd of standardised\nLOO residuals")
    z_ax.set_xlabel("decision")
    z_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if flagged.any():
        for ax in (scores_ax, weights_ax, coverage_ax, z_ax):
            for d in decisions[flagged]:
                ax.axvline(d, color="red", alpha=0.25, linewidth=2, zorder=0)
        for field in ("coverage50", "coverage95"):
            values = np.array([_nan(getattr(r, field)) for r in records], dtype=float)
            coverage_ax.scatter(
                decisions[flagged], values[flagged], marker="x", s=40, c="red", zorder=3
            )
        coverage_ax.scatter([], [], marker="x", c="red", label="flagged")
        z_ax.scatter(decisions[flagged], z[flagged], marker="x", s=40, c="red", zorder=3)
    coverage_ax.legend(fontsize=8, loc="lower right")
    for ax in (scores_ax, weights_ax, coverage_ax, z_ax):
        ax.grid(alpha=0.3)
    return fig


# -- checking an event --------------------------------------------------------------------------


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.0f} %"


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _integer(event: Mapping[str, Any], key: str) -> int:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key}: must be an integer, got {value!r}")
    return value


def _text(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}: must be a name, got {value!r}")
    return value


def _optional_text(event: Mapping[str, Any], key: str) -> str | None:
    value = event.get(key)
    return None if value is None else _text(event, key)


def _optional_number(event: Mapping[str, Any], key: str) -> float | None:
    value = event.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: must be a number, got {value!r}")
    return float(value) if math.isfinite(value) else None


def _fraction(event: Mapping[str, Any], key: str) -> float | None:
    value = _optional_number(event, key)
    if value is not None and not 0 <= value <= 1:
        raise ValueError(f"{key}: must be in [0, 1], got {value!r}")
    return value


def _numbers(event: Mapping[str, Any], key: str) -> dict[str, float]:
    value = event.get(key)
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{key}: must map model names to numbers, got {value!r}")
    out = {}
    for name, number in value.items():
        checked = _optional_number({key: number}, key)
        out[str(name)] = math.nan if checked is None else checked
    return out
