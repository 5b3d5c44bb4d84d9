"""From received bytes to the store: parser threads, one writer thread, back-pressure.

No Twisted here: the reactor side calls ``submit`` with the bytes it read
and is told, through ``on_pause``/``on_resume``, when to stop and start
reading from its TCP connections.

Stages, each bounded:

1. Unparsed bytes wait in their ``Stream``. A stream is handed to a parser
   thread once it holds ``min_parse_bytes`` (the decoders are several times
   faster per line on big chunks), or at the latest a quarter of the
   visibility interval after its bytes arrived. One parser at a time works
   on a stream and takes all its waiting bytes (up to ``max_parse_bytes``),
   so a busy daemon parses bigger chunks. Parsing releases the GIL for most
   of its work, so several parser threads run in parallel.
2. Parsed points wait for the one writer thread (the store serialises writes
   anyway). It writes once ``write_batch_points`` have gathered, or when the
   oldest has waited half the visibility interval, joining everything it
   has (up to ``max_write_points``) into one ``Store.write``.

Back-pressure: when unparsed bytes reach ``receive_queue_bytes`` or points
awaiting the store reach ``write_queue_points``, ``on_pause`` is called;
``on_resume`` once both are down to a quarter and a half of those. Points
are dropped (and counted, ``cache_full``) only when more than
``max_cache_size`` would wait for the store, or when UDP datagrams (which
cannot be paused) arrive while four times ``receive_queue_bytes`` wait.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from graphite_istat.protocol.result import concat_batches
from graphite_istat.receiver.counters import (
    DROPPED_CACHE_FULL,
    DROPPED_WRITE_ERROR,
    ReceiverCounters,
)
from graphite_istat.receiver.streams import UDP, Stream
from graphite_istat.store.batch import WriteBatch, WriteResult

DEFAULT_MIN_PARSE_BYTES = 256 << 10
DEFAULT_MAX_PARSE_BYTES = 4 << 20
DEFAULT_MAX_WRITE_POINTS = 1_000_000
DROPPED_DECODER_ERROR = "decoder_error"
DROPPED_AFTER_CLOSE = "after_close"
UDP_QUEUE_FACTOR = 4


class BatchWriter(Protocol):
    """What the writer thread writes to: a writable ``Store`` or anything shaped like it."""

    def write(self, batch: WriteBatch) -> WriteResult: ...

    def sync(self) -> None: ...


def count_lines(data: bytes) -> int:
    """Points a chunk of plaintext would have held, for counting drops."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


