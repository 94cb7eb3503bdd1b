"""Protocol 1.2, park and dose: the ``park`` command, the dose account, the dead-man switch
parking as ``park`` does, and a 1.2 client and a 1.1 server (and the reverse) getting along."""

from __future__ import annotations

import time

import pytest

from dklscope.drivers import DriverServer, InstrumentError, MicroscopeClient
from dklscope.drivers.protocol import PROTOCOL_VERSION, ErrorCode

from .conftest import LOOPBACK, FakeBackend, ParkingFake, make_description

DOSE_PER_S = 2.0e9  # ParkingFake's electrons per second of exposure


class BlankOnly(FakeBackend):
    def __init__(self):
        super().__init__()
        self.blanked = False

    def blank(self):
        self._record("blank")
        self.blanked = True


class ParkAndBlank(ParkingFake):
    def blank(self):
        self._record("blank")
        self.blanked = True


@pytest.fixture
def parking():
    backend = ParkingFake()
    with (
        DriverServer(backend, LOOPBACK) as server,
        MicroscopeClient(server.endpoint, timeout_s=5.0) as client,
    ):
        yield backend, server, client


def test_park_moves_the_probe_to_safety_blanks_it_and_the_next_move_unparks(parking):
    backend, _server, client = parking
    client.move(3, 2)
    parked = client.park()
    assert backend.names_called()[-1] == "park"
    assert (parked["action"], parked["moved"], parked["blanked"]) == ("park", True, True)
    assert parked["state"] == "parked"
    assert parked["position"] == [0.0, 0.0]  # where ParkingFake.park() says it went
    status = client.status()
    assert status["state"] == "parked" and status["parked"]["action"] == "park"
    assert status["safe_state"] is None  # a requested park is not the dead-man switch
    with pytest.raises(InstrumentError) as refused:
        client.acquire(0.01)
    assert refused.value.code == ErrorCode.BACKEND_ERROR
    assert client.status()["dose_total"] == 0.0  # nothing exposed while parked
    client.move(3, 2)
    assert client.status()["state"] == "idle" and client.status()["parked"] is None
    assert client.acquire(0.01).dose == pytest.approx(0.01 * DOSE_PER_S)


def test_the_description_says_what_park_can_do():
    # backend, (can_park, can_blank) described, park's action, the hooks called in order
    cases = [
        (FakeBackend(), (False, False), "none", []),
        (BlankOnly(), (False, True), "blank", ["blank"]),
        (ParkingFake(make_description()), (True, False), "park", ["park"]),
        (ParkingFake(), (True, True), "park", ["park"]),  # its park() blanks, it says so
        (ParkAndBlank(), (True, True), "park", ["park", "blank"]),
    ]
    for backend, (can_park, can_blank), action, hooks in cases:
        with (
            DriverServer(backend, LOOPBACK) as server,
            MicroscopeClient(server.endpoint, timeout_s=5.0) as client,
        ):
            d = client.describe()
            assert (d.can_park, d.can_blank) == (can_park, can_blank), type(backend).__name__
            capabilities = client.hello()["capabilities"]
            assert ("park" in capabilities, "blank" in capabilities) == (can_park, can_blank)
            parked = client.park()
            assert (parked["action"], parked["moved"], parked["blanked"]) == (
                action,
                can_park,
                can_blank,
            )
            assert [c for c in backend.names_called() if c in ("park", "blank")] == hooks


def test_every_acquisition_carries_its_dose_and_the_running_total(parking):
    _backend, _server, client = parking
    got = list(client.measure([(1, 1), (2, 2), (3, 3)], 0.25))
    assert [a.dose for a in got] == pytest.approx([0.25 * DOSE_PER_S] * 3)
    assert [a.dose_total for a in got] == pytest.approx([k * 0.25 * DOSE_PER_S for k in (1, 2, 3)])
    one = client.acquire(0.5)
    assert one.dose_total == pytest.approx(1.25 * DOSE_PER_S)
    status = client.status()
    assert status["dose_total"] == pytest.approx(1.25 * DOSE_PER_S)
    assert status["dose_units"] == "e-"
    # the stored results keep their dose, for a client that lost the replies
    assert [a.dose for a in client.results_since(-1)] == pytest.approx(
        [0.25 * DOSE_PER_S] * 3 + [0.5 * DOSE_PER_S]
    )


def test_a_dose_the_backend_measured_is_reported_as_it_is():
    class Measured(ParkingFake):
        def acquire(self, dwell_s):
            import dataclasses

            return dataclasses.replace(super().acquire(dwell_s), dose=123.0)

    with (
        DriverServer(Measured(), LOOPBACK) as server,
        MicroscopeClient(server.endpoint, timeout_s=5.0) as client,
    ):
        assert [client.acquire(0.01).dose_total for _ in range(2)] == [123.0, 246.0]


