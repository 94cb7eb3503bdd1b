"""`DriverServer` and `MicroscopeClient` over real ZeroMQ on loopback, with a fake backend."""

import subprocess
import sys
import time

import numpy as np
import pytest

from dklscope.drivers import (
    DriverServer,
    ErrorCode,
    InstrumentError,
    InstrumentTimeout,
    MicroscopeClient,
    ProtocolError,
)
from dklscope.drivers.protocol import SIGNATURE, encode

LOOPBACK = "tcp://127.0.0.1:0"


def assert_refused(client, code, command, args=None):
    with pytest.raises(InstrumentError) as info:
        client.call(command, args)
    error = info.value
    assert error.code == code
    assert error.command == command
    assert error.address == client.address
    assert command in str(error) and client.address in str(error) and code in str(error)
    return error


# -- commands -------------------------------------------------------------------------------


def test_server_binds_loopback_and_reports_its_port(server):
    assert server.endpoint.startswith("tcp://127.0.0.1:")
    assert int(server.endpoint.rsplit(":", 1)[1]) > 0


def test_describe_returns_the_backend_description(client, backend):
    assert client.describe() == backend.description


def test_describe_with_explicit_probe_limits(backend_factory, description_factory):
    description = description_factory(name="limited", probe_limits=(1.0, 6.5, 0.5, 4.0))
    with DriverServer(backend_factory(description), LOOPBACK) as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            assert client.describe() == description


def test_get_overview_returns_the_exact_image(client, backend):
    image = client.get_overview()
    assert image.dtype == np.float32
    assert image.shape == (6, 8)
    np.testing.assert_array_equal(image, backend.overview)


def test_move_returns_the_position_the_backend_reports(client, backend):
    x, y = client.move(3.5, 2.25)
    assert (x, y) == (3.5 + 0.125, 2.25 - 0.0625)
    assert backend.calls[-1] == ("move_probe", 3.5, 2.25)


def test_acquire_returns_the_exact_spectrum_and_metadata(client, backend):
    client.move(1.0, 4.0)
    first = client.acquire(0.25)
    second = client.acquire(0.5)
    assert backend.calls[-2:] == [("acquire", 0.25), ("acquire", 0.5)]
    for acq, spectrum, dwell in [
        (first, backend.spectra[0], 0.25),
        (second, backend.spectra[1], 0.5),
    ]:
        assert acq.spectrum.dtype == np.float32
        assert acq.spectrum.shape == (16,)
        np.testing.assert_array_equal(acq.spectrum, spectrum)
        assert acq.dwell_s == dwell
        assert (acq.x, acq.y) == (1.125, 3.9375)
        assert acq.timestamp == backend.TIMESTAMP
    assert not np.array_equal(first.spectrum, second.spectrum)


def test_integer_arguments_are_accepted_as_numbers(client, backend):
    result, arrays = client.call("move", {"x": 2, "y": 3})
    assert result == {"x": 2.125, "y": 2.9375}
    assert arrays == []
    assert backend.calls[-1] == ("move_probe", 2.0, 3.0)


# -- refusals -------------------------------------------------------------------------------


def test_unknown_command(client, backend):
    assert_refused(client, ErrorCode.UNKNOWN_COMMAND, "nonsense")
    assert backend.names_called() == ["describe"]  # only the server's own, at start


@pytest.mark.parametrize(
    "command, args",
    [
        ("move", {"x": 1.0}),
        ("move", {"y": 1.0}),
        ("move", {}),
        ("move", {"x": 1.0, "y": 1.0, "z": 0.0}),
        ("move", {"x": "1.0", "y": 1.0}),
        ("move", {"x": 1.0, "y": True}),
        ("move", {"x": None, "y": 1.0}),
        ("move", {"x": [1.0], "y": 1.0}),
        ("acquire", {}),
        ("acquire", {"dwell_s": "0.1"}),
        ("acquire", {"dwell_s": False}),
        ("acquire", {"dwell_s": 0.1, "binning": 2}),
        ("describe", {"verbose": True}),
        ("get_overview", {"region": [0, 1]}),
    ],
)
def test_bad_arguments_are_refused_before_the_backend_sees_them(client, backend, command, args):
    assert_refused(client, ErrorCode.BAD_ARGUMENT, command, args)
    assert backend.names_called() == ["describe"]


