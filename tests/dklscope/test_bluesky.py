"""dklscope inside Bluesky: the tell/ask agent, and a DKL campaign as a plan in a real
RunEngine over ophyd-async devices (a simulated microscope wrapped as a motor pair and a
spectrum detector). Nothing of bluesky is mocked."""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bluesky")
pytest.importorskip("ophyd_async")

from bluesky import RunEngine
from ophyd_async.core import init_devices

from dklscope.bluesky import DKLAgent, dkl_campaign
from dklscope.bluesky.adaptive import RunEvaluation
from dklscope.campaign.instruments import simulated_campaign
from dklscope.config import ConfigError, parse_config
from dklscope.drivers.ophyd_async import simulated_devices
from dklscope.simulators import SimulatedMicroscope, lattice_sample

CONFIG = """
seed: {seed}
instrument: {{simulator: {{sample: lattice, shape: [24, 24], seed: 1}}}}
scalarizer: {{kind: peak_intensity, window: [1.05, 1.35]}}
budget: {{seed_points: {seeds}, steps: {steps}}}
patches: {{size: 6}}
runner: {{pipeline: {pipeline}}}
"""


def config(seed=3, seeds=4, steps=6, pipeline="false"):
    return parse_config(CONFIG.format(seed=seed, seeds=seeds, steps=steps, pipeline=pipeline))


@pytest.fixture(scope="module")
def run_engine():
    """A RunEngine; its event loop (bluesky's) is where `init_devices` connects devices."""
    return RunEngine({})


@pytest.fixture
def microscope(run_engine):
    """A noise-free simulated microscope as ophyd-async devices, and a twin of it that gives
    the truth at any position."""
    sample = lattice_sample(shape=(24, 24), seed=1)
    scope = SimulatedMicroscope(sample, noise=False)
    with init_devices():
        sim = simulated_devices(scope, name="scope")
    return scope, sim, SimulatedMicroscope(sample, noise=False)


# -- the agent ------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", ["false", "true"])
def test_the_agent_decides_exactly_as_a_campaign_told_the_same_scalars(pipeline):
    """Seeds, then EI on the refitted DKL: the same points as `Campaign` for the same config.
    Pipelined, the campaign decides the next point while one is measured; the agent does so
    when asked again before being told (the point under way is pending)."""
    cfg = config(pipeline=pipeline)
    with simulated_campaign(cfg) as (campaign, _):
        campaign.run()
        history, decisions = campaign.history, campaign.decisions
        description, overview = campaign.description, campaign.overview
    assert len(history) == 10 and all(m.ok for m in history)
    agent = DKLAgent.for_instrument(cfg, description, overview)
    if pipeline == "false":
        for m in history:
            ((x, y),) = agent.ask(1)
            agent.tell(x, y, m.scalar)
    else:
        agent.ask(1)
        for k, m in enumerate(history):
            if k + 1 < len(decisions):
                agent.ask(1)  # chosen while point k is "measured"
            agent.tell(agent.decisions[k].x, agent.decisions[k].y, m.scalar)
    assert [(d.x, d.y) for d in agent.decisions] == [(d.x, d.y) for d in decisions]
    assert [d.kind for d in agent.decisions] == ["seed"] * 4 + ["policy"] * 6
    for mine, theirs in zip(agent.decisions[4:], decisions[4:], strict=True):
        assert mine.predicted_mean == pytest.approx(theirs.predicted_mean, rel=1e-9)
        assert mine.acquisition_value == pytest.approx(theirs.acquisition_value, rel=1e-9)
    assert agent.pending == []


def test_tell_takes_candidate_positions_only_and_keeps_nan_unfitted():
    overview = lattice_sample(shape=(16, 16), seed=1).image
    agent = DKLAgent(config(seeds=2), overview)
    with pytest.raises(ValueError, match=r"\(3.5, 4\) px is no candidate position"):
        agent.tell(3.5, 4.0, 1.0)
    with pytest.raises(ValueError, match="not finite"):
        agent.tell(math.nan, 4.0, 1.0)
    agent.tell(3.0, 4.0, 1.0)
    agent.tell(5.0, 4.0, math.nan)  # a failed measurement: never asked again, not fitted
    assert agent.best() == (3.0, 4.0, 1.0)
    asked = {tuple(p) for _ in range(30) for p in agent.ask(1)}
    assert (3.0, 4.0) not in asked and (5.0, 4.0) not in asked
    # Only one finite value told, so the two seed points were followed by random ones.
    assert agent.decisions[2].kind == "seed"


