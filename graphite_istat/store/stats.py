"""Values derived from the five sub-counters: avg, stddev and the aggregation-method default.

Everything takes arrays of any shape (one cell per element) and returns
float64 arrays with NaN where a bucket is empty or the value is not shown.

Definitions, for a bucket holding the raw points x1..xn (n = count):

* avg = sum / n; stddev is the population standard deviation
  sqrt(max(sumsq/n - avg**2, 0)) -- the clamp removes the tiny negative
  variances that rounding produces when all points are (nearly) equal.
* The *default value* of a metric (its path without a sub-counter suffix) is
  its storage-aggregation.conf method applied to the raw points: average ->
  avg, sum -> sum, min -> min, max -> max, last -> the point with the latest
  timestamp (ties: the one received last), absmax -> whichever of min and max
  has the larger absolute value, avg_zero -> sum / (step / finest step), as if
  every finest bucket had one point and empty ones were zero. absmin is the
  point nearest zero: exact when all points have one sign; when a bucket
  holds both signs the counters cannot tell how near zero the nearest point
  was, and the one of min, max nearer to zero is returned.
* xFilesFactor: in the finest archive a bucket with any point is shown. In a
  coarser archive of step S, where the finest step is F, the default value is
  shown only when count >= xFilesFactor * S / F: for a metric sent once per
  finest step this is carbon's rule (the fraction of known finer points);
  a metric sent more often than that counts as fully known. The sub-counter
  leaves (.avg, .max, ...) are exact and never hidden by xFilesFactor.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SUB_COUNTERS = ("count", "sum", "sumsq", "min", "max")
STATS = ("avg", "count", "sum", "sumsq", "min", "max", "stddev", "last")

# The counters each derived stat needs.
NEEDS: dict[str, tuple[str, ...]] = {
    "avg": ("count", "sum"),
    "count": ("count",),
    "sum": ("count", "sum"),
    "sumsq": ("count", "sumsq"),
    "min": ("count", "min"),
    "max": ("count", "max"),
    "stddev": ("count", "sum", "sumsq"),
    "last": ("count", "last"),
}
METHOD_NEEDS: dict[str, tuple[str, ...]] = {
    "average": ("count", "sum"),
    "sum": ("count", "sum"),
    "last": ("count", "last"),
    "max": ("count", "max"),
    "min": ("count", "min"),
    "avg_zero": ("count", "sum"),
    "absmax": ("count", "min", "max"),
    "absmin": ("count", "min", "max"),
}


class UnknownStatError(ValueError):
    """A stat name that is not one of ``STATS``."""


def _empty_to_nan(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=np.float64, copy=True)
    out[count == 0] = np.nan
    return out


def derive(stat: str, counters: Mapping[str, np.ndarray]) -> np.ndarray:
    """One stat from the counters (which must include ``NEEDS[stat]``)."""
    count = counters["count"]
    if stat == "count":
        return _empty_to_nan(count, count)  # an empty bucket reads as null, count included
    if stat in ("sum", "sumsq", "min", "max", "last"):
        if stat not in counters:
            raise UnknownStatError(f"{stat!r} is not stored for this metric")
        return _empty_to_nan(counters[stat], count)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = counters["sum"] / count
        empty = count == 0
        if stat == "avg":
            # Only count marks a cell empty; the sum of an emptied cell is stale.
            avg[empty] = np.nan
            return avg
        if stat == "stddev":
            variance = counters["sumsq"] / count - avg * avg
            deviation = np.sqrt(np.maximum(variance, 0.0))
            deviation[empty] = np.nan
            return deviation
    raise UnknownStatError(f"unknown stat {stat!r}; one of {', '.join(STATS)}")


def aggregate(
    method: str,
    counters: Mapping[str, np.ndarray],
    *,
    step: int,
    finest_step: int,
    x_files_factor: float,
) -> np.ndarray:
    """The default value of a metric by its aggregation method, with xFilesFactor applied."""
    count = counters["count"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "average":
            values = counters["sum"] / count
        elif method in ("sum", "min", "max", "last"):
            if method not in counters:
                raise UnknownStatError(f"{method!r} is not stored for this metric")
            values = np.array(counters[method], dtype=np.float64, copy=True)
        elif method == "avg_zero":
            values = counters["sum"] / (step / finest_step)
        elif method in ("absmax", "absmin"):
            lo, hi = counters["min"], counters["max"]
            if method == "absmax":
                pick_hi = np.abs(hi) >= np.abs(lo)
            else:
                pick_hi = np.abs(hi) < np.abs(lo)
            values = np.where(pick_hi, hi, lo)
        else:
            raise UnknownStatError(f"unknown aggregation method {method!r}")
    np.putmask(values, count < least_count(step, finest_step, x_files_factor), np.nan)
    return values


def least_count(step: int, finest_step: int, x_files_factor: float) -> float:
    """The fewest points a bucket of ``step`` needs for its default value to show (see xFilesFactor)."""
    return float(least_counts(step, finest_step, [x_files_factor])[0])


def least_counts(step: int, finest_step: int, x_files_factors) -> np.ndarray:
    """``least_count`` of many xFilesFactors at once."""
    xff = np.asarray(x_files_factors, dtype=np.float64)
    if step <= finest_step:
        return np.ones(len(xff))
    return np.where(xff > 0, np.maximum(1.0, xff * (step / finest_step)), 1.0)
