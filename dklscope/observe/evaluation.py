"""How well a campaign did against the ground truth of a simulated sample.

Pure functions of the true scalar at every candidate (``truth``, shape (N,)), the candidates
measured in order, and the model's predicted map. Truth is the scalarizer applied to the
sample's noise-free spectra, so luck in the measurement noise does not count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dklscope.model.loo import Z50, Z95

if TYPE_CHECKING:
    from dklscope.campaign.loop import Campaign
    from dklscope.config import Config
    from dklscope.simulators import Sample


def true_scalars(campaign: Campaign, sample: Sample) -> np.ndarray:
    """The true scalar at each of the campaign's candidates, shape (N,): the campaign's
    scalarizer on the sample's noise-free spectra at the campaign's dwell."""
    truth = campaign.scalarizer(sample.expected_spectra(campaign.config.dwell_s), campaign.axis)
    p = campaign.patches
    return np.asarray(truth[sample.spectrum_pixel(p.rows, p.cols)], dtype=np.float64)


def truth_is_measured(config: Config) -> bool:
    """Whether the truth of ``config``'s simulated sample is itself a measurement: a replay,
    whose stored spectra carry the noise of the instrument that measured them, as opposed to a
    synthetic sample's noise-free signal. A model's interval for such a truth is that of a new
    measurement (the noise included), not that of the noise-free scalar."""
    simulator = config.instrument.simulator
    return simulator is not None and simulator.sample == "replay"


def trace_metrics(
    truth: np.ndarray, measured: Sequence[int], *, top_percent: float = 1.0
) -> dict[str, Any]:
    """Metrics after each of the ``measured`` candidates (indices into ``truth``, in order).

    - ``best_fraction[k]``: the largest true value among the first k+1 measured, over the
      largest true value of all candidates (non-finite truths count as never best);
    - ``top_found[k]``: the fraction of the top ``top_percent``% candidates by true value (at
      least one) measured among the first k+1;
    - ``steps_to_90pct_best``, ``steps_to_top_percent``: how many measurements it took to reach
      a best fraction of 0.9, and to measure one top candidate (None: not reached).
    """
    values = np.where(np.isfinite(truth), truth, -np.inf)
    best = float(values.max())
    order = np.asarray(measured, dtype=np.intp)
    running = np.maximum.accumulate(values[order]) if len(order) else np.zeros(0)
    best_fraction = running / best if best != 0 else np.full(len(order), np.nan)
    n_top = max(1, math.ceil(len(values) * top_percent / 100))
    top = np.zeros(len(values), dtype=bool)
    top[np.argsort(values, kind="stable")[-n_top:]] = True
    top_found = np.cumsum(top[order]) / n_top
    return {
        "n": list(range(1, len(order) + 1)),
        "best_fraction": best_fraction.tolist(),
        "top_found": top_found.tolist(),
        "steps_to_90pct_best": _first(best_fraction >= 0.9),
        "steps_to_top_percent": _first(top_found > 0),
    }


def map_metrics(
    truth: np.ndarray, mean: np.ndarray, std: np.ndarray, unmeasured: np.ndarray
) -> dict[str, float | None]:
    """Error and calibration of a predicted map on the ``unmeasured`` candidates (bool, (N,)).

    ``rmse`` and ``r2`` of the predicted ``mean`` against ``truth``; ``coverage50`` and
    ``coverage95``: the fraction of true values inside the central 50% and 95% intervals of the
    prediction (``mean`` +- z ``std``, the latent function's standard deviation). Candidates
    with a non-finite truth are left out; None when none is left.
    """
    keep = np.asarray(unmeasured, dtype=bool) & np.isfinite(truth)
    if not keep.any():
        return {"rmse": None, "r2": None, "coverage50": None, "coverage95": None}
    t, m, s = truth[keep], mean[keep], std[keep]
    residual = m - t
    spread = float(np.sum((t - t.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(residual**2))),
        "r2": 1 - float(np.sum(residual**2)) / spread if spread > 0 else None,
        "coverage50": float(np.mean(np.abs(residual) <= Z50 * s)),
        "coverage95": float(np.mean(np.abs(residual) <= Z95 * s)),
    }


def _first(reached: np.ndarray) -> int | None:
    """1 + the index of the first True (a count of measurements), or None."""
    hits = np.flatnonzero(reached)
    return int(hits[0]) + 1 if len(hits) else None
