"""`load_replay` / `replay_sample`: measured spectrum images replayed exactly as a `Sample`."""

import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from dklscope.simulators.microscope import SimulatedMicroscope
from dklscope.simulators.replay import Replayed, ReplayError, load_replay, replay_sample
from dklscope.simulators.sample import GaussianNoise

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # /work/shared/data
BEPS = DATA / "BEPS_PTO_50x50.h5"
EELS = DATA / "SI-EELS_Spectrum_Image.dm3"
HAADF = DATA / "SI-HAADF.dm3"
SURVEY = DATA / "SI-Survey_Image.dm3"


def needs(*files):
    """Skip where the real data is not beside the checkout; CI always has it, so never there."""
    missing = [f.name for f in files if not f.is_file()]
    skip = bool(missing) and not os.environ.get("CI")
    return pytest.mark.skipif(skip, reason=f"real data not found in {DATA}: {missing}")


@pytest.fixture
def cube():
    """(rows, cols, channels) = (6, 5, 16) of distinct float32 values."""
    rng = np.random.default_rng(7)
    return rng.uniform(0.0, 100.0, size=(6, 5, 16)).astype(np.float32)


def replayed_at(microscope, row, col, dwell_s):
    microscope.move_probe(float(col), float(row))
    return microscope.acquire(dwell_s).spectrum


# -- synthetic files: exact replay --------------------------------------------------------------


def test_npy_replays_the_stored_spectrum_at_every_pixel(tmp_path, cube):
    path = tmp_path / "cube.npy"
    np.save(path, cube)
    sample = replay_sample(path)
    assert isinstance(sample.noise, Replayed)
    assert sample.signal.shape == (6, 5, 16)
    assert sample.spectral_axis.size == 16 and sample.spectral_axis.units == "channel"
    microscope = SimulatedMicroscope(sample, noise=True, seed=3)
    for dwell_s in (0.001, 0.3, 5.0):
        np.testing.assert_array_equal(sample.expected_spectra(dwell_s), cube)
        for row in range(6):
            for col in range(5):
                spectrum = replayed_at(microscope, row, col, dwell_s)
                assert spectrum.dtype == np.float32
                np.testing.assert_array_equal(spectrum, cube[row, col])


