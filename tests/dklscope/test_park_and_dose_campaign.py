"""Issue 17, part 1, in the controller: the beam is parked whenever a campaign stops using the
instrument (pause, stop, Ctrl-C, budget end, driver error, lost heartbeat), shown on the
simulated microscope, which reports the beam parked and no dose delivered afterwards; and the
dose budget (``dose: {per_point, total}``) is enforced before a move, journaled and kept on
resume."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager

import pytest

from dklscope.campaign.instruments import build_sample, simulated_microscope
from dklscope.campaign.journal import Journal
from dklscope.campaign.loop import Campaign
from dklscope.cli.run import _run_to_end
from dklscope.config import ConfigError, parse_config
from dklscope.drivers import DriverServer, InstrumentError, MicroscopeClient

# A random policy and 32 x 32 pixels: no model to fit, so each campaign takes well under 1 s.
FAST = """
seed: 5
dwell_s: 0.02
instrument:
  simulator: {shape: [32, 32], seed: 2, noise: true, behaviour: BEHAVIOUR}
budget: {seed_points: 3, steps: 9}
patches: {size: 8}
policy: {kind: random}
scalarizer: {window: [1.05, 1.35]}
"""
E_PER_S = 6.25e8  # a 100 pA probe: electrons per second of exposure
ELECTRONS = f"{{dose_per_s: {E_PER_S}, dose_units: e-}}"


def fast(extra: str = "", behaviour: str = ELECTRONS):
    return parse_config(FAST.replace("BEHAVIOUR", behaviour) + extra)


@contextmanager
def served(config, journal=":memory:", *, heartbeat_s=None, server_heartbeat_s=1.0, **client):
    """A campaign of ``config`` on a simulated microscope served on loopback; yields the
    campaign, the microscope (to read `parked` and `dose_total`) and the server."""
    sim = config.instrument.simulator
    microscope = simulated_microscope(build_sample(sim), sim, noise_seed=config.seed)
    with (
        DriverServer(microscope, "tcp://127.0.0.1:0", heartbeat_s=server_heartbeat_s) as server,
        MicroscopeClient(server.endpoint, heartbeat_s=heartbeat_s, **client) as c,
        Journal(journal) as opened,
    ):
        c.hello()
        yield Campaign(config, c, opened), microscope, server


def parked_events(campaign):
    return campaign.journal.events("parked")


def assert_parked_and_no_dose_afterwards(campaign, microscope):
    """The beam is parked (moved to its safe corner and blanked); the microscope delivered
    exactly the journaled attempts' dose, and delivers none while parked."""
    assert microscope.parked and (microscope._x, microscope._y) == microscope.park_position
    delivered = microscope.dose_total
    assert delivered == pytest.approx(campaign.dose_delivered())
    with pytest.raises(RuntimeError, match="parked"):
        microscope.acquire(0.02)
    time.sleep(0.05)
    assert microscope.dose_total == delivered


def test_pause_parks_the_beam_and_the_next_move_unparks_it():
    config = fast()
    seen: dict = {}
    with served(config) as (campaign, microscope, _):

        def operator():
            while campaign.state != "paused":
                time.sleep(0.005)
            seen["parked"], seen["dose"] = microscope.parked, microscope.dose_total
            seen["at"] = (microscope._x, microscope._y)
            time.sleep(0.2)
            seen["dose later"], seen["n"] = microscope.dose_total, len(campaign.history)
            campaign.resume()

        def pause_after_3(m):
            if len(campaign.history) == 3:
                campaign.request_pause()
                threading.Thread(target=operator).start()

        reason = campaign.run(pause_after_3)
        kinds = [e["kind"] for e in campaign.journal.events() if e["kind"] != "model"]
        (paused, finished) = parked_events(campaign)
        assert_parked_and_no_dose_afterwards(campaign, microscope)
    assert reason == "budget of steps spent" and len(campaign.history) == 12
    assert seen["parked"] and seen["at"] == microscope.park_position
    assert seen["dose later"] == seen["dose"] == pytest.approx(3 * 0.02 * E_PER_S)
    assert seen["n"] == 3
    assert kinds == ["run_started", "paused", "parked", "resumed", "parked", "run_stopped"]
    assert (paused["reason"], paused["action"], paused["measurements"]) == ("pause", "park", 3)
    assert paused["moved"] and paused["blanked"]
    assert (finished["reason"], finished["detail"]) == ("finished", "budget of steps spent")
    assert all(m.status == "ok" for m in campaign.history)  # un-parked by the next move


@pytest.mark.parametrize(
    ("requested", "parked_reason"), [("operator stop", "stop"), ("interrupted", "interrupted")]
)
def test_a_requested_stop_parks_the_beam(requested, parked_reason):
    with served(fast()) as (campaign, microscope, _):

        def stop_after_4(m):
            if len(campaign.history) == 4:
                campaign.request_stop(requested)

        assert campaign.run(stop_after_4) == requested
        (parked,) = parked_events(campaign)
        assert_parked_and_no_dose_afterwards(campaign, microscope)
    assert (parked["reason"], parked["detail"], parked["measurements"]) == (
        parked_reason,
        requested,
        4,
    )
    assert microscope.dose_total == pytest.approx(4 * 0.02 * E_PER_S)


