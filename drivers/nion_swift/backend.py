"""`NionBackend`: a Nion STEM, driven through Nion Swift's instrumentation kit, as a `Backend`.

The kit's objects it drives, as Swift (or the kit's headless test harness) has them:

- the **STEM controller** (``stem_controller.STEMController``): the probe, parked at
  ``probe_position`` (normalised (y, x), see `ScanGeometry`) whenever ``probe_state`` is not
  ``"scanning"`` (``None``: the kit's own parked position, where `park` sends it); the scan
  context (the frame of the last scan set up); the beam blanker (the ``C_Blank`` control);
- the **scan** (a ``scan_base.ScanHardwareSource``): the overview, one frame of its current
  frame parameters, from the channel asked for (HAADF, MAADF, ...);
- the **EELS camera** (a ``camera_base.CameraHardwareSource`` with the ``is_eels_camera``
  feature): one frame of the requested exposure, summed over its rows into a spectrum on
  the camera's energy calibration.

Every acquisition is a frame that began after the call, by the kit's own waits
(``grab_next_to_start`` while the camera plays, ``grab_next_to_finish`` after starting it), so a
spectrum never comes from before the probe moved. The geometry (scan frame, energy axis) is
read once, when the backend is made; a scan context or energy calibration changed since then is
refused with an error, never measured in the wrong place or on the wrong axis.

Nion's packages are GPL-3.0 and heavy: this module imports none of them at import time, only
inside the calls that need them (a Geometry point to set the probe, the hardware-source manager
to find the devices in a running Swift). `dklscope.drivers` never imports this module.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from ..backend import Acquisition
from ..protocol import InstrumentDescription, SpectralAxis
from .geometry import ScanGeometry

log = logging.getLogger(__name__)

BLANKER = "C_Blank"  # the kit's beam-blanker control (AcquisitionPreferences, MultiAcquire)
PREFERRED_CHANNELS = ("HAADF", "MAADF")  # the overview's default channel first


class NionBackend:
    """Serve a Nion STEM: ``stem_controller``, ``scan`` and ``eels_camera`` are the kit's objects.

    The overview is the scan's current frame (its shape and field of view, read from the STEM
    controller's scan context now); probe limits are every pixel of it. ``dwell_range_s`` is
    the exposure range the campaign may ask of the camera, seconds. ``timeout_s`` is added to
    every wait for a frame beyond the frame's own time. ``saturation_level`` is the camera's
    full scale in counts per spectrum channel, if known.

    `park` (protocol 1.2, and the dead-man switch) sends the probe to the kit's parked
    position and blanks the beam with ``C_Blank``; the next move unblanks. The dose is
    accounted as seconds of exposure (``dose_units`` ``"s"``): the kit reports no beam current.
    """

    def __init__(
        self,
        stem_controller: Any,
        scan: Any,
        eels_camera: Any,
        *,
        dwell_range_s: tuple[float, float] = (1e-3, 10.0),
        timeout_s: float = 30.0,
        saturation_level: float | None = None,
    ) -> None:
        self._stem, self._scan, self._camera = stem_controller, scan, eels_camera
        self.timeout_s = timeout_s
        self.geometry = ScanGeometry.from_scan_context(stem_controller.scan_context)
        names = [scan.get_channel_name(i) or f"channel {i}" for i in range(scan.channel_count)]
        order = sorted(range(len(names)), key=lambda i: _preference(names[i]))
        self._channels = {names[i]: i for i in order}  # overview channel -> scan channel index
        frame = eels_camera.get_current_frame_parameters()
        energy = eels_camera.get_camera_calibrations(frame)[-1]
        channels = eels_camera.get_expected_dimensions(frame.binning)[-1]
        self.spectral_axis = SpectralAxis(
            size=int(channels),
            offset=float(energy.offset),
            scale=float(energy.scale),
            units=energy.units or "channel",
        )
        intensity = eels_camera.get_camera_intensity_calibration(frame)
        rows, cols = self.geometry.shape
        self._description = InstrumentDescription(
            name=(
                f"Nion Swift {getattr(stem_controller, 'instrument_id', 'STEM')}: "
                f"{scan.display_name}, {eels_camera.display_name}"
            ),
            overview_shape=(rows, cols),
            pixel_size=self.geometry.pixel_size_nm,
            pixel_units="nm",
            spectral_axis=self.spectral_axis,
            spectrum_units=intensity.units or "counts",
            dwell_range_s=dwell_range_s,
            probe_limits=self.geometry.probe_limits,
            overview_channels=tuple(self._channels),
            saturation_level=saturation_level,
            dose_units="s",
            dose_per_s=1.0,
            can_park=True,
            can_blank=bool(stem_controller.TryGetVal(BLANKER)[0]),
        )
        self._blanked_by_us = False

    @classmethod
    def from_swift(
        cls, *, scan_id: str | None = None, eels_camera_id: str | None = None, **options: Any
    ) -> NionBackend:
        """The backend of the devices registered in the running Nion Swift (or test harness):
        the scan and EELS camera hardware sources with these ids, or the first of each kind, and
        the scan's STEM controller. Raises `LookupError` naming what is there when one is
        missing. ``options`` go to `NionBackend`."""
        from nion.instrumentation import HardwareSource

        sources = list(HardwareSource.HardwareSourceManager().hardware_sources)
        scan = _find(sources, scan_id, "is_scanning", "scan")
        camera = _find(sources, eels_camera_id, "is_eels_camera", "EELS camera")
        return cls(scan.stem_controller, scan, camera, **options)

    # -- the Backend protocol -----------------------------------------------------------------

    def describe(self) -> InstrumentDescription:
        return self._description

    def get_overview(self, channel: str | None = None) -> np.ndarray:
        """One fresh frame of the scan's current frame parameters, from ``channel``."""
        self._check_scan_context()
        name = self._description.overview_channels[0] if channel is None else channel
        index = self._channels[name]  # the server checked the name against the description
        scan = self._scan
        enabled = scan.get_channel_enabled(index)
        if not enabled:
            scan.set_channel_enabled(index, True)
        timeout = 3 * scan.calculate_frame_time(scan.get_current_frame_parameters())
        timeout += self.timeout_s
        try:
            if scan.is_playing:  # the operator's view: the next whole frame
                xdatas = scan.grab_next_to_start(timeout=timeout)
            else:
                try:
                    xdatas = scan.grab_next_to_finish(timeout=timeout)
                finally:
                    scan.abort_playing(sync_timeout=timeout)
        finally:
            if not enabled:
                scan.set_channel_enabled(index, False)
        wanted = scan.get_channel_id(index)
        for xdata in xdatas:
            if xdata is not None and _channel_id(xdata) == wanted:
                image = np.asarray(xdata.data, dtype=np.float32)
                if image.shape != self.geometry.shape:
                    raise RuntimeError(
                        f"the {name} frame has shape {image.shape}, not the described "
                        f"{self.geometry.shape}: the scan settings changed"
                    )
                return image
        raise RuntimeError(f"the scan returned no {name} frame")

    def move_probe(self, x: float, y: float) -> tuple[float, float]:
        """Park the probe at overview pixel ``(x, y)``; returns where the kit says it is."""
        from nion.utils import Geometry

        self._check_scan_context()
        if self._stem.probe_state == "scanning":
            raise RuntimeError(
                "the scan is running, so the probe cannot be parked: stop the scan in Nion Swift"
            )
        if self._blanked_by_us:  # the dead-man switch blanked the beam; a move resumes
            self._stem.SetVal(BLANKER, 0.0)
            self._blanked_by_us = False
        ny, nx = self.geometry.to_normalised(x, y)
        self._stem.probe_position = Geometry.FloatPoint(y=ny, x=nx)
        return self._probe_pixels()

    def acquire(self, dwell_s: float) -> Acquisition:
        """A spectrum of ``dwell_s`` seconds at the parked probe: one fresh EELS frame, summed
        over its rows (counts per energy channel)."""
        if self._stem.probe_state == "scanning":
            raise RuntimeError("the scan is running: the probe is not parked")
        blanked, value = self._stem.TryGetVal(BLANKER)
        if blanked and value:
            raise RuntimeError(f"the beam is blanked ({BLANKER} = {value:g}): move the probe first")
        camera = self._camera
        frame = camera.get_current_frame_parameters()
        if not math.isclose(frame.exposure_ms, 1000 * dwell_s, rel_tol=1e-9):
            frame.exposure_ms = 1000 * dwell_s
            camera.set_current_frame_parameters(frame)
        timeout = 3 * dwell_s + self.timeout_s
        if camera.is_playing:  # a frame that starts after this call, after the move
            xdatas = camera.grab_next_to_start(timeout=timeout)
        else:  # the first frame after starting the camera, so after the move
            try:
                xdatas = camera.grab_next_to_finish(timeout=timeout)
            finally:
                camera.abort_playing(sync_timeout=timeout)
        finished = time.time()
        if not xdatas or xdatas[0] is None:
            raise RuntimeError("the EELS camera returned no frame (acquisition aborted?)")
        xdata = xdatas[0]
        data = np.asarray(xdata.data, dtype=np.float32)
        spectrum = data.sum(axis=0) if data.ndim == 2 else data.reshape(-1)
        self._check_energy_axis(spectrum.shape[0], xdata.dimensional_calibrations[-1])
        exposure = xdata.metadata.get("hardware_source", {}).get("exposure", dwell_s)
        x, y = self._probe_pixels()
        return Acquisition(spectrum=spectrum, dwell_s=float(exposure), x=x, y=y, timestamp=finished)

    def park(self) -> None:
        """Send the probe to the kit's parked position (``probe_position`` None), unless the
        operator is scanning, and blank the beam if the instrument has ``C_Blank``; the next
        move unparks and unblanks. The driver server's ``park`` and dead-man switch call it."""
        if self._stem.probe_state != "scanning":
            self._stem.probe_position = None
        if self._description.can_blank:
            self.blank()

    def blank(self) -> None:
        """Blank the beam (``C_Blank``), as the driver server's ``park`` and dead-man switch
        ask; the next move unblanks it."""
        exists, _ = self._stem.TryGetVal(BLANKER)
        if not exists:
            raise RuntimeError(f"this instrument has no {BLANKER} control to blank the beam")
        self._stem.SetVal(BLANKER, 1.0)
        self._blanked_by_us = True

    # -- checks -------------------------------------------------------------------------------

    def _probe_pixels(self) -> tuple[float, float]:
        position = self._stem.probe_position
        if position is None:
            return math.nan, math.nan
        return self.geometry.from_normalised(position.y, position.x)

    def _check_scan_context(self) -> None:
        now = ScanGeometry.from_scan_context(self._stem.scan_context)
        if now != self.geometry:
            raise RuntimeError(
                f"the scan context changed since the instrument was described ({now} now, "
                f"{self.geometry} described): restart the driver server"
            )

    def _check_energy_axis(self, channels: int, energy: Any) -> None:
        axis = self.spectral_axis
        tolerance = 1e-6 * abs(axis.scale)
        if (
            channels != axis.size
            or abs(float(energy.scale) - axis.scale) > tolerance
            or abs(float(energy.offset) - axis.offset) > tolerance
        ):
            raise RuntimeError(
                f"the EELS spectrum is {channels} channels at {energy.offset:g} + i x "
                f"{energy.scale:g} {energy.units}, not the described {axis.size} at "
                f"{axis.offset:g} + i x {axis.scale:g} {axis.units}: the camera's settings or "
                f"energy calibration changed; restart the driver server"
            )


def _preference(name: str) -> int:
    return PREFERRED_CHANNELS.index(name) if name in PREFERRED_CHANNELS else len(PREFERRED_CHANNELS)


def _channel_id(xdata: Any) -> str | None:
    return xdata.metadata.get("hardware_source", {}).get("channel_id")


def _find(sources: list[Any], wanted: str | None, feature: str, what: str) -> Any:
    if wanted is not None:
        found = [s for s in sources if s.hardware_source_id == wanted]
    else:
        found = [s for s in sources if s.features.get(feature, False)]
    if not found:
        have = ", ".join(sorted(s.hardware_source_id for s in sources)) or "none"
        named = f" {wanted!r}" if wanted is not None else ""
        raise LookupError(f"no {what}{named} in Nion Swift (hardware sources: {have})")
    return found[0]
