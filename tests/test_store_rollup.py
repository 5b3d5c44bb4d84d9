"""Rollups: coarse archives are filled from the finest one when their buckets end, and read the same before and after.

A coarse bucket that has not ended is read from the finest archive; once the
writer's clock is a finest step past its end it is stored in the coarse
archive, and ``rolled_until`` in the block header says so (format.py,
"Rollups"). Checked here: every stat and default value after every batch of
a clock that moves in small steps (so reads land before, on and after
rollups) against the brute-force model; the cells really are stored when
the bucket ends and not before; a ``rolled_until`` left behind (as a crash
between a rollup and storing it leaves it) reads the same and is rolled up
again; an archive coarser than the finest retention is written point by point;
``check`` names a ``rolled_until`` in the future or behind the block's data.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import RULES, ReferenceStore, compare_archive, read_stats, shape_of

from graphite_istat.config import StorageRules, parse_storage_aggregation, parse_storage_schemas
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.check import check_store
from graphite_istat.store.format import COUNT_MAX, ArchiveSpec, Layout
from graphite_istat.store.store import SLOT_SHIFT, Store, StoreOptions

NOW = 1_600_000_000
METRICS = ("small.a", "small.b", "small.c.lastm")  # 1s:60,5s:60,30s:60


def _reads_match_the_model(directory: Path, ref: ReferenceStore, now: int) -> list[str]:
    problems: list[str] = []
    with Store.open(directory, writable=False) as reader:
        names = [n for n in METRICS if n in reader]
        if not names:
            return problems
        shapes = {n: shape_of(reader, n) for n in names}
        cells = ref.cells(shapes)
        for archive in range(3):
            reads = read_stats(reader, names, archive, now - 1800, now)
            for name in names:
                problems += compare_archive(
                    name, archive, reads[name], cells.get((name, archive), {})
                )
            # the one-pass default values agree with the counters' on waiting buckets too
            fused = reader.fetch_values(names, now - 1800, now, now=now, archive=archive)
            for series_set in fused.sets:
                for row, name in enumerate(series_set.names):
                    expected = reads[name].default
                    got = series_set.values[row]
                    if not np.allclose(got, expected, rtol=1e-9, equal_nan=True):
                        problems.append(
                            f"{name} archive {archive}: fetch_values {got} != fetch {expected}"
                        )
    return problems


@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_read_matches_the_model_while_the_clock_moves_through_rollups(data) -> None:
    now = NOW + data.draw(st.integers(0, 29))
    tile_rows = data.draw(st.sampled_from([8, 7]))
    ref = ReferenceStore(future_limit=120)
    values = st.one_of(st.integers(-1000, 1000).map(float), st.floats(-1e6, 1e6, allow_nan=False))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "store"
        options = StoreOptions(shards=1, future_limit=120, tile_rows=tile_rows)
        with Store.open(directory, RULES, writable=True, options=options) as store:
            for _ in range(data.draw(st.integers(2, 8))):
                now += data.draw(st.integers(0, 40))
                # mostly recent points, some late ones for buckets already rolled up, some ahead
                ages = st.one_of(st.integers(-3, 12), st.integers(13, 400), st.integers(-120, -4))
                points = data.draw(
                    st.lists(
                        st.tuples(st.sampled_from(METRICS), ages, values), min_size=1, max_size=20
                    )
                )
                batch = [(name, now - age, value) for name, age, value in points]
                result = store.write(WriteBatch.from_points(batch), now=now)
                accepted, rejected = ref.write(batch, now)
                assert (result.accepted, result.rejected) == (accepted, rejected)
                problems = _reads_match_the_model(directory, ref, now)
                assert not problems, "\n".join(problems[:10])


def _coarse_cell(store: Store, name: str, archive: int, bucket: int) -> tuple[int, int, float]:
    """(row stamp, count, sum) of one stored coarse cell, as the file holds it."""
    info = store.info(name)
    shard_file = store.files()[info.slot >> SLOT_SHIFT]
    block, col = divmod(info.slot & COLUMN_BITS, shard_file.block_columns)
    view = shard_file.archives[archive]
    row = bucket // view.step % view.rows
    count = int(view.cells("count", np.array(block), np.array(row), np.array(col))) & COUNT_MAX
    total = float(view.cells("sum", np.array(block), np.array(row), np.array(col)))
    return int(view.stamps[block, row]), count, total


COLUMN_BITS = (1 << SLOT_SHIFT) - 1


def test_a_bucket_is_stored_in_the_coarse_archive_once_it_has_ended_and_not_before(
    tmp_path: Path,
) -> None:
    start = NOW - NOW % 30
    with Store.open(tmp_path / "store", RULES, writable=True) as store:
        for second in range(30):
            store.write(
                WriteBatch.from_points([("small.a", start + second, float(second))]),
                now=start + second,
            )
        # the 30 s bucket has not ended: only the finest archive holds it
        assert _coarse_cell(store, "small.a", 2, start)[0] != start
        shard_file = store.files()[store.info("small.a").slot >> SLOT_SHIFT]
        assert shard_file.rolled_until[0] == start + 29 - 1
        fetched = store.fetch(["small.a"], start - 1, start + 29, now=start + 29, archive=2)
        assert fetched.sets[0].counters["count"][0].tolist()[-1] == 30
        # a finest step after its end it is rolled up: stored whole
        store.write(WriteBatch.from_points([("small.a", start + 31, 100.0)]), now=start + 31)
        assert _coarse_cell(store, "small.a", 2, start) == (start, 30, float(sum(range(30))))
        assert shard_file.rolled_until[0] == start + 30
        # a late point for it is merged into the stored cell, as into the finest one
        store.write(WriteBatch.from_points([("small.a", start + 5, 1000.0)]), now=start + 32)
        assert _coarse_cell(store, "small.a", 2, start) == (
            start,
            31,
            float(sum(range(30))) + 1000.0,
        )
        read = store.fetch(["small.a"], start - 1, start + 32, now=start + 32, archive=2).sets[0]
        assert read.counters["count"][0].tolist()[-2:] == [31, 1]


def test_a_rolled_until_left_behind_reads_the_same_and_is_rolled_up_again(tmp_path: Path) -> None:
    start = NOW - NOW % 30
    points = [
        (name, start + s, float(s * (i + 1))) for s in range(75) for i, name in enumerate(METRICS)
    ]
    with Store.open(
        tmp_path / "store", RULES, writable=True, options=StoreOptions(shards=1)
    ) as store:
        for s in range(75):
            store.write(WriteBatch.from_points(points[3 * s : 3 * s + 3]), now=start + s)
        now = start + 74

        def everything() -> np.ndarray:
            reads = [store.fetch(list(METRICS), now - 300, now, now=now, archive=a) for a in (1, 2)]
            return np.concatenate([s.default_values().ravel() for r in reads for s in r.sets])

        before = everything()
        shard_file = store.files()[store.info("small.a").slot >> SLOT_SHIFT]
        assert _coarse_cell(store, "small.a", 2, start + 30)[1] == 30
        shard_file.rolled_until[:] = start + 5  # as if the last rollups were never recorded as done
        assert np.array_equal(everything(), before, equal_nan=True)
        store.write(WriteBatch.from_points([("small.d", now + 1, 1.0)]), now=now + 1)  # same block
        assert shard_file.rolled_until[0] == now
        assert _coarse_cell(store, "small.a", 2, start + 30) == (
            start + 30,
            30,
            float(sum(range(30, 60))),
        )
        assert np.array_equal(everything(), before, equal_nan=True)


def test_an_archive_coarser_than_the_finest_retention_is_written_point_by_point(
    tmp_path: Path,
) -> None:
    schemas = "[short]\npattern = .\nretentions = 1s:120,60s:60,3600s:24\n"
    rules = StorageRules(parse_storage_schemas(schemas), parse_storage_aggregation(""))
    layout = Layout(
        (ArchiveSpec(1, 120), ArchiveSpec(60, 60), ArchiveSpec(3600, 24)), with_last=False
    )
    assert [layout.rolls_up(a) for a in range(3)] == [False, True, False]
    start = NOW - NOW % 3600
    with Store.open(tmp_path / "store", rules, writable=True) as store:
        store.write(
            WriteBatch.from_points([("a", start + 1, 2.0), ("a", start + 2, 3.0)]), now=start + 2
        )
        assert _coarse_cell(store, "a", 2, start) == (start, 2, 5.0)  # at once
        assert _coarse_cell(store, "a", 1, start)[0] != start  # when the minute has ended
        store.write(WriteBatch.from_points([("a", start + 61, 4.0)]), now=start + 61)
        assert _coarse_cell(store, "a", 1, start) == (start, 2, 5.0)
        assert _coarse_cell(store, "a", 2, start) == (start, 3, 9.0)


def test_check_names_a_rolled_until_in_the_future_or_behind_the_data(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    with Store.open(directory, RULES, writable=True, options=StoreOptions(shards=1)) as store:
        store.write(WriteBatch.from_points([("small.a", NOW + s, 1.0) for s in range(5)]), now=NOW + 5)
    assert check_store(directory) == []
    for corrupt, complaint in ((2**40, "is in the future"), (0, "is behind its newest")):
        with Store.open(directory, RULES, writable=True) as store:
            shard_file = store.files()[store.info("small.a").slot >> SLOT_SHIFT]
            good = int(shard_file.rolled_until[0])
            shard_file.rolled_until[0] = corrupt
        problems = check_store(directory)
        assert len(problems) == 1 and complaint in problems[0] and "block 0" in problems[0], problems
        with Store.open(directory, RULES, writable=True) as store:
            store.files()[store.info("small.a").slot >> SLOT_SHIFT].rolled_until[0] = good
    assert check_store(directory) == []
