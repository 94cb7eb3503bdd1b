"""``dklscope export --to nsid``: sidpy datasets that pyNSID and SciFiReaders read back equal to
the journal, and that the replay turns back into the same spectra at the same positions
(campaign_stub.py describes the hand-made measurements)."""

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from dklscope.campaign.journal import Journal
from dklscope.observe.export import export_campaign
from dklscope.simulators.replay import ReplayError, load_replay

pytest.importorskip("pyNSID", reason="needs the nsid extra")

sys.path.insert(0, str(Path(__file__).parent))
from campaign_stub import StubCampaign, journal_with, measurement

SPECTRA = "Measurement_000/Channel_000/spectra/spectra"
PIXEL = 0.25  # campaign_stub's pixel_size, nm


@pytest.fixture
def exported(tmp_path):
    """The stub campaign, its journal's ``ok`` measurements, and its NSID export."""
    with journal_with(tmp_path / "journal.sqlite") as journal:
        campaign = StubCampaign(journal)
        path = export_campaign(campaign, tmp_path / "campaign.nsid.h5", "nsid")
        with Journal(journal.path) as reader:
            ok = [m for m in reader.measurements() if m.status == "ok"]
        yield campaign, ok, path


def read_all_with_pynsid(path):
    from pyNSID.io.hdf_utils import get_all_main, read_h5py_dataset

    f = h5py.File(path, "r")
    return f, {d.name.rsplit("/", 1)[1]: read_h5py_dataset(d) for d in get_all_main(f)}


def test_pynsid_reads_each_dataset_back_equal_to_the_journal(exported):
    campaign, ok, path = exported
    f, datasets = read_all_with_pynsid(path)
    with f:
        assert sorted(datasets) == [
            "overview",
            "overview_reacquired_10",
            "overview_reacquired_2",
            "prediction_mean",
            "prediction_std",
            "spectra",
        ]
        assert f.attrs["format"] == "dklscope.export.nsid"

        overview = datasets["overview"]
        assert overview.data_type.name == "IMAGE"
        np.testing.assert_array_equal(np.asarray(overview), campaign.journal.array("overview"))
        for dim, name in ((0, "y"), (1, "x")):
            axis = overview._axes[dim]
            assert (axis.name, axis.units, axis.dimension_type.name) == (name, "nm", "SPATIAL")
            np.testing.assert_array_equal(axis.values, PIXEL * np.arange(16))
        np.testing.assert_array_equal(
            np.asarray(datasets["overview_reacquired_2"]), campaign.journal.array("overview.2")
        )

        spectra = datasets["spectra"]
        assert spectra.data_type.name == "POINT_CLOUD"
        assert spectra.shape == (6, 16) and spectra.units == "counts"
        assert [m.seq for m in ok] == [0, 1, 3, 5, 6, 7]
        np.testing.assert_array_equal(spectra._axes[0].values, [m.seq for m in ok])
        assert spectra._axes[0].dimension_type.name == "POINT_CLOUD"
        energy = spectra._axes[1]
        assert (energy.units, energy.dimension_type.name) == ("eV", "SPECTRAL")
        np.testing.assert_allclose(energy.values, 0.5 + 0.1 * np.arange(16))
        # exactly as journaled, the NaN channel of measurement 5 included
        np.testing.assert_array_equal(np.asarray(spectra), np.array([m.spectrum for m in ok]))
        coordinates = spectra.point_cloud["coordinates"]
        np.testing.assert_array_equal(coordinates, [(PIXEL * m.x, PIXEL * m.y) for m in ok])
        assert spectra.point_cloud["spacial_units"] == "nm"
        np.testing.assert_array_equal(spectra.metadata["x_px"], [m.x for m in ok])
        np.testing.assert_array_equal(spectra.metadata["scalar"], [m.scalar for m in ok])

        mean, std = campaign.predict()
        grid = campaign.patches.grid_shape
        for name, values in (("prediction_mean", mean), ("prediction_std", std)):
            ds = datasets[name]
            assert ds.data_type.name == "IMAGE" and ds.shape == grid
            np.testing.assert_array_equal(np.asarray(ds), values.reshape(grid))
            rows = campaign.patches.rows.reshape(grid)[:, 0]
            np.testing.assert_array_equal(ds._axes[0].values, PIXEL * rows)
            assert ds._axes[1].units == "nm"


def test_scifireaders_nsid_reader_reads_every_dataset(exported):
    from SciFiReaders import NSIDReader

    _, ok, path = exported
    reader = NSIDReader(str(path))
    try:
        assert reader.can_read()
        datasets = reader.read()
        by_name = {ds.h5_dataset_name.rsplit("/", 1)[1]: ds for ds in datasets.values()}
        assert len(datasets) == 6
        assert by_name["overview"].data_type.name == "IMAGE"
        spectra = by_name["spectra"]
        assert spectra.data_type.name == "POINT_CLOUD"
        assert spectra._axes[1].units == "eV"
        np.testing.assert_array_equal(np.asarray(spectra), np.array([m.spectrum for m in ok]))
    finally:
        reader.close()


def test_the_replay_puts_each_spectrum_back_at_its_position(exported):
    campaign, ok, path = exported
    replay = load_replay(path)
    sample = replay.sample
    assert sample.shape == (16, 16) and sample.oversampling == 1
    assert (sample.pixel_size, sample.pixel_units) == (PIXEL, "nm")
    assert sample.spectral_axis.units == "eV" and sample.spectrum_units == "counts"
    np.testing.assert_allclose(sample.spectral_axis.values(), 0.5 + 0.1 * np.arange(16))
    np.testing.assert_array_equal(sample.image, campaign.journal.array("overview"))
    measured = np.zeros(sample.shape, dtype=bool)
    for m in ok:
        row, col = round(m.y), round(m.x)
        np.testing.assert_array_equal(sample.signal[row, col], m.spectrum)
        measured[row, col] = True
    assert np.isnan(sample.signal[~measured]).all()  # nothing measured there
    assert replay.metadata["points"] == 6 and replay.metadata["pixels_measured"] == 6


