"""`dklscope.bench.aggregate`: medians, bootstrap CIs and censoring on hand-made campaign results
with known answers, the curves over seeds, and the tables and plots it writes."""

import csv
import json
import math

import numpy as np
import pytest

from dklscope.bench.aggregate import CENSORED_METRICS, GROUP_KEYS, SCALAR_METRICS, aggregate, curves
from dklscope.bench.comparison import paired
from dklscope.bench.figures import curve_figure, plot_curves, summary_figure
from dklscope.bench.statistics import mean_ci, median_ci
from dklscope.bench.tables import write_all, write_tables

PNG = b"\x89PNG\r\n\x1a\n"


def result(seed=0, *, sample="plasmonic", arm="dkl-ei", steps=60, pipeline=False, **fields):
    """One campaign's result: defaults everywhere, ``fields`` override; a short trace and map."""
    n = 6
    base = {
        "sample": sample,
        "arm": arm,
        "seed": seed,
        "steps": steps,
        "pipeline": pipeline,
        "n_measurements": n,
        "n_seed_points": 2,
        "trace": {
            "n": list(range(1, n + 1)),
            "best_fraction": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
            "top_found": [0.0, 0.0, 0.1, 0.1, 0.2, 0.3],
        },
        "map": {
            "n": [2, 4, 6],
            "rmse": [3.0, 2.0, 1.0],
            "r2": [0.1, 0.5, 0.8],
            "coverage50": [0.4, 0.5, 0.5],
            "coverage95": [0.9, 0.93, 0.95],
        },
        "steps_to_90pct_best": 5,
        "steps_to_top_percent": None,
        "final_best_fraction": 1.0,
        "final_top_found": 0.3,
        "final_map_rmse": 1.0,
        "final_map_r2": 0.8,
        "final_coverage50": 0.5,
        "final_coverage95": 0.95,
        "median_decision_latency_s": 0.07,
        "idle_fraction": 0.9,
        "wall_s": 6.2,
    }
    base.update(fields)
    return base


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# -- medians and confidence intervals -----------------------------------------------------------


def test_the_median_and_its_ci_of_five_seeds():
    results = [result(s, final_best_fraction=v) for s, v in enumerate([0.9, 0.5, 0.8, 0.6, 0.7])]
    (row,) = aggregate(results)
    assert row["n_seeds"] == 5
    assert row["final_best_fraction_median"] == pytest.approx(0.7)
    low, high = row["final_best_fraction_ci_low"], row["final_best_fraction_ci_high"]
    assert 0.5 <= low <= 0.7 <= high <= 0.9
    assert low < high


def test_identical_values_give_a_ci_equal_to_the_value():
    (row,) = aggregate([result(s, wall_s=4.25) for s in range(4)])
    assert row["wall_s_median"] == row["wall_s_ci_low"] == row["wall_s_ci_high"] == 4.25


def test_one_seed_gives_its_value_as_median_and_ci():
    (row,) = aggregate([result(0, idle_fraction=0.3)])
    assert row["idle_fraction_median"] == row["idle_fraction_ci_low"] == 0.3
    assert row["idle_fraction_ci_high"] == 0.3


def test_a_wider_confidence_gives_a_wider_interval():
    values = [0.1, 0.2, 0.35, 0.4, 0.55, 0.6, 0.8, 0.9, 0.95]
    results = [result(s, final_top_found=v) for s, v in enumerate(values)]
    (narrow,) = aggregate(results, confidence=0.5)
    (wide,) = aggregate(results, confidence=0.99)
    assert wide["final_top_found_ci_low"] <= narrow["final_top_found_ci_low"]
    assert wide["final_top_found_ci_high"] >= narrow["final_top_found_ci_high"]
    assert narrow["final_top_found_median"] == wide["final_top_found_median"] == 0.55


def test_missing_values_of_ordinary_metrics_are_dropped():
    results = [
        result(0, final_map_rmse=None, final_coverage95=None),
        result(1, final_map_rmse=2.0, final_coverage95=None),
        result(2, final_map_rmse=4.0, final_coverage95=math.nan),
        result(3, final_map_rmse=None, final_coverage95=None),
    ]
    del results[3]["final_map_r2"]
    (row,) = aggregate(results)
    assert row["final_map_rmse_median"] == 3.0
    assert 2.0 <= row["final_map_rmse_ci_low"] <= row["final_map_rmse_ci_high"] <= 4.0
    assert row["final_coverage95_median"] is None
    assert row["final_coverage95_ci_low"] is None and row["final_coverage95_ci_high"] is None
    assert row["coverage95_median"] is None
    assert row["final_map_r2_median"] == 0.8  # the three campaigns that have it


