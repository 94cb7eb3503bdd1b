"""`protocol.encode`/`decode` and `InstrumentDescription`."""

import json
import math

import numpy as np
import pytest
import zmq

from dklscope.drivers import InstrumentDescription, ProtocolError, SpectralAxis
from dklscope.drivers.protocol import (
    MAX_HEADER_BYTES,
    SIGNATURE,
    ArrayFormat,
    decode,
    encode,
    recv,
    send,
)


def on_the_wire(frames):
    """What ZeroMQ delivers for ``frames``: plain bytes, one per frame."""
    return [bytes(frame) for frame in frames]


def message(header, *array_frames):
    return [SIGNATURE, json.dumps(header).encode(), *array_frames]


@pytest.fixture
def pair():
    """Two connected in-process PAIR sockets: (sender, receiver)."""
    context = zmq.Context()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    a.bind("inproc://pair")
    b.connect("inproc://pair")
    yield a, b
    a.close()
    b.close()
    context.term()


# -- round trip -----------------------------------------------------------------------------


def test_round_trip_returns_the_header_and_exact_arrays():
    rng = np.random.default_rng(7)
    arrays = [
        rng.normal(size=5).astype("<f4"),
        rng.normal(size=(3, 4)).astype("<f8"),
        np.array([-(2**31), -1, 0, 1, 2**31 - 1], dtype="<i4"),
        rng.normal(size=(2, 3)).astype(">f8"),
        np.zeros(0, dtype="<f4"),
        np.zeros((3, 0), dtype="<f8"),
        np.array([0, 1, 255], dtype="|u1"),
        np.array([2**63 - 1, -(2**63)], dtype="<i8"),
    ]
    header = {"id": "abc-1", "cmd": "acquire", "args": {"dwell_s": 0.25, "tag": "é", "n": [1, 2]}}

    got_header, got_arrays = decode(on_the_wire(encode(header, arrays)))

    assert {k: v for k, v in got_header.items() if k != "arrays"} == header
    assert got_header["arrays"] == [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    assert len(got_arrays) == len(arrays)
    for got, sent in zip(got_arrays, arrays, strict=True):
        assert got.dtype.str == sent.dtype.str  # byte order included: '>f8' stays '>f8'
        assert got.shape == sent.shape
        np.testing.assert_array_equal(got, sent)


def test_round_trip_of_non_contiguous_arrays_keeps_their_values():
    base = np.arange(24, dtype="<f8").reshape(4, 6)
    arrays = [base.T, base[::2, 1::2], np.asfortranarray(base)]
    _, got = decode(on_the_wire(encode({"id": "x"}, arrays)))
    for g, sent in zip(got, arrays, strict=True):
        assert g.shape == sent.shape
        np.testing.assert_array_equal(g, sent)


def test_round_trip_without_arrays():
    header, arrays = decode(on_the_wire(encode({"id": "q", "ok": True, "result": {}})))
    assert header == {"id": "q", "ok": True, "result": {}, "arrays": []}
    assert arrays == []


def test_encode_frames_are_signature_header_and_raw_c_order_bytes():
    a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=">f4")
    frames = encode({"id": "z"}, [a])
    assert len(frames) == 3
    assert bytes(frames[0]) == SIGNATURE
    assert json.loads(bytes(frames[1])) == {
        "id": "z",
        "arrays": [{"dtype": ">f4", "shape": [2, 2]}],
    }
    assert bytes(frames[2]) == a.tobytes(order="C")


def test_decode_accepts_the_memoryviews_encode_returns():
    a = np.arange(3, dtype="<f4")
    _, arrays = decode(encode({"id": "m"}, [a]))
    np.testing.assert_array_equal(arrays[0], a)


def test_round_trip_of_a_zero_dimensional_array_keeps_its_shape():
    _, arrays = decode(on_the_wire(encode({"id": "s"}, [np.array(2.5)])))
    assert arrays[0].shape == ()


