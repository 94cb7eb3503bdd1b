"""``dklscope bench protocol`` runs and reports the documented figures (speed is not judged)."""

from __future__ import annotations

import json

import pytest

from dklscope.cli import main

FIGURES = ("median_rtt_ms", "p99_rtt_ms", "throughput_per_s", "reference_median_rtt_ms")


def test_bench_protocol_writes_the_figures(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["bench", "protocol", "--n", "50", "--warmup", "5", "--rounds", "3"]
    assert main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    cases = [row["case"] for row in rows]
    assert cases[0] == "bare pyzmq REQ/REP echo"
    assert "measure 1 point, 1 request" in cases
    reference = rows[0]["median_rtt_ms"]
    for row in rows:
        assert set(FIGURES) <= set(row)
        assert row["reference_median_rtt_ms"] == reference > 0
        assert row["throughput_per_s"] > 0
        assert row["channels"] == 2048
    *timed, streamed = rows
    for row in timed:  # every round trip of every round is in the figures
        assert row["n"] == 50
        assert row["throughput_is"].startswith("sequential")
        assert row["rate_at_median_per_s"] == pytest.approx(1000 / row["median_rtt_ms"])
        assert row["ratio_to_reference"] == pytest.approx(row["median_rtt_ms"] / reference)
    assert streamed["case"] == "measure 50 points, streamed"
    assert streamed["throughput_is"].startswith("streamed")
