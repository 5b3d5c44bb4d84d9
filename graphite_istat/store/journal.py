"""Exactly-once writes: the undo journal and the table of applied sequence numbers.

Sub-counters accumulate, so a batch applied twice corrupts count, sum and avg.
A producer that re-sends after a failure (the agent) therefore numbers its
batches, and ``Store.write(batch, source=..., sequence=...)`` applies each
(source, sequence) at most once, and either wholly or not at all with respect
to a crash of the writing process:

1. the journal is started with the batch's (source, sequence);
2. before any cell of an archive is changed, the cells the batch will
   change are copied into the journal (before-images of every counter);
3. when every file is done, (source, sequence) is appended to the sequence
   table -- the commit point -- and the journal is emptied.

The rollups a write makes before its points (``apply.roll_up``) change no
value a reader sees; once they are done the journal is cut back to its
header (a checkpoint), so a failure after it undoes only the points.

On the next writable open, a non-empty journal whose (source, sequence) is
not in the table is a batch interrupted half way: its before-images are
written back, newest first, and the producer's re-send applies it again,
once. Every write is a plain ``write`` to a file, so it is in the page cache
before the mapped cells change: a kill -9 at any instant is covered. An OS
crash is covered as far as the fsync policy got the files to disk.

``undo.log``, version 2 (little-endian)::

    header   8s magic b"ISTATUND", u32 version, u16 source length, source utf-8, u64 sequence, u32 crc32
    records  u32 magic 0x43444E55, u32 file number, u16 archive, u32 cells k, u32 rows taken over s,
             i64[k] cells (block << 40 | element offset in the block's array of a counter,
             the same for every counter), then for each counter of the file's layout in
             layout order its k before-images, then i64[s] blocks, i64[s] rows,
             i64[s] new stamps of the rows taken over, u32 crc32 of the record

A row taken over is one the batch empties for a newer bucket; its old bucket
has left the retention, so undoing the takeover only means emptying the row
for the new bucket again -- no copy of its cells is needed. Version 1
journaled whole rows; a version 1 journal left by a crash is refused by name.

``sequences.log``, version 1: header ``8s b"ISTATSEQ", u32 version, u32 crc32``,
then records ``u16 source length, source utf-8, u64 sequence, u32 crc32``. The
last record of a source holds its latest sequence; a torn tail is ignored.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .format import CorruptFileError
from .kernels import CELL_SHIFT, empty_rows, scatter_cells
from .shardfile import ShardFile

UNDO_NAME = "undo.log"
SEQUENCES_NAME = "sequences.log"
UNDO_MAGIC = b"ISTATUND"
SEQ_MAGIC = b"ISTATSEQ"
UNDO_VERSION = 2
SEQUENCES_VERSION = 1
RECORD_MAGIC = 0x43444E55
RECORD_HEAD = struct.Struct("<IIHII")
SEQ_HEADER = struct.Struct("<8sII")


class SequenceTable:
    """source -> last sequence applied, persisted append-only."""

    def __init__(self, path: Path, fd: int, last: dict[str, int], records: int) -> None:
        self.path = path
        self._fd = fd
        self._last = last
        self._records = records

    @classmethod
    def open(cls, path: Path, *, writable: bool) -> SequenceTable:
        flags = os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY
        if not writable and not path.exists():
            return cls(path, -1, {}, 0)
        fd = os.open(path, flags | os.O_APPEND if writable else flags, 0o644)
        data = _read_all(fd)
        if not data and writable:
            head = SEQ_MAGIC + struct.pack("<I", SEQUENCES_VERSION)
            _write_all(fd, head + struct.pack("<I", zlib.crc32(head)))
            return cls(path, fd, {}, 0)
        last, records, end = _replay_sequences(str(path), data)
        if writable and end < len(data):
            os.ftruncate(fd, end)  # a torn tail from a crash mid-append
        return cls(path, fd, last, records)

    def last(self, source: str) -> int:
        return self._last.get(source, 0)

    def items(self) -> dict[str, int]:
        return dict(self._last)

    def append(self, source: str, sequence: int) -> None:
        raw = source.encode("utf-8")
        body = struct.pack("<H", len(raw)) + raw + struct.pack("<Q", sequence)
        _write_all(self._fd, body + struct.pack("<I", zlib.crc32(body)))
        self._last[source] = sequence
        self._records += 1
        if self._records > 4 * max(len(self._last), 1000):
            self._compact()

    def _compact(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        head = SEQ_MAGIC + struct.pack("<I", SEQUENCES_VERSION)
        out = bytearray(head + struct.pack("<I", zlib.crc32(head)))
        for source, sequence in self._last.items():
            raw = source.encode("utf-8")
            body = struct.pack("<H", len(raw)) + raw + struct.pack("<Q", sequence)
            out += body + struct.pack("<I", zlib.crc32(body))
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        _write_all(fd, bytes(out))
        os.fsync(fd)
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self._records = len(self._last)

    def fsync(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte or raise: a short write (a full disk) must not pass for a record."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"wrote {written} bytes of a journal record")
        view = view[written:]


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def _replay_sequences(path: str, data: bytes) -> tuple[dict[str, int], int, int]:
    if len(data) < SEQ_HEADER.size:
        raise CorruptFileError(path, "truncated header")
    magic, version, crc = SEQ_HEADER.unpack_from(data, 0)
    if magic != SEQ_MAGIC or zlib.crc32(data[:12]) != crc:
        raise CorruptFileError(path, "bad magic or header checksum")
    if version != SEQUENCES_VERSION:
        raise CorruptFileError(path, f"version {version}, expected {SEQUENCES_VERSION}")
    last: dict[str, int] = {}
    pos, records = SEQ_HEADER.size, 0
    while pos + 2 <= len(data):
        (n,) = struct.unpack_from("<H", data, pos)
        end = pos + 2 + n + 8 + 4
        if end > len(data):
            break
        body = data[pos : end - 4]
        (crc,) = struct.unpack_from("<I", data, end - 4)
        if zlib.crc32(body) != crc:
            if end == len(data):
                break  # torn tail
            raise CorruptFileError(path, f"bad record checksum at offset {pos}")
        source = body[2 : 2 + n].decode("utf-8")
        (sequence,) = struct.unpack_from("<Q", body, 2 + n)
        last[source] = max(last.get(source, 0), sequence)
        pos, records = end, records + 1
    return last, records, pos


@dataclass(slots=True)
class UndoRecord:
    file_no: int
    archive: int
    cells: np.ndarray  # int64, as kernels.plan_runs numbers them
    before: dict[str, np.ndarray]  # counter -> before-image per cell
    stale_blocks: np.ndarray
    stale_rows: np.ndarray
    stale_stamps: np.ndarray


class UndoJournal:
    """Before-images of the rows one batch changes, until the batch commits."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._header_bytes = 0

    @classmethod
    def open(cls, path: Path) -> UndoJournal:
        return cls(path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644))

    def pending(self) -> tuple[str, int, bytes] | None:
        """(source, sequence, raw records) of an interrupted batch, or None."""
        data = _read_all(self._fd)
        if not data:
            return None
        header = _parse_undo_header(self.path, data)
        if header is None:
            return None  # the header itself was torn: no row had been touched
        source, sequence, pos = header
        return source, sequence, data[pos:]

    def begin(self, source: str, sequence: int) -> None:
        os.ftruncate(self._fd, 0)
        raw = source.encode("utf-8")
        body = UNDO_MAGIC + struct.pack("<IH", UNDO_VERSION, len(raw)) + raw + struct.pack("<Q", sequence)
        _write_all(self._fd, body + struct.pack("<I", zlib.crc32(body)))
        self._header_bytes = len(body) + 4

    def checkpoint(self) -> None:
        """Keep what the batch changed so far (it must change no value a reader sees); undo only what follows.

        The rollups a write does before its points are such changes (see
        ``apply.roll_up``): the journal drops their records, keeping the header.
        """
        os.ftruncate(self._fd, self._header_bytes)

    def capture(
        self,
        file_no: int,
        shard: ShardFile,
        archive: int,
        cells: np.ndarray,
        before: dict[str, np.ndarray],
        stale_blocks: np.ndarray,
        stale_rows: np.ndarray,
        stale_stamps: np.ndarray,
    ) -> None:
        """Record, before they change, the cells and rows of one archive a batch changes."""
        parts = [
            RECORD_HEAD.pack(RECORD_MAGIC, file_no, archive, len(cells), len(stale_blocks)),
            _le(cells, "<i8"),
        ]
        parts += [_le(before[name], dtype) for name, dtype in shard.layout.fields]
        parts += [_le(array, "<i8") for array in (stale_blocks, stale_rows, stale_stamps)]
        body = b"".join(parts)
        _write_all(self._fd, body + struct.pack("<I", zlib.crc32(body)))

    def commit(self) -> None:
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _le(array: np.ndarray, dtype) -> memoryview:
    return memoryview(np.ascontiguousarray(array, dtype=dtype)).cast("B")


