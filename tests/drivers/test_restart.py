"""A `dklscope serve` process killed (SIGKILL) and restarted in the middle of a campaign."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from dklscope.campaign.instruments import build_sample
from dklscope.config import load_config
from dklscope.drivers import MicroscopeClient


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(config_path, address):
    command = [sys.executable, "-m", "dklscope", "serve", str(config_path), "--bind", address]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_killed_and_restarted_server_loses_and_duplicates_nothing(tmp_path):
    config_path = tmp_path / "serve.yaml"
    config_path.write_text(
        "instrument: {simulator: {shape: [24, 32], seed: 5, noise: false}}\n"
        "scalarizer: {window: [1.0, 1.4]}\n"
    )
    sample = build_sample(load_config(config_path).instrument.simulator)
    address = f"tcp://127.0.0.1:{free_port()}"
    servers = [serve(config_path, address)]
    points = [(float(3 * i % 32), float(7 * i % 24)) for i in range(40)]
    killed = threading.Event()

    def kill_and_restart():
        servers[0].send_signal(signal.SIGKILL)
        servers[0].wait()
        killed.set()
        servers.append(serve(config_path, address))

    measured = []
    try:
        # Generous retries: the first server and the restarted one take seconds to start.
        with MicroscopeClient(address, timeout_s=0.5, retries=60) as client:
            for i, (x, y) in enumerate(points):
                if i == 15:
                    threading.Thread(target=kill_and_restart).start()
                    killed.wait(10)
                client.move(x, y)
                measured.append(client.acquire(0.1))
            assert client.status()["session"] != ""  # the new process answers
    finally:
        for server in servers:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
    assert len(servers) == 2 and killed.is_set()
    assert len(measured) == len(points)
    for (x, y), acq in zip(points, measured, strict=True):
        assert (acq.x, acq.y) == (x, y)
        expected = sample.signal[int(y), int(x)] * np.float32(0.1)
        np.testing.assert_array_equal(acq.spectrum, expected)
    seqs = [acq.seq for acq in measured]
    assert seqs[:15] == list(range(15))  # the first process ...
    assert seqs[15:] == list(range(25))  # ... and the second: one exposure per point
