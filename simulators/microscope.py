"""`SimulatedMicroscope`: a `Backend` that measures a `Sample`, optionally with the habits of a
real instrument (drift, positioning error, latency, beam damage and injected faults)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from dklscope.drivers import Acquisition, InstrumentDescription

from .sample import Sample

log = logging.getLogger(__name__)

FAULT_KINDS = ("timeout", "nan", "saturated", "hang")


@dataclass(frozen=True)
class Behaviour:
    """How a `SimulatedMicroscope` departs from an ideal instrument. Every default is off.

    The instrument clock (`SimulatedMicroscope.clock_s`, seconds, starting at 0) is what drift
    is measured against. Without ``realtime`` it is simulated: each acquisition advances it by
    ``dwell_s + overhead_s`` (plus ``hang_s`` on a hang), each `get_overview` by
    ``overview_time_s``, and nothing else does, so idle time does not count. With ``realtime``
    those durations are slept instead and the clock is the wall time since the microscope was
    made, so the specimen also drifts while the instrument sits idle. Every operation sees the
    drift at the instant it starts; the clock then advances by its duration.

    Fields:

    - ``drift_px_per_s``: (vx, vy), the specimen's velocity in overview pixels per second of
      instrument time. At clock ``t`` it has moved by ``(dx, dy) = (vx t, vy t)``: the probe at
      ``(x, y)`` measures the spectrum of the specimen at ``(x - dx, y - dy)`` (nearest pixel,
      clipped to the image), and the overview is the sample image shifted by ``(dx, dy)``
      (cubic-spline sub-pixel shift, edges extended).
    - ``position_sd_px``: standard deviation, in overview pixels along each axis, of the
      Gaussian error of every probe move. `move_probe` returns where the probe actually went
      (clipped to the probe limits) and acquisitions are taken there.
    - ``overhead_s``: seconds of latency per acquisition beyond the dwell (readout, settling).
    - ``overview_time_s``: seconds one `get_overview` takes (the scan of the overview).
    - ``damage_per_dose``: beam damage rate, per second of dose. Each spectrum pixel
      accumulates dose ``D`` (the sum of the dwells spent on it); an acquisition there sees the
      signal times ``exp(-damage_per_dose * D)``, with ``D`` the dose before this acquisition.
    - ``dose_per_s`` and ``dose_units``: the dose one second of exposure delivers, and its
      units, as the instrument describes them (protocol 1.2). The default, 1 ``"s"``, counts
      the dose as seconds of exposure; e.g. ``6.2e8`` ``"e-"`` is a 100 pA probe in electrons.
      Every acquisition delivers ``dwell_s * dose_per_s``; a parked (blanked) beam none.
    - ``fault_rate``: probability in [0, 1] that an acquisition fails. The fault's kind is drawn
      uniformly from ``faults``. Faults come from their own generator, seeded from the
      microscope's seed, and a faulty acquisition still draws its noise, so turning faults on
      changes neither the noise of the other acquisitions nor where the probe lands.
    - ``faults``: the kinds to draw from, any of ``FAULT_KINDS``:
        * ``"timeout"``: after the exposure, raise ``TimeoutError("detector readout timed
          out")`` (the server replies BACKEND_ERROR);
        * ``"nan"``: every channel of the spectrum is NaN;
        * ``"saturated"``: the spectrum is clipped at ``saturation_level``;
        * ``"hang"``: sleep ``hang_s`` seconds of wall time (in either mode) before answering
          normally, so a client with a shorter timeout gives up.
    - ``saturation_level``: the detector's full scale, in the sample's spectrum units.
    - ``hang_s``: seconds a hang lasts.

    Each fault is appended to `SimulatedMicroscope.fault_log` as ``(acquisition index, kind)``
    (indices count every `acquire` call from 0) and logged as a warning.
    """

    drift_px_per_s: tuple[float, float] = (0.0, 0.0)
    position_sd_px: float = 0.0
    overhead_s: float = 0.0
    overview_time_s: float = 0.0
    damage_per_dose: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    saturation_level: float = 65535.0
    hang_s: float = 30.0
    dose_per_s: float = 1.0
    dose_units: str = "s"

    def __post_init__(self) -> None:
        drift = tuple(self.drift_px_per_s)
        if len(drift) != 2 or not all(_is_finite_number(v) for v in drift):
            raise ValueError(f"drift_px_per_s must be two finite numbers, got {drift!r}")
        object.__setattr__(self, "drift_px_per_s", (float(drift[0]), float(drift[1])))
        for name in (
            "position_sd_px",
            "overhead_s",
            "overview_time_s",
            "damage_per_dose",
            "dose_per_s",
        ):
            _check_range(name, getattr(self, name), 0.0, math.inf)
        _check_range("fault_rate", self.fault_rate, 0.0, 1.0)
        _check_range("hang_s", self.hang_s, 0.0, math.inf)
        _check_range("saturation_level", self.saturation_level, 0.0, math.inf)
        if self.saturation_level <= 0:
            raise ValueError(f"saturation_level must be positive, got {self.saturation_level!r}")
        if isinstance(self.faults, str):
            raise ValueError(f"faults must be a tuple of fault kinds, got {self.faults!r}")
        faults = tuple(self.faults)
        unknown = [kind for kind in faults if kind not in FAULT_KINDS]
        if unknown:
            raise ValueError(f"faults has unknown kinds {unknown}; known: {FAULT_KINDS}")
        if not faults and self.fault_rate > 0:
            raise ValueError("faults is empty but fault_rate is above 0")
        object.__setattr__(self, "faults", faults)
        if not isinstance(self.dose_units, str) or not self.dose_units.strip():
            raise ValueError(f"dose_units must be a non-empty string, got {self.dose_units!r}")


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(name: str, value: object, low: float, high: float) -> None:
    if not _is_finite_number(value) or not low <= value <= high:  # type: ignore[operator]
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")


class SimulatedMicroscope:
    """Park a probe on a `Sample` and measure spectra.

    The spectrum at a position is that of the sample's spectrum pixel under the nearest
    overview pixel, measured through the sample's noise model when ``noise`` is on and its mean
    when off. With ``realtime`` an acquisition takes its dwell (plus overhead) in wall time;
    without it, it returns at once. ``seed`` seeds this instrument's generators: the
    positioning error and the faults each have their own, and the noise of an acquisition is
    drawn from ``default_rng([seed, i, j, n])`` for spectrum pixel ``(i, j)`` measured for the
    ``n``-th time (from 0). So the noise is a function of what is measured, not of the order of
    the requests: a campaign that resumes after a crash on a fresh simulator measures exactly
    what it would have measured uninterrupted. ``behaviour`` adds drift, positioning error,
    latency, beam damage and faults (see `Behaviour`); its defaults add none.

    Parking and dose (protocol 1.2): `park` moves the probe to ``park_position`` (overview
    pixels; default the corner ``(x_min, y_min)`` of the probe limits) and blanks the beam,
    `blank` only blanks it; `parked` says the beam is blanked, and nothing is acquired (and no
    dose delivered) until the next `move_probe`. `dose_total` is the dose of every acquisition
    so far, in ``behaviour.dose_units``; `dose_s` the exposure seconds per spectrum pixel.
    """

    def __init__(
        self,
        sample: Sample,
        *,
        seed: int = 0,
        noise: bool = True,
        realtime: bool = False,
        behaviour: Behaviour = Behaviour(),
        dwell_range_s: tuple[float, float] = (1e-4, 10.0),
        park_position: tuple[float, float] | None = None,
    ) -> None:
        self.sample = sample
        self.noise = noise
        self.realtime = realtime
        self.behaviour = behaviour
        self._seed = seed
        self._position_rng = np.random.default_rng([seed, 1])
        self._fault_rng = np.random.default_rng([seed, 2])
        self._description = InstrumentDescription(
            name=f"simulated microscope ({sample.name})",
            overview_shape=sample.shape,
            pixel_size=sample.pixel_size,
            pixel_units=sample.pixel_units,
            spectral_axis=sample.spectral_axis,
            spectrum_units=sample.spectrum_units,
            dwell_range_s=dwell_range_s,
            saturation_level=behaviour.saturation_level,
            dose_units=behaviour.dose_units,
            dose_per_s=behaviour.dose_per_s,
            can_park=True,
            can_blank=True,
        )
        x0, _, y0, _ = self._description.probe_limits
        self.park_position = (x0, y0) if park_position is None else park_position
        if self._description.check_position(*self.park_position) is not None:
            raise ValueError(
                f"park_position {self.park_position} is not a position the probe may go to"
            )
        self._x, self._y = 0.0, 0.0
        self._clock_s = 0.0
        self._started = time.monotonic()
        self.n_acquisitions = 0
        self.fault_log: list[tuple[int, str]] = []
        self.dose_s = np.zeros(sample.signal.shape[:2])  # dwell seconds per spectrum pixel
        self.visits = np.zeros(sample.signal.shape[:2], dtype=np.int64)  # acquisitions per pixel
        self.parked = False  # the beam is blanked until the next move
        self.dose_total = 0.0  # of every acquisition, in behaviour.dose_units
        self.n_parks = 0  # calls of park

    # -- the Backend protocol -----------------------------------------------------------------

    def describe(self) -> InstrumentDescription:
        return self._description

    def get_overview(self) -> np.ndarray:
        dx, dy = self.drift_px()
        self._pass_time(self.behaviour.overview_time_s, wall=self.realtime)
        if dx == 0.0 and dy == 0.0:
            return self.sample.image
        shifted = ndimage.shift(self.sample.image, (dy, dx), mode="nearest")
        return shifted.astype(np.float32)

    def move_probe(self, x: float, y: float) -> tuple[float, float]:
        sd = self.behaviour.position_sd_px
        if sd > 0:
            ex, ey = sd * self._position_rng.standard_normal(2)
            x0, x1, y0, y1 = self._description.probe_limits
            x, y = min(max(x + ex, x0), x1), min(max(y + ey, y0), y1)
        self._x, self._y = float(x), float(y)
        self.parked = False
        return self._x, self._y

    def park(self) -> tuple[float, float]:
        """Move the probe to `park_position` and blank the beam (the driver server's ``park``
        and dead-man switch): no acquisition, and no dose, until the probe is moved again.
        Returns where the probe now is."""
        self._x, self._y = (float(v) for v in self.park_position)
        self.parked = True
        self.n_parks += 1
        return self._x, self._y

    def blank(self) -> None:
        """Blank the beam where the probe is, until the next move."""
        self.parked = True

    def acquire(self, dwell_s: float) -> Acquisition:
        if self.parked:
            raise RuntimeError("the beam is parked (blanked): move the probe first")
        index, self.n_acquisitions = self.n_acquisitions, self.n_acquisitions + 1
        dose = dwell_s * self.behaviour.dose_per_s
        self.dose_total += dose  # delivered even if the readout then fails
        fault = self._draw_fault()
        i, j = self._spectrum_pixel_under_probe()
        signal = self._damaged_signal(i, j, dwell_s)
        noise = self.sample.noise
        if self.noise:
            rng = np.random.default_rng([self._seed, i, j, int(self.visits[i, j])])
            spectrum = noise.measure(signal, dwell_s, rng)
        else:
            spectrum = noise.expected(signal, dwell_s)
        self.visits[i, j] += 1
        self._pass_time(dwell_s + self.behaviour.overhead_s, wall=self.realtime)
        spectrum = np.asarray(spectrum, dtype=np.float32)
        if fault is not None:
            spectrum = self._inject(fault, index, spectrum)
        return Acquisition(
            spectrum=spectrum,
            dwell_s=dwell_s,
            x=self._x,
            y=self._y,
            timestamp=time.time(),
            dose=dose,
        )

    # -- the instrument clock and drift -------------------------------------------------------

    @property
    def clock_s(self) -> float:
        """Instrument time in seconds (see `Behaviour`): simulated, or wall time in realtime."""
        if self.realtime:
            return time.monotonic() - self._started
        return self._clock_s

    def drift_px(self) -> tuple[float, float]:
        """How far (dx, dy), in overview pixels, the specimen has drifted by now."""
        vx, vy = self.behaviour.drift_px_per_s
        t = self.clock_s
        return vx * t, vy * t

    def _pass_time(self, seconds: float, *, wall: bool) -> None:
        if wall and seconds > 0:
            time.sleep(seconds)
        self._clock_s += seconds

    # -- what the probe measures --------------------------------------------------------------

    def _spectrum_pixel_under_probe(self) -> tuple[int, int]:
        """The spectrum pixel of the specimen under the probe, drift included."""
        dx, dy = self.drift_px()
        rows, cols = self.sample.shape
        row = min(max(round(self._y - dy), 0), rows - 1)
        col = min(max(round(self._x - dx), 0), cols - 1)
        i, j = self.sample.spectrum_pixel(row, col)
        return int(i), int(j)

    def _damaged_signal(self, i: int, j: int, dwell_s: float) -> np.ndarray:
        """The signal at (i, j) after the dose it has had so far; then add this dwell's dose."""
        signal = self.sample.signal[i, j]
        rate = self.behaviour.damage_per_dose
        if rate > 0:
            signal = signal * np.float32(math.exp(-rate * self.dose_s[i, j]))
        self.dose_s[i, j] += dwell_s
        return signal

    # -- faults -------------------------------------------------------------------------------

    def _draw_fault(self) -> str | None:
        """The fault this acquisition suffers, if any; draws the same numbers either way."""
        b = self.behaviour
        if b.fault_rate == 0:
            return None
        unlucky = self._fault_rng.random() < b.fault_rate
        kind = b.faults[self._fault_rng.integers(len(b.faults))]
        return kind if unlucky else None

    def _inject(self, fault: str, index: int, spectrum: np.ndarray) -> np.ndarray:
        self.fault_log.append((index, fault))
        log.warning("injected fault %r at acquisition %d", fault, index)
        if fault == "timeout":
            raise TimeoutError("detector readout timed out")
        if fault == "nan":
            return np.full_like(spectrum, np.nan)
        if fault == "saturated":
            return np.minimum(spectrum, np.float32(self.behaviour.saturation_level))
        self._pass_time(self.behaviour.hang_s, wall=True)  # "hang"
        return spectrum
