"""Point-by-point reductions across series, in the order graphite-web's Python code computes them.

graphite-web aggregates row by row: for each timestamp it collects one value
per series (``None`` past the end of a shorter series) and applies a Python
function from ``graphite.functions.safe``. Each kernel here computes every
row at once but keeps that function's order of operations, so the floats
come out bit for bit equal:

* sums are left folds over the series (``((0.0 + a) + b) + c``), one
  vectorised addition per series, never numpy's pairwise summation;
* min and max replace the running value only when a later value is strictly
  smaller (larger), as the builtins do, NaN included;
* median and percentiles sort each row stably, like ``sorted``.

A kernel returns ``(values, present)``; xFilesFactor is applied by the caller
(``row_mask``). Counts come back as int64 so they become Python ints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .columns import SeriesArray

Kernel = Callable[[Sequence[SeriesArray], int], tuple[np.ndarray, np.ndarray]]

AGGREGATION_ALIASES = {"rangeOf": "range", "avg": "average", "total": "sum", "current": "last"}


class PercentileRankError(IndexError):
    """A percentile rank past the end of a row (stock graphite-web fails the same way)."""


def row_counts(arrays: Sequence[SeriesArray], length: int) -> np.ndarray:
    """How many series have a present point at each row."""
    counts = np.zeros(length, dtype=np.int64)
    for array in arrays:
        counts[: len(array)] += array.present
    return counts


def row_mask(counts: np.ndarray, series_count: int, x_files_factor: float) -> np.ndarray:
    """Rows graphite-web computes: some point present, and enough of them (``xff()``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts > 0) & (counts / series_count >= x_files_factor)


def _sum(arrays: Sequence[SeriesArray], length: int) -> np.ndarray:
    total = np.zeros(length)
    for array in arrays:  # absent points are 0.0: adding them changes nothing
        total[: len(array)] += array.values
    return total


def sum_rows(arrays, length):
    return _sum(arrays, length), np.ones(length, dtype=bool)


def average_rows(arrays, length):
    with np.errstate(invalid="ignore", divide="ignore"):
        return _sum(arrays, length) / row_counts(arrays, length), np.ones(length, dtype=bool)


def avg_zero_rows(arrays, length):
    return _sum(arrays, length) / len(arrays), np.ones(length, dtype=bool)


def count_rows(arrays, length):
    return row_counts(arrays, length), np.ones(length, dtype=bool)


def diff_rows(arrays, length):
    """The first present value minus every later one, added left to right."""
    total = np.zeros(length)
    seen = np.zeros(length, dtype=bool)
    for array in arrays:
        size = len(array)
        total[:size] += np.where(seen[:size], -array.values, array.values)
        seen[:size] |= array.present
    return total, np.ones(length, dtype=bool)


def _extreme(arrays: Sequence[SeriesArray], length: int, smaller: bool) -> np.ndarray:
    chosen = np.zeros(length)
    seen = np.zeros(length, dtype=bool)
    for array in arrays:
        size = len(array)
        current = chosen[:size]
        better = array.values < current if smaller else array.values > current
        take = array.present & (~seen[:size] | better)
        chosen[:size] = np.where(take, array.values, current)
        seen[:size] |= array.present
    return chosen


def min_rows(arrays, length):
    return _extreme(arrays, length, smaller=True), np.ones(length, dtype=bool)


def max_rows(arrays, length):
    return _extreme(arrays, length, smaller=False), np.ones(length, dtype=bool)


def range_rows(arrays, length):
    return (
        _extreme(arrays, length, smaller=False) - _extreme(arrays, length, smaller=True),
        np.ones(length, dtype=bool),
    )


def last_rows(arrays, length):
    chosen = np.zeros(length)
    for array in arrays:
        size = len(array)
        chosen[:size] = np.where(array.present, array.values, chosen[:size])
    return chosen, np.ones(length, dtype=bool)


def multiply_rows(arrays, length):
    """The product, left to right; a row with any absent point has none (``safeMul``)."""
    product = np.ones(length)
    complete = np.ones(length, dtype=bool)
    for index, array in enumerate(arrays):
        size = len(array)
        if index == 0:
            product[:size] = array.values
        else:
            product[:size] *= array.values
        complete[:size] &= array.present
        complete[size:] = False
    return product, complete


