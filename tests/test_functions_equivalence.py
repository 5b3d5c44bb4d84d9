"""Every replaced function against stock graphite-web 1.1.10 on random series: identical results.

Identical means: the same exception (type and message), or the same series
in the same order with equal name, pathExpression, tags, start, end, step,
xFilesFactor, consolidation settings, and values equal bit for bit (the
same type, None where None, the same float down to the sign of zero and
NaN). The inputs are random lists of floats, None and NaN, with mixed steps
(so graphite-web's ``normalize`` consolidates), mixed consolidation
functions and xFilesFactors, duplicate names and several path expressions;
both implementations get their own deep copy, and the copies must also end
up equal (``normalize`` changes its inputs).
"""

from __future__ import annotations

import copy
import math
import struct

import pytest
from functions_site import graphite_web  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

AGGREGATIONS = [
    "average", "avg", "avg_zero", "median", "sum", "total", "min", "max", "diff", "stddev",
    "count", "range", "rangeOf", "multiply", "last", "current", "sumSeries", "maxSeries",
    "nosuch",
]
CALLBACKS = [
    "sum", "sumSeries", "average", "avg", "averageSeries", "median", "maxSeries", "minSeries",
    "stddev", "count", "diff", "multiply", "multiplySeries", "last", "range", "avg_zero",
    "percentileOfSeries", "countSeries",
]
CONSOLIDATIONS = ["average", "avg", "sum", "max", "min", "first", "last", "avg_zero"]

pytestmark = pytest.mark.usefixtures("graphite_web")
HYPOTHESIS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

point = st.one_of(
    st.none(),
    st.none(),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, -1.0, 0.5, 3.0, 1e308, -1e308, math.inf, -math.inf]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.floats(min_value=-1000, max_value=1000).map(lambda v: round(v, 1)),
)
point_with_nan = st.one_of(point, st.just(math.nan))


@st.composite
def a_series(draw, values=point):
    from graphite.render.datalib import TimeSeries

    host = draw(st.sampled_from(["h1", "h2", "h3"]))
    metric = draw(st.sampled_from(["cpu", "mem"]))
    tagged = draw(st.booleans())
    name = f"{metric};dc={draw(st.sampled_from(['a', 'b']))};host={host}" if tagged else (
        f"srv.{host}.{metric}.{draw(st.sampled_from(['x', 'y']))}"
    )
    step = draw(st.sampled_from([1, 2, 3, 4, 6]))
    start = draw(st.integers(0, 30))
    length = draw(st.integers(0, 25))
    series = TimeSeries(
        name, start, start + step * length, step, draw(st.lists(values, min_size=length, max_size=length)),
        consolidate=draw(st.sampled_from(CONSOLIDATIONS)),
        xFilesFactor=draw(st.sampled_from([0.0, 0.3, 0.5, 1.0])),
    )
    series.pathExpression = draw(st.sampled_from(["srv.*.*.*", "srv.h1.*.x", name]))
    return series


series_lists = st.lists(a_series(), min_size=0, max_size=7)
series_lists_nan = st.lists(a_series(point_with_nan), min_size=0, max_size=7)
contexts = st.sampled_from([None, 0.0, 0.25, 0.5, 1.0]).map(lambda x: {"xFilesFactor": x})


