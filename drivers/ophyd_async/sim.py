"""Any `Backend` as simulated ophyd-async devices: a motor pair and a spectrum detector.

`simulated_devices(backend)` gives two ophyd-async `SimMotor` (x and y, in the backend's
physical ``pixel_units``, 0 at the centre of overview pixel (0, 0), moving instantly) and a
`SpectrumDetector` that, when triggered, parks the backend's probe where the motors are and
exposes for its ``acquire_time``. Wrapped around `dklscope.simulators.SimulatedMicroscope`,
this is a Bluesky-described simulated microscope whose every spectrum is known: for Bluesky
plans (`dklscope.bluesky.dkl_campaign`) and for `OphydAsyncBackend`'s tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import ophyd_async  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dklscope.drivers.ophyd_async.sim needs ophyd-async: pip install 'dklscope[bluesky]' "
        f"({exc})"
    ) from None
from ophyd_async.core import (
    Array1D,
    AsyncStatus,
    StandardReadable,
    soft_signal_r_and_setter,
    soft_signal_rw,
)
from ophyd_async.core import StandardReadableFormat as Format
from ophyd_async.sim import SimMotor

from .backend import StageGeometry


class SpectrumDetector(StandardReadable):
    """A spectrometer at the probe of ``backend`` (any dklscope `Backend`), steered by the
    motors ``x`` and ``y`` through ``geometry``.

    Readings (each trigger): ``spectrum`` ``(channels,)`` float32 in the backend's spectrum
    units, and ``probe_x``, ``probe_y``, where the backend says the probe was (overview
    pixels). Configuration: ``acquire_time``, the dwell in seconds. ``overview`` holds the
    backend's overview image, flattened (``overview_shape`` is in the description), read
    afresh by `refresh_overview`.
    """

    def __init__(
        self,
        backend: Any,
        x: SimMotor,
        y: SimMotor,
        geometry: StageGeometry,
        *,
        dwell_s: float = 0.05,
        name: str = "",
    ) -> None:
        # In a tuple: a Device held in an attribute would become this one's child (renamed).
        self._motors = (x, y)
        self._backend, self._geometry = backend, geometry
        self.description = backend.describe()
        channels = self.description.spectral_axis.size
        with self.add_children_as_readables(Format.HINTED_UNCACHED_SIGNAL):
            self.spectrum, self._set_spectrum = soft_signal_r_and_setter(
                Array1D[np.float32],
                np.zeros(channels, np.float32),
                units=self.description.spectrum_units,
            )
        with self.add_children_as_readables(Format.UNCACHED_SIGNAL):
            self.probe_x, self._set_probe_x = soft_signal_r_and_setter(float, units="px")
            self.probe_y, self._set_probe_y = soft_signal_r_and_setter(float, units="px")
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.acquire_time = soft_signal_rw(float, dwell_s, units="s")
        self.overview, self._set_overview = soft_signal_r_and_setter(
            Array1D[np.float32], np.asarray(backend.get_overview(), np.float32).ravel()
        )
        super().__init__(name=name)

    def overview_image(self) -> np.ndarray:
        """The backend's overview now, ``overview_shape`` (rows, cols), float32; also put in
        the ``overview`` signal."""
        image = np.asarray(self._backend.get_overview(), dtype=np.float32)
        self._set_overview(image.ravel())
        return image

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        mx, my, dwell = await asyncio.gather(
            self._motors[0].user_readback.get_value(),
            self._motors[1].user_readback.get_value(),
            self.acquire_time.get_value(),
        )
        x, y = self._geometry.to_pixels(mx, my)
        # The backend is synchronous (and may take its dwell in wall time): off the loop.
        acq = await asyncio.to_thread(self._measure, x, y, dwell)
        self._set_spectrum(np.asarray(acq.spectrum, dtype=np.float32))
        self._set_probe_x(float(acq.x))
        self._set_probe_y(float(acq.y))

    def _measure(self, x: float, y: float, dwell_s: float) -> Any:
        self._backend.move_probe(x, y)
        return self._backend.acquire(dwell_s)


@dataclass
class SimulatedDevices:
    """The devices of `simulated_devices`, and the geometry that relates them to pixels."""

    x: SimMotor
    y: SimMotor
    detector: SpectrumDetector
    geometry: StageGeometry


def simulated_devices(
    backend: Any, *, name: str = "scope", dwell_s: float = 0.05
) -> SimulatedDevices:
    """``backend`` (a dklscope `Backend`) as ophyd-async devices named ``{name}-x``,
    ``{name}-y`` and ``{name}-det``, not yet connected: create them inside
    ``ophyd_async.core.init_devices()`` or ``await device.connect()`` each. The motors are
    in the backend's ``pixel_units``, 0 at the centre of pixel (0, 0)."""
    description = backend.describe()
    geometry = StageGeometry.from_description(description)
    x = SimMotor(f"{name}-x", instant=True, units=description.pixel_units)
    y = SimMotor(f"{name}-y", instant=True, units=description.pixel_units)
    detector = SpectrumDetector(backend, x, y, geometry, dwell_s=dwell_s, name=f"{name}-det")
    return SimulatedDevices(x, y, detector, geometry)
