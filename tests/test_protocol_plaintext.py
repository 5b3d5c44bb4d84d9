"""Carbon's plaintext protocol: what is kept, what is refused and why, whatever the chunking."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from carbon.util import TaggedSeries
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphite_istat.protocol.plaintext import (
    PlaintextDecoder,
    merge_results,
    parse_lines,
    parse_lines_slowly,
)
from graphite_istat.protocol.result import ParseResult
from graphite_istat.store.batch import EncodedNames

NOW = 1_700_000_000


def points(result: ParseResult) -> list[tuple[str, int, float]]:
    batch = result.batch
    return list(zip(batch.point_names(), batch.timestamps.tolist(), batch.values.tolist(), strict=True))


def assert_same(a: ParseResult, b: ParseResult) -> None:
    assert list(a.batch.point_names()) == list(b.batch.point_names())
    assert a.batch.timestamps.dtype == b.batch.timestamps.dtype == np.int64
    assert a.batch.values.dtype == b.batch.values.dtype == np.float64
    np.testing.assert_array_equal(a.batch.timestamps, b.batch.timestamps)
    np.testing.assert_array_equal(a.batch.values, b.batch.values)
    np.testing.assert_array_equal(np.signbit(a.batch.values), np.signbit(b.batch.values))
    assert a.rejected == b.rejected
    assert a.samples == b.samples


def feed_all(chunks: list[bytes], max_line_length: int = 16384) -> ParseResult:
    decoder = PlaintextDecoder(max_line_length=max_line_length)
    results = [decoder.feed(chunk, NOW) for chunk in chunks]
    results.append(decoder.finish(NOW))
    return merge_results(results)


def test_well_formed_lines_become_points_in_order() -> None:
    result = parse_lines(b"a.b.c 1.5 1700000000\nd.e 42 1700000010\na.b.c -3 1700000020\n", NOW)
    assert points(result) == [
        ("a.b.c", 1700000000, 1.5),
        ("d.e", 1700000010, 42.0),
        ("a.b.c", 1700000020, -3.0),
    ]
    assert result.rejected == {}
    assert result.samples == []


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (b"only.two 1", "missing_fields"),
        (b"lonely", "missing_fields"),
        (b"too.many 1 2 3", "extra_fields"),
        (b"bad.value abc 1700000000", "bad_value"),
        (b"bad.value 1.2.3 1700000000", "bad_value"),
        (b"bad.value 0x10 1700000000", "bad_value"),
        (b"bad.timestamp 1 yesterday", "bad_timestamp"),
        (b"bad.timestamp 1 nan", "bad_timestamp"),
        (b"bad.timestamp 1 inf", "bad_timestamp"),
        (b"bad.timestamp 1 1e300", "bad_timestamp"),
        (b"\xff\xfe.name 1 1700000000", "non_utf8_name"),
        (b"a;=x 1 1700000000", "bad_tags"),
        (b"a;tag 1 1700000000", "bad_tags"),
        (b"a;tag= 1 1700000000", "bad_tags"),
        (b"a;t!g=x 1 1700000000", "bad_tags"),
        (b"a;tag=~x 1 1700000000", "bad_tags"),
        (b'a{{t="x"} 1 1700000000', "bad_tags"),
        (b'a{t=x"} 1 1700000000', "bad_tags"),
        (b";tag=x 1 1700000000", "empty_name"),
        (b"~~~ 1 1700000000", "empty_name"),
    ],
)
def test_each_malformed_line_is_counted_by_reason_and_its_neighbours_kept(
    bad_line: bytes, reason: str
) -> None:
    data = b"before 1 1700000000\n" + bad_line + b"\nafter 2 1700000001\n"
    for result in (
        parse_lines(data, NOW),
        parse_lines_slowly(data, NOW),
        feed_all([data[:23], data[23:]]),
    ):
        assert points(result) == [("before", 1700000000, 1.0), ("after", 1700000001, 2.0)]
        assert result.rejected == {reason: 1}
        assert result.samples == [(reason, bad_line)]


def test_empty_and_blank_lines_are_skipped_silently() -> None:
    result = parse_lines(b"\n\na 1 2\n   \n\r\n\t\nb 3 4\n\n", NOW)
    assert points(result) == [("a", 2, 1.0), ("b", 4, 3.0)]
    assert result.rejected == {}


def test_crlf_tabs_and_runs_of_spaces_are_tolerated() -> None:
    data = b"a 1 2\r\n  b\t\t3   4 \r\nc \t 5\t6\n"
    result = parse_lines(data, NOW)
    assert points(result) == [("a", 2, 1.0), ("b", 4, 3.0), ("c", 6, 5.0)]
    assert result.rejected == {}


def test_float_timestamps_are_floored_and_minus_one_means_now() -> None:
    data = b"a 1 1700000000.9\nb 1 -1\nc 1 -1.0\nd 1 -1.5\ne 1 -0.5\nf 1 -2\ng 1 1e9\n"
    result = parse_lines(data, NOW)
    assert points(result) == [
        ("a", 1700000000, 1.0),
        ("b", NOW, 1.0),
        ("c", NOW, 1.0),
        ("d", NOW, 1.0),  # carbon: int(-1.5) == -1
        ("e", -1, 1.0),  # int(-0.5) == 0, so not "now"; floored
        ("f", -2, 1.0),
        ("g", 1_000_000_000, 1.0),
    ]


def test_nan_and_inf_values_pass_through_for_the_store_to_count() -> None:
    result = parse_lines(b"a nan 1\nb inf 2\nc -Infinity 3\nd NaN 4\n", NOW)
    assert result.rejected == {}
    values = result.batch.values
    assert math.isnan(values[0]) and math.isnan(values[3])
    assert values[1] == math.inf and values[2] == -math.inf


def test_values_are_read_as_python_float_reads_them() -> None:
    data = b"a +1.5 1\nb .5 1\nc 5. 1\nd 1e-5 1\ne 1_000 1\nf -0 1\ng 00012 1\n"
    result = parse_lines(data, NOW)
    assert result.batch.values.tolist() == [1.5, 0.5, 5.0, 1e-5, 1000.0, -0.0, 12.0]
    assert np.signbit(result.batch.values[5])


@pytest.mark.parametrize(
    "name",
    [
        "plain.metric",
        "~tilde.metric",
        "cpu;host=a;dc=b",
        "cpu;dc=b;host=a;dc=c",
        "cpu;name=other;x=1",
        "cpu;t=a=b",
        'cpu{host="a",dc="b"}',
        'cpu{host="a\\"q",dc="b\\\\"}',
        'cpu{host="a":,dc="b"}',
        "~cpu;b=2;a=1",
        "a{tag=x}",
    ],
)
def test_tagged_names_are_normalised_as_carbon_does(name: str) -> None:
    result = parse_lines(f"{name} 1 2\n".encode(), NOW)
    assert result.rejected == {}
    assert list(result.batch.point_names()) == [TaggedSeries.parse(name).path]


tag_text = st.text(alphabet='ab=;~!^{}",:.\\x ', max_size=12)


@given(st.lists(tag_text, min_size=1, max_size=4))
def test_tag_normalisation_agrees_with_carbon_on_arbitrary_names(parts: list[str]) -> None:
    name = ";".join(parts).replace(" ", "")
    if not name:
        return
    try:
        expected: str | None = TaggedSeries.parse(name).path
    except Exception:
        expected = None
    result = parse_lines(f"{name} 1 2\n".encode(), NOW)
    if expected is None:
        assert len(result.batch) == 0
        assert set(result.rejected) <= {"bad_tags", "empty_name"}
        assert sum(result.rejected.values()) == 1
    else:
        assert list(result.batch.point_names()) == [expected]


def test_non_ascii_names_are_kept_and_unicode_spaces_split_as_carbon_splits() -> None:
    data = "métrique.é 1 2\nname\u00a0tail 1 2\n\u2003lead 3 4\n".encode()
    result = parse_lines(data, NOW)
    assert points(result) == [("métrique.é", 2, 1.0), ("lead", 4, 3.0)]
    assert result.rejected == {"extra_fields": 1}


def test_over_long_line_is_dropped_whole_even_across_chunks() -> None:
    long_line = b"x" * 300 + b" 1 2"
    data = b"a 1 2\n" + long_line + b"\nb 3 4\n"
    for chunks in (
        [data],
        [data[:10], data[10:150], data[150:]],
        [data[i : i + 7] for i in range(0, len(data), 7)],
    ):
        result = feed_all(chunks, max_line_length=256)
        assert points(result) == [("a", 2, 1.0), ("b", 4, 3.0)]
        assert result.rejected == {"line_too_long": 1}
        assert result.samples == [("line_too_long", long_line[:200])]


def test_line_of_exactly_the_limit_is_accepted() -> None:
    line = b"n" * 250 + b" 1 2"
    assert len(line) == 254
    assert len(parse_lines(line + b"\n", NOW, max_line_length=254).batch) == 1
    assert parse_lines(line + b"\n", NOW, max_line_length=253).rejected == {"line_too_long": 1}


def test_decoder_memory_stays_bounded_while_skipping_a_huge_line() -> None:
    decoder = PlaintextDecoder(max_line_length=1024)
    for _ in range(100):
        assert len(decoder.feed(b"y" * 10_000, NOW).batch) == 0
    assert len(decoder._tail) == 0  # nothing of the skipped line is kept but its sample
    end = decoder.feed(b" 1 2\nz 5 6\n", NOW)
    assert points(end) == [("z", 6, 5.0)]
    assert end.rejected == {"line_too_long": 1}
    assert end.samples == [("line_too_long", b"y" * 200)]


def test_over_long_final_line_is_counted_when_the_connection_closes() -> None:
    decoder = PlaintextDecoder(max_line_length=100)
    decoder.feed(b"a 1 2\n" + b"q" * 150, NOW)
    final = decoder.finish(NOW)
    assert final.rejected == {"line_too_long": 1}


def test_last_line_without_newline_waits_for_more_or_for_finish() -> None:
    decoder = PlaintextDecoder()
    assert len(decoder.feed(b"a 1 2\nb 3", NOW).batch) == 1
    assert points(decoder.feed(b" 4\nc 5", NOW)) == [("b", 4, 3.0)]
    assert points(decoder.feed(b" 6", NOW)) == []
    assert points(decoder.finish(NOW)) == [("c", 6, 5.0)]


def test_finish_parses_the_unterminated_last_line() -> None:
    decoder = PlaintextDecoder()
    decoder.feed(b"a 1 2\nc 5 6", NOW)
    assert points(decoder.finish(NOW)) == [("c", 6, 5.0)]
    assert points(decoder.finish(NOW)) == []


def test_at_most_five_samples_truncated_to_200_bytes() -> None:
    data = b"".join(b"bad%d " % i + b"z" * 300 + b"\n" for i in range(8))
    result = parse_lines(data, NOW)
    assert result.rejected == {"missing_fields": 8}
    assert [s[1][:4] for s in result.samples] == [b"bad0", b"bad1", b"bad2", b"bad3", b"bad4"]
    assert all(len(sample) == 200 for _, sample in result.samples)


SAMPLE_STREAM = (
    b"a.b 1 1700000000\r\n"
    b"c;z=1;y=2  3.5 -1\n"
    b"\n"
    b"bad\n"
    b"\xff 1 2\n"
    b"x\t1 1700000000.7\n"
    b"long " + b"L" * 40 + b" 1 2\n"
    b"q nan inf\n"
    b"z 1_0 5\n"
    b"last 1 2"
)


def test_every_split_into_two_chunks_gives_the_one_chunk_result() -> None:
    whole = feed_all([SAMPLE_STREAM], max_line_length=40)
    assert whole.rejected == {
        "missing_fields": 1,
        "non_utf8_name": 1,
        "line_too_long": 1,
        "bad_timestamp": 1,
    }
    assert len(whole.batch) == 5
    for cut in range(len(SAMPLE_STREAM) + 1):
        assert_same(feed_all([SAMPLE_STREAM[:cut], SAMPLE_STREAM[cut:]], max_line_length=40), whole)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, len(SAMPLE_STREAM)), max_size=12))
def test_any_chunking_gives_the_one_chunk_result(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(SAMPLE_STREAM)]
    chunks = [SAMPLE_STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert_same(feed_all(chunks, max_line_length=40), feed_all([SAMPLE_STREAM], max_line_length=40))


NAMES = st.sampled_from(
    [
        b"a.b.c",
        b"servers.host-1.cpu",
        b"m",
        b"cpu;host=a;dc=b",
        b"cpu;dc=b;host=a",
        b"bad;=x",
        b"~t",
        b"~",
        b'om{a="1",b="2"}',
        "é.ü".encode(),
        "nb\u00a0sp".encode(),
        b"\xff\xfe",
        b"ctl\x01x",
        b"del\x7f",
        b"semi;",
    ]
)
NUMBERS = (
    st.sampled_from(
        [
            b"1",
            b"-1",
            b"+2.5",
            b"0",
            b"-0",
            b".5",
            b"5.",
            b"1e5",
            b"1E-5",
            b"1.e3",
            b"1e500",
            b"4.9e-324",
            b"1700000000",
            b"1700000000.75",
            b"-1.5",
            b"-2",
            b"nan",
            b"NaN",
            b"-inf",
            b"Infinity",
            b"infinit",
            b"nana",
            b"1_000",
            b"1__0",
            b"abc",
            b"1.2.3",
            b"--1",
            b"1e",
            b"e5",
            b".",
            b"+",
            b"0x1p3",
            b"12345678901234567890123",
            b"0.30000000000000004",
            "١٢".encode(),
            b"\xff1",
            b"1\x00",
        ]
    )
    | st.integers(-(2**70), 2**70).map(lambda i: str(i).encode())
    | st.floats(allow_nan=True).map(lambda f: repr(f).encode())
)
SEPARATORS = st.sampled_from([b" ", b" ", b" ", b"  ", b"\t", b" \t", b"\x0b", b"\r"])
ENDINGS = st.sampled_from([b"\n", b"\n", b"\r\n", b" \n", b"\r\r\n"])


@st.composite
def plaintext_line(draw: st.DrawFn) -> bytes:
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(st.binary(max_size=30).filter(lambda b: b"\n" not in b)) + b"\n"
    fields = [draw(NAMES), draw(NUMBERS), draw(NUMBERS)]
    if shape == 1:
        fields.pop()
    elif shape == 2:
        fields.append(draw(NUMBERS))
    prefix = draw(st.sampled_from([b"", b"", b"", b" ", b"\t"]))
    line = prefix + fields[0]
    for field in fields[1:]:
        line += draw(SEPARATORS) + field
    return line + draw(ENDINGS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plaintext_line(), max_size=40), st.integers(20, 200))
def test_fast_path_agrees_with_the_line_by_line_reference(
    lines: list[bytes], max_line_length: int
) -> None:
    data = b"".join(lines)
    fast = parse_lines(data, NOW, max_line_length=max_line_length)
    slow = parse_lines_slowly(data, NOW, max_line_length=max_line_length)
    assert_same(fast, slow)


@settings(max_examples=100, deadline=None)
@given(st.lists(plaintext_line(), min_size=1, max_size=20), st.data())
def test_random_chunking_of_random_lines_gives_the_one_chunk_result(
    lines: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert_same(feed_all(chunks, max_line_length=64), feed_all([stream], max_line_length=64))


def test_a_large_well_formed_buffer_takes_the_fast_path_and_matches_the_reference() -> None:
    names = [f"servers.host{i}.cpu.user".encode() for i in range(50)]
    data = b"".join(b"%s %d.%d %d\n" % (names[i % 50], i, i % 7, NOW + i) for i in range(20_000))
    fast = parse_lines(data, NOW)
    assert len(fast.batch) == 20_000
    assert_same(fast, parse_lines_slowly(data, NOW))
    # plain ASCII names go to the store as bytes, and read as str
    assert isinstance(fast.batch.names, EncodedNames) and all(type(n) is str for n in fast.batch.names)
    unusual = parse_lines(data + "servers.hôst.cpu 1 %d\n".encode() % NOW, NOW)
    assert isinstance(unusual.batch.names, list) and len(unusual.batch) == 20_001


def test_invalid_max_line_length_is_refused() -> None:
    with pytest.raises(ValueError, match="max_line_length"):
        PlaintextDecoder(max_line_length=0)