@pytest.mark.parametrize(
    "x, y",
    [(-0.5, 2.0), (7.5, 2.0), (3.0, -0.01), (3.0, 5.01), (-1.0, -1.0), (100.0, 100.0), (7.0, 5.5)],
)
def test_a_move_outside_the_limits_never_reaches_the_backend(client, backend, x, y):
    assert_refused(client, ErrorCode.OUT_OF_LIMITS, "move", {"x": x, "y": y})
    with pytest.raises(InstrumentError) as info:
        client.move(x, y)
    assert info.value.code == ErrorCode.OUT_OF_LIMITS
    assert "move_probe" not in backend.names_called()


def test_explicit_probe_limits_are_enforced(backend_factory, description_factory):
    backend = backend_factory(description_factory(probe_limits=(1.0, 6.5, 0.5, 4.0)))
    with DriverServer(backend, LOOPBACK) as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            for x, y in [(0.5, 2.0), (7.0, 2.0), (3.0, 0.0), (3.0, 5.0)]:  # inside the overview
                assert_refused(client, ErrorCode.OUT_OF_LIMITS, "move", {"x": x, "y": y})
            assert "move_probe" not in backend.names_called()
            assert client.move(6.5, 4.0) == (6.625, 3.9375)
            assert backend.calls[-1] == ("move_probe", 6.5, 4.0)


@pytest.mark.parametrize("dwell_s", [0.0005, 2.5, 0.0, -1.0])
def test_a_dwell_out_of_range_never_reaches_the_backend(client, backend, dwell_s):
    assert_refused(client, ErrorCode.OUT_OF_LIMITS, "acquire", {"dwell_s": dwell_s})
    assert "acquire" not in backend.names_called()


def test_a_huge_integer_argument_is_refused_as_an_argument_error(client, backend):
    with pytest.raises(InstrumentError) as info:
        client.call("move", {"x": 10**400, "y": 1.0})
    assert "move_probe" not in backend.names_called()
    assert info.value.code in (ErrorCode.BAD_ARGUMENT, ErrorCode.OUT_OF_LIMITS)


@pytest.mark.parametrize("failing", ["move_probe", "acquire", "get_overview"])
def test_backend_errors_are_reported_and_the_server_keeps_serving(backend_factory, failing):
    backend = backend_factory(fail=[failing])
    with DriverServer(backend, LOOPBACK) as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            command, args = {
                "move_probe": ("move", {"x": 1.0, "y": 1.0}),
                "acquire": ("acquire", {"dwell_s": 0.01}),
                "get_overview": ("get_overview", None),
            }[failing]
            error = assert_refused(client, ErrorCode.BACKEND_ERROR, command, args)
            assert "RuntimeError" in str(error) and "detector on fire" in str(error)
            assert backend.names_called()[-1] == failing
            assert client.describe() == backend.description


def test_an_overview_of_the_wrong_shape_is_a_backend_error(backend_factory):
    backend = backend_factory(overview=np.zeros((8, 6), dtype=np.float32))
    with DriverServer(backend, LOOPBACK) as server:
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            assert_refused(client, ErrorCode.BACKEND_ERROR, "get_overview")
            assert client.describe() == backend.description


def header_bytes(header):
    return encode(header)[1]


@pytest.mark.parametrize(
    "frames, reply_id",
    [
        pytest.param([b"dklscope/x", header_bytes({"id": "a", "cmd": "describe"})], None, id="sig"),
        pytest.param([SIGNATURE, b"not json"], None, id="not-json"),
        pytest.param([SIGNATURE], None, id="no-header"),
        pytest.param([SIGNATURE, b"[1, 2, 3]"], None, id="not-an-object"),
        pytest.param(
            encode({"id": "r1", "cmd": "describe", "args": {}}, [np.zeros(2)]),
            "r1",
            id="listed-extra-array",
        ),
        pytest.param(
            [SIGNATURE, header_bytes({"id": "r2", "cmd": "describe"}), b"\0" * 8],
            None,
            id="unlisted-extra-frame",
        ),
        pytest.param([SIGNATURE, header_bytes({"cmd": "describe"})], None, id="no-id"),
        pytest.param([SIGNATURE, header_bytes({"id": 7, "cmd": "describe"})], None, id="int-id"),
        pytest.param(
            [SIGNATURE, header_bytes({"id": "r3", "cmd": "move", "args": [1.0, 2.0]})],
            "r3",
            id="args-not-an-object",
        ),
    ],
)
def test_malformed_messages_get_a_bad_message_reply(server, raw_dealer, client, frames, reply_id):
    dealer = raw_dealer(server.endpoint)
    reply = dealer.exchange(frames)
    assert reply is not None, "no reply to a malformed message"
    header, arrays = reply
    assert header["ok"] is False
    assert header["error"]["code"] == ErrorCode.BAD_MESSAGE
    assert header["id"] == reply_id
    assert arrays == []
    # Exactly one reply: the next one on this socket answers the next request.
    header, _ = dealer.exchange(encode({"id": "next", "cmd": "describe", "args": {}}))
    assert header["id"] == "next" and header["ok"] is True
    # And the server still serves a normal client.
    assert client.describe().name == "fake"