def test_npz_with_calibration_and_an_oversampled_image(tmp_path, cube):
    image = np.arange(12 * 10, dtype=np.float64).reshape(12, 10)
    path = tmp_path / "cube.npz"
    np.savez(
        path,
        spectra=cube,
        axis_offset=350.0,
        axis_scale=0.5,
        axis_units="eV",
        image=image,
        pixel_size=2.0,
        pixel_units="nm",
        spectrum_units="counts",
    )
    replay = load_replay(path)
    sample = replay.sample
    assert sample.oversampling == 2
    assert sample.image.dtype == np.float32
    np.testing.assert_array_equal(sample.image, image)
    assert (sample.spectral_axis.offset, sample.spectral_axis.scale) == (350.0, 0.5)
    assert sample.spectral_axis.units == "eV"
    np.testing.assert_allclose(replay.axis_values, 350.0 + 0.5 * np.arange(16))
    assert (sample.pixel_size, sample.pixel_units) == (1.0, "nm")  # 2 nm spectrum pitch / 2
    assert sample.spectrum_units == "counts"
    microscope = SimulatedMicroscope(sample, noise=True)
    for row, col in [(0, 0), (1, 1), (2, 3), (7, 4), (11, 9), (5, 8)]:
        np.testing.assert_array_equal(
            replayed_at(microscope, row, col, 0.1), cube[row // 2, col // 2]
        )


def test_npz_with_a_nonlinear_axis_uses_steps_and_keeps_the_values(tmp_path, cube):
    axis = np.concatenate([np.linspace(0, 7, 8), np.linspace(6, -1, 8)])  # up, then down
    path = tmp_path / "loops.npz"
    np.savez(path, spectra=cube, axis=axis, axis_units="V")
    replay = load_replay(path, derive="band:5.5:7")  # channels 6, 7 and 8 (values 6, 7, 6)
    axis_ = replay.sample.spectral_axis
    assert (axis_.size, axis_.offset, axis_.scale, axis_.units) == (16, 0.0, 1.0, "step")
    np.testing.assert_array_equal(replay.axis_values, axis)
    assert replay.metadata["axis_units"] == "V" and replay.metadata["axis_linear"] is False
    np.testing.assert_allclose(replay.sample.image, cube[:, :, 6:9].sum(axis=2), rtol=1e-6)


def test_derived_images(tmp_path, cube):
    path = tmp_path / "cube.npy"
    np.save(path, cube)
    mean = replay_sample(path).image
    assert mean.dtype == np.float32 and mean.shape == (6, 5)
    np.testing.assert_allclose(mean, cube.mean(axis=2), rtol=1e-6)
    np.testing.assert_array_equal(replay_sample(path, derive="slice:3").image, cube[:, :, 3])
    np.testing.assert_array_equal(replay_sample(path, derive="slice:-1").image, cube[:, :, 15])
    band = replay_sample(path, derive="band:2:4").image  # channel index = axis value here
    np.testing.assert_allclose(band, cube[:, :, 2:5].sum(axis=2), rtol=1e-6)
    for bad in ("median", "slice:16", "slice:x", "band:20:30", "band:4:2", "band:1"):
        with pytest.raises(ReplayError, match="cannot derive"):
            replay_sample(path, derive=bad)


def test_replayed_noise_model():
    signal = np.linspace(-1.0, 1.0, 2000)
    rng = np.random.default_rng(0)
    assert Replayed().expected(signal, 0.01) is signal
    np.testing.assert_array_equal(Replayed().measure(signal, 0.01, rng), signal.astype(np.float32))
    noisy = Replayed(sd=0.1).measure(signal, 0.01, rng)
    assert noisy.dtype == np.float32
    assert 0.09 < np.std(noisy - signal) < 0.11
    with pytest.raises(ValueError, match="sd"):
        Replayed(sd=-1.0)


def test_another_noise_model_can_be_given(tmp_path, cube):
    path = tmp_path / "cube.npy"
    np.save(path, cube)
    sample = replay_sample(path, noise=GaussianNoise(sd_at_1s=1.0))
    measured = SimulatedMicroscope(sample, noise=True).acquire(1.0).spectrum
    assert not np.array_equal(measured, cube[0, 0])


# -- HDF5 ---------------------------------------------------------------------------------------


def test_hdf5_dimension_scales_put_y_on_rows_and_x_on_columns(tmp_path):
    data = np.arange(4 * 3 * 5, dtype=np.float64).reshape(4, 3, 5)  # (X, Y, E)
    path = tmp_path / "nsid.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("Channel_000/generic")
        d = group.create_dataset("generic", data=data)
        d.attrs["units"] = "pA"
        for i, (name, values, units) in enumerate(
            [("X", np.arange(4) * 5e-9, "m"), ("Y", np.arange(3) * 5e-9, "m"),
             ("Energy", 1.0 + 0.25 * np.arange(5), "eV")]
        ):  # fmt: skip
            scale = group.create_dataset(name, data=values)
            scale.attrs["units"] = units
            scale.make_scale(name)
            d.dims[i].attach_scale(scale)
            d.dims[i].label = name
    replay = load_replay(path)
    sample = replay.sample
    assert sample.signal.shape == (3, 4, 5)
    np.testing.assert_array_equal(sample.signal[2, 1], data[1, 2])  # row = Y, col = X
    assert sample.spectral_axis == type(sample.spectral_axis)(5, 1.0, 0.25, "eV")
    assert sample.pixel_units == "m" and sample.pixel_size == pytest.approx(5e-9)
    assert sample.spectrum_units == "pA"
    assert replay.metadata["dataset"] == "Channel_000/generic/generic"


def test_plain_hdf5_dataset_is_picked_by_name(tmp_path, cube):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("scan/a", data=cube)
        f.create_dataset("scan/b", data=cube + 1)
        f.create_dataset("flat", data=np.zeros((3, 3)))
    with pytest.raises(ReplayError, match=r"found 2 3-D datasets.*scan/a.*scan/b"):
        load_replay(path)
    sample = replay_sample(path, dataset="scan/b")
    np.testing.assert_array_equal(sample.signal, cube + 1)
    assert sample.spectral_axis.units == "channel" and sample.pixel_units == "px"
    with pytest.raises(ReplayError, match=r"no dataset 'scan/c'.*scan/a"):
        load_replay(path, dataset="scan/c")
    with pytest.raises(ReplayError, match=r"'flat' has shape \(3, 3\)"):
        load_replay(path, dataset="flat")


# -- bad input ----------------------------------------------------------------------------------


def test_bad_files_give_clear_errors(tmp_path, cube):
    with pytest.raises(FileNotFoundError, match=r"nothing\.npy: no such data file"):
        replay_sample(tmp_path / "nothing.npy")
    (tmp_path / "cube.txt").write_text("1 2 3")
    with pytest.raises(ReplayError, match=r"cube.txt.*unknown extension '.txt'"):
        replay_sample(tmp_path / "cube.txt")
    np.save(tmp_path / "flat.npy", cube[:, :, 0])
    with pytest.raises(ReplayError, match=r"flat.npy.*shape \(6, 5\).*3 dimensions"):
        replay_sample(tmp_path / "flat.npy")
    np.savez(tmp_path / "keys.npz", data=cube, image=cube[:, :, 0])
    with pytest.raises(ReplayError, match=r"keys.npz: no key 'spectra'.*\['data', 'image'\]"):
        replay_sample(tmp_path / "keys.npz")
    np.testing.assert_array_equal(replay_sample(tmp_path / "keys.npz", dataset="data").signal, cube)
    np.save(tmp_path / "nan.npy", np.full((2, 2, 3), np.nan))
    with pytest.raises(ReplayError, match=r"nan.npy.*no finite value"):
        replay_sample(tmp_path / "nan.npy")
    np.save(tmp_path / "cube.npy", cube)
    with pytest.raises(FileNotFoundError, match=r"no_overview\.npy: no such overview file"):
        replay_sample(tmp_path / "cube.npy", overview=tmp_path / "no_overview.npy")


def test_overview_that_is_not_an_integer_multiple_is_refused(tmp_path, cube):
    np.save(tmp_path / "cube.npy", cube)
    for shape in [(12, 15), (13, 10), (3, 5), (6, 4)]:  # k 2 vs 3, 13/6, smaller, 4/5
        np.save(tmp_path / "overview.npy", np.zeros(shape))
        with pytest.raises(ReplayError, match=re.escape(f"{shape}") + r".*\(6, 5\)"):
            replay_sample(tmp_path / "cube.npy", overview=tmp_path / "overview.npy")
    np.save(tmp_path / "overview.npy", np.zeros((18, 15)))
    assert (
        replay_sample(tmp_path / "cube.npy", overview=tmp_path / "overview.npy").oversampling == 3
    )


# -- real data ----------------------------------------------------------------------------------


@needs(BEPS)
def test_beps_loops():
    replay = load_replay(BEPS)
    sample = replay.sample
    assert sample.signal.shape == (50, 50, 64)
    assert sample.signal.dtype == np.float64
    assert sample.spectral_axis.units == "step" and sample.spectral_axis.size == 64
    volts = replay.axis_values
    assert replay.metadata["axis_units"] == "V"
    assert volts[0] == pytest.approx(0.0, abs=1e-9)
    assert volts.max() == pytest.approx(8.5) and int(np.argmax(volts)) == 16
    assert volts.min() == pytest.approx(-8.5) and int(np.argmin(volts)) == 48
    assert sample.pixel_units == "m"  # the file's units: 2 µm / 49 steps = 40.8 nm
    assert sample.pixel_size == pytest.approx(40.8e-9, rel=1e-3)
    assert sample.image.shape == (50, 50) and sample.image.dtype == np.float32
    np.testing.assert_allclose(sample.image, sample.signal.mean(axis=2), rtol=1e-5)
    assert sample.spectrum_units == "a.u."
    with h5py.File(BEPS, "r") as f:  # stored as (X, Y, V): rows run along Y
        raw = f["Channel_000/generic/generic"][()]
    np.testing.assert_array_equal(sample.signal, raw.transpose(1, 0, 2))
    microscope = SimulatedMicroscope(sample, noise=True)
    np.testing.assert_array_equal(
        replayed_at(microscope, 7, 31, 0.5), raw[31, 7].astype(np.float32)
    )


@needs(EELS)
def test_eels_spectrum_image():
    replay = load_replay(EELS)
    sample = replay.sample
    assert sample.signal.shape == (49, 6, 1024)
    axis = sample.spectral_axis
    assert (axis.offset, axis.scale, axis.units) == (350.0, 0.5, "eV")
    assert replay.metadata["axis_linear"] is True
    assert sample.oversampling == 1 and sample.image.shape == (49, 6)
    assert sample.spectrum_units == "Counts"
    onset = replay_sample(EELS, derive="band:455:470").image  # Ti-L2,3 across the interface
    assert onset.shape == (49, 6)


@needs(EELS, HAADF, SURVEY)
def test_eels_with_the_haadf_overview():
    sample = replay_sample(EELS, overview=HAADF)
    assert sample.shape == (1568, 192)
    assert sample.oversampling == 32
    assert tuple(int(v) for v in sample.spectrum_pixel(40, 100)) == (1, 3)
    assert sample.pixel_size == pytest.approx(1 / 32)
    microscope = SimulatedMicroscope(sample, noise=True)
    np.testing.assert_array_equal(replayed_at(microscope, 40, 100, 0.2), sample.signal[1, 3])
    with pytest.raises(ReplayError, match=r"\(512, 512\).*\(49, 6\)"):
        replay_sample(EELS, overview=SURVEY)
