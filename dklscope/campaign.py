"""`Campaign`: the active-learning loop against one instrument, durable and resumable.

A campaign *decides* points (at random for the first ``budget.seed_points``, then by the policy
on a freshly fitted model) and *measures* them (move, acquire, scalarize). Each decision is
committed to the journal before its first move, each measurement before the next move, and the
model learner's state with every decision; so a campaign killed at any instant resumes from its
journal (`Campaign` on a journal that already holds one) exactly where it stopped: decided but
unmeasured points are measured first, in order, and nothing is measured twice.

`run` pipelines: while the instrument measures point k, the model is refitted and point k+1
chosen, with k treated as a pending observation at the model's own prediction (the "kriging
believer": the mean is unchanged, the variance around k shrinks, so the policy looks elsewhere).
Decisions depend on the data in a fixed pattern (the decision for k+1 sees the measurements
before k), never on timing, so a pipelined campaign is as reproducible as a sequential one.

Randomness (seed points, Thompson sampling) comes from a generator seeded by ``(config.seed,
decision number)``, so it too survives a restart.

From another thread (a `dklscope.control.ControlServer`, a signal handler) a run can be paused
(`request_pause`: the measurement under way is finished and journaled, then nothing is asked of
the instrument until `resume`) and stopped (`request_stop`); `status` says where it stands.

Whenever the campaign stops using the instrument (a pause, a stop, Ctrl-C, the end of its
budget, an error, the instrument server's heartbeats lost) it parks the beam (protocol 1.2
``park``: the probe to the instrument's safe position, the beam blanked, as the instrument can)
and journals a ``parked`` event with the reason; the next move un-parks. The dose budget
(``config.dose``, in the instrument's dose units) is enforced before every move.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import platform
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from botorch.models import ModelListGP

from .config import Config, ConfigError, from_dict
from .dkl import DKLLearner, DKLModel, members, posterior_mean_std
from .drivers import (
    Acquisition,
    InstrumentDescription,
    InstrumentError,
    InstrumentTimeout,
    MicroscopeClient,
    ProtocolError,
)
from .journal import EMBEDDING_NAME, JOURNAL_NAME, DecisionRecord, Journal, Measurement
from .loo import calibration, flag_message, leave_one_out
from .model_family import Learner, build_learner, model_inputs
from .patches import grid_patches
from .policies import Policy, PolicyState, build_policy, decide
from .scalarizers import Scalarizer, build_scalarizer, check_scalarizer

if TYPE_CHECKING:
    from .embeddings import ModelEmbedding
    from .progress import ProgressPublisher

log = logging.getLogger(__name__)


UNREACHABLE = "not moved"  # the error of a point that drift has taken out of the probe's reach
DOSE_TOTAL_REACHED = "dose.total"  # how the stop reason of a spent dose budget begins
HEARTBEAT_LOST = "lost heartbeat"  # how the stop reason of a silent instrument server begins


class CampaignError(Exception):
    """The campaign cannot go on with this instrument or journal (say which and why)."""


@dataclasses.dataclass
class _InFlight:
    """A measurement under way in the instrument thread."""

    decision: DecisionRecord
    attempt: int
    x: float
    y: float
    t_requested: float
    idle_s: float | None
    result: Future  # of (Acquisition | None, error | None, t_done)


class Campaign:
    """One campaign: ``config`` run on the instrument behind ``client``, recorded in ``journal``.

    On a new journal: reads the instrument's description and overview and writes them, the
    config and the software versions. On a journal that holds a campaign: continues it, with the
    description, the reference overview, the decisions, the measurements and the model state
    read back (``client`` None: read-only, for reports; see `from_journal`).

    Everything is built from ``config`` unless given: ``embedding`` (a trained
    `ModelEmbedding`), ``learner`` (a `Learner` over the candidates' inputs), ``policy``
    and ``scalarizer`` (any objects with their protocols). ``publisher`` receives progress
    events. `step` measures one decision; `run` goes on until a stop criterion is met.
    ``endpoints`` names the sockets that serve this campaign (``publish``, ``control``), for
    the ``run_started`` event, so that a viewer of the journal knows where to connect.
    """

    def __init__(
        self,
        config: Config,
        client: MicroscopeClient | None,
        journal: Journal,
        *,
        config_text: str = "",
        embedding: ModelEmbedding | None = None,
        embedding_path: str | Path | None = None,
        learner: Learner | None = None,
        policy: Policy | None = None,
        scalarizer: Scalarizer | None = None,
        publisher: ProgressPublisher | None = None,
    ) -> None:
        self.config, self.client, self.journal = config, client, journal
        self.publisher = publisher
        resuming = not journal.is_new
        if resuming:
            self.description = InstrumentDescription.from_dict(journal.metadata("instrument"))
            self.overview = np.asarray(journal.array("overview"), dtype=np.float64)
            if client is not None:
                _check_same_instrument(self.description, client.describe())
        else:
            if client is None:
                raise CampaignError(f"{journal.path} holds no campaign to read")
            self.description = client.describe()
            self.overview = np.asarray(client.get_overview(), dtype=np.float64)
        check_config_against(config, self.description)
        self.axis = self.description.spectral_axis.values()
        self.scalarizer: Scalarizer = scalarizer or build_scalarizer(config.scalarizer)
        # The outputs the model learns: the scalar maximised, then config.predict's.
        self.output_names = ("scalar", *config.predict)
        self._predicted = [build_scalarizer(c) for c in config.predict.values()]
        self._outputs: dict[int, np.ndarray] = {}  # seq -> every output of a measurement
        self.patches = grid_patches(
            self.overview,
            config.patches.size,
            stride=config.patches.stride,
            edge=config.patches.edge,
        )
        # Standardised with the whole overview's statistics, so brightness stays informative.
        scaled = (self.patches.data - self.overview.mean()) / (self.overview.std() or 1.0)
        self.embedding = embedding
        if self.embedding is None and config.embedding.kind != "none":
            self.embedding = _embedding(config, scaled, journal, embedding_path, resuming)
        self.positions = np.stack([self.patches.cols, self.patches.rows], axis=1).astype(float)
        inputs, network = model_inputs(config.model, scaled, self.positions, self.embedding)
        self.candidates = inputs.tensor
        self.policy: Policy = policy or build_policy(config.policy)
        self.learner: Learner = learner or build_learner(
            config.model, inputs, network, seed=config.seed
        )
        self.model: DKLModel | ModelListGP | None = None  # the last fitted, of every output
        if client is not None and self.policy.needs_model:
            _warm_up(self.candidates)

        if not resuming:
            with journal.transaction():
                journal.set_metadata("config", config.to_dict())
                journal.set_metadata("config_text", config_text)
                journal.set_metadata("instrument", self.description.to_dict())
                journal.set_metadata("versions", _versions())
                journal.set_array("overview", self.overview.astype(np.float32))
        self.decisions: list[DecisionRecord] = journal.decisions()
        self.history: list[Measurement] = journal.measurements()
        if checkpoints := journal.checkpoints():
            self.learner.load_state_bytes(checkpoints[-1][1])
        finished = {m.decision for m in self.history if m.status != "retried"}
        self._queue = [d for d in self.decisions if d.number not in finished]
        # Candidates that may not be chosen: decided already, or where the probe may not go.
        self.taken = np.array(
            [self.description.check_position(x, y) is not None for x, y in self.positions]
        )
        self.taken[[d.candidate for d in self.decisions]] = True
        drifts = journal.events("drift")
        self._set_drift((drifts[-1]["dx"], drifts[-1]["dy"]) if drifts else (0.0, 0.0))
        self._drift_checked_at = drifts[-1]["after_seq"] if drifts else 0
        self._calibration_said: str | None = None  # the last calibration warning logged
        self.stop_reason: str | None = None
        self._stop_requested: str | None = None  # the reason given with the request
        self._pause_requested = False
        self._state = "idle"  # running, paused or stopped while (and after) `run` runs
        self.endpoints: dict[str, str] = {}
        if publisher is not None:
            self.endpoints["publish"] = publisher.address
        self._started = time.monotonic()  # of this run, moved on by the length of each pause
        self._paused_since: float | None = None
        self._last_done: float | None = None  # the instrument's last reply in this run, Unix s
        if resuming and client is not None:
            log.info(
                "resuming: %d decisions, %d measurements, %d to measure first",
                len(self.decisions),
                len(self.history),
                len(self._queue),
            )

    @classmethod
    def from_journal(cls, folder: str | Path) -> Campaign:
        """The campaign recorded in ``folder`` (its journal and embedding), read-only: the
        journal is opened read-only, so this is safe while the campaign runs in another
        process."""
        folder = Path(folder)
        path = folder / JOURNAL_NAME
        if not path.is_file():
            raise CampaignError(f"{folder} holds no {JOURNAL_NAME}")
        journal = Journal(path, read_only=True)
        try:
            config = from_dict(Config, journal.metadata("config"))
        except (KeyError, ConfigError) as exc:
            journal.close()
            raise CampaignError(f"{path}: no readable config: {exc}") from None
        return cls(config, None, journal, embedding_path=folder / EMBEDDING_NAME)

    # -- state --------------------------------------------------------------------------------

    @property
    def n_planned(self) -> int:
        """Decisions the budget allows, capped by the number of candidates."""
        return min(self.config.budget.seed_points + self.config.budget.steps, len(self.patches))

    @property
    def done(self) -> bool:
        """Whether a stop criterion is met (`stop_reason` says which)."""
        self.stop_reason = self.stop_reason or self._stop_criterion()
        return self.stop_reason is not None

    def ok_measurements(self) -> list[Measurement]:
        """Successful measurements with a finite scalar, in order: what the model learns from."""
        return [m for m in self.history if m.ok and math.isfinite(m.scalar)]

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``n x d`` and scalars ``(n,)`` of every successful measurement; with
        ``config.predict``, ``n x m`` values of every output (`outputs`)."""
        good = self.ok_measurements()
        X = self.candidates[[m.candidate for m in good]]
        if not self._predicted:
            return X, torch.tensor([m.scalar for m in good], dtype=torch.float64)
        return X, torch.as_tensor(np.array([self.outputs(m) for m in good]).reshape(len(good), -1))

    def outputs(self, m: Measurement) -> np.ndarray:
        """The value of every output at ``m``, shape ``(len(output_names),)``: its scalar, then
        each of ``config.predict``'s scalarizers on its spectrum (NaN where it failed)."""
        if m.seq not in self._outputs:
            values = [m.scalar]
            for name, scalarizer in zip(self.output_names[1:], self._predicted, strict=True):
                values.append(_predicted_value(name, scalarizer, m, self.axis))
            self._outputs[m.seq] = np.array(values, dtype=np.float64)
        return self._outputs[m.seq]

    def best(self) -> Measurement | None:
        """The measurement with the largest scalar so far."""
        return max(self.ok_measurements(), key=lambda m: m.scalar, default=None)

    def unavailable(self) -> np.ndarray:
        """(N,) bool: candidates that may not be chosen now: decided already, or where the probe
        may not go (outside the limits or in a forbidden region, drift correction included)."""
        return self.taken | self._drifted_out_of_reach

    def _set_drift(self, drift_px: tuple[float, float]) -> None:
        """Shift later moves by ``drift_px`` (dx, dy); find the candidates it puts out of reach
        once here, not at every decision."""
        self.drift_px = drift_px
        self._drifted_out_of_reach = np.zeros(len(self.positions), dtype=bool)
        if drift_px != (0.0, 0.0):
            dx, dy = drift_px
            check = self.description.check_position
            self._drifted_out_of_reach[:] = [
                check(x + dx, y + dy) is not None for x, y in self.positions
            ]

    def request_stop(self, reason: str = "interrupted") -> None:
        """Stop after the measurement under way is journaled (what Ctrl-C does), with
        ``reason`` as the stop reason; resumable. Safe from a signal handler or another
        thread."""
        self._stop_requested = self._stop_requested or reason

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested is not None

    def request_pause(self) -> None:
        """Pause `run` once the measurement under way is journaled: no further move or
        acquisition until `resume` (or `request_stop`). Decisions already made are kept.
        Safe from another thread."""
        self._pause_requested = True

    def resume(self) -> None:
        """Go on after `request_pause`."""
        self._pause_requested = False

    @property
    def state(self) -> str:
        """``idle`` (no run yet), ``running``, ``pausing`` (a pause requested, the measurement
        under way not finished), ``paused``, ``resuming`` (asked to go on, not yet going),
        ``stopping`` (a stop requested) or ``stopped``."""
        if self._state in ("running", "paused") and self.stop_requested:
            return "stopping"
        if self._state == "running" and self._pause_requested:
            return "pausing"
        if self._state == "paused" and not self._pause_requested:
            return "resuming"
        return self._state

    def status(self) -> dict[str, Any]:
        """Where the campaign stands, as plain data: ``state``, ``stop_reason``,
        ``n_measurements`` (attempts journaled), ``n_decisions``, ``n_planned`` and
        ``budget_left`` (`budget_left`). Safe from another thread while `run` runs."""
        return {
            "state": self.state,
            "stop_reason": self.stop_reason,
            "n_measurements": len(self.history),
            "n_decisions": len(self.decisions),
            "n_planned": self.n_planned,
            "budget_left": budget_left(
                self.config,
                self.n_planned,
                self.history,
                self._run_s(),
                dose_per_s=self.description.dose_per_s,
            ),
        }

    def _run_s(self) -> float:
        """Seconds this run has gone on, its pauses left out."""
        now = time.monotonic()
        paused = 0.0 if self._paused_since is None else now - self._paused_since
        return now - self._started - paused

    def _stop_criterion(self) -> str | None:
        budget, stop = self.config.budget, self.config.stop
        if self._stop_requested is not None:
            return self._stop_requested
        if not self._queue and len(self.decisions) >= self.n_planned:
            return "budget of steps spent"
        if not self._queue and self.unavailable().all():
            return "every candidate measured or out of reach"
        best = self.best()
        if stop.target is not None and best is not None and best.scalar >= stop.target:
            return f"target {stop.target:g} reached"
        if budget.dose_s is not None:
            dose = sum(m.dwell_s for m in self.history)
            if dose + self.config.dwell_s > budget.dose_s * (1 + 1e-9):
                return f"dose budget {budget.dose_s:g} s spent"
        if (why := self._dose_refusal()) is not None:
            return why
        if self.client is not None and self.client.server_lost:
            return f"{HEARTBEAT_LOST}: {self.client.server_lost}"
        if budget.wall_s is not None and self._run_s() >= budget.wall_s:
            return f"wall time {budget.wall_s:g} s spent"
        return None

    # -- dose ---------------------------------------------------------------------------------

    @property
    def dose_per_point(self) -> float | None:
        """The dose one measurement delivers, in the instrument's ``dose_units``: ``dwell_s``
        times the described ``dose_per_s``; None if the instrument keeps no dose account."""
        per_s = self.description.dose_per_s
        return None if per_s is None else self.config.dwell_s * per_s

    def dose_delivered(self) -> float | None:
        """The dose of every attempt journaled so far (failed ones too: a lost reply may still
        have exposed), in ``dose_units``; None without a dose account."""
        per_s = self.description.dose_per_s
        return None if per_s is None else per_s * _exposed_s(self.history)

    def _dose_refusal(self) -> str | None:
        """Why the next measurement may not be made under ``config.dose.total``, or None.
        Asked before every move (a retry's too), never after."""
        total, per_point = self.config.dose.total, self.dose_per_point
        if total is None or per_point is None:
            return None
        delivered = self.dose_delivered() or 0.0
        if delivered + per_point > total * (1 + 1e-9):
            units = self.description.dose_units
            return (
                f"{DOSE_TOTAL_REACHED} {total:g} {units} reached: {delivered:g} {units} "
                f"delivered, the next point would add {per_point:g} {units}"
            )
        return None

    # -- running ------------------------------------------------------------------------------

    def step(self) -> Measurement:
        """Decide (or take the next decided point), measure it, retrying as ``runner.on_failure``
        says, and journal every attempt; returns the last attempt. No pipelining."""
        if self.done:
            raise RuntimeError(f"the campaign has stopped: {self.stop_reason}")
        self._require_instrument()
        if not self._queue:
            self._decide(in_flight=None)
            if self.done:  # the model said stop (stop.max_std)
                raise RuntimeError(f"the campaign has stopped: {self.stop_reason}")
        decision, attempt = self._queue.pop(0), 0
        while True:
            m = self._finish(self._submit(decision, attempt, None))
            if m.status != "retried" or (why := self._dose_refusal()) is not None:
                if m.status == "retried":
                    self.stop_reason = why
                return m
            attempt += 1

    def run(self, on_step: Callable[[Measurement], None] | None = None) -> str:
        """Measure until a stop criterion is met; returns why it stopped. ``on_step`` sees each
        journaled attempt. With ``runner.pipeline`` the next point is chosen while the
        instrument measures (see the module's documentation). `request_pause` and
        `request_stop` (from another thread) act between measurements: before a move, never
        during one. Whatever ends the run, a ``run_stopped`` event is journaled; an exception
        (an instrument failure, a model that cannot be fitted...) is journaled with ``error``
        and raised again."""
        self._require_instrument()
        self._started, self._last_done = time.monotonic(), None
        self.stop_reason, self._stop_requested = None, None
        self._state = "running"
        self._publish("started", n_planned=self.n_planned, resumed=bool(self.history))
        self.journal.log_event("run_started", measurements=len(self.history), **self.endpoints)
        try:
            self._run_loop(on_step)
        except KeyboardInterrupt:  # a second Ctrl-C: the measurement under way abandoned
            self._park("interrupted", "interrupted")
            self._stopped("interrupted")
            raise
        except BaseException as exc:
            self._park("error", f"error: {exc}")
            self._stopped(f"error: {exc}", error=True)
            raise
        reason = self.stop_reason or "stopped"
        self._park(self._park_reason(reason), reason)
        self._stopped(reason)
        log.info("campaign stopped: %s", reason)
        return reason

    def _park_reason(self, stop_reason: str) -> str:
        """Why the beam is parked at the end of a run, in a word: ``interrupted`` (Ctrl-C),
        ``stop`` (asked to), ``heartbeat`` (the instrument server fell silent), ``error`` (a
        failed measurement stopped it) or ``finished`` (budget, dose, target...)."""
        if self._stop_requested is not None:
            return "interrupted" if self._stop_requested == "interrupted" else "stop"
        if stop_reason.startswith(HEARTBEAT_LOST):
            return "heartbeat"
        if stop_reason.startswith("measurement"):  # runner.on_failure: stop
            return "error"
        return "finished"

    def _park(self, reason: str, detail: str) -> None:
        """Park the beam (protocol 1.2 ``park``) and journal a ``parked`` event: ``reason`` in
        a word (`_park_reason`, or ``pause``), ``detail`` the stop reason; ``action`` what was
        done (``park``, ``blank``, ``none``: the instrument can do neither, ``unsupported``:
        its server speaks an older protocol, ``failed``: with ``error``). Never raises: a
        failure to park must not hide why the run ended."""
        if self.client is None:
            return
        fields: dict[str, Any] = {"reason": reason, "detail": detail}
        try:
            result = self.client.park()
        except Exception as exc:  # the server is gone, or the instrument failed to park
            log.error("could not park the beam (%s): %s", reason, exc)
            fields.update(action="failed", error=str(exc))
        else:
            if result is None:
                log.warning(
                    "the instrument's server has no park (protocol %s): the beam stays where it is",
                    (self.client.server or {}).get("protocol"),
                )
                fields["action"] = "unsupported"
            else:
                fields.update(
                    action=result.get("action"),
                    moved=bool(result.get("moved")),
                    blanked=bool(result.get("blanked")),
                )
                log.info("beam parked (%s): %s", reason, fields["action"])
        fields["measurements"] = len(self.history)
        try:
            self.journal.log_event("parked", **fields)
        except Exception:  # the journal's own failure is reported by what ends the run
            log.exception("could not journal the parked event")
        self._publish("parked", **fields)

    def _stopped(self, reason: str, *, error: bool = False) -> None:
        self._state = "stopped"
        self.stop_reason = reason
        self.journal.log_event(
            "run_stopped", reason=reason, measurements=len(self.history), error=error
        )
        self._publish("stopped", reason=reason, n_measurements=len(self.history), error=error)

    def _run_loop(self, on_step: Callable[[Measurement], None] | None) -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="dklscope-instrument") as instrument:
            flight: _InFlight | None = None
            retry: tuple[DecisionRecord, int] | None = None  # measure again: (decision, attempt)
            while True:
                if flight is None:
                    if self._pause_requested and not self.stop_requested:
                        self._pause()
                    if retry is not None and not self.stop_requested:
                        if (why := self._dose_refusal()) is not None:
                            self.stop_reason = why  # the retry would take the dose over
                            break
                        flight = self._submit(*retry, instrument)
                    else:
                        if self.done:
                            break
                        self._maybe_correct_drift()
                        if not self._queue:
                            self._decide(in_flight=None)
                            if self.done:
                                break
                            if self._pause_requested or self.stop_requested:
                                continue  # decided while asked to wait: measured afterwards
                        flight = self._submit(self._queue.pop(0), 0, instrument)
                    retry = None
                if self.config.runner.pipeline and not self._queue and self._may_decide():
                    self._decide(in_flight=flight.decision)
                m = self._finish(flight)
                flight = None
                if m.status == "retried":
                    retry = (self.decisions[m.decision], m.attempt + 1)
                elif m.status == "failed" and self.config.runner.on_failure == "stop":
                    self.stop_reason = f"measurement {m.seq} failed: {m.error}"
                if on_step is not None:
                    on_step(m)

    def _pause(self) -> None:
        """Wait, asking nothing of the instrument, until `resume` or `request_stop`; journaled
        and published. The client's heartbeats go on from their own thread, so the driver's
        dead-man switch stays quiet. The pause counts neither towards ``budget.wall_s`` nor as
        instrument idle time (the first request after it has ``idle_s`` None). The beam is
        parked for the pause (journaled ``parked``); the next move un-parks it."""
        self._state = "paused"
        self.journal.log_event("paused", measurements=len(self.history))
        self._publish("paused", n_measurements=len(self.history))
        log.info("paused after %d measurements", len(self.history))
        self._park("pause", "paused")  # the next move un-parks
        self._paused_since = started = time.monotonic()
        while self._pause_requested and not self.stop_requested:
            time.sleep(0.05)  # polled, not an Event: request_stop may come from a signal handler
        paused_s = time.monotonic() - started
        self._started += paused_s
        self._paused_since = None
        self._last_done = None
        self._state = "running"
        if not self.stop_requested:
            self.journal.log_event("resumed", paused_s=paused_s)
            self._publish("resumed", paused_s=paused_s)
            log.info("resumed after a pause of %.1f s", paused_s)

    def _require_instrument(self) -> None:
        if self.client is None:
            raise CampaignError("this campaign was read from its journal: it has no instrument")

    def _may_decide(self) -> bool:
        """Whether deciding ahead is worth it: the budget allows more and nothing says stop."""
        return (
            len(self.decisions) < self.n_planned
            and not self.stop_requested
            and self.stop_reason is None
            and not self.unavailable().all()
        )

    # -- deciding -----------------------------------------------------------------------------

    def _decide(self, in_flight: DecisionRecord | None) -> None:
        """Choose the next point(s), journal them (with the learner's state) and queue them;
        ``in_flight`` is being measured and counts as pending. May set `stop_reason` instead
        (``stop.max_std``)."""
        number = len(self.decisions)
        t0 = time.perf_counter()
        rng = np.random.default_rng([self.config.seed, number])
        good = self.ok_measurements()
        if number < self.config.budget.seed_points:
            choice = int(rng.choice(np.flatnonzero(~self.unavailable())))
            chosen = [(choice, None, None, None)]
            kind = "seed"
        else:
            kind = "policy"
            pending = [in_flight.candidate] if in_flight is not None else []
            state = self.policy_state(rng, pending)
            if self.stop_reason is not None:
                return
            chosen = [
                (
                    d.index,
                    _or_none(d.acquisition_value),
                    _or_none(d.predicted_mean),
                    _or_none(d.predicted_std),
                )
                for d in decide(self.policy, state)
            ][: self.n_planned - number]  # a batch never outruns the budget
        latency = time.perf_counter() - t0
        records = [
            DecisionRecord(
                number=number + i,
                kind=kind,
                candidate=index,
                x=float(self.positions[index, 0]),
                y=float(self.positions[index, 1]),
                acquisition_value=value,
                predicted_mean=mean,
                predicted_std=std,
                n_train=len(good),
                t_decided=time.time(),
                latency_s=latency,
            )
            for i, (index, value, mean, std) in enumerate(chosen)
        ]
        with self.journal.transaction():  # on disk before the first move towards them
            for record in records:
                self.journal.record_decision(record)
            if kind == "policy" and self.policy.needs_model:
                self.journal.save_checkpoint(
                    number,
                    self.learner.state_bytes(),
                    keep_every=self.config.runner.checkpoint_every,
                )
        self.decisions += records
        self._queue += records
        self.taken[[r.candidate for r in records]] = True
        for record in records:
            self._publish("decision", **dataclasses.asdict(record))

    def policy_state(
        self, rng: np.random.Generator | None = None, pending: list[int] | None = None
    ) -> PolicyState:
        """What the policy sees now, refitting the model first if the policy needs one.

        ``pending`` candidates are being measured: they may not be chosen, and the model is
        conditioned on them at its own predicted mean. Sets `stop_reason` when ``stop.max_std``
        says the model has nothing left to learn.
        """
        pending = pending or []
        model, outputs = None, {}
        if self.policy.needs_model:
            outputs = self.fit_outputs()
            self._record_model(outputs["scalar"])
            if (threshold := self.config.stop.max_std) is not None:
                free = ~self.unavailable()
                _, std = posterior_mean_std(outputs["scalar"], self.candidates[free])
                if std.max() < threshold:
                    self.stop_reason = f"largest predictive std {std.max():.4g} < {threshold:g}"
            if pending:  # the policy ranks the scalar's model: only it need see them
                outputs["scalar"] = outputs["scalar"].condition_on_pending(self.candidates[pending])
            model = outputs["scalar"]
        good = self.ok_measurements()
        best = self.best()
        return PolicyState(
            model=model,
            candidates=self.candidates,
            positions=self.positions,
            measured=self.unavailable(),
            scalars=np.array([m.scalar for m in good], dtype=np.float64),
            measured_indices=np.array([m.candidate for m in good], dtype=np.intp),
            best_f=best.scalar if best else -math.inf,
            step=sum(d.kind == "policy" for d in self.decisions),
            rng=rng if rng is not None else np.random.default_rng(self.config.seed),
            q=self.config.policy.q,
            pending=np.array(pending, dtype=np.intp),
            outputs=outputs if self._predicted else None,
        )

    def _record_model(self, model: DKLModel) -> None:
        """Journal what the fit behind the coming decision chose and how well calibrated its
        leave-one-out predictions of the measured points are (a ``model`` event); warn when
        they are clearly off."""
        record = getattr(self.learner, "last_record", None)
        if record is None:  # one model: its own calibration
            fit = calibration(leave_one_out(model)).to_dict()
            name = self.config.model.family
            record = {"scores": {name: fit["score"]}, "weights": {name: 1.0}, "chosen": name, **fit}
        record = {
            "decision": len(self.decisions),
            "n_train": len(self.ok_measurements()),
            "model_kind": self.config.model.family,
            **record,
        }
        self.journal.log_event("model", **record)
        message = flag_message(record)
        if message is not None and message.split(":")[-1] != self._calibration_said:
            log.warning("model %s, %d points: %s", record["chosen"], record["n_train"], message)
        elif message is None and self._calibration_said:
            log.info("model %s, %d points: calibrated again", record["chosen"], record["n_train"])
        self._calibration_said = message.split(":")[-1] if message else None
        self._publish("model", **record)

    def checkpoint_model(self, decision: int, state: bytes) -> DKLModel:
        """The scalar's model fitted behind ``decision``, rebuilt from its checkpoint
        ``state`` (the journal's ``checkpoints``) without any training: the checkpoint's
        weights conditioned on the measurements that fit saw (the first ``n_train``
        successful ones). The learner's own state is restored afterwards."""
        saved = self.learner.state_bytes()
        try:
            self.learner.load_state_bytes(state)
            with self.learner.frozen():
                return self.fit_outputs(self.decisions[decision].n_train)["scalar"]
        finally:
            self.learner.load_state_bytes(saved)

    def predict(self, *, observation_noise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Refit on all measurements; the scalar's predicted mean and std at every candidate,
        each (N,): the std of the noise-free scalar, or with ``observation_noise`` that of a
        measurement. The learner's state is restored afterwards, so a later decision is
        unaffected."""
        return self.predict_outputs(observation_noise=observation_noise)["scalar"]

    def predict_outputs(
        self, *, observation_noise: bool = False
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """As `predict`, for every output by name (`output_names`); NaN for an output with
        fewer than 2 finite values measured."""
        saved = self.learner.state_bytes()
        try:
            outputs = self.fit_outputs()
        finally:
            self.learner.load_state_bytes(saved)
        nan = np.full(len(self.candidates), math.nan)
        return {
            name: posterior_mean_std(
                outputs[name], self.candidates, observation_noise=observation_noise
            )
            if name in outputs
            else (nan, nan.copy())
            for name in self.output_names
        }

    def fit_outputs(self, n: int | None = None) -> dict[str, DKLModel]:
        """Fit the learner to every successful measurement (`training_data`), or to the first
        ``n``; the model of each output with at least 2 finite values, by name, the scalar's
        first. `model` is then the model of them all."""
        X, Y = self.training_data()
        X, Y = X[:n], Y.reshape(len(X), -1)[:n]
        fitted = [j for j, column in enumerate(Y.T) if int(torch.isfinite(column).sum()) >= 2]
        fitted = fitted if 0 in fitted else [0]  # the scalar's, or the learner says why not
        self.model = self.learner.fit(X, Y[:, fitted])
        return dict(zip([self.output_names[j] for j in fitted], members(self.model), strict=True))

    # -- measuring ----------------------------------------------------------------------------

    def target(self, decision: DecisionRecord) -> tuple[float, float]:
        """Where to send the probe for ``decision``: its position plus the estimated drift."""
        dx, dy = self.drift_px
        return decision.x + dx, decision.y + dy

    def _submit(
        self, decision: DecisionRecord, attempt: int, instrument: ThreadPoolExecutor | None
    ) -> _InFlight:
        """Start measuring ``decision`` (in ``instrument``'s thread, or here and now)."""
        x, y = self.target(decision)
        now = time.time()
        idle = None if self._last_done is None or instrument is None else now - self._last_done
        if (why := self.description.check_position(x, y)) is not None:  # drifted out of reach
            result: Future = Future()
            result.set_result((None, f"{UNREACHABLE}: {why}", now))
        elif instrument is None:
            result = Future()
            result.set_result(self._move_and_acquire(x, y))
        else:
            result = instrument.submit(self._move_and_acquire, x, y)
        return _InFlight(decision, attempt, x, y, now, idle, result)

    def _move_and_acquire(self, x: float, y: float) -> tuple[Acquisition | None, str | None, float]:
        """Move to ``(x, y)`` and acquire, in one request; an instrument error is returned."""
        assert self.client is not None
        try:
            (acq,) = self.client.measure([(x, y)], self.config.dwell_s)
        except (InstrumentError, InstrumentTimeout, ProtocolError) as exc:
            return None, str(exc), time.time()
        return acq, None, time.time()

    def _finish(self, flight: _InFlight) -> Measurement:
        """Wait for ``flight``, scalarize, journal (committed before returning) and report."""
        acq, error, t_done = flight.result.result()
        self._last_done = t_done
        d = flight.decision
        spectrum = np.zeros(0, np.float32) if acq is None else acq.spectrum
        if acq is not None:
            error = _spectrum_problem(spectrum, self.description.saturation_level)
        scalar = float(self.scalarizer(spectrum, self.axis)) if error is None else math.nan
        if error is None and not math.isfinite(scalar):
            log.warning("non-finite scalar at (x=%g, y=%g): journaled, not fitted", d.x, d.y)
        runner = self.config.runner
        status = "ok"
        if error is not None:
            retry = (
                runner.on_failure == "retry"
                and flight.attempt < runner.retries
                and not error.startswith(UNREACHABLE)
            )
            status = "retried" if retry else "failed"
            log.warning("measurement at (x=%.1f, y=%.1f) %s: %s", flight.x, flight.y, status, error)
        m = Measurement(
            seq=len(self.history),
            decision=d.number,
            kind=d.kind,
            candidate=d.candidate,
            x=flight.x,
            y=flight.y,
            x_read=acq.x if acq is not None else math.nan,
            y_read=acq.y if acq is not None else math.nan,
            dwell_s=acq.dwell_s if acq is not None else self.config.dwell_s,
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
        self.journal.record(m)  # on disk before the next move is asked for
        self.history.append(m)
        best = self.best()
        fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "spectrum"}
        if self._predicted:
            fields["outputs"] = dict(zip(self.output_names, self.outputs(m).tolist(), strict=True))
        self._publish("measurement", **fields, best=best.scalar if best else None)
        return m

    # -- drift --------------------------------------------------------------------------------

    def _maybe_correct_drift(self) -> None:
        every = self.config.runner.drift_every
        if every and len(self.history) - self._drift_checked_at >= every:
            self.correct_drift()

    def correct_drift(self) -> tuple[float, float]:
        """Re-acquire the overview, register it to the reference one by phase correlation and
        shift every later move by the specimen's displacement ``(dx, dy)``, overview pixels;
        journaled (the image as ``overview.N``, the shift as a ``drift`` event)."""
        from skimage.registration import phase_cross_correlation

        self._require_instrument()
        assert self.client is not None
        image = np.asarray(self.client.get_overview(), dtype=np.float64)
        self._last_done = time.time()
        if image.shape != self.overview.shape:
            raise CampaignError(
                f"the re-acquired overview is {image.shape}, the reference {self.overview.shape}"
            )
        shift, error, _ = phase_cross_correlation(self.overview, image, upsample_factor=20)
        dy, dx = -float(shift[0]), -float(shift[1])  # the content moved by (dx, dy)
        n = len(self.journal.events("drift")) + 1
        with self.journal.transaction():
            self.journal.set_array(f"overview.{n}", image.astype(np.float32))
            self.journal.log_event(
                "drift", dx=dx, dy=dy, error=float(error), after_seq=len(self.history), image=n
            )
        self._set_drift((dx, dy))
        self._drift_checked_at = len(self.history)
        log.info("drift: the specimen moved by (dx=%.2f, dy=%.2f) px", dx, dy)
        self._publish("drift", dx=dx, dy=dy, after_seq=len(self.history))
        return dx, dy

    def _publish(self, event: str, **fields: Any) -> None:
        if self.publisher is not None:
            self.publisher.publish(event, **fields)


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
    exposed = _exposed_s(history)
    dose_left = None if total is None or dose_per_s is None else total - dose_per_s * exposed
    return {
        "decisions": max(n_planned - len(finished), 0),
        "dose_s": None if dose is None else max(dose, 0.0),
        "wall_s": None if wall is None else max(wall, 0.0),
        "dose": None if dose_left is None else max(dose_left, 0.0),
    }


def _exposed_s(history: list[Measurement]) -> float:
    """Seconds of exposure of every attempt in ``history`` that may have exposed: all but
    those never moved to (drifted out of reach)."""
    return sum(
        m.dwell_s for m in history if not (m.error is not None and m.error.startswith(UNREACHABLE))
    )


def _warm_up(candidates: torch.Tensor) -> None:
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


def _spectrum_problem(spectrum: np.ndarray, saturation_level: float | None) -> str | None:
    """Why ``spectrum`` cannot be used, or None."""
    if not np.all(np.isfinite(spectrum)):
        return f"{int(np.sum(~np.isfinite(spectrum)))} non-finite channels"
    if saturation_level is not None and spectrum.size and spectrum.max() >= saturation_level:
        return f"saturated: {int(np.sum(spectrum >= saturation_level))} channels at full scale"
    return None


def _check_same_instrument(journaled: InstrumentDescription, now: InstrumentDescription) -> None:
    for key in ("name", "overview_shape", "pixel_size", "spectral_axis"):
        if getattr(journaled, key) != getattr(now, key):
            raise CampaignError(
                f"the instrument differs from the journal's: {key} was "
                f"{getattr(journaled, key)!r}, is {getattr(now, key)!r}"
            )


def _embedding(
    config: Config,
    patches: np.ndarray,
    journal: Journal,
    path: str | Path | None,
    resuming: bool,
) -> ModelEmbedding:
    """The embedding ``config.embedding`` asks for: read from its file (or, resuming, from
    ``path``), or trained on the standardised candidate ``patches`` (N, size, size) and, with
    ``path``, saved there."""
    from .embeddings import EmbeddingConfig, ModelEmbedding, TrainerConfig, build_embedding

    section = config.embedding
    if section.load is not None:
        embedding = ModelEmbedding.load(section.load)
        log.info("embedding read from %s", section.load)
        return embedding
    if resuming:
        if path is None or not Path(path).is_file():
            raise CampaignError(
                f"the campaign's embedding {path} is missing: the model's inputs cannot be rebuilt"
            )
        return ModelEmbedding.load(path)
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


def check_config_against(config: Config, description: InstrumentDescription) -> None:
    """Refuse, with a `ConfigError` naming the key, what this instrument cannot do."""
    if (why := description.check_dwell(config.dwell_s)) is not None:
        raise ConfigError("dwell_s", f"{why} of {description.name}")
    if config.dose.limited:
        if description.dose_per_s is None:
            raise ConfigError(
                "dose",
                f"{description.name} keeps no dose account (it does not describe dose_units: "
                "a driver before protocol 1.2?), so a dose budget cannot be enforced; remove "
                "it, or budget seconds of exposure with budget.dose_s",
            )
        per_point = config.dwell_s * description.dose_per_s
        limit = config.dose.per_point
        if limit is not None and per_point > limit * (1 + 1e-9):
            units = description.dose_units
            raise ConfigError(
                "dose.per_point",
                f"a point of dwell_s {config.dwell_s:g} s delivers {per_point:g} {units} on "
                f"{description.name}, over the {limit:g} {units} allowed: shorten dwell_s "
                f"to at most {limit / description.dose_per_s:g} s",
            )
    axis = description.spectral_axis
    check_scalarizer(config.scalarizer, axis.values(), axis.units)
    for name, scalarizer in config.predict.items():
        check_scalarizer(scalarizer, axis.values(), axis.units, key=f"predict.{name}")
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
