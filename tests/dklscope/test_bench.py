"""``dklscope bench speed`` and ``bench embed`` run and write the documented figures (the
speed itself is not judged here)."""

import json

import torch

from dklscope.cli import main


def test_bench_speed_writes_a_row_per_size_and_mode(tmp_path):
    out = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    argv = ["bench", "speed", "--sizes", "400x20", "--steps", "2", "--threads", "1"]
    assert main([*argv, "--model", "dkl", "--refit-iterations", "3", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the process' setting is restored
    rows = json.loads(out.read_text())
    assert [(row["mode"], row["refit_iterations"]) for row in rows] == [("warm", 3), ("full", None)]
    assert main([*argv, "--modes", "warm", "--json", str(out)]) == 0
    rows += json.loads(out.read_text())
    assert [row["model"] for row in rows] == ["dkl", "dkl", "auto"]  # auto: the default
    for row in rows:
        assert (row["n_candidates"], row["n_measured"], row["device"]) == (400, 20, "cpu")
        assert row["threads"] == 1
        assert 0 < row["median_s"] <= row["p95_s"]


def test_bench_embed_writes_the_epoch_time(tmp_path):
    out = tmp_path / "embed.json"
    argv = ["bench", "embed", "--patches", "200", "--size", "16", "--epochs", "1"]
    assert main([*argv, "--models", "rvae", "--devices", "cpu", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert (row["model"], row["n_patches"], row["device"]) == ("rvae", 200, "cpu")
    assert list(row["patch_shape"]) == [1, 16, 16]
    assert row["s_per_epoch"] > 0


def test_bench_pipeline_writes_the_idle_fraction_of_each_mode(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        """
seed: 1
instrument:
  simulator: {shape: [24, 24], seed: 2}
budget: {seed_points: 3, steps: 3}
patches: {size: 6}
model: {hidden: [8], first_fit_iterations: 20, refit_iterations: 5}
scalarizer: {window: [1.05, 1.35]}
"""
    )
    out = tmp_path / "pipeline.json"
    argv = ["bench", "pipeline", "--config", str(config), "--dwell", "0.02", "--json", str(out)]
    assert main(argv) == 0
    rows = json.loads(out.read_text())
    assert [row["mode"] for row in rows] == ["pipelined", "sequential"]
    for row in rows:
        assert row["measurements"] == 6 and row["dwell_s"] == 0.02
        assert 0 <= row["idle_fraction"] < 1
        assert row["wall_s"] >= 6 * 0.02  # real time: every dwell was waited for
