"""`dklscope.observe.export`: what is written reads back equal to the journal, in both formats
(campaign_stub.py describes the hand-made measurements)."""

import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dklscope.campaign.journal import Journal
from dklscope.observe.export import export_campaign, overview_names

sys.path.insert(0, str(Path(__file__).parent))
from campaign_stub import CONFIG_TEXT, StubCampaign, journal_with, measurement

PER_MEASUREMENT = {  # exported name: journal field, for the numeric columns
    "seq": "seq",
    "decision": "decision",
    "candidate": "candidate",
    "attempt": "attempt",
    "x_px": "x",
    "y_px": "y",
    "x_read_px": "x_read",
    "y_read_px": "y_read",
    "dwell_s": "dwell_s",
    "scalar": "scalar",
    "acquisition_value": "acquisition_value",
    "predicted_mean": "predicted_mean",
    "predicted_std": "predicted_std",
    "t_decided": "t_decided",
    "t_acquired": "t_acquired",
    "t_requested": "t_requested",
    "t_done": "t_done",
    "decision_latency_s": "decision_latency_s",
    "idle_s": "idle_s",
}


@pytest.fixture
def run(tmp_path):
    """A journal on disk in ``run/`` and an empty ``export/`` folder."""
    (tmp_path / "run").mkdir()
    (tmp_path / "export").mkdir()
    with journal_with(tmp_path / "run" / "journal.sqlite") as journal:
        yield StubCampaign(journal), tmp_path / "export"


def journal_measurements(campaign):
    """The measurements as a fresh reader of the journal file sees them."""
    with Journal(campaign.journal.path) as journal:
        return journal.measurements()


def expected_column(measurements, field):
    return np.array([math.nan if (v := getattr(m, field)) is None else v for m in measurements])


def check_against_journal(read, campaign):
    """``read(flat_name, h5_path)`` gives an exported array; compare each with the journal."""
    ms = journal_measurements(campaign)
    spectra = read("spectra", "measurements/spectra")
    assert spectra.shape == (8, 16) and spectra.dtype == np.float32
    for row, m in zip(spectra, ms, strict=True):
        if len(m.spectrum):
            np.testing.assert_array_equal(row, m.spectrum)  # NaN inside included
        else:
            assert np.isnan(row).all()
    assert [len(m.spectrum) == 0 for m in ms] == [False, False, True, False, True] + [False] * 3
    for name, field in PER_MEASUREMENT.items():
        exported = read(name, f"measurements/{name}")
        np.testing.assert_array_equal(exported, expected_column(ms, field), err_msg=name)
        assert exported.dtype == (
            np.int64 if name in ("seq", "decision", "candidate", "attempt") else np.float64
        ), name
    for name in ("x", "y", "x_read", "y_read"):
        physical = read(f"{name}_physical", f"measurements/{name}_physical")
        np.testing.assert_array_equal(physical, expected_column(ms, name) * 0.25)
    np.testing.assert_array_equal(
        read("spectral_axis", "measurements/spectral_axis"), 0.5 + 0.1 * np.arange(16)
    )

    reference = read("overview", "overview/reference")
    assert reference.dtype == np.float32
    np.testing.assert_array_equal(reference, campaign.journal.array("overview"))
    np.testing.assert_array_equal(
        read("overview_reacquired_2", "overview/reacquired_2"), campaign.journal.array("overview.2")
    )
    np.testing.assert_array_equal(
        read("overview_reacquired_10", "overview/reacquired_10"),
        campaign.journal.array("overview.10"),
    )
    np.testing.assert_array_equal(read("overview_x", "overview/x"), 0.25 * np.arange(16))

    mean, std = campaign.predict()
    grid = campaign.patches.grid_shape
    assert grid == (8, 8)
    np.testing.assert_array_equal(read("prediction_mean", "prediction/mean"), mean.reshape(grid))
    np.testing.assert_array_equal(read("prediction_std", "prediction/std"), std.reshape(grid))
    rows = read("prediction_rows", "prediction/rows")
    cols = read("prediction_cols", "prediction/cols")
    np.testing.assert_array_equal(rows.ravel(), campaign.patches.rows)
    np.testing.assert_array_equal(cols.ravel(), campaign.patches.cols)
    np.testing.assert_array_equal(read("prediction_x_px", "prediction/x_px"), 2 * np.arange(8))
    for m in ms:  # a measured candidate sits at its grid cell
        r, c = np.unravel_index(m.candidate, grid)
        assert (cols[r, c], rows[r, c]) == (m.x, m.y)


