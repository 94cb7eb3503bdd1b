"""Grids of simulated campaigns: expansion, checking, the same results in one process or many,
and resuming an interrupted grid."""

import json
from pathlib import Path

import numpy as np
import pytest

from dklscope.bench.grid import load_grid, run_grid
from dklscope.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]

TINY = """
base:
  seed: 0
  instrument: {simulator: {shape: [24, 24], seed: 2, noise: true}}
  budget: {seed_points: 3, steps: 6}
  patches: {size: 6}
  model: {hidden: [8], first_fit_iterations: 20, refit_iterations: 5}
  scalarizer: {window: [1.05, 1.35]}
  runner: {pipeline: false}
samples:
  lattice: {}
  other-lattice: {instrument: {simulator: {seed: 3}}}
arms:
  random: {policy: {kind: random}}
  dkl: {}
  gp-xy: {model: {input: coordinates}, budget: {steps: 4}}
seeds: [4, 5]
eval_every: 3
"""


def grid_file(tmp_path, text=TINY):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_a_grid_expands_samples_arms_seeds_with_parts_merged_over_the_base(tmp_path):
    grid = load_grid(grid_file(tmp_path))
    assert len(grid.points) == 2 * 3 * 2
    assert (grid.eval_every, grid.top_percent) == (3, 1.0)
    by_name = {p.name: p for p in grid.points}
    point = by_name["other-lattice__gp-xy__steps4__sequential__seed5"]
    assert point.config["instrument"]["simulator"]["seed"] == 3  # the sample's part
    assert point.config["instrument"]["simulator"]["shape"] == [24, 24]  # the base's, kept
    assert point.config["model"]["input"] == "coordinates"  # the arm's part
    assert point.config["model"]["hidden"] == [8]
    assert (point.config["seed"], point.steps, point.config["budget"]["seed_points"]) == (5, 4, 3)


def test_budgets_and_pipelining_multiply_the_grid(tmp_path):
    text = TINY.replace("eval_every: 3", "eval_every: 3\nbudgets: [2, 8]\npipeline: [false, true]")
    grid = load_grid(grid_file(tmp_path, text))
    assert len(grid.points) == 2 * 3 * 2 * 2 * 2
    assert {(p.steps, p.pipeline) for p in grid.points} == {
        (2, False), (2, True), (8, False), (8, True)
    }  # fmt: skip


@pytest.mark.parametrize(
    "change, culprit",
    [
        (("  dkl: {}", "  dkl: {model: {input: pixels}}"), "arms.dkl"),
        (("seeds: [4, 5]", "seeds: [4, five]"), "seeds"),
        (("eval_every: 3", "eval_every: 3\nbudget: 3"), "budget"),
    ],
)
def test_a_bad_grid_is_refused_naming_the_culprit(tmp_path, change, culprit):
    with pytest.raises(ConfigError) as error:
        load_grid(grid_file(tmp_path, TINY.replace(*change)))
    assert culprit in str(error.value)


def test_the_shipped_grids_load_with_the_three_arms_and_30_paired_seeds(tmp_path):
    paths = sorted((ROOT / "configs").glob("bench_*.yaml"))
    names = {p.stem for p in paths}
    assert {"bench_ferroelectric", "bench_lattice", "bench_beps_8px"} <= names
    for path in paths:
        grid = load_grid(path)
        arms = {p.arm for p in grid.points}
        assert {"random", "gp-xy", "default"} <= arms, path
        assert grid.baselines == ("random", "gp-xy"), path
        for sample in {p.sample for p in grid.points}:
            points = [p for p in grid.points if p.sample == sample]
            default = [p for p in points if p.arm == "default"]
            assert sorted(p.seed for p in default) == list(range(30)), path
            # random runs past the protocol, to measure how long it takes to get to 90%
            protocol = {p.protocol_n for p in points}
            (n,) = protocol
            (random,) = {p.config["budget"]["steps"] for p in points if p.arm == "random"}
            assert random + default[0].config["budget"]["seed_points"] >= 150 > n, path
    beps8 = load_grid(ROOT / "configs" / "bench_beps_8px.yaml").points[0]
    assert beps8.config["patches"]["size"] == 8 and beps8.protocol_n == 35