def same_value(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    return a == b


def outcome(function, *args):
    try:
        return function(*args)
    except Exception as e:  # the comparison is the point: any error must be stock's error
        return e


def assert_same(stock_result, ours) -> None:
    if isinstance(stock_result, BaseException):
        assert isinstance(ours, type(stock_result)), (stock_result, ours)
        assert str(ours) == str(stock_result)
        return
    assert not isinstance(ours, BaseException), ours
    assert len(ours) == len(stock_result)
    for expected, got in zip(stock_result, ours, strict=True):
        assert got.name == expected.name
        assert got.pathExpression == expected.pathExpression
        assert dict(got.tags) == dict(expected.tags)
        assert (got.start, got.end, got.step) == (expected.start, expected.end, expected.step)
        assert got.xFilesFactor == expected.xFilesFactor
        assert (got.valuesPerPoint, got.consolidationFunc) == (
            expected.valuesPerPoint, expected.consolidationFunc,
        )
        assert len(list(got)) == len(list(expected))
        bad = [
            (i, e, g) for i, (e, g) in enumerate(zip(expected, got, strict=True))
            if not same_value(e, g)
        ]
        assert not bad, bad[:5]


def compare(name: str, context: dict, *args) -> None:
    """Run stock and plugin ``name`` on deep copies of ``args``; results and inputs must agree."""
    from graphite.render import functions as stock

    from graphite_istat.functions import SeriesFunctions

    stock_args = copy.deepcopy(args)
    our_args = copy.deepcopy(args)
    stock_result = outcome(stock.SeriesFunctions[name], dict(context), *stock_args)
    ours = outcome(SeriesFunctions[name], dict(context), *our_args)
    assert_same(stock_result, ours)
    for stock_input, our_input in zip(stock_args, our_args, strict=True):
        if isinstance(stock_input, list):
            assert [s.valuesPerPoint for s in stock_input] == [s.valuesPerPoint for s in our_input]


@HYPOTHESIS
@given(series=series_lists_nan, func=st.sampled_from(AGGREGATIONS), context=contexts,
       xff=st.sampled_from([None, 0.0, 0.5, 1.0]))
def test_aggregate(series, func, context, xff):
    compare("aggregate", context, series, func, xff)


@HYPOTHESIS
@given(lists=st.lists(series_lists_nan, min_size=1, max_size=3), context=contexts,
       name=st.sampled_from([
           "sumSeries", "sum", "averageSeries", "avg", "minSeries", "maxSeries", "diffSeries",
           "stddevSeries", "rangeOfSeries", "multiplySeries", "countSeries",
       ]))
def test_series_functions(lists, context, name):
    compare(name, context, *lists)


@HYPOTHESIS
@given(series=series_lists_nan, context=contexts,
       n=st.sampled_from([-5, 0, 0.001, 1, 10, 25, 33.3, 50, 75, 90, 99, 100, 101, 150,
                          1e20, 1e308, math.inf, math.nan]),
       interpolate=st.booleans())
def test_percentile_of_series(series, context, n, interpolate):
    compare("percentileOfSeries", context, series, n, interpolate)


@HYPOTHESIS
@given(series=series_lists, context=contexts, callback=st.sampled_from(CALLBACKS),
       nodes=st.lists(st.sampled_from([0, 1, 2, 3, 7, "dc", "host", "name"]), min_size=0, max_size=3))
def test_group_by_nodes(series, context, callback, nodes):
    compare("groupByNodes", context, series, callback, *nodes)
    if nodes:
        compare("groupByNode", context, series, nodes[0], callback)


@HYPOTHESIS
@given(series=series_lists, context=contexts, callback=st.sampled_from(CALLBACKS),
       tags=st.lists(st.sampled_from(["dc", "host", "name", "missing"]), min_size=0, max_size=3))
def test_group_by_tags(series, context, callback, tags):
    compare("groupByTags", context, series, callback, *tags)


@HYPOTHESIS
@given(series=series_lists, context=contexts,
       positions=st.lists(st.integers(0, 4), min_size=0, max_size=3),
       name=st.sampled_from([
           "sumSeriesWithWildcards", "averageSeriesWithWildcards", "multiplySeriesWithWildcards",
       ]))
def test_with_wildcards(series, context, positions, name):
    compare(name, context, series, *positions)


@HYPOTHESIS
@given(series=series_lists, context=contexts, func=st.sampled_from(AGGREGATIONS),
       positions=st.lists(st.integers(0, 4), min_size=0, max_size=2))
def test_aggregate_with_wildcards(series, context, func, positions):
    compare("aggregateWithWildcards", context, series, func, *positions)


def test_every_replacement_is_compared():
    from graphite_istat.functions.combine import REPLACEMENTS

    compared = {
        "aggregate", "sumSeries", "sum", "averageSeries", "avg", "minSeries", "maxSeries",
        "diffSeries", "stddevSeries", "rangeOfSeries", "multiplySeries", "countSeries",
        "percentileOfSeries", "groupByNodes", "groupByNode", "groupByTags",
        "sumSeriesWithWildcards", "averageSeriesWithWildcards", "multiplySeriesWithWildcards",
        "aggregateWithWildcards",
    }
    assert set(REPLACEMENTS) == compared


def test_integer_values_give_equal_floats():
    """The one documented difference: Python ints come back as the equal floats."""
    from graphite.render import functions as stock
    from graphite.render.datalib import TimeSeries

    from graphite_istat.functions import SeriesFunctions

    def ints():
        return [TimeSeries("a.b", 0, 30, 10, [1, None, 3]), TimeSeries("a.c", 0, 30, 10, [2, 5, None])]

    (expected,) = stock.sumSeries({}, ints())
    (got,) = SeriesFunctions["sumSeries"]({}, ints())
    assert list(expected) == [3, 5, 3] and type(expected[0]) is int
    assert list(got) == [3.0, 5.0, 3.0] and type(got[0]) is float


def test_nan_values_in_a_sorting_function_are_left_to_stock():
    from graphite.render import functions as stock
    from graphite.render.datalib import TimeSeries

    from graphite_istat.functions import SeriesFunctions

    def with_nan():
        return [
            TimeSeries("a.b", 0, 30, 10, [math.nan, 1.0, 2.0]),
            TimeSeries("a.c", 0, 30, 10, [0.5, math.nan, 7.0]),
            TimeSeries("a.d", 0, 30, 10, [0.25, 3.0, None]),
        ]

    for name, args in (("aggregate", ("median",)), ("percentileOfSeries", (50,))):
        assert_same(
            stock.SeriesFunctions[name]({}, with_nan(), *args),
            SeriesFunctions[name]({}, with_nan(), *args),
        )


def test_none_and_nan_are_told_apart():
    from graphite_istat.functions.columns import raw_array

    array = raw_array([1.0, None, math.nan, -0.0])
    assert array.present.tolist() == [True, False, True, True]
    assert math.isnan(array.values[2]) and array.values[1] == 0.0
    assert math.copysign(1.0, array.values[3]) == -1.0


@pytest.mark.parametrize("seed", range(5))
def test_signed_zeros_sort_like_sorted(seed):
    """0.0 and -0.0 are equal but print differently: ties must keep the series order."""
    import random

    from graphite.render import functions as stock
    from graphite.render.datalib import TimeSeries

    from graphite_istat.functions import SeriesFunctions

    rng = random.Random(seed)
    rows = [[rng.choice([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, None]) for _ in range(50)] for _ in range(64)]

    def series():
        return [TimeSeries(f"z.s{i}", 0, 50, 1, list(values)) for i, values in enumerate(rows)]

    for n in (10, 25, 40, 50, 60, 75):
        for interpolate in (False, True):
            assert_same(
                stock.percentileOfSeries({}, series(), n, interpolate),
                SeriesFunctions["percentileOfSeries"]({}, series(), n, interpolate),
            )
    assert_same(stock.aggregate({}, series(), "median"), SeriesFunctions["aggregate"]({}, series(), "median"))
