"""What a campaign's budget still allows (`budget_left`) and its dose account: the exposure of
the attempts journaled (`exposed_s`), the dose they delivered and whether the next point would
take it over ``config.dose.total`` (`dose_refusal`)."""

from __future__ import annotations

from dklscope.config import Config
from dklscope.drivers import InstrumentDescription

from .journal import Measurement
from .measure import UNREACHABLE

DOSE_TOTAL_REACHED = "dose.total"  # how the stop reason of a spent dose budget begins


def budget_left(
    config: Config,
    n_planned: int,
    history: list[Measurement],
    run_s: float | None,
    *,
    dose_per_s: float | None = None,
) -> dict[str, float | int | None]:
    """What the budget still allows after ``history``: ``decisions`` (of the ``n_planned``,
    those not yet measured to the end), ``dose_s`` (exposure, seconds; None: no dose budget),
    ``wall_s`` (seconds of this run, which has gone on for ``run_s`` seconds without its
    pauses; None: no wall-time budget, or ``run_s`` not known) and ``dose`` (of
    ``config.dose.total``, in the instrument's dose units, whose ``dose_per_s`` is given;
    None: no such budget, or ``dose_per_s`` not given)."""
    finished = {m.decision for m in history if m.status != "retried"}
    budget = config.budget
    dose = None if budget.dose_s is None else budget.dose_s - sum(m.dwell_s for m in history)
    wall = None if budget.wall_s is None or run_s is None else budget.wall_s - run_s
    total = config.dose.total
    exposed = exposed_s(history)
    dose_left = None if total is None or dose_per_s is None else total - dose_per_s * exposed
    return {
        "decisions": max(n_planned - len(finished), 0),
        "dose_s": None if dose is None else max(dose, 0.0),
        "wall_s": None if wall is None else max(wall, 0.0),
        "dose": None if dose_left is None else max(dose_left, 0.0),
    }


def exposed_s(history: list[Measurement]) -> float:
    """Seconds of exposure of every attempt in ``history`` that may have exposed: all but
    those never moved to (drifted out of reach)."""
    return sum(
        m.dwell_s for m in history if not (m.error is not None and m.error.startswith(UNREACHABLE))
    )


def dose_per_point(config: Config, description: InstrumentDescription) -> float | None:
    """The dose one measurement delivers, in the instrument's ``dose_units``: ``dwell_s``
    times the described ``dose_per_s``; None if the instrument keeps no dose account."""
    per_s = description.dose_per_s
    return None if per_s is None else config.dwell_s * per_s


def dose_delivered(description: InstrumentDescription, history: list[Measurement]) -> float | None:
    """The dose of every attempt in ``history`` (failed ones too: a lost reply may still have
    exposed), in ``dose_units``; None without a dose account."""
    per_s = description.dose_per_s
    return None if per_s is None else per_s * exposed_s(history)


def dose_refusal(
    config: Config, description: InstrumentDescription, history: list[Measurement]
) -> str | None:
    """Why the measurement after ``history`` may not be made under ``config.dose.total``, or
    None. Asked before every move (a retry's too), never after."""
    total, per_point = config.dose.total, dose_per_point(config, description)
    if total is None or per_point is None:
        return None
    delivered = dose_delivered(description, history) or 0.0
    if delivered + per_point > total * (1 + 1e-9):
        units = description.dose_units
        return (
            f"{DOSE_TOTAL_REACHED} {total:g} {units} reached: {delivered:g} {units} "
            f"delivered, the next point would add {per_point:g} {units}"
        )
    return None
