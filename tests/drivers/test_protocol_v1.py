"""Protocol v1 beyond the basic commands: hello, versions, measure, abort, deadlines, the result
store, events, the dead-man switch, restarts, limits and sizes."""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from dklscope.drivers import (
    DriverServer,
    ErrorCode,
    InstrumentError,
    InstrumentTimeout,
    MicroscopeClient,
    ProtocolError,
)
from dklscope.drivers.protocol import PROTOCOL_VERSION, SIGNATURE, decode, encode
from dklscope.drivers.server import COMMANDS

LOOPBACK = "tcp://127.0.0.1:0"


def request(request_id, cmd, args=None, **header):
    return encode({"id": request_id, "cmd": cmd, "args": args or {}, **header})


def replies_until_done(dealer, timeout_ms=5000):
    """Every reply of a stream, up to the one without ``more``."""
    out = []
    while True:
        assert dealer.socket.poll(timeout_ms), f"stream stopped after {len(out)} replies"
        header, arrays = decode(dealer.socket.recv_multipart())
        out.append((header, arrays))
        if not header.get("more"):
            return out


# -- hello and versions ---------------------------------------------------------------------


def test_hello_lists_versions_commands_limits_and_capabilities(client, server, backend):
    hello = client.hello()
    assert hello["protocol"] == PROTOCOL_VERSION
    assert hello["session"] == server.session
    assert set(hello["commands"]) == set(COMMANDS)
    assert hello["commands"]["move"]["args"]["x"] == {
        "type": "number",
        "required": True,
        "doc": "column",
    }
    assert hello["commands"]["measure"]["streams"] is True
    limits = hello["limits"]
    assert limits["probe_limits"] == [0.0, 7.0, 0.0, 5.0]
    assert limits["dwell_range_s"] == [0.001, 2.0]
    assert limits["max_message_bytes"] == server.max_message_bytes
    assert {"measure", "abort", "results_since", "events"} <= set(hello["capabilities"])
    assert "park" not in hello["capabilities"]  # FakeBackend has no park or blank
    assert hello["events"] == server.events_endpoint


def test_an_unknown_major_version_is_refused(server, raw_dealer, client):
    header, _ = raw_dealer(server.endpoint).exchange(
        [b"dklscope/2", encode({"id": "v", "cmd": "describe"})[1]]
    )
    assert header["error"]["code"] == ErrorCode.UNSUPPORTED_VERSION
    assert "dklscope/1" in header["error"]["message"]
    with pytest.raises(InstrumentError) as info:
        client.call("hello", {"protocol": "2.0"})
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION
    assert client.call("hello", {"protocol": "1.7"})[0]["protocol"] == PROTOCOL_VERSION


def test_unknown_header_fields_are_ignored(server, raw_dealer):
    header, _ = raw_dealer(server.endpoint).exchange(request("u", "status", added_in_1_3=True))
    assert header["ok"] is True


# -- limits and units -----------------------------------------------------------------------


def test_forbidden_regions_are_enforced_for_move_and_measure(backend_factory, description_factory):
    backend = backend_factory(description_factory(forbidden_regions=[(2.0, 4.0, 1.0, 3.0)]))
    with DriverServer(backend, LOOPBACK) as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            for x, y in [(2.0, 1.0), (3.0, 2.0), (4.0, 3.0)]:
                with pytest.raises(InstrumentError, match="forbidden region 0") as info:
                    client.move(x, y)
                assert info.value.code == ErrorCode.OUT_OF_LIMITS
            with pytest.raises(InstrumentError, match="point 1") as info:
                list(client.measure([(0.0, 0.0), (3.0, 2.0)], 0.01))
            assert info.value.code == ErrorCode.OUT_OF_LIMITS
            assert "move_probe" not in backend.names_called()  # all points checked first
            assert client.move(5.0, 2.0) == (5.125, 1.9375)