def test_an_array_format_describes_its_arrays_as_their_meta_does():
    meta = {"units": "counts", "axes": [{"name": "e", "size": 3, "offset": 1.0, "scale": 0.5}]}
    fmt = ArrayFormat("<f4", (3,), meta)
    a, b = np.arange(3, dtype="<f4"), np.ones(3, dtype="<f4")
    header = {"id": "f", "ok": True, "result": {"seq": 1}}
    described = decode(on_the_wire(encode(header, [a, b], [meta, meta])))
    formatted = decode(on_the_wire(encode(header, [a, b], [fmt, meta])))
    assert formatted[0] == described[0]
    assert formatted[0]["arrays"][0] == {**meta, "dtype": "<f4", "shape": [3]}
    for got, sent in zip(formatted[1], [a, b], strict=True):
        np.testing.assert_array_equal(got, sent)


@pytest.mark.parametrize(
    "array", [np.zeros(4, dtype="<f4"), np.zeros(3, dtype="<f8"), np.zeros((3, 1), dtype="<f4")]
)
def test_an_array_not_of_its_format_is_refused(array):
    with pytest.raises(ValueError, match="is not of"):
        encode({"id": "f"}, [array], [ArrayFormat("<f4", (3,))])


def test_encode_describes_the_arrays_it_sends_whatever_the_header_says():
    header, arrays = decode(on_the_wire(encode({"arrays": [F4_SPEC], "id": "a"})))
    assert header == {"id": "a", "arrays": []} and arrays == []
    header, _ = decode(on_the_wire(encode({}, [np.zeros(2, "<f8")])))
    assert header == {"arrays": [{"dtype": "<f8", "shape": [2]}]}


def test_received_arrays_keep_their_own_memory(pair):
    a, b = pair
    sent = [np.arange(5, dtype="<f4"), np.full(5, 7.0, dtype="<f4")]
    for i, array in enumerate(sent):
        send(a, encode({"id": str(i)}, [array, array[::-1]]))
    received = [recv(b) for _ in sent]
    assert all(type(f) is bytes for frames in received for f in frames[:2])
    decoded = [decode(frames) for frames in received]
    del received
    for i, (array, (header, (got, reversed_))) in enumerate(zip(sent, decoded, strict=True)):
        assert header["id"] == str(i)
        np.testing.assert_array_equal(got, array)
        np.testing.assert_array_equal(reversed_, array[::-1])


def test_send_delivers_the_frames_as_one_multipart_message(pair):
    a, b = pair
    frames = encode({"id": "s"}, [np.arange(5, dtype="<f4")])
    send(a, frames)
    send(a, [b"one"])
    assert b.recv_multipart() == on_the_wire(frames)
    assert b.recv_multipart() == [b"one"]


def test_decode_accepts_a_header_of_exactly_the_maximum_size():
    skeleton = len(json.dumps({"pad": ""}).encode())
    header = {"pad": "x" * (MAX_HEADER_BYTES - skeleton)}
    frames = message(header)
    assert len(frames[1]) == MAX_HEADER_BYTES
    got, _ = decode(frames)
    assert got["pad"] == header["pad"]


# -- refusals -------------------------------------------------------------------------------

