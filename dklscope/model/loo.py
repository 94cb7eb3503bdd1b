"""Leave-one-out predictions of an exact Gaussian process, and what they say of its calibration.

For a GP with fixed hyperparameters, the predictive distribution of each training observation
given all the others has a closed form (Rasmussen & Williams 2006, "Gaussian Processes for
Machine Learning", §5.4.2; Sundararajan & Keerthi 2001): with ``A = K + σ² I`` the covariance of
the observations and ``a = A⁻¹ (y - m)``,

    μ₋ᵢ = yᵢ - aᵢ / [A⁻¹]ᵢᵢ,     σ²₋ᵢ = 1 / [A⁻¹]ᵢᵢ.

This is the same as refitting the GP's posterior n times, each without one point, at the cost
of one inverse. It is the score `dklscope.model.choice` ranks models by (the mean log
predictive density per point), and the calibration the campaign journals at every refit: the
coverage of the central 50 % and 95 % LOO intervals and the spread of the standardised
residuals ``zᵢ = (yᵢ - μ₋ᵢ) / σ₋ᵢ`` (1 for a calibrated model).

Above `MAX_EXACT` training points, the LOO predictions are those of a random subset of
`SUBSET` points (still each given all the others), which costs ``n² SUBSET`` instead of ``n³``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

Z50 = 0.6744897501960817  # half-width of a central 50% Gaussian interval, in standard deviations
Z95 = 1.959963984540054  # and of a 95% one

MAX_EXACT = 1024  # LOO over every training point up to this many
SUBSET = 512  # and over a random subset of this many above

# A model is flagged when its LOO intervals are clearly off (with at least `MIN_POINTS`).
MIN_POINTS = 10
OVERCONFIDENT_COVERAGE95 = 0.85  # 95 % intervals holding less than this: too narrow
UNDERCONFIDENT_COVERAGE50 = 0.8  # 50 % intervals holding more than this: too wide
Z_SD_HIGH, Z_SD_LOW = 1.5, 0.5  # the spread of standardised residuals outside [0.5, 1.5]


@dataclass(frozen=True)
class LeaveOneOut:
    """Each training point's prediction from all the others, standardised units: ``y``,
    ``mean`` and ``variance`` (of the observation, noise included) and ``log_density``
    (``log p(yᵢ | y₋ᵢ)``, nats), each ``(m,)`` for the ``m`` points scored (all, or a subset
    above `MAX_EXACT`). A Gaussian prediction's log density follows from its mean and
    variance (`gaussian`); a mixture's is its own (`mixture`)."""

    y: Tensor
    mean: Tensor
    variance: Tensor
    log_density: Tensor

    @classmethod
    def gaussian(cls, y: Tensor, mean: Tensor, variance: Tensor) -> LeaveOneOut:
        return cls(y, mean, variance, _log_normal(y, mean, variance))

    @classmethod
    def mixture(cls, y: Tensor, means: Tensor, variances: Tensor) -> LeaveOneOut:
        """The equal-weight mixture of ``K`` Gaussian predictions (``means``, ``variances``:
        ``K x m``): its exact log density, and its mean and variance (moment matched)."""
        log_density = torch.logsumexp(_log_normal(y, means, variances), 0) - math.log(len(means))
        mean = means.mean(0)
        variance = (variances + means.pow(2)).mean(0) - mean.pow(2)
        return cls(y, mean, variance, log_density)

    @property
    def z(self) -> Tensor:
        """Standardised residuals ``(yᵢ - μ₋ᵢ) / σ₋ᵢ``, ``(m,)``."""
        return (self.y - self.mean) / self.variance.sqrt()


@dataclass(frozen=True)
class Calibration:
    """How well a model's LOO intervals hold the measured points (`calibration`)."""

    n: int  # points scored
    score: float  # mean LOO log predictive density per point, nats (standardised units)
    coverage50: float  # fraction inside the central 50 % interval (0.5 if calibrated)
    coverage95: float  # and the 95 % one (0.95 if calibrated)
    z_sd: float  # root mean square of the standardised residuals (1 if calibrated)
    flag: str | None  # None, "overconfident" or "underconfident"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def leave_one_out(model: Any, generator: torch.Generator | None = None) -> LeaveOneOut:
    """The closed-form LOO predictions of an exact GP ``model`` (a `dklscope.model.dkl.DKLModel`:
    its network, kernel, constant mean and Gaussian noise as trained), in the standardised
    units it was trained in; of a model with its own ``leave_one_out`` (an ensemble), the
    mixture of its members'. ``generator`` draws the subset above `MAX_EXACT` points."""
    if hasattr(model, "leave_one_out"):
        return LeaveOneOut.mixture(*model.leave_one_out())
    y = model.train_targets
    _, A, L, a, _ = model.exact_factors()
    with torch.no_grad():
        n = len(y)
        if n <= MAX_EXACT:
            chosen = torch.arange(n, device=y.device)
            diagonal = torch.cholesky_inverse(L).diagonal()
        else:
            chosen = torch.randperm(n, generator=generator)[:SUBSET].to(y.device)
            unit = torch.zeros(n, len(chosen), dtype=A.dtype, device=A.device)
            unit[chosen, torch.arange(len(chosen))] = 1.0
            root = torch.linalg.solve_triangular(L, unit, upper=False)  # L⁻¹ eᵢ
            diagonal = root.pow(2).sum(0)
        variance = 1.0 / diagonal
        mean = y[chosen] - a[chosen] * variance
    return LeaveOneOut.gaussian(y[chosen], mean, variance)


def _log_normal(y: Tensor, mean: Tensor, variance: Tensor) -> Tensor:
    return -0.5 * ((y - mean).pow(2) / variance + variance.log() + math.log(2 * math.pi))


def calibration(loo: LeaveOneOut) -> Calibration:
    """The score, interval coverage and residual spread of ``loo``, and a flag when the model
    is clearly miscalibrated: ``overconfident`` when its 95 % intervals hold fewer than
    `OVERCONFIDENT_COVERAGE95` of the points or the residuals spread more than `Z_SD_HIGH`
    standard deviations; ``underconfident`` when its 50 % intervals hold more than
    `UNDERCONFIDENT_COVERAGE50` or the residuals spread less than `Z_SD_LOW`. No flag below
    `MIN_POINTS` points (too few to tell)."""
    z = loo.z.detach().abs()
    n = len(z)
    coverage50 = float((z <= Z50).double().mean())
    coverage95 = float((z <= Z95).double().mean())
    z_sd = float(z.pow(2).mean().sqrt())
    flag = None
    if n >= MIN_POINTS:
        if coverage95 < OVERCONFIDENT_COVERAGE95 or z_sd > Z_SD_HIGH:
            flag = "overconfident"
        elif coverage50 > UNDERCONFIDENT_COVERAGE50 or z_sd < Z_SD_LOW:
            flag = "underconfident"
    score = float(loo.log_density.detach().mean())
    return Calibration(n, score, coverage50, coverage95, z_sd, flag)


def flag_message(record: dict[str, Any]) -> str | None:
    """What a flagged calibration record (`Calibration.to_dict`) means, in words; None when it
    is not flagged."""
    flag = record.get("flag")
    if flag is None:
        return None
    held = f"95 % intervals held {record['coverage95']:.0%} of left-out measurements"
    if flag == "overconfident":
        return f"{held}: the error bars are too narrow"
    return f"{held} (50 % intervals {record['coverage50']:.0%}): the error bars are too wide"