def _parse_undo_header(path: Path, data: bytes) -> tuple[str, int, int] | None:
    if len(data) < 14 or data[:8] != UNDO_MAGIC:
        return None
    (n,) = struct.unpack_from("<H", data, 12)
    end = 14 + n + 8
    if len(data) < end + 4:
        return None
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[:end]) != crc:
        return None
    (version,) = struct.unpack_from("<I", data, 8)
    if version != UNDO_VERSION and len(data) > end + 4:
        raise CorruptFileError(
            str(path),
            f"journal format version {version} holds an interrupted batch, this program reads {UNDO_VERSION}: "
            "open the store once with the release that wrote it to roll the batch back",
        )
    source = data[14 : 14 + n].decode("utf-8")
    (sequence,) = struct.unpack_from("<Q", data, 14 + n)
    return source, sequence, end + 4


def decode_records(raw: bytes, layout_fields_of) -> list[UndoRecord]:
    """Decode consecutive records; ``layout_fields_of(file_no)`` gives the file's fields.

    Stops at the first torn or mismatching record: the batch had not yet
    changed the cells of a record that was not completely written.
    """
    out = []
    pos = 0
    while pos + RECORD_HEAD.size <= len(raw):
        magic, file_no, archive, k, s = RECORD_HEAD.unpack_from(raw, pos)
        if magic != RECORD_MAGIC:
            break
        fields = layout_fields_of(file_no)
        if fields is None:
            break
        size = RECORD_HEAD.size + 8 * k + 24 * s + sum(k * dt.itemsize for _, dt in fields)
        end = pos + size
        if end + 4 > len(raw):
            break
        (crc,) = struct.unpack_from("<I", raw, end)
        if zlib.crc32(raw[pos:end]) != crc:
            break
        at = pos + RECORD_HEAD.size
        cells = np.frombuffer(raw, "<i8", k, at)
        at += 8 * k
        before = {}
        for name, dt in fields:
            before[name] = np.frombuffer(raw, dt, k, at)
            at += k * dt.itemsize
        stale = [np.frombuffer(raw, "<i8", s, at + 8 * s * i) for i in range(3)]
        out.append(UndoRecord(file_no, archive, cells, before, *stale))
        pos = end + 4
    return out


def restore(records: list[UndoRecord], files: dict[int, ShardFile]) -> int:
    """Write before-images back, newest first; returns the cells and rows restored."""
    restored = 0
    for rec in reversed(records):
        shard = files[rec.file_no]
        view = shard.archives[rec.archive]
        blocks = np.unique(np.concatenate((rec.cells >> CELL_SHIFT, rec.stale_blocks)))
        shard.generations[blocks] += 1
        try:
            for name, before in rec.before.items():
                scatter_cells(view.flat[name], view.flat_block_stride[name], rec.cells, before)
            empty_rows(
                view.flat["count"], view.flat_block_stride["count"], shard.block_columns, shard.tile_rows,
                rec.stale_blocks, rec.stale_rows,
            )  # fmt: skip
            view.stamps[rec.stale_blocks, rec.stale_rows] = rec.stale_stamps
        finally:
            shard.generations[blocks] += 1
        restored += len(rec.cells) + len(rec.stale_blocks)
    return restored