@pytest.mark.parametrize(
    ("steps", "median", "reached"),
    [
        ([10, None, 30], 30, 2),
        ([None, None, 5], None, 1),
        ([None, None, None], None, 0),
        ([7, 7, 7], 7, 3),
        ([4, None], None, 1),  # the median of (4, inf) is infinite
        ([4, 6], 5, 2),
    ],
)
def test_steps_to_target_are_censored_at_the_budget(steps, median, reached):
    results = [result(s, steps_to_90pct_best=v) for s, v in enumerate(steps)]
    (row,) = aggregate(results)
    assert row["steps_to_90pct_best_median"] == median
    assert row["steps_to_90pct_best_reached"] == reached
    low, high = row["steps_to_90pct_best_ci_low"], row["steps_to_90pct_best_ci_high"]
    if reached == 0:
        assert low is None and high is None
    elif reached < len(steps):
        # A resample of only the censored seeds has an infinite median: no finite upper bound.
        assert high is None
        assert low == min(v for v in steps if v is not None)
    else:
        assert min(steps) <= low <= median <= high <= max(steps)


def test_steps_to_a_top_location_never_reached():
    (row,) = aggregate([result(s) for s in range(3)])
    assert row["steps_to_top_percent_median"] is None
    assert row["steps_to_top_percent_reached"] == 0
    assert row["steps_to_90pct_best_median"] == 5
    assert row["steps_to_90pct_best_reached"] == 3


def test_median_ci_directly():
    assert median_ci([10, math.inf, 30]) == (30.0, 10.0, math.inf)
    assert median_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in median_ci([]))
    with pytest.raises(ValueError, match="NaN"):
        median_ci([1.0, math.nan])
    with pytest.raises(ValueError, match="confidence"):
        median_ci([1.0], confidence=1.0)
    with pytest.raises(ValueError, match="n_bootstrap"):
        median_ci([1.0], n_bootstrap=0)


# -- groups and rows ----------------------------------------------------------------------------


def test_groups_split_by_arm_pipeline_steps_and_sample_in_sorted_order():
    results = [
        result(0, arm="random", final_best_fraction=0.4),
        result(1, arm="random", final_best_fraction=0.5),
        result(0, arm="dkl-ei", pipeline=True, final_best_fraction=0.9),
        result(0, arm="dkl-ei", final_best_fraction=0.8),
        result(1, arm="dkl-ei", final_best_fraction=0.85),
        result(0, arm="dkl-ei", steps=30),
        result(0, sample="lattice", arm="random"),
    ]
    rows = aggregate(results)
    assert [tuple(r[k] for k in GROUP_KEYS) for r in rows] == [
        ("lattice", "random", 60, False),
        ("plasmonic", "dkl-ei", 30, False),
        ("plasmonic", "dkl-ei", 60, False),
        ("plasmonic", "dkl-ei", 60, True),
        ("plasmonic", "random", 60, False),
    ]
    assert [r["n_seeds"] for r in rows] == [1, 1, 2, 1, 2]
    assert rows[2]["final_best_fraction_median"] == pytest.approx(0.825)
    assert rows[3]["final_best_fraction_median"] == 0.9
    assert rows[4]["final_best_fraction_median"] == pytest.approx(0.45)


def test_rows_carry_the_required_keys_as_plain_python():
    (row,) = aggregate([result(s, final_coverage95=0.9 + s / 100) for s in range(3)])
    for key in (
        "n_seeds",
        "steps_to_90pct_best_median",
        "final_best_fraction_median",
        "final_map_rmse_median",
        "coverage95_median",
        *GROUP_KEYS,
    ):
        assert key in row
    for metric in SCALAR_METRICS:
        for suffix in ("median", "ci_low", "ci_high"):
            assert f"{metric}_{suffix}" in row
    for metric in CENSORED_METRICS:
        assert f"{metric}_reached" in row
    assert row["coverage95_median"] == row["final_coverage95_median"] == pytest.approx(0.91)
    assert all(v is None or type(v) in (str, int, float, bool) for v in row.values())


