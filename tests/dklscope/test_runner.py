"""The campaign runner: resume after a kill, Ctrl-C, pipelining, drift, failures, stop criteria,
progress events and the Python API, on the simulated microscope over ZeroMQ."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zmq

from dklscope.campaign.instruments import simulated_campaign
from dklscope.campaign.journal import Journal
from dklscope.campaign.progress import ProgressPublisher
from dklscope.cli import main
from dklscope.config import parse_config
from dklscope.model.policies import Choice

TINY = """
seed: 5
dwell_s: 0.02
instrument:
  simulator: {shape: [32, 32], seed: 2, noise: true}
budget: {seed_points: 5, steps: 15}
patches: {size: 8}
model: {kind: dkl, hidden: [16], first_fit_iterations: 60, refit_iterations: 10}  # light
scalarizer: {window: [1.05, 1.35]}
"""


def tiny(extra: str = ""):
    return parse_config(TINY + extra)


@contextmanager
def campaign_on(config, journal=":memory:", **objects):
    """A campaign of ``config`` on a fresh simulator (as after a restart)."""
    with simulated_campaign(config, journal, **objects) as (campaign, _):
        yield campaign


def same_measurements(a, b):
    assert [m.decision for m in a] == [m.decision for m in b]
    assert [m.candidate for m in a] == [m.candidate for m in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.spectrum, y.spectrum)
        assert x.scalar == y.scalar


def uninterrupted(config, path):
    with campaign_on(config, path) as campaign:
        campaign.run()
    with Journal(path) as journal:
        return journal.measurements()


# -- durable and resumable --------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_campaign_stopped_and_resumed_again_and_again_measures_what_one_run_would(
    tmp_path, pipeline
):
    config = tiny(f"runner: {{pipeline: {str(pipeline).lower()}}}\n")
    reference = uninterrupted(config, tmp_path / "a.sqlite")
    assert len(reference) == 20
    for stop_after in (2, 6, 7, 13):  # in the seeds, at the switch, in the policy steps
        with campaign_on(config, tmp_path / "b.sqlite") as campaign:

            def stop(m, campaign=campaign, stop_after=stop_after):
                if len(campaign.history) >= stop_after:
                    campaign.request_stop()

            assert campaign.run(stop) == "interrupted"
            assert len(campaign.history) == stop_after
    with campaign_on(config, tmp_path / "b.sqlite") as campaign:
        assert campaign.run() == "budget of steps spent"
    with Journal(tmp_path / "b.sqlite") as journal:
        resumed = journal.measurements()
        assert len(journal.events("run_started")) == 5
    same_measurements(resumed, reference)
    assert len({m.candidate for m in resumed}) == len(resumed)  # nothing measured twice


def journal_rows(path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.1)
        try:
            return db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def start_run(config_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dklscope", "run", str(config_path), "--no-progress"]
    return subprocess.Popen(
        [*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def wait_for_rows(process: subprocess.Popen, path: Path, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while journal_rows(path) < n:
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, f"{n} measurements not reached"
        time.sleep(0.01)


REALTIME = TINY.replace("noise: true}", "noise: true, realtime: true}")


@pytest.mark.slow
def test_sigkill_at_random_steps_then_resume_loses_and_repeats_nothing(tmp_path):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(REALTIME)
    assert main(["run", str(config_path), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    with Journal(tmp_path / "a" / "journal.sqlite") as journal:
        reference = journal.measurements()

    out = tmp_path / "b"
    kills = sorted(np.random.default_rng().choice(np.arange(1, 19), 3, replace=False))
    for i, kill_at in enumerate(kills):
        where = ["--out", str(out)] if i == 0 else ["--resume", str(out)]
        process = start_run(config_path, *where)
        wait_for_rows(process, out / "journal.sqlite", kill_at)
        process.send_signal(signal.SIGKILL)
        process.wait()
    process = start_run(config_path, "--resume", str(out))
    assert process.wait(timeout=300) == 0, process.stdout.read().decode()
    with Journal(out / "journal.sqlite") as journal:
        resumed = journal.measurements()
    same_measurements(resumed, reference)
    assert len({m.decision for m in resumed}) == len(resumed) == 20, f"killed at {kills}"


@pytest.mark.slow
def test_ctrl_c_finishes_the_measurement_under_way_and_leaves_a_resumable_journal(tmp_path):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(REALTIME.replace("dwell_s: 0.02", "dwell_s: 0.3"))
    out = tmp_path / "run"
    process = start_run(config_path, "--out", str(out))
    wait_for_rows(process, out / "journal.sqlite", 7)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    output = process.stdout.read().decode()
    assert "--resume" in output
    with Journal(out / "journal.sqlite") as journal:
        measured = journal.measurements()
        (stopped,) = journal.events("run_stopped")
        decisions = journal.decisions()
    assert stopped["reason"] == "interrupted"
    assert all(m.status == "ok" for m in measured)
    assert 7 <= len(measured) <= 8  # the one under way was finished and journaled
    assert len(decisions) - len(measured) <= 1  # at most one decided ahead, kept for resume
    assert (out / "summary.json").is_file()
    process = start_run(config_path, "--resume", str(out))
    assert process.wait(timeout=300) == 0, process.stdout.read().decode()
    with Journal(out / "journal.sqlite") as journal:
        assert len(journal.measurements()) == 20


def test_resuming_with_a_changed_config_needs_force_and_is_journaled(tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(TINY.replace("steps: 15", "steps: 1"))
    out = tmp_path / "run"
    assert main(["run", str(config_path), "--out", str(out), "--no-progress"]) == 0
    config_path.write_text(TINY.replace("steps: 15", "steps: 3").replace("size: 8", "size: 8 "))
    assert main(["run", str(config_path), "--resume", str(out), "--no-progress"]) == 2
    assert "budget.steps" in capsys.readouterr().err
    assert main(["run", str(config_path), "--resume", str(out), "--no-progress", "--force"]) == 0
    with Journal(out / "journal.sqlite") as journal:
        (change,) = journal.events("config_changed")
        assert change["keys"] == ["budget.steps"]
        assert journal.metadata("config")["budget"]["steps"] == 3
        assert len(journal.measurements()) == 8


def test_resume_refuses_a_folder_without_a_journal(tmp_path, capsys):
    config_path = tmp_path / "c.yaml"
    config_path.write_text(TINY)
    assert main(["run", str(config_path), "--resume", str(tmp_path)]) == 2
    assert "no journal.sqlite" in capsys.readouterr().err


# -- real time --------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", [True, False])
def test_pipelining_chooses_the_next_point_while_the_instrument_measures(pipeline):
    config = parse_config(
        REALTIME.replace("dwell_s: 0.02", "dwell_s: 0.25").replace("steps: 15", "steps: 4")
        + f"runner: {{pipeline: {str(pipeline).lower()}}}\n"
    )
    with simulated_campaign(config) as (campaign, _):
        campaign.run()
        measured = {m.decision: m for m in campaign.history}
        decisions = campaign.decisions
    # Each decision after the first began before, or only after, the previous one's reply.
    ahead = [d.t_decided - d.latency_s < measured[d.number - 1].t_done for d in decisions[1:]]
    assert all(ahead) if pipeline else not any(ahead)
    idle = [m.idle_s for m in campaign.history[1:]]
    if pipeline:  # policy fits took < 0.25 s, so the instrument only waited for the journal
        assert max(idle) < 0.1


# -- drift ------------------------------------------------------------------------------------


def specimen_error(config, drift_every):
    """Distance (px) between each intended position and the specimen point measured there."""
    text = (
        TINY.replace("noise: true}", "noise: false, behaviour: {drift_px_per_s: [1.0, -0.5]}}")
        .replace("dwell_s: 0.02", "dwell_s: 0.1")
        .replace("steps: 15", "steps: 35")
    )
    config = parse_config(
        text + f"policy: {{kind: random}}\nrunner: {{drift_every: {drift_every}}}"
    )
    with simulated_campaign(config) as (campaign, _):
        campaign.run()
        history, decisions = campaign.history, campaign.decisions
        events = campaign.journal.events("drift")
    # Non-realtime: the instrument clock advances by the dwell per acquisition only.
    t = 0.1 * np.arange(len(history))
    x_specimen = np.array([m.x_read for m in history]) - 1.0 * t
    y_specimen = np.array([m.y_read for m in history]) + 0.5 * t
    intended = np.array([(decisions[m.decision].x, decisions[m.decision].y) for m in history])
    return np.hypot(x_specimen - intended[:, 0], y_specimen - intended[:, 1]), events


def test_drift_correction_keeps_the_probe_on_the_intended_features():
    error, events = specimen_error(TINY, drift_every=4)
    uncorrected, none = specimen_error(TINY, drift_every=0)
    assert none == [] and len(events) == 40 // 4 - 1
    # 0.11 px/measurement: at most 4 measurements after a registration, plus its error.
    assert error.max() < 0.6
    assert uncorrected[-5:].min() > 3.5  # 40 x 0.11 px of drift by the end
    last = events[-1]
    assert last["dx"] == pytest.approx(1.0 * 0.1 * last["after_seq"], abs=0.25)
    assert last["dy"] == pytest.approx(-0.5 * 0.1 * last["after_seq"], abs=0.25)


# -- failures ---------------------------------------------------------------------------------

FAULTY = TINY.replace(
    "noise: true}",
    "noise: true, behaviour: {fault_rate: 0.3, faults: [nan, timeout]}}",
)


@pytest.mark.parametrize("on_failure", ["retry", "skip", "stop"])
def test_failed_measurements_are_journaled_and_handled_as_configured(on_failure):
    config = parse_config(FAULTY + f"runner: {{on_failure: {on_failure}, retries: 2}}\n")
    with simulated_campaign(config) as (campaign, _):
        reason = campaign.run()
        history = campaign.history
    statuses = [m.status for m in history]
    bad = [m for m in history if m.status != "ok"]
    assert bad and all(m.error for m in bad)
    assert all(np.isnan(m.scalar) for m in bad)
    if on_failure == "stop":
        assert reason.startswith("measurement") and statuses[-1] == "failed"
        assert statuses.count("failed") == 1
        return
    assert reason == "budget of steps spent"
    by_decision: dict[int, list[str]] = {}
    for m in history:
        by_decision.setdefault(m.decision, []).append(m.status)
    assert len(by_decision) == 20  # every decision ends ok or failed
    for attempts in by_decision.values():
        assert attempts[-1] in ("ok", "failed")
        if on_failure == "skip":
            assert len(attempts) == 1
        else:
            assert attempts[:-1] == ["retried"] * (len(attempts) - 1) and len(attempts) <= 3
            assert attempts[-1] == "ok" or len(attempts) == 3
    if on_failure == "retry":
        assert "retried" in statuses
    X, _ = campaign.training_data()
    assert len(X) == statuses.count("ok")


def test_a_saturated_or_non_finite_spectrum_is_a_failure():
    from dklscope.campaign.measure import _spectrum_problem

    spectrum = np.array([1.0, 5.0, 2.0], np.float32)
    assert _spectrum_problem(spectrum, None) is None
    assert _spectrum_problem(spectrum, 5.0) == "saturated: 1 channels at full scale"
    assert _spectrum_problem(spectrum, 5.5) is None
    spectrum[0] = np.nan
    assert _spectrum_problem(spectrum, None) == "1 non-finite channels"


# -- stop criteria ----------------------------------------------------------------------------


def test_a_target_value_stops_the_campaign_once_reached():
    config = tiny("policy: {kind: random}\nstop: {target: 200}\n")
    with simulated_campaign(config) as (campaign, _):
        reason = campaign.run()
        scalars = [m.scalar for m in campaign.history]
    assert reason == "target 200 reached"
    assert scalars[-1] >= 200 and max(scalars[:-1], default=0) < 200


def test_a_small_enough_uncertainty_stops_the_campaign():
    config = tiny("stop: {max_std: 1.0e+9}\n")
    with simulated_campaign(config) as (campaign, _):
        reason = campaign.run()
    assert reason.startswith("largest predictive std")
    assert len(campaign.history) == len(campaign.decisions) == 5  # the seeds only


def test_a_dose_budget_stops_before_it_would_be_exceeded():
    config = tiny("budget: {seed_points: 5, steps: 15, dose_s: 0.13}\npolicy: {kind: random}\n")
    with simulated_campaign(config) as (campaign, _):
        assert campaign.run() == "dose budget 0.13 s spent"
    assert len(campaign.history) == 6  # 6 x 0.02 s; a 7th would reach 0.14 s


def test_a_wall_time_budget_stops_the_run():
    """1 ms lets at most the first measurement start (none when the machine is slow to get
    to it), never a second."""
    config = tiny("budget: {seed_points: 5, steps: 15, wall_s: 0.001}\npolicy: {kind: random}\n")
    with simulated_campaign(config) as (campaign, _):
        assert campaign.run() == "wall time 0.001 s spent"
    assert len(campaign.history) <= 1


# -- observable -------------------------------------------------------------------------------


def test_progress_events_are_published_for_every_measurement():
    config = tiny("policy: {kind: random}\n")
    with ProgressPublisher("tcp://127.0.0.1:0") as publisher:
        context = zmq.Context.instance()
        subscriber = context.socket(zmq.SUB)
        subscriber.setsockopt(zmq.SUBSCRIBE, b"dklscope")
        subscriber.connect(publisher.address)
        time.sleep(0.3)  # let the subscription reach the publisher
        with campaign_on(config, publisher=publisher) as campaign:
            campaign.run()
            history = campaign.history
        events = []
        while subscriber.poll(1000):
            _topic, body = subscriber.recv_multipart()
            events.append(json.loads(body))
            if events[-1]["event"] == "stopped":
                break
        subscriber.close()
    kinds = [e["event"] for e in events]
    assert (kinds[0], kinds[-1]) == ("started", "stopped")
    assert (kinds.count("decision"), kinds.count("measurement")) == (20, 20)
    decided = [e for e in events if e["event"] == "decision"]
    for d in decided:  # each point is announced before it is measured
        when = {
            e["event"]: i
            for i, e in enumerate(events)
            if e.get("decision", e.get("number")) == d["number"]
        }
        assert when["decision"] < when["measurement"]
    assert [(e["number"], e["x"], e["y"]) for e in decided] == [
        (d.number, d.x, d.y) for d in campaign.decisions
    ]
    measured = [e for e in events if e["event"] == "measurement"]
    assert [e["seq"] for e in measured] == [m.seq for m in history]
    assert [e["scalar"] for e in measured] == [m.scalar for m in history]
    assert measured[-1]["best"] == max(m.scalar for m in history)
    assert events[-1]["reason"] == "budget of steps spent"


# -- the Python API ---------------------------------------------------------------------------


class LowestIndex:
    """A custom policy: the free candidate with the smallest index."""

    needs_model = False

    def choose(self, state):
        return Choice((int(np.flatnonzero(~state.measured)[0]),), (1.0,))


def test_a_campaign_built_from_objects_steps_one_decision_at_a_time():
    config = tiny()

    def total(spectrum, axis):
        return float(spectrum.sum())

    with campaign_on(config, policy=LowestIndex(), scalarizer=total) as campaign:
        seeds = [campaign.step() for _ in range(5)]
        chosen = [campaign.step() for _ in range(3)]
        assert [m.kind for m in seeds] == ["seed"] * 5
        assert [m.kind for m in chosen] == ["policy"] * 3
        free = [i for i in range(10) if i not in {m.candidate for m in seeds}]
        assert [m.candidate for m in chosen] == free[:3]
        assert all(m.scalar == float(m.spectrum.sum()) for m in chosen)
        assert [m.acquisition_value for m in chosen] == [1.0] * 3
        assert len(campaign.history) == 8 and not campaign.done
        assert campaign.best().scalar == max(m.scalar for m in seeds + chosen)


def test_a_campaign_on_patches_and_position_gives_the_kernel_both():
    config = tiny("model: {input: patches_and_position, hidden: [16], first_fit_iterations: 30}\n")
    with simulated_campaign(config) as (campaign, _):
        assert campaign.candidates.shape[1] == 8 * 8 + 2
        np.testing.assert_allclose(
            campaign.candidates[:, -2:].mean(0).numpy(), [0.0, 0.0], atol=1e-9
        )  # standardised positions
        campaign.step()
        assert campaign.run() == "budget of steps spent"
        assert campaign.model.feature_extractor(campaign.candidates[:3]).shape == (3, 4)
