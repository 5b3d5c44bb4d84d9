"""Drop-in numpy versions of graphite-web 1.1's combining functions.

``sumSeries``, ``averageSeries`` ... and the grouping functions that call
them give what stock graphite-web 1.1.10 gives -- the same values bit for
bit, the same ``None`` rows and xFilesFactor decisions, names, tags, start,
end and step -- but compute each output series with a handful of numpy
operations per input series instead of Python code per point.

What stays stock, by design:

* graphite-web's own helpers decide everything that is not per point:
  ``normalize`` (the common step, start and end, and the consolidation it
  sets on every input series), ``aggKey`` (group keys), ``getAggFunc``
  (which aggregation names exist, and its error), ``constantLine``;
* whenever the arrays cannot reproduce a result exactly -- values that are
  not floats or None, an unknown consolidation function, NaN values in a
  function that sorts, ``RENDER_TRIM_RECENT_IN_AGGREGATE`` -- the call goes
  to the stock function itself.

Each function carries the stock function's ``group``, ``params`` and
documentation, so graphite-web validates arguments and lists them as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType

import numpy as np
from django.conf import settings
from graphite.errors import InputParameterError, NormalizeEmptyResultError
from graphite.functions import getAggFunc
from graphite.logger import log
from graphite.render import functions as stock
from graphite.render.datalib import TimeSeries

from .columns import (
    CONSOLIDATION_ALIASES,
    CONSOLIDATIONS,
    SeriesArray,
    UnrepresentableSeries,
    series_array,
    to_values,
)
from .kernels import (
    AGGREGATION_ALIASES,
    SORTING,
    kernel_for,
    percentile_rows,
    row_counts,
    row_mask,
)

MAX_EXACT_RANK = 2.0**53


def replaces(stock_function: Callable) -> Callable[[Callable], Callable]:
    """Give ``function`` the stock function's metadata: group, params, aggregator flag, doc."""

    def mark(function: Callable) -> Callable:
        function.group = stock_function.group
        function.params = stock_function.params
        if getattr(stock_function, "aggregator", False):
            function.aggregator = True
        function.__doc__ = stock_function.__doc__
        return function

    return mark


def path_expressions(series_list: Sequence[TimeSeries]) -> str:
    """The distinct path expressions, in order of first appearance, comma-separated."""
    return ",".join(dict.fromkeys(series.pathExpression for series in series_list))


def common_tags(series_list: Sequence[TimeSeries]) -> dict[str, str]:
    """The tags every series has with the same value, in the first series' order."""
    tags = dict(series_list[0].tags)
    for series in series_list[1:]:
        if not tags:
            break
        other = series.tags
        tags = {tag: value for tag, value in tags.items() if tag in other and other[tag] == value}
    return tags


def effective_x_files_factor(x_files_factor: float | None) -> float:
    return x_files_factor if x_files_factor is not None else settings.DEFAULT_XFILES_FACTOR


def as_arrays(series_list: Sequence[TimeSeries], request_context: dict | None) -> list[SeriesArray]:
    """Every series as the points it yields when iterated (raises ``UnrepresentableSeries``)."""
    return [series_array(series, request_context) for series in series_list]


