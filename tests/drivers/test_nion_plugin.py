"""The Nion Swift plug-in: found by Swift's rules, and serving the usim it finds registered."""

from __future__ import annotations

import importlib.resources
import json
import pathlib
import re
import subprocess
import sys
import textwrap
import time

import pytest

from dklscope.drivers import MicroscopeClient

from .test_nion_optional import ROOT

pytest.importorskip("nion.swift", reason="needs the nion extra")


def free_address() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def test_the_manifest_is_one_swift_loads_after_the_instrumentation_kit():
    """PlugInManager.load_plug_ins' rules for a manifest, and for what it instantiates."""
    import nionswift_plugin.dklscope_driver as plugin

    text = importlib.resources.files(plugin).joinpath("manifest.json").read_text()
    manifest = json.loads(text)
    assert {"name", "identifier", "version"} <= set(manifest)
    assert re.match(r"[_\-a-zA-Z][_\-a-zA-Z0-9.]*$", manifest["identifier"])
    assert manifest["requires"] == ["nion.instrumentation-kit ~= 0.1"]
    extensions = [v for k, v in vars(plugin).items() if k.endswith("Extension")]
    assert [getattr(e, "extension_id", None) for e in extensions] == [manifest["identifier"]]


# Swift's part, in a child process: load the plug-in's extension as Swift does (before the
# instrument's own plug-in registers its devices), bring the usim up, serve what is there, and
# say so in a file ``restarted`` (the first server may or may not have found the devices
# already set up: a request sent to it can be lost when it stops for the restart).
SWIFT = textwrap.dedent(
    """
    import pathlib, sys, threading, types
    from dklscope.drivers.nion_swift.usim import UsimHost
    import nionswift_plugin.dklscope_driver as plugin

    application = types.SimpleNamespace(configuration_location=sys.argv[1])
    broker = types.SimpleNamespace(
        get_api=lambda version, ui_version: types.SimpleNamespace(application=application)
    )
    extension = plugin.DriverServerExtension(broker)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    with UsimHost(backend=False) as host:
        plugin.restart_server()  # the frame UsimHost set up, not the one at first sight
        (pathlib.Path(sys.argv[1]) / "restarted").touch()
        try:
            host.pump(stop)
        finally:
            extension.close()
    """
)


