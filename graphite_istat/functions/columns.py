"""Series values as numpy arrays: Python lists of floats and None in, arrays out, and back.

graphite-web hands functions ``TimeSeries`` objects, which are Python lists
of floats with ``None`` for a missing point. ``series_array`` turns one into
a ``SeriesArray`` (float64 values with 0.0 at missing points, and a boolean
mask of present points) in one C-level pass through pyarrow, which keeps
``None`` apart from a float NaN. It then applies the series' pending
consolidation (``valuesPerPoint`` > 1, set by graphite-web's ``normalize``)
exactly as ``TimeSeries.__iter__`` would: the same blocks, the same
xFilesFactor test, the same left-to-right order of additions.

Anything the arrays cannot hold exactly raises ``UnrepresentableSeries``; the
callers then leave the work to stock graphite-web. Integers are the one
known difference: pyarrow reads an int as the equal float, so a series of
Python ints (``constantLine(1)``, ``countSeries``) aggregates to the same
numbers written as floats.

No graphite-web or Django import here: the module works on plain lists and
attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..graphite.rows import recorded_array

FLOAT64 = pa.float64()

CONSOLIDATION_ALIASES = {"avg": "average"}
CONSOLIDATIONS = ("sum", "average", "avg_zero", "max", "min", "first", "last")


class UnrepresentableSeries(Exception):
    """Values or settings of a series the array path does not reproduce exactly."""


@dataclass(frozen=True, slots=True)
class SeriesArray:
    """One series' points: ``values[i]`` is meaningful where ``present[i]``, else 0.0."""

    values: np.ndarray  # float64
    present: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.values)

    @property
    def has_nan(self) -> bool:
        """True when a present point is a float NaN (which sorts unlike None)."""
        return bool(np.isnan(self.values).any())


def raw_array(values: list) -> SeriesArray:
    """The stored points of ``values`` (a list or list subclass), ignoring any consolidation."""
    try:
        arrow = pa.array(values, type=FLOAT64)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
        raise UnrepresentableSeries(str(e)) from e
    size = len(arrow)
    validity, data_buffer = arrow.buffers()  # a freshly built array: offset 0
    data = np.frombuffer(data_buffer, dtype=np.float64, count=size)
    if arrow.null_count == 0:
        return SeriesArray(data.copy(), np.ones(size, dtype=bool))
    bits = np.frombuffer(validity, dtype=np.uint8)
    present = np.unpackbits(bits, count=size, bitorder="little").view(bool)
    return SeriesArray(np.where(present, data, 0.0), present)


def consolidate(
    raw: SeriesArray, values_per_point: int, function: str, x_files_factor: float
) -> SeriesArray:
    """``raw`` consolidated as graphite-web's ``TimeSeries`` does it when iterated."""
    if values_per_point <= 1:
        return raw
    function = CONSOLIDATION_ALIASES.get(function, function)
    if function not in CONSOLIDATIONS:
        raise UnrepresentableSeries(f"consolidation function {function!r}")
    size = len(raw)
    blocks = -(-size // values_per_point)
    padded = blocks * values_per_point
    values = np.zeros(padded)
    present = np.zeros(padded, dtype=bool)
    values[:size] = raw.values
    present[:size] = raw.present
    values = values.reshape(blocks, values_per_point)
    present = present.reshape(blocks, values_per_point)
    known = present.sum(axis=1)
    with np.errstate(all="ignore"):
        shown = (known > 0) & (known / values_per_point >= x_files_factor)
        if function in ("sum", "average", "avg_zero"):
            total = np.zeros(blocks)
            for column in range(values_per_point):  # left to right, as sum() adds
                total += values[:, column]
            if function == "sum":
                result = total
            elif function == "average":
                result = total / known
            else:  # None counted as 0: the last block divides by the points it has
                lengths = np.full(blocks, values_per_point)
                if blocks and size % values_per_point:
                    lengths[-1] = size % values_per_point
                result = total / lengths
        else:
            result = _pick_in_blocks(values, present, function)
    return SeriesArray(np.where(shown, result, 0.0), shown)


def _pick_in_blocks(values: np.ndarray, present: np.ndarray, function: str) -> np.ndarray:
    """max, min, first or last of the present points of each block, scanning left to right."""
    blocks, width = values.shape
    chosen = np.zeros(blocks)
    seen = np.zeros(blocks, dtype=bool)
    for column in range(width):
        value = values[:, column]
        here = present[:, column]
        if function == "max":
            take = here & (~seen | (value > chosen))
        elif function == "min":
            take = here & (~seen | (value < chosen))
        elif function == "first":
            take = here & ~seen
        else:
            take = here
        chosen = np.where(take, value, chosen)
        seen |= here
    return chosen


def row_array(row: np.ndarray) -> SeriesArray:
    """A float64 row of the store (NaN = empty bucket) as a ``SeriesArray``."""
    present = ~np.isnan(row)
    return SeriesArray(np.where(present, row, 0.0), present)


def series_array(series, context: Mapping[str, Any] | None = None) -> SeriesArray:
    """The points a ``TimeSeries`` yields when iterated, as arrays.

    A series graphite-istat's finder read and nobody changed since comes
    from the array the finder recorded in the request ``context``
    (``graphite.rows``); any other is converted from its list.
    """
    recorded = recorded_array(context, series)
    raw = raw_array(series) if recorded is None else row_array(recorded)
    return consolidate(
        raw, int(series.valuesPerPoint), series.consolidationFunc, series.xFilesFactor
    )


def to_values(values: np.ndarray, present: np.ndarray) -> list:
    """A Python list for a ``TimeSeries``: floats (or ints for an int array), None where absent."""
    out = values.astype(object)
    out[~present] = None
    return out.tolist()