def test_the_protocol_budget_is_the_samples_before_an_arm_changes_it(tmp_path):
    text = TINY.replace("  lattice: {}", "  lattice: {budget: {steps: 9}}")
    grid = load_grid(grid_file(tmp_path, text))
    protocol = {(p.sample, p.arm): (p.protocol_n, p.steps) for p in grid.points}
    assert protocol["lattice", "gp-xy"] == (3 + 9, 4)  # the arm's 4 steps, the sample's 9
    assert protocol["lattice", "dkl"] == (12, 9)
    assert protocol["other-lattice", "random"] == (3 + 6, 6)  # the base's
    grid = load_grid(grid_file(tmp_path, text + "budgets: [2]\n"))
    assert {p.protocol_n for p in grid.points} == {5}  # the grid's budget is the protocol


def test_baselines_default_to_the_arms_there_are_and_must_be_arms(tmp_path):
    assert load_grid(grid_file(tmp_path)).baselines == ("random", "gp-xy")
    text = TINY.replace("  gp-xy: {model: {input: coordinates}, budget: {steps: 4}}\n", "")
    assert load_grid(grid_file(tmp_path, text)).baselines == ("random",)
    grid = load_grid(grid_file(tmp_path, TINY + "baselines: [dkl]\n"))
    assert grid.baselines == ("dkl",)
    with pytest.raises(ConfigError, match=r"baselines.*'raster' is not an arm"):
        load_grid(grid_file(tmp_path, TINY + "baselines: [raster]\n"))


def test_arms_with_the_same_seed_measure_the_same_seed_points_with_the_same_noise(tmp_path):
    from dklscope.campaign.instruments import simulated_campaign
    from dklscope.config import Config, from_dict

    grid = load_grid(grid_file(tmp_path, TINY.replace("steps: 6}", "steps: 1}")))
    points = {(p.sample, p.arm, p.seed): p for p in grid.points}

    def seed_measurements(arm, seed):
        config = from_dict(Config, points["lattice", arm, seed].config)
        with simulated_campaign(config) as (campaign, _):
            campaign.run()
            seeds = [m for m in campaign.history if m.kind == "seed"]
        assert len(seeds) == 3
        return [m.candidate for m in seeds], np.stack([m.spectrum for m in seeds])

    random_points, random_spectra = seed_measurements("random", 4)
    dkl_points, dkl_spectra = seed_measurements("dkl", 4)
    assert random_points == dkl_points
    np.testing.assert_array_equal(random_spectra, dkl_spectra)  # the same noise, bit for bit
    other_points, _ = seed_measurements("dkl", 5)
    assert other_points != dkl_points  # another seed, other points


@pytest.mark.slow
def test_a_grid_gives_the_same_results_in_one_process_or_two_and_resumes(tmp_path):
    grid = load_grid(
        grid_file(
            tmp_path, TINY.replace("  other-lattice: {instrument: {simulator: {seed: 3}}}\n", "")
        )
    )
    alone = run_grid(grid, tmp_path / "alone", workers=1)
    shared = run_grid(grid, tmp_path / "shared", workers=2)
    timing = ("wall_s", "median_decision_latency_s", "idle_fraction")
    for a, b in zip(alone, shared, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }
    dkl = next(r for r in alone if r["arm"] == "dkl")
    assert dkl["n_measurements"] == 9 and len(dkl["trace"]["best_fraction"]) == 9
    assert dkl["map"]["n"] == [3, 6, 9] and dkl["final_map_rmse"] is not None
    assert 0 < dkl["final_best_fraction"] <= 1
    assert dkl["protocol_n"] == 9
    assert dkl["best_fraction_at_protocol"] == dkl["final_best_fraction"]
    gp = next(r for r in alone if r["arm"] == "gp-xy")  # 7 measurements of a protocol's 9
    assert gp["protocol_n"] == 9 and gp["best_fraction_at_protocol"] == gp["final_best_fraction"]

    # Resume: one campaign's file lost, a half-written one left behind; only that one reruns.
    files = sorted((tmp_path / "alone" / "campaigns").glob("*.json"))
    assert len(files) == len(grid.points)
    files[0].unlink()
    files[0].with_suffix(".partial").write_text("{")
    ran = []
    again = run_grid(grid, tmp_path / "alone", workers=1, on_result=ran.append)
    assert len(ran) == len(grid.points)
    rerun = json.loads(files[0].read_text())
    changed = [i for i, (a, b) in enumerate(zip(alone, again, strict=True)) if a != b]
    assert len(changed) <= 1  # the rerun one (its timings differ), every other read back as is
    assert rerun in again and rerun["trace"] == alone[again.index(rerun)]["trace"]