def test_an_agent_that_has_asked_every_candidate_returns_no_more_points():
    overview = np.arange(64, dtype=float).reshape(8, 8)
    cfg = parse_config(
        "instrument: {address: 'tcp://127.0.0.1:1'}\n"
        "scalarizer: {kind: sum, window: [0, 1]}\n"
        "patches: {size: 4, stride: 4}\npolicy: {kind: random}\n"
    )
    agent = DKLAgent(cfg, overview)
    first = agent.ask(3)
    rest = agent.ask(10)
    assert first.shape == (3, 2) and rest.shape == (1, 2)
    assert agent.ask(1).shape == (0, 2)
    assert sorted(map(tuple, np.vstack([first, rest]))) == [(0, 0), (0, 4), (4, 0), (4, 4)]


def test_the_agent_refuses_what_it_cannot_do_naming_it():
    overview = lattice_sample(shape=(16, 16), seed=1).image
    with pytest.raises(ConfigError, match=r"patches\.size"):
        DKLAgent(
            parse_config(
                CONFIG.format(seed=0, seeds=2, steps=2, pipeline="false").replace(
                    "size: 6", "size: 20"
                )
            ),
            overview,
        )
    with pytest.raises(ValueError, match="overview"):
        DKLAgent(config(), overview[0])
    with pytest.raises(ValueError, match="no spectral axis"):
        DKLAgent(config(), overview).scalarize(np.zeros(10))
    with pytest.raises(ConfigError, match=r"scalarizer\.window"):
        DKLAgent(config(), overview, axis=np.linspace(5.0, 9.0, 50))


# -- the plan in a RunEngine -----------------------------------------------------------------


def test_a_20_step_campaign_in_a_run_engine_documents_every_position_and_scalar(
    run_engine, microscope
):
    scope, sim, twin = microscope
    cfg = dataclasses.replace(config(seed=0, seeds=8, steps=12), dwell_s=0.02)
    description = scope.describe()
    agent = DKLAgent.for_instrument(cfg, description, scope.get_overview(), geometry=sim.geometry)
    docs = []
    token = run_engine.subscribe(lambda name, doc: docs.append((name, doc)))
    try:
        (uid,) = run_engine(
            dkl_campaign(agent, sim.x, sim.y, sim.detector, 20, dwell=sim.detector.acquire_time)
        )
    finally:
        run_engine.unsubscribe(token)

    names = [name for name, _ in docs]
    assert names[0] == "start" and names[1] == "descriptor" and names[-1] == "stop"
    start, stop = docs[0][1], docs[-1][1]
    assert start["uid"] == uid and start["plan_name"] == "dkl_campaign"
    assert start["motors"] == ["scope-x", "scope-y"] and start["detectors"] == ["scope-det"]
    assert start["dklscope"]["config"] == cfg.to_dict()
    assert stop["exit_status"] == "success" and stop["num_events"] == {"primary": 20}
    events = [doc for name, doc in docs if name == "event"]
    assert [e["seq_num"] for e in events] == list(range(1, 21))
    assert len(agent.decisions) == 20 and len(agent.told) == 20

    scalarizer = agent.scalarizer
    axis = description.spectral_axis.values()
    size = description.pixel_size
    for event, decision, (candidate, told) in zip(events, agent.decisions, agent.told, strict=True):
        data = event["data"]
        assert (data["dkl_x"], data["dkl_y"]) == (decision.x, decision.y)
        assert candidate == decision.candidate
        # The motors went there (in nm), and the probe with them.
        assert data["scope-x"] == pytest.approx(decision.x * size)
        assert data["scope-y"] == pytest.approx(decision.y * size)
        assert (data["scope-det-probe_x"], data["scope-det-probe_y"]) == pytest.approx(
            (decision.x, decision.y)
        )
        # The spectrum and the scalar are the simulator's there.
        twin.move_probe(decision.x, decision.y)
        truth = twin.acquire(0.02).spectrum  # the config's dwell, which the plan set
        np.testing.assert_array_equal(data["scope-det-spectrum"], truth)
        assert data["dkl_scalar"] == pytest.approx(float(scalarizer(truth, axis)), rel=1e-6)
        assert told == data["dkl_scalar"]
        assert data["dkl_decision"] == decision.number
        assert data["dkl_seed"] == (decision.number < 8)
        if decision.number >= 8:
            assert math.isfinite(data["dkl_predicted_mean"])
            assert data["dkl_predicted_std"] > 0
        else:
            assert math.isnan(data["dkl_predicted_mean"])
    assert len({(e["data"]["dkl_x"], e["data"]["dkl_y"]) for e in events}) == 20
    descriptor = docs[1][1]
    assert descriptor["data_keys"]["scope-det-spectrum"]["shape"] == [
        description.spectral_axis.size
    ]
    assert descriptor["data_keys"]["dkl_x"]["units"] == "px"


