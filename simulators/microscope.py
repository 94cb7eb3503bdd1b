"""`SimulatedMicroscope`: a `Backend` that measures a `Sample`."""

from __future__ import annotations

import time

import numpy as np

from dklscope.drivers import Acquisition, InstrumentDescription

from .sample import Sample


class SimulatedMicroscope:
    """Park a probe on a `Sample` and count electrons.

    The spectrum at a position is the sample's spectrum at the nearest pixel times the dwell,
    with Poisson noise when ``noise`` is on (counts, so the relative noise falls as
    ``1/sqrt(dwell)``). With ``realtime`` an acquisition takes its dwell in wall time; without
    it, it returns at once. ``seed`` seeds this instrument's own noise generator only.
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
        row, col = round(self._y), round(self._x)
        expected = self.sample.rates[row, col] * dwell_s
        if self.realtime:
            time.sleep(dwell_s)
        spectrum = self._rng.poisson(expected) if self.noise else expected
        return Acquisition(
            spectrum=spectrum.astype(np.float32),
            dwell_s=dwell_s,
            x=self._x,
            y=self._y,
            timestamp=time.time(),
        )