F4_SPEC = {"dtype": "<f4", "shape": [3]}


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([], id="no-frames"),
        pytest.param([SIGNATURE], id="signature-only"),
        pytest.param([b"dklscope/2", b"{}"], id="other-version"),
        pytest.param([b"", b"{}"], id="empty-signature"),
        pytest.param([b"{}", SIGNATURE], id="frames-swapped"),
        pytest.param([SIGNATURE, b"not json"], id="not-json"),
        pytest.param([SIGNATURE, b"{not json"], id="broken-json"),
        pytest.param([SIGNATURE, b""], id="empty-header"),
        pytest.param([SIGNATURE, b"\x80\x81"], id="not-utf8"),
        pytest.param([SIGNATURE, b"[1, 2]"], id="json-list"),
        pytest.param([SIGNATURE, b'"text"'], id="json-string"),
        pytest.param([SIGNATURE, b"3"], id="json-number"),
        pytest.param([SIGNATURE, b"null"], id="json-null"),
        pytest.param(message({"arrays": [F4_SPEC]}), id="array-listed-but-missing"),
        pytest.param(message({}, b"\0" * 12), id="unlisted-array-frame"),
        pytest.param(message({"arrays": []}, b"\0" * 12), id="empty-list-and-a-frame"),
        pytest.param(message({"arrays": [F4_SPEC]}, b"\0" * 12, b"\0" * 12), id="one-too-many"),
        pytest.param(message({"arrays": F4_SPEC}, b"\0" * 12), id="arrays-not-a-list"),
        pytest.param(message({"arrays": [F4_SPEC]}, b"\0" * 11), id="one-byte-short"),
        pytest.param(message({"arrays": [F4_SPEC]}, b"\0" * 13), id="one-byte-long"),
        pytest.param(
            message({"arrays": [{"dtype": "<f8", "shape": [2, 3]}]}, b"\0" * 24), id="2d-short"
        ),
        pytest.param(
            message({"arrays": [{"dtype": "<f4", "shape": [0]}]}, b"\0"), id="empty-shape-one-byte"
        ),
        pytest.param(message({"arrays": [{"dtype": "|O", "shape": [1]}]}, b"\0" * 8), id="object"),
        pytest.param(message({"arrays": [{"dtype": "<U4", "shape": [1]}]}, b"\0" * 16), id="U4"),
        pytest.param(message({"arrays": [{"dtype": "|V4", "shape": [1]}]}, b"\0" * 4), id="void"),
        pytest.param(
            message(
                {"arrays": [{"dtype": {"names": ["a"], "formats": ["<f4"]}, "shape": [1]}]},
                b"\0" * 4,
            ),
            id="structured",
        ),
        pytest.param(message({"arrays": [{"dtype": "<f2", "shape": [2]}]}, b"\0" * 4), id="f2"),
        pytest.param(message({"arrays": [{"dtype": "|b1", "shape": [4]}]}, b"\0" * 4), id="bool"),
        pytest.param(
            message({"arrays": [{"dtype": "<c16", "shape": [1]}]}, b"\0" * 16), id="complex"
        ),
        pytest.param(
            message({"arrays": [{"dtype": "nonsense", "shape": [1]}]}, b"\0"), id="unknown-dtype"
        ),
        pytest.param(message({"arrays": [{"shape": [1]}]}, b"\0" * 8), id="no-dtype"),
        pytest.param(message({"arrays": [{"dtype": "<f8"}]}, b"\0" * 8), id="no-shape"),
        pytest.param(message({"arrays": ["<f8"]}, b"\0" * 8), id="spec-not-an-object"),
        pytest.param(
            message({"arrays": [{"dtype": "<f8", "shape": ["two"]}]}, b"\0" * 16), id="shape-text"
        ),
        pytest.param(
            message({"arrays": [{"dtype": "<f4", "shape": [-1]}]}, b""), id="negative-shape"
        ),
        pytest.param(
            # The product of the shape matches the frame: only the sign check can refuse it.
            message({"arrays": [{"dtype": "<f4", "shape": [-1, -2]}]}, b"\0" * 8),
            id="two-negatives",
        ),
        pytest.param(message({"pad": "x" * MAX_HEADER_BYTES}), id="oversized-header"),
        pytest.param(
            message({"arrays": [{"dtype": "<f4", "shape": [0, 10**30]}]}, b""),
            id="empty-with-absurd-dimension",
        ),
        pytest.param(
            message({"arrays": [{"dtype": "<f4", "shape": "12"}]}, b"\0" * 8),
            id="shape-as-a-string",
        ),
        pytest.param(
            [SIGNATURE, b"[" * 60_000],
            id="deeply-nested-json",
        ),
        pytest.param(
            [SIGNATURE, b'{"id": ' + b"1" * 5000 + b"}"],
            id="over-long-integer",
        ),
    ],
)
def test_decode_refuses_malformed_messages(frames):
    with pytest.raises(ProtocolError):
        decode(frames)


def test_decode_refuses_an_oversized_header_before_parsing_it():
    # Not JSON at all, but too long: the size is what is reported.
    with pytest.raises(ProtocolError, match="exceeds"):
        decode([SIGNATURE, b"x" * (MAX_HEADER_BYTES + 1)])


# -- InstrumentDescription ------------------------------------------------------------------


def test_description_round_trips_through_a_dict_and_json(description_factory):
    for description in (
        description_factory(),
        description_factory(name="limited", probe_limits=(1.0, 6.5, 0.5, 4.0)),
    ):
        d = description.to_dict()
        assert InstrumentDescription.from_dict(d) == description
        assert InstrumentDescription.from_dict(json.loads(json.dumps(d))) == description


