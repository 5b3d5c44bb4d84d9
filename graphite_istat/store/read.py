"""Reading sub-counters of many columns of one shard file over a time range, consistently.

The archive and the time grid are chosen as whisper's ``fetch`` chooses them
(the finest archive whose retention covers ``from``; points at
``from - from % step + step`` up to ``until`` likewise), so a range read from
graphite-istat lines up with the same range read from a .wsp file.

Reads take no lock: they copy what they need between two reads of each
block's generation (see the seqlock in ``format.py``) and retry if a writer
was changing one of the blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .format import APPROXIMATE, COUNT_MAX, Layout
from .shardfile import ArchiveView, ShardFile

# Map a block's pages in one call when at least 1/DENSE_FRACTION of its columns are wanted.
DENSE_FRACTION = 8
# Up to this many series, cells are gathered by flat index in one operation per
# counter; more series are copied tile by tile, one operation per tile.
FEW_SERIES = 32


class StoreBusyError(Exception):
    """A read kept colliding with the writer; it is safe to try again."""


class InvalidTimeRangeError(ValueError):
    """``from`` is after ``until``."""


@dataclass(frozen=True, slots=True)
class TimeGrid:
    """Buckets ``start, start + step, ... < end`` of one archive."""

    archive: int
    start: int
    end: int
    step: int

    @property
    def points(self) -> int:
        return (self.end - self.start) // self.step

    def buckets(self) -> np.ndarray:
        return np.arange(self.start, self.end, self.step, dtype=np.int64)


def choose_grid(layout: Layout, from_t: int, until_t: int, now: int, archive: int | None = None) -> TimeGrid | None:
    """The archive and bucket range for a read, whisper's way; None when nothing can be held."""
    if from_t > until_t:
        raise InvalidTimeRangeError(f"from ({from_t}) is after until ({until_t})")
    oldest = now - layout.max_retention
    if from_t > now or until_t < oldest:
        return None
    until_t = min(until_t, now)
    from_t = max(from_t, oldest)
    if archive is None:
        diff = now - from_t
        archive = len(layout.archives) - 1
        for i, spec in enumerate(layout.archives):
            if spec.seconds >= diff:
                archive = i
                break
    step = layout.archives[archive].step
    start = from_t - from_t % step + step
    end = until_t - until_t % step + step
    if start == end:
        end += step
    # Never more buckets than the ring holds.
    rows = layout.archives[archive].rows
    start = max(start, end - rows * step)
    return TimeGrid(archive, start, end, step)