def test_ctrl_c_parks_the_beam():
    with served(fast()) as (campaign, microscope, _):
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        original = campaign._finish

        def finish_slowly(flight):  # every measurement takes 0.1 s: Ctrl-C comes mid-run
            time.sleep(0.1)
            return original(flight)

        campaign._finish = finish_slowly
        timer.start()
        try:
            assert _run_to_end(campaign, show_progress=False) == 130
        finally:
            timer.cancel()
        (parked,) = parked_events(campaign)
        assert_parked_and_no_dose_afterwards(campaign, microscope)
    assert parked["reason"] == "interrupted" and parked["action"] == "park"
    assert 1 <= len(campaign.history) < 12


def test_the_end_of_the_budget_parks_the_beam():
    with served(fast()) as (campaign, microscope, _):
        assert campaign.run() == "budget of steps spent"
        (parked,) = parked_events(campaign)
        stopped = campaign.journal.events()[-1]
        assert_parked_and_no_dose_afterwards(campaign, microscope)
    assert (parked["reason"], parked["action"]) == ("finished", "park")
    assert stopped["kind"] == "run_stopped"  # parked first, then the run journaled as over
    assert microscope.dose_total == pytest.approx(12 * 0.02 * E_PER_S)


class OverviewFails(Exception):
    pass


def test_a_driver_error_that_ends_the_run_parks_the_beam():
    config = fast("runner: {drift_every: 3}\n")
    with served(config) as (campaign, microscope, _):

        def broken_overview():
            raise OverviewFails("the scan unit is on fire")

        microscope.get_overview = broken_overview  # the server answers BACKEND_ERROR
        with pytest.raises(InstrumentError, match="on fire"):
            campaign.run()
        (parked,) = parked_events(campaign)
        (stopped,) = campaign.journal.events("run_stopped")
        assert_parked_and_no_dose_afterwards(campaign, microscope)
    assert parked["reason"] == "error" and "on fire" in parked["detail"]
    assert stopped["error"] is True and len(campaign.history) == 3


def test_a_failed_measurement_that_stops_the_campaign_parks_the_beam():
    behaviour = ELECTRONS[:-1] + ", fault_rate: 1.0, faults: [timeout]}"
    config = fast("runner: {on_failure: stop}\n", behaviour=behaviour)
    with served(config) as (campaign, microscope, _):
        reason = campaign.run()
        (parked,) = parked_events(campaign)
        assert_parked_and_no_dose_afterwards(campaign, microscope)
    assert reason.startswith("measurement 0 failed") and "BACKEND_ERROR" in reason
    assert parked["reason"] == "error"
    assert microscope.dose_total == pytest.approx(0.02 * E_PER_S)  # the exposure happened


def test_a_silent_controller_is_parked_by_the_servers_dead_man_switch():
    """The campaign's heartbeats stop (its process hangs): the server parks the beam on its own
    after two heartbeat intervals, and nothing is exposed while the controller is silent."""
    seen: dict = {}
    with served(fast(), heartbeat_s=0.05, server_heartbeat_s=0.05) as (
        campaign,
        microscope,
        server,
    ):
        client = campaign.client

        def hang_after_3(m):
            if len(campaign.history) != 3:
                return
            client._beating.set()  # the heartbeat thread stops, as in a hung process
            client._beat_thread.join()
            deadline = time.monotonic() + 10
            while not microscope.parked and time.monotonic() < deadline:
                time.sleep(0.005)
            seen["parked"], seen["dose"] = microscope.parked, microscope.dose_total
            seen["safe_state"] = server.safe_state
            time.sleep(0.3)
            seen["dose later"] = microscope.dose_total
            campaign.request_stop()

        campaign.run(hang_after_3)
        assert_parked_and_no_dose_afterwards(campaign, microscope)
    assert seen["parked"] and seen["safe_state"]["action"] == "park"
    assert "silent" in seen["safe_state"]["reason"]
    assert seen["dose later"] == seen["dose"] == pytest.approx(3 * 0.02 * E_PER_S)


def test_a_lost_server_stops_the_campaign_and_the_park_attempt_is_journaled():
    """The client's heartbeats go unanswered (the server is gone): the campaign stops before
    its next move with the reason, and journals that it could not park."""
    config = fast()
    with served(config, heartbeat_s=0.05, timeout_s=0.5, retries=0) as (campaign, _, server):

        def server_dies_after_2(m):
            if len(campaign.history) == 2:
                server.stop()
                deadline = time.monotonic() + 10
                while campaign.client.server_lost is None and time.monotonic() < deadline:
                    time.sleep(0.01)

        reason = campaign.run(server_dies_after_2)
        (parked,) = parked_events(campaign)
    assert reason.startswith("lost heartbeat") and "has not answered" in reason
    assert len(campaign.history) == 2
    assert (parked["reason"], parked["action"]) == ("heartbeat", "failed")
    assert "no reply" in parked["error"]


# -- the dose budget ----------------------------------------------------------------------------


