"""``dklscope bench speed`` and ``bench embed`` run and write the documented figures (the
speed itself is not judged here)."""

import json

import torch

from dklscope.cli import main


def test_bench_speed_writes_a_row_per_size_and_mode(tmp_path):
    out = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    argv = ["bench", "speed", "--sizes", "400x20", "--steps", "2", "--threads", "1"]
    assert main([*argv, "--refit-iterations", "3", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the process' setting is restored
    rows = json.loads(out.read_text())
    assert [(row["mode"], row["refit_iterations"]) for row in rows] == [("warm", 3), ("full", None)]
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
