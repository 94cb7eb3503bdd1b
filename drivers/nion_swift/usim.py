"""Nion Swift's simulated STEM (``nionswift-usim``), headless, served over the driver protocol.

The simulator runs through the instrumentation kit's own test harness
(``nion.instrumentation.test.AcquisitionTestContext``): the usim STEM controller, its scan and
its EELS camera are registered as in Nion Swift, with an in-memory document and a test user
interface. Swift's user-interface objects insist on the main thread, so `UsimHost` runs there
and does Swift's periodic work (`UsimHost.pump`) while a `DriverServer` thread serves the
`NionBackend` of the same objects: the arrangement of the Swift plug-in, minus the windows.

- `serve_usim`: host and serve in this process until stopped (``dklscope serve`` of a config
  with ``instrument.nion_usim``);
- `usim_subprocess`: the same in a child process, whose address it yields (``dklscope run``,
  whose main thread runs the campaign);
- ``python -m dklscope.drivers.nion_swift``: that child (`main`).

Nothing from Nion is imported until a host is made: `UsimSettings` (the config section) and
this module load without the ``nion`` extra, and `require_nion` says how to install it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from ..security import ServerKeys
from ..server import DriverServer
from .backend import NionBackend

log = logging.getLogger(__name__)

# The samples of nion.usim_device.InstrumentDevice.ScanDataGenerator, in its order.
USIM_SAMPLES = ("flake", "amorphous", "cts")
NION_MODULES = ("nion.usim_device", "nion.instrumentation", "nion.swift")
INSTALL_HINT = "pip install 'dklscope[nion]'"


class NionUnavailable(ImportError):
    """Nion Swift's packages (the ``nion`` extra) are not installed."""


class UsimError(RuntimeError):
    """The headless simulator could not be started or stopped."""


