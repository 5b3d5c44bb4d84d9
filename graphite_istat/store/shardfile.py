"""One shard file: creating it crash-atomically, mapping it, growing it, and numpy views of it.

The byte layout is documented in ``format.py``. This module turns it into
arrays: for every archive a ``stamps`` array of shape (blocks, rows) and one
array per sub-counter of shape (blocks, rows, block_columns), all strided
views into a single shared memory map of the whole file, so a batch is
applied to a file with a few fancy-indexing operations however many blocks
it spans. Column bookkeeping (which columns are in use, their aggregation
method and xFilesFactor) lives here too.
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
    COLUMN_BYTES,
    COLUMN_DTYPE,
    HEADER_SIZE,
    BlockGeometry,
    CorruptFileError,
    FileHeader,
    Layout,
    column_record,
    pack_header,
    unpack_header,
)

MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14+
ALLOCATION_ROWS = 64  # rows given disk space at a time by ensure_allocated


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class ArchiveView:
    """Arrays of one archive across all blocks of a file.

    ``fields`` are 3-d views (block, row, column). ``flat`` are 1-d views of
    the same memory starting at block 0, row 0, column 0 of each field, for
    fast gathers and scatters: the element of (block, row, column) is at
    ``block * flat_block_stride[field] + row * block_columns + column``.
    """

    step: int
    rows: int  # rows in the ring (retention plus spare)
    stamps: np.ndarray  # (blocks, rows) int64
    fields: dict[str, np.ndarray]  # name -> (blocks, rows, block_columns)
    flat: dict[str, np.ndarray]  # name -> 1-d view
    flat_block_stride: dict[str, int]  # name -> elements from one block to the next

    def flat_index(self, field: str, block: np.ndarray, row: np.ndarray, col: np.ndarray, block_columns: int) -> np.ndarray:
        return block * self.flat_block_stride[field] + row * block_columns + col


class ShardFile:
    """A mapped shard file. Writable instances are used by the one writer only."""

    def __init__(self, path: Path, header: FileHeader, fd: int, writable: bool) -> None:
        self.path = path
        self.header = header
        self.layout: Layout = header.layout
        self.block_columns = header.block_columns
        self.geometry = BlockGeometry.compute(header.layout, header.block_columns)
        self.writable = writable
        self._fd = fd
        self._map: mmap.mmap | None = None
        self.nblocks = 0
        self.archives: tuple[ArchiveView, ...] = ()
        self.generations = np.zeros(0, dtype=np.uint64)
        self.columns = np.zeros((0, header.block_columns), dtype=COLUMN_DTYPE)
        self._free: list[int] = []
        self._populate_ok = not writable

    # -- life cycle -------------------------------------------------------

    @classmethod
    def create(cls, path: Path, layout: Layout, shard: int, block_columns: int) -> ShardFile:
        """Create an empty file (header only) crash-atomically and open it for writing."""
        geometry = BlockGeometry.compute(layout, block_columns)
        header = pack_header(layout, shard, block_columns, geometry.block_bytes)
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
        self.columns = np.ndarray(
            (nblocks, B),
            COLUMN_DTYPE,
            buffer=mm,
            offset=HEADER_SIZE + BLOCK_COLUMNS_OFFSET,
            strides=(bb, COLUMN_BYTES),
        )
        views = []
        for spec, offsets in zip(self.layout.archives, self.geometry.archives, strict=True):
            stamps = np.ndarray(
                (nblocks, spec.ring), np.int64, buffer=mm, offset=HEADER_SIZE + offsets.stamps, strides=(bb, 8)
            )
            fields, flat, flat_stride = {}, {}, {}
            for name, dt in self.layout.fields:
                start = HEADER_SIZE + offsets.fields[name]
                fields[name] = np.ndarray(
                    (nblocks, spec.ring, B), dt, buffer=mm, offset=start, strides=(bb, B * dt.itemsize, dt.itemsize)
                )
                flat[name] = np.ndarray(((length - start) // dt.itemsize,), dt, buffer=mm, offset=start)
                flat_stride[name] = bb // dt.itemsize
            views.append(ArchiveView(spec.step, spec.ring, stamps, fields, flat, flat_stride))
        self.archives = tuple(views)
        # Which ALLOCATION_ROWS-row chunks of each archive and block are known
        # to have disk space (see ensure_allocated); unknown after a remap.
        self._chunks_per_block = [-(-v.rows // ALLOCATION_ROWS) for v in views]
        self._allocated = [np.zeros(nblocks * c, dtype=bool) for c in self._chunks_per_block]

    def prefault(self, archive: int, block: int, first_row: int, rows: int, fields: tuple[str, ...]) -> None:
        """Map the pages of a row range in one call per array before a read copies from them.

        A first read of a block otherwise takes one page fault per 4 KiB page,
        which dominates a cold read. Best effort: kernels without
        MADV_POPULATE_READ (Linux < 5.14) fall back to faulting page by page.
        """
        mm = self._map
        if mm is None or not self._populate_ok:
            return
        base = HEADER_SIZE + block * self.header.block_bytes
        offsets = self.geometry.archives[archive]
        spans = [(offsets.stamps + first_row * 8, rows * 8)]
        itemsizes = dict(self.layout.fields)
        for name in fields:
            size = itemsizes[name].itemsize * self.block_columns
            spans.append((offsets.fields[name] + first_row * size, rows * size))
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
        """Give disk space to the pages of these rows (all counters) before they are written.

        A write through the map into a hole of a sparse file on a full file
        system kills the process with SIGBUS; ``posix_fallocate`` turns that
        into an ``OSError`` (ENOSPC) raised before anything changed. Space is
        claimed ALLOCATION_ROWS rows at a time and remembered, so a write
        rarely makes a system call here.
        """
        view = self.archives[archive]
        done = self._allocated[archive]
        chunks = np.unique(blocks * self._chunks_per_block[archive] + rows // ALLOCATION_ROWS)
        chunks = chunks[~done[chunks]]
        if not len(chunks):
            return
        offsets = self.geometry.archives[archive]
        itemsizes = [(offsets.stamps, 8)] + [
            (offsets.fields[name], dt.itemsize * self.block_columns) for name, dt in self.layout.fields
        ]
        for chunk in chunks.tolist():
            block, first = divmod(chunk, self._chunks_per_block[archive])
            first *= ALLOCATION_ROWS
            count = min(ALLOCATION_ROWS, view.rows - first)
            base = HEADER_SIZE + block * self.header.block_bytes
            for region, row_bytes in itemsizes:
                os.posix_fallocate(self._fd, base + region + first * row_bytes, count * row_bytes)
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
                counts = view.fields["count"][block, :, col]
                rows = np.flatnonzero(counts)
                view.fields["count"][block, rows, col] = 0
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