def test_without_a_dose_account_no_dose_is_claimed(server, client):
    acq = client.acquire(0.01)
    assert (acq.dose, acq.dose_total) == (None, None)
    assert client.status()["dose_total"] is None
    assert client.describe().dose_units is None


def test_the_dead_man_switch_parks_exactly_as_park_does():
    backend = ParkAndBlank()
    with DriverServer(backend, LOOPBACK, heartbeat_s=0.1) as server:
        client = MicroscopeClient(server.endpoint, timeout_s=5.0, heartbeat_s=0.05)
        client.hello()
        client.move(4, 3)
        client.close()  # the heartbeats stop
        deadline = time.monotonic() + 10
        while server.safe_state is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.safe_state is not None and server.safe_state["action"] == "park"
        assert "silent" in server.safe_state["reason"]
        assert [c for c in backend.names_called() if c in ("park", "blank")] == ["park", "blank"]
        assert backend.blanked and backend.position == (0.0, 0.0)
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as other:
            status = other.status()
        assert status["state"] == "parked" and status["parked"]["moved"] is True


def test_a_1_1_server_has_no_park_and_no_dose_and_a_1_2_client_sends_it_no_park():
    backend = ParkingFake()
    with (
        DriverServer(backend, LOOPBACK, protocol_minor=1) as server,
        MicroscopeClient(server.endpoint, timeout_s=5.0) as client,
    ):
        hello = client.hello()
        assert hello["protocol"] == "1.1" and "park" not in hello["commands"]
        assert client.protocol_minor_in_use == 1 and not client.can_park
        d = client.describe()
        assert (d.dose_units, d.dose_per_s, d.can_park) == (None, None, False)
        client.move(1, 1)
        acq = client.acquire(0.01)
        assert (acq.dose, acq.dose_total) == (None, None)
        assert "dose_total" not in client.status() and "parked" not in client.status()
        assert client.park() is None  # not sent
        assert "park" not in backend.names_called()
        with pytest.raises(InstrumentError) as refused:
            client.call("park")  # what a careless client would get
        assert refused.value.code == ErrorCode.UNKNOWN_COMMAND
        # a server that lists park but does not know it: the client takes it in its stride
        client.server = {**hello, "protocol": "1.2", "commands": {**hello["commands"], "park": {}}}
        assert client.can_park and client.park() is None
        assert "park" not in backend.names_called()


def test_a_1_1_server_still_parks_on_its_dead_man_switch():
    backend = ParkingFake()
    with DriverServer(backend, LOOPBACK, heartbeat_s=0.1, protocol_minor=1) as server:
        client = MicroscopeClient(server.endpoint, timeout_s=5.0, heartbeat_s=0.05)
        client.hello()
        client.close()
        deadline = time.monotonic() + 10
        while server.safe_state is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.safe_state["action"] == "park" and backend.blanked


def test_a_1_1_client_against_a_1_2_server_sees_the_1_1_protocol():
    with (
        DriverServer(ParkingFake(), LOOPBACK) as server,
        MicroscopeClient(server.endpoint, timeout_s=5.0, protocol_minor=1) as client,
    ):
        hello = client.hello()
        assert hello["protocol"] == PROTOCOL_VERSION == "1.2"
        assert client.protocol_minor_in_use == 1 and not client.can_park
        assert client.park() is None
        assert client.describe().dose_units is None  # it does not know the field
        client.move(1, 1)
        assert client.acquire(0.01).spectrum.shape == (16,)  # extra fields ignored


@pytest.mark.parametrize("minor", [-1, 3, 1.5, "1"])
def test_an_unknown_minor_version_is_refused_on_both_sides(minor):
    with pytest.raises(ValueError, match="protocol_minor"):
        DriverServer(FakeBackend(), LOOPBACK, protocol_minor=minor)
    with pytest.raises(ValueError, match="protocol_minor"):
        MicroscopeClient("tcp://127.0.0.1:9", protocol_minor=minor)


def test_park_waits_behind_a_running_measure():
    backend = ParkingFake(make_description(dose_units="s", dose_per_s=1.0), acquire_sleep_s=0.05)
    with (
        DriverServer(backend, LOOPBACK) as server,
        MicroscopeClient(server.endpoint, timeout_s=5.0) as client,
        MicroscopeClient(server.endpoint, timeout_s=5.0) as other,
    ):
        stream = client.measure([(1, 1), (2, 2), (3, 3), (4, 4)], 0.01)
        next(stream)
        other.park()
        assert len(list(stream)) == 3  # the measure finished undisturbed
        calls = backend.names_called()
        assert calls[-1] == "park" and calls.count("acquire") == 4
