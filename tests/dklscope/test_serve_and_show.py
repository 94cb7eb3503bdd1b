import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dklscope.campaign.instruments import build_sample
from dklscope.cli import main
from dklscope.config import load_config
from dklscope.drivers import InstrumentTimeout, MicroscopeClient

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHIPPED = sorted(  # campaign configs on the built-in simulator; bench_*.yaml are grids of them
    # (tests/dklscope/test_grid.py), nion_usim.yaml is run in tests/dklscope/test_nion_campaign.py
    p
    for p in (ROOT / "configs").glob("*.yaml")
    if not p.name.startswith("bench_") and load_config(p).instrument.simulator is not None
)


def test_a_config_ships_for_every_sample():
    kinds = {load_config(path).instrument.simulator.sample for path in SHIPPED}
    assert kinds == {"lattice", "plasmonic", "ferroelectric", "replay"}


@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_sample_show_draws_every_shipped_config(tmp_path, path):
    """Each shipped config's sample builds, its scalarizer window lies on the sample's axis,
    and the overview and ground-truth pictures are drawn (the replay reads ../shared/data)."""
    assert main(["sample", "show", str(path), "--out", str(tmp_path)]) == 0
    names = ["overview.png", "truth.png", "spectra.png"]
    if build_sample(load_config(path).instrument.simulator).labels:
        names.append("labels.png")
    for name in names:
        assert (tmp_path / name).read_bytes()[:8] == PNG, name


def test_sample_show_refuses_a_window_off_the_axis(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("instrument: {simulator: {}}\nscalarizer: {window: [40, 50]}\n")
    assert main(["sample", "show", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "scalarizer.window" in capsys.readouterr().err


def test_serve_answers_over_the_protocol_until_interrupted(tmp_path):
    config_path = tmp_path / "serve.yaml"
    config_path.write_text(
        "instrument: {simulator: {shape: [32, 40], seed: 2, noise: false}}\n"
        "scalarizer: {window: [1.0, 1.4]}\n"
    )
    address = f"tcp://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [sys.executable, "-m", "dklscope", "serve", str(config_path), "--bind", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sample = build_sample(load_config(config_path).instrument.simulator)
        with MicroscopeClient(address, timeout_s=2.0) as client:
            for _ in range(60):  # the server process needs a moment to start
                try:
                    description = client.describe()
                    break
                except InstrumentTimeout:
                    time.sleep(0.25)
            else:
                raise AssertionError(f"no answer from {address}: {server.stderr.read()}")
            assert description.overview_shape == (32, 40)
            np.testing.assert_array_equal(client.get_overview(), sample.image)
            client.move(7, 21)
            np.testing.assert_array_equal(
                client.acquire(0.1).spectrum, sample.signal[21, 7] * np.float32(0.1)
            )
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "Traceback" not in err
