"""Compiled loops for the store's hot paths: merging runs into cells, and copying tile runs out.

Each is one pass over the cells it touches, where the numpy equivalent makes
a pass (and a temporary) per counter and per operation; with the tiled
format a cell is a cache line of its own in a batch of one timestamp, so the
passes, not the arithmetic, were the cost. ``values_from_tiles`` goes one
step further for reads of default values: it makes them straight from the
count and value tiles, without writing the counters out first. The
functions are compiled by numba on first use and cached next to this module
(or in numba's cache directory when that is not writable); their numpy-level
callers (``apply.merge_runs``, ``read.read_columns``, ``read.read_values``)
keep every decision that is not per cell.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .format import APPROXIMATE, COUNT_MAX


@njit(cache=True, nogil=True)
def merge_cells(
    count: np.ndarray,
    total: np.ndarray,
    sumsq: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    at_count: np.ndarray,
    at_f8: np.ndarray,
    run_count: np.ndarray,
    run_sum: np.ndarray,
    run_sumsq: np.ndarray,
    run_min: np.ndarray,
    run_max: np.ndarray,
    replace: bool,
    approximate: bool,
    fresh: np.ndarray,
) -> None:
    """Combine (or with ``replace`` set) each run's counters into its cell of the flat counter arrays.

    ``fresh[k]`` is set to whether run k's cell was empty before (its other
    counters were overwritten rather than combined); the caller uses it for
    ``last``.
    """
    flag = APPROXIMATE if approximate else 0
    for k in range(at_count.shape[0]):
        i = at_count[k]
        j = at_f8[k]
        old = np.int64(count[i])
        old_count = old & COUNT_MAX
        if replace or old_count == 0:
            fresh[k] = True
            count[i] = min(run_count[k], COUNT_MAX) | flag
            total[j] = run_sum[k]
            sumsq[j] = run_sumsq[k]
            low[j] = run_min[k]
            high[j] = run_max[k]
        else:
            fresh[k] = False
            count[i] = min(old_count + run_count[k], COUNT_MAX) | (old & APPROXIMATE) | flag
            total[j] += run_sum[k]
            sumsq[j] += run_sumsq[k]
            low[j] = min(low[j], run_min[k])
            high[j] = max(high[j], run_max[k])


@njit(cache=True, nogil=True)
def copy_tile_runs(
    tiles: np.ndarray, block: np.ndarray, col: np.ndarray, pieces: np.ndarray, out: np.ndarray
) -> None:
    """out[s, at + r - lo] = tiles[block[s], tile, col[s], r] for each piece (tile, lo, hi, at), r in lo..hi.

    Piece by piece, so that the series of one block read neighbouring runs of
    the same tile one after the other.
    """
    for p in range(pieces.shape[0]):
        tile = pieces[p, 0]
        lo = pieces[p, 1]
        hi = pieces[p, 2]
        at = pieces[p, 3] - lo
        for s in range(block.shape[0]):
            b = block[s]
            c = col[s]
            for r in range(lo, hi):
                out[s, at + r] = tiles[b, tile, c, r]


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
) -> None:
    """A default value per cell, straight from the tiles, into ``out[rows[s]]``.

    value / count when ``per_point`` (average), else value / divisor (1 for
    sum, min and max; avg_zero's step ratio). NaN where the cell's row holds another
    bucket (``held[series_block[s], cell]`` false) or its count is below
    ``least[s]`` (empty, or hidden by xFilesFactor).
    """
    for s in range(block.shape[0]):
        b = block[s]
        c = col[s]
        g = series_block[s]
        row = out[rows[s]]
        need = least[s]
        for p in range(pieces.shape[0]):
            tile = pieces[p, 0]
            lo = pieces[p, 1]
            hi = pieces[p, 2]
            at = pieces[p, 3] - lo
            for r in range(lo, hi):
                n = np.int64(count_tiles[b, tile, c, r]) & COUNT_MAX
                if held[g, at + r] and n >= need:
                    if per_point:
                        row[at + r] = value_tiles[b, tile, c, r] / n
                    else:
                        row[at + r] = value_tiles[b, tile, c, r] / divisor
                else:
                    row[at + r] = np.nan
