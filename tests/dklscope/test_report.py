"""`dklscope.observe.report`: the summary's figures against hand-made measurements with known
answers, and the plots of `write_report` (campaign_stub.py describes the measurements)."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from dklscope.observe.report import (
    REPORT_FILES,
    candidate_latents,
    example_spectra,
    idle_fraction,
    latent_figure,
    scalars_figure,
    step_latencies_s,
    summarize,
    timeline_figure,
    visits_figure,
    write_report,
)

sys.path.insert(0, str(Path(__file__).parent))
from campaign_stub import FakeEmbedding, StubCampaign, journal_with, measurement

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def campaign(tmp_path):
    with journal_with(tmp_path / "journal.sqlite") as journal:
        yield StubCampaign(journal)


def test_the_idle_fraction_is_idle_over_busy_plus_idle():
    # idle 0.5 + 0.25 + 0 + 1 + 0.25 + 0.5 = 2.5 s; busy 1+1+0.5+1+2+1+1+1.5 = 9 s, failed and
    # retried attempts included (the instrument was busy with them too).
    with journal_with(":memory:") as journal:
        history = journal.measurements()
    assert idle_fraction(history) == pytest.approx(2.5 / (9.0 + 2.5), rel=1e-12)


def test_no_idle_fraction_without_idle_times():
    history = [measurement(i) for i in range(3)]  # idle_s None, t_done NaN
    assert idle_fraction(history) is None
    assert step_latencies_s(history) == []
    assert idle_fraction([measurement(0, t_requested=0.0, t_done=1.0, idle_s=0.0)]) == 0.0


def test_step_latencies_skip_the_pause_between_runs():
    with journal_with(":memory:") as journal:
        history = journal.measurements()
    # idle + busy of every attempt but the first of each run (seq 0 and 6).
    expected = [1.5, 0.75, 1.0, 3.0, 1.25, 2.0]
    assert step_latencies_s(history) == pytest.approx(expected, abs=1e-6)


def test_the_summary_counts_statuses_and_takes_medians_per_decision(campaign):
    summary = summarize(campaign, wall_s=12.5)
    assert summary["n_measurements"] == 6  # status ok, the NaN scalar included
    assert summary["n_attempts"] == 8
    assert summary["n_failed"] == 1
    assert summary["n_retried"] == 1
    assert summary["n_seed_points"] == 2
    assert summary["wall_s"] == 12.5
    assert summary["best_value"] == 5.0
    best = campaign.history[3]
    assert summary["best_position"] == {
        "x_px": best.x,
        "y_px": best.y,
        "x": best.x * 0.25,
        "y": best.y * 0.25,
        "units": "nm",
    }
    # Decisions 2..6 took 0.2, 0.4, 0.1, 0.3, 0.5 s; decision 2's retry does not count twice.
    assert summary["median_decision_latency_s"] == pytest.approx(0.3)
    assert summary["median_step_latency_s"] == pytest.approx(1.375, abs=1e-6)
    assert summary["idle_fraction"] == pytest.approx(2.5 / 11.5)
    assert summary["policy"] == "ei"
    assert summary["scalarizer"]["window"] == [0.6, 1.2]


def test_the_summary_drops_the_step_latency_it_cannot_compute(tmp_path):
    with journal_with(tmp_path / "j.sqlite", [measurement(i) for i in range(3)]) as journal:
        summary = summarize(StubCampaign(journal))
    assert "median_step_latency_s" not in summary
    assert summary["idle_fraction"] is None
    assert summary["wall_s"] is None
    assert (summary["n_failed"], summary["n_retried"], summary["n_measurements"]) == (0, 0, 3)


def test_write_report_writes_every_plot_and_a_strict_json_summary(campaign, tmp_path):
    out = tmp_path / "report"
    written = write_report(campaign, out, wall_s=3.0)
    # no embedding, no model records
    expected = [name for name in REPORT_FILES if name not in ("latent.png", "model.png")]
    assert [p.name for p in written] == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # nothing else written
    for path in written[:-1]:
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000, path
    summary = json.loads((out / "summary.json").read_text(), parse_constant=pytest.fail)
    assert summary == json.loads(json.dumps(summarize(campaign, 3.0)))
    assert campaign.predict_calls == 1


def test_a_given_prediction_is_not_recomputed_and_too_few_scalars_give_none(tmp_path):
    with journal_with(tmp_path / "a.sqlite") as journal:
        campaign = StubCampaign(journal)
        n = len(campaign.patches)
        written = write_report(campaign, tmp_path / "a", prediction=(np.zeros(n), np.ones(n)))
        assert campaign.predict_calls == 0
        assert "prediction.png" in [p.name for p in written]

    one = [measurement(0, scalar=1.0), measurement(1, scalar=math.nan)]
    with journal_with(tmp_path / "b.sqlite", one) as journal:
        campaign = StubCampaign(journal)
        written = write_report(campaign, tmp_path / "b")
    assert campaign.predict_calls == 0
    assert [p.name for p in written] == [
        "visits.png",
        "scalars.png",
        "timeline.png",
        "spectra.png",
        "summary.json",
    ]


def test_the_latent_plot_comes_only_with_an_embedding(tmp_path):
    with journal_with(tmp_path / "journal.sqlite") as journal:
        embedding = FakeEmbedding(dim=3)
        campaign = StubCampaign(journal, embedding=embedding)
        written = write_report(campaign, tmp_path / "out")
    assert "latent.png" in [p.name for p in written]
    assert (tmp_path / "out" / "latent.png").read_bytes()[:8] == PNG
    size = campaign.config.patches.size
    assert embedding.seen.shape == (len(campaign.patches), 1, size, size)
    assert embedding.seen.dtype == np.float32


def test_candidate_latents_standardise_patches_as_the_campaign_does(campaign):
    campaign.embedding = FakeEmbedding(dim=2)
    z = candidate_latents(campaign)
    ov = campaign.overview
    expected = (campaign.patches.data.reshape(len(z), -1)[:, :2] - ov.mean()) / ov.std()
    np.testing.assert_allclose(z, expected, rtol=1e-6)

    fig = latent_figure(campaign)
    measured = next(c for c in fig.axes[0].collections if c.get_label() == "measured")
    scored = [m for m in campaign.history if m.ok and math.isfinite(m.scalar)]
    np.testing.assert_allclose(measured.get_offsets(), z[[m.candidate for m in scored]])
    np.testing.assert_allclose(measured.get_array(), [m.scalar for m in scored])


def test_failed_attempts_are_red_crosses_on_the_overview(campaign):
    fig = visits_figure(campaign)
    crosses = next(c for c in fig.axes[0].collections if c.get_label().startswith("failed"))
    failed = [m for m in campaign.history if not m.ok]
    assert [m.seq for m in failed] == [2, 4]
    np.testing.assert_array_equal(crosses.get_offsets(), [[m.x, m.y] for m in failed])


def test_scalars_plot_the_best_so_far_of_the_finite_ok_scalars(campaign):
    fig = scalars_figure(campaign)
    (line,) = [line for line in fig.axes[0].lines if line.get_label() == "best so far"]
    # ok with a finite scalar: seq 0, 1, 3, 6, 7 with 3, 1, 5, 2, 4.
    np.testing.assert_array_equal(line.get_xdata(), [0, 1, 3, 6, 7])
    np.testing.assert_array_equal(line.get_ydata(), [3, 3, 5, 5, 5])


def test_the_timeline_states_the_idle_fraction(campaign):
    fig = timeline_figure(campaign)
    texts = [ax.get_title(loc="left") for ax in fig.axes]
    assert "instrument idle 21.7% of the time" in texts  # 2.5 / 11.5


def test_example_spectra_are_the_best_median_and_worst(campaign):
    examples = example_spectra(campaign)
    assert {k: m.seq for k, m in examples.items()} == {"best": 3, "median": 0, "worst": 1}


@pytest.mark.slow
def test_a_report_and_an_export_of_a_finished_campaign_folder(tmp_path):
    """End to end: a small simulated run, then its folder reported and exported."""
    import h5py

    from dklscope.campaign.journal import Journal
    from dklscope.campaign.loop import Campaign
    from dklscope.cli import main
    from dklscope.observe.export import export_campaign

    config = tmp_path / "small.yaml"
    config.write_text(
        "seed: 3\ndwell_s: 0.05\n"
        "instrument:\n  simulator: {shape: [24, 24], seed: 1, noise: false}\n"
        "budget: {seed_points: 4, steps: 4}\npatches: {size: 6, stride: 2}\n"
        "model: {first_fit_iterations: 30, refit_iterations: 5}\n"
        "scalarizer: {window: [1.05, 1.35]}\n"
        "embedding: {kind: vae, latent_dim: 2, epochs: 1}\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    campaign = Campaign.from_journal(out)
    try:
        assert campaign.embedding is not None  # read back from embedding.pt
        written = write_report(campaign, tmp_path / "report")
        records = campaign.journal.events("model")  # model.png with the campaign's records
        expected = [n for n in REPORT_FILES if n != "model.png" or records]
        assert [p.name for p in written] == expected
        assert all(p.stat().st_size > 0 for p in written)
        path = export_campaign(campaign, tmp_path / "campaign.h5", "h5")
    finally:
        campaign.journal.close()
    with Journal(out / "journal.sqlite") as journal, h5py.File(path, "r") as f:
        measurements = journal.measurements()
        spectra = f["measurements/spectra"][()]
        for row, m in zip(spectra, measurements, strict=True):
            if len(m.spectrum):
                np.testing.assert_array_equal(row, m.spectrum)
        np.testing.assert_array_equal(f["measurements/x_px"][()], [m.x for m in measurements])


# -- model records ------------------------------------------------------------------------------


def model_event(decision, flag=None, coverage95=0.93, chosen="dkl-ensemble", **fields):
    """A ``model`` event's detail as the campaign journals it at a refit."""
    detail = {
        "decision": decision,
        "n_train": decision + 3,
        "kind": "auto",
        "scores": {"gp-xy": -1.02, "dkl-ensemble": -0.87 + decision / 100},
        "weights": {"gp-xy": 0.1, "dkl-ensemble": 0.9},
        "chosen": chosen,
        "coverage50": 0.47,
        "coverage95": coverage95,
        "z_sd": 1.08,
        "flag": flag,
    }
    detail.update(fields)
    return detail


