"""Shared pieces for the driver tests: a fake backend, a served instrument, raw sockets.

Nothing here imports `dklscope.simulators` or torch: the drivers must work on their own.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from dklscope.drivers import (
    Acquisition,
    DriverServer,
    InstrumentDescription,
    MicroscopeClient,
    SpectralAxis,
)
from dklscope.drivers.protocol import decode, encode

LOOPBACK = "tcp://127.0.0.1:0"


def make_description(name: str = "fake", **overrides) -> InstrumentDescription:
    fields = {
        "name": name,
        "overview_shape": (6, 8),
        "pixel_size": 0.5,
        "pixel_units": "nm",
        "spectral_axis": SpectralAxis(size=16, offset=0.1, scale=0.05, units="eV"),
        "spectrum_units": "counts",
        "dwell_range_s": (0.001, 2.0),
    }
    fields.update(overrides)
    return InstrumentDescription(**fields)


class FakeBackend:
    """A scripted instrument that records every call made to it.

    ``move_probe`` reports a position slightly off the requested one, so a test can tell the
    reported position from an echo of the request. ``fail`` names methods that raise.
    """

    READ_BACK_OFFSET = (0.125, -0.0625)
    TIMESTAMP = 1_700_000_000.25

    def __init__(self, description=None, *, fail=(), acquire_sleep_s=0.0, overview=None):
        self.description = description or make_description()
        self.fail = set(fail)
        self.acquire_sleep_s = acquire_sleep_s
        rng = np.random.default_rng(1234)
        rows, cols = self.description.overview_shape
        self.overview = (
            rng.normal(size=(rows, cols)).astype(np.float32) if overview is None else overview
        )
        self.spectra: list[np.ndarray] = []
        self._rng = rng
        self.calls: list[tuple] = []
        self.position = (0.0, 0.0)

    def _record(self, *call):
        self.calls.append(call)
        if call[0] in self.fail:
            raise RuntimeError(f"{call[0]} failed: detector on fire")

    def names_called(self) -> list[str]:
        return [call[0] for call in self.calls]

    def describe(self) -> InstrumentDescription:
        self._record("describe")
        return self.description

    def get_overview(self) -> np.ndarray:
        self._record("get_overview")
        return self.overview

    def move_probe(self, x: float, y: float) -> tuple[float, float]:
        self._record("move_probe", x, y)
        self.position = (x + self.READ_BACK_OFFSET[0], y + self.READ_BACK_OFFSET[1])
        return self.position

    def acquire(self, dwell_s: float) -> Acquisition:
        self._record("acquire", dwell_s)
        if self.acquire_sleep_s:
            time.sleep(self.acquire_sleep_s)
        channels = self.description.spectral_axis.size
        # float32-exact values handed over as float64: the server sends float32.
        spectrum = self._rng.normal(100.0, 10.0, size=channels).astype(np.float32)
        self.spectra.append(spectrum)
        return Acquisition(
            spectrum=spectrum.astype(np.float64),
            dwell_s=dwell_s,
            x=self.position[0],
            y=self.position[1],
            timestamp=self.TIMESTAMP,
        )


class ParkingFake(FakeBackend):
    """A fake whose park() moves the probe to (0, 0) and blanks the beam (recorded in
    `calls`), that accounts its dose in electrons, and refuses to expose while blanked."""

    def __init__(self, description=None, **kwargs):
        super().__init__(
            description or make_description(dose_units="e-", dose_per_s=2.0e9, can_blank=True),
            **kwargs,
        )
        self.blanked = False

    def move_probe(self, x, y):
        self.blanked = False
        return super().move_probe(x, y)

    def park(self):
        self._record("park")
        self.position = (0.0, 0.0)
        self.blanked = True
        return self.position

    def acquire(self, dwell_s):
        if self.blanked:
            raise RuntimeError("the beam is blanked")
        return super().acquire(dwell_s)


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def server(backend):
    with DriverServer(backend, LOOPBACK) as served:
        yield served


@pytest.fixture
def client(server):
    with MicroscopeClient(server.endpoint, timeout_s=5.0) as c:
        yield c


class RawDealer:
    """A bare DEALER socket for sending arbitrary frames to a server."""

    def __init__(self, endpoint: str) -> None:
        self._context = zmq.Context()
        self.socket = self._context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def exchange(self, frames, timeout_ms: int = 5000):
        """Send ``frames``; return the decoded ``(header, arrays)`` of the reply, or None."""
        self.socket.send_multipart(frames)
        if not self.socket.poll(timeout_ms):
            return None
        return decode(self.socket.recv_multipart())

    def close(self) -> None:
        self.socket.close()
        self._context.term()


@pytest.fixture
def raw_dealer():
    dealers = []

    def connect(endpoint: str) -> RawDealer:
        dealers.append(RawDealer(endpoint))
        return dealers[-1]

    yield connect
    for dealer in dealers:
        dealer.close()


class ScriptedRouter:
    """A ROUTER on loopback, in its own thread, that answers as ``script`` says.

    ``script(identity, header, n)`` gets the ``n``-th request (from 0) and returns a list of
    ``(identity, header)`` replies to send; an empty list means silence.
    """

    def __init__(self, script) -> None:
        self.script = script
        self.requests: list[tuple[bytes, dict]] = []
        self.endpoint: str | None = None
        self._context = zmq.Context()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(LOOPBACK)
        self.endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._bound.set()
        try:
            while not self._stop.is_set():
                if not socket.poll(20):
                    continue
                identity, *body = socket.recv_multipart()
                header, _ = decode(body)
                self.requests.append((identity, header))
                for to, reply in self.script(identity, header, len(self.requests) - 1):
                    socket.send_multipart([to, *encode(reply)])
        finally:
            socket.close()

    def __enter__(self) -> ScriptedRouter:
        self._thread.start()
        assert self._bound.wait(5.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._context.term()


@pytest.fixture
def scripted_router():
    routers = []

    def start(script) -> ScriptedRouter:
        routers.append(ScriptedRouter(script).__enter__())
        return routers[-1]

    yield start
    for router in routers:
        router.__exit__(None, None, None)


@pytest.fixture
def backend_factory():
    """`FakeBackend` itself, for tests that need one built differently."""
    return FakeBackend


@pytest.fixture
def description_factory():
    """`make_description`, for tests that need an `InstrumentDescription`."""
    return make_description


@pytest.fixture(scope="session")
def nion_usim():
    """Nion's simulated STEM (nionswift-usim) with the default `UsimSettings`, served from a
    child process for the whole session: ``(address, settings)``. Skips without the extra."""
    pytest.importorskip("nion.usim_device", reason="needs the nion extra")
    from dklscope.drivers.nion_swift.usim import UsimSettings, usim_subprocess

    settings = UsimSettings()
    with usim_subprocess(settings) as address:
        yield address, settings
