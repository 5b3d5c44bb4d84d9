"""The receiver's pipeline in-process (no sockets): chunking, back-pressure, drops, self-metrics."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from graphite_istat.config import load_storage_rules
from graphite_istat.receiver.counters import DROPPED_CACHE_FULL, ReceiverCounters
from graphite_istat.receiver.pipeline import Pipeline
from graphite_istat.receiver.selfmetrics import SelfMetrics
from graphite_istat.receiver.streams import LINE, UDP, BadInputLog, Stream
from graphite_istat.store.batch import WriteBatch, WriteResult
from graphite_istat.store.store import Store, StoreOptions

LOGGER = logging.getLogger("test.receiver")
SCHEMAS = "[default]\npattern = .*\nretentions = 10s:1d\n"
AGGREGATION = "[default]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n"


@pytest.fixture
def store(tmp_path: Path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "storage-schemas.conf").write_text(SCHEMAS)
    (conf / "storage-aggregation.conf").write_text(AGGREGATION)
    rules = load_storage_rules(conf)
    opened = Store.open(tmp_path / "storage", rules, writable=True, options=StoreOptions(shards=2))
    yield opened
    opened.close()


class SlowWriter:
    """A store that takes ``delay`` seconds per write: what back-pressure must cope with."""

    def __init__(self, store: Store, delay: float) -> None:
        self.store = store
        self.delay = delay
        self.writes = 0

    def write(self, batch: WriteBatch) -> WriteResult:
        time.sleep(self.delay)
        self.writes += 1
        return self.store.write(batch)

    def sync(self) -> None:
        self.store.sync()


def make_pipeline(writer, counters: ReceiverCounters, **options) -> Pipeline:
    options.setdefault("visibility_interval", 0.2)
    pipeline = Pipeline(writer, counters, logger=LOGGER, **options)
    pipeline.start()
    return pipeline


def counts_and_sums(
    store: Store, names: list[str], start: int, end: int
) -> dict[str, tuple[float, float]]:
    result = store.fetch(names, start - 10, end, now=end + 10, fields=("count", "sum"))
    found = {}
    for name, _grid, series, row in result.series():
        found[name] = (
            float(np.nansum(series.counters["count"][row])),
            float(np.nansum(series.counters["sum"][row])),
        )
    return found


def test_lines_cut_at_every_byte_boundary_arrive_exactly_once(store: Store) -> None:
    now = int(time.time()) // 10 * 10
    payload = (
        b"cut.a 1 %d\n"
        b"cut.b  2.5   %d\r\n"
        b"cut.c;z=1;a=2 -3 %d\n"
        b"cut.a 4e1 %d.75\n"
        b"not a good line at all\n"
        b"cut.b 0.5 -1\n" % (now, now, now, now)
    )
    counters = ReceiverCounters()
    pipeline = make_pipeline(store, counters, min_parse_bytes=1, parser_threads=2)
    cuts = list(range(len(payload) + 1))
    for first in cuts:
        for second in (first, min(first + 7, len(payload))):
            stream = Stream(LINE, f"cut {first}/{second}", LOGGER)
            pipeline.open_stream(stream)
            for piece in (payload[:first], payload[first:second], payload[second:]):
                pipeline.submit(stream, piece)
                time.sleep(0)  # let a parser take the piece on its own
            pipeline.close_stream(stream, clean=True)
    assert pipeline.wait_idle(60)
    pipeline.stop()
    runs = 2 * len(cuts)
    found = counts_and_sums(store, ["cut.a", "cut.b", "cut.c;a=2;z=1"], now, now + 10)
    assert found["cut.a"] == (2 * runs, 41.0 * runs)
    assert found["cut.c;a=2;z=1"] == (runs, -3.0 * runs)
    assert found["cut.b"][0] == 2 * runs  # "-1" means now: the bucket depends on the clock
    totals = counters.totals()
    assert totals.metrics_received == totals.committed_points == 5 * runs
    assert totals.bad_lines == {"extra_fields": runs}


def test_a_last_line_without_newline_counts_only_on_a_clean_close(store: Store) -> None:
    now = int(time.time())
    counters = ReceiverCounters()
    pipeline = make_pipeline(store, counters)
    for name, clean in (("clean.close", True), ("aborted.close", False)):
        stream = Stream(LINE, name, LOGGER)
        pipeline.open_stream(stream)
        pipeline.submit(stream, b"%s 1 %d\n%s 2 %d" % (name.encode(), now, name.encode(), now))
        pipeline.close_stream(stream, clean=clean)
    pipeline.stop()
    found = counts_and_sums(store, ["clean.close", "aborted.close"], now, now + 10)
    assert found["clean.close"] == (2.0, 3.0)
    assert found["aborted.close"] == (1.0, 1.0)


def test_a_slow_store_pauses_the_sender_instead_of_growing_the_buffers(store: Store) -> None:
    """A sender that honours pause (as TCP does) keeps the buffers near their limits."""
    now = int(time.time()) // 10 * 10
    resumed = threading.Event()
    resumed.set()
    pauses = []
    counters = ReceiverCounters()
    receive_queue_bytes, write_queue_points = 256 << 10, 20_000
    pipeline = make_pipeline(
        SlowWriter(store, delay=0.05),
        counters,
        receive_queue_bytes=receive_queue_bytes,
        write_queue_points=write_queue_points,
        write_batch_points=5_000,
        min_parse_bytes=16 << 10,
        on_pause=lambda: (pauses.append(1), resumed.clear()),
        on_resume=resumed.set,
    )
    stream = Stream(LINE, "fast sender", LOGGER)
    pipeline.open_stream(stream)
    line_count, per_chunk = 300_000, 1000
    chunk_bytes = 0
    peak_bytes = peak_points = 0
    for first in range(0, line_count, per_chunk):
        assert resumed.wait(30), "the pipeline never resumed reading"
        chunk = b"".join(
            b"slow.m%d %d %d\n" % (i % 100, i, now) for i in range(first, first + per_chunk)
        )
        chunk_bytes = max(chunk_bytes, len(chunk))
        pipeline.submit(stream, chunk)
        peak_bytes = max(peak_bytes, pipeline.buffered_bytes())
        peak_points = max(peak_points, pipeline.buffered_points())
    pipeline.close_stream(stream, clean=True)
    pipeline.stop()
    assert pauses, "a sender faster than the store was never paused"
    assert peak_bytes <= receive_queue_bytes + chunk_bytes
    # Points already in flight when reading pauses (at most the receive queue's worth) may
    # still be parsed after the pause; nothing beyond that.
    lines_per_byte = per_chunk / chunk_bytes
    assert peak_points <= write_queue_points + (receive_queue_bytes + chunk_bytes) * lines_per_byte
    totals = counters.totals()
    assert totals.dropped == {}
    assert totals.committed_points == line_count
    found = counts_and_sums(store, [f"slow.m{m}" for m in range(100)], now, now + 10)
    assert sum(count for count, _ in found.values()) == line_count
    assert sum(total for _, total in found.values()) == line_count * (line_count - 1) / 2


def test_past_max_cache_size_points_are_dropped_and_counted(store: Store) -> None:
    """UDP cannot be paused: past MAX_CACHE_SIZE waiting points, what arrives is dropped."""
    now = int(time.time())
    counters = ReceiverCounters()
    gate = threading.Event()

    class GatedWriter(SlowWriter):
        def write(self, batch: WriteBatch) -> WriteResult:
            gate.wait(30)
            return self.store.write(batch)

    pipeline = make_pipeline(
        GatedWriter(store, 0), counters, max_cache_size=5_000, min_parse_bytes=1
    )
    stream = Stream(UDP, "udp", LOGGER)
    pipeline.open_stream(stream)
    sent = 0
    for datagram_number in range(200):
        lines = b"".join(b"udp.m%d 1 %d\n" % (i, now) for i in range(100))
        pipeline.submit(stream, lines)
        sent += 100
        if datagram_number % 20 == 0:
            time.sleep(0.02)
    deadline = time.monotonic() + 30
    while pipeline.buffered_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    pipeline.stop()
    totals = counters.totals()
    dropped = totals.dropped.get(DROPPED_CACHE_FULL, 0)
    assert dropped > 0
    assert totals.committed_points + dropped == sent
    assert totals.committed_points <= 5_000 + 5_000  # what waited, plus one write's worth after


def test_write_errors_drop_the_batch_counted_and_the_writer_goes_on(store: Store) -> None:
    now = int(time.time())
    counters = ReceiverCounters()

    class FailingOnce(SlowWriter):
        def write(self, batch: WriteBatch) -> WriteResult:
            self.writes += 1
            if self.writes == 1:
                raise OSError(28, "No space left on device")
            return self.store.write(batch)

    pipeline = make_pipeline(FailingOnce(store, 0), counters)
    stream = Stream(LINE, "peer", LOGGER)
    pipeline.open_stream(stream)
    pipeline.submit(stream, b"first.batch 1 %d\n" % now)
    assert pipeline.wait_idle(10)
    pipeline.submit(stream, b"second.batch 1 %d\n" % now)
    pipeline.stop()
    totals = counters.totals()
    assert totals.errors == 1
    assert totals.dropped == {"write_error": 1}
    assert totals.committed_points == 1
    assert "second.batch" in store and "first.batch" not in store


def test_commands_run_on_the_writer_thread_between_writes(store: Store) -> None:
    counters = ReceiverCounters()
    pipeline = make_pipeline(store, counters)
    seen = []
    pipeline.call_in_writer(lambda: seen.append(threading.current_thread().name))
    assert pipeline.wait_idle(10)
    pipeline.stop()
    assert seen == ["writer"]


def test_self_metrics_are_named_like_carbons_and_count_each_interval(store: Store) -> None:
    counters = ReceiverCounters()
    counters.parsed(10, {"missing_fields": 2})
    counters.written(8, 3, {"nan": 2}, 0.5)
    counters.dropped(DROPPED_CACHE_FULL, 4)
    metrics = SelfMetrics("carbon.agents.host-a.", counters, lambda: 7)
    batch = metrics.batch()
    values = dict(zip(batch.names, batch.values.tolist(), strict=True))
    prefix = "carbon.agents.host-a."
    assert values[prefix + "metricsReceived"] == 10
    assert values[prefix + "committedPoints"] == 8
    assert values[prefix + "pointsPerUpdate"] == 8
    assert values[prefix + "creates"] == 3
    assert values[prefix + "cache.size"] == 7
    assert values[prefix + "badLines.missing_fields"] == 2
    assert values[prefix + "rejected.nan"] == 2
    assert values[prefix + "dropped.cache_full"] == 4
    assert values[prefix + "memUsage"] > 0
    assert prefix + "cpuUsage" in values
    assert store.write(batch).accepted == len(batch)
    again = dict(zip(metrics.batch().names, metrics.batch().values.tolist(), strict=True))
    assert again[prefix + "metricsReceived"] == 0  # per interval, as carbon's
    assert counters.totals().metrics_received == 10


def test_bad_input_is_logged_a_few_times_then_summarised(caplog: pytest.LogCaptureFixture) -> None:
    stream = Stream(LINE, "10.0.0.1:5555", LOGGER)
    with caplog.at_level(logging.WARNING, logger=LOGGER.name):
        for _ in range(40):
            stream.decode(
                b"bad\nworse line here\nok.metric 1 1700000000\n", 1_700_000_000, finish=False
            )
        stream.decode(b"", 1_700_000_000, finish=True)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) <= 8
    assert all("10.0.0.1:5555" in message for message in messages)
    assert "75 more not shown" in messages[-1]
    assert "bad_value 38, missing_fields 37" in messages[-1]


def test_bad_input_log_summarises_periodically_on_long_connections() -> None:
    clock = [0.0]
    records: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test.receiver.periodic")
    logger.addHandler(ListHandler())
    log = BadInputLog("peer:1", logger, clock=lambda: clock[0])
    stream = Stream(LINE, "peer:1", logger)
    for second in range(0, 200):
        clock[0] = float(second)
        log.note(stream.decode(b"x\n", 0, finish=False))
    summaries = [r for r in records if "more not shown" in r]
    assert 2 <= len(summaries) <= 4


def test_udp_senders_get_their_own_stream_and_the_oldest_is_closed_for_a_new_one(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from graphite_istat.receiver import protocols

    monkeypatch.setattr(protocols, "MAX_UDP_SENDERS", 2)
    now = int(time.time())
    counters = ReceiverCounters()
    pipeline = make_pipeline(store, counters)
    receiver = protocols.DatagramReceiver(pipeline, LOGGER, "udp 127.0.0.1:2003")
    senders = [("127.0.0.1", 5001), ("127.0.0.1", 5002), ("::1", 5003)]
    with caplog.at_level(logging.WARNING):
        for i, addr in enumerate(senders):
            receiver.datagramReceived(b"udp.s%d %d %d\nnot a good line at all" % (i, i + 1, now), addr)
        first = receiver.senders.get(senders[0])
        assert list(receiver.senders) == senders[1:]  # the first sender made room for the third
        pipeline.stop()
    assert first is None
    found = counts_and_sums(store, [f"udp.s{i}" for i in range(3)], now, now + 10)
    assert found == {f"udp.s{i}": (1.0, float(i + 1)) for i in range(3)}
    logged = caplog.text
    assert "bad input from 127.0.0.1:5001 (udp 127.0.0.1:2003)" in logged
    assert "bad input from [::1]:5003 (udp 127.0.0.1:2003)" in logged
    assert counters.totals().bad_lines["extra_fields"] == 3
