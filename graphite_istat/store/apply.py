"""Applying points to one shard file: group by (column, bucket), reduce, merge into the rows.

Everything here is vectorised. The input is the points of one file sorted by
(column, time); for each archive they are cut into runs of equal (column,
bucket), each run is reduced to its five sub-counters with ``ufunc.reduceat``,
and the runs are merged into the mapped arrays by compiled passes
(``kernels.py``): one that decides where each run lands without changing
anything, one per counter that copies the before-images of the cells about
to change for the journal, and one that empties the rows taken over and
merges the runs. Coarser archives are reduced from the runs of the next
finer one (steps divide each other), so the raw points are read once.

Two ways for the finest bucket (``Schema.finest_bucket``):

* ``accumulate`` (istat): every point counts; every archive holds the exact
  count, sum, sum of squares, min and max of all raw points in its buckets.
* ``last`` (whisper): the finest bucket keeps only the last point received.
  Coarser buckets then hold the combination of the finest buckets' kept
  values: they are recomputed from the next finer archive whenever that
  archive still covers the whole coarse bucket, and accumulated otherwise
  (for points older than the finer archive's retention a resend cannot be
  told from a new point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .format import APPROXIMATE, COUNT_MAX
from .kernels import NO_F8, NO_I4, empty_rows, gather_cells, merge_planned, plan_runs
from .shardfile import ArchiveView, ShardFile

# Called before an archive changes, with (archive, cells, their before-images
# by counter) of the cells of kept rows about to change (cells as
# ``kernels.plan_runs`` numbers them) and (blocks, rows, new stamps) of the
# rows about to be emptied for a newer bucket.
BeforeChange = Callable[[int, np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray], None]


@dataclass(slots=True)
class Runs:
    """Sub-counters of runs of points sharing (column, bucket), in (column, bucket) order."""

    column: np.ndarray  # int64
    bucket: np.ndarray  # int64
    count: np.ndarray  # int64
    sum: np.ndarray
    sumsq: np.ndarray
    min: np.ndarray
    max: np.ndarray
    last: np.ndarray
    last_ts: np.ndarray  # int64 absolute time of the last point

    def __len__(self) -> int:
        return len(self.column)

    def take(self, index: np.ndarray) -> Runs:
        return Runs(*(getattr(self, f)[index] for f in self.__slots__))


def _run_starts(column: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    n = len(column)
    new = np.empty(n, dtype=bool)
    if n:
        new[0] = True
        np.not_equal(column[1:], column[:-1], out=new[1:])
        new[1:] |= bucket[1:] != bucket[:-1]
    return np.flatnonzero(new)


def runs_from_points(column: np.ndarray, ts: np.ndarray, values: np.ndarray, step: int) -> Runs:
    """Reduce points sorted by (column, ts) to runs per (column, bucket of ``step``)."""
    bucket = ts - ts % step
    starts = _run_starts(column, bucket)
    if len(starts) == len(column):  # every point alone in its bucket: nothing to reduce
        ones = np.ones(len(column), dtype=np.int64)
        return Runs(column, bucket, ones, values, values * values, values, values, values, ts)
    ends = np.append(starts[1:], len(column)) - 1
    return Runs(
        column=column[starts],
        bucket=bucket[starts],
        count=np.diff(np.append(starts, len(column))),
        sum=np.add.reduceat(values, starts) if len(starts) else values[:0],
        sumsq=np.add.reduceat(values * values, starts) if len(starts) else values[:0],
        min=np.minimum.reduceat(values, starts) if len(starts) else values[:0],
        max=np.maximum.reduceat(values, starts) if len(starts) else values[:0],
        last=values[ends],
        last_ts=ts[ends],
    )


def runs_keep_last(column: np.ndarray, ts: np.ndarray, values: np.ndarray, step: int) -> Runs:
    """One run per (column, bucket) holding only the last point of the run (points in arrival order per bucket)."""
    bucket = ts - ts % step
    starts = _run_starts(column, bucket)
    ends = np.append(starts[1:], len(column)) - 1
    last = values[ends]
    return Runs(
        column=column[starts],
        bucket=bucket[starts],
        count=np.ones(len(starts), dtype=np.int64),
        sum=last.copy(),
        sumsq=last * last,
        min=last.copy(),
        max=last.copy(),
        last=last,
        last_ts=ts[ends],
    )


def coarsen(runs: Runs, step: int) -> Runs:
    """Combine runs of a finer step into runs of ``step`` (a multiple of it)."""
    bucket = runs.bucket - runs.bucket % step
    starts = _run_starts(runs.column, bucket)
    if len(starts) == len(runs):
        return replace(runs, bucket=bucket)
    ends = np.append(starts[1:], len(runs)) - 1
    # The last point of a coarse run is the last point of its last fine run
    # only when times increase along the runs, which (column, ts) order gives.
    return Runs(
        column=runs.column[starts],
        bucket=bucket[starts],
        count=np.add.reduceat(runs.count, starts),
        sum=np.add.reduceat(runs.sum, starts),
        sumsq=np.add.reduceat(runs.sumsq, starts),
        min=np.minimum.reduceat(runs.min, starts),
        max=np.maximum.reduceat(runs.max, starts),
        last=runs.last[ends],
        last_ts=runs.last_ts[ends],
    )


def _before_images(shard: ShardFile, view: ArchiveView, cells: np.ndarray, pick: np.ndarray) -> dict[str, np.ndarray]:
    """The current value of every counter of the cells ``cells[pick]``."""
    images = {}
    for name, dtype in shard.layout.fields:
        values = np.empty(len(pick), dtype=dtype)
        gather_cells(view.flat[name], view.flat_block_stride[name], cells, pick, values)
        images[name] = values
    return images


def merge_runs(
    shard: ShardFile,
    archive: int,
    runs: Runs,
    *,
    replace: bool = False,
    approximate: bool = False,
    before_change: BeforeChange | None = None,
) -> int:
    """Merge runs (sorted by column) into one archive of a file; returns how many runs were stored.

    Each ring row holds the newest bucket among its own and the runs' that
    map to it: rows taken over for a newer bucket are emptied first, runs of
    an older bucket than their row's are beyond this archive's retention and
    skipped (``kernels.plan_runs``). With ``replace`` the runs overwrite their
    cells (the finest archive of a keep-last schema, imported history)
    instead of combining with them; ``approximate`` marks the cells as
    estimated rather than made of raw points.
    """
    if not len(runs):
        return 0
    view = shard.archives[archive]
    n = len(runs)
    action = np.empty(n, dtype=np.int8)
    cells = np.empty(n, dtype=np.int64)
    row_block = np.empty(n, dtype=np.int64)
    row_index = np.empty(n, dtype=np.int64)
    row_stamp = np.empty(n, dtype=np.int64)
    row_stale = np.empty(n, dtype=np.bool_)
    touched = plan_runs(
        view.stamps, shard.block_columns, shard.tile_rows, view.step, view.rows, runs.column, runs.bucket,
        action, cells, row_block, row_index, row_stamp, row_stale,
    )  # fmt: skip
    row_block, row_index = row_block[:touched], row_index[:touched]
    row_stamp, row_stale = row_stamp[:touched], row_stale[:touched]
    if shard.writable:
        shard.ensure_allocated(archive, row_block, row_index)
    stale_blocks, stale_rows, stale_stamps = row_block[row_stale], row_index[row_stale], row_stamp[row_stale]
    if before_change is not None:
        # A cell of a row taken over needs no before-image: undoing the
        # takeover empties the row again (its old bucket has left the retention).
        pick = np.flatnonzero(action == 1)
        before_change(
            archive, cells[pick], _before_images(shard, view, cells, pick), stale_blocks, stale_rows, stale_stamps
        )
    flat, stride = view.flat, view.flat_block_stride
    if len(stale_blocks):
        empty_rows(flat["count"], stride["count"], shard.block_columns, shard.tile_rows, stale_blocks, stale_rows)
        view.stamps[stale_blocks, stale_rows] = stale_stamps
    with_last = "last" in flat
    return merge_planned(
        flat["count"], flat["sum"], flat["sumsq"], flat["min"], flat["max"],
        flat["last"] if with_last else NO_F8, flat["last_offset"] if with_last else NO_I4, with_last,
        stride["count"], stride["sum"], cells, action, runs.bucket,
        runs.count, runs.sum, runs.sumsq, runs.min, runs.max, runs.last, runs.last_ts,
        replace, approximate,
    )  # fmt: skip


def recompute_from_finer(
    shard: ShardFile, archive: int, runs: Runs, now: int, before_change: BeforeChange | None = None
) -> Runs:
    """Replace coarse runs by the exact combination of the finer archive's cells where it covers them.

    Returns the runs it could not recompute (the finer archive no longer holds
    their whole bucket); the caller accumulates those.
    """
    fine = shard.archives[archive - 1]
    coarse = shard.archives[archive]
    ratio = coarse.step // fine.step
    sub = runs.bucket[:, None] + np.arange(ratio, dtype=np.int64)[None, :] * fine.step
    block, col = np.divmod(runs.column, shard.block_columns)
    rows = (sub // fine.step) % fine.rows
    blocks = np.broadcast_to(block[:, None], rows.shape)
    cols = np.broadcast_to(col[:, None], rows.shape)
    stamps = fine.stamps[blocks, rows]
    at = fine.flat_index("sum", blocks, rows, cols)  # the float64 counters share it
    # Covered: the whole coarse bucket lies in the finer archive's window, and
    # no finer row of it has been reused for a newer bucket.
    kept = shard.layout.archives[archive - 1].rows
    fine_window_start = (now - now % fine.step) - (kept - 1) * fine.step
    covered = (stamps <= sub).all(axis=1) & (runs.bucket >= fine_window_start) & (ratio <= kept)
    valid = stamps == sub
    f = fine.flat
    counts = np.where(valid, fine.cells("count", blocks, rows, cols), 0).astype(np.int64) & COUNT_MAX
    has = counts > 0
    covered &= has.any(axis=1)
    if not covered.any():
        return runs
    idx = np.flatnonzero(covered)
    m = has[idx]
    a = at[idx]
    total = Runs(
        column=runs.column[idx],
        bucket=runs.bucket[idx],
        count=counts[idx].sum(axis=1),
        sum=np.where(m, f["sum"][a], 0.0).sum(axis=1),
        sumsq=np.where(m, f["sumsq"][a], 0.0).sum(axis=1),
        min=np.where(m, f["min"][a], np.inf).min(axis=1),
        max=np.where(m, f["max"][a], -np.inf).max(axis=1),
        last=runs.last[idx],
        last_ts=runs.last_ts[idx],
    )
    if "last" in f:
        # The last value of the coarse bucket: from the latest finer bucket that has data.
        latest = ratio - 1 - np.argmax(m[:, ::-1], axis=1)
        pick = np.arange(len(idx))
        cb, cr, cc = blocks[idx][pick, latest], rows[idx][pick, latest], cols[idx][pick, latest]
        total.last = fine.cells("last", cb, cr, cc)
        total.last_ts = sub[idx][pick, latest] + fine.cells("last_offset", cb, cr, cc)
    merge_runs(shard, archive, total, replace=True, before_change=before_change)
    return runs.take(np.flatnonzero(~covered))


def rolled_until_after(shard: ShardFile, now: int) -> int:
    """The ``rolled_until`` a write at ``now`` gives the blocks it touches: a finest step before now."""
    return max(now - shard.layout.finest_step, 1)


def roll_up(
    shard: ShardFile, blocks: np.ndarray, until: int, before_change: BeforeChange | None = None
) -> int:
    """Roll up the waiting buckets of ``blocks`` that end by ``until`` in every rolling archive; returns cells stored.

    A bucket waits when it ends after its block's ``rolled_until`` (R) but
    no later than R plus a finest step plus the finest archive's spare rows
    (no point of a later bucket has been applied to the block). Each is set
    to the combination of its finest cells (see "Rollups" in ``format.py``).
    R itself is left to the caller, to be stored once the rollup is committed.
    """
    layout = shard.layout
    rolling = [archive for archive in range(len(layout.archives)) if layout.rolls_up(archive)]
    if not rolling:
        return 0
    rolled = np.asarray(shard.rolled_until[blocks], dtype=np.int64)
    # the common case, nothing ended since the last write: decided in a few operations
    lowest = int(rolled.min()) if len(rolled) else 0
    highest = int(rolled.max()) if len(rolled) else 0
    if highest <= 0 or all(until // layout.archives[a].step == lowest // layout.archives[a].step for a in rolling):
        return 0
    finest = layout.archives[0]
    newest = rolled + finest.step + finest.spare * finest.step
    stored = 0
    for archive in rolling:
        spec = layout.archives[archive]
        step = spec.step
        first = rolled - rolled % step
        last = np.minimum((until - step) - (until - step) % step, newest - newest % step)
        counts = np.where(rolled > 0, (last - first) // step + 1, 0).clip(min=0)
        total = int(counts.sum())
        if not total:
            continue
        pair_block = np.repeat(blocks, counts)
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        pair_bucket = np.repeat(first, counts) + step * within
        pair, col = np.nonzero(shard.columns["in_use"][pair_block])
        block, bucket = pair_block[pair], pair_bucket[pair]
        column = block * shard.block_columns + col
        if counts.max() > 1:
            order = np.lexsort((bucket, column))
            block, col, bucket, column = block[order], col[order], bucket[order], column[order]
        cells = shard.from_finest(archive, block, col, bucket)
        raw = cells["count"]
        for approximate in (False, True):
            pick = np.flatnonzero(
                ((raw & COUNT_MAX) > 0) & (((raw & APPROXIMATE) != 0) == approximate)
            )
            if not len(pick):
                continue
            runs = Runs(
                column=column[pick],
                bucket=bucket[pick],
                count=raw[pick] & COUNT_MAX,
                sum=cells["sum"][pick],
                sumsq=cells["sumsq"][pick],
                min=cells["min"][pick],
                max=cells["max"][pick],
                last=cells["last"][pick],
                last_ts=cells["last_ts"][pick],
            )
            changed = np.unique(runs.column // shard.block_columns)
            shard.generations[changed] += 1  # odd: readers of these blocks wait
            try:
                stored += merge_runs(
                    shard,
                    archive,
                    runs,
                    replace=True,
                    approximate=approximate,
                    before_change=before_change,
                )
            finally:
                shard.generations[changed] += 1
    return stored


def apply_points(
    shard: ShardFile,
    column: np.ndarray,
    ts: np.ndarray,
    values: np.ndarray,
    now: int,
    keep_last: bool,
    before_change: BeforeChange | None = None,
) -> None:
    """Apply points sorted by (column, time) to every archive of ``shard``.

    Points are assumed valid (finite, within the store's time limits). Each
    archive only takes the points inside its own retention window measured
    from ``now``, as whisper does; older points still reach coarser archives.
    """
    if not len(column):
        return
    block = column // shard.block_columns
    blocks = block[np.flatnonzero(np.diff(block, prepend=-1))]  # column is sorted
    gens = shard.generations
    gens[blocks] += 1  # odd: readers of these blocks wait
    try:
        finest: Runs | None = None  # the finest archive's runs
        complete: Runs | None = None  # the runs of the last archive that took every point
        for archive, spec in enumerate(shard.layout.archives):
            window_start = (now - now % spec.step) - (spec.rows - 1) * spec.step
            if finest is None:
                make = runs_keep_last if keep_last else runs_from_points
                runs = finest = complete = make(column, ts, values, spec.step)
            elif shard.layout.rolls_up(archive):
                # Only buckets already rolled up take points here; the others get
                # them from the finest archive when they are. Usually there are none.
                bucket = finest.bucket - finest.bucket % spec.step
                rolled = shard.rolled_until[finest.column // shard.block_columns]
                direct = np.flatnonzero((bucket + spec.step <= rolled) & (bucket >= window_start))
                if not len(direct):
                    continue
                runs = coarsen(finest.take(direct), spec.step)
            else:
                assert complete is not None
                runs = complete = coarsen(complete, spec.step)
            inside = runs.bucket >= window_start
            in_window = runs if inside.all() else runs.take(np.flatnonzero(inside))
            if keep_last and archive == 0:
                merge_runs(shard, archive, in_window, replace=True, before_change=before_change)
            elif keep_last:
                rest = recompute_from_finer(shard, archive, in_window, now, before_change)
                merge_runs(shard, archive, rest, before_change=before_change)
            else:
                merge_runs(shard, archive, in_window, before_change=before_change)
    finally:
        gens[blocks] += 1  # even again
