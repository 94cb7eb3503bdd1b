"""`Campaign`: the active-learning loop against one instrument.

Each step: choose a candidate (at random for the first ``budget.seed_points``, then by the
policy on a freshly fitted model), move the probe there, acquire a spectrum, scalarize it and
commit it to the journal, all before the next step begins.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .config import Config, ConfigError, ModelConfig
from .dkl import DKLLearner, DKLModel, posterior_mean_std
from .drivers import InstrumentDescription, MicroscopeClient
from .journal import Journal, Measurement
from .patches import grid_patches
from .policies import Decision, Policy, PolicyState, build_policy, decide
from .scalarizers import build_scalarizer, check_scalarizer

if TYPE_CHECKING:
    from .embeddings import ModelEmbedding

log = logging.getLogger(__name__)


class Campaign:
    """One campaign: ``config`` run on the instrument behind ``client``, recorded in ``journal``.

    Reads the instrument's description and overview, cuts the candidate patches and writes the
    campaign's metadata to the journal. Call `step` for one measurement or `run` for all.
    """

    def __init__(
        self,
        config: Config,
        client: MicroscopeClient,
        journal: Journal,
        *,
        config_text: str = "",
        embedding_path: str | Path | None = None,
    ) -> None:
        self.config, self.client, self.journal = config, client, journal
        self.description = client.describe()
        check_config_against(config, self.description)
        self.axis = self.description.spectral_axis.values()
        self.scalarizer = build_scalarizer(config.scalarizer)
        self.overview = np.asarray(client.get_overview(), dtype=np.float64)
        self.patches = grid_patches(
            self.overview,
            config.patches.size,
            stride=config.patches.stride,
            edge=config.patches.edge,
        )
        # Standardised with the whole overview's statistics, so brightness stays informative.
        scaled = (self.patches.data - self.overview.mean()) / (self.overview.std() or 1.0)
        self.embedding: ModelEmbedding | None = None
        if config.embedding.kind != "none":
            self.embedding = _embedding(config, scaled, journal, embedding_path)
        self.candidates, network = _model_inputs(config.model, scaled, self.embedding)

        self.policy: Policy = build_policy(config.policy)
        self._pending: list[Decision] = []  # chosen with the last decision, not yet measured
        m = config.model
        self.learner = DKLLearner(
            self.candidates.shape[1],
            network=network,
            freeze_network=m.input == "frozen_encoder",
            hidden=m.hidden,
            feature_dim=m.feature_dim,
            kernel=m.kernel,
            noise_floor=m.noise_floor,
            first_fit_iterations=m.first_fit_iterations,
            refit_iterations=m.refit_iterations,
            full_refit_every=m.full_refit_every,
            train_subset=m.train_subset,
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
        """The next point of the policy's last batch, or else a new decision."""
        while self._pending:
            decision = self._pending.pop(0)
            if not self.measured[decision.index]:
                return decision
        if self.policy.needs_model:
            self.model = self.learner.fit(*self.training_data())
        decision, *self._pending = decide(self.policy, self.policy_state())
        return decision

    def policy_state(self) -> PolicyState:
        """What the policy sees now (the model is the last one fitted, if it needs one)."""
        good = [m for m in self.history if math.isfinite(m.scalar)]
        best = self.best()
        return PolicyState(
            model=self.model if self.policy.needs_model else None,
            candidates=self.candidates,
            positions=np.stack([self.patches.cols, self.patches.rows], axis=1).astype(float),
            measured=self.measured.copy(),
            scalars=np.array([m.scalar for m in good], dtype=np.float64),
            measured_indices=np.array([m.candidate for m in good], dtype=np.intp),
            best_f=best.scalar if best else -math.inf,
            step=sum(m.kind == "policy" for m in self.history),
            rng=self.rng,
            q=self.config.policy.q,
        )

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """Refit on all measurements; predicted mean and std at every candidate, each (N,)."""
        self.model = self.learner.fit(*self.training_data())
        return posterior_mean_std(self.model, self.candidates)


def _embedding(
    config: Config, patches: np.ndarray, journal: Journal, path: str | Path | None
) -> ModelEmbedding:
    """The embedding ``config.embedding`` asks for: read from its file, or trained on the
    standardised candidate ``patches`` (N, size, size) and, with ``path``, saved there."""
    from .embeddings import EmbeddingConfig, ModelEmbedding, TrainerConfig, build_embedding

    section = config.embedding
    if section.load is not None:
        embedding = ModelEmbedding.load(section.load)
        log.info("embedding read from %s", section.load)
    else:
        embedding = build_embedding(
            EmbeddingConfig(
                kind=section.kind,
                latent_dim=section.latent_dim,
                seed=config.seed,
                trainer=TrainerConfig(epochs=section.epochs, seed=config.seed, progress=False),
            )
        )
        started = time.perf_counter()
        history = embedding.fit(patches[:, None].astype(np.float32))
        log.info(
            "%s trained on %d patches in %.1f s",
            section.kind,
            len(patches),
            time.perf_counter() - started,
        )
        journal.set_metadata("embedding_training", dataclasses.asdict(history))
        if path is not None:
            embedding.save(path)
    return embedding


def _model_inputs(
    model: ModelConfig, patches: np.ndarray, embedding: ModelEmbedding | None
) -> tuple[torch.Tensor, nn.Module | None]:
    """The DKL's candidate inputs and its network (None: a fresh MLP) for ``model.input``, from
    the standardised candidate ``patches`` (N, size, size)."""
    flat = torch.as_tensor(patches.reshape(len(patches), -1), dtype=torch.float64)
    if model.input == "patches":
        return flat, None
    assert embedding is not None  # the config checks this
    if model.input == "latents":
        z = embedding.encode(patches[:, None].astype(np.float32)).z_loc
        z = torch.as_tensor(z, dtype=torch.float64)
        return (z - z.mean(0)) / z.std(0).clamp_min(1e-12), nn.Identity()
    return flat, embedding.feature_extractor()


def check_config_against(config: Config, description: InstrumentDescription) -> None:
    """Refuse, with a `ConfigError` naming the key, what this instrument cannot do."""
    if (why := description.check_dwell(config.dwell_s)) is not None:
        raise ConfigError("dwell_s", f"{why} of {description.name}")
    axis = description.spectral_axis
    check_scalarizer(config.scalarizer, axis.values(), axis.units)
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
