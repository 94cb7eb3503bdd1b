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

From another thread (a `dklscope.campaign.ControlServer`, a signal handler) a run can be paused
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
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from botorch.models import ModelListGP

from dklscope.config import Config
from dklscope.drivers import (
    Acquisition,
    InstrumentError,
    InstrumentTimeout,
    MicroscopeClient,
    ProtocolError,
)
from dklscope.embeddings.patches import grid_patches
from dklscope.model.dkl import DKLModel
from dklscope.model.family import Learner, build_learner, model_inputs
from dklscope.model.policies import Policy, PolicyState, build_policy
from dklscope.model.scalarizers import Scalarizer, build_scalarizer

from .budget import budget_left, dose_delivered, dose_per_point, dose_refusal
from .decisions import Decider, warm_up
from .drift import Drift
from .journal import EMBEDDING_NAME, DecisionRecord, Journal, Measurement
from .measure import UNREACHABLE, InFlight, measurement
from .park import HEARTBEAT_LOST, park, park_reason
from .resume import (
    CampaignError,
    campaign_embedding,
    check_config_against,
    instrument_and_overview,
    read_recorded,
    record_start,
)

if TYPE_CHECKING:
    from dklscope.embeddings import ModelEmbedding

    from .progress import ProgressPublisher

log = logging.getLogger(__name__)


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
        self.description, self.overview = instrument_and_overview(journal, client)
        check_config_against(config, self.description)
        self.axis = self.description.spectral_axis.values()
        self.scalarizer: Scalarizer = scalarizer or build_scalarizer(config.scalarizer)
        # The outputs the model learns: the scalar maximised, then config.predict's.
        self.output_names = ("scalar", *config.predict)
        self.decider = Decider(self)
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
            self.embedding = campaign_embedding(config, scaled, journal, embedding_path, resuming)
        self.positions = np.stack([self.patches.cols, self.patches.rows], axis=1).astype(float)
        inputs, network = model_inputs(config.model, scaled, self.positions, self.embedding)
        self.candidates = inputs.tensor
        self.policy: Policy = policy or build_policy(config.policy)
        self.learner: Learner = learner or build_learner(
            config.model, inputs, network, seed=config.seed
        )
        self.model: DKLModel | ModelListGP | None = None  # the last fitted, of every output
        if client is not None and self.policy.needs_model:
            warm_up(self.candidates)

        if not resuming:
            record_start(journal, config, config_text, self.description, self.overview)
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
        self.drift = Drift(self.description, self.positions, journal)
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
        config, journal = read_recorded(folder)
        return cls(config, None, journal, embedding_path=Path(folder) / EMBEDDING_NAME)

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
        """What the model learns from (`Decider.training_data`)."""
        return self.decider.training_data()

    def outputs(self, m: Measurement) -> np.ndarray:
        """The value of every output at ``m`` (`Decider.outputs`)."""
        return self.decider.outputs(m)

    def best(self) -> Measurement | None:
        """The measurement with the largest scalar so far."""
        return max(self.ok_measurements(), key=lambda m: m.scalar, default=None)

    def unavailable(self) -> np.ndarray:
        """(N,) bool: candidates that may not be chosen now: decided already, or where the probe
        may not go (outside the limits or in a forbidden region, drift correction included)."""
        return self.taken | self.drift.out_of_reach

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
        """The dose one measurement delivers, in the instrument's ``dose_units``; None if the
        instrument keeps no dose account (`budget.dose_per_point`)."""
        return dose_per_point(self.config, self.description)

    def dose_delivered(self) -> float | None:
        """The dose of every attempt journaled so far, in ``dose_units``; None without a dose
        account (`budget.dose_delivered`)."""
        return dose_delivered(self.description, self.history)

    def _dose_refusal(self) -> str | None:
        """Why the next measurement may not be made under ``config.dose.total``, or None
        (`budget.dose_refusal`). Asked before every move (a retry's too), never after."""
        return dose_refusal(self.config, self.description, self.history)

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
        self.publish("started", n_planned=self.n_planned, resumed=bool(self.history))
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
        self._park(park_reason(reason, self._stop_requested), reason)
        self._stopped(reason)
        log.info("campaign stopped: %s", reason)
        return reason

    def _park(self, reason: str, detail: str) -> None:
        """Park the beam and journal it (`park.park`, which never raises), then publish it:
        ``reason`` in a word (`park_reason`, or ``pause``), ``detail`` the stop reason."""
        if self.client is None:
            return
        fields = park(self.client, self.journal, reason, detail, len(self.history))
        self.publish("parked", **fields)

    def _stopped(self, reason: str, *, error: bool = False) -> None:
        self._state = "stopped"
        self.stop_reason = reason
        self.journal.log_event(
            "run_stopped", reason=reason, measurements=len(self.history), error=error
        )
        self.publish("stopped", reason=reason, n_measurements=len(self.history), error=error)

    def _run_loop(self, on_step: Callable[[Measurement], None] | None) -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="dklscope-instrument") as instrument:
            flight: InFlight | None = None
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
                if self.config.runner.pipeline and not self._queue and self.decider.may_decide():
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
        self.publish("paused", n_measurements=len(self.history))
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
            self.publish("resumed", paused_s=paused_s)
            log.info("resumed after a pause of %.1f s", paused_s)

    def _require_instrument(self) -> None:
        if self.client is None:
            raise CampaignError("this campaign was read from its journal: it has no instrument")

    # -- deciding -----------------------------------------------------------------------------

    def _decide(self, in_flight: DecisionRecord | None) -> None:
        """Choose the next point(s) (`Decider.decide`: journaled, with the learner's state) and
        queue them; ``in_flight`` is being measured and counts as pending. May set
        `stop_reason` instead (``stop.max_std``)."""
        records = self.decider.decide(in_flight)
        self.decisions += records
        self._queue += records
        self.taken[[r.candidate for r in records]] = True
        for record in records:
            self.publish("decision", **dataclasses.asdict(record))

    def policy_state(
        self, rng: np.random.Generator | None = None, pending: list[int] | None = None
    ) -> PolicyState:
        """What the policy sees now, the model refitted if it needs one (`Decider.policy_state`)."""
        return self.decider.policy_state(rng, pending)

    def checkpoint_model(self, decision: int, state: bytes) -> DKLModel:
        """The scalar's model fitted behind ``decision``, rebuilt from its checkpoint ``state``
        without any training (`Decider.checkpoint_model`)."""
        return self.decider.checkpoint_model(decision, state)

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
        fewer than 2 finite values measured (`Decider.predict_outputs`)."""
        return self.decider.predict_outputs(observation_noise=observation_noise)

    def fit_outputs(self, n: int | None = None) -> dict[str, DKLModel]:
        """Fit the learner to every successful measurement, or to the first ``n``; the model of
        each output, by name (`Decider.fit_outputs`). `model` is then the model of them all."""
        return self.decider.fit_outputs(n)

    # -- measuring ----------------------------------------------------------------------------

    def target(self, decision: DecisionRecord) -> tuple[float, float]:
        """Where to send the probe for ``decision``: its position plus the estimated drift."""
        dx, dy = self.drift.px
        return decision.x + dx, decision.y + dy

    def _submit(
        self, decision: DecisionRecord, attempt: int, instrument: ThreadPoolExecutor | None
    ) -> InFlight:
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
        return InFlight(decision, attempt, x, y, now, idle, result)

    def _move_and_acquire(self, x: float, y: float) -> tuple[Acquisition | None, str | None, float]:
        """Move to ``(x, y)`` and acquire, in one request; an instrument error is returned."""
        assert self.client is not None
        try:
            (acq,) = self.client.measure([(x, y)], self.config.dwell_s)
        except (InstrumentError, InstrumentTimeout, ProtocolError) as exc:
            return None, str(exc), time.time()
        return acq, None, time.time()

    def _finish(self, flight: InFlight) -> Measurement:
        """Wait for ``flight``, scalarize, journal (committed before returning) and report."""
        acq, error, t_done = flight.result.result()
        self._last_done = t_done
        m = measurement(
            flight,
            acq,
            error,
            t_done,
            seq=len(self.history),
            config=self.config,
            description=self.description,
            scalarizer=self.scalarizer,
            axis=self.axis,
        )
        self.journal.record(m)  # on disk before the next move is asked for
        self.history.append(m)
        best = self.best()
        fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "spectrum"}
        if self.config.predict:
            fields["outputs"] = dict(zip(self.output_names, self.outputs(m).tolist(), strict=True))
        self.publish("measurement", **fields, best=best.scalar if best else None)
        return m

    # -- drift --------------------------------------------------------------------------------

    def _maybe_correct_drift(self) -> None:
        every = self.config.runner.drift_every
        if every and len(self.history) - self.drift.checked_at >= every:
            self.correct_drift()

    def correct_drift(self) -> tuple[float, float]:
        """Re-acquire the overview, register it to the reference one by phase correlation and
        shift every later move by the specimen's displacement ``(dx, dy)``, overview pixels;
        journaled (the image as ``overview.N``, the shift as a ``drift`` event)."""
        self._require_instrument()
        assert self.client is not None
        image = np.asarray(self.client.get_overview(), dtype=np.float64)
        self._last_done = time.time()
        dx, dy = self.drift.correct(self.overview, image, len(self.history))
        self.publish("drift", dx=dx, dy=dy, after_seq=len(self.history))
        return dx, dy

    def publish(self, event: str, **fields: Any) -> None:
        """Send the progress event ``event`` with ``fields``, if a publisher is attached."""
        if self.publisher is not None:
            self.publisher.publish(event, **fields)
