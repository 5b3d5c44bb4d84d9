"""The on-disk spool of one destination: every batch, numbered, until the server acknowledges it.

The agent writes every batch here before it is sent, so a kill -9 of the
agent loses only points not yet handed to the spool (those received in the
last ``FLUSH_INTERVAL``). Batches are read back in sequence order for
sending: from memory while the sender keeps up (the newest records stay
cached up to ``memory_bytes``), from disk when it does not (a replay).
Acknowledged segments are deleted; when the spool outgrows ``max_bytes``,
its oldest segments are deleted and their unacknowledged points counted
as dropped (``spool_full``).

Directory layout (one directory per destination)::

    state                    the spool's source and how far it got (below)
    <first sequence>.seg     segments, 20 digits, oldest first; the newest is appended to

Segment, version 1 (little-endian)::

    header  := magic 8 bytes b"GISPOOL1", version u32 = 1
    records := BATCH frames of the acknowledged protocol (``protocol.ack_frames``),
               one after another: each has its own version, length and crc32

Sequences are consecutive within the spool (segments are only ever removed
whole, from the front), so a segment covers ``first .. last`` exactly. A torn
tail (a frame cut short by a crash) is cut off when the spool is opened; a
frame that fails its checksum when read back ends its segment, and the
points of the rest of the segment are counted as ``spool_corrupt``.

State, version 1 (written to ``state.tmp``, then renamed over ``state``)::

    magic 8 bytes b"GISTATE1", version u32, acknowledged u64, assigned u64,
    source length u16, source utf-8, crc32 u32 of everything before it

``assigned`` is the highest sequence ever given out. The state is written
before any segment is deleted, so the next sequence (one above the highest
of ``assigned`` and every segment's last) is always new. ``source`` is the
agent id plus a random epoch given when the spool is created: a spool that
is lost and created anew numbers from 1 under a new source, which the server
has not seen.

Every method takes the spool's lock; disk work happens on the calling
thread, which is never the reactor's.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from graphite_istat.agent.counters import (
    DROPPED_SPOOL_CORRUPT,
    DROPPED_SPOOL_FULL,
    AgentCounters,
)
from graphite_istat.protocol.ack_frames import (
    BATCH_PREFIX_BYTES,
    HEADER_BYTES,
    AckProtocolError,
    batch_info,
    batch_numbers,
    check_body,
    parse_header,
)

SEGMENT_MAGIC = b"GISPOOL1"
STATE_MAGIC = b"GISTATE1"
VERSION = 1
SEGMENT_HEADER = struct.Struct("<8sI")
STATE_HEAD = struct.Struct("<8sIQQH")
_CRC = struct.Struct("<I")
SEGMENT_SUFFIX = ".seg"
STATE_NAME = "state"
# Enough of a BATCH frame to know its sequence and points: header and body prefix.
_PEEK_BYTES = HEADER_BYTES + BATCH_PREFIX_BYTES

DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MEMORY_BYTES = 32 << 20
MAX_SEGMENT_BYTES = 16 << 20
MIN_SEGMENT_BYTES = 64 << 10


class SpoolError(Exception):
    """The spool directory cannot be used (unreadable state, not a spool)."""


class SpoolRecord(NamedTuple):
    """One batch as sent: its sequence, its points, its frame, and whether it came from disk."""

    sequence: int
    points: int
    frame: bytes
    from_disk: bool


@dataclass(slots=True)
class _Segment:
    path: Path
    first: int
    last: int
    points: int
    size: int


@dataclass(slots=True)
class _ReadCursor:
    """Where the last disk read stopped, so the next one goes on from there."""

    path: Path
    offset: int
    next_sequence: int
    points_read: int


def _write_all(file: BinaryIO, data: bytes) -> None:
    """``write`` until all of ``data`` is written: an unbuffered write may be short (full disk)."""
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(f"no progress writing {len(view)} bytes to {file.name}")
        view = view[written:]


def segment_bytes_for(max_bytes: int) -> int:
    """Segments of an eighth of the spool, between 64 KiB and 16 MiB."""
    return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_bytes // 8))


class DestinationSpool:
    """The numbered batches for one destination, on disk and (the newest) in memory."""

    def __init__(
        self,
        directory: Path,
        *,
        agent_id: str,
        counters: AgentCounters,
        logger: logging.Logger,
        max_bytes: int = DEFAULT_MAX_BYTES,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
        fsync: bool = False,
    ) -> None:
        """Nothing is read here: call ``open`` (on a thread that may do disk work)."""
        self.directory = directory
        self._agent_id = agent_id
        self._counters = counters
        self._logger = logger
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes_for(max_bytes)
        self._memory_bytes = memory_bytes
        self._fsync = fsync
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._file: BinaryIO | None = None  # the newest segment, open for appending
        self._recent: deque[SpoolRecord] = deque()
        self._recent_bytes = 0
        self._cursor: _ReadCursor | None = None
        self._listeners: list[Callable[[], None]] = []
        self.source = ""
        self.acknowledged = 0
        self._assigned = 0
        self._total_bytes = 0
        self._opened = False

    # -- opening and closing --------------------------------------------------

    def open(self) -> None:
        """Read the state, scan the segments (cutting torn tails), be ready to append."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            state = self._read_state()
            for path in sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}")):
                segment = self._scan_segment(path)
                if segment is None:
                    path.unlink()
                    continue
                self._segments.append(segment)
            if state is not None:
                self.source, self.acknowledged, self._assigned = state
            else:
                self.source = self._source_from_segments() or self._new_source()
            if self._segments:
                self._assigned = max(self._assigned, self._segments[-1].last)
            self._total_bytes = sum(segment.size for segment in self._segments)
            self._drop_acknowledged_locked()
            self._write_state_locked()
            self._opened = True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._opened:
                self._write_state_locked()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` is called (on the appending thread) after every append."""
        self._listeners.append(listener)

    # -- observing ------------------------------------------------------------

    @property
    def next_sequence(self) -> int:
        with self._lock:
            return self._assigned + 1

    def total_bytes(self) -> int:
        with self._lock:
            return self._total_bytes

    def unacknowledged_points(self) -> int:
        """Points of the segments holding anything above the acknowledged sequence (about)."""
        with self._lock:
            return sum(s.points for s in self._segments if s.last > self.acknowledged)

    def segment_count(self) -> int:
        with self._lock:
            return len(self._segments)

    # -- appending (the one writing thread) ------------------------------------

    def append(self, points: int, encode: Callable[[int], bytes]) -> int:
        """Number a batch, ``encode(sequence)`` it into a BATCH frame, spool it; its sequence."""
        with self._lock:
            sequence = self._assigned + 1
        frame = encode(sequence)
        with self._lock:
            self._assigned = sequence
            file = self._file
            if file is None or self._segments[-1].size >= self.segment_bytes:
                file = self._start_segment_locked(sequence)
            try:
                _write_all(file, frame)
                if self._fsync:
                    os.fsync(file.fileno())
            except OSError:
                self._abandon_newest_locked()
                raise
            segment = self._segments[-1]
            segment.last = sequence
            segment.points += points
            segment.size += len(frame)
            self._total_bytes += len(frame)
            self._remember_locked(SpoolRecord(sequence, points, frame, False))
            self._enforce_limit_locked()
        self._counters.spooled(points)
        for listener in self._listeners:
            listener()
        return sequence

    def _start_segment_locked(self, first: int) -> BinaryIO:
        if self._file is not None:
            self._file.close()
        path = self.directory / f"{first:020d}{SEGMENT_SUFFIX}"
        file = open(path, "wb", buffering=0)
        header = SEGMENT_HEADER.pack(SEGMENT_MAGIC, VERSION)
        file.write(header)
        self._file = file
        self._segments.append(_Segment(path, first, first - 1, 0, len(header)))
        self._total_bytes += len(header)
        return file

    def _abandon_newest_locked(self) -> None:
        """After a failed write: appends go on in a new segment; an empty one is removed."""
        if self._file is not None:
            self._file.close()
            self._file = None
        newest = self._segments[-1]
        if newest.last < newest.first:
            self._remove_segment_locked(newest)

    def _remember_locked(self, record: SpoolRecord) -> None:
        self._recent.append(record)
        self._recent_bytes += len(record.frame)
        while self._recent_bytes > self._memory_bytes and len(self._recent) > 1:
            self._recent_bytes -= len(self._recent.popleft().frame)

    def _enforce_limit_locked(self) -> None:
        while self._total_bytes > self.max_bytes and len(self._segments) > 1:
            segment = self._segments[0]
            lost = self._points_above(segment, self.acknowledged)
            self._remove_segment_locked(segment)
            if lost:
                self._counters.dropped(DROPPED_SPOOL_FULL, lost)
                self._logger.warning(
                    "spool %s full (%d bytes): dropped the oldest %d points (sequences %d-%d)",
                    self.directory,
                    self.max_bytes,
                    lost,
                    max(segment.first, self.acknowledged + 1),
                    segment.last,
                )

    # -- reading for sending ----------------------------------------------------

    def read(
        self, after: int, max_bytes: int, max_disk_points: int | None = None
    ) -> list[SpoolRecord]:
        """Records with sequences above ``after``, in order, about ``max_bytes`` (at least one);
        from disk, about ``max_disk_points`` at most (a rate-limited replay's next share)."""
        with self._lock:
            if self._recent and self._recent[0].sequence <= after + 1:
                return self._read_memory_locked(after, max_bytes)
            records: list[SpoolRecord] = []
            size = 0
            if max_disk_points is not None:
                max_bytes = min(max_bytes, self._bytes_for_points_locked(max_disk_points))
            while size < max_bytes:
                segment = self._segment_after_locked(after)
                if segment is None:
                    break
                if self._recent and segment.first >= self._recent[0].sequence:
                    break  # the rest is in memory: the next call takes it from there
                more, cut = self._read_disk_locked(segment, after, max_bytes - size)
                if not more:
                    if cut:
                        continue  # the rest of the segment was corrupt and is gone: look again
                    break
                records.extend(more)
                size += sum(len(r.frame) for r in more)
                after = more[-1].sequence
            if not records and self._recent and self._recent[-1].sequence > after:
                return self._read_memory_locked(after, max_bytes)
            return records

    def _bytes_for_points_locked(self, points: int) -> int:
        """About the bytes of spooled records holding ``points`` (the spool's average)."""
        held = sum(segment.points for segment in self._segments)
        if not held:
            return 1
        per_point = self._total_bytes / held
        return max(1, int(points * per_point))

    def _read_memory_locked(self, after: int, max_bytes: int) -> list[SpoolRecord]:
        start = max(0, after + 1 - self._recent[0].sequence)
        records: list[SpoolRecord] = []
        size = 0
        for index in range(start, len(self._recent)):
            record = self._recent[index]
            if records and size + len(record.frame) > max_bytes:
                break
            records.append(record)
            size += len(record.frame)
        return records

    def _segment_after_locked(self, after: int) -> _Segment | None:
        for segment in self._segments:
            if segment.last > after:
                return segment
        return None

    def _read_disk_locked(
        self, segment: _Segment, after: int, max_bytes: int
    ) -> tuple[list[SpoolRecord], bool]:
        """Records of ``segment`` above ``after``; True when a corrupt record cut the segment."""
        wanted = max(after + 1, segment.first)
        cursor = self._cursor
        if cursor is None or cursor.path != segment.path or cursor.next_sequence != wanted:
            cursor = _ReadCursor(segment.path, SEGMENT_HEADER.size, segment.first, 0)
        records: list[SpoolRecord] = []
        size = 0
        with open(segment.path, "rb") as file:
            file.seek(cursor.offset)
            while cursor.next_sequence <= segment.last and (not records or size < max_bytes):
                try:
                    head = file.read(HEADER_BYTES)
                    header = parse_header(head) if len(head) == HEADER_BYTES else None
                    if header is None:
                        raise AckProtocolError("frame header cut short")
                    if cursor.next_sequence < wanted:
                        sequence, points = batch_numbers(file.read(BATCH_PREFIX_BYTES))
                        if sequence != cursor.next_sequence:
                            raise AckProtocolError("unexpected sequence in the spool")
                        file.seek(header.length - BATCH_PREFIX_BYTES, os.SEEK_CUR)
                        cursor.points_read += points
                    else:
                        body = file.read(header.length)
                        if len(body) != header.length:
                            raise AckProtocolError("frame body cut short")
                        check_body(header, head, body)
                        info = batch_info(body)
                        if info.sequence != cursor.next_sequence:
                            raise AckProtocolError("unexpected sequence in the spool")
                        frame = head + body
                        records.append(SpoolRecord(info.sequence, info.points, frame, True))
                        size += len(frame)
                        cursor.points_read += info.points
                except AckProtocolError as error:
                    self._cut_corrupt_locked(segment, cursor, error)
                    self._cursor = None
                    return records, True
                cursor.offset = file.tell()
                cursor.next_sequence += 1
        self._cursor = cursor
        return records, False

    def _cut_corrupt_locked(self, segment: _Segment, cursor: _ReadCursor, error: Exception) -> None:
        """A record that fails its checks ends its segment: the rest is lost, and counted."""
        lost = max(0, segment.points - cursor.points_read)
        self._logger.error(
            "spool %s: %s in %s at byte %d: sequences %d-%d (about %d points) are lost",
            self.directory,
            error,
            segment.path.name,
            cursor.offset,
            cursor.next_sequence,
            segment.last,
            lost,
        )
        self._counters.dropped(DROPPED_SPOOL_CORRUPT, lost)
        if segment is self._segments[-1]:
            # The newest: appends go on in a fresh segment after the corrupt one.
            if self._file is not None:
                self._file.close()
                self._file = None
        removed_from = cursor.next_sequence
        lost_through = segment.last
        if removed_from <= segment.first:
            self._remove_segment_locked(segment)
        else:
            with open(segment.path, "r+b") as file:
                file.truncate(cursor.offset)
            self._total_bytes -= segment.size - cursor.offset
            segment.size = cursor.offset
            segment.last = removed_from - 1
            segment.points = cursor.points_read
        # Copies of the lost records still in memory go too: they are counted as lost.
        while self._recent and self._recent[0].sequence <= lost_through:
            self._recent_bytes -= len(self._recent.popleft().frame)

    # -- acknowledging ----------------------------------------------------------

    def acknowledge(self, sequence: int) -> None:
        """Everything up to ``sequence`` is delivered: forget it, delete what is wholly done."""
        with self._lock:
            if sequence <= self.acknowledged:
                return
            if sequence > self._assigned:
                # The server knows this source further than the spool does (its state was
                # lost): number on above it, or new batches would count as duplicates.
                self._logger.warning(
                    "spool %s: the server acknowledged %d, above the %d given out",
                    self.directory,
                    sequence,
                    self._assigned,
                )
                self._assigned = sequence
            self.acknowledged = sequence
            while self._recent and self._recent[0].sequence <= sequence:
                self._recent_bytes -= len(self._recent.popleft().frame)
            self._drop_acknowledged_locked()

    def _drop_acknowledged_locked(self) -> None:
        done = [s for s in self._segments if s.last <= self.acknowledged]
        if not done:
            return
        self._write_state_locked()
        for segment in done:
            self._remove_segment_locked(segment)

    def _remove_segment_locked(self, segment: _Segment) -> None:
        if segment is self._segments[-1] and self._file is not None:
            self._file.close()
            self._file = None
        self._segments.remove(segment)
        self._total_bytes -= segment.size
        if self._cursor is not None and self._cursor.path == segment.path:
            self._cursor = None
        try:
            segment.path.unlink()
        except FileNotFoundError:
            pass
        while self._recent and self._recent[0].sequence <= segment.last:
            self._recent_bytes -= len(self._recent.popleft().frame)

    def _points_above(self, segment: _Segment, sequence: int) -> int:
        """Points of ``segment``'s records numbered above ``sequence`` (headers only)."""
        if segment.first > sequence:
            return segment.points
        if segment.last <= sequence:
            return 0
        points = 0
        with open(segment.path, "rb") as file:
            file.seek(SEGMENT_HEADER.size)
            while True:
                peek = file.read(_PEEK_BYTES)
                if len(peek) < _PEEK_BYTES:
                    return points
                try:
                    header = parse_header(peek)
                    record_sequence, record_points = batch_numbers(peek[HEADER_BYTES:])
                except AckProtocolError:
                    return points
                if record_sequence > sequence:
                    points += record_points
                file.seek(header.length - (_PEEK_BYTES - HEADER_BYTES), os.SEEK_CUR)

    # -- state and scanning -------------------------------------------------------

    def _new_source(self) -> str:
        return f"{self._agent_id}/{secrets.token_hex(4)}"

    def _source_from_segments(self) -> str | None:
        for segment in self._segments:
            with open(segment.path, "rb") as file:
                file.seek(SEGMENT_HEADER.size)
                peek = file.read(HEADER_BYTES + 4096)
            try:
                parse_header(peek)
                return batch_info(peek[HEADER_BYTES:]).source
            except (AckProtocolError, struct.error):
                continue
        return None

    def _read_state(self) -> tuple[str, int, int] | None:
        path = self.directory / STATE_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            magic, version, acknowledged, assigned, length = STATE_HEAD.unpack_from(data)
            end = STATE_HEAD.size + length
            (crc,) = _CRC.unpack_from(data, end)
            if magic != STATE_MAGIC or version != VERSION or zlib.crc32(data[:end]) != crc:
                raise ValueError("bad magic, version or checksum")
            source = data[STATE_HEAD.size : end].decode("utf-8")
        except (struct.error, ValueError) as error:
            self._logger.error(
                "spool %s: state unreadable (%s): rebuilt from the segments", self.directory, error
            )
            return None
        return source, acknowledged, assigned

    def _write_state_locked(self) -> None:
        raw = self.source.encode("utf-8")
        body = STATE_HEAD.pack(STATE_MAGIC, VERSION, self.acknowledged, self._assigned, len(raw))
        body += raw
        data = body + _CRC.pack(zlib.crc32(body))
        temporary = self.directory / (STATE_NAME + ".tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            if self._fsync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, self.directory / STATE_NAME)

    def _scan_segment(self, path: Path) -> _Segment | None:
        """The segment's range and points; a torn or corrupt tail is cut off (and counted)."""
        try:
            first = int(path.name[: -len(SEGMENT_SUFFIX)])
        except ValueError:
            raise SpoolError(f"{path}: not a spool segment name") from None
        size = path.stat().st_size
        points = 0
        last = first - 1
        with open(path, "r+b") as file:
            header = file.read(SEGMENT_HEADER.size)
            if len(header) < SEGMENT_HEADER.size:
                return None
            magic, version = SEGMENT_HEADER.unpack(header)
            if magic != SEGMENT_MAGIC or version != VERSION:
                raise SpoolError(f"{path}: not a version {VERSION} spool segment")
            offset = SEGMENT_HEADER.size
            problem = ""
            while offset < size:
                peek = file.read(_PEEK_BYTES)
                if len(peek) < _PEEK_BYTES:
                    problem = "a torn record"
                    break
                try:
                    frame_header = parse_header(peek)
                    sequence, record_points = batch_numbers(peek[HEADER_BYTES:])
                except AckProtocolError as error:
                    problem = str(error)
                    break
                end = offset + frame_header.frame_bytes
                if end > size:
                    problem = "a torn record"
                    break
                if sequence != last + 1:
                    problem = f"sequence {sequence} after {last}"
                    break
                last = sequence
                points += record_points
                offset = end
                file.seek(offset)
            if offset < size:
                # A torn tail held no acknowledged-to-the-client points yet; a corrupt
                # one's points cannot be read, so only its bytes can be reported.
                self._logger.warning(
                    "spool %s: %s at byte %d of %s: %d bytes cut off",
                    self.directory,
                    problem,
                    offset,
                    path.name,
                    size - offset,
                )
                file.truncate(offset)
        if last < first:
            return None
        return _Segment(path, first, last, points, offset)