class Pipeline:
    """Parser threads and one writer thread between the reactor and the store."""

    def __init__(
        self,
        writer: BatchWriter,
        counters: ReceiverCounters,
        *,
        logger: logging.Logger,
        parser_threads: int = 1,
        write_batch_points: int = 200_000,
        max_write_points: int = DEFAULT_MAX_WRITE_POINTS,
        receive_queue_bytes: int = 32 << 20,
        write_queue_points: int = 2_000_000,
        max_cache_size: float = math.inf,
        visibility_interval: float = 1.0,
        fsync_interval: float = 10.0,
        min_parse_bytes: int = DEFAULT_MIN_PARSE_BYTES,
        max_parse_bytes: int = DEFAULT_MAX_PARSE_BYTES,
        on_pause: Callable[[], None] | None = None,
        on_resume: Callable[[], None] | None = None,
    ) -> None:
        if parser_threads < 1:
            raise ValueError(f"parser_threads must be at least 1, not {parser_threads}")
        self._writer = writer
        self._counters = counters
        self._logger = logger
        self._parser_count = parser_threads
        self._write_queue_points = max(1, int(min(write_queue_points, max_cache_size)))
        self._write_batch_points = max(1, min(write_batch_points, self._write_queue_points // 2))
        self._max_write_points = max(max_write_points, self._write_batch_points)
        self._receive_queue_bytes = receive_queue_bytes
        self._max_cache_size = max_cache_size
        self._write_delay = visibility_interval / 2
        self._tick = min(max(visibility_interval / 4, 0.01), 0.25)
        self._fsync_interval = fsync_interval
        self._min_parse_bytes = min_parse_bytes
        self._max_parse_bytes = max(max_parse_bytes, 1)
        self._on_pause = on_pause
        self._on_resume = on_resume

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # parsers wait here
        self._writable = threading.Condition(self._lock)  # the writer waits here
        self._progress = threading.Condition(self._lock)  # ``wait_idle`` waits here
        self._streams: set[Stream] = set()
        self._ready: deque[Stream] = deque()
        self._raw_bytes = 0
        self._parsing = 0
        self._pending: deque[WriteBatch] = deque()
        self._pending_points = 0
        self._oldest_pending = 0.0
        self._writing_points = 0
        self._commands: list[Callable[[], None]] = []
        self._paused = False
        self._parsers_stop = False
        self._writer_stop = False
        self._threads: list[threading.Thread] = []
        self._parsers: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Start the parser threads and the writer thread."""
        if self._threads:
            raise RuntimeError("the pipeline is already started")
        for number in range(self._parser_count):
            thread = threading.Thread(target=self._parse_loop, name=f"parser-{number}", daemon=True)
            self._parsers.append(thread)
        writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)
        self._threads = [*self._parsers, writer]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Close every stream (dropping half lines), parse and write everything received, and
        stop the threads. The caller stops reading first."""
        with self._lock:
            for stream in list(self._streams):
                self._close_locked(stream, clean=False)
            self._parsers_stop = True
            self._work.notify_all()
        for thread in self._parsers:
            thread.join()
        with self._lock:
            self._writer_stop = True
            self._writable.notify_all()
        for thread in self._threads:
            thread.join()

    # -- the reactor side -----------------------------------------------------

    def open_stream(self, stream: Stream) -> None:
        with self._lock:
            self._streams.add(stream)

    def submit(self, stream: Stream, data: bytes) -> None:
        """Bytes read from ``stream``'s sender, in order. Never blocks."""
        if not data:
            return
        with self._lock:
            if stream.closing:
                self._counters.dropped(DROPPED_AFTER_CLOSE, count_lines(data))
                return
            if (
                stream.kind == UDP
                and self._raw_bytes >= UDP_QUEUE_FACTOR * self._receive_queue_bytes
            ):
                self._counters.dropped(DROPPED_CACHE_FULL, count_lines(data))
                return
            if not stream.pending_bytes:
                stream.pending_since = time.monotonic()
            stream.pending.append(data)
            stream.pending_bytes += len(data)
            self._raw_bytes += len(data)
            if not stream.scheduled and stream.pending_bytes >= self._min_parse_bytes:
                self._schedule_locked(stream)
            self._update_flow_locked()

    def close_stream(self, stream: Stream, *, clean: bool) -> None:
        """The sender is gone: parse what is left (a last line without newline too, if ``clean``)."""
        with self._lock:
            self._close_locked(stream, clean=clean)

    def call_in_writer(self, command: Callable[[], None]) -> None:
        """Run ``command`` on the writer thread between two writes (e.g. new storage rules)."""
        with self._lock:
            self._commands.append(command)
            self._writable.notify_all()

    # -- observing ------------------------------------------------------------

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def buffered_points(self) -> int:
        """Parsed points not yet written."""
        with self._lock:
            return self._pending_points + self._writing_points

    def buffered_bytes(self) -> int:
        """Received bytes not yet parsed."""
        with self._lock:
            return self._raw_bytes

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is parsed and written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flush_partial_locked(waited=0.0)
            self._writable.notify_all()
            while not self._idle_locked():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._progress.wait(remaining)
            return True

    # -- internals (the lock held where the name ends in _locked) -------------

    def _idle_locked(self) -> bool:
        return (
            self._raw_bytes == 0
            and self._parsing == 0
            and not self._ready
            and self._pending_points == 0
            and self._writing_points == 0
            and not self._commands
        )

    def _schedule_locked(self, stream: Stream) -> None:
        stream.scheduled = True
        self._ready.append(stream)
        self._work.notify()

    def _close_locked(self, stream: Stream, *, clean: bool) -> None:
        if stream.closing:
            return
        stream.closing = True
        stream.clean_close = clean
        if not stream.scheduled:
            self._schedule_locked(stream)

    def _flush_partial_locked(self, waited: float) -> None:
        """Hand on the streams whose bytes have waited ``waited`` seconds or more."""
        now = time.monotonic()
        for stream in self._streams:
            if (
                stream.pending_bytes
                and not stream.scheduled
                and now - stream.pending_since >= waited
            ):
                self._schedule_locked(stream)

    def _update_flow_locked(self) -> None:
        buffered = self._pending_points + self._writing_points
        if not self._paused:
            if self._raw_bytes >= self._receive_queue_bytes or buffered >= self._write_queue_points:
                self._paused = True
                if self._on_pause is not None:
                    self._on_pause()
        elif (
            self._raw_bytes <= self._receive_queue_bytes // 4
            and buffered <= self._write_queue_points // 2
        ):
            self._paused = False
            if self._on_resume is not None:
                self._on_resume()

    def _take_chunk_locked(self, stream: Stream) -> tuple[list[bytes], bool]:
        taken: list[bytes] = []
        size = 0
        while stream.pending and (
            not taken or size + len(stream.pending[0]) <= self._max_parse_bytes
        ):
            chunk = stream.pending.popleft()
            taken.append(chunk)
            size += len(chunk)
        stream.pending_bytes -= size
        stream.pending_since = time.monotonic()
        return taken, stream.closing and not stream.pending

    def _enqueue_locked(self, batch: WriteBatch) -> None:
        points = len(batch)
        if self._pending_points + self._writing_points + points > self._max_cache_size:
            self._counters.dropped(DROPPED_CACHE_FULL, points)
            return
        if not self._pending:
            self._oldest_pending = time.monotonic()
        self._pending.append(batch)
        self._pending_points += points
        if self._pending_points >= self._write_batch_points:
            self._writable.notify_all()

    # -- parser threads -------------------------------------------------------

    def _parse_loop(self) -> None:
        while True:
            with self._lock:
                while not self._ready and not self._parsers_stop:
                    self._work.wait()
                if not self._ready:
                    return
                stream = self._ready.popleft()
                chunks, finish = self._take_chunk_locked(stream)
                self._parsing += 1
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            batch = self._parse(stream, data, finish)
            with self._lock:
                self._parsing -= 1
                self._raw_bytes -= len(data)
                if finish:
                    stream.finished = True
                    stream.scheduled = False
                    self._streams.discard(stream)
                elif stream.closing or stream.pending_bytes >= self._min_parse_bytes:
                    self._ready.append(stream)
                    self._work.notify()
                else:
                    stream.scheduled = False
                if batch is not None and len(batch):
                    self._enqueue_locked(batch)
                self._update_flow_locked()
                self._progress.notify_all()

    def _parse(self, stream: Stream, data: bytes, finish: bool) -> WriteBatch | None:
        try:
            result = stream.decode(data, int(time.time()), finish=finish)
        except Exception:
            # A decoder bug must not stop the daemon: log it, count the chunk, go on.
            self._logger.exception("decoding %d bytes from %s failed", len(data), stream.peer)
            self._counters.error()
            self._counters.dropped(DROPPED_DECODER_ERROR, count_lines(data))
            return None
        self._counters.parsed(len(result.batch), result.rejected)
        return result.batch

    # -- the writer thread ----------------------------------------------------

    def _write_loop(self) -> None:
        last_write = time.monotonic()
        unsynced = False
        while True:
            with self._lock:
                batches, commands, stop = self._wait_for_writes_locked(last_write, unsynced)
            for command in commands:
                self._run_command(command)
            if batches:
                self._write(batches)
                last_write = time.monotonic()
                unsynced = True
            elif unsynced and time.monotonic() - last_write >= self._fsync_interval:
                self._sync()
                unsynced = False
            with self._lock:
                self._writing_points = 0
                self._update_flow_locked()
                self._progress.notify_all()
                if stop and not self._pending and not self._commands:
                    return

    def _wait_for_writes_locked(
        self, last_write: float, unsynced: bool
    ) -> tuple[list[WriteBatch], list[Callable[[], None]], bool]:
        while True:
            now = time.monotonic()
            self._flush_partial_locked(waited=self._tick)
            due = self._oldest_pending + self._write_delay
            if (
                self._commands
                or self._pending_points >= self._write_batch_points
                or (self._pending and (now >= due or self._writer_stop))
                or self._writer_stop
                or (unsynced and now - last_write >= self._fsync_interval)
            ):
                break
            timeout = self._tick
            if self._pending:
                timeout = min(timeout, max(due - now, 0.0))
            self._writable.wait(timeout)
        commands, self._commands = self._commands, []
        taken: list[WriteBatch] = []
        points = 0
        while self._pending and (
            not taken or points + len(self._pending[0]) <= self._max_write_points
        ):
            batch = self._pending.popleft()
            taken.append(batch)
            points += len(batch)
        self._pending_points -= points
        self._writing_points = points
        return taken, commands, self._writer_stop

    def _write(self, batches: list[WriteBatch]) -> None:
        batch = concat_batches(batches)
        started = time.monotonic()
        try:
            result = self._writer.write(batch)
        except Exception:
            # Whatever the store raises, the writer goes on with the next batch.
            self._logger.exception("writing %d points failed; they are dropped", len(batch))
            self._counters.error()
            self._counters.dropped(DROPPED_WRITE_ERROR, len(batch))
            return
        self._counters.written(
            result.accepted, result.created, result.rejected, time.monotonic() - started
        )

    def _sync(self) -> None:
        try:
            self._writer.sync()
        except OSError:
            self._logger.exception("syncing the store failed")
            self._counters.error()

    def _run_command(self, command: Callable[[], None]) -> None:
        try:
            command()
        except Exception:
            # A failed command (a reload, a self-metrics write) is logged; writing goes on.
            self._logger.exception("a writer-thread task failed")
            self._counters.error()