def test_description_to_dict_has_the_documented_fields(description_factory):
    d = description_factory().to_dict()
    assert d == {
        "name": "fake",
        "overview_shape": (6, 8),
        "pixel_size": 0.5,
        "pixel_units": "nm",
        "spectral_axis": {"size": 16, "offset": 0.1, "scale": 0.05, "units": "eV"},
        "spectrum_units": "counts",
        "dwell_range_s": (0.001, 2.0),
        "probe_limits": (0.0, 7.0, 0.0, 5.0),
        "forbidden_regions": (),
        "overview_channels": ("overview",),
        "saturation_level": None,
        "dose_units": None,
        "dose_per_s": None,
        "can_park": False,
        "can_blank": False,
        "field_of_view": (4.0, 3.0),  # 8 columns, 6 rows of 0.5 nm
    }


def test_a_description_for_protocol_1_1_leaves_out_the_park_and_dose_fields(description_factory):
    description = description_factory(dose_units="e-", dose_per_s=3.0, can_park=True)
    new, old = description.to_dict(), description.to_dict(minor=1)
    assert (new["dose_units"], new["dose_per_s"], new["can_park"]) == ("e-", 3.0, True)
    assert set(new) - set(old) == {"dose_units", "dose_per_s", "can_park", "can_blank"}
    # what a 1.1 server sends reads as "no dose account, cannot park" on a 1.2 client
    read = InstrumentDescription.from_dict(old)
    assert (read.dose_units, read.dose_per_s, read.can_park, read.can_blank) == (
        None,
        None,
        False,
        False,
    )


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"dose_units": "e-"}, "both or neither"),
        ({"dose_per_s": 1.0}, "both or neither"),
        ({"dose_units": "e-", "dose_per_s": -1.0}, "dose_per_s must be"),
        ({"dose_units": "e-", "dose_per_s": float("nan")}, "dose_per_s must be"),
    ],
)
def test_a_description_refuses_a_half_or_negative_dose_account(
    description_factory, fields, message
):
    with pytest.raises(ValueError, match=message):
        description_factory(**fields)


@pytest.mark.parametrize("rows, cols", [(6, 8), (40, 64), (1, 1), (64, 40)])
def test_default_probe_limits_cover_the_whole_overview(description_factory, rows, cols):
    description = description_factory(overview_shape=(rows, cols))
    assert description.probe_limits == (0.0, cols - 1.0, 0.0, rows - 1.0)


def test_explicit_probe_limits_are_kept(description_factory):
    description = description_factory(probe_limits=(1.0, 6.5, 0.5, 4.0))
    assert description.probe_limits == (1.0, 6.5, 0.5, 4.0)


def just_below(v):
    return float(np.nextafter(v, -np.inf))


def just_above(v):
    return float(np.nextafter(v, np.inf))


@pytest.mark.parametrize("limits", [None, (1.0, 6.5, 0.5, 4.0)])
def test_check_position_accepts_the_corners_and_refuses_just_outside(description_factory, limits):
    description = description_factory(**({"probe_limits": limits} if limits else {}))
    x0, x1, y0, y1 = description.probe_limits
    for x, y in [(x0, y0), (x1, y0), (x0, y1), (x1, y1), ((x0 + x1) / 2, (y0 + y1) / 2)]:
        assert description.check_position(x, y) is None, (x, y)
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    for x, y in [(just_below(x0), ym), (just_above(x1), ym), (xm, just_below(y0))]:
        assert isinstance(description.check_position(x, y), str), (x, y)
    assert isinstance(description.check_position(xm, just_above(y1)), str)


@pytest.mark.parametrize(
    "x, y",
    [
        (math.nan, 1.0),
        (1.0, math.nan),
        (math.nan, math.nan),
        (math.inf, 1.0),
        (1.0, -math.inf),
        (-math.inf, math.inf),
    ],
)
def test_check_position_refuses_non_finite_positions(description_factory, x, y):
    assert isinstance(description_factory().check_position(x, y), str)


def test_check_dwell(description_factory):
    description = description_factory(dwell_range_s=(0.001, 2.0))
    for ok in (0.001, 0.5, 2.0):
        assert description.check_dwell(ok) is None, ok
    for bad in (just_below(0.001), just_above(2.0), 0.0, -1.0, 100.0, math.nan, math.inf):
        assert isinstance(description.check_dwell(bad), str), bad


