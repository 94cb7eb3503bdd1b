"""The control socket: pause, resume and stop a running campaign, with and without CURVE."""

import threading
import time

import pytest

from dklscope.campaign.control import OPERATOR_STOP, ControlClient, ControlError, ControlServer
from dklscope.campaign.instruments import build_sample, simulated_campaign, simulated_microscope
from dklscope.campaign.journal import Journal
from dklscope.campaign.loop import Campaign
from dklscope.config import ConfigError, parse_config
from dklscope.drivers import DriverServer, MicroscopeClient
from dklscope.drivers.security import ClientKeys, ServerKeys, generate_keys

from .test_runner import REALTIME, TINY, start_run, wait_for_rows


def wait_until(condition, timeout_s=60.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_pause_resume_and_stop_over_the_control_socket_keep_the_driver_alive(tmp_path):
    config = parse_config(REALTIME.replace("dwell_s: 0.02", "dwell_s: 0.05"))
    sim = config.instrument.simulator
    backend = simulated_microscope(build_sample(sim), sim, noise_seed=config.seed)
    with (
        DriverServer(backend, "tcp://127.0.0.1:0", heartbeat_s=0.1) as server,
        MicroscopeClient(server.endpoint, heartbeat_s=0.1) as client,
        Journal(tmp_path / "journal.sqlite") as journal,
    ):
        client.hello()  # arms the dead-man switch: 0.2 s without a heartbeat parks the probe
        campaign = Campaign(config, client, journal)
        log: dict = {}

        def operator(address):
            try:
                with ControlClient(address) as control:
                    status = lambda: control.request("status")  # noqa: E731
                    wait_until(lambda: status()["n_measurements"] >= 3, what="3 measurements")
                    assert control.request("pause")["state"] in ("pausing", "paused")
                    wait_until(lambda: status()["state"] == "paused", what="the pause")
                    log["paused_at"] = status()["n_measurements"]
                    time.sleep(0.6)  # three times the dead-man's delay
                    log["after_pause"] = status()
                    log["safe_state"] = server.safe_state
                    assert control.request("resume")["state"] in ("resuming", "running")
                    wait_until(
                        lambda: status()["n_measurements"] >= log["paused_at"] + 3, what="resume"
                    )
                    log["stop"] = control.request("stop")
            except BaseException as exc:
                log["error"] = exc
                campaign.request_stop()

        with ControlServer("tcp://127.0.0.1:0", campaign=campaign) as control:
            thread = threading.Thread(target=operator, args=(control.address,))
            thread.start()
            reason = campaign.run()
            thread.join()
        assert "error" not in log, log.get("error")
        assert reason == OPERATOR_STOP
        assert log["stop"]["state"] == "stopping"
        assert log["after_pause"]["n_measurements"] == log["paused_at"]  # nothing moved
        assert log["after_pause"]["budget_left"]["decisions"] == 20 - log["paused_at"]
        assert log["safe_state"] is None  # the heartbeats went on through the pause
        events = [e["kind"] for e in journal.events() if e["kind"] != "model"]
        # the beam parked for the pause and again at the stop (protocol 1.2 park)
        assert events == ["run_started", "paused", "parked", "resumed", "parked", "run_stopped"]
        assert [e["reason"] for e in journal.events("parked")] == ["pause", "stop"]
        (started,) = journal.events("run_started")
        assert started["control"] == control.address
        (stopped,) = journal.events("run_stopped")
        assert (stopped["reason"], stopped["error"]) == (OPERATOR_STOP, False)
        history = journal.measurements()
        assert all(m.status == "ok" for m in history)
        after_pause = history[log["paused_at"]]
        assert after_pause.idle_s is None  # the pause is not instrument idle time
        assert after_pause.t_requested - history[log["paused_at"] - 1].t_done >= 0.6
    with simulated_campaign(config, tmp_path / "journal.sqlite") as (resumed, _):
        assert resumed.run() == "budget of steps spent"
        assert len(resumed.history) == 20


def test_the_control_socket_refuses_what_it_does_not_understand():
    config = parse_config(TINY)
    with simulated_campaign(config) as (campaign, _):
        with ControlServer("tcp://127.0.0.1:0", campaign=campaign) as server:
            assert "not a control request" in server.handle(b"\xff")["error"]
            assert "not a control request" in server.handle(b"[1, 2]")["error"]
            reply = server.handle(b'{"cmd": "fire"}')
            assert reply == {
                "ok": False,
                "error": "unknown command 'fire'; expected one of status, pause, resume, stop",
            }
            with ControlClient(server.address) as client:
                with pytest.raises(ControlError, match="refused 'launch'"):
                    client.request("launch")
                status = client.request("status")
            assert status["state"] == "idle" and not campaign.stop_requested
            assert status["n_planned"] == 20 and status["budget_left"]["wall_s"] is None


def test_with_curve_only_listed_clients_reach_the_control_socket(tmp_path):
    generate_keys(tmp_path, ["controller", "operator", "stranger"])
    keys = ServerKeys.from_files(tmp_path / "controller.key_secret", [tmp_path / "operator.key"])
    config = parse_config(TINY)
    with simulated_campaign(config) as (campaign, _):
        with ControlServer("tcp://127.0.0.1:0", keys=keys, campaign=campaign) as server:
            server_key = tmp_path / "controller.key"
            operator = ClientKeys.from_files(tmp_path / "operator.key_secret", server_key)
            stranger = ClientKeys.from_files(tmp_path / "stranger.key_secret", server_key)
            with ControlClient(server.address, keys=operator) as client:
                assert client.request("status")["state"] == "idle"
            with ControlClient(server.address, keys=stranger, timeout_s=0.5) as client:
                with pytest.raises(ControlError, match="no reply"):
                    client.request("stop")
            with ControlClient(server.address, timeout_s=0.5) as client:  # no CURVE at all
                with pytest.raises(ControlError, match="no reply"):
                    client.request("stop")
        assert not campaign.stop_requested


def test_runner_control_is_checked_like_the_other_addresses():
    assert parse_config(TINY + "runner: {control: 'tcp://127.0.0.1:5601'}").runner.control
    with pytest.raises(ConfigError, match=r"runner\.control: must look like tcp://host:port"):
        parse_config(TINY + "runner: {control: '127.0.0.1:5601'}")


@pytest.mark.slow
def test_dklscope_run_stopped_over_curve_exits_130_with_a_resumable_journal(tmp_path):
    generate_keys(tmp_path / "keys", ["controller", "viewer"])
    config_path = tmp_path / "c.yaml"
    config_path.write_text(
        REALTIME.replace("dwell_s: 0.02", "dwell_s: 0.1")
        + "runner: {control: 'tcp://127.0.0.1:0', publish: 'tcp://127.0.0.1:0'}\n"
    )
    out = tmp_path / "run"
    keys = tmp_path / "keys"
    process = start_run(
        config_path,
        "--out",
        str(out),
        "--secret-key",
        str(keys / "controller.key_secret"),
        "--allow",
        str(keys / "viewer.key"),
    )
    try:
        wait_for_rows(process, out / "journal.sqlite", 3)
        with Journal(out / "journal.sqlite", read_only=True) as journal:
            (started,) = journal.events("run_started")
        assert started["publish"].startswith("tcp://127.0.0.1:")
        viewer = ClientKeys.from_files(keys / "viewer.key_secret", keys / "controller.key")
        with ControlClient(started["control"], keys=viewer) as control:
            assert control.request("stop")["state"] == "stopping"
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
    output = process.stdout.read().decode()
    assert "--resume" in output
    with Journal(out / "journal.sqlite") as journal:
        (stopped,) = journal.events("run_stopped")
        assert stopped["reason"] == OPERATOR_STOP
        n = len(journal.measurements())
    assert 3 <= n < 20
    process = start_run(config_path, "--resume", str(out))
    assert process.wait(timeout=300) == 0, process.stdout.read().decode()
    with Journal(out / "journal.sqlite") as journal:
        assert len(journal.measurements()) == 20


def test_dklscope_run_refuses_keys_without_a_socket_to_secure(tmp_path, capsys):
    from dklscope.cli import main

    generate_keys(tmp_path, ["controller"])
    config_path = tmp_path / "c.yaml"
    config_path.write_text(TINY)
    key = str(tmp_path / "controller.key_secret")
    assert main(["run", str(config_path), "--out", str(tmp_path / "r"), "--secret-key", key]) == 2
    assert "neither runner.publish nor control" in capsys.readouterr().err
    assert main(["run", str(config_path), "--out", str(tmp_path / "r"), "--allow", key]) == 2
    assert "--allow goes with --secret-key" in capsys.readouterr().err


def test_a_busy_control_address_is_refused_before_any_journal_is_made(tmp_path, capsys):
    import zmq

    from dklscope.cli import main

    context = zmq.Context()
    taken = context.socket(zmq.ROUTER)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    try:
        config_path = tmp_path / "c.yaml"
        config_path.write_text(TINY + f"runner: {{control: 'tcp://127.0.0.1:{port}'}}\n")
        assert main(["run", str(config_path), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
        assert "runner.control: cannot serve control requests" in capsys.readouterr().err
        assert not (tmp_path / "r" / "journal.sqlite").exists()  # the same --out works later
    finally:
        taken.close(linger=0)
        context.term()


def test_control_client_errors_are_control_errors():
    with ControlClient("tcp://nowhere-at-all", timeout_s=0.2) as client:
        with pytest.raises(ControlError):
            client.request("status")


class PausesWhileChoosing:
    """A policy during whose choice the operator presses Pause: the point it chooses is
    journaled, but not measured until the run goes on."""

    needs_model = False

    def __init__(self) -> None:
        self.campaign = None
        self.calls = 0

    def choose(self, state):
        self.calls += 1
        if self.calls == 2:
            self.campaign.request_pause()
            threading.Timer(0.3, self.campaign.request_stop).start()
        return [int((~state.measured).nonzero()[0][0])]


def test_a_pause_asked_for_during_a_decision_comes_before_its_move():
    config = parse_config(TINY + "runner: {pipeline: false}\n")
    policy = PausesWhileChoosing()
    with simulated_campaign(config, policy=policy) as (campaign, _):
        policy.campaign = campaign
        assert campaign.run() == "interrupted"
        seeds = config.budget.seed_points
        assert len(campaign.history) == seeds + 1  # the first policy point, then the pause
        assert len(campaign.decisions) == seeds + 2  # the second decided, not measured
        kinds = [e["kind"] for e in campaign.journal.events() if e["kind"] != "model"]
        assert kinds == ["run_started", "paused", "parked", "parked", "run_stopped"]


class Fails:
    needs_model = False

    def choose(self, state):
        raise RuntimeError("a bug in a policy")


def test_any_error_that_ends_a_run_is_journaled_and_raised():
    with simulated_campaign(parse_config(TINY), policy=Fails()) as (campaign, _):
        with pytest.raises(RuntimeError, match="a bug in a policy"):
            campaign.run()
        assert campaign.state == "stopped"
        (stopped,) = campaign.journal.events("run_stopped")
        assert stopped["error"] is True and "a bug in a policy" in stopped["reason"]
