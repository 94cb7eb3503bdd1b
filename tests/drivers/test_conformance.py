"""The conformance suite, run against every backend we ship; and it catches a broken server."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest

from dklscope.drivers import Acquisition, DriverServer
from dklscope.drivers.conformance import CHECKS, run_checks

from .conftest import FakeBackend, ParkingFake, make_description


def simulated_microscope():
    from dklscope.simulators import SimulatedMicroscope, lattice_sample

    return SimulatedMicroscope(lattice_sample(shape=(24, 32), seed=3), seed=1)


def served(make_backend):
    """A server of ``make_backend()`` on loopback, in a thread of this process."""

    @contextlib.contextmanager
    def serve(request):
        with DriverServer(make_backend(), "tcp://127.0.0.1:0") as server:
            yield server.endpoint

    return serve


def nion_usim(request):
    """Nion's simulated STEM through `NionBackend`, served from a child process (Swift's
    objects want a main thread of their own)."""
    address, _ = request.getfixturevalue("nion_usim")
    return contextlib.nullcontext(address)


SERVERS = [
    pytest.param(served(FakeBackend), id="fake"),
    pytest.param(
        served(
            lambda: FakeBackend(
                make_description(
                    probe_limits=(1.0, 6.0, 0.5, 4.5), forbidden_regions=[(2, 3, 1, 2)]
                )
            )
        ),
        id="fake with forbidden regions",
    ),
    pytest.param(served(simulated_microscope), id="simulated microscope"),
    pytest.param(nion_usim, id="nion usim", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("serve", SERVERS)
def test_every_backend_passes_every_check(serve, request):
    with serve(request) as address:
        results = run_checks(address, timeout_s=10.0)
    assert [r.name for r in results] == list(CHECKS)
    assert [r for r in results if not r.passed] == []


@pytest.mark.parametrize(
    ("make_backend", "server_minor", "client_minor"),
    [
        pytest.param(simulated_microscope, 2, 1, id="1.1 client, 1.2 server (simulator)"),
        pytest.param(simulated_microscope, 1, 2, id="1.2 client, 1.1 server (simulator)"),
        pytest.param(simulated_microscope, 1, 1, id="1.1 client, 1.1 server (simulator)"),
        pytest.param(ParkingFake, 2, 2, id="1.2 client, 1.2 server (parking fake)"),
        pytest.param(ParkingFake, 2, 1, id="1.1 client, 1.2 server (parking fake)"),
        pytest.param(ParkingFake, 1, 2, id="1.2 client, 1.1 server (parking fake)"),
    ],
)
def test_older_and_newer_clients_and_servers_pass_every_check(
    make_backend, server_minor, client_minor
):
    with DriverServer(make_backend(), "tcp://127.0.0.1:0", protocol_minor=server_minor) as server:
        results = run_checks(server.endpoint, timeout_s=10.0, protocol_minor=client_minor)
    assert [r for r in results if not r.passed] == []


class NeverParks(ParkingFake):
    """Describes a blanker, but its park leaves the beam on where it was."""

    def __init__(self):
        super().__init__(make_description(dose_units="e-", dose_per_s=2.0e9, can_blank=True))

    def park(self):
        return self.position


def test_a_server_whose_park_does_not_blank_fails_the_park_check():
    with DriverServer(NeverParks(), "tcp://127.0.0.1:0") as server:
        failed = {r.name: r.detail for r in run_checks(server.endpoint) if not r.passed}
    assert list(failed) == ["park (1.2)"]
    assert "acquire" in failed["park (1.2)"] and "was accepted" in failed["park (1.2)"]


class WrongDose(ParkingFake):
    def acquire(self, dwell_s):
        return dataclasses.replace(super().acquire(dwell_s), dose=-1.0)


def test_a_negative_dose_fails_the_dose_check():
    with DriverServer(WrongDose(), "tcp://127.0.0.1:0") as server:
        failed = {r.name: r.detail for r in run_checks(server.endpoint) if not r.passed}
    assert list(failed) == ["dose account (1.2)"]


class WrongSpectrum(FakeBackend):
    def acquire(self, dwell_s):
        acq = super().acquire(dwell_s)
        return Acquisition(np.zeros(3), acq.dwell_s, acq.x, acq.y, acq.timestamp)


def test_a_broken_backend_fails_the_checks_that_see_it():
    with DriverServer(WrongSpectrum(), "tcp://127.0.0.1:0") as server:
        failed = {
            r.name: r.detail for r in run_checks(server.endpoint, timeout_s=5.0) if not r.passed
        }
    assert "acquire" in failed and "BACKEND_ERROR" in failed["acquire"]
    assert "describe" not in failed


def test_an_absent_server_fails_cleanly():
    results = run_checks("tcp://127.0.0.1:9", timeout_s=0.1)
    assert not any(r.passed for r in results)
    assert "InstrumentTimeout" in results[0].detail
