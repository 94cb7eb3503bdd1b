"""`NionBackend`'s own logic, on stand-ins for the kit's STEM controller, scan and camera.

The stand-ins hold real Nion values (Geometry, Calibration, DataAndMetadata) so the backend
reads them as it would in Swift; tests/drivers/test_nion_usim.py drives the real simulator.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("nion.data")
from nion.data import Calibration, DataAndMetadata
from nion.utils import Geometry

from dklscope.drivers.nion_swift.backend import NionBackend


class FakeStem:
    def __init__(self) -> None:
        self.scan_context = SimpleNamespace(
            size=Geometry.IntSize(height=48, width=80),
            fov_nm=300.0,
            rotation_rad=0.0,
            center_nm=Geometry.FloatPoint(),
        )
        self.probe_state = "parked"
        self._probe: Geometry.FloatPoint | None = None
        self.instrument_id = "fake_stem"
        self.values = {"C_Blank": 0.0}

    @property
    def probe_position(self) -> Geometry.FloatPoint | None:
        return self._probe

    @probe_position.setter
    def probe_position(self, p: Geometry.FloatPoint | None) -> None:  # clamped, as the kit does
        if p is None:  # the kit's own parked position
            self._probe = None
            return
        self._probe = Geometry.FloatPoint(y=min(max(p.y, 0.0), 1.0), x=min(max(p.x, 0.0), 1.0))

    def TryGetVal(self, name):  # the kit's names
        return (name in self.values, self.values.get(name))

    def SetVal(self, name, value):
        self.values[name] = value
        return True


class FakeSource:
    """A hardware source: records the kit calls made, returns ``frames`` in turn."""

    def __init__(self, name: str, frames) -> None:
        self.display_name = name
        self.frames = frames
        self.calls: list[str] = []
        self.is_playing = False
        self.frame_parameters = SimpleNamespace(exposure_ms=100.0, binning=1)

    def get_current_frame_parameters(self):
        return copy.copy(self.frame_parameters)

    def set_current_frame_parameters(self, parameters):
        self.calls.append(f"exposure {parameters.exposure_ms:g} ms")
        self.frame_parameters = parameters

    def grab_next_to_start(self, *, timeout=None):
        self.calls.append("grab_next_to_start")
        return self.frames()

    def grab_next_to_finish(self, *, timeout=None):
        self.calls.append("grab_next_to_finish")
        self.is_playing = True
        return self.frames()

    def abort_playing(self, *, sync_timeout=None):
        self.calls.append("abort_playing")
        self.is_playing = False


class FakeCamera(FakeSource):
    ENERGY = Calibration.Calibration(offset=-20.0, scale=0.5, units="eV")

    def __init__(self) -> None:
        super().__init__("EELS", self.frame)
        self.energy = self.ENERGY

    def frame(self):
        data = np.ones((4, 16), dtype=np.float32)  # 4 rows of 16 channels
        calibrations = [Calibration.Calibration(), self.energy]
        metadata = {"hardware_source": {"exposure": self.frame_parameters.exposure_ms / 1000}}
        return [
            DataAndMetadata.new_data_and_metadata(
                data, dimensional_calibrations=calibrations, metadata=metadata
            )
        ]

    def get_camera_calibrations(self, parameters):
        return (Calibration.Calibration(), self.ENERGY)

    def get_expected_dimensions(self, binning):
        return (4, 16)

    def get_camera_intensity_calibration(self, parameters):
        return Calibration.Calibration(units="counts")


class FakeScan(FakeSource):
    def __init__(self) -> None:
        super().__init__("Scan", self.frame)
        self.channel_count = 2
        self.names, self.enabled = ["MAADF", "HAADF"], [True, False]

    def frame(self):
        return [
            DataAndMetadata.new_data_and_metadata(
                np.full((48, 80), float(i), dtype=np.float32),
                metadata={"hardware_source": {"channel_id": "ab"[i]}},
            )
            for i in range(2)
            if self.enabled[i]
        ]

    def get_channel_name(self, i):
        return self.names[i]

    def get_channel_id(self, i):
        return "ab"[i]

    def get_channel_enabled(self, i):
        return self.enabled[i]

    def set_channel_enabled(self, i, enabled):
        self.calls.append(f"channel {i} {enabled}")
        self.enabled[i] = enabled

    def calculate_frame_time(self, parameters):
        return 0.01


@pytest.fixture
def kit():
    stem, scan, camera = FakeStem(), FakeScan(), FakeCamera()
    return SimpleNamespace(
        stem=stem,
        scan=scan,
        camera=camera,
        backend=NionBackend(stem, scan, camera, dwell_range_s=(0.01, 1.0)),
    )


def test_the_description_comes_from_the_scan_context_and_the_camera(kit):
    d = kit.backend.describe()
    assert d.overview_shape == (48, 80)
    assert d.pixel_size == 3.75 and d.pixel_units == "nm"
    assert d.field_of_view == (300.0, 180.0)
    assert (d.spectral_axis.size, d.spectral_axis.offset, d.spectral_axis.scale) == (16, -20, 0.5)
    assert d.spectral_axis.units == "eV" and d.spectrum_units == "counts"
    assert d.overview_channels == ("HAADF", "MAADF")  # HAADF first: the default overview
    assert d.probe_limits == (0.0, 79.0, 0.0, 47.0)
    assert d.dwell_range_s == (0.01, 1.0)


def test_a_move_parks_the_probe_at_the_normalised_pixel_centre(kit):
    assert kit.backend.move_probe(3.0, 5.0) == pytest.approx((3.0, 5.0))
    assert kit.stem.probe_position.y == pytest.approx(5.5 / 48)
    assert kit.stem.probe_position.x == pytest.approx(3.5 / 80)
    # the position read back is the kit's (which keeps the probe in the frame)
    assert kit.backend.move_probe(80.0, 48.0) == pytest.approx((79.5, 47.5))


def test_a_spectrum_is_a_fresh_frame_of_the_asked_exposure_summed_over_its_rows(kit):
    kit.backend.move_probe(1.0, 2.0)
    acq = kit.backend.acquire(0.25)
    np.testing.assert_array_equal(acq.spectrum, np.full(16, 4.0, dtype=np.float32))
    assert acq.dwell_s == 0.25 and (acq.x, acq.y) == pytest.approx((1.0, 2.0))
    # the camera was not playing: start it, take its first frame, stop it
    assert kit.camera.calls == ["exposure 250 ms", "grab_next_to_finish", "abort_playing"]
    kit.camera.calls.clear()
    kit.camera.is_playing = True  # the operator's view runs: the next frame to start
    kit.backend.acquire(0.25)
    assert kit.camera.calls == ["grab_next_to_start"]
    assert kit.camera.is_playing


def test_a_changed_energy_calibration_is_refused(kit):
    kit.camera.energy = Calibration.Calibration(offset=-18.0, scale=0.5, units="eV")
    with pytest.raises(RuntimeError, match="energy calibration changed"):
        kit.backend.acquire(0.1)


def test_the_overview_is_the_asked_channel_and_the_scan_is_left_as_found(kit):
    image = kit.backend.get_overview()  # HAADF, channel 1, not enabled
    assert image.shape == (48, 80) and image.dtype == np.float32 and np.all(image == 1.0)
    assert kit.scan.calls == [
        "channel 1 True",
        "grab_next_to_finish",
        "abort_playing",
        "channel 1 False",
    ]
    assert np.all(kit.backend.get_overview("MAADF") == 0.0)


def test_moves_are_refused_after_the_scan_context_changed_or_while_scanning(kit):
    kit.stem.scan_context.fov_nm = 150.0  # the operator zoomed in
    with pytest.raises(RuntimeError, match="scan context changed"):
        kit.backend.move_probe(1.0, 1.0)
    with pytest.raises(RuntimeError, match="scan context changed"):
        kit.backend.get_overview()
    kit.stem.scan_context.fov_nm = 300.0
    kit.stem.probe_state = "scanning"
    with pytest.raises(RuntimeError, match="scan is running"):
        kit.backend.move_probe(1.0, 1.0)
    with pytest.raises(RuntimeError, match="scan is running"):
        kit.backend.acquire(0.1)


def test_the_dead_man_switch_blanks_the_beam_and_the_next_move_unblanks_it(kit):
    kit.backend.blank()
    assert kit.stem.values["C_Blank"] == 1.0
    with pytest.raises(RuntimeError, match="blanked"):
        kit.backend.acquire(0.1)
    kit.backend.move_probe(1.0, 1.0)
    assert kit.stem.values["C_Blank"] == 0.0
    assert math.isfinite(kit.backend.acquire(0.1).spectrum.sum())


def test_park_sends_the_probe_to_the_kits_parked_position_and_blanks_it(kit):
    d = kit.backend.describe()
    assert (d.can_park, d.can_blank, d.dose_units, d.dose_per_s) == (True, True, "s", 1.0)
    kit.backend.move_probe(3.0, 2.0)
    kit.backend.park()
    assert kit.stem.probe_position is None and kit.stem.values["C_Blank"] == 1.0
    with pytest.raises(RuntimeError, match="blanked"):
        kit.backend.acquire(0.1)
    assert kit.backend.move_probe(3.0, 2.0) == pytest.approx((3.0, 2.0))
    assert kit.stem.values["C_Blank"] == 0.0
    assert math.isfinite(kit.backend.acquire(0.1).spectrum.sum())


def test_park_during_the_operators_scan_only_blanks(kit):
    kit.backend.move_probe(3.0, 2.0)
    kit.stem.probe_state = "scanning"
    kit.backend.park()
    assert kit.stem.probe_position is not None and kit.stem.values["C_Blank"] == 1.0


def test_an_instrument_without_a_blanker_describes_it_cannot_blank(kit):
    del kit.stem.values["C_Blank"]
    backend = NionBackend(kit.stem, kit.scan, kit.camera)
    assert backend.describe().can_blank is False
    backend.move_probe(3.0, 2.0)
    backend.park()  # parks the probe, blanks nothing
    assert kit.stem.probe_position is None and "C_Blank" not in kit.stem.values


def test_a_beam_the_operator_blanked_stays_blanked(kit):
    kit.stem.values["C_Blank"] = 1.0
    kit.backend.move_probe(1.0, 1.0)
    assert kit.stem.values["C_Blank"] == 1.0
    with pytest.raises(RuntimeError, match="blanked"):
        kit.backend.acquire(0.1)
