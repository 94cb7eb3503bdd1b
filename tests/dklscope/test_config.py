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
        (MINIMAL + "policy: {kind: nope}", "policy.kind", "must be one of ei, pi, ucb"),
        (MINIMAL + "model: {hidden: [64, 0]}", "model.hidden", "widths must be >= 1"),
        (MINIMAL + "model: {input: latents}", "model.input", "needs an embedding"),
        (MINIMAL + "model: {train_subset: 1}", "model.train_subset", "must be >= 2 or null"),
        (MINIMAL + "embedding: {kind: rvae, epochs: 0}", "embedding.epochs", "must be >= 1"),
        (MINIMAL + "embedding: {kind: pca}", "embedding.kind", "must be one of"),
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


def scalarizer_section(text: str):
    return parse_config(f"instrument: {{simulator: {{}}}}\nscalarizer: {text}\n").scalarizer


def test_scalarizer_kinds_and_their_keys_are_read_from_yaml():
    old = scalarizer_section("{kind: peak_intensity, window: [1, 2]}")
    assert (old.kind, old.window) == ("peak_intensity", (1.0, 2.0))
    peak = scalarizer_section(
        "{kind: peak_width, window: [1, 2], min_prominence: 5, rel_height: 0.9, no_peak: zero,"
        " median_filter: 3, clip_percentiles: [1, 99]}"
    )
    assert (peak.min_prominence, peak.rel_height, peak.no_peak) == (5.0, 0.9, "zero")
    assert (peak.median_filter, peak.clip_percentiles) == (3, (1.0, 99.0))
    ratio = scalarizer_section("{kind: band_ratio, window: [1, 2], reference_window: [3, 4]}")
    assert ratio.reference_window == (3.0, 4.0)
    loop = scalarizer_section(
        "{kind: nucleation_bias, branch: falling, onset: 0.1, bias_waveform: {n: 32},"
        " clip_values: [-3.0e-4, 3.0e-4]}"
    )
    assert (loop.bias_waveform.n, loop.bias_waveform.v_max, loop.branch) == (32, 8.5, "falling")
    assert loop.clip_values == (-3e-4, 3e-4)
    area = scalarizer_section("{kind: loop_area, bias: [0, 1, 2, 1, 0, -1, -2, -1]}")
    assert area.bias == (0.0, 1.0, 2.0, 1.0, 0.0, -1.0, -2.0, -1.0)
    assert area.window is None
    mine = scalarizer_section("{kind: 'my_lab.scalars:gap_width', median_filter: 5}")
    assert mine.kind == "my_lab.scalars:gap_width"
    assert parse_config(MINIMAL).to_dict()["scalarizer"]["kind"] == "peak_intensity"


@pytest.mark.parametrize(
    ("section", "key", "fragment"),
    [
        ("{kind: median, window: [1, 2]}", "kind", "must be one of peak_intensity, maximum"),
        ("{kind: 'my module:f'}", "kind", "or 'package.module:function'"),
        ("{kind: sum}", "window", "is required by kind 'sum'"),
        ("{kind: band_ratio, window: [1, 2]}", "reference_window", "is required by kind"),
        (
            "{kind: band_ratio, window: [1, 2], reference_window: [4, 3]}",
            "reference_window",
            "low < high",
        ),
        ("{kind: coercive_bias, bias_waveform: {}}", "branch", "is required by kind"),
        ("{kind: remanence, branch: up, bias_waveform: {}}", "branch", "must be one of 'rising'"),
        ("{kind: loop_area}", "bias", "exactly one of 'bias' or 'bias_waveform'"),
        ("{kind: loop_area, bias: [0, 1, 0, -1, 0], bias_waveform: {}}", "bias", "exactly one"),
        ("{kind: loop_area, bias: [0, 1, 2, 3, 4]}", "bias", "rise and fall"),
        ("{kind: loop_area, bias: [0, 1, -1]}", "bias", "at least 5 biases"),
        ("{kind: loop_area, bias_waveform: {n: 3}}", "bias_waveform.n", "must be >= 5"),
        ("{kind: loop_area, bias_waveform: {v_max: 0}}", "bias_waveform.v_max", "must be > 0"),
        ("{kind: loop_area, window: [0, 9], bias_waveform: {}}", "window", "is not read by kind"),
        ("{kind: sum, window: [1, 2], rel_height: 0.5}", "rel_height", "is not read by kind 'sum'"),
        ("{kind: sum, window: [1, 2], bias: [0, 1, 0, -1, 0]}", "bias", "is not read by kind"),
        ("{kind: 'a.b:c', window: [1, 2]}", "window", "is not read by kind 'a.b:c'"),
        ("{kind: peak_width, window: [1, 2], rel_height: 0}", "rel_height", "in (0, 1]"),
        ("{kind: peak_position, window: [1, 2], min_prominence: -1}", "min_prominence", ">= 0"),
        ("{kind: peak_position, window: [1, 2], no_peak: none}", "no_peak", "'nan', 'zero'"),
        ("{kind: nucleation_bias, branch: rising, bias_waveform: {}, onset: 1}", "onset", "(0, 1)"),
        ("{window: [1, 2], median_filter: 4}", "median_filter", "odd number of channels"),
        ("{window: [1, 2], median_filter: 0}", "median_filter", "odd number of channels >= 1"),
        ("{window: [1, 2], clip_values: [3, 1]}", "clip_values", "low < high"),
        (
            "{window: [1, 2], clip_percentiles: [5, 101]}",
            "clip_percentiles",
            "0 <= low < high <= 100",
        ),
        (
            "{window: [1, 2], clip_values: [0, 1], clip_percentiles: [1, 99]}",
            "clip_values",
            "at most one of 'clip_values' or 'clip_percentiles'",
        ),
    ],
)
def test_bad_scalarizer_values_name_their_key(section, key, fragment):
    with pytest.raises(ConfigError) as info:
        scalarizer_section(section)
    assert info.value.path == f"scalarizer.{key}"
    assert fragment in info.value.message


def test_an_embedding_file_is_read_from_the_config_folder(tmp_path):
    (tmp_path / "vae.pt").write_bytes(b"")
    text = MINIMAL + "embedding: {kind: vae, load: vae.pt}\nmodel: {input: latents}\n"
    (tmp_path / "c.yaml").write_text(text)
    assert load_config(tmp_path / "c.yaml").embedding.load == str(tmp_path / "vae.pt")
    (tmp_path / "c.yaml").write_text(text.replace("vae.pt", "missing.pt"))
    with pytest.raises(ConfigError, match=r"embedding\.load: no such file"):
        load_config(tmp_path / "c.yaml")
