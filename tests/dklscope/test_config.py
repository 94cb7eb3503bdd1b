from pathlib import Path

import pytest

from dklscope.config import Config, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
instrument:
  simulator: {}
scalarizer:
  window: [1.0, 1.4]
"""


def test_quickstart_loads_into_typed_dataclasses():
    config = load_config(ROOT / "configs" / "quickstart.yaml")
    assert isinstance(config, Config)
    assert config.instrument.simulator is not None
    assert config.instrument.simulator.shape == (48, 48)
    assert config.scalarizer.window == (1.05, 1.35)
    assert config.model.hidden == (64, 32)
    assert isinstance(config.dwell_s, float)


def test_defaults_fill_what_is_left_out():
    config = parse_config(MINIMAL)
    assert config.policy.kind == "ei"
    assert config.budget.steps == 25
    assert config.to_dict()["scalarizer"]["window"] == [1.0, 1.4]


@pytest.mark.parametrize(
    ("yaml_text", "path", "fragment"),
    [
        (MINIMAL + "budget: {stpes: 3}", "budget.stpes", "did you mean 'steps'"),
        (MINIMAL + "budget: {steps: -5}", "budget.steps", "must be >= 0, got -5"),
        (MINIMAL + "dwell_s: -1", "dwell_s", "must be > 0, got -1"),
        (MINIMAL + "dwell_s: fast", "dwell_s", "must be a finite number, got str 'fast'"),
        (MINIMAL + "dwell_s: .nan", "dwell_s", "must be a finite number"),
        (MINIMAL + "seed: 1.5", "seed", "must be an integer"),
        (MINIMAL + "seed: true", "seed", "must be an integer"),
        (MINIMAL + "policy: {kind: ucb}", "policy.kind", "must be one of 'ei', 'random'"),
        (MINIMAL + "model: {hidden: [64, 0]}", "model.hidden", "widths must be >= 1"),
        (MINIMAL + "model: {hidden: [64, x]}", "model.hidden[1]", "must be an integer"),
        (MINIMAL + "patches: 3", "patches", "must be a mapping"),
        (MINIMAL + "bogus: 1", "bogus", "unknown key"),
        ("instrument: {simulator: {}}\n", "scalarizer", "missing required key"),
        (
            "instrument: {simulator: {shape: [48]}}\nscalarizer: {window: [1, 2]}",
            "instrument.simulator.shape",
            "must be a list of 2 values",
        ),
        (
            "instrument: {}\nscalarizer: {window: [1, 2]}",
            "instrument",
            "exactly one of",
        ),
        (
            "instrument: {address: 'localhost'}\nscalarizer: {window: [1, 2]}",
            "instrument.address",
            "tcp://host:port",
        ),
        (
            "instrument: {simulator: {}}\nscalarizer: {window: [2, 1]}",
            "scalarizer.window",
            "low < high",
        ),
    ],
)
def test_bad_values_name_their_key_path(yaml_text, path, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text)
    assert info.value.path == path
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ConfigError, match="line 2, column 11"):
        parse_config("seed: 1\ndwell_s: a: b\n")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_dataclasses_check_themselves_when_built_in_python():
    from dklscope.config import BudgetConfig

    with pytest.raises(ConfigError, match="steps: must be >= 0"):
        BudgetConfig(steps=-1)


def test_replay_paths_are_read_from_the_config_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cube.npy").write_bytes(b"")
    config_file = tmp_path / "replay.yaml"
    config_file.write_text(
        "instrument: {simulator: {sample: replay, replay: {path: data/cube.npy}}}\n"
        "scalarizer: {window: [0, 1]}\n"
    )
    config = load_config(config_file)
    assert config.instrument.simulator.replay.path == str(tmp_path / "data" / "cube.npy")


def test_a_missing_replay_file_names_its_key(tmp_path):
    config_file = tmp_path / "replay.yaml"
    config_file.write_text(
        "instrument: {simulator: {sample: replay, replay: {path: nope.h5}}}\n"
        "scalarizer: {window: [0, 1]}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    assert info.value.path == "instrument.simulator.replay.path"
    assert "no such file" in info.value.message


@pytest.mark.parametrize(
    ("simulator", "path", "fragment"),
    [
        ("{sample: replay}", "instrument.simulator.replay", "exactly when sample is 'replay'"),
        (
            "{sample: replay, replay: {path: x.npy, derive: median}}",
            "instrument.simulator.replay.derive",
            "'mean', 'slice:<i>' or 'band:<low>:<high>'",
        ),
        ("{sample: glass}", "instrument.simulator.sample", "must be one of"),
    ],
)
def test_bad_simulator_sections_name_their_key(simulator, path, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(f"instrument: {{simulator: {simulator}}}\nscalarizer: {{window: [0, 1]}}\n")
    assert info.value.path == path
    assert fragment in info.value.message


def test_instrument_behaviour_is_configured_and_checked():
    config = parse_config(
        "instrument: {simulator: {behaviour: {drift_px_per_s: [0.5, -0.25], fault_rate: 0.1,"
        " faults: [nan, hang], hang_s: 2}}}\nscalarizer: {window: [1, 2]}\n"
    )
    behaviour = config.instrument.simulator.behaviour
    assert behaviour.drift_px_per_s == (0.5, -0.25)
    assert behaviour.faults == ("nan", "hang")
    assert config.to_dict()["instrument"]["simulator"]["behaviour"]["faults"] == ["nan", "hang"]
    with pytest.raises(ConfigError) as info:
        parse_config(
            "instrument: {simulator: {behaviour: {fault_rate: 2}}}\nscalarizer: {window: [1, 2]}\n"
        )
    assert info.value.path == "instrument.simulator.behaviour.fault_rate"
