"""Carbon's pickle protocol: frames across chunks, a safe unpickler, per-point rejections."""

from __future__ import annotations

import math
import os
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphite_istat.protocol.errors import FrameTooLarge, ProtocolError, UnsafePickle
from graphite_istat.protocol.pickle_frames import PickleDecoder, decode_point, safe_loads
from graphite_istat.protocol.plaintext import merge_results
from graphite_istat.protocol.result import ParseResult

NOW = 1_700_000_000


def frame(payload: bytes) -> bytes:
    return struct.pack("!I", len(payload)) + payload


def framed(points: object, protocol: int = 2) -> bytes:
    return frame(pickle.dumps(points, protocol=protocol))


def points(result: ParseResult) -> list[tuple[str, int, float]]:
    batch = result.batch
    return list(zip(batch.point_names(), batch.timestamps.tolist(), batch.values.tolist(), strict=True))


def feed_all(chunks: list[bytes], **options: int) -> ParseResult:
    decoder = PickleDecoder(**options)
    return merge_results([decoder.feed(chunk, NOW) for chunk in chunks])


GOOD = [("a.b.c", (1700000000, 1.5)), ("d.e", (1700000010.9, 42)), ("a.b.c", (-1, -3.25))]
EXPECTED = [("a.b.c", 1700000000, 1.5), ("d.e", 1700000010, 42.0), ("a.b.c", NOW, -3.25)]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_round_trip_of_every_pickle_protocol(protocol: int) -> None:
    as_lists = [[name, list(pair)] for name, pair in GOOD]
    result = feed_all([framed(GOOD, protocol), framed(as_lists, protocol)])
    assert points(result) == EXPECTED + EXPECTED
    assert result.rejected == {}
    assert result.batch.timestamps.dtype == np.int64
    assert result.batch.values.dtype == np.float64


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_bytes_names_are_decoded_as_utf8(protocol: int) -> None:
    result = feed_all(
        [framed([("métrique".encode(), (1, 2.0)), (b"\xff\xfe", (1, 2.0))], protocol)]
    )
    assert points(result) == [("métrique", 1, 2.0)]
    assert result.rejected == {"non_utf8_name": 1}


def test_python2_str_names_arrive_as_bytes_and_are_decoded() -> None:
    # What Python 2's pickle.dumps([('a.b', (1, 2.0))], 2) produces: BINSTRING names.
    payload = b"\x80\x02]q\x00U\x03a.bq\x01K\x01G@\x00\x00\x00\x00\x00\x00\x00\x86q\x02\x86q\x03a."
    result = feed_all([frame(payload)])
    assert points(result) == [("a.b", 1, 2.0)]


def test_tagged_names_are_normalised_and_bad_tags_refused() -> None:
    result = feed_all(
        [framed([("cpu;host=a;dc=b", (1, 1.0)), ("cpu;=x", (1, 1.0)), ("", (1, 1.0))])]
    )
    assert points(result) == [("cpu;dc=b;host=a", 1, 1.0)]
    assert result.rejected == {"bad_tags": 1, "empty_name": 1}


def test_nan_and_inf_values_pass_through() -> None:
    result = feed_all([framed([("a", (1, math.nan)), ("b", (2, math.inf))])])
    assert result.rejected == {}
    assert math.isnan(result.batch.values[0]) and result.batch.values[1] == math.inf


def test_points_of_the_wrong_shape_or_type_are_refused_one_by_one() -> None:
    mixed = [
        ("keep.1", (1, 1.0)),
        ("none.value", (1, None)),
        ("none.time", (None, 1.0)),
        ("short", (1,)),
        ("long", (1, 2, 3)),
        ("flat", 1, 2.0),
        "just a string",
        (42, (1, 1.0)),
        ("dict.pair", {1: 2}),
        ("text.value", (1, "abc")),
        ("text.time", ("soon", 1.0)),
        ("nan.time", (math.nan, 1.0)),
        ("huge.value", (1, 10**400)),
        ("text.ok", ("1700000000", b"2.5")),
        ("keep.2", [2, 2]),
    ]
    result = feed_all([framed(mixed, protocol=4)])
    assert points(result) == [("keep.1", 1, 1.0), ("text.ok", 1700000000, 2.5), ("keep.2", 2, 2.0)]
    assert result.rejected == {"bad_pickle_point": 8, "bad_value": 2, "bad_timestamp": 2}
    assert len(result.samples) == 5
    assert result.samples[0] == ("bad_pickle_point", b"('none.value', (1, None))")


def test_forbidden_global_is_refused_without_running_anything(tmp_path) -> None:
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps([("a", (1, 1.0)), Exploit()], protocol=2)
    assert b"system" in payload
    with pytest.raises(UnsafePickle):
        safe_loads(payload)
    result = feed_all([frame(payload) + framed([("after", (5, 6.0))])])
    assert not marker.exists()
    assert points(result) == [("after", 5, 6.0)]
    assert result.rejected == {"bad_pickle": 1}
    assert result.samples == [("bad_pickle", payload[:200])]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_global_is_refused_even_harmless_ones(protocol: int) -> None:
    with pytest.raises(UnsafePickle):
        safe_loads(pickle.dumps([("a", (1, complex(1, 2)))], protocol=protocol))