@dataclass(frozen=True)
class UsimSettings:
    """The simulated instrument: which usim sample, and the overview scan of it.

    ``sample``: ``flake`` (rectangular flakes of Ni, Ge and Si over vacuum, stacked where they
    overlap: bulk plasmons at 20, 16.2 and 16.8 eV and their multiples, Ni-M, Si-L and Ge-M
    edges; each flake adds thickness, so the plasmons grow against the zero-loss peak),
    ``amorphous`` (amorphous carbon everywhere: a 25 eV plasmon and the C-K edge at 284 eV) or
    ``cts`` (gold balls on amorphous carbon). ``overview_shape`` is the scan's (rows, cols) in
    pixels over ``fov_nm`` (its longer side; the stage centre is the scan centre),
    ``pixel_time_us`` the scan's dwell per pixel in microseconds, ``dwell_range_s`` the EELS
    exposures a campaign may ask for, seconds. The EELS camera reads out unbinned: 1,024
    channels of 0.5 eV from -20 eV.
    """

    sample: Literal["flake", "amorphous", "cts"] = "flake"
    overview_shape: tuple[int, int] = (64, 64)
    fov_nm: float = 200.0
    pixel_time_us: float = 2.0
    dwell_range_s: tuple[float, float] = (0.001, 10.0)

    def __post_init__(self) -> None:
        if self.sample not in USIM_SAMPLES:
            raise ValueError(
                f"sample must be one of {', '.join(USIM_SAMPLES)}, got {self.sample!r}"
            )
        rows, cols = self.overview_shape
        if not (16 <= rows <= 1024 and 16 <= cols <= 1024):
            raise ValueError(
                f"overview_shape must be 16 to 1024 pixels a side, got {list(self.overview_shape)}"
            )
        for name in ("fov_nm", "pixel_time_us"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")
        lo, hi = self.dwell_range_s
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(
                f"dwell_range_s must be [low, high] with 0 < low <= high, got {[lo, hi]}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


def require_nion() -> None:
    """Raise `NionUnavailable` with the install command unless Nion Swift's packages are there."""
    missing = []
    for name in NION_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise NionUnavailable(
            f"Nion Swift's simulator is an optional extra: {INSTALL_HINT} "
            f"(missing: {', '.join(missing)})"
        )


class UsimHost:
    """The usim STEM, headless, in the kit's test harness; use as a context manager in the main
    thread. `backend` is its `NionBackend`; `pump` does Swift's periodic work until stopped."""

    def __init__(self, settings: UsimSettings | None = None, *, backend: bool = True) -> None:
        self.settings = settings or UsimSettings()
        self._make_backend = backend
        self.backend: NionBackend | None = None
        self.context: Any = None
        self._closers: list[Callable[[], None]] = []

    def __enter__(self) -> UsimHost:
        require_nion()
        if threading.current_thread() is not threading.main_thread():
            raise UsimError("Nion Swift's user-interface objects need the main thread")
        try:
            self._open()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _open(self) -> None:
        import asyncio

        from nion.instrumentation.test import AcquisitionTestContext
        from nion.swift import Application
        from nion.ui import TestUI
        from nion.usim_device import DeviceConfiguration
        from nion.utils import Geometry

        s = self.settings
        loop = asyncio.new_event_loop()  # Swift's windows run their tasks on this thread's loop
        asyncio.set_event_loop(loop)
        self._closers.append(lambda: _close_loop(loop))
        self._app = Application.Application(TestUI.UserInterface(), set_global=False)
        folder = tempfile.TemporaryDirectory(prefix="dklscope-usim-")  # the kit's device configs
        self._closers.append(folder.cleanup)
        configuration = DeviceConfiguration.AcquisitionContextConfiguration(
            sample_index=USIM_SAMPLES.index(s.sample), set_configuration_location=False
        )
        configuration.configuration_location = folder.name
        self.context = context = AcquisitionTestContext.AcquisitionTestContext(
            configuration, is_eels=True
        )
        self._closers.append(context.close)
        scan, camera = context.scan_hardware_source, context.camera_hardware_source
        self._closers.append(lambda: _abort(scan, camera))
        frame = scan.get_current_frame_parameters()
        frame.pixel_size = Geometry.IntSize(*s.overview_shape)
        frame.fov_nm = s.fov_nm
        frame.pixel_time_us = s.pixel_time_us
        frame.center_nm = Geometry.FloatPoint()
        frame.rotation_rad = 0.0
        scan.set_current_frame_parameters(frame)  # this sets the STEM controller's scan context
        exposure = camera.get_current_frame_parameters()
        exposure.binning = 1
        exposure.exposure_ms = 1000 * s.dwell_range_s[0]
        camera.set_current_frame_parameters(exposure)
        if self._make_backend:
            self.backend = NionBackend(
                context.instrument, scan, camera, dwell_range_s=s.dwell_range_s
            )
        log.info("Nion usim (%s sample) is up", s.sample)

    def _close(self) -> None:
        while self._closers:
            try:
                self._closers.pop()()
            except Exception:
                log.exception("while closing the Nion usim")

    def pump(self, stop: threading.Event, period_s: float = 0.02) -> None:
        """Do Swift's periodic work (its event loop, document updates) every ``period_s``
        seconds until ``stop`` is set, as Swift's own main loop would."""
        controller = self.context.document_controller
        while not stop.wait(period_s):
            controller.periodic()


def _close_loop(loop: Any) -> None:
    import asyncio

    loop.stop()
    loop.run_forever()  # let what was scheduled finish
    loop.close()
    asyncio.set_event_loop(None)


def _abort(*sources: Any) -> None:
    for source in sources:
        if source.is_playing:
            source.abort_playing(sync_timeout=10.0)


def serve_usim(
    settings: UsimSettings,
    address: str = "tcp://127.0.0.1:0",
    *,
    keys: ServerKeys | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Host the usim in this (main) thread and serve it on ``address`` until ``stop`` is set
    (or Ctrl-C); ``on_ready`` gets the bound endpoint once the server answers."""
    stop = stop or threading.Event()
    with UsimHost(settings) as host:
        assert host.backend is not None
        with DriverServer(host.backend, address, keys=keys) as server:
            assert server.endpoint is not None
            if on_ready is not None:
                on_ready(server.endpoint)
            host.pump(stop)


@contextmanager
def usim_subprocess(
    settings: UsimSettings, *, startup_timeout_s: float = 120.0, stop_timeout_s: float = 30.0
) -> Iterator[str]:
    """Serve the usim from a child process on a free loopback port; yields its address.

    The child has its own session, so a Ctrl-C meant for the campaign does not reach it; it
    stops when this context exits, or by itself when this process dies (its stdin closes).
    Its messages go to this process's standard error.
    """
    require_nion()
    command = [sys.executable, "-m", "dklscope.drivers.nion_swift", "--settings"]
    command += [json.dumps(settings.to_dict()), "--until-stdin-closes"]
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        yield _read_address(child, startup_timeout_s)
    finally:
        _stop_child(child, stop_timeout_s)


def _read_address(child: subprocess.Popen, timeout_s: float) -> str:
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    address = lines[0].strip() if lines else ""
    if not address:
        code = child.poll()
        why = f"exited with code {code}" if code is not None else f"was silent for {timeout_s} s"
        raise UsimError(f"the Nion usim server {why} before serving (its messages are above)")
    return address


def _stop_child(child: subprocess.Popen, timeout_s: float) -> None:
    try:
        if child.stdin is not None:
            child.stdin.close()  # the child's cue to stop
        child.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("the Nion usim server did not stop within %g s; killing it", timeout_s)
        child.kill()
        child.wait()
    finally:
        if child.stdout is not None:
            child.stdout.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m dklscope.drivers.nion_swift``: serve the usim; print the endpoint on one line of
    standard output once it answers (everything else goes to standard error)."""
    parser = argparse.ArgumentParser(
        prog="python -m dklscope.drivers.nion_swift",
        description="Serve Nion Swift's simulated STEM (nionswift-usim), headless, over the "
        "dklscope driver protocol until interrupted.",
    )
    parser.add_argument("--bind", default="tcp://127.0.0.1:0", help="default: %(default)s")
    parser.add_argument("--settings", default="{}", help="UsimSettings as a JSON object")
    parser.add_argument(
        "--until-stdin-closes", action="store_true", help="stop when standard input closes"
    )
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()  # to standard error
    handler.setFormatter(logging.Formatter("nion usim: %(levelname)s %(message)s"))
    logger = logging.getLogger("dklscope")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        fields = json.loads(args.settings)
        settings = UsimSettings(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        )
    except (ValueError, TypeError) as exc:
        parser.error(f"--settings: {exc}")
    announce = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever the kit prints goes to stderr
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.until_stdin_closes:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    def ready(endpoint: str) -> None:
        announce.write(endpoint + "\n")
        announce.close()

    try:
        serve_usim(settings, args.bind, on_ready=ready, stop=stop)
    except NionUnavailable as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