def good_dict():
    return InstrumentDescription(
        name="fake",
        overview_shape=(6, 8),
        pixel_size=0.5,
        pixel_units="nm",
        spectral_axis=SpectralAxis(size=16, offset=0.1, scale=0.05, units="eV"),
        spectrum_units="counts",
        dwell_range_s=(0.001, 2.0),
    ).to_dict()


# Fields of protocol 1.0; later minor versions only add optional ones.
REQUIRED_FIELDS = (
    "name",
    "overview_shape",
    "pixel_size",
    "pixel_units",
    "spectral_axis",
    "spectrum_units",
    "dwell_range_s",
    "probe_limits",
)


def test_from_dict_ignores_unknown_fields_and_defaults_optional_ones():
    d = {k: good_dict()[k] for k in REQUIRED_FIELDS}
    d["from_a_later_minor_version"] = {"anything": 1}
    d["spectral_axis"] = {**d["spectral_axis"], "gain": 2}
    description = InstrumentDescription.from_dict(d)
    assert description.forbidden_regions == ()
    assert description.overview_channels == ("overview",)
    assert description.spectral_axis == SpectralAxis(size=16, offset=0.1, scale=0.05, units="eV")


def test_forbidden_regions_are_refused_edges_included(description_factory):
    description = description_factory(forbidden_regions=[(2, 3, 1, 2)])
    assert description.forbidden_regions == ((2.0, 3.0, 1.0, 2.0),)
    for x, y in [(2.0, 1.0), (3.0, 2.0), (2.5, 1.5)]:
        assert "forbidden region 0" in description.check_position(x, y)
    for x, y in [(just_below(2.0), 1.5), (just_above(3.0), 1.5), (2.5, just_above(2.0))]:
        assert description.check_position(x, y) is None


def test_physical_units_convert_to_pixels(description_factory):
    description = description_factory()  # 0.5 nm per pixel
    assert description.to_pixels(1.0, 2.0, "nm") == (2.0, 4.0)
    assert description.to_pixels(1.0, 2.0, "px") == (1.0, 2.0)
    with pytest.raises(ValueError, match="'nm'"):
        description.to_pixels(1.0, 2.0, "um")
    assert description.field_of_view == (4.0, 3.0)


def without(key):
    d = good_dict()
    del d[key]
    return d


def replaced(key, value):
    return {**good_dict(), key: value}


@pytest.mark.parametrize(
    "d",
    [
        pytest.param(None, id="none"),
        pytest.param([], id="list"),
        pytest.param({}, id="empty"),
        *(pytest.param(without(k), id=f"no-{k}") for k in REQUIRED_FIELDS),
        pytest.param(replaced("overview_shape", [6]), id="shape-too-short"),
        pytest.param(replaced("overview_shape", ["six", 8]), id="shape-text"),
        pytest.param(replaced("overview_shape", None), id="shape-none"),
        pytest.param(replaced("pixel_size", "big"), id="pixel-size-text"),
        pytest.param(replaced("spectral_axis", None), id="axis-none"),
        pytest.param(replaced("spectral_axis", {"size": 16}), id="axis-incomplete"),
        pytest.param(replaced("spectral_axis", {"size": "many"}), id="axis-size-text"),
        pytest.param(replaced("forbidden_regions", [[0, 1, 2]]), id="region-three-values"),
        pytest.param(replaced("dwell_range_s", [0.1]), id="dwell-too-short"),
        pytest.param(replaced("dwell_range_s", "fast"), id="dwell-text"),
        pytest.param(replaced("probe_limits", None), id="limits-none"),
        pytest.param(replaced("probe_limits", [0, 1, "a", 2]), id="limits-text"),
        pytest.param(
            replaced("probe_limits", [0.0, 7.0, 0.0]),
            id="limits-three-values",
        ),
    ],
)
def test_from_dict_refuses_malformed_descriptions(d):
    with pytest.raises(ProtocolError):
        InstrumentDescription.from_dict(d)


def test_spectral_axis_values():
    axis = SpectralAxis(size=4, offset=0.5, scale=0.25, units="eV")
    values = axis.values()
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, [0.5, 0.75, 1.0, 1.25])
