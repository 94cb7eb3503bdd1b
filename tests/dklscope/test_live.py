"""Following a campaign for the live view: from its journal (read-only, with the model's maps
from its checkpoints) and from its progress events alone."""

import threading
import time

import numpy as np
import pytest

from dklscope.campaign.control import ControlClient
from dklscope.campaign.instruments import simulated_campaign
from dklscope.campaign.journal import Journal
from dklscope.campaign.loop import Campaign
from dklscope.campaign.progress import ProgressPublisher
from dklscope.config import parse_config
from dklscope.model.dkl import posterior_mean_std
from dklscope.observe.live import STATUS_S, EventFollower, JournalFollower, connectable

from .test_runner import TINY


def test_a_campaign_is_followed_from_its_journal_as_it_runs_and_once_finished(tmp_path):
    config = parse_config(TINY + "budget: {seed_points: 5, steps: 15, dose_s: 10.0}\n")
    follower = JournalFollower(tmp_path)  # no journal yet: waits for one
    try:
        assert follower.live.state == "waiting" and follower.campaign is None
        with simulated_campaign(config, tmp_path / "journal.sqlite") as (campaign, _):
            follower.poll()  # the journal holds a campaign now
            assert follower.live.overview is not None and follower.live.measurements == []
            seen = []
            campaign.run(lambda m: (follower.poll(), seen.append(len(follower.live.measurements))))
            mean, std = posterior_mean_std(campaign.model, campaign.candidates)
            history, last = campaign.history, campaign.decisions[-1]
        assert seen == list(range(1, 21))  # each poll found the measurement just journaled
        follower.poll()  # the run_stopped event
        deadline = time.monotonic() + 10
        while follower.live.prediction.decision != 19 and time.monotonic() < deadline:
            follower.poll()  # the maps are computed once a second at most
        assert follower.live.state == "stopped" and follower.live.prediction.decision == 19
        version = follower.live.version
        follower.poll()  # nothing new: no change counted
        assert follower.live.version == version
    finally:
        follower.close()

    follower = JournalFollower(tmp_path)  # a finished campaign, opened afresh
    try:
        live = follower.live
        assert (live.state, live.reason) == ("stopped", "budget of steps spent")
        assert [m.seq for m in live.measurements] == [m.seq for m in history]
        np.testing.assert_array_equal(live.measurements[-1].spectrum, history[-1].spectrum)
        assert len(live.decisions) == 20 and live.pending() == []
        assert live.n_planned == 20 and live.grid_shape == (32, 32)
        assert live.budget_left == {
            "decisions": 0,
            "dose_s": pytest.approx(10 - 20 * 0.02),
            "wall_s": None,
            "dose": None,  # no dose.total in the config
        }
        assert live.window == (1.05, 1.35) and live.axis_units == "eV"
        p = live.prediction  # the model behind the last decision, rebuilt from its checkpoint
        assert (p.decision, p.n_train) == (19, last.n_train)
        np.testing.assert_allclose(p.mean.ravel(), mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(p.std.ravel(), std, rtol=1e-9, atol=1e-9)
        assert live.control_address is None  # the run is over: nothing to control
    finally:
        follower.close()


def test_the_event_follower_builds_the_history_from_progress_events_alone():
    config = parse_config(TINY + "policy: {kind: random}\n")
    with ProgressPublisher("tcp://127.0.0.1:0") as publisher:
        follower = EventFollower(publisher.address)
        try:
            time.sleep(0.3)  # let the subscription reach the publisher
            with simulated_campaign(config, publisher=publisher) as (campaign, _):
                campaign.run()
                history = campaign.history
            deadline = time.monotonic() + 10
            while follower.live.state != "stopped" and time.monotonic() < deadline:
                follower.poll()
        finally:
            follower.close()
    live = follower.live
    assert live.state == "stopped" and live.reason == "budget of steps spent"
    assert live.n_planned == 20 and live.budget_left == {"decisions": 0}
    assert [(m.seq, m.x, m.y, m.scalar) for m in live.measurements] == [
        (m.seq, m.x, m.y, m.scalar) for m in history
    ]
    assert all(len(m.spectrum) == 0 for m in live.measurements)  # events carry none
    assert live.measurements[0].predicted_mean is None  # a seed point: no prediction
    assert live.overview is None and live.prediction is None
    assert live.version > 0


def test_a_paused_run_is_seen_as_paused_and_a_silent_controller_is_noticed(tmp_path):
    config = parse_config(TINY)
    with simulated_campaign(config, tmp_path / "journal.sqlite") as (campaign, _):
        campaign.endpoints["control"] = "tcp://127.0.0.1:9"  # nothing answers there
        follower = JournalFollower(tmp_path, control=ControlClient())
        seen = {}

        def operator():
            deadline = time.monotonic() + 30
            while follower.live.state != "paused" and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(2 * STATUS_S)  # long enough to ask the controller
            seen.update(state=follower.live.state, controller=follower.live.controller)
            campaign.request_stop()

        def pause_after_3(m):
            if len(campaign.history) == 3:
                campaign.request_pause()

        thread = threading.Thread(target=operator)
        follower.start()
        thread.start()
        try:
            campaign.run(pause_after_3)
        finally:
            thread.join()
            follower.close()
    assert seen == {"state": "paused", "controller": "silent"}
    assert follower.live.control_address == "tcp://127.0.0.1:9"
    assert len(follower.live.measurements) == 3


def test_a_socket_bound_everywhere_is_reached_on_loopback():
    assert connectable("tcp://0.0.0.0:5600") == "tcp://127.0.0.1:5600"
    assert connectable("tcp://*:5600") == "tcp://127.0.0.1:5600"
    assert connectable("tcp://10.0.0.2:5600") == "tcp://10.0.0.2:5600"


def test_a_read_only_campaign_from_a_journal_being_written_can_be_made(tmp_path):
    config = parse_config(TINY)
    with simulated_campaign(config, tmp_path / "journal.sqlite") as (campaign, _):
        for _ in range(6):
            campaign.step()
        done = Campaign.from_journal(tmp_path)  # while the writer's connection is open
        with done.journal:
            assert done.journal.read_only and len(done.history) == 6
        campaign.step()  # the writer goes on
    with Journal(tmp_path / "journal.sqlite", read_only=True) as journal:
        assert len(journal.measurements()) == 7


def test_the_model_rebuilt_from_a_checkpoint_is_the_one_the_campaign_fitted(tmp_path):
    config = parse_config(TINY)
    with simulated_campaign(config, tmp_path / "journal.sqlite") as (campaign, _):
        campaign.run()
        mean, std = posterior_mean_std(campaign.model, campaign.candidates)
        last = campaign.decisions[-1].number
    done = Campaign.from_journal(tmp_path)
    with done.journal:
        decision, state = done.journal.newest_checkpoint()
        assert decision == last
        assert done.journal.newest_checkpoint(after=decision) is None
        before = done.learner.state_bytes()
        rebuilt = done.checkpoint_model(decision, state)
        assert done.learner.state_bytes() == before and done.learner.refit_iterations == 10
    rebuilt_mean, rebuilt_std = posterior_mean_std(rebuilt, done.candidates)
    np.testing.assert_allclose(rebuilt_mean, mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(rebuilt_std, std, rtol=1e-9, atol=1e-9)


def model_detail(decision, flag=None, coverage95=0.93):
    """A ``model`` event's detail, as the campaign journals it at each refit."""
    return {
        "decision": decision,
        "n_train": decision + 1,
        "kind": "auto",
        "scores": {"gp-xy": -1.02, "dkl-ensemble": -0.87},
        "weights": {"gp-xy": 0.1, "dkl-ensemble": 0.9},
        "chosen": "dkl-ensemble",
        "coverage50": 0.47,
        "coverage95": coverage95,
        "z_sd": 1.08,
        "flag": flag,
    }


def test_the_newest_model_record_is_followed(tmp_path):
    config = parse_config(TINY + "policy: {kind: random}\nbudget: {seed_points: 2, steps: 3}\n")
    follower = JournalFollower(tmp_path, maps_every_s=3600)
    try:
        with simulated_campaign(config, tmp_path / "journal.sqlite") as (campaign, _):
            follower.poll()
            campaign.step()
            follower.poll()
            assert follower.live.model is None  # no records (yet): nothing shown
            campaign.journal.log_event("model", **model_detail(2))
            campaign.journal.log_event("model", **model_detail(3, "overconfident", 0.71))
            campaign.step()
            follower.poll()
            model = follower.live.model
            assert (model.decision, model.kind, model.flag, model.coverage95) == (
                3, "auto", "overconfident", 0.71
            )  # fmt: skip
            assert model.weights == {"gp-xy": 0.1, "dkl-ensemble": 0.9}
            campaign.journal.log_event("model", **model_detail(4))
            campaign.journal.log_event("model", decision=5, kind="auto")  # malformed: skipped
            campaign.step()
            follower.poll()
            assert (follower.live.model.decision, follower.live.model.flag) == (4, None)
    finally:
        follower.close()