def test_the_bootstrap_is_reproducible_and_independent_of_other_groups():
    values = [0.1, 0.4, 0.5, 0.7, 0.95, 0.3]
    results = [result(s, final_top_found=v) for s, v in enumerate(values)]
    first = aggregate(results, seed=3)
    assert aggregate(results, seed=3) == first
    others = [result(s, arm="random", final_top_found=s / 10) for s in range(4)]
    with_others = aggregate(others + results, seed=3)
    assert [r for r in with_others if r["arm"] == "dkl-ei"] == first


def test_a_result_without_a_group_key_is_refused():
    bad = result(0)
    del bad["pipeline"]
    with pytest.raises(ValueError, match="pipeline"):
        aggregate([bad])


# -- curves -------------------------------------------------------------------------------------


def test_curves_give_the_median_per_measurement_count():
    results = [
        result(0, trace={"n": [1, 2, 3], "best_fraction": [0.1, 0.5, 0.9]}),
        result(1, trace={"n": [1, 2, 3], "best_fraction": [0.3, 0.4, 1.0]}),
        result(2, trace={"n": [1, 2, 3], "best_fraction": [0.2, 0.6, 0.8]}),
        result(0, arm="random", trace={"n": [1, 2, 3], "best_fraction": [0.2, 0.2, 0.2]}),
    ]
    out = curves(results, "best_fraction", where="trace")
    assert list(out) == [("plasmonic", "dkl-ei", 60, False), ("plasmonic", "random", 60, False)]
    dkl = out["plasmonic", "dkl-ei", 60, False]
    assert dkl["n_seeds"] == 3
    np.testing.assert_array_equal(dkl["n"], [1, 2, 3])
    np.testing.assert_allclose(dkl["median"], [0.2, 0.5, 0.9])
    assert (dkl["ci_low"] <= dkl["median"]).all() and (dkl["median"] <= dkl["ci_high"]).all()
    np.testing.assert_allclose(dkl["ci_low"], [0.1, 0.4, 0.8])  # the smallest per n
    np.testing.assert_allclose(dkl["ci_high"], [0.3, 0.6, 1.0])  # the largest per n
    rnd = out["plasmonic", "random", 60, False]
    np.testing.assert_allclose(rnd["median"], [0.2] * 3)
    np.testing.assert_allclose(rnd["ci_low"], [0.2] * 3)
    np.testing.assert_allclose(rnd["ci_high"], [0.2] * 3)


def test_ragged_traces_are_cut_to_the_measurement_counts_all_seeds_have():
    results = [
        result(0, trace={"n": [1, 2, 3, 4, 5], "top_found": [0, 0.1, 0.2, 0.3, 0.4]}),
        result(1, trace={"n": [1, 2, 3], "top_found": [0.2, 0.3, 0.4]}),
        result(2, trace={"n": [1, 2, 3, 4], "top_found": [0.1, 0.2, 0.3, None]}),
    ]
    curve = curves(results, "top_found", where="trace")["plasmonic", "dkl-ei", 60, False]
    np.testing.assert_array_equal(curve["n"], [1, 2, 3])  # the shortest trace
    np.testing.assert_allclose(curve["median"], [0.1, 0.2, 0.3])


def test_map_curves_keep_common_counts_and_leave_out_seeds_without_a_map():
    results = [
        result(0, map={"n": [10, 20, 30], "rmse": [5.0, 3.0, 2.0]}),
        result(1, map={"n": [10, 20], "rmse": [4.0, math.nan]}),
        result(2, map={"n": [10, 20, 30], "rmse": [6.0, 2.0, 1.0]}),
        result(3, map={"n": [], "rmse": []}),
        result(4, map={}),
        result(0, arm="random", map={"n": [], "rmse": []}),
    ]
    out = curves(results, "rmse", where="map")
    assert list(out) == [("plasmonic", "dkl-ei", 60, False)]  # random has no map data
    curve = out["plasmonic", "dkl-ei", 60, False]
    assert curve["n_seeds"] == 3
    np.testing.assert_array_equal(curve["n"], [10])  # seed 1 has no finite value at n = 20
    np.testing.assert_allclose(curve["median"], [5.0])


def test_curves_refuse_a_bad_where_and_mismatched_lengths():
    with pytest.raises(ValueError, match="where"):
        curves([result()], "rmse", where="maps")
    bad = result(0, trace={"n": [1, 2], "best_fraction": [0.5]})
    with pytest.raises(ValueError, match="best_fraction"):
        curves([bad], "best_fraction", where="trace")