def test_oversized_frame_is_fatal_but_frames_before_it_are_kept() -> None:
    decoder = PickleDecoder(max_frame_bytes=1000)
    good = framed([("a", (1, 1.0))])
    with pytest.raises(FrameTooLarge) as raised:
        decoder.feed(good + struct.pack("!I", 1001) + b"x" * 10, NOW)
    assert isinstance(raised.value, ProtocolError)
    assert raised.value.length == 1001
    assert points(raised.value.decoded) == [("a", 1, 1.0)]
    with pytest.raises(FrameTooLarge):
        decoder.feed(good, NOW)


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    payload = pickle.dumps([("a" * 50, (1, 1.0))], protocol=2)
    assert len(feed_all([frame(payload)], max_frame_bytes=len(payload)).batch) == 1
    with pytest.raises(FrameTooLarge):
        feed_all([frame(payload)], max_frame_bytes=len(payload) - 1)


def test_default_limit_is_one_mebibyte() -> None:
    with pytest.raises(FrameTooLarge):
        PickleDecoder().feed(struct.pack("!I", (1 << 20) + 1), NOW)
    assert len(PickleDecoder().feed(struct.pack("!I", 1 << 20), NOW).batch) == 0


def test_truncated_frame_waits_across_feeds_at_every_split() -> None:
    stream = framed(GOOD, 2) + framed([("x", (7, 8.0))], 4)
    whole = feed_all([stream])
    assert points(whole) == [*EXPECTED, ("x", 7, 8.0)]
    for cut in range(len(stream) + 1):
        for second_cut in (cut, min(len(stream), cut + 3)):
            split = feed_all([stream[:cut], stream[cut:second_cut], stream[second_cut:]])
            assert points(split) == points(whole)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"garbage",
        b"\x80\x05",
        b"\x80\x02]q\x00(",
        b"N.",
        b"K\x01.",
        b"}q\x00.",
        b"\x80\x02X\x03\x00\x00\x00abc.",
    ],
)
def test_garbage_or_non_list_frames_count_as_bad_pickle(payload: bytes) -> None:
    result = feed_all([frame(payload) + framed([("ok", (1, 1.0))])])
    assert result.rejected == {"bad_pickle": 1}
    assert points(result) == [("ok", 1, 1.0)]


def test_persistent_ids_are_refused() -> None:
    payload = b"\x80\x02]q\x00Pabc\n."
    assert feed_all([frame(payload)]).rejected == {"bad_pickle": 1}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_escape_as_anything_but_counts(payload: bytes) -> None:
    result = feed_all([frame(payload)])
    assert set(result.rejected) <= {
        "bad_pickle",
        "bad_pickle_point",
        "bad_value",
        "bad_timestamp",
        "empty_name",
        "bad_tags",
        "non_utf8_name",
    }


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=4),
    st.binary(max_size=4),
)
point_like = st.one_of(
    st.tuples(st.text(max_size=8), st.tuples(st.integers(-5, 2**40) | st.floats(), st.floats())),
    st.lists(st.one_of(scalars, st.lists(scalars, max_size=3)), max_size=3),
    st.tuples(st.text(max_size=5) | st.binary(max_size=5), st.tuples(scalars, scalars)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(point_like, max_size=20), st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_fast_frame_decoding_agrees_with_point_by_point(points_in: list, protocol: int) -> None:
    result = feed_all([framed(points_in, protocol)])
    if protocol < 3 and _has_bytes(points_in):  # bytes pickle through the _codecs.encode global
        assert result.rejected == {"bad_pickle": 1}
        return
    expected = [decode_point(p, NOW) for p in points_in]
    kept = [e for e in expected if not isinstance(e, str)]
    assert _nan_equal(points(result), kept)
    reasons: dict[str, int] = {}
    for e in expected:
        if isinstance(e, str):
            reasons[e] = reasons.get(e, 0) + 1
    assert result.rejected == reasons


def _has_bytes(value: object) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, list | tuple):
        return any(_has_bytes(v) for v in value)
    return False


def _nan_equal(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and x[1] == y[1] and (x[2] == y[2] or (math.isnan(x[2]) and math.isnan(y[2])))
        for x, y in zip(a, b, strict=True)
    )


def test_invalid_max_frame_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="max_frame_bytes"):
        PickleDecoder(max_frame_bytes=0)


def test_deeply_nested_point_is_refused_and_described_safely() -> None:
    depth = 100_000  # pickle.dumps itself cannot go this deep, so the opcodes are written out
    ok_point = b"X\x02\x00\x00\x00ok" + b"K\x01" + b"G" + struct.pack(">d", 1.0) + b"\x86\x86"
    payload = b"\x80\x02]" + b"]" * depth + b"a" * depth + ok_point + b"a."
    result = feed_all([frame(payload)])
    assert result.rejected == {"bad_pickle_point": 1}
    assert points(result) == [("ok", 1, 1.0)]
    assert result.samples[0][0] == "bad_pickle_point"


def test_length_inside_the_pickle_beyond_the_frame_is_bad_pickle() -> None:
    payload = b"\x80\x05\x96" + struct.pack("<Q", 1 << 56) + b"x."
    assert feed_all([frame(payload)]).rejected == {"bad_pickle": 1}


def test_names_needing_normalisation_in_an_all_good_frame() -> None:
    frame_points = [
        ("~a", (1, 1.0)),
        ('m{b="1",a="2"}', (1, 1.0)),
        ("b;y=1;x=2", (1, 1.0)),
        ("plain", (1, 1.0)),
    ]
    result = feed_all([framed(frame_points, protocol=4)])
    assert list(result.batch.point_names()) == ["a", "m;a=2;b=1", "b;x=2;y=1", "plain"]
    assert result.rejected == {}
