"""Campaigns that learn several scalarizers of the same spectra (`predict:`)."""

import numpy as np
import pytest
from botorch.models import ModelListGP

from dklscope.campaign.instruments import simulated_campaign
from dklscope.config import ConfigError, parse_config
from dklscope.model.dkl import posterior_mean_std
from dklscope.model.policies import RandomChoice
from dklscope.model.scalarizers import build_scalarizer
from dklscope.observe.evaluation import true_scalars

# The lattice sample's defect mode (1.2 eV) is sought; its edge plasmon (0.8 eV, strong near
# the vacuum) and the bulk plasmon's energy (2.2 eV in one domain, 2.5 eV in the other) are
# learned alongside.
PREDICTING = """
seed: 4
instrument:
  simulator: {shape: [32, 32], seed: 2, noise: false}
budget: {seed_points: 10, steps: 50}
patches: {size: 8}
scalarizer: {window: [1.05, 1.35]}
predict:
  edge: {kind: maximum, window: [0.7, 0.9]}
  bulk_energy: {kind: argmax, window: [2.0, 2.8]}
"""


class RandomWithModel(RandomChoice):
    """Random choices, with a model fitted for each (kept with its state)."""

    needs_model = True

    def __init__(self) -> None:
        self.states = []

    def choose(self, state):
        self.states.append(state)
        return super().choose(state)


@pytest.fixture(scope="module")
def predicting():
    """A campaign of random measurements (unbiased: the fairest test of what the model
    learns) and, from one fit to them all, every output's map and truth."""
    config = parse_config(PREDICTING)
    with simulated_campaign(config, policy=RandomChoice()) as (campaign, sample):
        campaign.run()
        maps = campaign.predict_outputs()
        truths = {
            name: true_scalars(campaign, sample) if name == "scalar" else None
            for name in campaign.output_names
        }
        spectra = sample.expected_spectra(config.dwell_s)
        p = campaign.patches
        for name, scalarizer in config.predict.items():
            truth = build_scalarizer(scalarizer)(spectra, campaign.axis)
            truths[name] = truth[sample.spectrum_pixel(p.rows, p.cols)]
        yield campaign, maps, truths


@pytest.mark.slow
def test_every_predicted_scalarizer_is_learned_on_one_network(predicting):
    campaign, _, _ = predicting
    assert campaign.output_names == ("scalar", "edge", "bulk_energy")
    assert isinstance(campaign.model, ModelListGP) and campaign.model.num_outputs == 3
    networks = {id(m.feature_extractor) for m in campaign.model.models}
    assert len(networks) == 1
    _, Y = campaign.training_data()
    assert Y.shape == (60, 3)
    edge = build_scalarizer(campaign.config.predict["edge"])
    for m, row in zip(campaign.ok_measurements(), Y.numpy(), strict=True):
        assert row[0] == m.scalar
        assert row[1] == pytest.approx(float(edge(m.spectrum, campaign.axis)))


@pytest.mark.slow
def test_each_predicted_map_follows_its_own_truth(predicting):
    """From 60 random measurements of 1,024 pixels, each output's map correlates with its own
    truth (measured: r = 0.41, 0.43, 0.48; seeds 5 and 6 alike) and far less with the
    others' (at most 0.14)."""
    campaign, maps, truths = predicting
    assert list(maps) == ["scalar", "edge", "bulk_energy"]
    for mean, std in maps.values():
        assert mean.shape == std.shape == (len(campaign.candidates),)
        assert np.all(std > 0)
    np.testing.assert_array_equal(maps["scalar"][0], campaign.predict()[0])
    r = np.array([[np.corrcoef(maps[a][0], truths[b])[0, 1] for b in truths] for a in maps])
    assert np.all(np.diag(r) > 0.35)
    off = ~np.eye(3, dtype=bool)
    assert np.all((np.diag(r)[:, None] - r)[off] > 0.2)


