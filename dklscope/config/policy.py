"""The ``policy:`` section: how the next points are chosen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import CALLABLE, check

# The built-in policy kinds (dklscope.model.policies.POLICIES), the keys each reads besides ``q``.
# A kind may also be "package.module:ClassName", which reads ``params``.
POLICY_KINDS: dict[str, tuple[str, ...]] = {
    "ei": (),
    "pi": (),
    "ucb": ("beta", "schedule", "decay", "betas"),
    "max_variance": (),
    "thompson": ("features",),
    "qlogei": ("mc_samples", "shortlist"),
    "qucb": ("beta", "schedule", "decay", "betas", "mc_samples", "shortlist"),
    "random": (),
    "raster": (),
    "coordinate_gp": (),
}
_ONE_POINT_POLICIES = ("ei", "pi", "ucb", "max_variance", "coordinate_gp")


@dataclass(frozen=True)
class PolicyConfig:
    """How the next points are chosen (`dklscope.model.policies`). ``kind``, and the keys it reads:

    - ``ei``: expected improvement over the incumbent, the best finite scalar measured.
    - ``pi``: probability of improvement over the same incumbent.
    - ``ucb``: upper confidence bound ``mean + sqrt(beta_t) * std`` (BoTorch's convention: β
      multiplies the variance). ``beta`` (default 4: two standard deviations) and
      ``schedule``: ``constant`` (the default), ``annealed`` (``beta_t = beta * decay**t``
      at policy step t, ``decay`` in (0, 1], default 0.95) or ``list`` (``betas``: β of
      steps 0, 1, 2, ...; the last one holds after the list ends).
    - ``max_variance``: the largest predictive standard deviation (pure exploration).
    - ``thompson``: the maximum of one posterior sample path per point chosen; ``features``
      random Fourier features approximate the prior (default 1024).
    - ``qlogei``, ``qucb``: batches of ``q`` points at once, greedily, by Monte Carlo
      acquisition with ``mc_samples`` quasi-random samples (default 256) over the
      ``shortlist`` best candidates by the analytic value (default 128); ``qucb`` reads
      ``beta`` and its schedule as ``ucb`` does.
    - ``random``, ``raster``: baselines without a model; ``raster`` scans the grid row by row,
      alternating direction (serpentine).
    - ``coordinate_gp``: a baseline: EI of a plain GP on the (x, y) probe positions.
    - ``"package.module:ClassName"``: your own policy, built as ``ClassName(**params)``.

    ``q`` (default 1) is how many points one decision chooses; they are measured in order
    before the next decision. Only ``thompson``, ``qlogei``, ``qucb``, ``random``, ``raster``
    and your own policies choose more than one. A key the kind does not read is refused.
    """

    kind: str = "ei"  # one of POLICY_KINDS, or "package.module:ClassName"
    q: int = 1  # points chosen per decision
    beta: float | None = None  # ucb, qucb: > 0; default 4.0; the start of an annealed schedule
    schedule: Literal["constant", "annealed", "list"] | None = None  # ucb, qucb: of beta
    decay: float | None = None  # annealed: beta_t = beta * decay**t, in (0, 1]; default 0.95
    betas: tuple[float, ...] | None = None  # list: beta of each policy step, each > 0
    features: int | None = None  # thompson: random Fourier features, >= 1; default 1024
    mc_samples: int | None = None  # qlogei, qucb: quasi-Monte Carlo samples, >= 1; default 256
    shortlist: int | None = None  # qlogei, qucb: candidates scored by MC, >= 1; default 128
    params: dict[str, Any] | None = None  # "package.module:ClassName": its keyword arguments

    def __post_init__(self) -> None:
        kind = self.kind
        custom = kind not in POLICY_KINDS
        check(
            not custom or CALLABLE.fullmatch(kind) is not None,
            "kind",
            f"must be one of {', '.join(POLICY_KINDS)} or 'package.module:ClassName'; got {kind!r}",
        )
        check(self.q >= 1, "q", f"must be >= 1, got {self.q}")
        check(
            self.q == 1 or kind not in _ONE_POINT_POLICIES,
            "q",
            f"kind {kind!r} chooses one point at a time; use qlogei, qucb or thompson for "
            f"q = {self.q}",
        )
        reads = POLICY_KINDS.get(kind, ("params",))
        for key in (*POLICY_KINDS["qucb"], "features", "params"):
            if key not in reads:
                check(getattr(self, key) is None, key, f"is not read by kind {kind!r}")
        schedule = self.schedule or "constant"
        check(
            self.decay is None or schedule == "annealed",
            "decay",
            "is read only with schedule: annealed",
        )
        check(
            (self.betas is not None) == (schedule == "list") or "betas" not in reads,
            "betas",
            "give betas exactly when schedule is 'list'",
        )
        check(
            self.beta is None or schedule != "list",
            "beta",
            "give 'betas', not 'beta', with schedule: list",
        )
        check(self.beta is None or self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        if self.decay is not None:
            check(0 < self.decay <= 1, "decay", f"must be in (0, 1], got {self.decay}")
        if self.betas is not None:
            check(
                len(self.betas) >= 1 and min(self.betas) > 0,
                "betas",
                f"must be a list of values > 0, got {list(self.betas)}",
            )
        for key in ("features", "mc_samples", "shortlist"):
            value = getattr(self, key)
            check(value is None or value >= 1, key, f"must be >= 1, got {value}")