def test_the_dose_total_stops_the_campaign_before_it_would_be_exceeded_and_on_resume(tmp_path):
    # 0.02 s x 6.25e8 e-/s = 1.25e7 e- a point: 5 points make 6.25e7, a 6th would make 7.5e7
    config = fast("dose: {total: 7.0e+7}\n")
    path = tmp_path / "journal.sqlite"
    with served(config, path) as (campaign, microscope, _):
        reason = campaign.run()
        assert campaign.status()["budget_left"]["dose"] == pytest.approx(7.0e7 - 6.25e7)
        (stopped,) = campaign.journal.events("run_stopped")
    assert reason.startswith("dose.total 7e+07 e- reached")
    assert "6.25e+07 e- delivered" in reason and "would add 1.25e+07 e-" in reason
    assert stopped["reason"] == reason
    assert len(campaign.history) == 5
    assert microscope.dose_total == pytest.approx(6.25e7)  # under 7e7, and a 6th not begun
    # resumed on a fresh instrument: it stops at once, with the same reason, moving nothing
    with served(config, path) as (resumed, fresh, _):
        assert resumed.run() == reason
        assert fresh.dose_total == 0 and fresh.n_acquisitions == 0
        assert len(resumed.history) == 5
        assert [e["reason"] for e in resumed.journal.events("run_stopped")] == [reason, reason]


def test_a_retry_that_would_exceed_the_dose_total_is_not_made():
    behaviour = ELECTRONS[:-1] + ", fault_rate: 1.0, faults: [nan]}"
    config = fast("dose: {total: 3.0e+7}\nrunner: {on_failure: retry, retries: 5}\n", behaviour)
    with served(config) as (campaign, microscope, _):
        reason = campaign.run()
    assert reason.startswith("dose.total")
    assert [m.status for m in campaign.history] == ["retried", "retried"]
    assert microscope.dose_total == pytest.approx(2.5e7)


def test_a_point_over_the_per_point_dose_is_refused_before_any_move():
    config = fast("dose: {per_point: 1.0e+7}\n")  # a point delivers 1.25e7
    with pytest.raises(ConfigError, match=r"dose.per_point: .*1\.25e\+07 e-.* at most 0\.016 s"):
        with served(config) as (_, microscope, _):
            pass
    fine = fast("dose: {per_point: 1.25e+7}\n")
    with served(fine) as (campaign, microscope, _):
        campaign.run()
    assert microscope.dose_total == pytest.approx(12 * 1.25e7)


def test_a_dose_budget_needs_an_instrument_that_accounts_dose():
    config = fast("dose: {total: 1.0}\n")
    sim = config.instrument.simulator
    microscope = simulated_microscope(build_sample(sim), sim)
    with (
        DriverServer(microscope, "tcp://127.0.0.1:0", protocol_minor=1) as server,
        MicroscopeClient(server.endpoint) as client,
        Journal(":memory:") as journal,
        pytest.raises(ConfigError, match=r"^dose: .* keeps no dose account"),
    ):
        Campaign(config, client, journal)


def test_a_campaign_on_a_1_1_server_runs_and_journals_that_it_cannot_park():
    config = fast()
    sim = config.instrument.simulator
    microscope = simulated_microscope(build_sample(sim), sim)
    with (
        DriverServer(microscope, "tcp://127.0.0.1:0", protocol_minor=1) as server,
        MicroscopeClient(server.endpoint) as client,
        Journal(":memory:") as journal,
    ):
        campaign = Campaign(config, client, journal)
        assert campaign.run() == "budget of steps spent"
        (parked,) = journal.events("parked")
    assert parked["action"] == "unsupported"
    assert not microscope.parked  # nothing was sent: the old server has no park


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("dose: {total: 0}", "dose.total: must be a finite number > 0"),
        ("dose: {per_point: -1.0}", "dose.per_point: must be a finite number > 0"),
        ("dose: {totl: 1.0}", "dose.totl: unknown key"),
    ],
)
def test_a_bad_dose_section_is_refused_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        fast(section + "\n")


def test_a_campaign_journaled_before_the_dose_section_resumes_without_force(tmp_path):
    from dklscope.cli import main

    config_path = tmp_path / "c.yaml"
    config_path.write_text(FAST.replace("BEHAVIOUR", "{}").replace("steps: 9", "steps: 1"))
    out = tmp_path / "run"
    assert main(["run", str(config_path), "--out", str(out), "--no-progress"]) == 0
    with Journal(out / "journal.sqlite") as journal:  # as an older dklscope wrote it
        old = journal.metadata("config")
        del old["dose"]
        journal.set_metadata("config", old)
    config_path.write_text(FAST.replace("BEHAVIOUR", "{}").replace("steps: 9", "steps: 2"))
    assert main(["run", str(config_path), "--resume", str(out), "--no-progress", "--force"]) == 0
    with Journal(out / "journal.sqlite") as journal:
        (change,) = journal.events("config_changed")
        assert change["keys"] == ["budget.steps"]  # not "dose": it has its defaults
        assert [e["reason"] for e in journal.events("parked")] == ["finished", "finished"]
