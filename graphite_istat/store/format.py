"""The on-disk format of shard files, documented in one place, with its version.

A storage directory holds::

    store.json          format name and version, shard count, columns per block
    writer.lock         held (flock) by the one writer; names its pid and host
    names.log           the name index (see ``names.py``): metric name -> slot
    undo.log            before-images of the rows the write in progress changes (see ``journal.py``)
    sequences.log       the last sequence applied per source, for exactly-once writes (``journal.py``)
    data/NNNNN.ist      shard files, numbered; a slot is (file number << 32 | column)

Shard file, format version 3
============================
All integers are little-endian. A shard file holds the metrics of one shard
(``crc32(name) % shards``) that share one *layout*: the archives (step, rows)
of their storage schema and whether ``last`` is stored. A block holds
``block_columns`` (B) metric columns; an archive's ring holds its buckets in
*rows* (``bucket // step % ring``). Each counter of an archive is stored in
*tiles* of ``tile_rows`` (T) consecutive rows: a tile holds those T rows of
all B columns, column after column, so inside a tile a metric's T buckets are
contiguous. The cell (row r, column c) of a counter is element
``[r // T][c][r % T]`` of the archive's ``[tiles][B][T]`` array.

Why tiles: a read of one metric over a day at 1 minute touches ceil(1440 / T)
runs of T * 8 bytes per counter instead of 1440 scattered cells, and a read
of a few metrics of a block touches only their runs; a batch of one
timestamp still lands in one tile per block and archive. Files are created
with T = 8 (``TILE_ROWS``): a run of float64 is one cache line, and a tile
of a counter of 128 metrics is 8 KiB, so the tiles a stream of batches
keeps dirty stay small (taller tiles read somewhat faster but multiply the
pages each new bucket touches: see README, "Storage benchmark").

::

    offset 0       file header, HEADER_SIZE (4096) bytes, immutable after creation
    offset 4096    block 0, block_bytes long
    ...            block 1, 2, ... (the file grows by whole blocks)

File header (``HEADER_STRUCT``)::

    0   8s   magic            b"ISTATSHD"
    8   u32  format version   3
    12  u32  shard            shard number of the metrics in this file
    16  u32  block_columns    metric columns per block (B)
    20  u32  flags            bit 0: the ``last`` and ``last_offset`` counters are stored
                              bit 1: the finest bucket keeps only the last point (whisper semantics)
    24  u32  archive count    1..MAX_ARCHIVES
    28  u32  tile_rows        rows per tile (T)
    32  u64  block_bytes      size of one block
    40  MAX_ARCHIVES x (u32 step seconds, u32 rows)   rows: buckets of retention
    168 MAX_ARCHIVES x u32 spare rows                  extra ring rows for points ahead of now
    4092 u32 crc32 of bytes [0, 4092)

The number of blocks is derived from the file size: ``(size - 4096) //
block_bytes``. Growing a file is one ``ftruncate`` (atomic in the file system);
a block whose header is still all zeros after a crash is initialised when a
writer next opens the file, and reads as empty until then. The file header
never changes after the file is created (written to a temporary name, synced,
renamed), so it needs no second copy.

Block (``block_bytes`` long, every region page aligned)::

    0     8s   magic          b"ISTATBLK"
    8     u32  block number
    12    u32  reserved
    16    u64  generation     a seqlock: odd while the writer changes the block
    24    i64  rolled_until   coarse buckets ending at or before it are rolled up (below); 0 = none
    64    B x column record (COLUMN_STRUCT, 16 bytes each):
             u8 in_use, u8 aggregation method code, u8 flags, u8 reserved,
             f32 xFilesFactor, u32 reserved, u32 crc32 of the first 12 bytes
    then for each archive, in file header order, page aligned:
    (an archive's ring has rows + spare rows: the spare ones hold buckets up to
    the store's future limit ahead of now without reusing a row that still
    holds a bucket inside the retention, which would empty it for every
    metric of the block; the ring is stored as ceil(ring / T) whole tiles,
    the rows past the ring in the last tile are never used)
        stamps       i64[ring]            bucket start time held by the row; 0 = never written
        count        u32[tiles][B][T]     bits 0-30: points; bit 31: approximate (see below)
        sum          f64[tiles][B][T]
        sumsq        f64[tiles][B][T]
        min          f64[tiles][B][T]
        max          f64[tiles][B][T]
        last         f64[tiles][B][T]     only with flag bit 0
        last_offset  i32[tiles][B][T]     only with flag bit 0: seconds from bucket start

Version 1 stored each counter time-major (``[ring][B]``), version 2 wrote
every archive on every write (no ``rolled_until``); neither is read by this
version.

Rollups
-------
A coarse archive whose buckets fit in the finest archive's retention with a
finest step to spare (``Layout.rolls_up``) is not written point by point: a
point lands in the finest archive only, and a coarse bucket is *rolled up*
(its cells set to the combination of the finest cells it covers, exactly)
once the writer's clock is a finest step past its end. ``rolled_until`` (R)
says how far a block is rolled up: every coarse bucket B with
``B + step <= R`` is, in every rolling archive. The writer rolls up a
block's ended buckets before it applies points to it, so finest rows are
never reused while a bucket they belong to still waits. Points of a bucket
already rolled up (late ones, and any older than the finest retention) are
merged into the coarse archive as they come, as well as into the finest.

A reader takes a coarse bucket with ``B + step > R`` from the finest archive
(the same combination a rollup would store) and ignores the coarse cells;
other buckets from the coarse cells. R only moves forward and is stored
after the batch that rolled its buckets is committed, so a crash leaves it
behind, never ahead: a bucket it calls waiting is then read from the finest
cells (which still hold it) and rolled up again by the next write. R = 0: no
point was ever applied to the block, nothing waits. Cells an import writes
straight into a coarse bucket that still waits are not read, and its rollup
replaces them where the finest cells hold points.

A cell is *approximate* when its counters were not made from raw points but
estimated from one aggregate value (history imported from whisper's coarser
archives); new raw points merged into it keep it approximate.

A cell (row r, column c) belongs to bucket ``stamps[r]``. ``count == 0`` means
empty; the other counters of an empty cell are meaningless and are overwritten
by the next point. A row whose stamp is older than the bucket a new point maps
to is cleared (its counts set to 0) before the point lands.

Readers never lock. The writer makes a block's generation odd before it changes
any row of the block and even again afterwards; a reader copies what it needs
between two reads of the generation and retries if it was odd or changed (a
seqlock). The order of stores this relies on holds on x86-64 (TSO); on weaker
memory models the generation reads would need barriers.
"""

