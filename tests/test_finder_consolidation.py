"""maxDataPoints consolidation from sub-counters: exact, aligned, never more points than asked."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphite_istat.config import parse_storage_aggregation, parse_storage_schemas
from graphite_istat.config.storage_rules import StorageRules
from graphite_istat.graphite.consolidation import consolidate, consolidated_grid
from graphite_istat.graphite.namespace import Leaf
from graphite_istat.graphite.series import read_leaves
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.read import TimeGrid
from graphite_istat.store.store import Store

STEP = 10
EPS = float(np.finfo(np.float64).eps)
NOW = 1_700_000_000 - 1_700_000_000 % 3600
RULES = StorageRules(
    parse_storage_schemas("[all]\nmatch-all = true\nretentions = 10s:1d\n"),
    parse_storage_aggregation(
        "[lasts]\npattern = ^lasts\\.\naggregationMethod = last\nxFilesFactor = 0\n"
        "[all]\nmatch-all = true\naggregationMethod = average\nxFilesFactor = 0\n"
    ),
)


@pytest.mark.parametrize("points", [5, 99, 100, 101, 360, 8640])
@pytest.mark.parametrize("max_points", [1, 2, 7, 50, 100])
def test_the_grid_has_at_most_max_points_and_covers_the_original(points, max_points):
    grid = TimeGrid(0, NOW - points * STEP + 30, NOW + 30, STEP)
    assert grid.points == points
    coarse = consolidated_grid(grid, max_points)
    if points <= max_points:
        assert coarse is None
        return
    assert coarse is not None
    assert coarse.points <= max_points
    assert coarse.step % STEP == 0
    assert coarse.start <= grid.start and coarse.end >= grid.end
    assert (grid.start - coarse.start) % STEP == 0 and (coarse.end - grid.end) % STEP == 0


def test_buckets_are_aligned_on_their_width_so_graphs_do_not_jitter():
    for shift in range(0, 600, STEP):
        grid = TimeGrid(0, NOW - 3600 + shift, NOW + shift, STEP)
        coarse = consolidated_grid(grid, 100)
        assert coarse.start % coarse.step == 0


points_strategy = st.lists(
    st.tuples(st.integers(0, 3599), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
    min_size=1,
    max_size=300,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=points_strategy, max_points=st.integers(1, 80))
def test_consolidated_values_equal_the_raw_points_regrouped(tmp_path_factory, raw, max_points):
    directory = tmp_path_factory.mktemp("consolidation")
    names = ["plain.m", "lasts.m"]
    points = [(name, NOW - 3600 + offset, value) for name in names for offset, value in raw]
    with Store.open(directory, RULES, writable=True) as store:
        store.write(WriteBatch.from_points(points), now=NOW)
        leaves = [Leaf(f"{m}.{s}", m, s) for m in names for s in ("avg", "count", "sum", "min", "max", "stddev")]
        leaves += [Leaf(m, m) for m in names] + [Leaf("lasts.m.last", "lasts.m", "last")]
        read = read_leaves(store, leaves, NOW - 3600, NOW, NOW, max_points=max_points)
    first = read.series["plain.m.max"]
    assert len(first.values) <= max_points
    for leaf in leaves:
        series = read.series[leaf.path]
        assert (series.start, series.step) == (first.start, first.step)
        for i, value in enumerate(series.values):
            lo = series.start + i * series.step
            bucket = [(t, v) for t, v in raw if lo <= NOW - 3600 + t < lo + series.step]
            # read_leaves grids start after ``from`` like whisper: points at from itself are outside
            bucket = [(t, v) for t, v in bucket if NOW - 3600 + t >= NOW - 3600 + STEP]
            check(leaf, value, bucket)


def check(leaf: Leaf, value: float | None, bucket: list[tuple[int, float]]) -> None:
    if not bucket:
        assert value is None or (leaf.stat == "count" and value == 0)
        return
    values = [v for _, v in bucket]
    stat = leaf.stat or ("last" if leaf.metric.startswith("lasts.") else "avg")
    if stat == "count":
        assert value == len(values)
    elif stat == "min":
        assert value == min(values)
    elif stat == "max":
        assert value == max(values)
    elif stat == "last":
        # the latest timestamp wins; of equal ones, the point received last
        assert value == sorted(bucket, key=lambda point: point[0])[-1][1]
    elif stat == "sum":
        assert value == pytest.approx(math.fsum(values), rel=1e-9, abs=1e-6)
    elif stat == "avg":
        assert value == pytest.approx(math.fsum(values) / len(values), rel=1e-9, abs=1e-6)
    elif stat == "stddev":
        # stddev comes from sumsq/n - avg**2: the rounding of both terms bounds its error
        mean_square = math.fsum(v * v for v in values) / len(values)
        assert value**2 == pytest.approx(float(np.var(values)), abs=16 * EPS * mean_square + 1e-300)


def test_no_max_points_or_few_points_leave_the_set_as_it_is(tmp_path):
    with Store.open(tmp_path, RULES, writable=True) as store:
        store.write(WriteBatch.from_points([("plain.m", NOW - 100, 1.0)]), now=NOW)
        (series_set,) = store.fetch(["plain.m"], NOW - 600, NOW, NOW).sets
    assert consolidate(series_set, None) is series_set
    assert consolidate(series_set, series_set.grid.points) is series_set