def test_a_scalar_field_can_be_the_scalar_and_the_budget_and_target_end_the_run(
    run_engine, microscope
):
    scope, sim, _ = microscope

    def run(cfg, n_steps):
        agent = DKLAgent.for_instrument(
            cfg, scope.describe(), scope.get_overview(), geometry=sim.geometry
        )
        docs = []
        token = run_engine.subscribe(lambda name, doc: docs.append((name, doc)))
        try:
            plan = dkl_campaign(
                agent, sim.x, sim.y, sim.detector, n_steps, scalar_field="scope-det-probe_x"
            )
            run_engine(plan)
        finally:
            run_engine.unsubscribe(token)
        return agent, [doc for name, doc in docs if name == "event"], docs[-1][1]

    # n_steps None: the config's budget, 3 seeds + 2 steps.
    agent, events, stop = run(config(seeds=3, steps=2), None)
    # The probe's x as read back: the decision's, to the rounding of pixels -> metres -> pixels.
    assert [e["data"]["dkl_scalar"] for e in events] == pytest.approx(
        [d.x for d in agent.decisions], abs=1e-9
    )
    assert len(events) == 5 and stop["exit_status"] == "success"
    assert agent.should_stop() == (True, "budget of 5 measurements told")
    # stop.target: the run ends at the first scalar (here the probe's x) at least as large.
    cfg = dataclasses.replace(config(seeds=3), stop=dataclasses.replace(config().stop, target=5))
    agent, events, _ = run(cfg, 20)
    xs = [e["data"]["dkl_scalar"] for e in events]
    assert xs[-1] >= 5 and all(x < 5 for x in xs[:-1])
    assert agent.stop_reason().startswith("target 5 reached")


def test_bluesky_adaptives_optimize_plan_runs_the_agent(run_engine, microscope):
    """bluesky-adaptive 1.0's own loop: suggest, acquire in a run, evaluate, ingest."""
    from bluesky_adaptive.plans import optimize
    from bluesky_adaptive.protocols import OptimizationProblem, Optimizer

    scope, sim, twin = microscope
    agent = DKLAgent.for_instrument(
        config(seeds=3),
        scope.describe(),
        scope.get_overview(),
        geometry=sim.geometry,
        names=(sim.x.name, sim.y.name),
    )
    assert isinstance(agent, Optimizer)
    evaluation = RunEvaluation(agent)
    token = run_engine.subscribe(evaluation.collect)
    problem = OptimizationProblem(
        optimizer=agent,
        actuators=[sim.x, sim.y],
        sensors=[sim.detector],
        evaluation_function=evaluation,
    )
    try:
        run_engine(optimize(problem, iterations=5))
    finally:
        run_engine.unsubscribe(token)
    assert [d.kind for d in agent.decisions] == ["seed"] * 3 + ["policy"] * 2
    axis = scope.describe().spectral_axis.values()
    for decision, (candidate, value) in zip(agent.decisions, agent.told, strict=True):
        assert candidate == decision.candidate
        twin.move_probe(decision.x, decision.y)
        assert value == pytest.approx(float(agent.scalarizer(twin.acquire(0.05).spectrum, axis)))
    ((number, params, outcome),) = agent.get_best_points()
    assert outcome["scalar"] == max(v for _, v in agent.told)
    assert params[sim.x.name] == pytest.approx(
        agent.decisions[number].x * scope.describe().pixel_size
    )


def test_dklscope_does_not_import_bluesky():
    code = (
        "import sys, dklscope, dklscope.campaign.loop, dklscope.cli, dklscope.drivers\n"
        "import dklscope.drivers.ophyd_async\n"
        "names = ('bluesky', 'ophyd_async', 'bluesky_adaptive', 'dklscope.bluesky')\n"
        "print(sorted(m for m in names if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_readme_example_runs_a_campaign_in_a_run_engine(monkeypatch):
    root = Path(__file__).resolve().parents[2]
    blocks = re.findall(r"```python\n(.*?)```", (root / "README.md").read_text("utf-8"), re.S)
    (example,) = [b for b in blocks if "dkl_campaign(agent" in b]
    monkeypatch.chdir(root)  # it reads configs/quickstart.yaml
    namespace: dict = {"print": lambda *args: None}
    exec(compile(example, "README.md", "exec"), namespace)
    agent, documents = namespace["agent"], namespace["documents"]
    assert len(agent.told) == 30
    assert [name for name, _ in documents].count("event") == 30
    assert agent.best()[2] == max(value for _, value in agent.told)


def test_without_the_extra_the_bluesky_modules_say_how_to_install_it():
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('bluesky', 'ophyd_async', 'bluesky_adaptive'):\n"
        "            raise ImportError(f'No module named {name!r} (blocked)')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import dklscope.drivers.ophyd_async\n"  # the backend itself imports neither
        "for name in ('dklscope.bluesky', 'dklscope.drivers.ophyd_async.sim'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("pip install 'dklscope[bluesky]'" in line for line in lines)
