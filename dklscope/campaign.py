"""`Campaign`: the active-learning loop against one instrument.

Each step: choose a candidate (at random for the first ``budget.seed_points``, then by the
policy on a freshly fitted model), move the probe there, acquire a spectrum, scalarize it and
commit it to the journal, all before the next step begins.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from .config import Config, ConfigError
from .dkl import DKLLearner, DKLModel, posterior_mean_std
from .drivers import InstrumentDescription, MicroscopeClient
from .journal import Journal, Measurement
from .patches import grid_patches
from .policies import POLICIES, Decision, Policy
from .scalarizers import PeakIntensity

log = logging.getLogger(__name__)


class Campaign:
    """One campaign: ``config`` run on the instrument behind ``client``, recorded in ``journal``.

    Reads the instrument's description and overview, cuts the candidate patches and writes the
    campaign's metadata to the journal. Call `step` for one measurement or `run` for all.
    """

    def __init__(
        self, config: Config, client: MicroscopeClient, journal: Journal, *, config_text: str = ""
    ) -> None:
        self.config, self.client, self.journal = config, client, journal
        self.description = client.describe()
        check_config_against(config, self.description)
        self.axis = self.description.spectral_axis.values()
        self.scalarizer = PeakIntensity(config.scalarizer.window)
        self.overview = np.asarray(client.get_overview(), dtype=np.float64)
        self.patches = grid_patches(
            self.overview,
            config.patches.size,
            stride=config.patches.stride,
            edge=config.patches.edge,
        )
        # Standardised with the whole overview's statistics, so brightness stays informative.
        scaled = (self.patches.data - self.overview.mean()) / (self.overview.std() or 1.0)
        self.candidates = torch.as_tensor(
            scaled.reshape(len(self.patches), -1), dtype=torch.float64
        )

        self.policy: Policy = POLICIES[config.policy.kind]()
        m = config.model
        self.learner = DKLLearner(
            self.candidates.shape[1],
            hidden=m.hidden,
            feature_dim=m.feature_dim,
            kernel=m.kernel,
            first_fit_iterations=m.first_fit_iterations,
            refit_iterations=m.refit_iterations,
            learning_rate=m.learning_rate,
            seed=config.seed,
        )
        self.rng = np.random.default_rng(config.seed)
        self.measured = np.zeros(len(self.patches), dtype=bool)
        self.history: list[Measurement] = []
        self.step_latencies_s: list[float] = []
        self.model: DKLModel | None = None

        journal.set_metadata("config", config.to_dict())
        journal.set_metadata("config_text", config_text)
        journal.set_metadata("instrument", self.description.to_dict())
        journal.set_metadata("versions", _versions())
        journal.set_array("overview", self.overview.astype(np.float32))

    # -- state --------------------------------------------------------------------------------

    @property
    def n_planned(self) -> int:
        """Measurements the budget allows, capped by the number of candidates."""
        return min(self.config.budget.seed_points + self.config.budget.steps, len(self.patches))

    @property
    def done(self) -> bool:
        return len(self.history) >= self.n_planned

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``n x d`` and scalars ``(n,)`` of every measurement with a finite scalar."""
        good = [m for m in self.history if math.isfinite(m.scalar)]
        X = self.candidates[[m.candidate for m in good]]
        return X, torch.tensor([m.scalar for m in good], dtype=torch.float64)

    def best(self) -> Measurement | None:
        """The measurement with the largest scalar so far."""
        good = [m for m in self.history if math.isfinite(m.scalar)]
        return max(good, key=lambda m: m.scalar, default=None)

    # -- running ------------------------------------------------------------------------------

    def step(self) -> Measurement:
        """Decide, move, acquire, scalarize and journal one measurement."""
        if self.done:
            raise RuntimeError("the campaign's budget is spent")
        t0 = time.perf_counter()
        seeding = len(self.history) < self.config.budget.seed_points
        decision = self._seed_decision() if seeding else self._decide()
        t_decided = time.time()
        decision_latency = time.perf_counter() - t0

        row, col = int(self.patches.rows[decision.index]), int(self.patches.cols[decision.index])
        x_read, y_read = self.client.move(col, row)
        acq = self.client.acquire(self.config.dwell_s)
        scalar = float(self.scalarizer(acq.spectrum, self.axis))
        if not math.isfinite(scalar):
            log.warning(
                "non-finite scalar at (x=%d, y=%d): kept in the journal, not fitted", col, row
            )

        m = Measurement(
            seq=len(self.history),
            kind="seed" if seeding else "policy",
            candidate=decision.index,
            x=float(col),
            y=float(row),
            x_read=acq.x if math.isfinite(acq.x) else x_read,
            y_read=acq.y if math.isfinite(acq.y) else y_read,
            dwell_s=acq.dwell_s,
            spectrum=acq.spectrum,
            scalar=scalar,
            acquisition_value=None if seeding else decision.acquisition_value,
            predicted_mean=None if seeding else decision.predicted_mean,
            predicted_std=None if seeding else decision.predicted_std,
            t_decided=t_decided,
            t_acquired=acq.timestamp,
            decision_latency_s=decision_latency,
        )
        self.journal.record(m)  # on disk before the next move is asked for
        self.measured[decision.index] = True
        self.history.append(m)
        self.step_latencies_s.append(time.perf_counter() - t0)
        return m

    def run(self, on_step: Callable[[Measurement], None] | None = None) -> None:
        """Step until the budget is spent; ``on_step`` sees each new measurement."""
        while not self.done:
            m = self.step()
            if on_step is not None:
                on_step(m)

    def _seed_decision(self) -> Decision:
        return Decision(int(self.rng.choice(np.flatnonzero(~self.measured))))

    def _decide(self) -> Decision:
        best = self.best()
        if self.policy.needs_model:
            self.model = self.learner.fit(*self.training_data())
        return self.policy.choose(
            self.model,
            self.candidates,
            self.measured,
            best.scalar if best else -math.inf,
            self.rng,
        )

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """Refit on all measurements; predicted mean and std at every candidate, each (N,)."""
        self.model = self.learner.fit(*self.training_data())
        return posterior_mean_std(self.model, self.candidates)


def check_config_against(config: Config, description: InstrumentDescription) -> None:
    """Refuse, with a `ConfigError` naming the key, what this instrument cannot do."""
    if (why := description.check_dwell(config.dwell_s)) is not None:
        raise ConfigError("dwell_s", f"{why} of {description.name}")
    try:
        PeakIntensity(config.scalarizer.window).channels(description.spectral_axis.values())
    except ValueError as exc:
        raise ConfigError("scalarizer.window", f"{exc} {description.spectral_axis.units}") from None
    if config.patches.size > min(description.overview_shape):
        raise ConfigError(
            "patches.size",
            f"{config.patches.size} does not fit the overview {list(description.overview_shape)}",
        )


def _versions() -> dict[str, str]:
    names = ("dklscope", "torch", "gpytorch", "botorch", "numpy", "pyzmq")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions
