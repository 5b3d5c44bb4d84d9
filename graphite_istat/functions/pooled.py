"""istatPooled and istatBand: one statistic of many metrics, pooled exactly from their sub-counters.

``averageSeries(servers.*.latency)`` averages per-server averages, which is
wrong whenever servers serve different numbers of requests. graphite-istat
keeps count, sum and stddev (and min, max) of every bucket, and these pool
exactly:

* count = Σ count, sum = Σ sum, avg = Σ sum / Σ count;
* min = min of the mins, max = max of the maxes;
* stddev (population) from the per-metric counts, means and stddevs by the
  parallel-variance rule: M2 = Σ (n_i s_i² + n_i (mean_i - mean)²) where s_i is a
  metric's stddev,
  stddev = sqrt(M2 / Σ n). (graphite-istat's finder serves ``.stddev`` but
  not the raw sum of squares; this rule needs no sum of squares and does
  not cancel catastrophically when the mean is large.)

Both functions take the metrics' series as graphite-web evaluated them and
fetch the sub-counter leaves (``<metric>.count``, ``.sum`` ...) of exactly
those metrics through graphite-web's own prefetch, for the request's time
range. Metrics of different steps pool on the least common multiple of the
steps, each bucket combined from the finer buckets it covers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from graphite.errors import InputParameterError
from graphite.functions.params import Param, ParamTypes
from graphite.render.datalib import TimeSeries, fetchData, prefetchData

from .columns import SeriesArray, UnrepresentableSeries, raw_array, to_values
from .combine import path_expressions

POOLED_STATS = ("avg", "count", "sum", "min", "max", "stddev")
FIELDS_FOR: dict[str, tuple[str, ...]] = {
    "avg": ("count", "sum"),
    "count": ("count",),
    "sum": ("sum",),
    "min": ("min",),
    "max": ("max",),
    "stddev": ("count", "sum", "stddev"),
}
BAND_FIELDS = ("count", "sum", "stddev", "min", "max")
NOT_A_PLAIN_PATTERN = set("()$;=\"'")
MISSING_NAMES_SHOWN = 5


class MissingSubCountersError(InputParameterError):
    """Metrics whose sub-counter leaves graphite-web could not find (not graphite-istat metrics?)."""


@dataclass(frozen=True, slots=True)
class Grid:
    """A time grid: point i covers [start + i * step, start + (i + 1) * step)."""

    start: int
    step: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length * self.step


@dataclass(frozen=True, slots=True)
class Pooled:
    """Pooled counters on one grid; ``count`` 0 where no metric had a point."""

    grid: Grid
    count: np.ndarray
    total: np.ndarray
    low: np.ndarray
    high: np.ndarray
    m2: np.ndarray
    has_low: np.ndarray
    has_high: np.ndarray
    has_total: np.ndarray

    def stat(self, stat: str) -> tuple[np.ndarray, np.ndarray]:
        """``(values, present)`` of one pooled statistic."""
        counted = self.count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            if stat == "count":
                return self.count, self.has_total
            if stat == "sum":
                return self.total, self.has_total
            if stat == "avg":
                return self.total / self.count, counted
            if stat == "stddev":
                return np.sqrt(np.maximum(self.m2 / self.count, 0.0)), counted
        if stat == "min":
            return self.low, self.has_low
        return self.high, self.has_high


def sub_counter_series(
    requestContext: dict, series_list: Sequence[TimeSeries], fields: Sequence[str]
) -> dict[str, dict[str, TimeSeries]]:
    """``{metric: {field: series}}`` for every metric of ``series_list``, fetched in one prefetch."""
    metrics = list(dict.fromkeys(series.name for series in series_list))
    wanted = {f"{metric}.{field}": (metric, field) for metric in metrics for field in fields}
    expressions = {series.pathExpression for series in series_list}
    if all(expression and not NOT_A_PLAIN_PATTERN & set(expression) for expression in expressions):
        # Few patterns (``servers.*.latency.count``) fetch fast; names outside the input are dropped.
        patterns = [f"{expression}.{field}" for expression in expressions for field in fields]
    else:
        patterns = list(wanted)
    prefetchData(requestContext, patterns)
    found: dict[str, dict[str, TimeSeries]] = {metric: {} for metric in metrics}
    for pattern in patterns:
        for series in fetchData(requestContext, pattern):
            key = wanted.get(series.name)
            if key is not None:
                found[key[0]][key[1]] = series
    missing = [metric for metric in metrics if len(found[metric]) < len(fields)]
    if missing:
        shown = ", ".join(missing[:MISSING_NAMES_SHOWN])
        more = len(missing) - MISSING_NAMES_SHOWN
        raise MissingSubCountersError(
            f"no sub-counters ({', '.join(fields)}) for {shown}"
            + (f" and {more} more" if more > 0 else "")
        )
    return found


def common_grid(series: Sequence[TimeSeries]) -> Grid:
    """The grid of the least common multiple step covering every series."""
    step = math.lcm(*(int(s.step) for s in series))
    start = min(int(s.start) - int(s.start) % step for s in series)
    last = max(int(s.start) + (len(s) - 1) * int(s.step) for s in series if len(s))
    return Grid(start, step, (last - last % step - start) // step + 1)


def bucket_index(series: TimeSeries, grid: Grid) -> np.ndarray:
    """For each point of ``series``, the grid bucket its time falls in."""
    times = int(series.start) + np.arange(len(series), dtype=np.int64) * int(series.step)
    return (times - grid.start) // grid.step


def pool(metrics: dict[str, dict[str, TimeSeries]], fields: Sequence[str]) -> Pooled:
    """Pool every metric's sub-counters onto their common grid."""
    everything = [series for by_field in metrics.values() for series in by_field.values()]
    grid = common_grid(everything) if any(len(s) for s in everything) else Grid(0, 1, 0)
    size = grid.length
    count = np.zeros(size)
    total = np.zeros(size)
    has_total = np.zeros(size, dtype=bool)
    low = np.full(size, np.inf)
    high = np.full(size, -np.inf)
    has_low = np.zeros(size, dtype=bool)
    has_high = np.zeros(size, dtype=bool)
    spreads: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    try:
        for by_field in metrics.values():
            arrays = {field: raw_array(series) for field, series in by_field.items()}
            index = {field: bucket_index(series, grid) for field, series in by_field.items()}
            if "count" in arrays:
                counted = arrays["count"]
                np.add.at(count, index["count"][counted.present], counted.values[counted.present])
            total_field = "sum" if "sum" in arrays else "count" if "count" in arrays else None
            if total_field is not None:
                summed = arrays[total_field]
                at = index[total_field][summed.present]
                np.add.at(total, at, summed.values[summed.present])
                has_total[at] = True
            if "min" in arrays:
                _fold_extreme(np.minimum, low, has_low, arrays["min"], index["min"])
            if "max" in arrays:
                _fold_extreme(np.maximum, high, has_high, arrays["max"], index["max"])
            if "stddev" in arrays:
                spreads.append(_spread(arrays, index))
    except UnrepresentableSeries as e:
        raise InputParameterError(f"sub-counter values that are not numbers: {e}") from e
    m2 = np.zeros(size)
    if spreads:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
            for at, n, mean_i, variance in spreads:
                deviation = mean_i - mean[at]
                np.add.at(m2, at, n * variance + n * deviation * deviation)
    return Pooled(grid, count, total, low, high, m2, has_low, has_high, has_total)


def _fold_extreme(
    combine, into: np.ndarray, seen: np.ndarray, array: SeriesArray, index: np.ndarray
) -> None:
    at = index[array.present]
    combine.at(into, at, array.values[array.present])
    seen[at] = True


def _spread(arrays: dict[str, SeriesArray], index: dict[str, np.ndarray]):
    """One metric's buckets with points: grid index, count, mean and variance."""
    counted, summed, spread = arrays["count"], arrays["sum"], arrays["stddev"]
    usable = counted.present & summed.present & spread.present & (counted.values > 0)
    n = counted.values[usable]
    return index["count"][usable], n, summed.values[usable] / n, spread.values[usable] ** 2


def _pooled_series(requestContext, name: str, pooled: Pooled, stat: str) -> TimeSeries:
    values, present = pooled.stat(stat)
    grid = pooled.grid
    return TimeSeries(
        name, grid.start, grid.end, grid.step, to_values(values, present),
        xFilesFactor=requestContext.get("xFilesFactor"),
    )


def istatPooled(requestContext, seriesList, stat="avg"):
    """
    One statistic of all the given graphite-istat metrics together, pooled exactly from their
    sub-counters: ``avg`` is the sum of all their points divided by the number of points (not an
    average of averages), ``stddev`` the standard deviation of all their points, ``min`` / ``max``
    the extremes, ``count`` / ``sum`` the totals.

    Example:

    .. code-block:: none

      &target=istatPooled(servers.*.latency, "avg")
      &target=istatPooled(servers.*.latency, "stddev")

    The metrics must be graphite-istat metrics (their ``.count``, ``.sum`` ... leaves are read).
    """
    if stat not in POOLED_STATS:
        raise InputParameterError(f"istatPooled(): stat must be one of {', '.join(POOLED_STATS)}")
    if not seriesList:
        return []
    fields = FIELDS_FOR[stat]
    pooled = pool(sub_counter_series(requestContext, seriesList, fields), fields)
    name = f'istatPooled({path_expressions(seriesList)},"{stat}")'
    return [_pooled_series(requestContext, name, pooled, stat)]


istatPooled.group = "Combine"
istatPooled.params = [
    Param("seriesList", ParamTypes.seriesList, required=True),
    Param("stat", ParamTypes.string, default="avg", options=list(POOLED_STATS)),
]


BAND = (("min", "min"), ("avg-stddev", None), ("avg", "avg"), ("avg+stddev", None), ("max", "max"))


def istatBand(requestContext, seriesList):
    """
    A band to draw around the pooled average of the given graphite-istat metrics: five series,
    ``min``, ``avg-stddev``, ``avg``, ``avg+stddev`` and ``max``, each pooled exactly from the
    metrics' sub-counters (see ``istatPooled``).

    Example:

    .. code-block:: none

      &target=istatBand(servers.*.latency)
    """
    if not seriesList:
        return []
    pooled = pool(sub_counter_series(requestContext, seriesList, BAND_FIELDS), BAND_FIELDS)
    expression = path_expressions(seriesList)
    avg, has_avg = pooled.stat("avg")
    stddev, _ = pooled.stat("stddev")
    grid = pooled.grid
    band = []
    for label, stat in BAND:
        if stat is not None:
            values, present = pooled.stat(stat)
        else:
            values, present = (avg - stddev if label == "avg-stddev" else avg + stddev), has_avg
        band.append(
            TimeSeries(
                f'istatBand({expression},"{label}")', grid.start, grid.end, grid.step,
                to_values(values, present), xFilesFactor=requestContext.get("xFilesFactor"),
            )
        )
    return band


istatBand.group = "Combine"
istatBand.params = [Param("seriesList", ParamTypes.seriesList, required=True)]
