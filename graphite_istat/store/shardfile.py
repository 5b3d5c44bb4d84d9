"""One shard file: creating it crash-atomically, mapping it, growing it, and numpy views of it.

The byte layout is documented in ``format.py``. This module turns it into
arrays: for every archive a ``stamps`` array of shape (blocks, rows) and one
array per sub-counter of shape (blocks, tiles, block_columns, tile_rows), all
strided views into a single shared memory map of the whole file, so the
compiled passes of ``apply.py`` and ``read.py`` reach every block of a file
through one array per counter. ``ArchiveView`` addresses cells by (block,
row, column) and hides the tiling from everything but those passes. Column bookkeeping
(which columns are in use, their aggregation method and xFilesFactor) lives
here too.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .format import (
    AGGREGATION_METHODS,
    BLOCK_COLUMNS_OFFSET,
    BLOCK_GEN_OFFSET,
    BLOCK_HEADER_STRUCT,
    BLOCK_MAGIC,
    BLOCK_ROLLED_OFFSET,
    COLUMN_BYTES,
    COLUMN_DTYPE,
    HEADER_SIZE,
    TILE_ROWS,
    BlockGeometry,
    CorruptFileError,
    FileHeader,
    Layout,
    column_record,
    pack_header,
    unpack_header,
)
from .kernels import NO_F8, NO_I4, combine_finer

MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class ArchiveView:
    """Arrays of one archive across all blocks of a file.

    ``tiles`` are 4-d views (block, tile, column, row in tile) of each
    counter: the cell (block b, row r, column c) is
    ``tiles[name][b, r // tile_rows, c, r % tile_rows]``. ``flat`` are 1-d
    views of the same memory from block 0's first tile, for gathers and
    scatters of scattered cells by ``flat_index``.
    """

    step: int
    rows: int  # rows in the ring (retention plus spare)
    tile_rows: int
    block_columns: int
    stamps: np.ndarray  # (blocks, rows) int64
    tiles: dict[str, np.ndarray]  # name -> (blocks, tiles, block_columns, tile_rows)
    flat: dict[str, np.ndarray]  # name -> 1-d view
    flat_block_stride: dict[str, int]  # name -> elements from one block to the next

    def flat_index(self, field: str, block: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        tile, within = np.divmod(row, self.tile_rows)
        return (
            block * self.flat_block_stride[field]
            + tile * (self.block_columns * self.tile_rows)
            + col * self.tile_rows
            + within
        )

    def cells(self, field: str, block: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Cells of (block, row, column) triples (broadcast together)."""
        return self.flat[field][self.flat_index(field, block, row, col)]

    def row_cells(self, field: str, blocks: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Every column of (block, row) pairs: shape (pairs, block_columns)."""
        tile, within = np.divmod(rows, self.tile_rows)
        return self.tiles[field][blocks, tile, :, within]


class ShardFile:
    """A mapped shard file. Writable instances are used by the one writer only."""

    def __init__(self, path: Path, header: FileHeader, fd: int, writable: bool) -> None:
        self.path = path
        self.header = header
        self.layout: Layout = header.layout
        self.block_columns = header.block_columns
        self.tile_rows = header.tile_rows
        self.geometry = BlockGeometry.compute(header.layout, header.block_columns, header.tile_rows)
        self.writable = writable
        self._fd = fd
        self._map: mmap.mmap | None = None
        self.nblocks = 0
        self.archives: tuple[ArchiveView, ...] = ()
        self.generations = np.zeros(0, dtype=np.uint64)
        self.rolled_until = np.zeros(0, dtype=np.int64)
        self.columns = np.zeros((0, header.block_columns), dtype=COLUMN_DTYPE)
        self._free: list[int] = []
        self._populate_ok = not writable

    # -- life cycle -------------------------------------------------------

    @classmethod
    def create(
        cls, path: Path, layout: Layout, shard: int, block_columns: int, tile_rows: int = TILE_ROWS
    ) -> ShardFile:
        """Create an empty file (header only) crash-atomically and open it for writing."""
        geometry = BlockGeometry.compute(layout, block_columns, tile_rows)
        header = pack_header(layout, shard, block_columns, tile_rows, geometry.block_bytes)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(header)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
        return cls.open(path, writable=True)

    @classmethod
    def open(cls, path: Path, *, writable: bool) -> ShardFile:
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            data = os.pread(fd, HEADER_SIZE, 0)
            header = unpack_header(str(path), data)
            shard_file = cls(path, header, fd, writable)
            shard_file._map_file()
            if writable:
                shard_file._repair_uninitialised_blocks()
                shard_file._rebuild_free_list()
            return shard_file
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        self.archives = ()
        self.generations = np.zeros(0, dtype=np.uint64)
        self.rolled_until = np.zeros(0, dtype=np.int64)
        self.columns = np.zeros((0, self.block_columns), dtype=COLUMN_DTYPE)
        self._map = None  # views still held elsewhere keep the old map alive
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fsync(self) -> None:
        os.fsync(self._fd)

    # -- mapping ----------------------------------------------------------

    def _blocks_on_disk(self) -> int:
        size = os.fstat(self._fd).st_size
        # A file only ever grows by whole blocks (one ftruncate), so any other
        # size means it was cut.
        if size < HEADER_SIZE or (size - HEADER_SIZE) % self.header.block_bytes:
            raise CorruptFileError(str(self.path), f"truncated: {size} bytes is not the header plus whole blocks")
        return (size - HEADER_SIZE) // self.header.block_bytes

    def refresh(self) -> bool:
        """Remap if another process grew the file; True when it did."""
        if self._blocks_on_disk() != self.nblocks:
            self._map_file()
            return True
        return False

    def _map_file(self) -> None:
        nblocks = self._blocks_on_disk()
        self.nblocks = nblocks
        if nblocks == 0:
            self._map = None
            self.archives = ()
            self.generations = np.zeros(0, dtype=np.uint64)
            self.rolled_until = np.zeros(0, dtype=np.int64)
            self.columns = np.zeros((0, self.block_columns), dtype=COLUMN_DTYPE)
            return
        length = HEADER_SIZE + nblocks * self.header.block_bytes
        access = mmap.ACCESS_WRITE if self.writable else mmap.ACCESS_READ
        mm = mmap.mmap(self._fd, length, access=access)
        if self.writable:
            # Writes land on scattered pages of a sparse file; kernel readahead
            # around each first touch costs far more than the page itself.
            mm.madvise(mmap.MADV_RANDOM)
        self._map = mm
        bb = self.header.block_bytes
        B = self.block_columns
        self.generations = np.ndarray(
            (nblocks,), np.uint64, buffer=mm, offset=HEADER_SIZE + BLOCK_GEN_OFFSET, strides=(bb,)
        )
        self.rolled_until = np.ndarray(
            (nblocks,), np.int64, buffer=mm, offset=HEADER_SIZE + BLOCK_ROLLED_OFFSET, strides=(bb,)
        )
        self.columns = np.ndarray(
            (nblocks, B),
            COLUMN_DTYPE,
            buffer=mm,
            offset=HEADER_SIZE + BLOCK_COLUMNS_OFFSET,
            strides=(bb, COLUMN_BYTES),
        )
        T = self.tile_rows
        views = []
        for spec, offsets in zip(self.layout.archives, self.geometry.archives, strict=True):
            stamps = np.ndarray(
                (nblocks, spec.ring), np.int64, buffer=mm, offset=HEADER_SIZE + offsets.stamps, strides=(bb, 8)
            )
            tiles, flat, flat_stride = {}, {}, {}
            for name, dt in self.layout.fields:
                start = HEADER_SIZE + offsets.fields[name]
                size = dt.itemsize
                tiles[name] = np.ndarray(
                    (nblocks, offsets.tiles, B, T),
                    dt,
                    buffer=mm,
                    offset=start,
                    strides=(bb, B * T * size, T * size, size),
                )
                flat[name] = np.ndarray(((length - start) // size,), dt, buffer=mm, offset=start)
                flat_stride[name] = bb // size
            views.append(ArchiveView(spec.step, spec.ring, T, B, stamps, tiles, flat, flat_stride))
        self.archives = tuple(views)
        # Which tiles of each archive and block are known to have disk space
        # (see ensure_allocated); unknown after a remap.
        self._allocated = [np.zeros(nblocks * o.tiles, dtype=bool) for o in self.geometry.archives]
        # Which tiles of each archive, block and counter this mapping has populated (see prefault).
        self._populated: dict[tuple[int, str], np.ndarray] = {}

    def _tile_spans(self, archive: int, first_tile: int, tiles: int, fields) -> list[tuple[int, int]]:
        """(offset in the block, length) of a run of whole tiles of each of ``fields``."""
        offsets = self.geometry.archives[archive]
        itemsizes = dict(self.layout.fields)
        tile_elements = self.tile_rows * self.block_columns
        return [
            (
                offsets.fields[name] + first_tile * tile_elements * itemsizes[name].itemsize,
                tiles * tile_elements * itemsizes[name].itemsize,
            )
            for name in fields
        ]

    def from_finest(
        self,
        archive: int,
        block: np.ndarray,
        col: np.ndarray,
        bucket: np.ndarray,
        fields: tuple[str, ...] = ("count", "sum", "sumsq", "min", "max", "last"),
    ) -> dict[str, np.ndarray]:
        """Counters of the cells (block, column, bucket of ``archive``) combined from the finest archive.

        What a rollup stores and what a reader shows for a bucket not yet
        rolled up (see "Rollups" in ``format.py``). ``count`` (always made)
        keeps the APPROXIMATE bit; ``last_ts`` is absolute and comes with
        ``last``. Counters not in ``fields`` are not read.
        """
        fine = self.archives[0]
        n = len(block)
        out = {name: np.empty(n, dtype=np.float64) for name in ("sum", "sumsq", "min", "max", "last")}
        out["count"] = np.empty(n, dtype=np.int64)
        out["last_ts"] = np.empty(n, dtype=np.int64)
        with_last = "last" in fine.flat and "last" in fields
        flat, stride = fine.flat, fine.flat_block_stride
        wanted = np.array([name in fields for name in ("sum", "sumsq", "min", "max")])
        combine_finer(
            flat["count"], flat["sum"], flat["sumsq"], flat["min"], flat["max"],
            flat["last"] if with_last else NO_F8, flat["last_offset"] if with_last else NO_I4, with_last,
            wanted, stride["count"], stride["sum"], fine.stamps, fine.step,
            self.layout.archives[archive].step // fine.step, self.tile_rows, self.block_columns, block, col, bucket,
            out["count"], out["sum"], out["sumsq"], out["min"], out["max"], out["last"], out["last_ts"],
        )  # fmt: skip
        return {name: out[name] for name in ("count", *fields, "last_ts") if name in out}

    def prefault(self, archive: int, block: int, first_row: int, rows: int, fields: tuple[str, ...]) -> None:
        """Map the pages of a row range in one call per array before a read copies from them.

        A first read of a block otherwise takes one page fault per 4 KiB page,
        which dominates a cold read. Tiles this mapping has populated once are
        not asked for again. Best effort: kernels without MADV_POPULATE_READ
        (Linux < 5.14) fall back to faulting page by page.
        """
        mm = self._map
        if mm is None or not self._populate_ok:
            return
        first_tile = first_row // self.tile_rows
        end_tile = (first_row + rows - 1) // self.tile_rows + 1
        per_block = self.geometry.archives[archive].tiles
        tiles = slice(block * per_block + first_tile, block * per_block + end_tile)
        missing = []
        for name in fields:
            done = self._populated.get((archive, name))
            if done is None:
                done = self._populated[(archive, name)] = np.zeros(self.nblocks * per_block, dtype=bool)
            if not done[tiles].all():
                missing.append(name)
                done[tiles] = True
        if not missing:
            return
        base = HEADER_SIZE + block * self.header.block_bytes
        spans = [(self.geometry.archives[archive].stamps + first_row * 8, rows * 8)]
        spans += self._tile_spans(archive, first_tile, end_tile - first_tile, missing)
        for offset, length in spans:
            start = base + offset
            aligned = start - start % mmap.PAGESIZE
            try:
                mm.madvise(MADV_POPULATE_READ, aligned, length + (start - aligned))
            except OSError:
                self._populate_ok = False
                return

    def block_magic_ok(self, block: int) -> bool:
        assert self._map is not None
        start = HEADER_SIZE + block * self.header.block_bytes
        magic, number, _ = BLOCK_HEADER_STRUCT.unpack_from(self._map, start)
        return magic == BLOCK_MAGIC and number == block

    def block_is_blank(self, block: int) -> bool:
        assert self._map is not None
        start = HEADER_SIZE + block * self.header.block_bytes
        return self._map[start : start + BLOCK_HEADER_STRUCT.size] == b"\0" * BLOCK_HEADER_STRUCT.size

    def _init_block(self, block: int) -> None:
        assert self._map is not None
        start = HEADER_SIZE + block * self.header.block_bytes
        # The block header and column table are written through the map: give
        # them disk space first, so a full disk is an OSError here, not a SIGBUS.
        os.posix_fallocate(self._fd, start, self.geometry.archives[0].stamps)
        BLOCK_HEADER_STRUCT.pack_into(self._map, start, BLOCK_MAGIC, block, 0)

    def ensure_allocated(self, archive: int, blocks: np.ndarray, rows: np.ndarray) -> None:
        """Give disk space to the tiles of these rows (all counters) before they are written.

        A write through the map into a hole of a sparse file on a full file
        system kills the process with SIGBUS; ``posix_fallocate`` turns that
        into an ``OSError`` (ENOSPC) raised before anything changed. Space is
        claimed a tile at a time and remembered, so a write rarely makes a
        system call here.
        """
        view = self.archives[archive]
        done = self._allocated[archive]
        per_block = self.geometry.archives[archive].tiles
        chunks = np.unique(blocks * per_block + rows // self.tile_rows)
        chunks = chunks[~done[chunks]]
        if not len(chunks):
            return
        stamps_at = self.geometry.archives[archive].stamps
        names = [name for name, _ in self.layout.fields]
        for chunk in chunks.tolist():
            block, tile = divmod(chunk, per_block)
            first = tile * self.tile_rows
            count = min(self.tile_rows, view.rows - first)
            base = HEADER_SIZE + block * self.header.block_bytes
            for offset, length in [(stamps_at + first * 8, count * 8), *self._tile_spans(archive, tile, 1, names)]:
                os.posix_fallocate(self._fd, base + offset, length)
            done[chunk] = True

    def _repair_uninitialised_blocks(self) -> None:
        # A writer killed while changing a block leaves its generation odd;
        # this writer holds the lock now, so nobody is changing it.
        if self.nblocks:
            odd = (self.generations & 1) == 1
            self.generations[odd] += 1
        # A crash between growing the file and writing the new block's header
        # leaves an all-zero block header: finish the job.
        for block in range(self.nblocks):
            if self.block_is_blank(block):
                self._init_block(block)
            elif not self.block_magic_ok(block):
                raise CorruptFileError(str(self.path), f"block {block} has a bad header")

    # -- growth and columns ------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.nblocks * self.block_columns

    def grow(self, blocks: int = 1) -> None:
        """Append ``blocks`` empty blocks (one ftruncate, then their headers)."""
        old = self.nblocks
        os.ftruncate(self._fd, HEADER_SIZE + (old + blocks) * self.header.block_bytes)
        self._map_file()
        for block in range(old, self.nblocks):
            self._init_block(block)
        self._free.extend(range(self.nblocks * self.block_columns - 1, old * self.block_columns - 1, -1))

    def _rebuild_free_list(self) -> None:
        in_use = self.columns["in_use"].reshape(-1) if self.nblocks else np.zeros(0, np.uint8)
        # Lowest columns first: pop() from the end of a descending list.
        self._free = np.flatnonzero(in_use == 0)[::-1].tolist()

    @property
    def free_columns(self) -> int:
        return len(self._free)

    def allocate_column(self, method: str, xff: float) -> int:
        """Claim a free column (growing the file when none is left), record its metadata."""
        if not self._free:
            self.grow()
        column = self._free.pop()
        self.set_column(column, in_use=True, method=method, xff=xff)
        return column

    def set_column(self, column: int, *, in_use: bool, method: str, xff: float) -> None:
        block, col = divmod(column, self.block_columns)
        self.columns[block, col] = column_record(in_use, method, xff)[0]

    def column_info(self, column: int) -> tuple[bool, str, float]:
        block, col = divmod(column, self.block_columns)
        rec = self.columns[block, col]
        method_code = int(rec["method"])
        method = AGGREGATION_METHODS[method_code] if method_code < len(AGGREGATION_METHODS) else "average"
        return bool(rec["in_use"]), method, float(rec["xff"])

    def column_methods(self, columns: np.ndarray) -> tuple[list[str], list[float]]:
        """Aggregation method and xFilesFactor of many columns at once."""
        block, col = np.divmod(np.asarray(columns, dtype=np.int64), self.block_columns)
        records = self.columns[block, col]
        codes = np.minimum(records["method"], len(AGGREGATION_METHODS) - 1)
        names = np.array(AGGREGATION_METHODS)[codes]
        names[records["method"] >= len(AGGREGATION_METHODS)] = "average"
        return names.tolist(), records["xff"].astype(np.float64).tolist()

    def release_column(self, column: int) -> None:
        """Empty a column in every archive and put it back on the free list.

        Only cells with data are written, so the pages a sparse file never had
        stay unallocated.
        """
        block, col = divmod(column, self.block_columns)
        gen = self.generations
        gen[block] += 1
        try:
            for view in self.archives:
                counts = view.tiles["count"][block, :, col, :]  # a view: (tiles, tile_rows)
                counts[counts != 0] = 0
        finally:
            gen[block] += 1
        _, method, xff = self.column_info(column)
        self.set_column(column, in_use=False, method=method, xff=xff)
        self._free.append(column)

    def used_columns(self) -> np.ndarray:
        if not self.nblocks:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.columns["in_use"].reshape(-1))

    def allocated_bytes(self) -> int:
        return os.fstat(self._fd).st_blocks * 512

    def apparent_bytes(self) -> int:
        return os.fstat(self._fd).st_size
