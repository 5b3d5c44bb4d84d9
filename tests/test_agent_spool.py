"""The agent's spool on real files: order, acknowledgement, the size limit, torn tails, restarts."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from graphite_istat.agent.counters import AgentCounters
from graphite_istat.agent.forwarder import Forwarder
from graphite_istat.agent.hashing import CarbonHashRing
from graphite_istat.agent.spool import DestinationSpool, SpoolRecord
from graphite_istat.protocol.ack_frames import decode_batch, encode_batch, read_frame
from graphite_istat.store.batch import WriteBatch

LOGGER = logging.getLogger("test_agent_spool")


def open_spool(
    directory: Path, counters: AgentCounters | None = None, **options
) -> DestinationSpool:
    spool = DestinationSpool(
        directory,
        agent_id="host-agent",
        counters=counters or AgentCounters(),
        logger=LOGGER,
        **options,
    )
    spool.open()
    return spool


def batch(first: int, count: int) -> WriteBatch:
    """``count`` points of metric ``m.<i % 7>`` with values first, first+1, ..."""
    values = np.arange(first, first + count, dtype=np.float64)
    return WriteBatch.from_arrays(
        [f"m.{i % 7}" for i in range(count)], np.full(count, 1000, np.int64), values
    )


def append(spool: DestinationSpool, points: WriteBatch) -> int:
    return spool.append(len(points), lambda seq: encode_batch(spool.source, seq, points))


def values_of(records: list[SpoolRecord]) -> list[float]:
    out: list[float] = []
    for record in records:
        out.extend(decode_batch(read_frame(record.frame, 0)[0]).batch.values.tolist())
    return out


def read_all(spool: DestinationSpool, after: int, max_bytes: int = 1 << 30) -> list[SpoolRecord]:
    records: list[SpoolRecord] = []
    while True:
        more = spool.read(after, max_bytes)
        if not more:
            return records
        records.extend(more)
        after = more[-1].sequence


def test_batches_come_back_in_order_from_memory_then_from_disk(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=1 << 20, memory_bytes=40_000)
    sequences = [append(spool, batch(i * 50, 50)) for i in range(400)]
    assert sequences == list(range(1, 401))
    assert spool.segment_count() > 1
    records = read_all(spool, 0, max_bytes=5000)
    assert [r.sequence for r in records] == sequences
    assert values_of(records) == [float(v) for v in range(20_000)]
    assert records[0].from_disk and not records[-1].from_disk
    # A rate-limited replay reads about as many points from disk as it asks for.
    share = spool.read(0, 1 << 30, max_disk_points=120)
    assert 1 <= len(share) <= 4 and share[0].sequence == 1
    # Reading again from the middle gives the same tail.
    assert [r.sequence for r in read_all(spool, 150)] == list(range(151, 401))


def test_acknowledged_segments_are_deleted_and_a_reopened_spool_numbers_on(tmp_path: Path) -> None:
    spool = open_spool(tmp_path, max_bytes=1 << 20)
    for i in range(300):
        append(spool, batch(i, 50))
    segments = spool.segment_count()
    spool.acknowledge(250)
    assert spool.segment_count() < segments
    assert [r.sequence for r in read_all(spool, 250)] == list(range(251, 301))
    source = spool.source
    spool.close()
    again = open_spool(tmp_path, max_bytes=1 << 20)
    assert again.source == source
    assert again.acknowledged == 250
    assert again.next_sequence == 301
    assert [r.sequence for r in read_all(again, again.acknowledged)] == list(range(251, 301))
    again.acknowledge(300)
    assert again.segment_count() == 0 and again.total_bytes() == 0
    again.close()
    # Everything acknowledged and deleted: the numbering still goes on above it.
    third = open_spool(tmp_path)
    assert third.next_sequence == 301
    assert append(third, batch(0, 1)) == 301


def test_a_full_spool_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    counters = AgentCounters()
    spool = open_spool(tmp_path, counters, max_bytes=1 << 20)
    per_batch = 1000
    for i in range(400):
        append(spool, batch(i * per_batch, per_batch))
    assert spool.total_bytes() <= spool.max_bytes + spool.segment_bytes
    kept = read_all(spool, 0)
    dropped = counters.totals().dropped["spool_full"]
    assert dropped > 0
    assert dropped + sum(r.points for r in kept) == 400 * per_batch
    # What is kept is the newest, whole and in order.
    assert [r.sequence for r in kept] == list(range(kept[0].sequence, 401))
    assert values_of(kept) == [
        float(v) for v in range((kept[0].sequence - 1) * per_batch, 400 * per_batch)
    ]


def test_a_torn_tail_is_cut_and_the_rest_replays(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(20):
        append(spool, batch(i * 5, 5))
    spool.close()
    (segment,) = sorted(tmp_path.glob("*.seg"))
    size = segment.stat().st_size
    with open(segment, "r+b") as file:
        file.truncate(size - 7)  # the last record loses its end, as in a kill -9 mid-write
    again = open_spool(tmp_path)
    records = read_all(again, 0)
    assert [r.sequence for r in records] == list(range(1, 20))
    assert values_of(records) == [float(v) for v in range(95)]
    # The state remembers that 20 was given out: numbering goes on above it (a gap is harmless).
    assert append(again, batch(0, 1)) == 21


def test_a_corrupt_record_is_cut_and_counted_when_read_back(tmp_path: Path) -> None:
    counters = AgentCounters()
    spool = open_spool(tmp_path, counters, memory_bytes=1)
    for i in range(10):
        append(spool, batch(i * 4, 4))
    (segment,) = sorted(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    records = read_all(spool, 0)
    assert records, "the records before the damage are read"
    assert [r.sequence for r in records] == list(range(1, len(records) + 1))
    lost = counters.totals().dropped["spool_corrupt"]
    assert lost + sum(r.points for r in records) == 40
    # Appending goes on after the damage, and what follows is readable.
    after = append(spool, batch(100, 3))
    assert [r.sequence for r in read_all(spool, records[-1].sequence)] == [after]


def test_a_lost_state_file_gets_the_source_from_the_segments(tmp_path: Path) -> None:
    spool = open_spool(tmp_path)
    for i in range(5):
        append(spool, batch(i, 2))
    source = spool.source
    spool.close()
    os.unlink(tmp_path / "state")
    again = open_spool(tmp_path)
    assert again.source == source and again.next_sequence == 6


def test_a_new_spool_has_a_new_source(tmp_path: Path) -> None:
    first = open_spool(tmp_path / "a")
    second = open_spool(tmp_path / "b")
    assert first.source.startswith("host-agent/") and first.source != second.source


@pytest.mark.parametrize("compress", [False, True])
def test_the_forwarder_splits_by_carbon_ch_and_cuts_frames(tmp_path: Path, compress: bool) -> None:
    nodes = [("10.0.0.1", "a"), ("10.0.0.2", "b"), ("10.0.0.3", "c")]
    spools = [open_spool(tmp_path / name) for _, name in nodes]
    ring = CarbonHashRing(nodes)
    forwarder = Forwarder(
        spools, AgentCounters(), LOGGER, ring=ring, max_frame_points=300, compress=compress
    )
    count = 5000
    names = [f"servers.web{i % 97}.requests" for i in range(count)]
    incoming = WriteBatch.from_arrays(names, np.arange(count) + 10**9, np.arange(count) * 1.0)
    assert forwarder.write(incoming).accepted == count
    seen = {}
    for index, spool in enumerate(spools):
        for record in read_all(spool, 0):
            assert record.points <= 300
            decoded = decode_batch(read_frame(record.frame, 0)[0]).batch
            for name, stamp, value in zip(
                decoded.point_names(),
                decoded.timestamps.tolist(),
                decoded.values.tolist(),
                strict=True,
            ):
                assert ring.node_for(name) == index
                seen[int(value)] = (name, stamp)
    assert seen == {i: (names[i], 10**9 + i) for i in range(count)}