def test_bench_campaigns_writes_results_tables_and_plots(tmp_path, capsys):
    from dklscope.cli import main

    text = TINY.replace("  other-lattice: {instrument: {simulator: {seed: 3}}}\n", "")
    out = tmp_path / "out"
    argv = ["bench", "campaigns", str(grid_file(tmp_path, text)), "--out", str(out)]
    assert main([*argv, "--workers", "1", "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["arm"], r["n_seeds"]) for r in rows] == [("dkl", 2), ("gp-xy", 2), ("random", 2)]
    aggregate = json.loads((out / "aggregate.json").read_text())
    for key in ("steps_to_90pct_best_median", "final_best_fraction_median", "coverage95_median"):
        assert all(key in row for row in aggregate), key
    for name in ("campaigns.csv", "aggregate.csv", "best_fraction.png", "map_rmse.png"):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "campaigns").glob("*.json"))) == 6
    for name in ("paired.csv", "curves.json", "coverage50.png", "summary.png"):
        assert (out / name).stat().st_size > 0, name
    # The protocol budget: 3 + 6 measurements for every arm, gp-xy's 3 + 4 included (its best
    # fraction at the budget is its last).
    assert {row["protocol_n"] for row in aggregate} == {9}
    results = [json.loads(p.read_text()) for p in (out / "campaigns").glob("*.json")]
    for r in results:
        at = 9 if r["arm"] != "gp-xy" else 7
        assert r["best_fraction_at_protocol"] == r["trace"]["best_fraction"][at - 1]
    comparisons = json.loads((out / "paired.json").read_text())
    assert {(r["arm"], r["baseline"]) for r in comparisons} == {
        ("dkl", "random"), ("dkl", "gp-xy"), ("gp-xy", "random"), ("random", "gp-xy")
    }  # fmt: skip
    by_seed = {(r["arm"], r["seed"]): r["best_fraction_at_protocol"] for r in results}
    row = next(r for r in comparisons if (r["arm"], r["baseline"]) == ("dkl", "random"))
    diffs = [by_seed["random", s] - by_seed["dkl", s] for s in (4, 5)]
    assert row["n_pairs"] == 2 and row["diff_mean"] == pytest.approx(sum(diffs) / 2)
    assert row["pass_ci"] == (row["diff_ci_high"] <= 0.02)
    printed = capsys.readouterr().out  # the paired table, then the headline one
    assert 0 <= printed.index("paired") < printed.index("dklscope bench campaigns")


@pytest.mark.slow
def test_a_grid_on_a_local_ray_instance_gives_the_local_results(tmp_path):
    pytest.importorskip("ray")
    text = TINY.replace("  other-lattice: {instrument: {simulator: {seed: 3}}}\n", "")
    grid = load_grid(grid_file(tmp_path, text.replace("seeds: [4, 5]", "seeds: [4]")))
    local = run_grid(grid, tmp_path / "local", workers=1)
    on_ray = run_grid(grid, tmp_path / "ray", workers=2, executor="ray")
    timing = ("wall_s", "median_decision_latency_s", "idle_fraction")
    for a, b in zip(local, on_ray, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }


def test_an_arm_keeps_its_own_pipelining_unless_the_grid_sets_one(tmp_path):
    text = TINY.replace("  dkl: {}", "  dkl: {runner: {pipeline: true}}")
    grid = load_grid(grid_file(tmp_path, text))
    assert {(p.arm, p.pipeline) for p in grid.points} == {
        ("random", False), ("dkl", True), ("gp-xy", False)
    }  # fmt: skip
    grid = load_grid(grid_file(tmp_path, text + "pipeline: [false]\n"))
    assert not any(p.pipeline for p in grid.points)


def test_a_base_file_reads_its_relative_paths_from_its_own_folder(tmp_path):
    (tmp_path / "grids").mkdir()
    grid = tmp_path / "grids" / "g.yaml"
    grid.write_text(f"base: {ROOT / 'configs' / 'beps_replay.yaml'}\nseeds: 1\n")
    (point,) = load_grid(grid).points
    path = Path(point.config["instrument"]["simulator"]["replay"]["path"])
    assert path.is_absolute() and path.name == "BEPS_PTO_50x50.h5" and path.is_file()