def consolidated_length(series: TimeSeries) -> int:
    """How many points iterating ``series`` yields."""
    per_point = int(series.valuesPerPoint)
    if per_point <= 1:
        return len(series)
    function = CONSOLIDATION_ALIASES.get(series.consolidationFunc, series.consolidationFunc)
    if function not in CONSOLIDATIONS:
        raise UnrepresentableSeries(f"consolidation function {function!r}")
    return -(-len(series) // per_point)


# -- aggregate and its aliases ----------------------------------------------------


@replaces(stock.aggregate)
def aggregate(requestContext, seriesList, func, xFilesFactor=None):
    name_func = func[:-6] if func[-6:] == "Series" else func
    getAggFunc(name_func, func)  # unknown names fail exactly as in stock
    if not seriesList:
        return []
    wrapped = [seriesList] if isinstance(seriesList[0], TimeSeries) else seriesList
    try:
        series_list, start, end, step = stock.normalize(wrapped)
    except NormalizeEmptyResultError:
        return []
    if settings.RENDER_TRIM_RECENT_IN_AGGREGATE:
        return stock.aggregate(requestContext, seriesList, func, xFilesFactor)
    canonical = AGGREGATION_ALIASES.get(name_func, name_func)
    try:
        arrays = as_arrays(series_list, requestContext)
    except UnrepresentableSeries:
        return stock.aggregate(requestContext, seriesList, func, xFilesFactor)
    if canonical in SORTING and any(array.has_nan for array in arrays):
        return stock.aggregate(requestContext, seriesList, func, xFilesFactor)

    x_files_factor = xFilesFactor if xFilesFactor is not None else requestContext.get("xFilesFactor")
    length = max(len(array) for array in arrays)
    with np.errstate(all="ignore"):  # overflow to inf and inf - inf are stock results too
        values, valid = kernel_for(canonical)(arrays, length)
    counts = row_counts(arrays, length)
    shown = valid & row_mask(counts, len(arrays), effective_x_files_factor(x_files_factor))

    name = f"{name_func}Series({path_expressions(series_list)})"
    tags = common_tags(series_list)
    if "name" not in tags:
        tags["name"] = name
    tags["aggregatedBy"] = name_func
    return [
        TimeSeries(
            name, start, end, step, to_values(values, shown),
            xFilesFactor=x_files_factor, tags=tags,
        )
    ]


@replaces(stock.sumSeries)
def sumSeries(requestContext, *seriesLists):
    return aggregate(requestContext, seriesLists, "sum")


@replaces(stock.averageSeries)
def averageSeries(requestContext, *seriesLists):
    return aggregate(requestContext, seriesLists, "average")


@replaces(stock.minSeries)
def minSeries(requestContext, *seriesLists):
    return aggregate(requestContext, seriesLists, "min")


@replaces(stock.maxSeries)
def maxSeries(requestContext, *seriesLists):
    return aggregate(requestContext, seriesLists, "max")


@replaces(stock.diffSeries)
def diffSeries(requestContext, *seriesLists):
    return aggregate(requestContext, seriesLists, "diff")


@replaces(stock.stddevSeries)
def stddevSeries(requestContext, *seriesLists):
    return aggregate(requestContext, seriesLists, "stddev")


@replaces(stock.rangeOfSeries)
def rangeOfSeries(requestContext, *seriesLists):
    return aggregate(requestContext, seriesLists, "rangeOf")


@replaces(stock.multiplySeries)
def multiplySeries(requestContext, *seriesLists):
    if len(seriesLists) == 1 and len(seriesLists[0]) == 1:
        return seriesLists[0]  # stock returns a lone series untouched
    return aggregate(requestContext, seriesLists, "multiply")


# -- other combining functions ------------------------------------------------------


@replaces(stock.countSeries)
def countSeries(requestContext, *seriesLists):
    if not seriesLists:
        return stock.countSeries(requestContext)
    series_list, start, end, step = stock.normalize(seriesLists)
    try:
        rows = max(consolidated_length(series) for series in series_list)
    except UnrepresentableSeries:
        return stock.countSeries(requestContext, *seriesLists)
    name = f"countSeries({path_expressions(series_list)})"
    series = TimeSeries(
        name, start, end, step, [len(series_list)] * rows,
        xFilesFactor=requestContext.get("xFilesFactor"),
    )
    series.pathExpression = name
    return [series]


@replaces(stock.percentileOfSeries)
def percentileOfSeries(requestContext, seriesList, n, interpolate=False):
    if n <= 0:
        raise InputParameterError("The requested percent is required to be greater than 0")
    if not seriesList:
        return []
    name = f"percentileOfSeries({seriesList[0].pathExpression},{n:g})"
    series_list, start, end, step = stock.normalize([seriesList])
    # Ranks past 2**53 fail in stock with errors that depend on their size: stock raises them.
    fallback = not n / 100.0 * (len(series_list) + 1) < MAX_EXACT_RANK
    if not fallback:
        try:
            arrays = as_arrays(series_list, requestContext)
        except UnrepresentableSeries:
            fallback = True
        else:
            fallback = any(array.has_nan for array in arrays)
    if fallback:
        return stock.percentileOfSeries(requestContext, seriesList, n, interpolate)
    length = max(len(array) for array in arrays)
    with np.errstate(all="ignore"):
        values, present = percentile_rows(arrays, length, n, bool(interpolate))
    return [
        TimeSeries(
            name, start, end, step, to_values(values, present),
            xFilesFactor=requestContext.get("xFilesFactor"),
        )
    ]


# -- grouping -------------------------------------------------------------------------


def apply_callback(requestContext, series_list: list, callback: str) -> TimeSeries:
    """What stock groupByNodes/groupByTags do with one group: a series function, else aggregate."""
    if callback in stock.SeriesFunctions:
        function = REPLACEMENTS.get(callback, stock.SeriesFunctions[callback])
        return function(requestContext, series_list)[0]
    return aggregate(requestContext, series_list, callback)[0]


@replaces(stock.groupByNodes)
def groupByNodes(requestContext, seriesList, callback, *nodes):
    groups: dict[str, list] = {}
    for series in seriesList:
        groups.setdefault(stock.aggKey(series, nodes), []).append(series)
    combined = []
    for key, members in groups.items():
        series = apply_callback(requestContext, members, callback)
        series.name = key
        combined.append(series)
    return combined


@replaces(stock.groupByNode)
def groupByNode(requestContext, seriesList, nodeNum, callback="average"):
    return groupByNodes(requestContext, seriesList, callback, nodeNum)


@replaces(stock.groupByTags)
def groupByTags(requestContext, seriesList, callback, *tags):
    tagdb = stock.STORE.tagdb
    if tagdb is None:
        log.info("groupByTags called but no TagDB configured")
        return []
    if not tags:
        raise InputParameterError("groupByTags(): no tags specified")
    if "name" not in tags:
        names = {series.tags["name"] for series in seriesList}
        name = next(iter(names)) if len(names) == 1 else callback
    groups: dict[str, list] = {}
    for series in seriesList:
        if "name" not in tags:
            head, keyed = name, tags
        else:
            head, keyed = series.tags["name"], [tag for tag in tags if tag != "name"]
        pairs = sorted(tag + "=" + series.tags.get(tag, "") for tag in keyed)
        groups.setdefault(";".join([head, *pairs]), []).append(series)
    combined = []
    for key, members in groups.items():
        series = apply_callback(requestContext, members, callback)
        series.name = key
        series.pathExpression = key
        series.tags = tagdb.parse(key).tags
        combined.append(series)
    return combined


@replaces(stock.aggregateWithWildcards)
def aggregateWithWildcards(requestContext, seriesList, func, *positions):
    groups: dict[str, list] = {}
    for series in seriesList:
        kept = [part for index, part in enumerate(series.name.split(".")) if index not in positions]
        groups.setdefault(".".join(kept), []).append(series)
    combined = []
    for key, members in groups.items():
        series = aggregate(requestContext, members, func)[0]
        series.name = key
        combined.append(series)
    return combined


@replaces(stock.sumSeriesWithWildcards)
def sumSeriesWithWildcards(requestContext, seriesList, *position):
    return aggregateWithWildcards(requestContext, seriesList, "sum", *position)


@replaces(stock.averageSeriesWithWildcards)
def averageSeriesWithWildcards(requestContext, seriesList, *position):
    return aggregateWithWildcards(requestContext, seriesList, "average", *position)


@replaces(stock.multiplySeriesWithWildcards)
def multiplySeriesWithWildcards(requestContext, seriesList, *position):
    return aggregateWithWildcards(requestContext, seriesList, "multiply", *position)


REPLACEMENTS: MappingProxyType[str, Callable] = MappingProxyType(
    {
        "aggregate": aggregate,
        "aggregateWithWildcards": aggregateWithWildcards,
        "averageSeries": averageSeries,
        "averageSeriesWithWildcards": averageSeriesWithWildcards,
        "avg": averageSeries,
        "countSeries": countSeries,
        "diffSeries": diffSeries,
        "groupByNode": groupByNode,
        "groupByNodes": groupByNodes,
        "groupByTags": groupByTags,
        "maxSeries": maxSeries,
        "minSeries": minSeries,
        "multiplySeries": multiplySeries,
        "multiplySeriesWithWildcards": multiplySeriesWithWildcards,
        "percentileOfSeries": percentileOfSeries,
        "rangeOfSeries": rangeOfSeries,
        "stddevSeries": stddevSeries,
        "sum": sumSeries,
        "sumSeries": sumSeries,
        "sumSeriesWithWildcards": sumSeriesWithWildcards,
    }
)
"""Built-in names this module replaces, each with its stock name."""