from __future__ import annotations

import mmap
import struct
import zlib
from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 3
TILE_ROWS = 8  # rows per tile of the files this version creates: one cache line of float64
FILE_MAGIC = b"ISTATSHD"
BLOCK_MAGIC = b"ISTATBLK"
HEADER_SIZE = 4096
PAGE = mmap.PAGESIZE if mmap.PAGESIZE >= 4096 else 4096
MAX_ARCHIVES = 16
FLAG_LAST = 1
FLAG_KEEP_LAST = 2

HEADER_STRUCT = struct.Struct("<8sIIIIIIQ")  # magic, version, shard, B, flags, narchives, tile_rows, block_bytes
ARCHIVE_STRUCT = struct.Struct("<II")  # step, rows
HEADER_CRC_OFFSET = HEADER_SIZE - 4

BLOCK_HEADER_STRUCT = struct.Struct("<8sII")  # magic, block number, reserved
BLOCK_GEN_OFFSET = 16
BLOCK_ROLLED_OFFSET = 24
BLOCK_COLUMNS_OFFSET = 64
COLUMN_STRUCT = struct.Struct("<BBBBfII")  # in_use, method, flags, reserved, xff, reserved, crc
COLUMN_BYTES = COLUMN_STRUCT.size
COLUMN_DTYPE = np.dtype(
    [
        ("in_use", "u1"),
        ("method", "u1"),
        ("flags", "u1"),
        ("reserved", "u1"),
        ("xff", "<f4"),
        ("reserved2", "<u4"),
        ("crc", "<u4"),
    ]
)
assert COLUMN_DTYPE.itemsize == COLUMN_BYTES

