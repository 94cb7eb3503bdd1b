"""``dklscope bench protocol``: the driver protocol's round trip against bare pyzmq.

Over loopback, with zero dwell and a backend that returns a fixed spectrum at once (so only the
protocol is measured), it times move+acquire as two requests, as one ``measure`` of one point
(the fast path), a streamed ``measure`` of many points, and, as the reference, a bare pyzmq
REQ/REP exchange of the same bytes (the request and the reply with its spectrum). Server and
echo run in a thread of this process, the same way for both.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from ..drivers import (
    Acquisition,
    DriverServer,
    InstrumentDescription,
    MicroscopeClient,
    SpectralAxis,
)
from ..drivers.protocol import encode
from . import machine

DESCRIPTION = (
    "driver protocol: move+acquire round trip of a float32 spectrum over loopback, "
    "against a bare pyzmq REQ/REP echo of the same bytes"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=5000, help="round trips per row (%(default)s)")
    parser.add_argument("--warmup", type=int, default=300, help="untimed round trips first")
    parser.add_argument("--channels", type=int, default=2048, help="spectrum length")


class ConstantBackend:
    """An instrument that answers at once: a fixed spectrum wherever the probe is."""

    def __init__(self, channels: int) -> None:
        self._description = InstrumentDescription(
            name="constant",
            overview_shape=(64, 64),
            pixel_size=1.0,
            pixel_units="nm",
            spectral_axis=SpectralAxis(size=channels, offset=0.0, scale=0.01, units="eV"),
            spectrum_units="counts",
            dwell_range_s=(0.0, 1.0),
        )
        self._spectrum = np.random.default_rng(0).random(channels, dtype=np.float32)
        self._x, self._y = 0.0, 0.0

    def describe(self) -> InstrumentDescription:
        return self._description

    def get_overview(self) -> np.ndarray:
        return np.zeros((64, 64), dtype=np.float32)

    def move_probe(self, x: float, y: float) -> tuple[float, float]:
        self._x, self._y = x, y
        return x, y

    def acquire(self, dwell_s: float) -> Acquisition:
        return Acquisition(self._spectrum, dwell_s, self._x, self._y, time.time())


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    n, warmup, channels = args.n, args.warmup, args.channels
    rows = []
    with DriverServer(ConstantBackend(channels), "tcp://127.0.0.1:0") as s:
        with MicroscopeClient(s.endpoint, timeout_s=5.0) as client:

            def two_requests(i: int) -> None:
                client.move(i % 64, (i // 64) % 64)
                client.acquire(0.0)

            def fast_path(i: int) -> None:
                next(client.measure([(i % 64, (i // 64) % 64)], 0.0))

            request, reply = _wire_sizes(client, channels)
            echo = _Echo(request, reply)
            try:
                reference = _timed(echo, n, warmup)
            finally:
                echo.close()
            separate = _timed(two_requests, n, warmup)
            combined = _timed(fast_path, n, warmup)
            streamed_s = _streamed(client, n)
    ref_median = float(np.median(reference))
    for name, rtts in [
        ("bare pyzmq REQ/REP echo", reference),
        ("move + acquire, 2 requests", separate),
        ("measure 1 point, 1 request", combined),
    ]:
        rows.append(_row(name, rtts, ref_median, channels))
    rows.append(
        {
            "case": f"measure {n} points, streamed",
            "median_rtt_ms": None,
            "p99_rtt_ms": None,
            "throughput_per_s": n / streamed_s,
            "reference_median_rtt_ms": ref_median * 1e3,
            "ratio_to_reference": None,
            "channels": channels,
            "n": n,
        }
    )
    rows[0]["machine"] = machine()["platform"]
    rows[0]["cpus"] = machine()["cpus"]
    return rows


def _row(name: str, rtts: np.ndarray, ref_median: float, channels: int) -> dict[str, Any]:
    median = float(np.median(rtts))
    return {
        "case": name,
        "median_rtt_ms": median * 1e3,
        "p99_rtt_ms": float(np.percentile(rtts, 99)) * 1e3,
        "throughput_per_s": len(rtts) / float(np.sum(rtts)),
        "reference_median_rtt_ms": ref_median * 1e3,
        "ratio_to_reference": median / ref_median,
        "channels": channels,
        "n": len(rtts),
    }


def _timed(fn: Callable[[int], None], n: int, warmup: int) -> np.ndarray:
    for i in range(warmup):
        fn(i)
    rtts = np.empty(n)
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        fn(i)
        rtts[i] = clock() - t0
    return rtts


def _streamed(client: MicroscopeClient, n: int) -> float:
    points = [(i % 64, (i // 64) % 64) for i in range(n)]
    t0 = time.perf_counter()
    count = sum(1 for _ in client.measure(points, 0.0))
    assert count == n
    return time.perf_counter() - t0


def _wire_sizes(client: MicroscopeClient, channels: int) -> tuple[list[bytes], list[bytes]]:
    """The frames of a typical one-point measure request and of its reply."""
    header = {"id": "x" * 16, "cmd": "measure", "args": {"points": [[12.0, 34.0]], "dwell_s": 0.0}}
    request = [bytes(f) for f in encode({**header, "deadline_s": 5.0, "client": "c" * 12})]
    result = {"seq": 123456, "request": "x" * 16, "dwell_s": 0.0, "x": 12.0, "y": 34.0}
    result.update(timestamp=time.time(), index=0, x_read=12.0, y_read=34.0)
    spectrum = np.zeros(channels, dtype=np.float32)
    reply = encode({"id": "x" * 16, "ok": True, "more": False, "result": result}, [spectrum])
    return request, [bytes(f) for f in reply]


class _Echo:
    """A REQ/REP pair in this process: each call sends ``request`` and receives ``reply``."""

    def __init__(self, request: list[bytes], reply: list[bytes]) -> None:
        # Two contexts, as for DriverServer and MicroscopeClient: an I/O thread each.
        self._contexts = (zmq.Context(), zmq.Context())
        context = self._contexts[0]
        self._rep = context.socket(zmq.REP)
        self._rep.setsockopt(zmq.LINGER, 0)
        port = self._rep.bind_to_random_port("tcp://127.0.0.1")
        self._req = self._contexts[1].socket(zmq.REQ)
        self._req.setsockopt(zmq.LINGER, 0)
        self._req.connect(f"tcp://127.0.0.1:{port}")
        self._request, self._reply = request, reply
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while len(self._rep.recv_multipart(copy=False)) > 1:  # one frame: stop
            self._rep.send_multipart(self._reply, copy=False)
        self._rep.send(b"")
        self._rep.close()

    def __call__(self, i: int) -> None:
        self._req.send_multipart(self._request, copy=False)
        self._req.recv_multipart(copy=False)

    def close(self) -> None:
        self._req.send(b"stop")
        self._req.recv()
        self._req.close()
        self._thread.join()
        for context in self._contexts:
            context.term()
