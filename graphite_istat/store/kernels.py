"""Compiled loops for the store's hot paths: merging runs into cells, and copying tile runs out.

Each is one pass over the cells it touches, where the numpy equivalent makes
a pass (and a temporary) per counter and per operation; with the tiled
format a cell is a cache line of its own in a batch of one timestamp, so the
passes, not the arithmetic, were the cost. A write is planned first
(``plan_runs``: which runs land, which rows are taken over for a newer
bucket) without changing anything, so that the journal can copy the
before-images of exactly the cells about to change (``gather_cells``)
before ``empty_rows`` and ``merge_planned`` change them. ``values_from_tiles``
makes default values for reads straight from the count and value tiles,
without writing the counters out first. The functions are compiled by numba
on first use and cached next to this module (or in numba's cache directory
when that is not writable); their numpy-level callers (``apply.merge_runs``,
``journal.restore``, ``read.read_columns``, ``read.read_values``) keep every
decision that is not per cell.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from .format import APPROXIMATE, COUNT_MAX

# A cell of an archive as one int64: its block, and its element offset inside
# the block's array of a counter (up to 2**40 cells per block and archive).
CELL_SHIFT = 40
CELL_OFFSET = (1 << CELL_SHIFT) - 1
# A series read on its own runs a tile apart: its loads are started this many
# tiles ahead (software prefetch), so that several misses are in flight.
PREFETCH_PIECES = 8
# Stand-ins for the ``last`` and ``last_offset`` arrays of layouts without them.
NO_F8 = np.zeros(0, dtype=np.float64)
NO_I4 = np.zeros(0, dtype=np.int32)


@intrinsic
def prefetch(typingctx, array, indices):
    """Ask the CPU to bring the cache line of ``array[indices]`` in (``llvm.prefetch``); no effect on results."""
    signature = types.void(array, indices)

    def codegen(context, builder, sig, args):
        array_type, index_type = sig.args
        view = context.make_array(array_type)(context, builder, args[0])
        index = cgutils.unpack_tuple(builder, args[1], count=len(index_type))
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, index, wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch_type = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        llvm_prefetch = cgutils.get_or_insert_function(builder.module, prefetch_type, "llvm.prefetch.p0i8")
        # read, highest locality (keep in all cache levels), data cache
        builder.call(llvm_prefetch, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return signature, codegen


@njit(cache=True, nogil=True)
def copy_tile_runs(
    tiles: np.ndarray,
    block: np.ndarray,
    col: np.ndarray,
    series_block: np.ndarray,
    pieces: np.ndarray,
    out: np.ndarray,
    dense_series: int,
) -> None:
    """out[s, at + r - lo] = tiles[block[s], tile, col[s], r] for each piece (tile, lo, hi, at), r in lo..hi.

    Block by block, in the order ``values_from_tiles`` explains: tile by
    tile for a block read for at least ``dense_series`` series, series by
    series (loads started ``PREFETCH_PIECES`` tiles ahead) otherwise.
    """
    order = np.argsort(series_block, kind="mergesort")
    n = order.shape[0]
    npieces = pieces.shape[0]
    first = 0
    while first < n:
        end = first
        while end < n and series_block[order[end]] == series_block[order[first]]:
            end += 1
        if end - first >= dense_series:
            for p in range(npieces):
                tile = pieces[p, 0]
                lo = pieces[p, 1]
                hi = pieces[p, 2]
                at = pieces[p, 3] - lo
                for k in range(first, end):
                    s = order[k]
                    b = block[s]
                    c = col[s]
                    for r in range(lo, hi):
                        out[s, at + r] = tiles[b, tile, c, r]
        else:
            for k in range(first, end):
                s = order[k]
                b = block[s]
                c = col[s]
                for p in range(min(PREFETCH_PIECES, npieces)):
                    prefetch(tiles, (b, pieces[p, 0], c, 0))
                for p in range(npieces):
                    if p + PREFETCH_PIECES < npieces:
                        prefetch(tiles, (b, pieces[p + PREFETCH_PIECES, 0], c, 0))
                    tile = pieces[p, 0]
                    lo = pieces[p, 1]
                    hi = pieces[p, 2]
                    at = pieces[p, 3] - lo
                    for r in range(lo, hi):
                        out[s, at + r] = tiles[b, tile, c, r]
        first = end


@njit(cache=True, nogil=True)
def values_from_tiles(
    count_tiles: np.ndarray,
    value_tiles: np.ndarray,
    block: np.ndarray,
    col: np.ndarray,
    pieces: np.ndarray,
    held: np.ndarray,
    series_block: np.ndarray,
    least: np.ndarray,
    per_point: bool,
    divisor: float,
    rows: np.ndarray,
    out: np.ndarray,
    dense_series: int,
) -> None:
    """A default value per cell, straight from the tiles, into ``out[rows[s]]``.

    value / count when ``per_point`` (average), else value / divisor (1 for
    sum, min and max; avg_zero's step ratio). NaN where the cell's row holds another
    bucket (``held[series_block[s], cell]`` false) or its count is below
    ``least[s]`` (empty, or hidden by xFilesFactor).

    Series are taken a block at a time (``series_block`` need not be sorted).
    A block read for at least ``dense_series`` series is read tile by tile
    (its series read their runs of one tile, two pages, one after the other:
    the tiles are read whole); a block read for fewer, series by series, each
    series' loads started ``PREFETCH_PIECES`` tiles ahead (its runs are a
    tile apart, each in another page, so the CPU's own prefetchers do not
    see them coming).
    """
    order = np.argsort(series_block, kind="mergesort")
    n = order.shape[0]
    first = 0
    while first < n:
        g = series_block[order[first]]
        end = first
        while end < n and series_block[order[end]] == g:
            end += 1
        held_row = held[g]
        if end - first >= dense_series:
            for p in range(pieces.shape[0]):
                for k in range(first, end):
                    s = order[k]
                    _values_of_run(count_tiles, value_tiles, block[s], col[s], pieces, p, held_row, least[s],
                                   per_point, divisor, out[rows[s]])  # fmt: skip
        else:
            npieces = pieces.shape[0]
            for k in range(first, end):
                s = order[k]
                b = block[s]
                c = col[s]
                row = out[rows[s]]
                for p in range(min(PREFETCH_PIECES, npieces)):
                    prefetch(count_tiles, (b, pieces[p, 0], c, 0))
                    prefetch(value_tiles, (b, pieces[p, 0], c, 0))
                for p in range(npieces):
                    if p + PREFETCH_PIECES < npieces:
                        prefetch(count_tiles, (b, pieces[p + PREFETCH_PIECES, 0], c, 0))
                        prefetch(value_tiles, (b, pieces[p + PREFETCH_PIECES, 0], c, 0))
                    _values_of_run(count_tiles, value_tiles, b, c, pieces, p, held_row, least[s],
                                   per_point, divisor, row)  # fmt: skip
        first = end


@njit(cache=True, nogil=True, inline="always")
def _values_of_run(
    count_tiles: np.ndarray,
    value_tiles: np.ndarray,
    b: int,
    c: int,
    pieces: np.ndarray,
    p: int,
    held: np.ndarray,
    need: float,
    per_point: bool,
    divisor: float,
    row: np.ndarray,
) -> None:
    """The default values of one series' run of one piece of tile (see ``values_from_tiles``)."""
    tile = pieces[p, 0]
    lo = pieces[p, 1]
    hi = pieces[p, 2]
    at = pieces[p, 3] - lo
    for r in range(lo, hi):
        n_points = np.int64(count_tiles[b, tile, c, r]) & COUNT_MAX
        if held[at + r] and n_points >= need:
            if per_point:
                row[at + r] = value_tiles[b, tile, c, r] / n_points
            else:
                row[at + r] = value_tiles[b, tile, c, r] / divisor
        else:
            row[at + r] = np.nan