def test_a_raw_non_finite_argument_is_a_bad_argument(server, raw_dealer, backend):
    dealer = raw_dealer(server.endpoint)
    header, _ = dealer.exchange(
        [SIGNATURE, b'{"id": "n", "cmd": "move", "args": {"x": NaN, "y": 1.0}}']
    )
    assert header["id"] == "n"
    assert header["error"]["code"] == ErrorCode.BAD_ARGUMENT
    assert "move_probe" not in backend.names_called()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_nan_request_id_does_not_kill_the_server(server, raw_dealer):
    dealer = raw_dealer(server.endpoint)
    reply = dealer.exchange([SIGNATURE, b'{"id": NaN, "cmd": "describe"}'], timeout_ms=1000)
    assert reply is not None, "no reply to a request whose id is NaN"
    assert reply[0]["error"]["code"] == ErrorCode.BAD_MESSAGE
    header, _ = dealer.exchange(encode({"id": "after", "cmd": "describe"}), timeout_ms=1000)
    assert header["ok"] is True


def test_deeply_nested_json_is_a_bad_message(server, raw_dealer, client):
    header, _ = raw_dealer(server.endpoint).exchange([SIGNATURE, b"[" * 60_000])
    assert client.describe().name == "fake"  # the server survives either way
    assert header["error"]["code"] == ErrorCode.BAD_MESSAGE


# -- timeouts -------------------------------------------------------------------------------


def describe_reply(request_id, description, name):
    return {"id": request_id, "ok": True, "result": {**description.to_dict(), "name": name}}


def test_no_reply_raises_instrument_timeout(scripted_router):
    router = scripted_router(lambda identity, header, n: [])
    with MicroscopeClient(router.endpoint, timeout_s=0.2, retries=0) as client:
        started = time.monotonic()
        with pytest.raises(InstrumentTimeout) as info:
            client.describe()
        elapsed = time.monotonic() - started
    assert elapsed >= 0.2
    error = info.value
    assert (error.command, error.address, error.timeout_s) == ("describe", router.endpoint, 0.2)
    assert "describe" in str(error) and router.endpoint in str(error)
    assert [header["cmd"] for _, header in router.requests] == ["describe"]
    assert router.requests[0][1]["deadline_s"] == 0.2


def test_lazy_pirate_retries_on_a_fresh_socket_with_the_same_id(scripted_router):
    router = scripted_router(lambda identity, header, n: [])
    with MicroscopeClient(router.endpoint, timeout_s=0.1, retries=2) as client:
        started = time.monotonic()
        with pytest.raises(InstrumentTimeout, match="3 attempts"):
            client.describe()
        assert time.monotonic() - started >= 0.3
    identities = [identity for identity, _ in router.requests]
    ids = {header["id"] for _, header in router.requests}
    assert len(identities) == 3 and len(set(identities)) == 3  # a new socket for each attempt
    assert len(ids) == 1


def test_a_retry_that_gets_an_answer_succeeds(scripted_router, description_factory):
    description = description_factory()

    def script(identity, header, n):  # lose the first attempt
        return [] if n == 0 else [(identity, describe_reply(header["id"], description, "late"))]

    router = scripted_router(script)
    with MicroscopeClient(router.endpoint, timeout_s=0.1, retries=2) as client:
        assert client.describe().name == "late"
    assert len(router.requests) == 2


