"""Follow a campaign while it runs: what the live view (`dklscope.observe.view`) shows, kept
current.

A `LiveCampaign` holds the campaign as far as it is known: the overview, the measurements and
decisions, the newest model's predicted maps, the state of the run and the budget left. A
follower fills it from a thread of its own:

- `JournalFollower` reads the campaign's folder: its journal (with the newest model record:
  the model chosen and its calibration, `dklscope.observe.model_records`), opened read-only (the
  campaign is never held up; each poll reads what is new in one short read transaction). The
  progress events (``runner.publish``, found in the journal's ``run_started`` event) only wake it
  up, so a page shows a measurement milliseconds after it is journaled; without them it polls. The
  predicted maps are computed here, from the newest model checkpoint of the journal (the
  campaign's own model, rebuilt without training: `Campaign.checkpoint_model`), at each model
  step but at most once every ``maps_every_s``, so watching costs the campaign little: no
  work in its process, a bounded share of the CPU in this one.
- `EventFollower` listens to the progress events alone (a campaign whose folder is not at
  hand): positions, scalars, latencies, the state; no overview, spectra or maps, and only from
  the moment it connected.

With a `ControlClient` either also asks the controller for its status every second, which
tells ``pausing`` and ``stopping`` apart and notices a controller that no longer answers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from dklscope.campaign.control import ControlClient, ControlError
from dklscope.campaign.journal import (
    JOURNAL_NAME,
    DecisionRecord,
    Journal,
    JournalError,
    Measurement,
)
from dklscope.campaign.progress import TOPIC
from dklscope.drivers.security import ClientKeys, secure_client_socket

from .model_records import EVENT_KIND, ModelRecord

if TYPE_CHECKING:
    from dklscope.campaign.loop import Campaign

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often the journal is read when no event wakes the follower up
STATUS_S = 1.0  # how often the controller is asked for its status (with a control client)
STATUS_TIMEOUT_S = 0.3  # and how long its reply is waited for
MAPS_EVERY_S = 1.0  # the least time between two computations of the predicted maps


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The model fitted behind decision ``decision`` on ``n_train`` measurements: predicted
    mean and standard deviation of the scalar, each of shape ``grid_shape`` (rows, cols of
    the candidate grid)."""

    decision: int
    n_train: int
    mean: np.ndarray
    std: np.ndarray


@dataclasses.dataclass
class LiveCampaign:
    """The campaign as far as a follower knows it. Followers change it under ``lock`` and
    then call `changed`; readers take ``lock`` to copy what they need, and look at
    ``version`` to know whether anything changed.

    ``state``: ``waiting`` (no campaign journaled yet), ``running``, ``pausing``, ``paused``,
    ``resuming``, ``stopping``, ``stopped`` (``reason`` says why), ``error`` (an instrument
    failure ended the run) or ``unknown`` (events only, none received yet).
    """

    title: str
    source: str  # "journal" or "events"
    state: str = "waiting"
    reason: str | None = None
    t_state: float = dataclasses.field(default_factory=time.time)  # Unix s of the last change
    t_activity: float | None = None  # Unix s of the last measurement or decision
    controller: str | None = None  # "answers", "silent" (a control client got no reply)
    control_address: str | None = None
    overview: np.ndarray | None = None  # (rows, cols)
    grid_shape: tuple[int, int] | None = None  # the candidate grid's (rows, cols)
    grid_extent: tuple[float, float, float, float] | None = None  # `report.grid_extent`
    about: str = ""  # instrument, policy, scalarizer and dwell, in words
    scalar_name: str = "scalar"
    window: tuple[float, float] | None = None  # the scalarizer's, spectral axis units
    reference_window: tuple[float, float] | None = None
    axis: np.ndarray | None = None  # the spectral axis, (channels,)
    axis_units: str = ""
    spectrum_units: str = ""
    n_planned: int | None = None
    budget_left: dict[str, Any] | None = None  # `campaign.budget_left`
    measurements: list[Measurement] = dataclasses.field(default_factory=list)
    decisions: list[DecisionRecord] = dataclasses.field(default_factory=list)
    prediction: Prediction | None = None
    model: ModelRecord | None = None  # the newest model record (`dklscope.observe.model_records`)
    version: int = 0  # counts the changes
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def set_state(self, state: str, reason: str | None = None, t: float | None = None) -> None:
        if (state, reason) != (self.state, self.reason):
            self.state, self.reason, self.t_state = state, reason, t or time.time()

    def pending(self) -> list[DecisionRecord]:
        """Decisions made but not yet measured to the end: the next points."""
        finished = {m.decision for m in self.measurements if m.status != "retried"}
        return [d for d in self.decisions if d.number not in finished]

    def changed(self) -> None:
        """Count a change (call without holding ``lock``)."""
        with self.lock:
            self.version += 1