def _row_segments(grid: TimeGrid, rows: int) -> list[tuple[int, int, int]]:
    """(first row, row count, output offset) pieces covering the grid on the ring."""
    first = (grid.start // grid.step) % rows
    n = grid.points
    if first + n <= rows:
        return [(first, n, 0)]
    head = rows - first
    return [(first, head, 0), (0, n - head, head)]


def _tile_pieces(segments: list[tuple[int, int, int]], tile_rows: int) -> list[tuple[int, int, int, int]]:
    """(tile, first row in it, end row in it, output offset): the segments cut at tile edges."""
    pieces = []
    for first, length, at in segments:
        row, end = first, first + length
        while row < end:
            tile, lo = divmod(row, tile_rows)
            hi = min(tile_rows, lo + end - row)
            pieces.append((tile, lo, hi, at + row - first))
            row += hi - lo
    return pieces


def _gather_cells(
    view: ArchiveView,
    block: np.ndarray,
    col: np.ndarray,
    segments: list[tuple[int, int, int]],
    fields: tuple[str, ...],
    out: dict[str, np.ndarray],
) -> None:
    """A few series: one gather per counter, by flat index."""
    ring_rows = np.concatenate([np.arange(first, first + length) for first, length, _ in segments])
    for name in fields:
        at = view.flat_index(name, block[:, None], ring_rows[None, :], col[:, None])
        out[name][...] = view.flat[name][at]


def _copy_tiles(
    view: ArchiveView,
    block: np.ndarray,
    col: np.ndarray,
    pieces: list[tuple[int, int, int, int]],
    current: np.ndarray,
    fields: tuple[str, ...],
    out: dict[str, np.ndarray],
) -> None:
    """Many series: one gather per tile and counter, each series' run of the tile."""
    for tile, lo, hi, at in pieces:
        cells = slice(at, at + hi - lo)
        if not current[:, cells].any():
            # no block holds these buckets: nothing to copy
            for name in fields:
                out[name][:, cells] = 0
            continue
        for name in fields:
            out[name][:, cells] = view.tiles[name][block, tile, col, lo:hi]


def read_columns(
    shard: ShardFile,
    columns: np.ndarray,
    grid: TimeGrid,
    fields: tuple[str, ...],
    *,
    max_attempts: int = 2000,
    writer_alive: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Counters of ``columns`` on ``grid``: field -> array (len(columns), grid.points).

    Cells of other buckets than the grid's (stale ring rows) read as count 0.
    ``count`` is the number of points; ``approximate`` (always returned) is
    True where a cell was estimated from an imported aggregate.
    """
    n, t = len(columns), grid.points
    view = shard.archives[grid.archive] if shard.nblocks else None
    if view is None or n == 0 or t == 0:
        out = {name: np.zeros((n, t), dtype=np.int64 if name == "count" else np.float64) for name in fields}
        out["approximate"] = np.zeros((n, t), dtype=bool)
        return out
    columns = np.asarray(columns, dtype=np.int64)
    block, col = np.divmod(columns, shard.block_columns)
    blocks, series_block = np.unique(block, return_inverse=True)
    # Blocks read for enough of their columns are mapped in one call per array first.
    dense = blocks[np.bincount(series_block) * DENSE_FRACTION >= shard.block_columns].tolist()
    buckets = grid.buckets()
    segments = _row_segments(grid, view.rows)
    pieces = _tile_pieces(segments, view.tile_rows)
    # every cell of the output is written by one of the two copies below
    out = {name: np.empty((n, t), dtype=np.int64 if name == "count" else np.float64) for name in fields}
    block_stamps = np.empty((len(blocks), t), dtype=np.int64)
    ignore_odd = False
    for attempt in range(max_attempts):
        before = shard.generations[blocks].copy()
        if (before & 1).any() and not ignore_odd:
            # An odd generation that stays odd may be left by a writer that
            # was killed mid-batch; with no writer alive nobody will finish it
            # (the next writer's open repairs it), so read what is there.
            if attempt % 100 == 99 and writer_alive is not None and not writer_alive():
                ignore_odd = True
            else:
                time.sleep(0.0002)
            continue
        for first, length, at in segments:
            block_stamps[:, at : at + length] = view.stamps[blocks, first : first + length]
            if attempt == 0:
                for b in dense:
                    shard.prefault(grid.archive, b, first, length, fields)
        current = block_stamps == buckets[None, :]
        if n <= FEW_SERIES:
            _gather_cells(view, block, col, segments, fields, out)
        else:
            _copy_tiles(view, block, col, pieces, current, fields, out)
        if np.array_equal(shard.generations[blocks], before):
            break
    else:
        raise StoreBusyError(f"{shard.path}: could not read a consistent copy in {max_attempts} attempts")
    raw = out["count"]
    if not current.all():
        # rows of a block whose stamp is another bucket's (stale ring rows) are empty
        cells = np.flatnonzero(~current.all(axis=0))
        part = raw[:, cells]
        part[~current[series_block[:, None], cells[None, :]]] = 0
        raw[:, cells] = part
    if int(raw.max()) >= APPROXIMATE:
        out["approximate"] = (raw & APPROXIMATE) != 0
        raw &= COUNT_MAX
    else:
        out["approximate"] = np.zeros((n, t), dtype=bool)
    return out