@pytest.mark.slow
def test_the_plug_in_serves_the_devices_swift_registered(tmp_path):
    address = free_address()
    (tmp_path / "dklscope_driver.json").write_text(
        json.dumps({"bind": address, "wait_for_devices_s": 60, "dwell_range_s": [0.002, 5]})
    )
    log = tmp_path / "swift.log"
    swift = subprocess.Popen(
        [sys.executable, "-c", SWIFT, str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    try:
        for _ in range(600):
            if (tmp_path / "restarted").exists() or swift.poll() is not None:
                break
            time.sleep(0.1)
        assert (tmp_path / "restarted").exists(), log.read_text()
        with MicroscopeClient(address, timeout_s=10.0, retries=0) as client:
            description = client.describe()
            assert description.overview_shape == (64, 64)  # the frame UsimHost set up
            assert description.name.startswith("Nion Swift usim_stem_controller")
            assert description.dwell_range_s == (0.002, 5.0)
            got = list(client.measure([(3.0, 4.0), (60.0, 20.0)], 0.002))
            assert [(a.x, a.y) for a in got] == [(3.0, 4.0), (60.0, 20.0)]
            assert all(a.spectrum.shape == (1024,) for a in got)
    finally:
        swift.stdin.close()  # Swift quits
        swift.wait(60)
    errors = log.read_text()
    assert swift.returncode == 0, errors
    assert "Traceback" not in errors


# Nion Swift's start-up (nionui_app.nionswift.main.main) with a headless user interface:
# Facade.initialize, then Application.initialize, which runs Swift's plug-in loader
# (PlugInManager.load_plug_ins: every package pkgutil finds on nionswift_plugin.__path__, plus the
# PlugIns folders, here empty). The plug-in is found where pip installed it, never by its path.
SWIFT_START = textwrap.dedent(
    """
    import json, logging, pathlib, sys
    from nion.swift import Application, Facade
    from nion.swift.model import PlugInManager
    from nion.ui import TestUI

    root, address = pathlib.Path(sys.argv[1]), sys.argv[2]
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    class HeadlessUI(TestUI.UserInterface):
        proxy = None
        def get_build_version(self): return "headless"
        def get_qt_version(self): return "none"
        def get_data_location(self): return str(root / "data")
        def get_document_location(self): return str(root / "documents")
        def get_configuration_location(self): return root / "configuration"

    (root / "configuration").mkdir()
    (root / "configuration" / "dklscope_driver.json").write_text(
        json.dumps({"bind": address, "wait_for_devices_s": 30})
    )
    Facade.initialize()
    app = Application.Application(HeadlessUI(), set_global=True)
    app.initialize(use_root_dir=False)
    ours = [e for e in PlugInManager.extensions if type(e).__name__ == "DriverServerExtension"]
    print("EXTENSIONS", len(ours), type(ours[0]).__module__ if ours else None)
    print("MODULE", sys.modules["nionswift_plugin.dklscope_driver"].__file__)
    sys.stdin.read()  # the test is done with the server: Swift quits
    app.deinitialize()
    print("SERVER STOPPED", all(e.server is None for e in ours))
    """
)


def test_swifts_plug_in_loader_finds_and_loads_the_installed_plug_in(tmp_path):
    """Swift's own loader finds the plug-in in the nionswift_plugin namespace (pip's install,
    editable here), reads its manifest (it waits for the instrumentation kit), makes its
    extension, and that serves the usim devices which Swift's usim plug-in registered."""
    address = free_address()
    swift = subprocess.Popen(
        [sys.executable, "-c", SWIFT_START, str(tmp_path), address],
        cwd=tmp_path,  # nothing of the checkout on sys.path but what pip installed
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with MicroscopeClient(address, timeout_s=30.0, retries=0) as client:
            description = client.describe()  # waits until the extension serves
    finally:
        out, _ = swift.communicate("", timeout=60)
    assert swift.returncode == 0, out
    name = "nionswift_plugin.dklscope_driver"
    assert f"Plug-in '{name}' delayed (nion.instrumentation-kit ~= 0.1)" in out  # the manifest
    assert f"Plug-in '{name}' loaded (nionswift_plugin)" in out
    assert "Plug-in 'nionswift_plugin.usim' loaded" in out
    assert f"EXTENSIONS 1 {name}" in out
    assert not list((tmp_path / "data" / "PlugIns").iterdir())  # not found through a link
    module = pathlib.Path(out.split("MODULE ", 1)[1].splitlines()[0])
    assert module.parts[-3:] == ("nionswift_plugin", "dklscope_driver", "__init__.py")
    assert description.name == "Nion Swift usim_stem_controller: uSim Scan, uSim EELS Camera"
    assert description.spectral_axis.units == "eV"
    assert "SERVER STOPPED True" in out, out
    assert "Traceback" not in out, out


def test_plugin_settings_name_the_file_and_key_they_refuse(tmp_path):
    from nionswift_plugin.dklscope_driver import PluginSettings

    path = tmp_path / "dklscope_driver.json"
    assert PluginSettings.load(path) == PluginSettings()  # no file: the defaults
    path.write_text(json.dumps({"allow": ["keys/"], "dwell_range_s": [0.01, 2.0]}))
    assert PluginSettings.load(path).allow == ("keys/",)
    path.write_text(json.dumps({"allow": "keys/"}))  # a folder, not a list of them
    with pytest.raises(ValueError, match="allow must be a list"):
        PluginSettings.load(path)
    path.write_text(json.dumps({"bnid": "tcp://127.0.0.1:1"}))
    with pytest.raises(ValueError, match="unknown keys"):
        PluginSettings.load(path)
