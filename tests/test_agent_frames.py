"""The acknowledged protocol's frames and carbon_ch hashing, checked against their definitions."""

from __future__ import annotations

import math
import random
import struct
import zlib

import numpy as np
import pytest
from carbon.hashing import ConsistentHashRing
from hypothesis import given, settings
from hypothesis import strategies as st

from graphite_istat.agent.hashing import CarbonHashRing
from graphite_istat.protocol.ack_frames import (
    ACK,
    BATCH,
    HEADER_BYTES,
    MAX_BODY_BYTES,
    AckProtocolError,
    FrameReader,
    batch_info,
    decode_ack,
    decode_batch,
    decode_hello,
    encode_ack,
    encode_batch,
    encode_hello,
    read_frame,
)
from graphite_istat.store.batch import WriteBatch

names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=30)
points = st.lists(
    st.tuples(
        names,
        st.integers(-(2**62), 2**62),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
    max_size=60,
)


def batch_of(triples: list[tuple[str, int, float]]) -> WriteBatch:
    return WriteBatch.from_arrays(
        [t[0] for t in triples],
        np.array([t[1] for t in triples], dtype=np.int64),
        np.array([t[2] for t in triples], dtype=np.float64),
    )


@settings(max_examples=150, deadline=None)
@given(points, st.integers(1, 2**64 - 1), st.booleans(), st.sampled_from(["a/1", "héllo/ff"]))
def test_a_batch_comes_back_point_for_point(triples, sequence, compress, source) -> None:
    frame = encode_batch(source, sequence, batch_of(triples), compress=compress)
    (decoded_frame,) = FrameReader().feed(frame)
    decoded = decode_batch(decoded_frame)
    assert (decoded.source, decoded.sequence) == (source, sequence)
    got = list(
        zip(
            decoded.batch.point_names(),
            decoded.batch.timestamps.tolist(),
            decoded.batch.values.tolist(),
            strict=True,
        )
    )
    assert len(got) == len(triples)
    for (name, stamp, value), (want_name, want_stamp, want_value) in zip(got, triples, strict=True):
        assert (name, stamp) == (want_name, want_stamp)
        assert value == want_value or (math.isnan(value) and math.isnan(want_value))
    info = batch_info(decoded_frame.body)
    assert (info.sequence, info.points, info.source) == (sequence, len(triples), source)


def test_batches_with_name_ids_keep_their_names() -> None:
    batch = WriteBatch(
        ["x", "y", "z"], np.array([1, 2, 3, 4]), np.array([1.0, 2, 3, 4]), np.array([2, 0, 2, 1])
    )
    decoded = decode_batch(read_frame(encode_batch("s", 1, batch), 0)[0]).batch
    assert list(decoded.point_names()) == ["z", "x", "z", "y"]


@given(st.binary(max_size=300), st.lists(st.integers(1, 50), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None)
def test_a_stream_cut_anywhere_gives_the_same_frames(garbage_free, cuts) -> None:
    frames = [
        encode_hello("agent/1"),
        encode_ack(7),
        encode_batch("agent/1", 3, batch_of([("a.b", 10, 1.5), ("c", 20, 2.0)])),
    ]
    stream = b"".join(frames)
    reader = FrameReader()
    got = []
    position = 0
    turn = 0
    while position < len(stream):
        size = cuts[turn % len(cuts)]
        got.extend(reader.feed(stream[position : position + size]))
        position += size
        turn += 1
    assert [f.kind for f in got] == [1, ACK, BATCH]
    assert decode_hello(got[0]) == "agent/1"
    assert decode_ack(got[1]) == 7
    assert reader.buffered_bytes == 0


def test_every_corrupted_byte_is_refused() -> None:
    frame = encode_batch("agent/1", 5, batch_of([("a", 1, 1.0), ("b", 2, 2.0)]), compress=True)
    for position in range(len(frame)):
        broken = bytearray(frame)
        broken[position] ^= 0x41
        with pytest.raises(AckProtocolError):
            frames = FrameReader().feed(bytes(broken))
            # A changed length may just leave the frame incomplete: that is no frame at all.
            if not frames:
                raise AckProtocolError("incomplete")


def test_a_checksummed_body_with_lying_counts_is_refused() -> None:
    body = struct.pack("<QIH", 1, 1000, 1) + b"s" + struct.pack("<I", 0)
    head = struct.pack("<2sBBBBI", b"gA", 1, BATCH, 0, 0, len(body))
    frame = head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body
    with pytest.raises(AckProtocolError, match="counts"):
        decode_batch(read_frame(frame, 0)[0])


def test_oversized_and_unknown_headers_are_refused() -> None:
    head = struct.pack("<2sBBBBII", b"gA", 1, BATCH, 0, 0, MAX_BODY_BYTES + 1, 0)
    with pytest.raises(AckProtocolError, match="exceeds"):
        FrameReader().feed(head)
    with pytest.raises(AckProtocolError, match="version"):
        FrameReader().feed(struct.pack("<2sBBBBII", b"gA", 2, ACK, 0, 0, 8, 0))
    with pytest.raises(AckProtocolError, match="magic"):
        FrameReader().feed(b"\0" * HEADER_BYTES)


@pytest.mark.parametrize(
    "nodes",
    [
        [("127.0.0.1", "a")],
        [("127.0.0.1", "a"), ("127.0.0.1", "b")],
        [("10.0.0.1", None), ("10.0.0.2", None), ("10.0.0.3", None)],
        [(f"host{i}.example", str(i)) for i in range(12)],
    ],
)
def test_carbon_ch_picks_the_server_carbon_picks(nodes) -> None:
    carbon_ring = ConsistentHashRing(nodes, hash_type="carbon_ch")
    ours = CarbonHashRing(nodes)
    rng = random.Random(len(nodes))
    metrics = [f"servers.h{rng.randrange(10**6)}.cpu.{rng.choice('abc')}" for _ in range(3000)]
    metrics += ["a", "é.ü", "x" * 300]
    for metric in metrics:
        assert nodes[ours.node_for(metric)] == carbon_ring.get_node(metric)
