"""Nion Swift plug-in: serve the microscope Swift drives over the dklscope driver protocol.

Swift loads every package of the ``nionswift_plugin`` namespace that has a ``manifest.json``;
this one needs the instrumentation kit. At start-up Swift makes a `DriverServerExtension`,
which waits in a background thread for the STEM controller, the scan and the EELS camera to be
registered by their own plug-ins (the instrument's, or ``nionswift-usim``'s), then serves them
as a `NionBackend` with a `DriverServer` until Swift quits. A campaign reaches it with
``instrument: address: tcp://HOST:PORT``.

Settings, all optional, in ``dklscope_driver.json`` in Swift's configuration folder::

    {"bind": "tcp://127.0.0.1:5555",   # loopback only unless another interface is named
     "scan": null,                     # hardware-source id; null: the first scan
     "eels_camera": null,              # hardware-source id; null: the first EELS camera
     "dwell_range_s": [0.001, 10.0],   # exposures a campaign may ask for, seconds
     "secret_key": null,               # CURVE: the server's NAME.key_secret ('dklscope keys')
     "allow": [],                      # with secret_key: clients' NAME.key files or folders
     "wait_for_devices_s": 120}        # give up if the devices are not there by then

A problem is logged (Swift's output window) and the server is not started; Swift goes on.

The server describes the scan frame (size, field of view) as it is when it starts, and refuses
to move the probe once the scan context has changed. After setting up another frame, serve
it with ``import nionswift_plugin.dklscope_driver as d; d.restart_server()`` in Swift's
Python console (a new server session on the same address).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from dklscope.drivers.nion_swift.backend import NionBackend
from dklscope.drivers.security import ServerKeys
from dklscope.drivers.server import DriverServer

log = logging.getLogger("dklscope.drivers.nionswift_plugin")

SETTINGS_NAME = "dklscope_driver.json"

_running: list[DriverServerExtension] = []  # the extensions Swift made, for restart_server()


def restart_server() -> None:
    """Serve the instrument as it is set up now: stop the driver server and start it again."""
    for extension in list(_running):
        extension.restart()


@dataclass(frozen=True)
class PluginSettings:
    """What ``dklscope_driver.json`` may say (see the module's docstring)."""

    bind: str = "tcp://127.0.0.1:5555"
    scan: str | None = None
    eels_camera: str | None = None
    dwell_range_s: tuple[float, float] = (1e-3, 10.0)
    secret_key: str | None = None
    allow: tuple[str, ...] = ()
    wait_for_devices_s: float = 120.0

    @classmethod
    def load(cls, path: pathlib.Path) -> PluginSettings:
        """The settings in ``path``, or the defaults if there is no such file; raises
        `ValueError` naming the file and the key."""
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            extra = sorted(set(data) - known) if isinstance(data, dict) else data
            raise ValueError(f"{path}: unknown keys {extra}; expected some of {sorted(known)}")
        for key in ("dwell_range_s", "allow"):
            if key in data:
                if not isinstance(data[key], list):
                    raise ValueError(f"{path}: {key} must be a list, got {data[key]!r}")
                data[key] = tuple(data[key])
        return cls(**data)


class DriverServerExtension:
    """Started by Swift with its API broker; serves the instrument from a background thread."""

    extension_id = "org.dklscope.driver-server"

    def __init__(self, api_broker: Any) -> None:
        api = api_broker.get_api(version="1", ui_version="1")
        self.settings_path = pathlib.Path(api.application.configuration_location) / SETTINGS_NAME
        self.server: DriverServer | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dklscope-driver", daemon=True)
        self._thread.start()
        _running.append(self)

    def restart(self) -> None:
        """Stop serving, then serve the devices as they are now (in the calling thread)."""
        self._thread.join()  # the first start is done (or given up)
        if self.server is not None:
            self.server.stop()
            self.server = None
        self._serve()

    def _serve(self) -> None:
        try:
            settings = PluginSettings.load(self.settings_path)
            keys = None
            if settings.secret_key is not None:
                keys = ServerKeys.from_files(
                    pathlib.Path(settings.secret_key), [pathlib.Path(p) for p in settings.allow]
                )
            backend = self._wait_for_devices(settings)
            if backend is None:
                return
            server = DriverServer(backend, settings.bind, keys=keys)
            server.start()
        except Exception:
            log.exception("the dklscope driver server did not start")
            return
        self.server = server
        log.info("dklscope driver server: %s on %s", backend.describe().name, server.endpoint)

    def _wait_for_devices(self, settings: PluginSettings) -> NionBackend | None:
        deadline = time.monotonic() + settings.wait_for_devices_s
        while True:
            try:
                return NionBackend.from_swift(
                    scan_id=settings.scan,
                    eels_camera_id=settings.eels_camera,
                    dwell_range_s=settings.dwell_range_s,
                )
            except (LookupError, ValueError) as exc:  # not registered (or scanned) yet
                if time.monotonic() > deadline:
                    log.error("dklscope driver server not started: %s", exc)
                    return None
            if self._stop.wait(0.5):
                return None

    def close(self) -> None:
        """Stop serving (Swift calls this when it unloads its plug-ins)."""
        self._stop.set()
        self._thread.join()
        if self in _running:
            _running.remove(self)
        if self.server is not None:
            self.server.stop()
            self.server = None
