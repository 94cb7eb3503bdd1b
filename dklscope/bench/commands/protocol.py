"""``dklscope bench protocol``: the driver protocol's round trip against bare pyzmq.

Over loopback, with zero dwell and a backend that returns a fixed spectrum at once (so only the
protocol is measured), it times move+acquire as two requests, as one ``measure`` of one point
(the fast path, the campaign's call), a streamed ``measure`` of many points, and, as the
reference, a bare pyzmq REQ/REP exchange of the same bytes (the request and the reply with its
spectrum). Server and echo run in a thread of this process, the same way for both; the client
is set up as ``dklscope run`` sets it up (events subscribed, dead-man switch armed).

The reference and the two request cases are timed in interleaved rounds, so that a change in
the machine's load during the run falls on all of them alike and their ratio holds.

Throughput: for the request cases ``throughput_per_s`` is *sequential*, one request in flight
at a time as the campaign measures (round trips completed per second of the time they took),
and ``rate_at_median_per_s`` is one over the median round trip; for the streamed case it is the
points of one ``measure`` per second.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from dklscope.campaign.instruments import HEARTBEAT_S
from dklscope.drivers import (
    Acquisition,
    DriverServer,
    InstrumentDescription,
    MicroscopeClient,
    SpectralAxis,
)
from dklscope.drivers.protocol import encode

from . import machine

DESCRIPTION = (
    "driver protocol: move+acquire round trip of a float32 spectrum over loopback, "
    "against a bare pyzmq REQ/REP echo of the same bytes"
)
REFERENCE = "bare pyzmq REQ/REP echo"
SEQUENTIAL = "sequential: one request in flight; completed per second of their total time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=5000, help="round trips per row (%(default)s)")
    parser.add_argument("--warmup", type=int, default=300, help="untimed round trips first")
    parser.add_argument("--channels", type=int, default=2048, help="spectrum length")
    parser.add_argument(
        "--rounds",
        type=int,
        default=50,
        help="interleaved rounds the round trips of each row are split into (%(default)s)",
    )


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
    rounds = max(1, min(args.rounds, n))
    with DriverServer(ConstantBackend(channels), "tcp://127.0.0.1:0") as s:
        with MicroscopeClient(s.endpoint, timeout_s=5.0, heartbeat_s=HEARTBEAT_S) as client:
            client.hello()

            def two_requests(i: int) -> None:
                client.move(i % 64, (i // 64) % 64)
                client.acquire(0.0)

            def fast_path(i: int) -> None:
                (_,) = client.measure([(i % 64, (i // 64) % 64)], 0.0)

            echo = _Echo(*_wire_bytes(s.endpoint))
            try:
                cases: dict[str, Callable[[int], None]] = {
                    REFERENCE: echo,
                    "move + acquire, 2 requests": two_requests,
                    "measure 1 point, 1 request": fast_path,
                }
                rtts = _interleaved(cases, n, warmup, rounds)
            finally:
                echo.close()
            streamed_s = _streamed(client, n)
    ref_median = float(np.median(rtts[REFERENCE]))
    rows = [_row(name, times, ref_median, channels) for name, times in rtts.items()]
    rows.append(
        {
            "case": f"measure {n} points, streamed",
            "median_rtt_ms": None,
            "p99_rtt_ms": None,
            "throughput_per_s": n / streamed_s,
            "throughput_is": f"streamed: points per second of one measure of {n} points",
            "rate_at_median_per_s": None,
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
        "throughput_is": SEQUENTIAL,
        "rate_at_median_per_s": 1 / median,
        "reference_median_rtt_ms": ref_median * 1e3,
        "ratio_to_reference": median / ref_median,
        "channels": channels,
        "n": len(rtts),
    }


def _interleaved(
    cases: dict[str, Callable[[int], None]], n: int, warmup: int, rounds: int
) -> dict[str, np.ndarray]:
    """``n`` round trips of each case, seconds each: the cases take turns, ``rounds`` times."""
    for fn in cases.values():
        _timed(fn, 0, warmup)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in cases}
    for r in range(rounds):
        size = n // rounds + (r < n % rounds)
        for name, fn in cases.items():
            chunks[name].append(_timed(fn, size, 0, start=r * size))
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _timed(fn: Callable[[int], None], n: int, warmup: int, start: int = 0) -> np.ndarray:
    """Seconds of each of ``n`` calls ``fn(start)``, ``fn(start + 1)``, … after ``warmup``
    untimed ones."""
    for i in range(warmup):
        fn(i)
    rtts = np.empty(n)
    clock = time.perf_counter
    for i in range(n):
        t0 = clock()
        fn(start + i)
        rtts[i] = clock() - t0
    return rtts


def _streamed(client: MicroscopeClient, n: int) -> float:
    points = [(i % 64, (i // 64) % 64) for i in range(n)]
    t0 = time.perf_counter()
    count = sum(1 for _ in client.measure(points, 0.0))
    assert count == n
    return time.perf_counter() - t0


def _wire_bytes(endpoint: str) -> tuple[list[bytes], list[bytes]]:
    """The frames of a one-point measure request as the client sends it, and of the reply the
    server at ``endpoint`` sends to it."""
    header = {"id": "0123456789ab-1234", "cmd": "measure"}
    header["args"] = {"points": [[12.0, 34.0]], "dwell_s": 0.0}
    request = [bytes(f) for f in encode({**header, "deadline_s": 5.0, "client": "0123456789ab"})]
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    try:
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVTIMEO, 5000)
        dealer.connect(endpoint)
        dealer.send_multipart(request)
        reply = dealer.recv_multipart()
    finally:  # closed first, or term() waits for it for ever after a timeout
        dealer.close()
        context.term()
    return request, reply


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