@njit(cache=True, nogil=True)
def plan_runs(
    stamps: np.ndarray,
    block_columns: int,
    tile_rows: int,
    step: int,
    ring: int,
    column: np.ndarray,
    bucket: np.ndarray,
    action: np.ndarray,
    cells: np.ndarray,
    row_block: np.ndarray,
    row_index: np.ndarray,
    row_stamp: np.ndarray,
    row_stale: np.ndarray,
) -> int:
    """Decide where the runs of one archive land, without changing anything; returns the rows touched.

    Runs are sorted by column (so a block's runs are consecutive). Each ring
    row ends up holding the newest bucket among its stamp and the runs that
    map to it: ``action[k]`` is 0 for a run of an older bucket (skipped), 1
    for a run landing in a row that keeps its bucket, 2 for a run landing in
    a row taken over for a newer bucket. ``cells[k]`` is the run's cell as
    ``block << CELL_SHIFT | element offset inside the block's array of a
    counter`` (the offset is the same for every counter: each counter's
    tiles start at its own place in the block). The rows touched are listed
    once each in ``row_*``: block, ring row, the bucket it will hold, and
    whether it is taken over (its counts are emptied first).
    """
    n = column.shape[0]
    # where[r]: position of ring row r in row_* if it is touched in the
    # current block; left uninitialised and validated on use (a sparse set),
    # since a ring can be far longer than the rows one batch touches.
    where = np.empty(ring, np.int64)
    run_row = np.empty(n, np.int64)
    tile_cells = block_columns * tile_rows
    nrows = 0
    i = 0
    while i < n:
        b = column[i] // block_columns
        first_column = b * block_columns
        end_column = first_column + block_columns
        first_row = nrows
        j = i
        while j < n and column[j] < end_column:
            if j and column[j] < column[j - 1]:
                raise ValueError("runs must be sorted by column")
            r = (bucket[j] // step) % ring
            at = where[r]
            if not (first_row <= at < nrows and row_index[at] == r):
                at = nrows
                where[r] = at
                row_block[at] = b
                row_index[at] = r
                row_stamp[at] = stamps[b, r]
                nrows += 1
            row_stamp[at] = max(row_stamp[at], bucket[j])
            run_row[j] = at
            tile = r // tile_rows
            offset = tile * tile_cells + (column[j] - first_column) * tile_rows + (r - tile * tile_rows)
            cells[j] = (b << CELL_SHIFT) | offset
            j += 1
        for k in range(first_row, nrows):
            row_stale[k] = row_stamp[k] > stamps[b, row_index[k]]
        for k in range(i, j):
            at = run_row[k]
            if bucket[k] != row_stamp[at]:
                action[k] = 0
            elif row_stale[at]:
                action[k] = 2
            else:
                action[k] = 1
        i = j
    return nrows


@njit(cache=True, nogil=True)
def gather_cells(
    counter: np.ndarray, stride: int, cells: np.ndarray, pick: np.ndarray, out: np.ndarray
) -> None:
    """out[k] = the cell ``cells[pick[k]]`` of one counter (``stride``: its elements per block)."""
    for k in range(pick.shape[0]):
        cell = cells[pick[k]]
        out[k] = counter[(cell >> CELL_SHIFT) * stride + (cell & CELL_OFFSET)]


@njit(cache=True, nogil=True)
def scatter_cells(counter: np.ndarray, stride: int, cells: np.ndarray, values: np.ndarray) -> None:
    """The cell ``cells[k]`` of one counter = values[k] (undoing a batch)."""
    for k in range(cells.shape[0]):
        cell = cells[k]
        counter[(cell >> CELL_SHIFT) * stride + (cell & CELL_OFFSET)] = values[k]


@njit(cache=True, nogil=True)
def empty_rows(
    count: np.ndarray, stride: int, block_columns: int, tile_rows: int, blocks: np.ndarray, rows: np.ndarray
) -> None:
    """Set the count of every column of the (block, ring row) pairs to 0."""
    for k in range(blocks.shape[0]):
        r = rows[k]
        base = blocks[k] * stride + (r // tile_rows) * block_columns * tile_rows + r % tile_rows
        for c in range(block_columns):
            count[base + c * tile_rows] = 0


@njit(cache=True, nogil=True)
def merge_planned(
    count: np.ndarray,
    total: np.ndarray,
    sumsq: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    last: np.ndarray,
    last_offset: np.ndarray,
    with_last: bool,
    stride4: int,
    stride8: int,
    cells: np.ndarray,
    action: np.ndarray,
    bucket: np.ndarray,
    run_count: np.ndarray,
    run_sum: np.ndarray,
    run_sumsq: np.ndarray,
    run_min: np.ndarray,
    run_max: np.ndarray,
    run_last: np.ndarray,
    run_last_ts: np.ndarray,
    replace: bool,
    approximate: bool,
) -> int:
    """Combine (or with ``replace`` overwrite) each run with ``action`` > 0 into its cell; returns how many.

    ``count`` and ``last_offset`` are the 4-byte counters (``stride4``
    elements per block), the others 8-byte (``stride8``). A cell that was
    empty takes the run's counters as they are; ``last`` moves to the run's
    when the run's last point is not older than the cell's.
    """
    flag = APPROXIMATE if approximate else 0
    stored = 0
    for k in range(cells.shape[0]):
        if action[k] == 0:
            continue
        stored += 1
        block = cells[k] >> CELL_SHIFT
        offset = cells[k] & CELL_OFFSET
        i = block * stride4 + offset
        j = block * stride8 + offset
        old = np.int64(count[i])
        old_count = old & COUNT_MAX
        fresh = replace or old_count == 0
        if fresh:
            count[i] = min(run_count[k], COUNT_MAX) | flag
            total[j] = run_sum[k]
            sumsq[j] = run_sumsq[k]
            low[j] = run_min[k]
            high[j] = run_max[k]
        else:
            count[i] = min(old_count + run_count[k], COUNT_MAX) | (old & APPROXIMATE) | flag
            total[j] += run_sum[k]
            sumsq[j] += run_sumsq[k]
            low[j] = min(low[j], run_min[k])
            high[j] = max(high[j], run_max[k])
        if with_last:
            seconds = run_last_ts[k] - bucket[k]
            if fresh or seconds >= last_offset[i]:
                last[j] = run_last[k]
                last_offset[i] = seconds
    return stored


@njit(cache=True, nogil=True)
def combine_finer(
    count: np.ndarray,
    total: np.ndarray,
    sumsq: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    last: np.ndarray,
    last_offset: np.ndarray,
    with_last: bool,
    wanted: np.ndarray,
    stride4: int,
    stride8: int,
    stamps: np.ndarray,
    step: int,
    ratio: int,
    tile_rows: int,
    block_columns: int,
    block: np.ndarray,
    col: np.ndarray,
    bucket: np.ndarray,
    out_count: np.ndarray,
    out_sum: np.ndarray,
    out_sumsq: np.ndarray,
    out_min: np.ndarray,
    out_max: np.ndarray,
    out_last: np.ndarray,
    out_last_ts: np.ndarray,
) -> None:
    """Cell k of a coarser bucket (``block[k]``, ``col[k]``, ``bucket[k]``) from the ``ratio`` finer cells it covers.

    The arrays are the finer archive's (``step`` seconds, its ``stamps``):
    counts and sums of the cells whose row holds their bucket are added, min
    and max taken, ``last`` is the latest finer cell's with points.
    ``out_count`` keeps the APPROXIMATE bit if any finer cell had it; an
    empty result has count 0 (its other counters are meaningless).
    ``wanted``: whether sum, sumsq, min, max are made (else left
    meaningless, and not read: a reader wants two or three of them).
    """
    ring = stamps.shape[1]
    tile_cells = block_columns * tile_rows
    want_sum, want_sumsq, want_min, want_max = wanted[0], wanted[1], wanted[2], wanted[3]
    for k in range(block.shape[0]):
        b = block[k]
        c = col[k]
        points = np.int64(0)
        flags = np.int64(0)
        s = 0.0
        q = 0.0
        lo = np.inf
        hi = -np.inf
        last_value = np.nan
        last_ts = np.int64(0)
        for i in range(ratio):
            fine_bucket = bucket[k] + i * step
            r = (fine_bucket // step) % ring
            if stamps[b, r] != fine_bucket:
                continue
            offset = (r // tile_rows) * tile_cells + c * tile_rows + r % tile_rows
            raw = np.int64(count[b * stride4 + offset])
            n = raw & COUNT_MAX
            if n == 0:
                continue
            points += n
            flags |= raw & APPROXIMATE
            j = b * stride8 + offset
            if want_sum:
                s += total[j]
            if want_sumsq:
                q += sumsq[j]
            if want_min:
                lo = min(lo, low[j])
            if want_max:
                hi = max(hi, high[j])
            if with_last:
                last_value = last[j]
                last_ts = fine_bucket + last_offset[b * stride4 + offset]
        out_count[k] = min(points, COUNT_MAX) | flags
        out_sum[k] = s
        out_sumsq[k] = q
        out_min[k] = lo
        out_max[k] = hi
        out_last[k] = last_value
        out_last_ts[k] = last_ts
