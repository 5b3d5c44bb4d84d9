"""The persistent name index: metric name -> slot, and Graphite's find over the names.

A slot is a non-negative int64 the store hands out (it packs a file number and a
column into it); this module never interprets it. In memory the index is a dict
(``name -> slot``) for the write and read hot paths plus a tree of path levels
for glob matching, so ``servers.*.cpu.*.user`` walks a few branches level by level
the way graphite-web walks whisper's directories instead of running a regex
over every stored name.

On disk it is an append-only log, replayed on open and compacted on request.

Log format, version 1 (all integers little-endian)::

    header, 16 bytes
        0   8  magic            b"GISTNAME"
        8   4  format version   uint32, 1
        12  4  header checksum  uint32, crc32 of bytes 0..11
    records, back to back until the end of the file
        0   1  op               uint8, 1 = add (or re-point), 2 = remove
        1   2  name length      uint16, bytes of the name, 1..65535
        3   n  name             UTF-8
        3+n 8  slot             int64; for a remove, the slot the name had
        11+n 4  checksum        uint32, crc32 of bytes 0..10+n of the record

Replaying applies the records in order. A record that does not fit in the file,
or a bad record (unknown op, zero length, bad checksum, undecodable name) that
ends exactly at the end of the file or is followed only by zero bytes, is a
torn tail left by a crash in the middle of an append: replay stops before it,
a writable open truncates it away and counts it in ``stats`` (a read-only open
leaves it alone and reads past it once the writer has rewritten it). Any other
bad record is corruption and raises ``IndexCorruptError`` with its offset, as
does a bad header. ``verify`` reports the same problems (and a few semantic
ones) as text without raising.

Compaction writes the live entries to ``<log>.compacting``, fsyncs it, renames
it over the log and fsyncs the directory, so a crash leaves either the old log
or the new one (a leftover ``.compacting`` file is deleted by the next writable
open). Readers notice the replacement by the log's inode changing and reload.

Concurrency: one writer process (a writable open takes an exclusive ``flock`` on
the log and raises ``IndexLockedError`` if another writer holds it) and any
number of reader processes calling ``refresh()``. Within a process, ``get``,
``get_many``, ``slots_array``, ``__contains__``, ``find``, ``match`` and
``items`` may run in several threads at once while nothing mutates the index;
``add``, ``remove``, ``flush``, ``compact``, ``refresh``, ``close`` and the
writer's lookups by bytes (``slots_for_write``, ``slots_of_encoded``, which
bring the byte table up to date) must not run concurrently with any other
call (the caller holds a lock or owns the index on one thread).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Final

import numpy as np

from graphite_istat.store.globbing import compile_pattern
from graphite_istat.store.name_table import NameTable, encode_names, join_names
from graphite_istat.store.nametree import LevelTree

MAGIC: Final = b"GISTNAME"
FORMAT_VERSION: Final = 1
HEADER = struct.Struct("<8sII")  # magic, version, crc32 of the first 12 bytes
HEADER_CHECKED_BYTES: Final = 12
RECORD_HEAD = struct.Struct("<BH")  # op, name length
RECORD_SLOT = struct.Struct("<q")
RECORD_CRC = struct.Struct("<I")
RECORD_OVERHEAD: Final = RECORD_HEAD.size + RECORD_SLOT.size + RECORD_CRC.size  # 15 bytes
OP_ADD: Final = 1
OP_REMOVE: Final = 2
MAX_NAME_BYTES: Final = 0xFFFF
MAX_SLOT: Final = 2**63 - 1
COMPACTING_SUFFIX: Final = ".compacting"
_COMPACT_CHUNK_BYTES: Final = 1 << 20
# Below this many names a write's lookup goes through the dict (see ``slots_for_write``).
JOINED_LOOKUP_MIN_NAMES: Final = 512
_MISSING: Final = object()

# Reasons an ``add`` refuses a name; the store counts rejections by these.
REASON_NOT_STR: Final = "not_str"
REASON_EMPTY: Final = "empty"
REASON_NUL: Final = "nul"
REASON_NEWLINE: Final = "newline"
REASON_EMPTY_LEVEL: Final = "empty_level"
REASON_NOT_UTF8: Final = "not_utf8"
REASON_TOO_LONG: Final = "too_long"


class NameIndexError(Exception):
    """Base class of the name index's errors."""