def test_move_in_physical_units(client, backend):
    assert client.move(1.5, 1.0, units="nm") == (3.0 + 0.125, 2.0 - 0.0625)  # 0.5 nm / pixel
    assert backend.calls[-1] == ("move_probe", 3.0, 2.0)
    with pytest.raises(InstrumentError) as info:
        client.move(1.0, 1.0, units="furlong")
    assert info.value.code == ErrorCode.BAD_ARGUMENT
    with pytest.raises(InstrumentError) as info:
        client.move(4.0, 1.0, units="nm")  # 8 px: outside
    assert info.value.code == ErrorCode.OUT_OF_LIMITS


@pytest.mark.parametrize("x", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_numbers_are_refused(server, raw_dealer, backend, x):
    header_text = f'{{"id": "n", "cmd": "move", "args": {{"x": {x}, "y": 1.0}}}}'.encode()
    header, _ = raw_dealer(server.endpoint).exchange([SIGNATURE, header_text])
    assert header["error"]["code"] == ErrorCode.BAD_ARGUMENT
    assert "move_probe" not in backend.names_called()


def test_arrays_carry_units_and_calibrated_axes(server, raw_dealer):
    dealer = raw_dealer(server.endpoint)
    header, (spectrum,) = dealer.exchange(request("a", "acquire", {"dwell_s": 0.01}))
    (spec,) = header["arrays"]
    assert spectrum.shape == (16,)
    assert spec["dtype"] == "<f4" and spec["shape"] == [16]
    assert spec["units"] == "counts"
    assert spec["axes"] == [
        {"name": "spectral", "size": 16, "offset": 0.1, "scale": 0.05, "units": "eV"}
    ]
    header, (image,) = dealer.exchange(request("o", "get_overview"))
    assert image.shape == (6, 8)
    assert [axis["name"] for axis in header["arrays"][0]["axes"]] == ["y", "x"]
    assert header["arrays"][0]["axes"][1]["scale"] == 0.5


# -- measure, abort, deadlines --------------------------------------------------------------


def test_measure_streams_one_reply_per_point_in_order(client, backend):
    points = [(1.0, 1.0), (2.0, 3.0), (6.0, 4.0)]
    got = list(client.measure(points, 0.01))
    assert [(a.x, a.y) for a in got] == [(x + 0.125, y - 0.0625) for x, y in points]
    assert [a.seq for a in got] == [0, 1, 2]
    for acq, spectrum in zip(got, backend.spectra, strict=True):
        np.testing.assert_array_equal(acq.spectrum, spectrum)
    assert backend.names_called()[1:] == ["move_probe", "acquire"] * 3


def test_measure_replies_arrive_as_points_complete(backend_factory):
    backend = backend_factory(acquire_sleep_s=0.2)
    with DriverServer(backend, LOOPBACK) as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            stream = client.measure([(1.0, 1.0)] * 5, 0.01)
            next(stream)
            assert backend.names_called().count("acquire") < 5  # not after all five (1 s)
            assert len(list(stream)) == 4


def test_abort_stops_a_running_measure(backend_factory, raw_dealer):
    backend = backend_factory(acquire_sleep_s=0.05)
    with DriverServer(backend, LOOPBACK) as server:
        dealer = raw_dealer(server.endpoint)
        dealer.socket.send_multipart(
            request("m1", "measure", {"points": [[1, 1]] * 40, "dwell_s": 0.01})
        )
        time.sleep(0.15)
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            assert client.abort("m1") == {"target": "m1", "state": "running", "aborted": True}
            stream = replies_until_done(dealer)
            assert client.abort("m1")["state"] == "done"
            assert client.abort("never-sent")["state"] == "unknown"
        *points, (last, _) = stream
        assert all(h["ok"] for h, _ in points) and 0 < len(points) < 40
        assert last["error"]["code"] == ErrorCode.ABORTED
        assert last["error"]["index"] == len(points)
        assert backend.names_called().count("acquire") == len(points)


def test_status_and_abort_are_answered_while_a_measure_runs(backend_factory, raw_dealer):
    backend = backend_factory(acquire_sleep_s=0.05)
    with DriverServer(backend, LOOPBACK) as server:
        streamer, other = raw_dealer(server.endpoint), raw_dealer(server.endpoint)
        streamer.socket.send_multipart(
            request("m", "measure", {"points": [[1, 1]] * 10, "dwell_s": 0.01})
        )
        time.sleep(0.08)
        other.socket.send_multipart(request("p", "acquire", {"dwell_s": 0.01}))  # waits its turn
        other.socket.send_multipart(request("late", "move", {"x": 1, "y": 1}, deadline_s=0.01))
        header, _ = other.exchange(request("s", "status"))
        assert header["result"]["state"] == "busy"
        assert header["result"]["busy_with"] == "m"
        assert header["result"]["pending"] == ["p", "late"]
        header, _ = other.exchange(request("a", "abort", {"target": "p"}))
        assert header["result"]["state"] == "pending"
        assert len(replies_until_done(streamer)) == 10
        answers = {}
        while len(answers) < 2 and other.socket.poll(5000):
            reply, _ = decode(other.socket.recv_multipart())
            answers[reply["id"]] = reply["error"]["code"]
        assert answers == {"p": ErrorCode.ABORTED, "late": ErrorCode.DEADLINE_EXPIRED}
        assert "move_probe" not in [c[0] for c in backend.calls[21:]]  # neither ran


def test_a_deadline_that_passes_during_a_measure_stops_it(backend_factory, raw_dealer):
    backend = backend_factory(acquire_sleep_s=0.05)
    with DriverServer(backend, LOOPBACK) as server:
        dealer = raw_dealer(server.endpoint)
        args = {"points": [[1, 1]] * 40, "dwell_s": 0.01}
        dealer.socket.send_multipart(request("m", "measure", args, deadline_s=0.2))
        *points, (last, _) = replies_until_done(dealer)
        assert last["error"]["code"] == ErrorCode.DEADLINE_EXPIRED
        assert 0 < len(points) < 40


def test_a_retried_measure_is_replayed_not_measured_again(server, raw_dealer, backend):
    args = {"points": [[1, 1], [2, 2]], "dwell_s": 0.01}
    first = replies_until_done(_sent(raw_dealer(server.endpoint), request("m", "measure", args)))
    again = replies_until_done(_sent(raw_dealer(server.endpoint), request("m", "measure", args)))
    assert [h for h, _ in again] == [h for h, _ in first]
    assert backend.names_called().count("acquire") == 2
    header, _ = raw_dealer(server.endpoint).exchange(request("m", "acquire", {"dwell_s": 0.1}))
    assert header["error"]["code"] == ErrorCode.BAD_MESSAGE  # an id is never reused


def _sent(dealer, frames):
    dealer.socket.send_multipart(frames)
    return dealer


class BufferReusingBackend:
    """A backend that fills one spectrum buffer in place for every acquisition, as a detector
    driver may: the server must send and remember copies of its own."""

    def __init__(self, backend):
        self.inner = backend
        self.buffer = np.zeros(backend.description.spectral_axis.size, np.float32)
        self.taken: list[np.ndarray] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def acquire(self, dwell_s):
        acq = self.inner.acquire(dwell_s)
        self.buffer[:] = acq.spectrum
        self.taken.append(self.buffer.astype(np.float32))
        return dataclasses.replace(acq, spectrum=self.buffer)


def test_a_retried_one_point_measure_gets_its_own_spectrum_again(backend_factory, raw_dealer):
    backend = BufferReusingBackend(backend_factory())
    with DriverServer(backend, LOOPBACK) as server:

        def measure(request_id):  # on a fresh connection, as a retry comes
            args = {"points": [[1, 1]], "dwell_s": 0.01}
            dealer = _sent(raw_dealer(server.endpoint), request(request_id, "measure", args))
            ((header, arrays),) = replies_until_done(dealer)
            return header, arrays[0]

        first, first_spectrum = measure("m1")
        _, later_spectrum = measure("m2")
        again, again_spectrum = measure("m1")
        assert again == first and first["result"]["seq"] == 0
        assert not np.array_equal(backend.taken[0], backend.taken[1])
        np.testing.assert_array_equal(first_spectrum, backend.taken[0])
        np.testing.assert_array_equal(later_spectrum, backend.taken[1])
        np.testing.assert_array_equal(again_spectrum, backend.taken[0])  # not the reused buffer
        assert backend.inner.names_called().count("acquire") == 2
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            stored = client.results_since(-1)
        for acq, taken in zip(stored, backend.taken, strict=True):
            np.testing.assert_array_equal(acq.spectrum, taken)


def test_a_one_point_measure_waits_behind_a_running_measure(backend_factory, raw_dealer):
    backend = backend_factory(acquire_sleep_s=0.03)
    with DriverServer(backend, LOOPBACK) as server:
        streamer = raw_dealer(server.endpoint)
        streamer.socket.send_multipart(
            request("stream", "measure", {"points": [[1, 1]] * 8, "dwell_s": 0.01})
        )
        time.sleep(0.05)  # the stream has started
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            (acq,) = client.measure([(5.0, 4.0)], 0.01)  # the campaign's call
            assert acq.seq == 8  # after every point of the stream
            with pytest.raises(InstrumentError) as info:
                list(client.measure([(5.0, 40.0)], 0.01))
            assert info.value.code == ErrorCode.OUT_OF_LIMITS
        assert len(replies_until_done(streamer)) == 8
        moves = [call[1:] for call in backend.calls if call[0] == "move_probe"]
        assert moves == [(1.0, 1.0)] * 8 + [(5.0, 4.0)]  # in turn; the refused one never moved


# -- the result store -----------------------------------------------------------------------


def test_results_since_returns_what_a_client_missed(client, backend):
    client.move(1.0, 1.0)
    seen = [client.acquire(0.01) for _ in range(3)]
    list(client.measure([(2.0, 2.0), (3.0, 3.0)], 0.02))
    missed = client.results_since(seen[-1].seq)
    assert [a.seq for a in missed] == [3, 4]
    assert [(a.x, a.y, a.dwell_s) for a in missed] == [(2.125, 1.9375, 0.02), (3.125, 2.9375, 0.02)]
    np.testing.assert_array_equal(missed[1].spectrum, backend.spectra[4])
    assert [a.seq for a in client.results_since(-1, limit=2)] == [0, 1]
    assert client.results_since(4) == []
    assert client.status()["last_seq"] == 4


def test_the_result_store_keeps_the_most_recent(backend_factory):
    with DriverServer(backend_factory(), LOOPBACK, store_size=3) as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            for _ in range(5):
                client.acquire(0.01)
            assert [a.seq for a in client.results_since(-1)] == [2, 3, 4]
            assert client.status()["first_seq"] == 2


# -- events, heartbeats and the dead-man switch ---------------------------------------------


class ParkingBackend:
    def __init__(self, backend):
        self.inner, self.parked = backend, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def park(self):
        self.parked += 1


def subscribe(endpoint):
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    return sub


def next_event(sub, name, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while sub.poll(max(1, int((deadline - time.monotonic()) * 1000))):
        header, _ = decode(sub.recv_multipart())
        if header["event"] == name:
            return header
    raise AssertionError(f"no {name!r} event within {timeout_s} s")


def test_heartbeats_are_published(backend_factory):
    with DriverServer(backend_factory(), LOOPBACK, heartbeat_s=0.05) as server:
        sub = subscribe(server.events_endpoint)
        try:
            beat = next_event(sub, "heartbeat")
            assert beat["session"] == server.session and beat["state"] == "idle"
        finally:
            sub.close()


def test_the_dead_man_switch_parks_when_the_controller_falls_silent(backend_factory):
    backend = ParkingBackend(backend_factory())
    with DriverServer(backend, LOOPBACK, heartbeat_s=0.05) as server:
        sub = subscribe(server.events_endpoint)
        try:
            client = MicroscopeClient(server.endpoint, timeout_s=5.0, heartbeat_s=0.05)
            assert "park" in client.hello()["capabilities"]
            time.sleep(0.4)  # heart-beating: nothing happens
            assert backend.parked == 0
            assert client.status()["controllers"] == [client.client_id]
            client.close()  # the heartbeats stop
            event = next_event(sub, "safe_state")
            assert event["action"] == "park" and client.client_id in event["reason"]
            assert backend.parked == 1
            with MicroscopeClient(server.endpoint, timeout_s=5.0) as observer:
                status = observer.status()
                assert status["state"] == "parked" and status["safe_state"]["action"] == "park"
                observer.move(1.0, 1.0)
                assert observer.status()["state"] == "idle"
        finally:
            sub.close()


def test_a_dead_server_is_detected_within_two_heartbeats(backend_factory):
    server = DriverServer(backend_factory(), LOOPBACK, heartbeat_s=0.1)
    server.start()
    with MicroscopeClient(server.endpoint, timeout_s=10.0, retries=0) as client:
        client.hello()
        server.stop()
        started = time.monotonic()
        with pytest.raises(InstrumentTimeout, match="no heartbeat"):
            client.acquire(0.01)
        assert time.monotonic() - started < 2.0  # two 0.1 s heartbeats, not the 10 s timeout


def test_a_busy_but_alive_server_is_waited_for(backend_factory):
    backend = backend_factory(acquire_sleep_s=0.5)  # five heartbeat intervals
    with DriverServer(backend, LOOPBACK, heartbeat_s=0.1) as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0, retries=0) as client:
            client.hello()
            assert client.acquire(0.01).seq == 0


# -- restarts -------------------------------------------------------------------------------


def test_a_server_restarted_mid_campaign_loses_and_duplicates_nothing(backend_factory):
    backend = backend_factory()
    server = DriverServer(backend, LOOPBACK)
    endpoint = server.start()
    points = [(float(i % 8), float(i % 6)) for i in range(30)]
    restarted = threading.Event()

    def restart():
        server.stop()
        time.sleep(0.3)  # the campaign's requests go unanswered meanwhile
        DriverServer(backend, endpoint).start()  # same instrument, same port, new process state
        restarted.set()

    measured = []
    with MicroscopeClient(endpoint, timeout_s=0.2, retries=10) as client:
        for i, (x, y) in enumerate(points):
            if i == 12:
                threading.Thread(target=restart).start()
            client.move(x, y)
            measured.append(client.acquire(0.01))
    assert restarted.is_set()
    assert len(measured) == len(points)
    assert [(m.x, m.y) for m in measured] == [(x + 0.125, y - 0.0625) for x, y in points]
    acquisitions = [call for call in backend.calls if call[0] == "acquire"]
    assert len(acquisitions) == len(points)  # every exposure reached the campaign exactly once
    for got, spectrum in zip(measured, backend.spectra, strict=True):
        np.testing.assert_array_equal(got.spectrum, spectrum)


# -- sizes ----------------------------------------------------------------------------------


def test_an_oversized_message_gets_an_error_and_an_oversized_frame_is_dropped(backend_factory):
    with DriverServer(backend_factory(), LOOPBACK, max_message_bytes=100_000) as server:
        context = zmq.Context.instance()
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(server.endpoint)
        try:
            frames = [*request("big", "describe"), b"\0" * 60_000, b"\0" * 60_000]
            dealer.send_multipart(frames)
            assert dealer.poll(5000)
            header, _ = decode(dealer.recv_multipart())
            assert header["error"]["code"] == ErrorCode.BAD_MESSAGE
            assert "exceeds" in header["error"]["message"]
            dealer.send_multipart([*request("huge", "describe"), b"\0" * 200_000])
            assert not dealer.poll(300)  # libzmq drops the connection: no reply
        finally:
            dealer.close()
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            assert client.describe().name == "fake"  # and the server serves on


# -- the specification and the code agree ---------------------------------------------------

SPEC = Path(__file__).parents[2] / "drivers" / "PROTOCOL.md"


def test_the_specification_lists_exactly_the_commands_served():
    documented = re.findall(r"^### 4\.\d+ `(\w+)`", SPEC.read_text(), flags=re.MULTILINE)
    assert sorted(documented) == sorted(COMMANDS)


def test_the_specification_lists_exactly_the_error_codes_sent():
    table = SPEC.read_text().split("## 5. Error codes")[1].split("## 6.")[0]
    documented = re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.MULTILINE)
    assert sorted(documented) == sorted(ErrorCode.ALL)
    assert sorted(ErrorCode.ALL) == sorted(
        v for k, v in vars(ErrorCode).items() if k.isupper() and k != "ALL"
    )