# The sub-counters, their dtypes, in the order they are laid out in an archive.
BASE_FIELDS: tuple[tuple[str, np.dtype], ...] = (
    ("count", np.dtype("<u4")),
    ("sum", np.dtype("<f8")),
    ("sumsq", np.dtype("<f8")),
    ("min", np.dtype("<f8")),
    ("max", np.dtype("<f8")),
)
LAST_FIELDS: tuple[tuple[str, np.dtype], ...] = (
    ("last", np.dtype("<f8")),
    ("last_offset", np.dtype("<i4")),
)
COUNT_MAX = (1 << 31) - 1  # points per bucket; more saturate at this value
APPROXIMATE = 1 << 31

# Aggregation methods as stored in column records (carbon's names).
AGGREGATION_METHODS: tuple[str, ...] = (
    "average",
    "sum",
    "last",
    "max",
    "min",
    "avg_zero",
    "absmax",
    "absmin",
)
METHOD_CODES = {name: code for code, name in enumerate(AGGREGATION_METHODS)}


class FormatError(Exception):
    """A storage file is not what the format says it must be."""


class CorruptFileError(FormatError):
    """A file failed a magic, version, size or checksum test; the message names it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _page_align(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


@dataclass(frozen=True, slots=True)
class ArchiveSpec:
    """One retention level of a layout: ``rows`` buckets of ``step`` seconds kept.

    ``spare`` more rows in the ring take buckets ahead of now (see the format).
    """

    step: int
    rows: int
    spare: int = 0

    @property
    def ring(self) -> int:
        return self.rows + self.spare

    @property
    def seconds(self) -> int:
        return self.step * self.rows


@dataclass(frozen=True, slots=True)
class Layout:
    """What decides a shard file's shape and write rule: archives, ``last`` stored, keep-last."""

    archives: tuple[ArchiveSpec, ...]
    with_last: bool
    keep_last: bool = False

    @property
    def key(self) -> str:
        parts = "_".join(f"{a.step}x{a.rows}+{a.spare}" for a in self.archives)
        return parts + ("_last" if self.with_last else "") + ("_keeplast" if self.keep_last else "")

    @property
    def finest_step(self) -> int:
        return self.archives[0].step

    @property
    def fields(self) -> tuple[tuple[str, np.dtype], ...]:
        return BASE_FIELDS + (LAST_FIELDS if self.with_last else ())

    @property
    def max_retention(self) -> int:
        return max(a.seconds for a in self.archives)

    def rolls_up(self, archive: int) -> bool:
        """Whether coarse ``archive`` is rolled up from the finest one instead of written per point.

        It is when the finest archive keeps a whole bucket of it plus the
        rollup's lag (one finest step) and a step of margin, so that a bucket
        is still whole in the finest archive when it is rolled up.
        """
        if archive == 0:
            return False
        finest, spec = self.archives[0], self.archives[archive]
        return spec.step % finest.step == 0 and finest.seconds >= spec.step + 2 * finest.step

    def cell_bytes(self) -> int:
        return sum(dt.itemsize for _, dt in self.fields)


@dataclass(frozen=True, slots=True)
class ArchiveOffsets:
    """Byte offsets, inside a block, of one archive's stamps and counter tile arrays."""

    stamps: int
    fields: dict[str, int]
    tiles: int  # tiles in the archive's ring