class _Subscriber:
    """A SUB socket on the progress events at ``address`` (CURVE with ``keys``)."""

    def __init__(self, context: zmq.Context, address: str, keys: ClientKeys | None) -> None:
        self.address = address
        self.socket = context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            secure_client_socket(self.socket, keys)
        self.socket.setsockopt(zmq.SUBSCRIBE, TOPIC)
        self.socket.connect(address)

    def receive(self, timeout_s: float) -> list[dict[str, Any]]:
        """The events that arrive within ``timeout_s`` (all that are queued once one has)."""
        events = []
        if self.socket.poll(int(1000 * timeout_s)):
            while self.socket.poll(0):
                frames = self.socket.recv_multipart()
                try:
                    events.append(json.loads(frames[-1]))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    log.warning("ignored a malformed progress event from %s", self.address)
        return events

    def close(self) -> None:
        self.socket.close()


def connectable(address: str) -> str:
    """``address`` as a client reaches it: a socket bound to every interface (``0.0.0.0``,
    ``*``) is reached on loopback."""
    for anywhere in ("//0.0.0.0:", "//*:", "//[::]:"):
        address = address.replace(anywhere, "//127.0.0.1:")
    return address


class _Follower:
    """What both followers share: the thread, the control client, the event subscription."""

    def __init__(
        self,
        live: LiveCampaign,
        *,
        control: ControlClient | None = None,
        events_keys: ClientKeys | None = None,
    ) -> None:
        self.live, self.control, self.events_keys = live, control, events_keys
        self._context = zmq.Context()
        self._subscriber: _Subscriber | None = None
        self._next_status = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Follow from a thread until `close`."""
        self._thread = threading.Thread(target=self._loop, name="dklscope-follow", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last_error = None
        while not self._stop.is_set():
            try:
                self.poll()
                last_error = None
            except Exception as exc:  # a follower keeps following; the page shows what it has
                if repr(exc) != last_error:  # once, not every POLL_S while it lasts
                    log.exception("following the campaign")
                last_error = repr(exc)
                self._stop.wait(POLL_S)

    def poll(self) -> None:
        """Wait for news (at most `POLL_S`) and take it into `live`."""
        raise NotImplementedError

    def _subscribe(self, address: str | None) -> None:
        if address is not None:
            address = connectable(address)
        if self._subscriber is not None and self._subscriber.address == address:
            return
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None
        if address is not None:
            self._subscriber = _Subscriber(self._context, address, self.events_keys)

    def _wait_for_events(self) -> list[dict[str, Any]]:
        if self._subscriber is None:
            self._stop.wait(POLL_S)
            return []
        return self._subscriber.receive(POLL_S)

    def _ask_status(self) -> dict[str, Any] | None:
        """The controller's status, every `STATUS_S` at most; None: not asked, or no reply."""
        live = self.live
        if self.control is None or time.monotonic() < self._next_status:
            return None
        self._next_status = time.monotonic() + STATUS_S
        if live.control_address is None:
            return None
        try:
            status = self.control.request(
                "status", address=live.control_address, timeout_s=STATUS_TIMEOUT_S
            )
        except ControlError:
            live.controller = "silent"
            return None
        live.controller = "answers"
        return status

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._subscriber is not None:
            self._subscriber.close()
        self._context.term()