def test_the_report_plots_the_model_records_and_sums_them_up(tmp_path):
    from dklscope.observe.model_records import model_figure, model_records

    with journal_with(tmp_path / "journal.sqlite") as journal:
        journal.log_event("model", **model_event(2))
        journal.log_event("run_started", measurements=0)  # other events do not count
        journal.log_event("model", **model_event(3, flag="overconfident", coverage95=0.71))
        journal.log_event("model", **model_event(4, chosen="gp-xy", weights={"gp-xy": 1.0}))
        journal.log_event("model", decision=5, kind="auto", scores="bad")  # left out, logged
        campaign = StubCampaign(journal)
        written = write_report(campaign, tmp_path / "report")
        records = model_records(journal)
    assert [r.decision for r in records] == [2, 3, 4]
    assert [p.name for p in written][-2:] == ["model.png", "summary.json"]
    assert (tmp_path / "report" / "model.png").read_bytes()[:8] == PNG
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["model"] == {
        "kind": "auto",
        "chosen": "gp-xy",
        "weights": {"gp-xy": 1.0},
        "coverage50": 0.47,
        "coverage95": 0.93,
        "z_sd": 1.08,
        "flag": None,
        "decision": 4,
        "n_refits": 3,
        "n_flagged": 1,
    }
    fig = model_figure(records)
    scores, weights, coverage, z = fig.axes
    lines = [line for line in scores.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in lines] == ["gp-xy", "dkl-ensemble"]
    np.testing.assert_allclose(lines[1].get_ydata(), [-0.85, -0.84, -0.83])
    weights = [line for line in weights.get_lines() if line.get_label() == "dkl-ensemble"]
    np.testing.assert_allclose(weights[0].get_ydata(), [0.9, 0.9, np.nan])  # not a candidate
    red = [line.get_xdata()[0] for line in scores.get_lines() if line.get_color() == "red"]
    assert red == [3]  # the flagged refit, marked on every panel
    targets = [line.get_ydata()[0] for line in coverage.get_lines() if line.get_linestyle() == "--"]
    assert targets == [0.5, 0.95]
    red = [c for c in coverage.collections if len(c.get_offsets())]  # the flagged refit's marks
    assert [tuple(c.get_offsets()[0]) for c in red] == [(3.0, 0.47), (3.0, 0.71)]
    assert [line.get_ydata()[0] for line in z.get_lines() if line.get_linestyle() == "--"] == [1]


def test_a_flag_is_explained_in_words():
    from dklscope.observe.model_records import ModelRecord

    over = ModelRecord.from_event(model_event(3, flag="overconfident", coverage95=0.71))
    assert over.warning() == (
        "95 % intervals held only 71 % and 50 % intervals 47 % of left-out measurements: "
        "the error bars are too narrow"
    )
    under = ModelRecord.from_event(model_event(3, flag="underconfident", coverage95=1.0))
    assert under.warning().endswith("held 100 % and 50 % intervals 47 % of left-out "
                                    "measurements: the error bars are too wide")  # fmt: skip
    assert ModelRecord.from_event(model_event(3)).warning() is None
    with pytest.raises(ValueError, match="coverage95: must be in"):
        ModelRecord.from_event(model_event(3, coverage95=7))


def test_no_model_records_no_model_plot_and_no_model_block(campaign, tmp_path):
    written = write_report(campaign, tmp_path / "r")
    assert "model.png" not in [p.name for p in written]
    assert "model" not in json.loads((tmp_path / "r" / "summary.json").read_text())