@dataclass(frozen=True, slots=True)
class BlockGeometry:
    """Where everything sits inside a block of a given layout, width and tile height."""

    layout: Layout
    block_columns: int
    tile_rows: int
    block_bytes: int
    archives: tuple[ArchiveOffsets, ...]

    @classmethod
    def compute(cls, layout: Layout, block_columns: int, tile_rows: int) -> BlockGeometry:
        pos = _page_align(BLOCK_COLUMNS_OFFSET + block_columns * COLUMN_BYTES)
        archives = []
        for spec in layout.archives:
            stamps = pos
            pos = _page_align(pos + spec.ring * 8)
            tiles = -(-spec.ring // tile_rows)
            offsets = {}
            for name, dt in layout.fields:
                offsets[name] = pos
                pos = _page_align(pos + tiles * tile_rows * block_columns * dt.itemsize)
            archives.append(ArchiveOffsets(stamps, offsets, tiles))
        return cls(layout, block_columns, tile_rows, pos, tuple(archives))


def pack_header(layout: Layout, shard: int, block_columns: int, tile_rows: int, block_bytes: int) -> bytes:
    if not 1 <= len(layout.archives) <= MAX_ARCHIVES:
        raise ValueError(f"a layout has 1 to {MAX_ARCHIVES} archives, not {len(layout.archives)}")
    flags = (FLAG_LAST if layout.with_last else 0) | (FLAG_KEEP_LAST if layout.keep_last else 0)
    head = HEADER_STRUCT.pack(
        FILE_MAGIC, FORMAT_VERSION, shard, block_columns, flags, len(layout.archives), tile_rows, block_bytes
    )
    archives = b"".join(ARCHIVE_STRUCT.pack(a.step, a.rows) for a in layout.archives)
    archives += b"\0" * ((MAX_ARCHIVES - len(layout.archives)) * ARCHIVE_STRUCT.size)
    spares = b"".join(struct.pack("<I", a.spare) for a in layout.archives)
    body = head + archives + spares
    body += b"\0" * (HEADER_CRC_OFFSET - len(body))
    return body + struct.pack("<I", zlib.crc32(body))


@dataclass(frozen=True, slots=True)
class FileHeader:
    """The decoded, verified file header."""

    shard: int
    block_columns: int
    tile_rows: int
    layout: Layout
    block_bytes: int


def unpack_header(path: str, data: bytes) -> FileHeader:
    """Decode and verify a file header; ``CorruptFileError`` names what is wrong."""
    if len(data) < HEADER_SIZE:
        raise CorruptFileError(path, f"truncated: {len(data)} bytes, a header needs {HEADER_SIZE}")
    magic, version, shard, block_columns, flags, narchives, tile_rows, block_bytes = HEADER_STRUCT.unpack_from(
        data, 0
    )
    if magic != FILE_MAGIC:
        raise CorruptFileError(path, f"bad magic {magic!r}, not a graphite-istat shard file")
    (stored_crc,) = struct.unpack_from("<I", data, HEADER_CRC_OFFSET)
    if zlib.crc32(data[:HEADER_CRC_OFFSET]) != stored_crc:
        raise CorruptFileError(path, "header checksum mismatch")
    if version != FORMAT_VERSION:
        raise CorruptFileError(path, f"format version {version}, this program reads {FORMAT_VERSION}")
    if not 1 <= narchives <= MAX_ARCHIVES or block_columns < 1 or tile_rows < 1:
        raise CorruptFileError(
            path, f"implausible header: {narchives} archives, {block_columns} columns, {tile_rows} rows per tile"
        )
    spares_at = HEADER_STRUCT.size + MAX_ARCHIVES * ARCHIVE_STRUCT.size
    archives = tuple(
        ArchiveSpec(
            *ARCHIVE_STRUCT.unpack_from(data, HEADER_STRUCT.size + i * ARCHIVE_STRUCT.size),
            struct.unpack_from("<I", data, spares_at + 4 * i)[0],
        )
        for i in range(narchives)
    )
    layout = Layout(archives, bool(flags & FLAG_LAST), bool(flags & FLAG_KEEP_LAST))
    geometry = BlockGeometry.compute(layout, block_columns, tile_rows)
    if geometry.block_bytes != block_bytes:
        raise CorruptFileError(path, f"block size {block_bytes} does not match its layout ({geometry.block_bytes})")
    return FileHeader(shard, block_columns, tile_rows, layout, block_bytes)


def column_record(in_use: bool, method: str, xff: float, flags: int = 0) -> np.ndarray:
    """One column record as a structured numpy scalar array, checksum filled in."""
    rec = np.zeros(1, dtype=COLUMN_DTYPE)
    rec["in_use"] = 1 if in_use else 0
    rec["method"] = METHOD_CODES[method]
    rec["flags"] = flags
    rec["xff"] = xff
    rec["crc"] = zlib.crc32(rec.tobytes()[:12])
    return rec


def column_record_ok(raw: bytes) -> bool:
    (crc,) = struct.unpack_from("<I", raw, 12)
    return zlib.crc32(raw[:12]) == crc or raw == b"\0" * COLUMN_BYTES