# -- files --------------------------------------------------------------------------------------


def test_tables_are_written_and_aggregate_json_is_strict_and_equals_the_rows(tmp_path):
    results = [result(s, steps_to_90pct_best=None if s == 0 else 5) for s in range(3)]
    results += [result(s, arm="random", final_map_rmse=math.inf) for s in range(2)]
    rows = aggregate(results, n_bootstrap=200)
    folder = tmp_path / "tables"
    paths = write_tables(results, rows, folder)
    assert [p.name for p in paths] == ["campaigns.csv", "aggregate.json", "aggregate.csv"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)

    assert strict_loads((folder / "aggregate.json").read_text()) == rows

    with (folder / "campaigns.csv").open(newline="") as f:
        campaigns = list(csv.DictReader(f))
    assert len(campaigns) == 5
    assert "trace" not in campaigns[0] and "map" not in campaigns[0]
    assert {"sample", "arm", "seed", "final_best_fraction", "wall_s"} <= set(campaigns[0])
    assert [(c["arm"], c["seed"]) for c in campaigns] == [
        ("dkl-ei", "0"),
        ("dkl-ei", "1"),
        ("dkl-ei", "2"),
        ("random", "0"),
        ("random", "1"),
    ]
    assert campaigns[0]["steps_to_90pct_best"] == ""  # None
    assert campaigns[3]["final_map_rmse"] == ""  # inf

    with (folder / "aggregate.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["arm"] for r in table] == ["dkl-ei", "random"]
    assert list(table[0]) == list(rows[0])
    assert float(table[0]["final_best_fraction_median"]) == rows[0]["final_best_fraction_median"]
    assert table[0]["steps_to_90pct_best_reached"] == "2"


def test_plots_are_written_as_pngs_and_nothing_else(tmp_path):
    results = [result(s, arm=a) for s in range(3) for a in ("dkl-ei", "random")]
    results += [result(s, pipeline=True) for s in range(2)]
    results += [result(s, sample="lattice", arm="random") for s in range(2)]
    folder = tmp_path / "plots"
    paths = plot_curves(results, folder, n_bootstrap=100)
    names = [
        "best_fraction.png",
        "top_found.png",
        "map_rmse.png",
        "coverage50.png",
        "coverage95.png",
    ]
    assert [p.name for p in paths] == names
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    for path in paths:
        assert path.read_bytes().startswith(PNG)
        assert path.stat().st_size > 5_000


def test_map_plots_are_skipped_without_map_data(tmp_path):
    results = [result(s, map={"n": [], "rmse": [], "coverage95": []}) for s in range(2)]
    results += [result(s, arm="random", map={}) for s in range(2)]
    paths = plot_curves(results, tmp_path, n_bootstrap=50)
    assert [p.name for p in paths] == ["best_fraction.png", "top_found.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_fraction.png", "top_found.png"]


def test_no_results_write_tables_but_no_plots(tmp_path):
    rows, paths = write_all([], tmp_path)
    assert rows == []
    assert [p.name for p in paths] == [
        "campaigns.csv",
        "aggregate.json",
        "aggregate.csv",
        "paired.json",
        "paired.csv",
        "curves.json",
    ]
    assert strict_loads((tmp_path / "aggregate.json").read_text()) == []
    assert strict_loads((tmp_path / "paired.json").read_text()) == []


def test_line_labels_name_pipeline_and_budget_variants_and_the_reference_line():
    both = [result(0), result(0, pipeline=True), result(0, arm="random")]
    fig = curve_figure(both, "best_fraction", where="trace", reference=0.9, n_bootstrap=10)
    labels = [t.get_text() for t in fig.legends[0].texts]
    assert labels == ["dkl-ei", "dkl-ei (pipelined)", "random", "0.9"]
    (ax,) = fig.axes
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and set(dashed[0].get_ydata()) == {0.9}

    budgets = [result(0, steps=30), result(0, steps=60, pipeline=True)]
    fig = curve_figure(budgets, "best_fraction", where="trace", n_bootstrap=10)
    labels = [t.get_text() for t in fig.legends[0].texts]
    assert labels == ["dkl-ei (30 steps)", "dkl-ei (60 steps, pipelined)"]

    # random runs longer than the others: one budget per arm needs no budget in the label
    longer = [result(0, steps=60), result(0, arm="random", steps=300)]
    fig = curve_figure(longer, "best_fraction", where="trace", n_bootstrap=10)
    assert [t.get_text() for t in fig.legends[0].texts] == ["dkl-ei", "random"]
    assert {line.get_linestyle() for line in fig.axes[0].get_lines()} == {"-"}

    only_pipelined = [result(0, pipeline=True)]
    fig = curve_figure(only_pipelined, "best_fraction", where="trace", n_bootstrap=10)
    assert [t.get_text() for t in fig.legends[0].texts] == ["dkl-ei"]
    assert curve_figure(only_pipelined, "rmse", where="trace") is None


def test_one_subplot_per_sample(tmp_path):
    samples = ["a", "b", "c", "d"]
    results = [result(0, sample=s) for s in samples]
    fig = curve_figure(results, "top_found", where="trace", n_bootstrap=10)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == samples


def test_write_all_writes_tables_then_plots(tmp_path):
    results = [result(s, final_best_fraction=0.5 + s / 10) for s in range(3)]
    rows, paths = write_all(results, tmp_path / "out", n_bootstrap=100, seed=1)
    assert rows == aggregate(results, n_bootstrap=100, seed=1)
    assert [p.name for p in paths] == [
        "campaigns.csv",
        "aggregate.json",
        "aggregate.csv",
        "paired.json",
        "paired.csv",
        "curves.json",
        "best_fraction.png",
        "top_found.png",
        "map_rmse.png",
        "coverage50.png",
        "coverage95.png",
        "summary.png",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


# -- paired comparisons -------------------------------------------------------------------------


def arm_results(arm, fractions, steps90=None, *, seeds=None, steps=60):
    """One campaign per seed of ``arm`` with the given best fraction at the protocol budget and
    steps-to-90% (None: not reached)."""
    seeds = range(len(fractions)) if seeds is None else seeds
    steps90 = steps90 if steps90 is not None else [5] * len(fractions)
    return [
        result(
            s,
            arm=arm,
            steps=steps,
            protocol_n=8,
            best_fraction_at_protocol=f,
            steps_to_90pct_best=k,
        )
        for s, f, k in zip(seeds, fractions, steps90, strict=True)
    ]


def test_mean_ci_agrees_with_the_normal_interval_on_a_normal_sample():
    values = np.random.default_rng(7).normal(0.01, 0.05, 40)
    mean, low, high = mean_ci(values, n_bootstrap=4000, rng=1)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert mean == pytest.approx(values.mean())
    assert low == pytest.approx(mean - half, abs=0.25 * half)
    assert high == pytest.approx(mean + half, abs=0.25 * half)
    assert mean_ci([0.2] * 5) == (0.2, 0.2, 0.2)  # no spread: a zero-width interval
    assert mean_ci([0.3]) == (0.3, 0.3, 0.3)
    assert all(math.isnan(v) for v in mean_ci([]))
    with pytest.raises(ValueError, match="not finite"):
        mean_ci([0.1, math.inf])


def test_paired_differences_are_baseline_minus_arm_over_the_common_seeds():
    # The default arm finds 1.0 in seeds 0-4; random 0.9, 0.8, 1.0, 0.7 in seeds 0-3 and 1.0 in
    # seed 5: the pairs are seeds 0-3, d = random - default = [-0.1, -0.2, 0.0, -0.3].
    results = arm_results("default", [1.0] * 5, [3, 4, 6, 8, 2])
    results += arm_results("random", [0.9, 0.8, 1.0, 0.7, 1.0], seeds=[0, 1, 2, 3, 5], steps=200)
    results += arm_results("gp-xy", [1.0, 1.0, 1.0, 1.0, 1.0], [6, 8, 12, 16, 4])
    rows = paired(results, ["random", "gp-xy"], n_bootstrap=500)
    by = {(r["arm"], r["baseline"]): r for r in rows}
    assert set(by) == {
        ("default", "random"), ("default", "gp-xy"), ("gp-xy", "random"), ("random", "gp-xy")
    }  # fmt: skip
    row = by["default", "random"]
    assert (row["n_pairs"], row["protocol_n"], row["ci_method"]) == (4, 8, "BCa")
    assert row["diff_mean"] == pytest.approx(-0.15)
    assert row["diff_median"] == pytest.approx(-0.15)
    assert row["diff_ci_low"] <= row["diff_mean"] <= row["diff_ci_high"] < 0
    assert row["pass_ci"] is True
    # Steps to 90%: default's median over seeds 0-3 is 5, random's 5 (all 5): ratio 1 > 1/3.
    assert (row["steps90_median"], row["steps90_median_baseline"]) == (5.0, 5.0)
    assert row["steps90_ratio"] == 1.0 and row["steps90_ratio_limit"] == pytest.approx(1 / 3)
    assert row["pass_steps"] is False
    assert row["steps90_floor"] == 3.0 and row["steps_reachable"] is False  # 3 / 5 > 1/3
    row = by["default", "gp-xy"]  # equal fractions: a zero-width interval at 0
    assert (row["n_pairs"], row["diff_mean"], row["diff_ci_high"]) == (5, 0.0, 0.0)
    assert row["pass_ci"] is True
    assert row["steps90_ratio"] == pytest.approx(4 / 8) and row["pass_steps"] is True
    row = by["random", "gp-xy"]  # random is worse than gp-xy: d > 0, the criterion fails
    assert row["diff_mean"] == pytest.approx(0.15) and row["pass_ci"] is False
    row = by["gp-xy", "random"]  # gp-xy's median steps over seeds 0-3: 10, random's 5
    assert row["steps90_ratio"] == 2.0 and row["pass_steps"] is False


def test_the_steps_floor_is_what_shared_seed_points_allow():
    # Random's steps to 90% over five seeds: 4 and 7 within the 10 seed points (every arm gets
    # there at the same measurement), 22, 30 and never after them (no arm before its first
    # decision, the 11th): floors 4, 7, 11, 11, 11, median 11, over random's median 22: no arm
    # can have a ratio below 1/2, so the 1/3 criterion is out of reach.
    def campaigns(arm, steps90, seed_points):
        runs = arm_results(arm, [1.0] * len(steps90), steps90)
        for run in runs:
            run["n_seed_points"] = seed_points
        return runs

    random_steps = [4, 7, 22, 30, None]
    results = campaigns("default", [4, 7, 11, 11, 11], 10) + campaigns("random", random_steps, 10)
    row = paired(results, ["random"], n_bootstrap=100)[0]
    assert (row["steps90_median"], row["steps90_median_baseline"]) == (11, 22)
    assert row["steps90_floor"] == 11.0
    assert row["steps90_ratio"] == pytest.approx(0.5) and row["pass_steps"] is False
    assert row["steps_reachable"] is False
    # With 3 seed points the floors are 4, 4, 4, 4, 4: 4/22 is within 1/3.
    results = campaigns("default", [4, 4, 6, 6, 9], 3) + campaigns("random", random_steps, 3)
    row = paired(results, ["random"], n_bootstrap=100)[0]
    assert row["steps90_floor"] == 4.0 and row["steps_reachable"] is True
    assert row["steps90_ratio"] == pytest.approx(6 / 22) and row["pass_steps"] is True
    # Without the seed points' count the floor is unknown; without a limit there is no verdict.
    for run in results:
        del run["n_seed_points"]
    rows = {(r["arm"], r["baseline"]): r for r in paired(results, ["random", "default"])}
    assert rows["default", "random"]["steps90_floor"] is None
    assert rows["default", "random"]["steps_reachable"] is None
    assert rows["random", "default"]["steps_reachable"] is None


def test_censored_steps_give_a_ratio_of_zero_or_none():
    results = arm_results("a", [1.0] * 3, [4, 4, 4]) + arm_results("b", [1.0] * 3, [9, None, None])
    results += arm_results("c", [1.0] * 3, [None, None, 2])
    rows = {(r["arm"], r["baseline"]): r for r in paired(results, ["b"], n_bootstrap=100)}
    assert rows["a", "b"]["steps90_median_baseline"] is None  # its median is not reached
    assert rows["a", "b"]["steps90_ratio"] == 0.0  # the arm reached it, the baseline did not
    assert rows["c", "b"]["steps90_median"] is None and rows["c", "b"]["steps90_ratio"] is None
    assert rows["a", "b"]["pass_steps"] is None  # no steps criterion against "b"


def test_a_group_without_pairs_or_without_the_baseline():
    results = arm_results("a", [1.0, 1.0], seeds=[0, 1]) + arm_results("b", [0.5], seeds=[7])
    (row,) = [r for r in paired(results, ["b", "missing"]) if r["arm"] == "a"]
    assert row["n_pairs"] == 0 and row["diff_mean"] is None and row["pass_ci"] is None


def test_rows_hold_the_protocol_result_and_the_coverage_range_after_the_seed_points():
    # Map evaluations at n = 2 (the seed points: left out), 4 and 6; medians over the three
    # seeds: coverage95 at 4 is median(0.93, 0.80, 0.97) = 0.93, at 6 median(0.95, 0.9, 0.99).
    maps = [[0.2, 0.93, 0.95], [0.1, 0.80, 0.90], [0.3, 0.97, 0.99]]
    results = [
        result(
            s,
            protocol_n=5,
            best_fraction_at_protocol=0.8 + s / 10,
            map={"n": [2, 4, 6], "coverage95": c, "coverage50": [0.1, 0.45, 0.55]},
        )
        for s, c in enumerate(maps)
    ]
    (row,) = aggregate(results, n_bootstrap=100)
    assert row["protocol_n"] == 5
    assert row["best_fraction_at_protocol_median"] == pytest.approx(0.9)
    assert row["coverage95_min"] == pytest.approx(0.93)
    assert row["coverage95_max"] == pytest.approx(0.95)
    assert (row["coverage50_min"], row["coverage50_max"]) == (0.45, 0.55)
    assert row["pass_coverage"] is True  # 0.93-0.95 within 0.85-0.99, 0.45-0.55 in 0.4-0.6
    low = [dict(r, map=dict(r["map"], coverage50=[0.1, 0.3, 0.5])) for r in results]
    assert aggregate(low, n_bootstrap=10)[0]["pass_coverage"] is False  # 0.3 < 0.4
    (row,) = aggregate([result(0, map={})])
    assert row["coverage95_min"] is None and row["protocol_n"] is None
    assert row["pass_coverage"] is None


def test_summary_figure_has_a_row_per_sample_and_the_paired_intervals():
    results = arm_results("default", [1.0, 0.9, 1.0]) + arm_results("random", [0.8, 0.9, 0.7])
    results += arm_results("gp-xy", [0.9, 1.0, 0.95])
    results += [result(s, sample="lattice", arm=a) for s in range(2) for a in ("default", "random")]
    rows = paired(results, ["random", "gp-xy"], n_bootstrap=100)
    fig = summary_figure(results, rows, n_bootstrap=50)
    axes = fig.axes
    assert len(axes) == 8 and axes[0].get_title(loc="left") == "lattice"
    diff = axes[7]  # plasmonic's paired panel: default and gp-xy vs random, default vs gp-xy...
    labels = [t.get_text() for t in diff.get_xticklabels()]
    assert labels == ["default", "gp-xy", "random"]
    assert len(diff.containers) == sum(r["sample"] == "plasmonic" for r in rows) == 4
    dashed = [line.get_ydata()[0] for line in diff.get_lines() if line.get_linestyle() == "--"]
    assert dashed == [0.02]
    coverage95 = axes[6]
    assert [line.get_ydata()[0] for line in coverage95.get_lines()][-1] == 0.95
    assert summary_figure([], []) is None


def test_write_all_writes_paired_tables_equal_to_paired(tmp_path):
    results = arm_results("default", [1.0, 0.9, 1.0]) + arm_results("random", [0.8, 0.9, 0.7])
    write_all(results, tmp_path, baselines=["random"], n_bootstrap=200, seed=2)
    rows = strict_loads((tmp_path / "paired.json").read_text())
    assert rows == paired(results, ["random"], n_bootstrap=200, seed=2)
    assert [(r["arm"], r["baseline"]) for r in rows] == [("default", "random")]
    with (tmp_path / "paired.csv").open(newline="") as f:
        (line,) = list(csv.DictReader(f))
    assert float(line["diff_mean"]) == pytest.approx(-0.5 / 3)
    assert line["pass_ci"] == "True"
    curves_json = strict_loads((tmp_path / "curves.json").read_text())
    entry = next(c for c in curves_json if c["metric"] == "coverage95" and c["arm"] == "random")
    assert entry["n"] == [2, 4, 6] and entry["median"] == [0.9, 0.93, 0.95]
    assert (tmp_path / "summary.png").read_bytes().startswith(PNG)
