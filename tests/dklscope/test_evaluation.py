"""Metrics of a campaign against the ground truth, on hand-made truths with known answers."""

import numpy as np
import pytest

from dklscope.observe.evaluation import Z50, Z95, map_metrics, trace_metrics


def test_trace_metrics_follow_the_best_found_and_the_top_locations():
    truth = np.array([1.0, 5.0, 2.0, 10.0, 9.5, np.nan, 3.0, 4.0, 0.0, 6.0])
    # top 20% of 10 candidates: the 2 best, 3 (10.0) and 4 (9.5)
    trace = trace_metrics(truth, [0, 2, 1, 4, 3, 5], top_percent=20)
    assert trace["n"] == [1, 2, 3, 4, 5, 6]
    assert trace["best_fraction"] == pytest.approx([0.1, 0.2, 0.5, 0.95, 1.0, 1.0])
    assert trace["top_found"] == pytest.approx([0, 0, 0, 0.5, 1.0, 1.0])
    assert trace["steps_to_90pct_best"] == 4
    assert trace["steps_to_top_percent"] == 4


def test_unreached_goals_are_none_and_at_least_one_location_is_top():
    truth = np.arange(1.0, 201.0)  # 1% of 200: the 2 best
    trace = trace_metrics(truth, [0, 1, 2], top_percent=0.1)  # 0.2 locations: still 1
    assert trace["steps_to_90pct_best"] is None and trace["steps_to_top_percent"] is None
    assert trace_metrics(truth, [199], top_percent=0.1)["top_found"] == [1.0]


def test_map_metrics_on_known_errors_and_intervals():
    truth = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 100.0])
    mean = np.array([0.0, 1.5, 2.0, 2.0, 4.0, -5.0])
    std = np.ones(6)
    unmeasured = np.array([True, True, True, True, True, False])  # the last one was measured
    scores = map_metrics(truth, mean, std, unmeasured)
    residual = np.array([0.0, 0.5, 0.0, -1.0, 0.0])
    assert scores["rmse"] == pytest.approx(np.sqrt(np.mean(residual**2)))
    assert scores["r2"] == pytest.approx(1 - 1.25 / 10.0)
    assert scores["coverage50"] == pytest.approx(4 / 5)  # |r| <= 0.674: all but the -1.0
    assert scores["coverage95"] == pytest.approx(1.0)
    assert 0.67 < Z50 < 0.68 and 1.95 < Z95 < 1.97


def test_map_metrics_without_unmeasured_candidates_are_none():
    scores = map_metrics(np.ones(3), np.ones(3), np.ones(3), np.zeros(3, dtype=bool))
    assert scores == {"rmse": None, "r2": None, "coverage50": None, "coverage95": None}


def test_a_replay_s_truth_is_a_measurement_and_a_synthetic_sample_s_is_not():
    from pathlib import Path

    from dklscope.config import load_config
    from dklscope.observe.evaluation import truth_is_measured

    configs = Path(__file__).resolve().parents[2] / "configs"
    assert truth_is_measured(load_config(configs / "beps_replay.yaml"))
    assert not truth_is_measured(load_config(configs / "plasmonic.yaml"))
