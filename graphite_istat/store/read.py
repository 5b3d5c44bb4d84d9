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
from typing import NamedTuple

import numpy as np

from .format import APPROXIMATE, COUNT_MAX, Layout
from .shardfile import ShardFile

# Read a block's whole rows when at least 1/DENSE_FRACTION of its columns are wanted.
DENSE_FRACTION = 8


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


class _BlockRead(NamedTuple):
    """The series of one block a read wants, and where their rows go in the output."""

    block: int
    picks: np.ndarray | None  # the block's columns to take, None for all of them in order
    target: np.ndarray  # output rows, one per pick
    dense: bool  # enough columns to copy whole rows and pick from them


def _row_segments(grid: TimeGrid, rows: int) -> list[tuple[int, int, int]]:
    """(first row, row count, output offset) pieces covering the grid on the ring."""
    first = (grid.start // grid.step) % rows
    n = grid.points
    if first + n <= rows:
        return [(first, n, 0)]
    head = rows - first
    return [(first, head, 0), (0, n - head, head)]


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
    # Series in (block, column) order, so each block's rows are read once,
    # contiguously, and its wanted columns picked from them.
    columns = np.asarray(columns, dtype=np.int64)
    order = np.argsort(columns, kind="stable")
    in_order = bool((order == np.arange(n)).all())
    block, col = np.divmod(columns[order], shard.block_columns)
    blocks, starts = np.unique(block, return_index=True)
    ends = [*starts[1:].tolist(), n]
    whole_block = np.arange(shard.block_columns)
    groups = []
    for b, lo, hi in zip(blocks.tolist(), starts.tolist(), ends, strict=True):
        cols = col[lo:hi]
        groups.append(
            _BlockRead(
                block=b,
                # every column of the block, in order: its rows are used as they are
                picks=None if hi - lo == shard.block_columns and np.array_equal(cols, whole_block) else cols,
                target=np.arange(lo, hi) if in_order else order[lo:hi],
                dense=(hi - lo) * DENSE_FRACTION >= shard.block_columns,
            )
        )
    buckets = grid.buckets()
    segments = _row_segments(grid, view.rows)
    # every cell of the output is written by one of the segments below
    out = {name: np.empty((n, t), dtype=np.int64 if name == "count" else np.float64) for name in fields}
    block_stamps = np.empty((len(groups), t), dtype=np.int64)
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
            rows = slice(first, first + length)
            cells = slice(at, at + length)
            if attempt == 0:
                for group in groups:
                    if group.dense:
                        shard.prefault(grid.archive, group.block, first, length, fields)
            for g, group in enumerate(groups):
                b, picks = group.block, group.picks
                block_stamps[g, cells] = view.stamps[b, rows]
                for name in fields:
                    if picks is None:
                        part = view.fields[name][b, rows].T
                    elif group.dense:  # copy whole rows, then pick: sequential memory access
                        part = view.fields[name][b, rows][:, picks].T
                    else:  # a few columns: strided gathers touch less memory
                        part = view.fields[name][np.full(len(picks), b), rows, picks]
                    if in_order:
                        out[name][group.target[0] : group.target[-1] + 1, cells] = part
                    else:
                        out[name][group.target, cells] = part
        if np.array_equal(shard.generations[blocks], before):
            break
    else:
        raise StoreBusyError(f"{shard.path}: could not read a consistent copy in {max_attempts} attempts")
    # rows of a block whose stamp is another bucket's (stale ring rows) are empty
    stale = block_stamps != buckets[None, :]
    if stale.any():
        for g in np.flatnonzero(stale.any(axis=1)).tolist():
            out["count"][np.ix_(groups[g].target, np.flatnonzero(stale[g]))] = 0
    raw = out["count"]
    out["approximate"] = (raw & APPROXIMATE) != 0
    raw &= COUNT_MAX
    return out