class JournalFollower(_Follower):
    """Follows the campaign recorded in ``folder`` (see the module's documentation)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        control: ControlClient | None = None,
        events_keys: ClientKeys | None = None,
        maps_every_s: float = MAPS_EVERY_S,
    ) -> None:
        folder = Path(folder)
        super().__init__(
            LiveCampaign(title=str(folder), source="journal"),
            control=control,
            events_keys=events_keys,
        )
        self.folder, self.maps_every_s = folder, maps_every_s
        self._next_maps = 0.0  # time.monotonic() from which the maps may be computed again
        self.campaign: Campaign | None = None
        self._n_events = 0
        self._n_models = 0  # model records read
        self._checkpoint = -1  # the newest checkpoint's decision taken into account
        self._run: dict[str, Any] = {}  # the run's start: t, paused_s so far, t_paused
        self._open()

    def _open(self) -> None:
        """Read the campaign once its journal holds one; until then the state is waiting.
        A journal that cannot be read raises `JournalError` or `CampaignError`."""
        from dklscope.campaign.loop import Campaign

        path = self.folder / JOURNAL_NAME
        if not path.is_file():
            return
        try:
            with Journal(path, read_only=True) as journal:
                if journal.is_new:
                    return
        except JournalError as exc:
            if "not a dklscope journal (yet)" in str(exc):
                return
            raise
        campaign = Campaign.from_journal(self.folder)
        self.campaign = campaign
        live = self.live
        with live.lock:
            self._describe(campaign, live)
        self._read()
        log.info("following %s: %d measurements so far", self.folder, len(campaign.history))

    def _describe(self, campaign: Campaign, live: LiveCampaign) -> None:
        from .report import grid_extent

        d, scalarizer = campaign.description, campaign.config.scalarizer
        live.overview = np.asarray(campaign.overview, dtype=np.float64)
        live.grid_shape = campaign.patches.grid_shape
        live.grid_extent = grid_extent(campaign)
        live.scalar_name = scalarizer.kind
        window = (
            ""
            if scalarizer.window is None
            else " in [{:g}, {:g}] {}".format(*scalarizer.window, d.spectral_axis.units)
        )
        live.about = (
            f"{d.name} · policy {campaign.config.policy.kind} · {scalarizer.kind}{window} · "
            f"dwell {campaign.config.dwell_s:g} s"
        )
        live.window = scalarizer.window
        live.reference_window = scalarizer.reference_window
        live.axis = np.asarray(campaign.axis, dtype=np.float64)
        live.axis_units, live.spectrum_units = d.spectral_axis.units, d.spectrum_units
        live.n_planned = campaign.n_planned
        live.measurements, live.decisions = [], []
        campaign.history, campaign.decisions = [], []  # read again by `_read`, in one snapshot

    def poll(self) -> None:
        if self.campaign is None:
            self._open()
            if self.campaign is None:
                self._stop.wait(POLL_S)
                return
        self._wait_for_events()  # only a wake-up: the journal has everything
        self._read()

    def _read(self) -> None:
        """Take what the journal holds beyond what was read before into `live`."""
        campaign, live = self.campaign, self.live
        assert campaign is not None
        journal = campaign.journal
        with journal.transaction():  # one state of the journal, however the campaign goes on
            measurements = journal.measurements(since=len(campaign.history))
            decisions = journal.decisions(since=len(campaign.decisions))
            events = journal.events(since=self._n_events)
            models = journal.events(EVENT_KIND, since=self._n_models)
            checkpoint = None
            if time.monotonic() >= self._next_maps:  # else taken by a later poll
                checkpoint = journal.newest_checkpoint(after=self._checkpoint)
        status = self._ask_status()
        if not (measurements or decisions or events or checkpoint or status):
            self._update_budget()
            return
        campaign.history += measurements
        campaign.decisions += decisions
        self._n_events += len(events)
        self._n_models += len(models)
        model = _newest_model(models)
        with live.lock:
            if model is not None:
                live.model = model
            live.measurements += measurements
            live.decisions += decisions
            activity = [m.t_done for m in measurements] + [d.t_decided for d in decisions]
            activity = [t for t in activity if math.isfinite(t)]
            if activity:
                live.t_activity = max(activity)
            for event in events:
                self._take_event(event)
            if status is not None:
                _take_status(live, status)
        self._update_budget()
        live.changed()  # the measurements first: the maps take longer
        if checkpoint is not None:
            try:
                self._predict(*checkpoint)
            except Exception as exc:  # the page goes on without these maps
                log.warning("no maps for decision %d: %s", checkpoint[0], exc)
                self._checkpoint = checkpoint[0]
            live.changed()

    def _take_event(self, event: dict[str, Any]) -> None:
        live, kind, t = self.live, event["kind"], event["t"]
        if kind == "run_started":
            live.set_state("running", t=t)
            live.control_address = event.get("control")
            self._run = {"t": t, "paused_s": 0.0, "t_paused": None}
            self._subscribe(event.get("publish"))
        elif kind == "paused":
            live.set_state("paused", t=t)
            self._run["t_paused"] = t
        elif kind == "resumed":
            live.set_state("running", t=t)
            self._run["paused_s"] = self._run.get("paused_s", 0.0) + event["paused_s"]
            self._run["t_paused"] = None
        elif kind == "run_stopped":
            live.set_state("error" if event.get("error") else "stopped", event["reason"], t=t)
            live.control_address = None
            self._run = {}
            self._subscribe(None)

    def _update_budget(self) -> None:
        from dklscope.campaign.budget import budget_left

        campaign, live, run = self.campaign, self.live, self._run
        assert campaign is not None
        run_s = None
        if run:
            end = run["t_paused"] or time.time()
            run_s = end - run["t"] - run["paused_s"]
        per_s = campaign.description.dose_per_s
        left = budget_left(
            campaign.config, campaign.n_planned, campaign.history, run_s, dose_per_s=per_s
        )
        with live.lock:
            live.budget_left = left

    def _predict(self, decision: int, state: bytes) -> None:
        """The maps of the model behind ``decision``, from its checkpoint ``state``."""
        from dklscope.model.dkl import posterior_mean_std

        campaign = self.campaign
        assert campaign is not None
        started = time.perf_counter()
        model = campaign.checkpoint_model(decision, state)
        mean, std = posterior_mean_std(model, campaign.candidates)
        shape = campaign.patches.grid_shape
        prediction = Prediction(
            decision=decision,
            n_train=campaign.decisions[decision].n_train,
            mean=mean.reshape(shape),
            std=std.reshape(shape),
        )
        self._checkpoint = decision
        self._next_maps = time.monotonic() + self.maps_every_s
        with self.live.lock:
            self.live.prediction = prediction
        log.debug("maps of decision %d in %.3f s", decision, time.perf_counter() - started)

    def close(self) -> None:
        super().close()
        if self.campaign is not None:
            self.campaign.journal.close()


class EventFollower(_Follower):
    """Follows the progress events published at ``address`` (see the module's documentation);
    ``control_address``: the controller's control socket, for ``control``."""

    def __init__(
        self,
        address: str,
        *,
        control: ControlClient | None = None,
        control_address: str | None = None,
        events_keys: ClientKeys | None = None,
    ) -> None:
        super().__init__(
            LiveCampaign(title=address, source="events", state="unknown"),
            control=control,
            events_keys=events_keys,
        )
        self.live.control_address = control_address
        self._subscribe(address)

    def poll(self) -> None:
        events = self._wait_for_events()
        status = self._ask_status()
        if not events and status is None:
            return
        live = self.live
        with live.lock:
            for event in events:
                _take_progress_event(live, event)
            if status is not None:
                _take_status(live, status)
        live.changed()


_MEASUREMENT_FIELDS = {f.name: f.type for f in dataclasses.fields(Measurement)}
_DECISION_FIELDS = {f.name for f in dataclasses.fields(DecisionRecord)}


def _newest_model(events: list[dict[str, Any]]) -> ModelRecord | None:
    """The newest valid model record among ``events`` (a malformed one is logged, skipped)."""
    for event in reversed(events):
        try:
            return ModelRecord.from_event(event)
        except ValueError as exc:
            log.warning("%s: not shown", exc)
    return None


def _take_progress_event(live: LiveCampaign, event: dict[str, Any]) -> None:
    """Take one progress event (docs/journal.md) into ``live``."""
    kind, t = event.get("event"), event.get("t", time.time())
    if kind == "started":
        live.set_state("running", t=t)
        live.n_planned = event.get("n_planned")
    elif kind == "decision":
        live.decisions.append(
            DecisionRecord(**{k: v for k, v in event.items() if k in _DECISION_FIELDS})
        )
        live.t_activity = t
    elif kind == "measurement":
        fields: dict[str, Any] = {"spectrum": np.zeros(0, np.float32)}  # events carry none
        for name, type_ in _MEASUREMENT_FIELDS.items():
            if name != "spectrum":
                value = event.get(name)
                fields[name] = math.nan if value is None and type_ == "float" else value
        live.measurements.append(Measurement(**fields))
        live.t_activity = t
        if live.n_planned is not None:
            finished = {m.decision for m in live.measurements if m.status != "retried"}
            live.budget_left = {"decisions": max(live.n_planned - len(finished), 0)}
    elif kind == "paused":
        live.set_state("paused", t=t)
    elif kind == "resumed":
        live.set_state("running", t=t)
    elif kind == "stopped":
        live.set_state("error" if event.get("error") else "stopped", event.get("reason"), t=t)


def _take_status(live: LiveCampaign, status: dict[str, Any]) -> None:
    """Take the controller's status (finer than the journal: pausing, stopping) into ``live``."""
    state = status.get("state")
    if state in ("pausing", "resuming", "stopping", "paused", "running"):
        live.set_state(state)
    if status.get("n_planned") is not None:
        live.n_planned = status["n_planned"]
