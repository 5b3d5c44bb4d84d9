"""Exact maxDataPoints consolidation: k adjacent buckets combined from their sub-counters.

graphite-web consolidates a series that has more points than a request's
maxDataPoints by averaging (or summing, max-ing ...) the *values* of adjacent
points; for a max that is a max of maxes and exact, but for an average it is
an average of averages weighted wrongly, and a stddev cannot be combined at
all. Here the sub-counters are combined instead (counts and sums add, min of
mins, max of maxes, the last point of the last non-empty bucket), and every
value is derived afterwards, so each consolidated point is exactly what the
store would hold in an archive of that step.

Consolidated buckets are aligned on multiples of their width (so a graph does
not jitter as time moves on) and there are never more than ``max_points`` of
them, so graphite-web finds nothing left to consolidate.
"""

from __future__ import annotations

import math

import numpy as np

from ..store.read import TimeGrid
from ..store.store import SeriesSet

_SEARCH_WIDTHS = 64
"""How many widths past the smallest one to try before giving up on alignment."""


def consolidated_grid(grid: TimeGrid, max_points: int) -> TimeGrid | None:
    """The coarser grid (same archive) for at most ``max_points`` points; None when not needed."""
    points = grid.points
    if max_points < 1 or points <= max_points:
        return None
    smallest = math.ceil(points / max_points)
    for factor in range(smallest, smallest + _SEARCH_WIDTHS):
        width = factor * grid.step
        start = grid.start - grid.start % width
        end = -(-grid.end // width) * width
        if (end - start) // width <= max_points:
            return TimeGrid(grid.archive, start, end, width)
    # Alignment costs more widths than worth trying (max_points of 1 or 2): start at the grid.
    width = smallest * grid.step
    return TimeGrid(grid.archive, grid.start, grid.start + width * math.ceil(points / smallest), width)


def consolidate(series_set: SeriesSet, max_points: int | None) -> SeriesSet:
    """``series_set`` with at most ``max_points`` buckets per series (itself when it has no more)."""
    if not max_points:
        return series_set
    grid = series_set.grid
    coarse = consolidated_grid(grid, max_points)
    if coarse is None:
        return series_set
    factor = coarse.step // grid.step
    before = (grid.start - coarse.start) // grid.step
    after = (coarse.end - grid.end) // grid.step
    groups = coarse.points
    counters = series_set.counters
    count = counters["count"]
    rows = count.shape[0]
    empty = count == 0

    def grouped(values: np.ndarray, fill: float | int) -> np.ndarray:
        padded = np.pad(values, ((0, 0), (before, after)), constant_values=fill)
        return padded.reshape(rows, groups, factor)

    out: dict[str, np.ndarray] = {"count": grouped(count, 0).sum(axis=2)}
    for name in ("sum", "sumsq"):
        if name in counters:
            out[name] = grouped(np.where(empty, 0.0, counters[name]), 0.0).sum(axis=2)
    if "min" in counters:
        out["min"] = grouped(np.where(empty, np.inf, counters["min"]), np.inf).min(axis=2)
    if "max" in counters:
        out["max"] = grouped(np.where(empty, -np.inf, counters["max"]), -np.inf).max(axis=2)
    if "last" in counters:
        # The last point of a group is the last point of its last non-empty bucket.
        filled = grouped(~empty, False)
        last_index = factor - 1 - np.argmax(filled[:, :, ::-1], axis=2)
        values = grouped(counters["last"], np.nan)
        out["last"] = np.take_along_axis(values, last_index[:, :, None], axis=2)[:, :, 0]
    return SeriesSet(
        names=series_set.names,
        grid=coarse,
        counters=out,
        methods=series_set.methods,
        x_files_factors=series_set.x_files_factors,
        finest_step=series_set.finest_step,
    )
