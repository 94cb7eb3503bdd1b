"""One measurement of a decided point: the request in flight to the instrument (`InFlight`) and
its outcome, the spectrum checked and scalarized, as the journal's `Measurement`
(`measurement`): ``ok``, or an error to ``retry`` or to count as ``failed``."""

from __future__ import annotations

import dataclasses
import logging
import math
from concurrent.futures import Future

import numpy as np

from dklscope.config import Config
from dklscope.drivers import Acquisition, InstrumentDescription
from dklscope.model.scalarizers import Scalarizer

from .journal import DecisionRecord, Measurement

log = logging.getLogger(__name__)

UNREACHABLE = "not moved"  # the error of a point that drift has taken out of the probe's reach


@dataclasses.dataclass
class InFlight:
    """A measurement under way in the instrument thread."""

    decision: DecisionRecord
    attempt: int
    x: float
    y: float
    t_requested: float
    idle_s: float | None
    result: Future  # of (Acquisition | None, error | None, t_done)


def measurement(
    flight: InFlight,
    acq: Acquisition | None,
    error: str | None,
    t_done: float,
    *,
    seq: int,
    config: Config,
    description: InstrumentDescription,
    scalarizer: Scalarizer,
    axis: np.ndarray,
) -> Measurement:
    """The journal's record, number ``seq``, of ``flight``'s outcome (``acq`` or the instrument's
    ``error``, at ``t_done``): the spectrum checked (`_spectrum_problem`) and scalarized; a
    failed attempt is ``retried`` or ``failed`` as ``config.runner`` says."""
    d = flight.decision
    spectrum = np.zeros(0, np.float32) if acq is None else acq.spectrum
    if acq is not None:
        error = _spectrum_problem(spectrum, description.saturation_level)
    scalar = float(scalarizer(spectrum, axis)) if error is None else math.nan
    if error is None and not math.isfinite(scalar):
        log.warning("non-finite scalar at (x=%g, y=%g): journaled, not fitted", d.x, d.y)
    runner = config.runner
    status = "ok"
    if error is not None:
        retry = (
            runner.on_failure == "retry"
            and flight.attempt < runner.retries
            and not error.startswith(UNREACHABLE)
        )
        status = "retried" if retry else "failed"
        log.warning("measurement at (x=%.1f, y=%.1f) %s: %s", flight.x, flight.y, status, error)
    return Measurement(
        seq=seq,
        decision=d.number,
        kind=d.kind,
        candidate=d.candidate,
        x=flight.x,
        y=flight.y,
        x_read=acq.x if acq is not None else math.nan,
        y_read=acq.y if acq is not None else math.nan,
        dwell_s=acq.dwell_s if acq is not None else config.dwell_s,
        spectrum=spectrum,
        scalar=scalar,
        acquisition_value=d.acquisition_value,
        predicted_mean=d.predicted_mean,
        predicted_std=d.predicted_std,
        t_decided=d.t_decided,
        t_acquired=acq.timestamp if acq is not None else math.nan,
        decision_latency_s=d.latency_s,
        status=status,
        attempt=flight.attempt,
        error=error,
        t_requested=flight.t_requested,
        t_done=t_done,
        idle_s=flight.idle_s,
    )


def _spectrum_problem(spectrum: np.ndarray, saturation_level: float | None) -> str | None:
    """Why ``spectrum`` cannot be used, or None."""
    if not np.all(np.isfinite(spectrum)):
        return f"{int(np.sum(~np.isfinite(spectrum)))} non-finite channels"
    if saturation_level is not None and spectrum.size and spectrum.max() >= saturation_level:
        return f"saturated: {int(np.sum(spectrum >= saturation_level))} channels at full scale"
    return None
