"""Deciding a campaign's points: when a decision is worth making, which points it chooses (at
random for the first ``budget.seed_points``, then by the policy on a freshly fitted model), and
the model behind it: fitted to the measurements, journaled with its calibration, rebuilt from a
checkpoint, asked for predictions.

`Decider` does this for one `Campaign`, whose measurements, decisions, learner and policy it
reads; the campaign delegates its decision methods to it and queues what it decides.

Randomness (seed points, Thompson sampling) comes from a generator seeded by ``(config.seed,
decision number)``, so it too survives a restart.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from dklscope.model.dkl import DKLModel, members, posterior_mean_std
from dklscope.model.loo import calibration, flag_message, leave_one_out
from dklscope.model.policies import PolicyState, decide
from dklscope.model.scalarizers import Scalarizer, build_scalarizer
from dklscope.model.training import DKLLearner

from .journal import DecisionRecord, Measurement

if TYPE_CHECKING:
    from .loop import Campaign

log = logging.getLogger(__name__)


class Decider:
    """The decisions of ``campaign``: `may_decide`, `decide` (on `policy_state`), and the model
    of its outputs (`fit_outputs`, `predict_outputs`, `checkpoint_model`)."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign
        self._predicted = [build_scalarizer(c) for c in campaign.config.predict.values()]
        self._outputs: dict[int, np.ndarray] = {}  # seq -> every output of a measurement
        self._calibration_said: str | None = None  # the last calibration warning logged

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``n x d`` and scalars ``(n,)`` of every successful measurement; with
        ``config.predict``, ``n x m`` values of every output (`outputs`)."""
        good = self.campaign.ok_measurements()
        X = self.campaign.candidates[[m.candidate for m in good]]
        if not self._predicted:
            return X, torch.tensor([m.scalar for m in good], dtype=torch.float64)
        return X, torch.as_tensor(np.array([self.outputs(m) for m in good]).reshape(len(good), -1))

    def outputs(self, m: Measurement) -> np.ndarray:
        """The value of every output at ``m``, shape ``(len(output_names),)``: its scalar, then
        each of ``config.predict``'s scalarizers on its spectrum (NaN where it failed)."""
        if m.seq not in self._outputs:
            values = [m.scalar]
            names = self.campaign.output_names[1:]
            for name, scalarizer in zip(names, self._predicted, strict=True):
                values.append(_predicted_value(name, scalarizer, m, self.campaign.axis))
            self._outputs[m.seq] = np.array(values, dtype=np.float64)
        return self._outputs[m.seq]

    def may_decide(self) -> bool:
        """Whether deciding ahead is worth it: the budget allows more and nothing says stop."""
        campaign = self.campaign
        return (
            len(campaign.decisions) < campaign.n_planned
            and not campaign.stop_requested
            and campaign.stop_reason is None
            and not campaign.unavailable().all()
        )

    def decide(self, in_flight: DecisionRecord | None) -> list[DecisionRecord]:
        """Choose the next point(s) and journal them (with the learner's state); returns them,
        for the campaign to queue. ``in_flight`` is being measured and counts as pending. May
        set `stop_reason` instead (``stop.max_std``), and return none."""
        campaign = self.campaign
        number = len(campaign.decisions)
        t0 = time.perf_counter()
        rng = np.random.default_rng([campaign.config.seed, number])
        good = campaign.ok_measurements()
        if number < campaign.config.budget.seed_points:
            choice = int(rng.choice(np.flatnonzero(~campaign.unavailable())))
            chosen = [(choice, None, None, None)]
            kind = "seed"
        else:
            kind = "policy"
            pending = [in_flight.candidate] if in_flight is not None else []
            state = self.policy_state(rng, pending)
            if campaign.stop_reason is not None:
                return []
            chosen = [
                (
                    d.index,
                    _or_none(d.acquisition_value),
                    _or_none(d.predicted_mean),
                    _or_none(d.predicted_std),
                )
                for d in decide(campaign.policy, state)
            ][: campaign.n_planned - number]  # a batch never outruns the budget
        latency = time.perf_counter() - t0
        records = [
            DecisionRecord(
                number=number + i,
                kind=kind,
                candidate=index,
                x=float(campaign.positions[index, 0]),
                y=float(campaign.positions[index, 1]),
                acquisition_value=value,
                predicted_mean=mean,
                predicted_std=std,
                n_train=len(good),
                t_decided=time.time(),
                latency_s=latency,
            )
            for i, (index, value, mean, std) in enumerate(chosen)
        ]
        with campaign.journal.transaction():  # on disk before the first move towards them
            for record in records:
                campaign.journal.record_decision(record)
            if kind == "policy" and campaign.policy.needs_model:
                campaign.journal.save_checkpoint(
                    number,
                    campaign.learner.state_bytes(),
                    keep_every=campaign.config.runner.checkpoint_every,
                )
        return records

    def policy_state(
        self, rng: np.random.Generator | None = None, pending: list[int] | None = None
    ) -> PolicyState:
        """What the policy sees now, refitting the model first if the policy needs one.

        ``pending`` candidates are being measured: they may not be chosen, and the model is
        conditioned on them at its own predicted mean. Sets `stop_reason` when ``stop.max_std``
        says the model has nothing left to learn.
        """
        campaign = self.campaign
        pending = pending or []
        model, outputs = None, {}
        if campaign.policy.needs_model:
            outputs = self.fit_outputs()
            self._record_model(outputs["scalar"])
            if (threshold := campaign.config.stop.max_std) is not None:
                free = ~campaign.unavailable()
                _, std = posterior_mean_std(outputs["scalar"], campaign.candidates[free])
                if std.max() < threshold:
                    campaign.stop_reason = f"largest predictive std {std.max():.4g} < {threshold:g}"
            if pending:  # the policy ranks the scalar's model: only it need see them
                outputs["scalar"] = outputs["scalar"].condition_on_pending(
                    campaign.candidates[pending]
                )
            model = outputs["scalar"]
        good = campaign.ok_measurements()
        best = campaign.best()
        return PolicyState(
            model=model,
            candidates=campaign.candidates,
            positions=campaign.positions,
            measured=campaign.unavailable(),
            scalars=np.array([m.scalar for m in good], dtype=np.float64),
            measured_indices=np.array([m.candidate for m in good], dtype=np.intp),
            best_f=best.scalar if best else -math.inf,
            step=sum(d.kind == "policy" for d in campaign.decisions),
            rng=rng if rng is not None else np.random.default_rng(campaign.config.seed),
            q=campaign.config.policy.q,
            pending=np.array(pending, dtype=np.intp),
            outputs=outputs if self._predicted else None,
        )

    def _record_model(self, model: DKLModel) -> None:
        """Journal what the fit behind the coming decision chose and how well calibrated its
        leave-one-out predictions of the measured points are (a ``model`` event); warn when
        they are clearly off."""
        campaign = self.campaign
        record = getattr(campaign.learner, "last_record", None)
        if record is None:  # one model: its own calibration
            fit = calibration(leave_one_out(model)).to_dict()
            name = campaign.config.model.family
            record = {"scores": {name: fit["score"]}, "weights": {name: 1.0}, "chosen": name, **fit}
        record = {
            "decision": len(campaign.decisions),
            "n_train": len(campaign.ok_measurements()),
            "model_kind": campaign.config.model.family,
            **record,
        }
        campaign.journal.log_event("model", **record)
        message = flag_message(record)
        if message is not None and message.split(":")[-1] != self._calibration_said:
            log.warning("model %s, %d points: %s", record["chosen"], record["n_train"], message)
        elif message is None and self._calibration_said:
            log.info("model %s, %d points: calibrated again", record["chosen"], record["n_train"])
        self._calibration_said = message.split(":")[-1] if message else None
        campaign.publish("model", **record)

    def checkpoint_model(self, decision: int, state: bytes) -> DKLModel:
        """The scalar's model fitted behind ``decision``, rebuilt from its checkpoint
        ``state`` (the journal's ``checkpoints``) without any training: the checkpoint's
        weights conditioned on the measurements that fit saw (the first ``n_train``
        successful ones). The learner's own state is restored afterwards."""
        learner = self.campaign.learner
        saved = learner.state_bytes()
        try:
            learner.load_state_bytes(state)
            with learner.frozen():
                return self.fit_outputs(self.campaign.decisions[decision].n_train)["scalar"]
        finally:
            learner.load_state_bytes(saved)

    def predict_outputs(
        self, *, observation_noise: bool = False
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """As `Campaign.predict`, for every output by name (`output_names`); NaN for an output
        with fewer than 2 finite values measured."""
        campaign = self.campaign
        saved = campaign.learner.state_bytes()
        try:
            outputs = self.fit_outputs()
        finally:
            campaign.learner.load_state_bytes(saved)
        nan = np.full(len(campaign.candidates), math.nan)
        return {
            name: posterior_mean_std(
                outputs[name], campaign.candidates, observation_noise=observation_noise
            )
            if name in outputs
            else (nan, nan.copy())
            for name in campaign.output_names
        }

    def fit_outputs(self, n: int | None = None) -> dict[str, DKLModel]:
        """Fit the learner to every successful measurement (`training_data`), or to the first
        ``n``; the model of each output with at least 2 finite values, by name, the scalar's
        first. The campaign's `model` is then the model of them all."""
        campaign = self.campaign
        X, Y = self.training_data()
        X, Y = X[:n], Y.reshape(len(X), -1)[:n]
        fitted = [j for j, column in enumerate(Y.T) if int(torch.isfinite(column).sum()) >= 2]
        fitted = fitted if 0 in fitted else [0]  # the scalar's, or the learner says why not
        campaign.model = campaign.learner.fit(X, Y[:, fitted])
        names = [campaign.output_names[j] for j in fitted]
        return dict(zip(names, members(campaign.model), strict=True))


def warm_up(candidates: torch.Tensor) -> None:
    """Pay the model code's one-off costs (about 1 s on first use: lazy imports, first kernels)
    now, not while the instrument waits for the first model: fit a throwaway model to random
    data. The campaign's own learner and the process' random state are untouched."""
    started = time.perf_counter()
    X = candidates[:8]
    Y = torch.randn(len(X), dtype=X.dtype, generator=torch.Generator().manual_seed(0))
    posterior_mean_std(DKLLearner(X.shape[1], first_fit_iterations=2).fit(X, Y), X)
    log.debug("model code warmed up in %.2f s", time.perf_counter() - started)


def _predicted_value(name: str, scalarizer: Scalarizer, m: Measurement, axis: np.ndarray) -> float:
    """``scalarizer`` on ``m``'s spectrum; NaN (with a warning) where it fails: a secondary
    output never stops a campaign."""
    if not m.ok:
        return math.nan
    try:
        return float(scalarizer(m.spectrum, axis))
    except Exception as exc:  # a user's function, or a spectrum it cannot read
        log.warning("predict.%s failed on measurement %d (%s): NaN", name, m.seq, exc)
        return math.nan


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
