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
from .kernels import copy_tile_runs, values_from_tiles
from .shardfile import ArchiveView, ShardFile
from .stats import least_counts

# Map a block's pages in one call when at least 1/DENSE_FRACTION of its columns are wanted.
DENSE_FRACTION = 8
# Read a block tile by tile when at least 1/TILE_MAJOR_FRACTION of its columns
# are wanted, else series by series (see kernels.values_from_tiles). Measured
# over a day at 1 minute, default values of 5,000 / 2,500 series of 64 / 32
# columns per block: tile by tile 51 / 52 ms, series by series 61 / 28 ms.
TILE_MAJOR_FRACTION = 2


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


def _tile_pieces(segments: list[tuple[int, int, int]], tile_rows: int) -> np.ndarray:
    """The segments cut at tile edges: rows (tile, first row in it, end row in it, output offset)."""
    parts = []
    for first, length, at in segments:
        end = first + length
        tile = np.arange(first // tile_rows, (end - 1) // tile_rows + 1, dtype=np.int64)
        start = tile * tile_rows
        lo = np.maximum(first, start) - start
        hi = np.minimum(end, start + tile_rows) - start
        parts.append(np.stack((tile, lo, hi, at + start + lo - first), axis=1))
    return np.concatenate(parts)


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    """Where the series of a read live, and the pieces of tiles the grid covers."""

    block: np.ndarray  # per series
    col: np.ndarray  # per series
    blocks: np.ndarray  # the distinct blocks, sorted
    series_block: np.ndarray  # per series, its index in blocks
    dense: list[int]  # blocks read for enough columns to map their pages in one call
    segments: list[tuple[int, int, int]]
    pieces: np.ndarray  # rows of (tile, lo, hi, output offset)

    @classmethod
    def make(cls, shard: ShardFile, view: ArchiveView, columns: np.ndarray, grid: TimeGrid) -> _ReadPlan:
        block, col = np.divmod(np.asarray(columns, dtype=np.int64), shard.block_columns)
        blocks, series_block = np.unique(block, return_inverse=True)
        dense = blocks[np.bincount(series_block) * DENSE_FRACTION >= shard.block_columns].tolist()
        segments = _row_segments(grid, view.rows)
        return cls(block, col, blocks, series_block, dense, segments, _tile_pieces(segments, view.tile_rows))

    def held_pieces(self, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pieces some block holds buckets of, pieces none does)."""
        held = np.logical_or.reduceat(current.any(axis=0), self.pieces[:, 3])
        return self.pieces[held], self.pieces[~held]


@dataclass(frozen=True, slots=True)
class _Waiting:
    """Cells of a read whose bucket is not rolled up yet, with their counters combined from the finest archive."""

    series: np.ndarray  # per cell: the series (row of the output)
    point: np.ndarray  # per cell: the grid point (column of the output)
    counters: dict[str, np.ndarray]  # ``fields`` as ``ShardFile.from_finest`` makes them

    @classmethod
    def find(
        cls, shard: ShardFile, grid: TimeGrid, plan: _ReadPlan, current: np.ndarray, fields: tuple[str, ...]
    ) -> _Waiting | None:
        """The waiting cells of a rolling archive (see "Rollups" in ``format.py``); marks their blocks' buckets current.

        A bucket B of a block waits when ``B + step > rolled_until`` (R > 0),
        up to the newest bucket a point could have been applied to: R, a
        finest step, the finest archive's spare rows.
        """
        layout = shard.layout
        if not layout.rolls_up(grid.archive):
            return None
        rolled = np.asarray(shard.rolled_until[plan.blocks], dtype=np.int64)
        active = rolled > 0
        if not active.any():
            return None
        finest = layout.archives[0]
        newest = rolled + finest.step + finest.spare * finest.step
        buckets = grid.buckets()
        # only the grid points some block can have waiting
        first = int(np.searchsorted(buckets, int(rolled[active].min()) - grid.step, side="right"))
        end = int(np.searchsorted(buckets, int(newest[active].max()), side="right"))
        if first >= end:
            return None
        near = buckets[first:end][None, :]
        waiting = active[:, None] & (near + grid.step > rolled[:, None]) & (near <= newest[:, None])
        if not waiting.any():
            return None
        current[:, first:end] |= waiting
        series, at = np.nonzero(waiting[plan.series_block])
        point = at + first
        counters = shard.from_finest(grid.archive, plan.block[series], plan.col[series], buckets[point], fields)
        return cls(series, point, counters)


def _read_consistently(
    shard: ShardFile,
    grid: TimeGrid,
    plan: _ReadPlan,
    fields: tuple[str, ...],
    copy: Callable[[np.ndarray], None],
    max_attempts: int,
    writer_alive: Callable[[], bool] | None,
) -> np.ndarray:
    """Run ``copy(current)`` between two equal reads of the blocks' generations (the seqlock).

    ``current`` (blocks x grid points) tells which cells' rows hold the grid's
    bucket; it is returned as it was for the copy that succeeded.
    """
    view = shard.archives[grid.archive]
    buckets = grid.buckets()
    block_stamps = np.empty((len(plan.blocks), grid.points), dtype=np.int64)
    ignore_odd = False
    for attempt in range(max_attempts):
        before = shard.generations[plan.blocks].copy()
        if (before & 1).any() and not ignore_odd:
            # An odd generation that stays odd may be left by a writer that
            # was killed mid-batch; with no writer alive nobody will finish it
            # (the next writer's open repairs it), so read what is there.
            if attempt % 100 == 99 and writer_alive is not None and not writer_alive():
                ignore_odd = True
            else:
                time.sleep(0.0002)
            continue
        for first, length, at in plan.segments:
            block_stamps[:, at : at + length] = view.stamps[plan.blocks, first : first + length]
            if attempt == 0:
                for b in plan.dense:
                    shard.prefault(grid.archive, b, first, length, fields)
        current = block_stamps == buckets[None, :]
        copy(current)
        if np.array_equal(shard.generations[plan.blocks], before):
            return current
    raise StoreBusyError(f"{shard.path}: could not read a consistent copy in {max_attempts} attempts")


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
    plan = _ReadPlan.make(shard, view, columns, grid)
    # every cell of the output is written by copy
    out = {name: np.empty((n, t), dtype=np.int64 if name == "count" else np.float64) for name in fields}

    def copy(current: np.ndarray) -> None:
        pieces, empty = plan.held_pieces(current)
        for _, lo, hi, at in empty.tolist():
            for name in fields:
                out[name][:, at : at + hi - lo] = 0
        for name in fields:
            copy_tile_runs(
                view.tiles[name], plan.block, plan.col, plan.series_block, pieces, out[name],
                shard.block_columns // TILE_MAJOR_FRACTION,
            )  # fmt: skip
        waiting = _Waiting.find(shard, grid, plan, current, fields)
        if waiting is not None:
            for name in fields:
                out[name][waiting.series, waiting.point] = waiting.counters[name]

    current = _read_consistently(shard, grid, plan, fields, copy, max_attempts, writer_alive)
    raw = out["count"]
    if not current.all():
        # rows of a block whose stamp is another bucket's (stale ring rows) are empty
        cells = np.flatnonzero(~current.all(axis=0))
        part = raw[:, cells]
        part[~current[plan.series_block[:, None], cells[None, :]]] = 0
        raw[:, cells] = part
    if int(raw.max()) >= APPROXIMATE:
        out["approximate"] = (raw & APPROXIMATE) != 0
        raw &= COUNT_MAX
    else:
        out["approximate"] = np.zeros((n, t), dtype=bool)
    return out


# Aggregation methods whose default value read_values makes straight from the
# tiles: the counter it takes, and whether it is divided by the count.
FUSED_METHODS: dict[str, tuple[str, bool]] = {
    "average": ("sum", True),
    "sum": ("sum", False),
    "min": ("min", False),
    "max": ("max", False),
    "avg_zero": ("sum", False),
}


def read_values(
    shard: ShardFile,
    columns: np.ndarray,
    grid: TimeGrid,
    methods: list[str],
    x_files_factors: list[float],
    *,
    max_attempts: int = 2000,
    writer_alive: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Default values of ``columns`` on ``grid`` (len(columns), grid.points), NaN where not shown.

    The same values as ``aggregate`` over ``read_columns``' counters, made in
    one pass over the tiles without the counters in between. Every method
    must be one of ``FUSED_METHODS``.
    """
    n, t = len(columns), grid.points
    view = shard.archives[grid.archive] if shard.nblocks else None
    if view is None or n == 0 or t == 0:
        return np.full((n, t), np.nan)
    out = np.empty((n, t))  # every cell is written by copy
    plan = _ReadPlan.make(shard, view, columns, grid)
    finest = shard.layout.finest_step
    least = least_counts(grid.step, finest, x_files_factors)
    method_of_row = np.asarray(methods)
    groups = {str(m): np.flatnonzero(method_of_row == m) for m in np.unique(method_of_row)}
    fields = tuple(dict.fromkeys(("count", *(FUSED_METHODS[m][0] for m in groups))))

    def copy(current: np.ndarray) -> None:
        pieces, empty = plan.held_pieces(current)
        for _, lo, hi, at in empty.tolist():
            out[:, at : at + hi - lo] = np.nan
        for method, pick in groups.items():
            field, per_point = FUSED_METHODS[method]
            divisor = grid.step / finest if method == "avg_zero" else 1.0
            values_from_tiles(
                view.tiles["count"],
                view.tiles[field],
                plan.block[pick],
                plan.col[pick],
                pieces,
                current,
                plan.series_block[pick],
                least[pick],
                per_point,
                divisor,
                pick,
                out,
                shard.block_columns // TILE_MAJOR_FRACTION,
            )
        waiting = _Waiting.find(shard, grid, plan, current, fields)
        if waiting is not None:
            out[waiting.series, waiting.point] = _waiting_values(waiting, grid, finest, groups, least)

    _read_consistently(shard, grid, plan, fields, copy, max_attempts, writer_alive)
    return out


def _waiting_values(
    waiting: _Waiting, grid: TimeGrid, finest: int, groups: dict[str, np.ndarray], least: np.ndarray
) -> np.ndarray:
    """The default values of waiting cells, as ``values_from_tiles`` makes them from stored cells."""
    counters = waiting.counters
    count = counters["count"] & COUNT_MAX
    group_of_series = np.empty(len(least), dtype=np.int64)
    for number, pick in enumerate(groups.values()):
        group_of_series[pick] = number
    group = group_of_series[waiting.series]
    shown = count >= least[waiting.series]
    values = np.full(len(count), np.nan)
    for number, method in enumerate(groups):
        field, per_point = FUSED_METHODS[method]
        pick = np.flatnonzero((group == number) & shown)
        divisor = (
            count[pick] if per_point else (grid.step / finest if method == "avg_zero" else 1.0)
        )
        values[pick] = counters[field][pick] / divisor
    return values
