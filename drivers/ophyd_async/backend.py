"""`OphydAsyncBackend`: serve ophyd-async devices (a motor pair and a spectrum detector).

ophyd-async devices are asyncio objects, bound to the event loop that connected them; the
`Backend` protocol is synchronous, and `DriverServer` calls it from its own thread. Each call
therefore submits one coroutine to the devices' loop (`asyncio.run_coroutine_threadsafe`)
and waits for it, with a timeout: what `bluesky.run_engine.call_in_bluesky_event_loop` does,
with a loop of our choosing and a cancellation on timeout. By default the loop is bluesky's
when the backend is made: a `RunEngine` creates it and runs it in a background thread, and
``ophyd_async.core.init_devices()`` connects devices there. A session without a RunEngine
passes ``loop=`` the running loop its devices were connected in.

The backend uses only the Bluesky protocols of the devices (``set`` and ``locate`` of a
movable, ``trigger`` and ``read`` of a detector), so any ophyd-async device that has them
works: the simulated ones of `dklscope.drivers.ophyd_async.sim`, or an EPICS / Tango /
FastCS motor and detector.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..backend import Acquisition
from ..protocol import InstrumentDescription

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class StageGeometry:
    """How overview pixels map to motor positions, per axis: ``motor = origin + pixel × scale``.

    ``origin_x``, ``origin_y``: the motor positions (motor units) at the centre of overview pixel
    (0, 0). ``scale_x``, ``scale_y``: motor units per overview pixel (negative where the motor
    runs against the image axis). The one place where pixels become motor units and back.
    """

    origin_x: float = 0.0
    origin_y: float = 0.0
    scale_x: float = 1.0
    scale_y: float = 1.0

    def __post_init__(self) -> None:
        for name in ("origin_x", "origin_y", "scale_x", "scale_y"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"StageGeometry.{name}: must be a finite number, got {value!r}")
        for name in ("scale_x", "scale_y"):
            if getattr(self, name) == 0:
                raise ValueError(f"StageGeometry.{name}: must not be 0")

    @classmethod
    def from_description(cls, description: InstrumentDescription) -> StageGeometry:
        """Motors in the description's physical units, 0 at the centre of pixel (0, 0): the
        convention of `InstrumentDescription` itself."""
        return cls(scale_x=description.pixel_size, scale_y=description.pixel_size)

    def to_motor(self, x: float, y: float) -> tuple[float, float]:
        """Overview pixels (x column, y row) -> motor positions (x, y), motor units."""
        return self.origin_x + x * self.scale_x, self.origin_y + y * self.scale_y

    def to_pixels(self, mx: float, my: float) -> tuple[float, float]:
        """Motor positions (motor units) -> overview pixels (x column, y row)."""
        return (mx - self.origin_x) / self.scale_x, (my - self.origin_y) / self.scale_y


class OphydAsyncBackend:
    """A `Backend` over ophyd-async devices: motors ``x`` and ``y`` and a ``detector``.

    ``description`` is what the instrument is (overview shape, pixel size, spectral axis,
    dwell range, limits): ophyd-async devices do not say it themselves. ``overview`` is the
    overview image, ``(rows, cols)``: an array, a function returning one, or a readable signal
    holding one (``get_value()``), fetched afresh at every `get_overview`. ``spectrum`` names
    the detector's reading that holds the spectrum, ``(channels,)``: its key in
    ``detector.read()``, or the signal itself (its ``name``). ``dwell``, a writable signal in
    seconds (an ophyd-async detector's ``acquire_time``), is set before each exposure when
    given. ``geometry`` maps pixels to motor positions (default: motors in the description's
    ``pixel_units``, 0 at pixel (0, 0)). ``shutter``, ``(device, closed, open)``: a movable
    (a beam blanker, a shutter) and its two values; given, the backend has ``blank()``, which
    the server's dead-man switch calls when the campaign falls silent, and the next move opens
    it again. ``loop`` is the event loop the devices were connected in (default: bluesky's,
    see the module docstring); every device call waits at most ``timeout_s`` seconds (plus
    the dwell for an acquisition).
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        detector: Any,
        *,
        description: InstrumentDescription,
        overview: np.ndarray | Callable[[], np.ndarray] | Any,
        spectrum: str | Any,
        dwell: Any | None = None,
        geometry: StageGeometry | None = None,
        shutter: tuple[Any, Any, Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        for role, device, needs in (
            ("x", x, ("set",)),
            ("y", y, ("set",)),
            ("detector", detector, ("trigger", "read")),
        ):
            missing = [m for m in needs if not callable(getattr(device, m, None))]
            if missing:
                raise TypeError(f"OphydAsyncBackend: {role} {device!r} has no {missing[0]}()")
        for role, device in (("dwell", dwell), ("shutter", shutter and shutter[0])):
            if device is not None and not callable(getattr(device, "set", None)):
                raise TypeError(f"OphydAsyncBackend: {role} {device!r} has no set()")
        self.shutter = shutter
        self.blanked = False
        if shutter is not None:
            self.blank = self._blank  # the dead-man switch's hook, only with a shutter
        self.x, self.y, self.detector, self.dwell = x, y, detector, dwell
        # What this backend itself can do with the beam, whatever the description it was
        # given says (e.g. one copied from the instrument the devices wrap): blank it with a
        # shutter; it never parks the motors, and it keeps no dose account.
        self.description = dataclasses.replace(
            description,
            can_park=False,
            can_blank=shutter is not None,
            dose_units=None,
            dose_per_s=None,
        )
        self.geometry = geometry or StageGeometry.from_description(self.description)
        self._overview = overview
        self.spectrum_key = spectrum if isinstance(spectrum, str) else str(spectrum.name)
        # The loop running now (bluesky's, unless given): the one the devices were connected in.
        self._loop = loop if loop is not None else _bluesky_loop()
        self.timeout_s = timeout_s

    # -- running coroutines on the devices' loop ----------------------------------------------

    def _device_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop if self._loop is not None else _bluesky_loop()
        if loop is None or not loop.is_running():
            raise RuntimeError(
                "the ophyd-async devices' event loop is not running: create a bluesky "
                "RunEngine before connecting them, or pass loop="
            )
        return loop

    def _run(self, make: Callable[[], Awaitable[T]], timeout_s: float, what: str) -> T:
        """Run ``make()`` (a coroutine function's call) on the devices' loop, from this
        (another) thread, and wait for it at most ``timeout_s`` seconds."""
        loop = self._device_loop()

        async def call() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(call(), loop)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{what}: no answer from the devices in {timeout_s:g} s") from None

    # -- the Backend protocol -----------------------------------------------------------------

    def describe(self) -> InstrumentDescription:
        return self.description

    def get_overview(self) -> np.ndarray:
        source = self._overview
        if callable(getattr(source, "get_value", None)):
            image = self._run(source.get_value, self.timeout_s, "get_overview")
        elif callable(source):
            image = source()
        else:
            image = source
        image = np.asarray(image, dtype=np.float32)
        if image.shape != self.description.overview_shape:
            raise ValueError(
                f"the overview is {image.shape}, the description says "
                f"{self.description.overview_shape}: refusing an image of another field"
            )
        return image

    def move_probe(self, x: float, y: float) -> tuple[float, float]:
        mx, my = self.geometry.to_motor(x, y)

        async def move() -> tuple[float, float]:
            await asyncio.gather(self.x.set(mx), self.y.set(my))
            if self.blanked and self.shutter is not None:
                await self.shutter[0].set(self.shutter[2])
            return await self._where()

        where = self._run(move, self.timeout_s, f"move to ({x:g}, {y:g}) px")
        self.blanked = False
        return where

    def _blank(self) -> None:
        """Close the shutter (``shutter``'s closed value); the next move opens it."""
        assert self.shutter is not None
        device, closed, _ = self.shutter

        async def close() -> None:
            await device.set(closed)

        self._run(close, self.timeout_s, "blank")
        self.blanked = True

    def acquire(self, dwell_s: float) -> Acquisition:
        if self.blanked:  # the shutter is closed: an exposure would show nothing
            raise RuntimeError("the beam is blanked (shutter closed): move the probe first")

        async def expose() -> tuple[dict[str, Any], tuple[float, float]]:
            if self.dwell is not None:
                await self.dwell.set(dwell_s)
            await self.detector.trigger()  # an exposure begun now, after the move
            reading = await self.detector.read()
            return reading, await self._where()

        reading, (x, y) = self._run(expose, self.timeout_s + dwell_s, "acquire")
        if self.spectrum_key not in reading:
            raise KeyError(
                f"the detector's reading has no {self.spectrum_key!r}; it has {sorted(reading)}"
            )
        entry = reading[self.spectrum_key]
        spectrum = np.asarray(entry["value"], dtype=np.float32).reshape(-1)
        expected = self.description.spectral_axis.size
        if spectrum.shape != (expected,):
            raise ValueError(
                f"{self.spectrum_key}: {spectrum.shape[0]} channels, the description's spectral "
                f"axis has {expected}"
            )
        return Acquisition(
            spectrum=spectrum,
            dwell_s=float(dwell_s),
            x=x,
            y=y,
            timestamp=float(entry.get("timestamp", 0.0)),
        )

    async def _where(self) -> tuple[float, float]:
        """Where the motors are, read back from them (pixels)."""
        mx, my = await asyncio.gather(_readback(self.x), _readback(self.y))
        return self.geometry.to_pixels(mx, my)


async def _readback(motor: Any) -> float:
    """A motor's read-back position: ``locate()``'s readback, else its first reading."""
    if callable(getattr(motor, "locate", None)):
        location = await motor.locate()
        return float(location["readback"])
    reading = await motor.read()
    return float(next(iter(reading.values()))["value"])


def _bluesky_loop() -> asyncio.AbstractEventLoop | None:
    """bluesky's event loop (a `RunEngine` creates and runs it), or None (also without
    bluesky: then the backend needs ``loop=``)."""
    try:
        from bluesky.run_engine import get_bluesky_event_loop
    except ImportError:
        return None

    return get_bluesky_event_loop()