def test_points_sharing_a_pixel_replay_their_mean_and_a_point_outside_is_refused(exported):
    _, ok, path = exported
    cloud = f"{SPECTRA.rsplit('/', 1)[0]}/point_cloud"
    with h5py.File(path, "r+") as f:
        coordinates = f[cloud].attrs["coordinates"]
        coordinates[1] = coordinates[0] + 0.1 * PIXEL  # within pixel 0's half-width
        f[cloud].attrs["coordinates"] = coordinates
    replay = load_replay(path)
    m0, m1 = ok[0], ok[1]
    expected = (m0.spectrum.astype(np.float64) + m1.spectrum) / 2
    np.testing.assert_allclose(replay.sample.signal[round(m0.y), round(m0.x)], expected, rtol=1e-6)
    assert replay.metadata["pixels_measured"] == 5
    with h5py.File(path, "r+") as f:
        coordinates[2] = (16 * PIXEL, 0.0)  # one pixel past the last column
        f[cloud].attrs["coordinates"] = coordinates
    with pytest.raises(ReplayError, match=r"point 2 at .* lies outside the overview"):
        load_replay(path)
    with h5py.File(path, "r+") as f:
        coordinates[2, 1] = np.nan
        f[cloud].attrs["coordinates"] = coordinates
    with pytest.raises(ReplayError, match=r"point 2 of .*spectra' has no finite position"):
        load_replay(path)


def test_the_positions_of_a_long_campaign_are_all_written(tmp_path):
    """5,000 points: 80 KB of coordinates, more than HDF5's compact attributes hold (sidpy
    skips an attribute it cannot write, without a word)."""
    from pyNSID.io.hdf_utils import read_h5py_dataset

    rng = np.random.default_rng(2)
    xy = rng.integers(0, 16, size=(5000, 2)).astype(np.float64)
    with journal_with(tmp_path / "journal.sqlite") as journal:
        campaign = StubCampaign(journal)
        campaign.history = [measurement(i, x=x, y=y) for i, (x, y) in enumerate(xy)]
        path = export_campaign(campaign, tmp_path / "long.nsid.h5", "nsid", prediction=None)
    with h5py.File(path, "r") as f:
        spectra = read_h5py_dataset(f[SPECTRA])
        np.testing.assert_array_equal(spectra.point_cloud["coordinates"], PIXEL * xy)
    assert load_replay(path).metadata["points"] == 5000


def test_without_the_extra_the_export_says_how_to_install_it(tmp_path, monkeypatch):
    from dklscope.observe.nsid import NsidUnavailable

    monkeypatch.setitem(sys.modules, "pyNSID.io.hdf_io", None)  # as if not installed
    with journal_with(tmp_path / "journal.sqlite") as journal:
        with pytest.raises(NsidUnavailable, match=r"pip install 'dklscope\[nsid\]'"):
            export_campaign(StubCampaign(journal), tmp_path / "c.nsid.h5", "nsid")
    assert not (tmp_path / "c.nsid.h5").exists()


def test_the_core_and_the_replay_never_import_sidpy():
    code = textwrap.dedent(
        """
        import sys
        import dklscope.cli, dklscope.observe.export, dklscope.observe.nsid
        import dklscope.simulators.replay
        print(sorted(m for m in ("sidpy", "pyNSID", "SciFiReaders") if m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_finished_campaign_round_trips_through_nsid_and_the_replay(tmp_path):
    """End to end: a small simulated run, ``dklscope export --to nsid``, read with pyNSID, then
    replayed: a simulated microscope on the replay measures the same spectra at the same
    positions."""
    from dklscope.cli import main
    from dklscope.simulators import SimulatedMicroscope

    config = tmp_path / "small.yaml"
    config.write_text(
        "seed: 3\ndwell_s: 0.05\n"
        "instrument:\n  simulator: {shape: [24, 24], seed: 1, noise: true}\n"
        "budget: {seed_points: 4, steps: 3}\npatches: {size: 6, stride: 2}\n"
        "model: {first_fit_iterations: 20, refit_iterations: 2}\n"
        "scalarizer: {window: [1.05, 1.35]}\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    assert main(["export", str(out), "--to", "nsid"]) == 0
    path = out / "campaign.nsid.h5"
    with Journal(out / "journal.sqlite") as journal:
        ok = [m for m in journal.measurements() if m.status == "ok"]
        description = journal.metadata("instrument")
    assert len(ok) == 7
    f, datasets = read_all_with_pynsid(path)
    with f:
        spectra = datasets["spectra"]
        np.testing.assert_array_equal(np.asarray(spectra), np.array([m.spectrum for m in ok]))
        pixel = description["pixel_size"]
        np.testing.assert_allclose(
            spectra.point_cloud["coordinates"], [(pixel * m.x, pixel * m.y) for m in ok]
        )
        assert datasets["prediction_mean"].shape == datasets["prediction_std"].shape
        assert math.isfinite(float(np.asarray(datasets["prediction_mean"]).mean()))
    microscope = SimulatedMicroscope(load_replay(path).sample, noise=False)
    for m in ok:  # distinct positions: each pixel holds exactly its own spectrum
        microscope.move_probe(m.x, m.y)
        np.testing.assert_array_equal(microscope.acquire(m.dwell_s).spectrum, m.spectrum)