class IndexCorruptError(NameIndexError):
    """The log's header or a record before its tail is damaged."""


class IndexLockedError(NameIndexError):
    """Another process has the log open for writing."""


class InvalidNameError(NameIndexError, ValueError):
    """A metric name the index refuses; ``reason`` is one of the ``REASON_*`` constants."""

    def __init__(self, name: object, reason: str) -> None:
        super().__init__(f"invalid metric name {name!r}: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FoundNode:
    """One path found by ``NameIndex.find``; a path can be a leaf and a branch at once."""

    path: str
    is_leaf: bool
    has_children: bool


@dataclass(slots=True)
class IndexStats:
    """Counters of what the index did since it was opened."""

    records_replayed: int = 0  # records applied from the log (open, refresh, reloads)
    log_records: int = 0  # records in the current log file, including buffered ones
    torn_records_dropped: int = 0  # torn tails truncated by a writable open
    torn_bytes_dropped: int = 0
    incomplete_tail_bytes: int = 0  # read-only: bytes at the end not yet a whole record
    compactions: int = 0
    full_reloads: int = 0  # read-only: reloads after the writer compacted the log


def encode_name(name: str) -> bytes:
    """The UTF-8 bytes of a valid metric name; raises ``InvalidNameError`` otherwise."""
    if not isinstance(name, str):
        raise InvalidNameError(name, REASON_NOT_STR)
    if not name:
        raise InvalidNameError(name, REASON_EMPTY)
    if "\x00" in name:
        raise InvalidNameError(name, REASON_NUL)
    if "\n" in name:
        raise InvalidNameError(name, REASON_NEWLINE)
    if name[0] == "." or name[-1] == "." or ".." in name:
        raise InvalidNameError(name, REASON_EMPTY_LEVEL)
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(name, REASON_NOT_UTF8) from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidNameError(name, REASON_TOO_LONG)
    return encoded


def encode_record(op: int, encoded_name: bytes, slot: int) -> bytes:
    """One log record (see the module docstring)."""
    body = RECORD_HEAD.pack(op, len(encoded_name)) + encoded_name + RECORD_SLOT.pack(slot)
    return body + RECORD_CRC.pack(zlib.crc32(body))


def encode_header() -> bytes:
    start = HEADER.pack(MAGIC, FORMAT_VERSION, 0)[:HEADER_CHECKED_BYTES]
    return start + RECORD_CRC.pack(zlib.crc32(start))


def header_problem(data: bytes) -> str | None:
    """Why ``data`` does not start with a valid header, or ``None`` when it does."""
    if len(data) < HEADER.size:
        return f"file is {len(data)} bytes, shorter than the {HEADER.size}-byte header"
    magic, version, checksum = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        return f"bad magic {magic!r} (not a name index log)"
    if checksum != zlib.crc32(data[:HEADER_CHECKED_BYTES]):
        return "header checksum mismatch"
    if version != FORMAT_VERSION:
        return f"unsupported format version {version} (this code reads {FORMAT_VERSION})"
    return None


@dataclass(slots=True)
class _ScanEnd:
    """Where and why a scan of records stopped."""

    offset: int  # end of the last whole, valid record
    torn_bytes: int = 0  # bytes from ``offset`` to the end of the file forming a torn tail
    corrupt: str | None = None  # why the record at ``offset`` is corrupt (not a tail)


def _scan_records(data: bytes, start: int, end_info: _ScanEnd) -> Iterator[tuple[int, str, int]]:
    """Yield ``(op, name, slot)`` for each valid record of ``data[start:]``.

    Fills ``end_info`` when the generator is exhausted.
    """
    size = len(data)
    offset = start
    head_unpack = RECORD_HEAD.unpack_from
    slot_unpack = RECORD_SLOT.unpack_from
    crc_unpack = RECORD_CRC.unpack_from
    crc32 = zlib.crc32
    while offset < size:
        if offset + RECORD_OVERHEAD > size:
            end_info.offset, end_info.torn_bytes = offset, size - offset
            return
        op, length = head_unpack(data, offset)
        name_end = offset + 3 + length
        record_end = name_end + 12
        if record_end > size:
            end_info.offset, end_info.torn_bytes = offset, size - offset
            return
        problem = None
        if op not in (OP_ADD, OP_REMOVE):
            problem = f"unknown op {op}"
        elif length == 0:
            problem = "empty name"
        elif crc_unpack(data, record_end - 4)[0] != crc32(data[offset : record_end - 4]):
            problem = "record checksum mismatch"
        else:
            try:
                name = data[offset + 3 : name_end].decode("utf-8")
            except UnicodeDecodeError:
                problem = "name is not UTF-8"
        if problem is not None:
            end_info.offset = offset
            if record_end == size or data.count(0, offset) == size - offset:
                end_info.torn_bytes = size - offset
            else:
                end_info.corrupt = problem
            return
        yield op, name, slot_unpack(data, name_end)[0]
        offset = record_end
    end_info.offset = offset


class NameIndex:
    """Metric names mapped to slots, persisted in an append-only log; see the module docstring."""

    def __init__(self, path: str, fd: int, *, writable: bool) -> None:
        self._path = path
        self._fd: int | None = fd
        self._writable = writable
        self._slots: dict[str, int] = {}
        self._tree = LevelTree()
        self._buffer = bytearray()
        self._buffered_records = 0
        self._log_size = 0  # bytes of the log read (reader) or written (writer)
        self._unsynced = False
        self._stats = IndexStats()
        # The names by their bytes, for ``slots_of_encoded``: made on its first
        # call, then kept up to date (additions queued until the next lookup).
        self._byte_table: NameTable | None = None
        self._byte_table_adds: list[tuple[str, int]] = []

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool) -> NameIndex:
        """Open the log at ``path`` and replay it (creating an empty one if writable and missing).

        A writable open takes an exclusive lock on the log, truncates a torn tail
        and deletes an interrupted compaction's temporary file.
        """
        path = os.fspath(path)
        if writable:
            fd = cls._open_for_writing(path)
        else:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        index = cls(path, fd, writable=writable)
        try:
            index._replay_from_start()
        except BaseException:
            index._close_fd()
            raise
        return index

    @staticmethod
    def _open_for_writing(path: str) -> int:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + COMPACTING_SUFFIX)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
            except FileNotFoundError:
                _create_empty_log(path)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise IndexLockedError(f"{path}: another process has it open for writing") from None
            # A compaction may have replaced the file between our open and our lock.
            if _same_file(fd, path):
                return fd
            os.close(fd)

    def _replay_from_start(self) -> None:
        assert self._fd is not None
        data = _read_all(self._fd)
        problem = header_problem(data)
        if problem is not None:
            raise IndexCorruptError(f"{self._path}: {problem}")
        self._log_size = HEADER.size
        self._stats.log_records = 0
        self._apply_log_bytes(data, HEADER.size)

    def _apply_log_bytes(self, data: bytes, start: int, *, file_offset: int = 0) -> int:
        """Apply the records of ``data[start:]``, where ``data[0]`` is at ``file_offset``.

        Stops at a torn tail (truncating it when writable); returns the records applied.
        """
        end_info = _ScanEnd(start)
        applied = 0
        apply_add = self._apply_add
        apply_remove = self._apply_remove
        for op, name, slot in _scan_records(data, start, end_info):
            if op == OP_ADD:
                apply_add(name, slot)
            else:
                apply_remove(name)
            applied += 1
        end = file_offset + end_info.offset
        if end_info.corrupt is not None:
            raise IndexCorruptError(
                f"{self._path}: corrupt record at offset {end}: {end_info.corrupt}"
            )
        self._stats.records_replayed += applied
        self._stats.log_records += applied
        self._log_size = end
        if end_info.torn_bytes and self._writable:
            assert self._fd is not None
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
            self._stats.torn_records_dropped += 1
            self._stats.torn_bytes_dropped += end_info.torn_bytes
        else:
            self._stats.incomplete_tail_bytes = end_info.torn_bytes
        return applied

    # ----------------------------------------------------------------- lookups

    def get(self, name: str) -> int | None:
        return self._slots.get(name)

    def get_many(self, names: Sequence[str]) -> list[int | None]:
        """The slot of each name, ``None`` for unknown names."""
        return list(map(self._slots.get, names))

    def slots_array(self, names: Sequence[str]) -> np.ndarray:
        """The slot of each name as an int64 array, -1 for unknown names (any thread)."""
        return np.fromiter(map(self._slots.get, names, repeat(-1)), dtype=np.int64, count=len(names))

    def slots_for_write(self, names: Sequence[str]) -> np.ndarray:
        """``slots_array`` for the writer's hot path (the writer's thread only: it updates the byte table).

        Many names at once are joined into one buffer of bytes and looked up
        in the compiled table (``slots_of_encoded``): two C calls and one
        compiled pass instead of a dict lookup per name, whose cache misses
        dominate once the dict is large or was pushed out of the caches.
        """
        if self._writable and len(names) >= JOINED_LOOKUP_MIN_NAMES:
            joined = join_names(names)
            if joined is not None:
                return self.slots_of_encoded(*joined)
        return self.slots_array(names)

    def slots_of_encoded(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The slot of each name ``data[starts[i]:ends[i]]`` (UTF-8 bytes), -1 for unknown names.

        The write hot path for names that arrive as bytes (``batch.EncodedNames``):
        one compiled pass (``name_table.py``), no Python string per name. It
        brings the table up to date first, so it is for the writer's thread only.
        """
        if self._byte_table is None:
            self._byte_table = NameTable()
            self._byte_table_adds = list(self._slots.items())
        return self._up_to_date_byte_table().lookup(data, starts, ends)

    def _up_to_date_byte_table(self) -> NameTable:
        table = self._byte_table
        assert table is not None
        if self._byte_table_adds:
            names, slots = zip(*self._byte_table_adds, strict=True)
            table.add(*encode_names(names), np.array(slots, dtype=np.int64))
            self._byte_table_adds = []
        return table

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def items(self) -> Iterator[tuple[str, int]]:
        return iter(self._slots.items())

    @property
    def path(self) -> str:
        return self._path

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def stats(self) -> IndexStats:
        """A snapshot of the counters."""
        return dataclasses.replace(self._stats)

    @property
    def garbage_records(self) -> int:
        """Records in the log that compaction would drop."""
        return self._stats.log_records - len(self._slots)

    # ----------------------------------------------------------------- changes

    def add(self, name: str, slot: int) -> None:
        """Map ``name`` to ``slot`` now; the log record is written by the next ``flush``."""
        self._require_writable()
        encoded = encode_name(name)
        if not 0 <= slot <= MAX_SLOT:
            raise ValueError(f"slot {slot} is not a non-negative int64")
        if self._slots.get(name) == slot:
            return
        self._apply_add(name, slot)
        self._buffer += encode_record(OP_ADD, encoded, slot)
        self._buffered_records += 1
        self._stats.log_records += 1

    def remove(self, name: str) -> int | None:
        """Forget ``name``; returns the slot it had, or ``None`` if it was not there."""
        self._require_writable()
        slot = self._slots.get(name)
        if slot is None:
            return None
        self._apply_remove(name)
        self._buffer += encode_record(OP_REMOVE, name.encode("utf-8"), slot)
        self._buffered_records += 1
        self._stats.log_records += 1
        return slot

    def flush(self, *, fsync: bool) -> None:
        """Append the buffered records in one write; fsync the log if asked."""
        self._require_writable()
        assert self._fd is not None
        if self._buffer:
            try:
                _write_all(self._fd, self._buffer)
            except OSError:
                # Leave no partial record behind: later appends would follow it.
                os.ftruncate(self._fd, self._log_size)
                raise
            self._log_size += len(self._buffer)
            self._buffer.clear()
            self._buffered_records = 0
            self._unsynced = True
        if fsync and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = False

    def compact(self) -> None:
        """Rewrite the log with the live entries only, crash-atomically."""
        self._require_writable()
        temporary = self._path + COMPACTING_SUFFIX
        fd = os.open(
            temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            size = self._write_live_entries(fd)
            os.fsync(fd)
            os.replace(temporary, self._path)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        _fsync_directory(self._path)
        old_fd, self._fd = self._fd, fd
        assert old_fd is not None
        os.close(old_fd)
        self._buffer.clear()
        self._buffered_records = 0
        self._log_size = size
        self._unsynced = False
        self._stats.log_records = len(self._slots)
        self._stats.compactions += 1

    def _write_live_entries(self, fd: int) -> int:
        chunk = bytearray(encode_header())
        written = 0
        for name, slot in self._slots.items():
            chunk += encode_record(OP_ADD, name.encode("utf-8"), slot)
            if len(chunk) >= _COMPACT_CHUNK_BYTES:
                _write_all(fd, chunk)
                written += len(chunk)
                chunk.clear()
        _write_all(fd, chunk)
        return written + len(chunk)

    def refresh(self) -> int:
        """Reader side: apply what the writer appended since the last read; returns records applied.

        After the writer compacted (replaced) the log, the whole new log is
        loaded and then swapped in; the count is then its number of records.
        A writable index has nothing to refresh and returns 0.
        """
        if self._writable:
            return 0
        if self._fd is None:
            raise ValueError("name index is closed")
        try:
            replaced = not _same_file(self._fd, self._path)
        except FileNotFoundError:
            return 0  # between a writer's unlink and rename there is nothing newer to read
        size = os.fstat(self._fd).st_size
        if replaced or size < self._log_size:
            return self._reload()
        if size == self._log_size:
            return 0
        data = _pread_all(self._fd, self._log_size, size - self._log_size)
        return self._apply_log_bytes(data, 0, file_offset=self._log_size)

    def _reload(self) -> int:
        fresh = NameIndex.open(self._path, writable=False)
        assert self._fd is not None
        os.close(self._fd)
        self._fd, fresh._fd = fresh._fd, None
        self._slots = fresh._slots
        self._tree = fresh._tree
        self._byte_table, self._byte_table_adds = None, []
        self._log_size = fresh._log_size
        replayed = fresh._stats.records_replayed
        self._stats.records_replayed += replayed
        self._stats.log_records = fresh._stats.log_records
        self._stats.incomplete_tail_bytes = fresh._stats.incomplete_tail_bytes
        self._stats.full_reloads += 1
        return replayed

    def close(self) -> None:
        """Flush and fsync (when writable) and release the log."""
        if self._fd is None:
            return
        try:
            if self._writable:
                self.flush(fsync=True)
        finally:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> NameIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require_writable(self) -> None:
        if self._fd is None:
            raise ValueError("name index is closed")
        if not self._writable:
            raise PermissionError(f"{self._path}: name index is open read-only")

    # ------------------------------------------------------------ the level tree

    def _apply_add(self, name: str, slot: int) -> None:
        slots = self._slots
        if name not in slots:
            self._tree.add(name)
        slots[name] = slot
        if self._byte_table is not None:
            self._byte_table_adds.append((name, slot))

    def _apply_remove(self, name: str) -> None:
        if self._slots.pop(name, None) is None:
            return
        self._tree.remove(name)
        if self._byte_table is not None:
            self._up_to_date_byte_table().remove(*encode_names([name]))

    # ------------------------------------------------------------------ finding

    def find(self, pattern: str) -> list[FoundNode]:
        """Graphite's ``/metrics/find``: the paths of as many levels as the pattern, sorted.

        Raises ``globbing.GlobError`` for a malformed pattern.
        """
        found = self._tree.find(compile_pattern(pattern), leaves_only=False)
        return [
            FoundNode(path, is_leaf, has_children)
            for path, (is_leaf, has_children) in sorted(found.items())
        ]

    def find_paths(self, pattern: str) -> dict[str, tuple[bool, bool]]:
        """``find`` unsorted, as ``path -> (is_leaf, has_children)``: for callers that order or merge themselves."""
        return self._tree.find(compile_pattern(pattern), leaves_only=False)

    def match(self, pattern: str) -> list[str]:
        """The stored names the pattern matches, sorted."""
        return sorted(self._tree.find(compile_pattern(pattern), leaves_only=True))


# ---------------------------------------------------------------------- checking


def verify(path: str | os.PathLike[str]) -> list[str]:
    """Problems found in the log at ``path`` (empty when it is clean); never raises for content."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as log:
            data = log.read()
    except OSError as error:
        return [f"{path}: cannot read: {error.strerror}"]
    problem = header_problem(data)
    if problem is not None:
        return [f"{path}: {problem}"]
    problems: list[str] = []
    live: dict[str, int] = {}
    end_info = _ScanEnd(HEADER.size)
    offset = HEADER.size
    for op, name, slot in _scan_records(data, HEADER.size, end_info):
        where = f"{path}: record at offset {offset}"
        offset += RECORD_OVERHEAD + len(name.encode("utf-8"))
        if slot < 0:
            problems.append(f"{where}: negative slot {slot} for {name!r}")
        if op == OP_ADD:
            try:
                encode_name(name)
            except InvalidNameError as error:
                problems.append(f"{where}: {error}")
            live[name] = slot
        elif live.pop(name, None) is None:
            problems.append(f"{where}: removes {name!r}, which is not in the index")
    if end_info.corrupt is not None:
        problems.append(f"{path}: corrupt record at offset {end_info.offset}: {end_info.corrupt}")
    elif end_info.torn_bytes:
        problems.append(
            f"{path}: torn tail of {end_info.torn_bytes} bytes at offset {end_info.offset} "
            "(a crash during an append; the next writable open truncates it)"
        )
    names_by_slot: dict[int, str] = {}
    for name, slot in live.items():
        other = names_by_slot.setdefault(slot, name)
        if other != name:
            problems.append(f"{path}: slot {slot} is used by both {other!r} and {name!r}")
    if os.path.exists(path + COMPACTING_SUFFIX):
        problems.append(
            f"{path}{COMPACTING_SUFFIX}: left over from an interrupted compaction "
            "(the next writable open deletes it)"
        )
    return problems


# ------------------------------------------------------------------ file helpers


def _create_empty_log(path: str) -> None:
    """Create a log holding only the header, atomically (no half-written header after a crash)."""
    temporary = f"{path}.new.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, encode_header())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # fails if another process created it meanwhile
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)
    _fsync_directory(path)


def _same_file(fd: int, path: str) -> bool:
    opened = os.fstat(fd)
    current = os.stat(path)
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _read_all(fd: int) -> bytes:
    return _pread_all(fd, 0, os.fstat(fd).st_size)


def _pread_all(fd: int, offset: int, length: int) -> bytes:
    parts = []
    while length > 0:
        part = os.pread(fd, length, offset)
        if not part:
            break
        parts.append(part)
        offset += len(part)
        length -= len(part)
    return b"".join(parts)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
