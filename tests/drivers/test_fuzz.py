"""Property-based fuzzing of `DriverServer`: random frames, random JSON, random sizes.

Whatever arrives, the server answers (or, for a frame over its size limit, drops the
connection), keeps serving, and never lets the probe outside its limits.
"""

from __future__ import annotations

import json

import hypothesis.strategies as st
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings

from dklscope.drivers import DriverServer, ErrorCode, MicroscopeClient
from dklscope.drivers.protocol import SIGNATURE, decode
from dklscope.drivers.server import COMMANDS

from .conftest import FakeBackend, make_description

MAX_BYTES = 50_000
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

numbers = st.one_of(
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e-300, 1e300, 3.5, 7.0, 5.0, 0.001, 2.0]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
arguments = st.dictionaries(
    st.sampled_from(["x", "y", "dwell_s", "units", "points", "channel", "seq", "limit", "target"])
    | st.text(max_size=6),
    json_values
    | st.lists(st.lists(numbers, min_size=2, max_size=2), min_size=1, max_size=5)
    | st.sampled_from(["px", "nm", "overview", "furlong"]),
    max_size=4,
)
headers = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=12) | json_values,
        "cmd": st.sampled_from(sorted(COMMANDS)) | st.text(max_size=10) | json_values,
    },
    optional={
        "args": arguments | json_values,
        "deadline_s": numbers | json_values,
        "client": st.text(max_size=10) | json_values,
        "arrays": st.lists(
            st.fixed_dictionaries(
                {"dtype": st.sampled_from(["<f4", "<f8", "|O", "<U2", "x"]), "shape": json_values}
            ),
            max_size=2,
        ),
    },
)


@pytest.fixture
def fuzzed():
    description = make_description(forbidden_regions=[(2.0, 3.0, 1.0, 2.0)])
    backend = FakeBackend(description)
    with DriverServer(backend, "tcp://127.0.0.1:0", max_message_bytes=MAX_BYTES) as server:
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(server.endpoint)
        yield server, backend, dealer
        dealer.close()
        context.term()
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            assert client.describe() == description  # still serving
    for call in backend.calls:
        if call[0] == "move_probe":
            assert description.check_position(call[1], call[2]) is None, call
        if call[0] == "acquire":
            assert description.check_dwell(call[1]) is None, call


def exchange(dealer, frames, timeout_ms=5000):
    """Send; return every reply up to the last of its stream (None if nothing came)."""
    dealer.send_multipart(frames)
    replies = []
    while dealer.poll(timeout_ms):
        header, _ = decode(dealer.recv_multipart())
        replies.append(header)
        if not header.get("more"):
            return replies
    return None


def json_bytes(header):
    return json.dumps(header).encode()  # NaN and Infinity included, as a sloppy client sends


@FUZZ
@given(frames=st.lists(st.binary(max_size=200), min_size=1, max_size=5), sign=st.booleans())
def test_random_frames_are_answered(fuzzed, frames, sign):
    replies = exchange(fuzzed[2], [SIGNATURE, *frames] if sign else frames)
    assert replies is not None
    assert replies[-1]["ok"] is False or sign


@FUZZ
@given(header=headers, extra=st.lists(st.binary(max_size=64), max_size=2))
def test_random_json_requests_are_answered(fuzzed, header, extra):
    _, _, dealer = fuzzed
    replies = exchange(dealer, [SIGNATURE, json_bytes(header), *extra])
    assert replies is not None
    for reply in replies:
        if not reply["ok"]:
            assert reply["error"]["code"] in ErrorCode.ALL
            assert isinstance(reply["error"]["message"], str)
    if isinstance(header["id"], str) and replies[-1]["id"] is not None:
        assert replies[-1]["id"] == header["id"]


@FUZZ
@given(
    sizes=st.lists(st.integers(0, 2 * MAX_BYTES), min_size=1, max_size=3),
    cmd=st.sampled_from(["describe", "move", "acquire"]),
)
def test_random_sizes_are_answered_or_dropped(fuzzed, sizes, cmd):
    server = fuzzed[0]
    header = json_bytes({"id": f"size-{sizes}", "cmd": cmd, "args": {"x": 1, "y": 1}})
    dropped = max(sizes) > MAX_BYTES
    frames = [SIGNATURE, header, *(b"\0" * n for n in sizes)]
    dealer = zmq.Context.instance().socket(zmq.DEALER)  # as after a Lazy Pirate reconnect
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(server.endpoint)
    try:
        replies = exchange(dealer, frames, timeout_ms=100 if dropped else 5000)
    finally:
        dealer.close()
    if dropped:  # libzmq drops the frame and the connection
        assert replies is None or replies[-1]["ok"] is False
    else:
        assert replies is not None and replies[-1]["error"]["code"] == ErrorCode.BAD_MESSAGE


@FUZZ
@given(x=numbers, y=numbers, units=st.sampled_from(["px", "nm"]))
def test_random_moves_never_leave_the_limits(fuzzed, x, y, units):
    _, backend, dealer = fuzzed
    header = {"id": f"m{np.random.default_rng().integers(1 << 60)}", "cmd": "move"}
    header["args"] = {"x": x, "y": y, "units": units}
    (reply,) = exchange(dealer, [SIGNATURE, json_bytes(header)])
    if reply["ok"]:
        assert backend.calls[-1][0] == "move_probe"
    else:
        assert reply["error"]["code"] in (ErrorCode.OUT_OF_LIMITS, ErrorCode.BAD_ARGUMENT)