def test_policies_rank_the_scalar_and_see_every_output():
    recorder = RandomWithModel()
    config = parse_config(PREDICTING.replace("steps: 50", "steps: 2"))
    with simulated_campaign(config, policy=recorder) as (campaign, _):
        campaign.run()
    state = recorder.states[-1]
    assert set(state.outputs) == {"scalar", "edge", "bulk_energy"}
    assert state.model is state.outputs["scalar"]
    assert state.model.num_outputs == 1
    # The decision journals the scalar's prediction.
    last = campaign.decisions[-1]
    mean, std = posterior_mean_std(state.model, state.candidates[[last.candidate]])
    assert (last.predicted_mean, last.predicted_std) == pytest.approx((mean[0], std[0]))


def test_an_output_without_finite_values_yet_is_left_out_of_the_model():
    config = parse_config(
        PREDICTING.replace("steps: 20", "steps: 3")
        + "  never: {kind: peak_prominence, window: [1.0, 2.0], min_prominence: 1.0e+12}\n"
    )
    with simulated_campaign(config) as (campaign, _):
        campaign.run()
        assert campaign.output_names[-1] == "never"
        assert campaign.model.num_outputs == 3  # the scalar, edge and bulk_energy
        maps = campaign.predict_outputs()
        assert np.isnan(maps["never"][0]).all() and np.isfinite(maps["edge"][0]).all()


def test_a_predicted_scalarizer_is_checked_against_the_instrument():
    config = parse_config(PREDICTING.replace("[0.7, 0.9]", "[5.0, 6.0]"))
    with pytest.raises(ConfigError, match=r"^predict\.edge\.window: .* eV"):
        with simulated_campaign(config):
            pass


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ("predict: [1]", "predict: must be a mapping"),
        ("predict: {scalar: {window: [1, 2]}}", "predict.scalar: a name is"),
        ("predict: {'2x': {window: [1, 2]}}", "predict.2x: a name is"),
        ("predict: {b: {kind: nope}}", "predict.b.kind: must be one of"),
    ],
)
def test_bad_predict_sections_name_the_key(entry, fragment):
    base = PREDICTING.split("predict:")[0]
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("[", r"\[")):
        parse_config(base + entry + "\n")


@pytest.mark.slow
def test_reports_and_exports_carry_every_output(predicting, tmp_path):
    import h5py
    from PIL import Image

    from dklscope.observe.export import export_campaign
    from dklscope.observe.report import write_report

    campaign, maps, _ = predicting
    write_report(campaign, tmp_path / "report")
    one_row = tmp_path / "one"
    write_report(campaign, one_row, prediction=maps["scalar"])
    with (
        Image.open(tmp_path / "report" / "prediction.png") as three,
        Image.open(one_row / "prediction.png") as one,
    ):
        assert three.height > 2.5 * one.height  # a row of maps per output
    export_campaign(campaign, tmp_path / "a.h5", "h5")
    with h5py.File(tmp_path / "a.h5", "r") as f:
        for name in ("edge", "bulk_energy"):
            measured = [
                campaign.outputs(m)[campaign.output_names.index(name)] for m in campaign.history
            ]
            np.testing.assert_array_equal(f[f"measurements/outputs/{name}"][()], measured)
            assert f[f"prediction/outputs/{name}/mean"].shape == campaign.patches.grid_shape
        assert "mean" in f["prediction"] and "std" in f["prediction"]


def test_outputs_named_like_exported_columns_do_not_overwrite_them(tmp_path):
    import h5py

    from dklscope.observe.export import export_campaign

    names = PREDICTING.replace("  edge:", "  status:").replace("  bulk_energy:", "  mean:")
    config = parse_config(names.replace("steps: 50", "steps: 2"))
    with simulated_campaign(config) as (campaign, _):
        campaign.run()
        export_campaign(campaign, tmp_path / "a.h5", "h5")
        export_campaign(campaign, tmp_path / "a.npz", "npz")
        status = [m.status for m in campaign.history]
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert list(f["measurements/status"].asstr()[()]) == status
        assert f["measurements/outputs/status"].dtype == np.float64
        assert set(f["prediction/outputs"]) == {"status", "mean"}
    with np.load(tmp_path / "a.npz") as f:
        assert list(f["status"]) == status
        assert {"output_status", "output_mean", "prediction_output_mean_mean"} <= set(f.files)
