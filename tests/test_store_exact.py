"""Exactness of the store: every stat at every archive equals a brute-force model.

Generated points (duplicates in a bucket, out of order, gaps, across archive
boundaries, older than the finest retention, in the future, large, tiny and
negative values) are written in several batches, with ``now`` fixed or
advancing, and read back at every archive through a separate reader. The
model (``store_helpers.ReferenceStore``) follows README.rst ("What is stored, exactly") and the store's
docstrings point by point. Also: keep-last schemas, the default value of each
aggregation method and xFilesFactor.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import (
    AGG_XFFS,
    ALL_FIELDS,
    METHODS,
    RULES,
    CellStats,
    ReferenceStore,
    archives_of,
    compare_archive,
    default_value,
    read_stats,
    shape_of,
    window_start,
)

from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.store import SUB_COUNTERS, Store, StoreOptions

SETTINGS = settings(
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Family:
    """Metrics sharing one schema, and the ages (seconds before ``now``) worth trying for it."""

    metrics: tuple[str, ...]
    future_limit: int
    interesting_ages: tuple[int, ...]
    age_range: tuple[int, int]
    advance: tuple[int, int]  # how far ``now`` moves between batches

    @property
    def archives(self) -> tuple[tuple[int, int], ...]:
        return archives_of(self.metrics[0])


def _boundary_ages(archives: tuple[tuple[int, int], ...], future_limit: int) -> tuple[int, ...]:
    ages = {0, 1, -1, -future_limit, -future_limit - 1}
    for step, rows in archives:
        for edge in (rows * step, (rows - 1) * step):
            ages.update({edge - step, edge - 1, edge, edge + 1, edge + step})
    return tuple(sorted(ages))


SMALL = Family(
    metrics=("small.a", "small.b", "small.c.lastm"),
    future_limit=120,
    interesting_ages=_boundary_ages(archives_of("small.a"), 120),
    age_range=(-125, 1810),
    advance=(0, 100),
)
BIG = Family(
    metrics=("big.a", "big.b.lastm"),
    future_limit=600,
    interesting_ages=_boundary_ages(archives_of("big.a")[:2], 600),
    age_range=(-610, 10 * 86400),
    advance=(0, 4 * 3600),
)

values = st.one_of(
    st.integers(-1000, 1000).map(float),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1e15, -1e15, 1e-12, -1e-12, 1e12 + 0.5, -3.25]),
    st.floats(-1e15, 1e15, allow_nan=False, allow_infinity=False),
)


@st.composite
def scenarios(draw, family: Family, advancing: bool):
    """(shards, [(now, [(name, ts, value), ...]), ...])."""
    now = draw(st.integers(1_600_000_000, 1_600_000_000 + 3 * family.archives[-1][0]))
    shards = draw(st.sampled_from([1, 8]))
    # the default tile height, and one that divides no ring, so that reads
    # and writes cross tile edges and the ring's end at odd places
    tile_rows = draw(st.sampled_from([8, 64, 7]))
    ages = st.one_of(st.sampled_from(family.interesting_ages), st.integers(*family.age_range))
    batches = []
    for b in range(draw(st.integers(1, 4))):
        if advancing and b:
            now += draw(st.integers(*family.advance))
        pool = draw(st.lists(ages, min_size=1, max_size=6))  # few times: many share a bucket
        points = draw(
            st.lists(
                st.tuples(st.sampled_from(family.metrics), st.sampled_from(pool), st.integers(0, 2), values),
                min_size=1,
                max_size=30,
            )
        )
        batches.append((now, [(name, now - age + jitter, value) for name, age, jitter, value in points]))
    return shards, tile_rows, batches


def _check_scenario(
    directory: Path, metrics: tuple[str, ...], future_limit: int, shards: int, tile_rows: int, batches
) -> None:
    ref = ReferenceStore(future_limit)
    options = StoreOptions(shards=shards, future_limit=future_limit, tile_rows=tile_rows)
    with Store.open(directory, RULES, writable=True, options=options) as store:
        for now, points in batches:
            result = store.write(WriteBatch.from_points(points), now=now)
            accepted, rejected = ref.write(points, now)
            assert (result.accepted, result.rejected) == (accepted, rejected), points
    final_now = batches[-1][0]
    with Store.open(directory, writable=False) as reader:
        names = [n for n in metrics if n in reader]
        assert {p.name for p in ref.accepted} <= set(names)
        if not names:
            return
        shapes = {n: shape_of(reader, n) for n in names}
        cells = ref.cells(shapes)
        coarsest = max(step for step, _ in shapes[names[0]].archives)
        oldest = min([p.ts for p in ref.accepted if p.ts <= final_now], default=final_now)
        from_t = oldest - oldest % coarsest - 1
        problems: list[str] = []
        for archive in range(len(shapes[names[0]].archives)):
            reads = read_stats(reader, names, archive, from_t, final_now)
            for name in names:
                problems += compare_archive(name, archive, reads[name], cells.get((name, archive), {}))
        assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("family", [SMALL, BIG], ids=["small", "big"])
@pytest.mark.parametrize("advancing", [False, True], ids=["fixed_now", "advancing_now"])
@SETTINGS
@given(data=st.data())
def test_every_stat_at_every_archive_matches_the_model(family: Family, advancing: bool, data) -> None:
    shards, tile_rows, batches = data.draw(scenarios(family, advancing))
    with tempfile.TemporaryDirectory() as tmp:
        _check_scenario(Path(tmp), family.metrics, family.future_limit, shards, tile_rows, batches)


# ------------------------------------------------------------------ keep-last (whisper semantics)

KEEP = ("keep.a", "keep.b", "keep.c.lastm")
KEEP_AND_ACCUMULATE = (*KEEP, "small.a", "small.c.lastm")  # one batch, both finest-bucket modes


@st.composite
def keep_last_scenarios(draw):
    """Points inside the finest window (whole coarse buckets of it), resends included, at a fixed now."""
    now = draw(st.integers(1_600_000_000, 1_600_000_090))
    archives = archives_of(KEEP[0])
    coarsest = archives[-1][0]
    oldest = window_start(now, *archives[0])
    oldest += -oldest % coarsest  # first whole coarsest bucket the finest window covers
    times = st.integers(oldest, now)
    batches = []
    for _ in range(draw(st.integers(1, 4))):
        pool = draw(st.lists(times, min_size=1, max_size=6))
        points = draw(
            st.lists(
                st.tuples(st.sampled_from(KEEP_AND_ACCUMULATE), st.sampled_from(pool), values), min_size=1, max_size=30
            )
        )
        batches.append((now, points))
    return draw(st.sampled_from([1, 8])), draw(st.sampled_from([8, 64, 7])), batches


@SETTINGS
@given(scenario=keep_last_scenarios())
def test_keep_last_finest_keeps_last_point_and_coarse_combine_kept_values(scenario) -> None:
    shards, tile_rows, batches = scenario
    with tempfile.TemporaryDirectory() as tmp:
        _check_scenario(Path(tmp), KEEP_AND_ACCUMULATE, 600, shards, tile_rows, batches)


def _one_metric_store(tmp_path: Path, **options) -> Store:
    return Store.open(tmp_path / "store", RULES, writable=True, options=StoreOptions(**options))


def _bucket(ts: int, step: int) -> int:
    return ts - ts % step


def _counts(store: Store, name: str, now: int) -> list[dict[int, int]]:
    """bucket -> count with data, per archive."""
    out = []
    for archive in range(len(store.info(name).layout.archives)):
        read = read_stats(store, [name], archive, 0, now)[name]
        has = read.stats["count"] > 0
        out.append(dict(zip(read.buckets[has].tolist(), read.stats["count"][has].astype(int).tolist(), strict=True)))
    return out


def test_keep_last_resend_counts_once_everywhere(tmp_path: Path) -> None:
    now = 1_600_000_020
    with _one_metric_store(tmp_path) as store:
        for value in (1.0, 5.0, 2.0):  # a sender resending one point with corrections
            store.write(WriteBatch.from_points([("keep.r", now - 3, value)]), now=now)
        t = now - 3
        assert _counts(store, "keep.r", now) == [{_bucket(t, 1): 1}, {_bucket(t, 5): 1}, {_bucket(t, 30): 1}]
        for archive in range(3):
            read = read_stats(store, ["keep.r"], archive, 0, now)["keep.r"]
            assert np.nanmax(read.stats["max"]) == 2.0  # the last point received, everywhere


def test_keep_last_point_older_than_finest_retention_accumulates_in_coarse(tmp_path: Path) -> None:
    # Documented in apply.py: beyond the finest archive a resend cannot be told from a new point.
    now = 1_600_000_020
    with _one_metric_store(tmp_path) as store:
        for value in (1.0, 3.0):
            store.write(WriteBatch.from_points([("keep.old", now - 200, value)]), now=now)
        counts = _counts(store, "keep.old", now)
        assert counts[0] == {}
        assert counts[1] == {_bucket(now - 200, 5): 2}


# ------------------------------------------------------------------ retention edges


def test_an_accepted_point_is_stored_in_some_archive(tmp_path: Path) -> None:
    # Oldest accepted time is now - longest retention (too_old is ts < now - 1800 here); a point
    # accepted there must be readable, or it must be counted as too_old: never accepted and lost.
    now = 1_600_000_007
    lost = []
    with _one_metric_store(tmp_path) as store:
        for age in range(1800 - 40, 1801):
            name = f"small.edge{age}"
            result = store.write(WriteBatch.from_points([(name, now - age, 1.0)]), now=now)
            if result.accepted:
                stored = sum(sum(c.values()) for c in _counts(store, name, now))
                if stored == 0:
                    lost.append(age)
            else:
                assert result.rejected == {"too_old": 1}
    assert not lost, f"accepted but stored in no archive at ages {lost} (now={now}, longest retention 1800 s)"


def test_a_future_point_of_one_metric_keeps_other_metrics_data(tmp_path: Path) -> None:
    # Two metrics in one block of one shard file (one shard). A point of y 40 s ahead (within
    # future_limit) maps to the finest ring row that holds x's bucket of 20 s ago.
    now = 1_600_000_000
    with _one_metric_store(tmp_path, shards=1, future_limit=600) as store:
        store.write(WriteBatch.from_points([("small.x", now - 20, 1.0)]), now=now)
        store.write(WriteBatch.from_points([("small.y", now + 40, 1.0)]), now=now)
        assert store.info("small.x").slot >> 32 == store.info("small.y").slot >> 32
        assert _counts(store, "small.x", now)[0] == {now - 20: 1}, (
            "a future point of small.y erased small.x's data in the finest archive"
        )


def test_an_empty_bucket_reads_nan_after_its_ring_row_is_reused(tmp_path: Path) -> None:
    # small.x stops sending; small.y (same block) goes on, so x's old cell in the reused finest
    # row is empty for the new bucket: every stat of it must read as null, not as +-inf.
    now = 1_600_000_000
    with _one_metric_store(tmp_path, shards=1) as store:
        store.write(WriteBatch.from_points([("small.x", now - 10, 5.0), ("small.y", now - 10, 1.0)]), now=now)
        later = now + 60  # the ring of 60 one-second rows has come round
        store.write(WriteBatch.from_points([("small.y", later - 10, 1.0)]), now=later)
        x = read_stats(store, ["small.x"], 0, 0, later)["small.x"]
        j = int(np.flatnonzero(x.buckets == later - 10)[0])
        assert x.stats["count"][j] == 0
        shown = {stat: float(v[j]) for stat, v in x.stats.items() if not np.isnan(v[j]) and stat != "count"}
        assert not shown, f"empty bucket reads {shown}"
        assert math.isnan(x.default[j])


def test_a_deleted_metric_leaves_nothing_behind_for_the_next_one_in_its_column(tmp_path: Path) -> None:
    now = 1_600_000_000
    old = [("small.gone", now - t, float(t)) for t in range(0, 1800, 7)]
    with _one_metric_store(tmp_path, shards=1) as store:
        store.write(WriteBatch.from_points(old), now=now)
        column = store.info("small.gone").slot
        assert store.delete("small.gone") == ["small.gone"]
        assert "small.gone" not in store
        fresh = [("small.fresh", now - 3, 1.0)]
        store.write(WriteBatch.from_points(fresh), now=now)
        assert store.info("small.fresh").slot == column  # the freed column is reused
        ref = ReferenceStore(600)
        ref.write(fresh, now)
        cells = ref.cells({"small.fresh": shape_of(store, "small.fresh")})
        problems = []
        for archive in range(3):
            read = read_stats(store, ["small.fresh"], archive, 0, now)["small.fresh"]
            problems += compare_archive("small.fresh", archive, read, cells.get(("small.fresh", archive), {}))
        assert not problems, "\n".join(problems[:10])


def test_points_in_the_future_show_once_now_reaches_them(tmp_path: Path) -> None:
    now = 1_600_000_000
    with _one_metric_store(tmp_path, future_limit=600) as store:
        store.write(WriteBatch.from_points([("small.f", now + 30, 4.0)]), now=now)
        assert _counts(store, "small.f", now) == [{}, {}, {}]
        later = now + 31
        t = now + 30
        assert _counts(store, "small.f", later) == [{_bucket(t, 1): 1}, {_bucket(t, 5): 1}, {_bucket(t, 30): 1}]


# ------------------------------------------------------------------ default values and xFilesFactor

AGG_METRICS = tuple(f"agg.{m}.{code}" for m in METHODS for code in AGG_XFFS)


@st.composite
def aggregation_scenarios(draw):
    now = draw(st.integers(1_600_000_000, 1_600_000_090))
    times = st.integers(now - 1799, now)
    points = draw(
        st.lists(
            st.tuples(st.sampled_from(AGG_METRICS), st.one_of(times, st.sampled_from([now, now - 1, now - 7])), values),
            min_size=1,
            max_size=80,
        )
    )
    return now, points


def _default_problems(name: str, archive: int, read, cells) -> list[str]:
    problems = []
    index = {int(b): j for j, b in enumerate(read.buckets.tolist())}
    wanted = np.full(len(read.buckets), np.nan)
    exact: dict[int, set[float]] = {}
    for bucket, pts in cells.items():
        j = index.get(bucket)
        if j is None:
            continue
        cell = CellStats.of(pts)
        exact[j] = default_value(read.method, cell, read.step, read.finest_step, read.x_files_factor)
        wanted[j] = 0.0
    got = read.default
    for j in np.flatnonzero(np.isnan(wanted) & ~np.isnan(got)).tolist()[:3]:
        problems.append(f"{name} a{archive} bucket {read.buckets[j]}: {got[j]!r} where empty")
    for j, choices in exact.items():
        g = float(got[j])
        if all(math.isnan(c) for c in choices):
            ok = math.isnan(g)
        elif read.method in ("average", "sum", "avg_zero"):
            scale = CellStats.of(cells[int(read.buckets[j])]).abs_sum
            ok = any(abs(g - c) <= 1e-9 * scale + 1e-300 for c in choices)
        else:
            ok = g in choices
        if not ok:
            problems.append(f"{name} a{archive} bucket {read.buckets[j]}: {g!r}, expected one of {choices}")
    return problems


@SETTINGS
@given(scenario=aggregation_scenarios())
def test_default_value_follows_aggregation_method_and_x_files_factor(scenario) -> None:
    now, points = scenario
    ref = ReferenceStore(600)
    with tempfile.TemporaryDirectory() as tmp:
        with Store.open(tmp, RULES, writable=True, options=StoreOptions(shards=1)) as store:
            store.write(WriteBatch.from_points(points), now=now)
            ref.write(points, now)
        with Store.open(tmp, writable=False) as reader:
            names = sorted({name for name, _, _ in points})
            shapes = {n: shape_of(reader, n) for n in names}
            cells = ref.cells(shapes)
            problems = []
            for archive in range(3):
                reads = read_stats(reader, names, archive, 0, now)
                for name in names:
                    read = reads[name]
                    assert read.method == name.split(".")[1]
                    assert read.x_files_factor == AGG_XFFS[name.split(".")[2]]
                    problems += _default_problems(name, archive, read, cells.get((name, archive), {}))
            assert not problems, "\n".join(problems[:20])


def test_x_files_factor_hides_sparse_coarse_buckets_but_not_sub_counters(tmp_path: Path) -> None:
    now = 1_600_000_019  # 5 s buckets ...05, ...10, ...15 all in the 30 s bucket 1_599_999_990
    name = "agg.average.x50"  # xFilesFactor 0.5: a 5 s bucket needs 2.5 points, a 30 s one 15
    points = [(name, now - 14, 1.0), (name, now - 13, 3.0)]  # 2 points in bucket now-14
    points += [(name, now - 9, v) for v in (1.0, 2.0, 6.0)]  # 3 points in bucket now-9
    with _one_metric_store(tmp_path) as store:
        store.write(WriteBatch.from_points(points), now=now)
        read = read_stats(store, [name], 1, now - 30, now)[name]
        by_bucket = dict(zip(read.buckets.tolist(), range(len(read.buckets)), strict=True))
        sparse, full = by_bucket[_bucket(now - 14, 5)], by_bucket[_bucket(now - 9, 5)]
        assert math.isnan(read.default[sparse])
        assert read.stats["avg"][sparse] == 2.0  # the sub-counter leaf is never hidden
        assert read.default[full] == 3.0
        coarse = read_stats(store, [name], 2, now - 60, now)[name]
        assert np.isnan(coarse.default).all()  # 5 points < 15
        assert np.nanmax(coarse.stats["count"]) == 5
        finest = read_stats(store, [name], 0, now - 60, now)[name]
        assert np.count_nonzero(~np.isnan(finest.default)) == 3  # no xFilesFactor at the finest step


def test_default_values_of_a_last_metric_with_the_default_fetch_fields(tmp_path: Path) -> None:
    # fetch() defaults to fields=SUB_COUNTERS; default_values() must still give a 'last' metric's value.
    now = 1_600_000_000
    with _one_metric_store(tmp_path) as store:
        store.write(WriteBatch.from_points([("small.d.lastm", now - 3, 2.0), ("small.d.lastm", now - 2, 7.0)]), now=now)
        result = store.fetch(["small.d.lastm"], now - 50, now, now=now)
        assert result.sets[0].default_values()[0][-3] == 7.0
        full = store.fetch(["small.d.lastm"], now - 50, now, now=now, fields=ALL_FIELDS)
        assert full.sets[0].default_values()[0][-3] == 7.0
        assert SUB_COUNTERS == ("count", "sum", "sumsq", "min", "max")


@pytest.mark.parametrize("wanted", ["all", "every third", "a few"])
@pytest.mark.parametrize("order", ["sorted", "shuffled"])
@pytest.mark.parametrize("tile_rows", [8, 64, 7])
def test_a_bulk_read_gives_each_metric_what_reading_it_alone_gives(
    tmp_path: Path, wanted, order, tile_rows
) -> None:
    """Several blocks of a file, whole and partial, in any order, with stale ring rows: row by row."""
    now = 1_600_000_000
    rng = np.random.default_rng(3)
    names = [f"small.m{i:03d}" for i in range(300)]  # one shard: three blocks of 128 columns
    with _one_metric_store(tmp_path, shards=1, tile_rows=tile_rows) as store:
        for t in range(now - 120, now, 1):  # two minutes of a 60-row ring: every row reused once
            if t % 7 == 0 and t > now - 60:
                continue  # nobody sends: the ring row keeps the stamp of a minute ago
            senders = [n for n in names if rng.random() < 0.7]
            store.write(WriteBatch.from_points([(n, t, float(rng.normal())) for n in senders]), now=now)
        subset = {"all": names, "every third": names[::3], "a few": names[5:300:40]}[wanted]
        asked = list(subset)
        if order == "shuffled":
            rng.shuffle(asked)
        for archive in range(3):
            bulk = read_stats(store, asked, archive, 0, now)
            for name in asked:
                alone = read_stats(store, [name], archive, 0, now)[name]
                np.testing.assert_array_equal(bulk[name].buckets, alone.buckets)
                for stat, values in alone.stats.items():
                    np.testing.assert_array_equal(bulk[name].stats[stat], values, err_msg=f"{name} {stat}")
                np.testing.assert_array_equal(bulk[name].default, alone.default)
            if archive == 0:
                silent = bulk[asked[0]].buckets % 7 == 0
                assert silent.any() and (bulk[asked[0]].stats["count"][silent] == 0).all()


FUSED = ("average", "sum", "min", "max", "avg_zero")


@pytest.mark.parametrize("tile_rows", [8, 64, 7])
@pytest.mark.parametrize("methods", [FUSED, METHODS], ids=["fused methods", "every method"])
@pytest.mark.parametrize("tile_major", [1, 128], ids=["series by series", "tile by tile"])
def test_fetch_values_gives_what_fetch_and_default_values_give(
    tmp_path: Path, monkeypatch, tile_rows, methods, tile_major
) -> None:
    """Every archive, xFilesFactor and method, with gaps and reused ring rows, in any order: exactly equal.

    Both orders of the copy loops (``kernels.values_from_tiles``): every block
    series by series, and every block tile by tile (which by default only
    blocks read for more than half their columns are).
    """
    from graphite_istat.store import read as read_module
    from graphite_istat.store.store import DEFAULT_VALUE

    monkeypatch.setattr(read_module, "TILE_MAJOR_FRACTION", tile_major)

    now = 1_600_000_000
    rng = np.random.default_rng(5)
    names = [f"agg.{m}.{code}" for m in methods for code in AGG_XFFS]
    # a future limit of 2 s: rings of 62, 61 and 61 rows; the finest one goes round twice
    with _one_metric_store(tmp_path, shards=2, tile_rows=tile_rows, future_limit=2) as store:
        for t in range(now - 150, now):  # rows reused, and those of the gaps left holding older buckets
            if t % 11 == 0:
                continue
            senders = [n for n in names if rng.random() < 0.6]
            points = [(n, t, float(rng.normal(0, 5))) for n in senders for _ in range(int(rng.integers(1, 3)))]
            store.write(WriteBatch.from_points(points), now=t + 1)
        asked = list(names)
        rng.shuffle(asked)
        for archive in range(3):
            fused = store.fetch_values(asked, 0, now, now=now, archive=archive)
            counted = store.fetch(asked, 0, now, now=now, fields=(DEFAULT_VALUE,), archive=archive)
            expected = {name: (grid, s.default_values()[row]) for name, grid, s, row in counted.series()}
            got = {name: (grid, s.default_values()[row]) for name, grid, s, row in fused.series()}
            assert got.keys() == expected.keys() == set(names)
            shown = 0
            for name, (grid, values) in expected.items():
                assert got[name][0] == grid
                np.testing.assert_array_equal(got[name][1], values, err_msg=f"{name} archive {archive}")
                shown += int(np.isfinite(values).sum())
            assert shown > 0
            assert all(not s.counters for s in fused.sets)


def test_a_big_fetch_reads_its_files_on_threads_and_gives_the_same_answer(tmp_path: Path, monkeypatch) -> None:
    import threading

    from graphite_istat.store import read as read_module
    from graphite_istat.store import store as store_module
    from graphite_istat.store.store import DEFAULT_VALUE

    now = 1_600_000_000
    rng = np.random.default_rng(9)
    names = [f"small.t{i:03d}" for i in range(300)]
    with _one_metric_store(tmp_path, shards=4) as store:
        for t in range(now - 40, now):
            store.write(WriteBatch.from_points([(n, t, float(rng.normal())) for n in names]), now=now)

        def answers():
            values = store.fetch_values(names, 0, now, now=now)
            counters = store.fetch(names, 0, now, now=now, fields=(DEFAULT_VALUE,))
            return (
                {n: s.default_values()[r] for n, _, s, r in values.series()},
                {n: s.stat("avg")[r] for n, _, s, r in counters.series()},
            )

        alone = answers()
        threads: set[str] = set()
        original = read_module.read_values

        def recording(*args, **kwargs):
            threads.add(threading.current_thread().name)
            return original(*args, **kwargs)

        monkeypatch.setattr(store_module, "read_values", recording)
        monkeypatch.setattr(store_module, "PARALLEL_READ_SERIES", 10)
        monkeypatch.setattr(store_module.os, "cpu_count", lambda: 4)
        together = answers()
    for before, after in zip(alone, together, strict=True):
        assert before.keys() == after.keys() == set(names)
        for name, values in before.items():
            np.testing.assert_array_equal(after[name], values)
        assert sum(int(np.isfinite(v).sum()) for v in before.values()) > 0
    assert threads and all(name.startswith("istat-read") for name in threads)


def test_a_fetch_groups_names_by_file_keeps_their_order_and_lists_the_unknown(tmp_path: Path) -> None:
    """Unknown names (in the order asked), duplicates, several files, one file: each answer where it belongs."""
    now = 1_600_000_000
    names = [f"small.g{i:02d}" for i in range(40)]
    with _one_metric_store(tmp_path, shards=4) as store:
        store.write(WriteBatch.from_arrays(names, np.full(40, now - 5), np.arange(40.0)), now=now)
        asked = ["nope.b", names[7], names[3], "nope.a", names[7], *names[20:40], names[0]]
        result = store.fetch_values(asked, now - 60, now, now=now)
        assert result.missing == ["nope.b", "nope.a"]
        files = [store.info(n).slot >> 32 for n in asked if n in store]
        assert len(set(files)) > 1
        got = []
        for s in result.sets:
            assert s.names == [n for n in asked if n in store and store.info(n).slot >> 32 == store.info(s.names[0]).slot >> 32]
            for name, row in zip(s.names, s.values, strict=True):
                got.append((name, float(np.nanmax(row))))
        assert sorted(got) == sorted((n, float(names.index(n))) for n in asked if n in store)
        set_files = [store.info(s.names[0]).slot >> 32 for s in result.sets]
        assert set_files == sorted(set(files))
        one_file = [n for n in asked[1:] if n in store and store.info(n).slot >> 32 == files[0]]
        single = store.fetch_values(one_file, now - 60, now, now=now)
        assert len(single.sets) == 1 and single.sets[0].names == one_file and not single.missing
        assert store.fetch_values(["nope.c"], now - 60, now, now=now).missing == ["nope.c"]