def test_hdf5_reads_back_equal_to_the_journal(run):
    campaign, out = run
    path = export_campaign(campaign, out / "campaign.h5", "h5")
    assert path == out / "campaign.h5"
    assert [p.name for p in out.iterdir()] == ["campaign.h5"]
    with h5py.File(path, "r") as f:
        check_against_journal(lambda flat, h5: f[h5][()], campaign)
        ms = journal_measurements(campaign)
        assert list(f["measurements/kind"].asstr()[()]) == [m.kind for m in ms]
        assert list(f["measurements/status"].asstr()[()]) == [m.status for m in ms]
        assert list(f["measurements/error"].asstr()[()]) == [m.error or "" for m in ms]

        assert f.attrs["format"] == "dklscope.export" and f.attrs["format_version"] == 1
        assert json.loads(f.attrs["config"]) == campaign.config.to_dict()
        assert f.attrs["config_text"] == CONFIG_TEXT
        assert json.loads(f.attrs["instrument"])["pixel_units"] == "nm"
        assert json.loads(f.attrs["versions"]) == {"dklscope": "test"}
        (event,) = json.loads(f.attrs["events"])
        assert (event["kind"], event["shift_px"]) == ("drift", [0.5, -0.25])

        spectra = f["measurements/spectra"]
        assert (spectra.attrs["units"], spectra.attrs["quantity"]) == ("counts", "intensity")
        axis = spectra.dims[1][0]
        assert axis.name == "/measurements/spectral_axis" and axis.attrs["units"] == "eV"
        assert spectra.dims[0][0].name == "/measurements/seq"
        assert f["measurements/x_physical"].attrs["units"] == "nm"
        assert f["measurements/x_px"].attrs["units"] == "px"
        assert f["measurements/t_done"].attrs["units"] == "Unix time (s)"
        assert f["overview/reference"].dims[1][0].name == "/overview/x"
        assert f["prediction/mean"].dims[0][0].name == "/prediction/y_px"
        for name, node in f.items():  # every dataset says what it is and in which units
            for ds in node.values():
                assert {"units", "quantity", "description"} <= set(ds.attrs), (name, ds.name)
        # What pyNSID's check_if_main asks of a main dataset, so sidpy reads it with its axes.
        for name in ("overview/reference", "measurements/spectra", "prediction/mean"):
            main = f[name]
            for key in ("quantity", "units", "main_data_name", "data_type", "modality", "source"):
                assert isinstance(main.attrs[key], str) and main.attrs[key], (name, key)
            for i, dim in enumerate(main.dims):
                scale = main.parent[dim.label]  # a sibling dataset named as the label
                assert scale.shape == (main.shape[i],)
                for key in ("dimension_type", "name", "quantity", "units"):
                    assert isinstance(scale.attrs[key], str) and scale.attrs[key], (name, key)


def test_npz_holds_the_same_arrays_under_flat_names_without_pickle(run):
    campaign, out = run
    path = export_campaign(campaign, out / "campaign.data", "npz")  # no suffix is added
    assert [p.name for p in out.iterdir()] == ["campaign.data"]
    with np.load(path, allow_pickle=False) as f:
        check_against_journal(lambda flat, h5: f[flat], campaign)
        ms = journal_measurements(campaign)
        assert list(f["kind"]) == [m.kind for m in ms]
        assert list(f["status"]) == [m.status for m in ms]
        assert json.loads(str(f["config_json"])) == campaign.config.to_dict()
        assert str(f["config_text"]) == CONFIG_TEXT
        units = json.loads(str(f["units_json"]))
        assert units["spectra"] == {"units": "counts", "quantity": "intensity"}
        assert units["spectral_axis"]["units"] == "eV"
        assert units["x_physical"]["units"] == "nm"
        assert set(units) | {
            "units_json",
            "config_json",
            "config_text",
            "instrument_json",
            "versions_json",
            "events_json",
            "format",
            "format_version",
        } == set(f.files)


def test_the_prediction_is_computed_once_or_left_out(tmp_path):
    with journal_with(tmp_path / "a.sqlite") as journal:
        campaign = StubCampaign(journal)
        n = len(campaign.patches)
        given = (np.full(n, 7.0), np.full(n, 0.5))
        export_campaign(campaign, tmp_path / "a.h5", "h5", prediction=given)
        assert campaign.predict_calls == 0
        with h5py.File(tmp_path / "a.h5", "r") as f:
            assert (f["prediction/mean"][()] == 7.0).all()

    one = [measurement(0, scalar=1.0), measurement(1, status="failed", spectrum=np.zeros(0))]
    with journal_with(tmp_path / "b.sqlite", one) as journal:
        campaign = StubCampaign(journal)
        export_campaign(campaign, tmp_path / "b.h5", "h5")
        export_campaign(campaign, tmp_path / "b.npz", "npz")
        assert campaign.predict_calls == 0
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert "prediction" not in f
        assert np.isnan(f["measurements/spectra"][1]).all()
    with np.load(tmp_path / "b.npz") as f:
        assert "prediction_mean" not in f.files


def test_overviews_are_ordered_by_their_number(run):
    campaign, _ = run
    assert overview_names(campaign.journal) == ["overview", "overview.2", "overview.10"]


def test_an_unknown_format_is_refused(run):
    campaign, out = run
    with pytest.raises(ValueError, match="fmt"):
        export_campaign(campaign, out / "x.csv", "csv")  # type: ignore[arg-type]
    assert list(out.iterdir()) == []