def test_a_measure_of_the_maximum_length_streams_every_point(backend_factory):
    with DriverServer(backend_factory(), LOOPBACK, max_points=10_000) as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            points = [(0.123456789012345 + i % 7, 0.987654321098765 + i % 5) for i in range(10_000)]
            got = list(client.measure(points, 0.001))
            assert [a.seq for a in got] == list(range(10_000))
            assert len(client.results_since(-1)) == 1000  # one reply's worth
            with pytest.raises(InstrumentError) as info:
                list(client.measure([*points, (1.0, 1.0)], 0.001))
            assert info.value.code == ErrorCode.BAD_ARGUMENT
            with pytest.raises(ProtocolError, match="exceeds"):
                client.call("status", {"pad": "x" * 2_000_000})


def test_old_replies_are_forgotten_within_the_byte_budget(backend_factory, raw_dealer):
    with DriverServer(backend_factory(), LOOPBACK, remember_bytes=500) as server:  # about one reply
        dealer = raw_dealer(server.endpoint)
        first, _ = dealer.exchange(request("a1", "acquire", {"dwell_s": 0.01}))
        second, _ = dealer.exchange(request("a2", "acquire", {"dwell_s": 0.01}))
        assert (first["result"]["seq"], second["result"]["seq"]) == (0, 1)
        again, _ = dealer.exchange(request("a2", "acquire", {"dwell_s": 0.01}))
        assert again["result"]["seq"] == 1  # the newest is always kept
        forgotten, _ = dealer.exchange(request("a1", "acquire", {"dwell_s": 0.01}))
        assert forgotten["result"]["seq"] == 2  # a1 was forgotten: executed again


@pytest.mark.parametrize("deadline_s", [10**400, 10**20, 1e308])
def test_absurd_deadlines_are_harmless(server, raw_dealer, deadline_s):
    header, _ = raw_dealer(server.endpoint).exchange(request("d", "status", deadline_s=deadline_s))
    assert header["ok"] is True


def test_a_request_no_server_takes_times_out_instead_of_hanging():
    """A DEALER with no connection to queue on blocks on send; the client's send has the
    call's timeout. (A socket with ZMQ_IMMEDIATE to a dead port makes that state at will.)"""
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    client = MicroscopeClient(address, timeout_s=0.2, retries=0)
    try:
        assert client._socket.getsockopt(zmq.SNDTIMEO) == 200  # the call's timeout, in ms
        client._socket.close()
        client._socket = client._context.socket(zmq.DEALER)
        client._socket.setsockopt(zmq.LINGER, 0)
        client._socket.setsockopt(zmq.IMMEDIATE, 1)
        client._socket.setsockopt(zmq.SNDTIMEO, 200)
        client._socket.connect(address)
        started = time.monotonic()
        with pytest.raises(InstrumentTimeout, match="no server took the request"):
            client.describe()
        assert time.monotonic() - started < 2.0
    finally:
        client.close()