def stddev_rows(arrays, length):
    """Population stddev around the row mean, squares added left to right (``safeStdDev``)."""
    counts = row_counts(arrays, length)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = _sum(arrays, length) / counts
        squares = np.zeros(length)
        for array in arrays:
            size = len(array)
            deviation = array.values - mean[:size]
            squares[:size] += np.where(array.present, deviation * deviation, 0.0)
        return np.sqrt(squares / counts), np.ones(length, dtype=bool)


def sorted_rows(arrays: Sequence[SeriesArray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's present values sorted ascending, padded with NaN: ``(length, len(arrays))``.

    Like ``sorted``, equal values keep their series order. Only 0.0 and -0.0
    are equal yet distinguishable, so the fast unstable sort serves every row
    that does not hold both, and those few rows are sorted again stably.
    """
    by_series = np.full((len(arrays), length), np.nan)
    signed_zeros = np.zeros((2, length), dtype=bool)
    for index, array in enumerate(arrays):
        size = len(array)
        by_series[index, :size] = np.where(array.present, array.values, np.nan)
        zero = array.present & (array.values == 0.0)
        negative = np.signbit(array.values)
        signed_zeros[0, :size] |= zero & negative
        signed_zeros[1, :size] |= zero & ~negative
    by_row = np.ascontiguousarray(by_series.T)
    ordered = np.sort(by_row, axis=1)
    both = np.flatnonzero(signed_zeros[0] & signed_zeros[1])
    if len(both):
        ordered[both] = np.sort(by_row[both], axis=1, kind="stable")
    return ordered, row_counts(arrays, length)


def median_rows(arrays, length):
    ordered, counts = sorted_rows(arrays, length)
    rows = np.arange(length)
    middle = counts // 2
    upper = ordered[rows, np.minimum(middle, len(arrays) - 1)]
    lower = ordered[rows, np.maximum(middle - 1, 0)]
    return np.where(counts % 2 == 0, (lower + upper) / 2, upper), np.ones(length, dtype=bool)


def percentile_rows(
    arrays: Sequence[SeriesArray], length: int, percent: float, interpolate: bool
) -> tuple[np.ndarray, np.ndarray]:
    """NIST percentile of each row's present values, as ``_getPercentile`` picks it.

    ``percent / 100 * (len(arrays) + 1)`` must be finite (the caller checks).
    """
    ordered, counts = sorted_rows(arrays, length)
    present = counts > 0
    fraction_of = percent / 100.0
    ranks_f = np.where(present, fraction_of * (counts + 1).astype(np.float64), 0.0)
    ranks = np.trunc(ranks_f)
    rank_fraction = ranks_f - ranks
    ranks = ranks.astype(np.int64)
    if not interpolate:
        ranks += np.ceil(rank_fraction).astype(np.int64)
    out_of_row = present & (ranks > counts + 1)
    if interpolate:
        out_of_row |= present & (ranks > counts)
    if out_of_row.any():
        raise PercentileRankError("list index out of range")
    rows = np.arange(length)
    last = max(len(arrays) - 1, 0)
    pick = np.where(ranks == 0, 0, np.where(ranks - 1 == counts, counts - 1, ranks - 1))
    value = ordered[rows, np.clip(pick, 0, last)]
    if interpolate:
        has_next = ranks != counts
        following = ordered[rows, np.clip(ranks, 0, last)]
        value = np.where(has_next, value + rank_fraction * (following - value), value)
    return value, present


KERNELS: dict[str, Kernel] = {
    "average": average_rows,
    "avg_zero": avg_zero_rows,
    "median": median_rows,
    "sum": sum_rows,
    "min": min_rows,
    "max": max_rows,
    "diff": diff_rows,
    "stddev": stddev_rows,
    "count": count_rows,
    "range": range_rows,
    "multiply": multiply_rows,
    "last": last_rows,
}
SORTING = frozenset({"median"})
"""Kernels that sort: NaN values sort differently from Python's ``sorted``, so callers avoid them."""


def kernel_for(function: str) -> Kernel:
    """The kernel of an aggregation name graphite-web accepts (``avg``, ``total`` ...)."""
    return KERNELS[AGGREGATION_ALIASES.get(function, function)]

