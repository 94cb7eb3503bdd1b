"""End to end: campaigns on the simulated microscope over real ZeroMQ on loopback."""

import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from dklscope.campaign.instruments import build_sample, simulated_campaign
from dklscope.campaign.journal import Journal
from dklscope.cli import main
from dklscope.config import load_config, parse_config
from dklscope.observe.report import ground_truth_figures

ROOT = Path(__file__).resolve().parents[2]

SMALL = """
seed: 3
dwell_s: 0.05
instrument:
  simulator: {shape: [48, 48], seed: 1, noise: false}
budget: {seed_points: 10, steps: 25}
patches: {size: 10}
model: {first_fit_iterations: 100, refit_iterations: 20}
scalarizer: {window: [1.05, 1.35]}
"""


@pytest.mark.slow
def test_a_small_campaign_records_everything_it_measures(tmp_path):
    config_path = tmp_path / "small.yaml"
    config_path.write_text(SMALL)
    out = tmp_path / "run"
    assert main(["run", str(config_path), "--out", str(out), "--no-progress"]) == 0

    summary = json.loads((out / "summary.json").read_text())
    for key in ("n_measurements", "best_value", "best_position", "wall_s", "median_step_latency_s"):
        assert summary[key] is not None, key
    assert summary["n_measurements"] == 35
    for png in ("visits.png", "prediction.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config = parse_config(SMALL)
    sample = build_sample(config.instrument.simulator)
    truth = sample.expected_spectra(config.dwell_s)
    with Journal(out / "journal.sqlite") as journal:
        measurements = journal.measurements()
        assert journal.metadata("config_text") == SMALL
        assert journal.metadata("config") == config.to_dict()
        assert journal.metadata("instrument")["overview_shape"] == [48, 48]
        np.testing.assert_array_equal(journal.array("overview"), sample.image)
    assert len(measurements) == summary["n_measurements"]
    assert [m.seq for m in measurements] == list(range(35))
    assert [m.kind for m in measurements] == ["seed"] * 10 + ["policy"] * 25
    assert len({m.candidate for m in measurements}) == 35  # nothing measured twice
    for m in measurements:
        # Noise-free: the journal holds exactly the spectrum of the pixel that was chosen.
        np.testing.assert_array_equal(m.spectrum, truth[int(m.y), int(m.x)])
        assert (m.x_read, m.y_read) == (m.x, m.y)
        assert m.t_decided <= m.t_acquired
    best = max(measurements, key=lambda m: m.scalar)
    assert summary["best_value"] == best.scalar
    assert (summary["best_position"]["x_px"], summary["best_position"]["y_px"]) == (best.x, best.y)
    policy_steps = [m for m in measurements if m.kind == "policy"]
    assert all(m.acquisition_value is not None and m.predicted_std > 0 for m in policy_steps)


def run_campaign(config):
    """A campaign over loopback ZeroMQ with a throwaway journal; returns its truth figures."""
    with simulated_campaign(config) as (campaign, sample):
        campaign.run()
        return ground_truth_figures(campaign, sample)


@pytest.mark.slow
def test_dkl_with_expected_improvement_beats_random_sampling():
    """Over 3 samples x 4 seeds, with the quickstart's budget (70 of 2,304 pixels), DKL with
    EI measures a higher true maximum than random sampling does.

    One campaign's fraction of the true maximum scatters by about 0.06 (and between machines,
    whose float reductions differ), and now and then an EI campaign stays on a secondary
    maximum (0.63 to 0.78 of the true one), so the claim is about the 12 paired campaigns: EI
    finds more on average, and its median is higher by 0.02.
    """
    base = load_config(ROOT / "configs" / "quickstart.yaml")
    fractions: dict[str, list[float]] = {"ei": [], "random": []}
    for sample_seed in (1, 2, 3):
        for seed in (0, 1, 2, 3):
            for policy in fractions:
                config = dataclasses.replace(
                    base,
                    seed=seed,
                    policy=dataclasses.replace(base.policy, kind=policy),
                    instrument=dataclasses.replace(
                        base.instrument,
                        simulator=dataclasses.replace(base.instrument.simulator, seed=sample_seed),
                    ),
                )
                fractions[policy].append(run_campaign(config)["best_fraction"])
    ei, random = fractions["ei"], fractions["random"]
    assert statistics.mean(ei) > statistics.mean(random), fractions
    assert statistics.median(ei) > statistics.median(random) + 0.02, fractions
    assert statistics.median(ei) > 0.9, fractions


@pytest.mark.slow
def test_a_campaign_on_vae_latents_trains_saves_and_reuses_the_embedding(tmp_path):
    text = SMALL.replace(
        "budget: {seed_points: 10, steps: 25}", "budget: {seed_points: 5, steps: 3}"
    )
    latents = text + "embedding: {kind: vae, latent_dim: 3, epochs: 2}\n"
    latents = latents.replace("model: {", "model: {input: latents, ")
    (tmp_path / "latents.yaml").write_text(latents)
    out = tmp_path / "latents"
    assert main(["run", str(tmp_path / "latents.yaml"), "--out", str(out), "--no-progress"]) == 0
    assert (out / "embedding.pt").is_file()
    with Journal(out / "journal.sqlite") as journal:
        assert len(journal.metadata("embedding_training")["train_loss"]) == 2
        assert len(journal.measurements()) == 8

    # A later campaign reads the saved encoder and trains the DKL through it.
    encoder = text + f"embedding: {{kind: vae, load: {out / 'embedding.pt'}}}\n"
    encoder = encoder.replace("model: {", "model: {input: encoder, ")
    with simulated_campaign(parse_config(encoder)) as (campaign, _):
        assert campaign.candidates.shape == (48 * 48, 100)
        campaign.run()
        assert campaign.model is not None
        assert campaign.model.feature_extractor(campaign.candidates[:2]).shape == (2, 3)


SHIPPED = sorted(  # campaign configs on the built-in simulator; bench_*.yaml are grids of them
    # (tests/dklscope/test_grid.py), nion_usim.yaml is run in tests/dklscope/test_nion_campaign.py
    p
    for p in (ROOT / "configs").glob("*.yaml")
    if not p.name.startswith("bench_") and load_config(p).instrument.simulator is not None
)


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_every_shipped_config_runs_a_campaign(path):
    """Each config in configs/ runs as shipped, on a budget cut to 4 seed points + 3 steps."""
    config = load_config(path)
    config = dataclasses.replace(
        config, budget=dataclasses.replace(config.budget, seed_points=4, steps=3)
    )
    with simulated_campaign(config) as (campaign, _):
        campaign.run()
        assert [m.kind for m in campaign.journal.measurements()] == ["seed"] * 4 + ["policy"] * 3
        assert all(np.isfinite(m.scalar) for m in campaign.history)
