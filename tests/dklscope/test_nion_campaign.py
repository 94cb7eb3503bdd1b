"""A real ``dklscope run`` of configs/nion_usim.yaml on Nion's simulated STEM, cut to 10 steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dklscope.campaign.journal import Journal

pytest.importorskip("nion.usim_device", reason="needs the nion extra")

ROOT = Path(__file__).resolve().parents[2]
PER_FLAKE = 0.3  # the usim: each flake adds 0.3 mean free paths of thickness


OVERSAMPLE = 4  # sub-pixels a side: a thin flake or a narrow overlap can miss a pixel centre


def flakes_over_pixels(settings: dict) -> np.ndarray:
    """The usim's flakes over the overview, drawn by its own code on a grid `OVERSAMPLE` times
    finer than the overview's pixels: (rows * OVERSAMPLE, cols * OVERSAMPLE)."""
    from nion.usim_device import SampleSimulator
    from nion.utils import Geometry

    shape = tuple(OVERSAMPLE * n for n in settings["overview_shape"])
    layers = np.zeros(shape)
    fov = Geometry.FloatSize(settings["fov_nm"], settings["fov_nm"])
    for feature in SampleSimulator.RectangleFlakeSample(1000).features:
        feature.plot(
            layers, Geometry.FloatPoint(), fov, Geometry.FloatPoint(), Geometry.IntSize(*shape)
        )
    return layers


def around(layers: np.ndarray, row: int, col: int) -> np.ndarray:
    """The finer map's values over overview pixel (row, col) and its 8 neighbours."""
    k = OVERSAMPLE
    return layers[max(row - 1, 0) * k : (row + 2) * k, max(col - 1, 0) * k : (col + 2) * k]


@pytest.mark.slow
def test_a_ten_step_campaign_runs_on_the_usim_and_measures_what_its_flakes_say(tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "nion_usim.yaml").read_text())
    config["budget"]["steps"] = 10
    path = tmp_path / "nion_usim.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "dklscope", "run", str(path), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    seeds = config["budget"]["seed_points"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_measurements"] == seeds + 10 and summary["n_failed"] == 0
    assert summary["instrument"].startswith("Nion Swift usim_stem_controller")
    assert (out / "visits.png").is_file()

    # Each journaled scalar (plasmons over zero-loss) is the one the flakes under the probe
    # give, exp(0.3 n) - 1, for a flake count n found within that pixel or a neighbour (the
    # edge of a flake may fall either side of a pixel centre, and a flake's corner or a narrow
    # overlap may lie between a pixel's centre and its edge: the map is drawn finer).
    layers = flakes_over_pixels(config["instrument"]["nion_usim"])
    with Journal(out / "journal.sqlite") as journal:
        measured = [m for m in journal.measurements() if m.status == "ok"]
    assert len(measured) == seeds + 10
    for m in measured:
        row, col = int(m.y), int(m.x)
        assert (m.x_read, m.y_read) == pytest.approx((m.x, m.y))
        near = np.unique(around(layers, row, col))
        assert np.min(np.abs(np.expm1(PER_FLAKE * near) - m.scalar)) < 0.05, (m.x, m.y, near)
    best = max(measured, key=lambda m: m.scalar)
    assert best.scalar > np.expm1(PER_FLAKE * 1.5)  # on two flakes or more, not on vacuum
    assert around(layers, int(best.y), int(best.x)).max() >= 2