@pytest.mark.parametrize("then_fresh", [False, True])
def test_a_late_reply_to_an_abandoned_request_is_never_accepted(
    scripted_router, description_factory, then_fresh
):
    description = description_factory()
    first = {}

    def script(identity, header, n):
        if n == 0:  # stay silent: the client gives up on this one
            first.update(identity=identity, id=header["id"])
            return []
        # Now answer the OLD request, on the old connection and on the new one ...
        replies = [
            (first["identity"], describe_reply(first["id"], description, "STALE")),
            (identity, describe_reply(first["id"], description, "STALE")),
        ]
        if then_fresh:  # ... and then, maybe, the new request properly.
            replies.append((identity, describe_reply(header["id"], description, "FRESH")))
        return replies

    router = scripted_router(script)
    with MicroscopeClient(router.endpoint, timeout_s=0.2, retries=0) as client:
        with pytest.raises(InstrumentTimeout):
            client.describe()
        if then_fresh:
            assert client.describe().name == "FRESH"
        else:
            with pytest.raises(InstrumentTimeout):
                client.describe()
    ids = [header["id"] for _, header in router.requests]
    assert len(ids) == 2 and ids[0] != ids[1]


def test_a_reply_with_another_id_is_skipped(scripted_router, description_factory):
    description = description_factory()

    def script(identity, header, n):
        return [
            (identity, describe_reply("someone-else", description, "WRONG")),
            (identity, {"id": None, "ok": False, "error": {"code": "BAD_MESSAGE", "message": ""}}),
            (identity, describe_reply(header["id"], description, "RIGHT")),
        ]

    router = scripted_router(script)
    with MicroscopeClient(router.endpoint, timeout_s=5.0) as client:
        assert client.describe().name == "RIGHT"


def test_a_stream_of_stale_replies_does_not_outlast_the_timeout(
    scripted_router, description_factory
):
    description = description_factory()

    def script(identity, header, n):  # far more stale replies than 0.05 s can take in
        stale = [(identity, describe_reply("old", description, "WRONG"))] * 20_000
        return [*stale, (identity, describe_reply(header["id"], description, "RIGHT"))]

    router = scripted_router(script)
    with MicroscopeClient(router.endpoint, timeout_s=0.05, retries=0) as client:
        with pytest.raises(InstrumentTimeout):
            client.describe()


def test_a_reply_without_the_expected_arrays_is_a_protocol_error(scripted_router):
    router = scripted_router(
        lambda identity, header, n: [(identity, {"id": header["id"], "ok": True, "result": {}})]
    )
    with MicroscopeClient(router.endpoint, timeout_s=5.0) as client:
        with pytest.raises(ProtocolError, match="get_overview"):
            client.get_overview()


def test_an_acquisition_gets_extra_time_for_its_dwell(backend_factory, description_factory):
    backend = backend_factory(acquire_sleep_s=0.3)
    with DriverServer(backend, LOOPBACK) as server:
        with MicroscopeClient(server.endpoint, timeout_s=0.2) as client:
            acq = client.acquire(0.3)  # allowed 0.2 + 1.5 * 0.3 = 0.65 s
            np.testing.assert_array_equal(acq.spectrum, backend.spectra[-1])
            assert acq.dwell_s == 0.3


def test_the_same_slow_acquisition_times_out_without_the_dwell_allowance(backend_factory):
    backend = backend_factory(acquire_sleep_s=0.3)
    with DriverServer(backend, LOOPBACK) as server:
        with MicroscopeClient(server.endpoint, timeout_s=0.2, retries=0) as client:
            with pytest.raises(InstrumentTimeout) as info:
                client.call("acquire", {"dwell_s": 0.3}, n_arrays=1)  # only 0.2 s
            assert info.value.command == "acquire"
            # The late reply is dropped, and the client works on (given time for the server
            # to finish the abandoned acquisition first).
            client.timeout_s = 5.0
            assert client.describe() == backend.description


# -- standalone -----------------------------------------------------------------------------


def test_importing_the_drivers_does_not_import_torch():
    code = (
        "import sys, dklscope.drivers\n"
        "assert 'zmq' in sys.modules\n"
        "heavy = sorted(m for m in ('torch', 'gpytorch', 'botorch', 'pyro') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "heavy: []"


def test_a_retried_acquire_returns_the_first_result_and_measures_once(backend_factory):
    backend = backend_factory(acquire_sleep_s=0.3)
    with DriverServer(backend, LOOPBACK) as server:
        with MicroscopeClient(server.endpoint, timeout_s=0.2, retries=3) as client:
            acq = client.call("acquire", {"dwell_s": 0.3}, n_arrays=1)  # only 0.2 s per attempt
            np.testing.assert_array_equal(acq[1][0], backend.spectra[0])
            assert acq[0]["seq"] == 0
            assert backend.names_called().count("acquire") == 1
            again = client.acquire(0.01)
            assert again.seq == 1 and backend.names_called().count("acquire") == 2
