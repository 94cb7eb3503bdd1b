"""`SimulatedMicroscope`: a `Backend` that measures a `Sample`."""

from __future__ import annotations

import time

import numpy as np

from dklscope.drivers import Acquisition, InstrumentDescription

from .sample import Sample


class SimulatedMicroscope:
    """Park a probe on a `Sample` and measure spectra.

    The spectrum at a position is that of the sample's spectrum pixel under the nearest
    overview pixel, measured through the sample's noise model when ``noise`` is on and its mean
    when off. With ``realtime`` an acquisition takes its dwell in wall time; without it, it
    returns at once. ``seed`` seeds this instrument's own noise generator only.
    """

    def __init__(
        self,
        sample: Sample,
        *,
        seed: int = 0,
        noise: bool = True,
        realtime: bool = False,
        dwell_range_s: tuple[float, float] = (1e-4, 10.0),
    ) -> None:
        self.sample = sample
        self.noise = noise
        self.realtime = realtime
        self._rng = np.random.default_rng(seed)
        self._description = InstrumentDescription(
            name=f"simulated microscope ({sample.name})",
            overview_shape=sample.shape,
            pixel_size=sample.pixel_size,
            pixel_units=sample.pixel_units,
            spectral_axis=sample.spectral_axis,
            spectrum_units=sample.spectrum_units,
            dwell_range_s=dwell_range_s,
        )
        self._x, self._y = 0.0, 0.0

    def describe(self) -> InstrumentDescription:
        return self._description

    def get_overview(self) -> np.ndarray:
        return self.sample.image

    def move_probe(self, x: float, y: float) -> tuple[float, float]:
        self._x, self._y = x, y
        return x, y

    def acquire(self, dwell_s: float) -> Acquisition:
        i, j = self.sample.spectrum_pixel(round(self._y), round(self._x))
        signal = self.sample.signal[i, j]
        if self.realtime:
            time.sleep(dwell_s)
        noise = self.sample.noise
        spectrum = (
            noise.measure(signal, dwell_s, self._rng)
            if self.noise
            else noise.expected(signal, dwell_s)
        )
        return Acquisition(
            spectrum=np.asarray(spectrum, dtype=np.float32),
            dwell_s=dwell_s,
            x=self._x,
            y=self._y,
            timestamp=time.time(),
        )
