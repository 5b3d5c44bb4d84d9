"""The undo journal: a batch stopped at any point is rolled back to exactly what it found.

A kill -9 can stop the writer between any two stores. The kill tests in
test_store_exactly_once.py land wherever the timer says; here the stop is
placed deliberately: before any archive, or half way through the cells of
one (its merge cut off after some cells), for accumulating and keep-last
schemas, with and without ``last``, with rings that go round (rows taken
over for newer buckets) and points older than a row's bucket. Rolled back,
every archive of every metric reads exactly as before the batch, and the
batch written again gives what an uninterrupted write gives.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphite_istat.config import parse_storage_aggregation, parse_storage_schemas
from graphite_istat.config.storage_rules import StorageRules
from graphite_istat.store import apply
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.journal import UNDO_NAME
from graphite_istat.store.store import Store, StoreOptions

NOW = 1_700_000_000
SCHEMAS = (
    "[keep]\npattern = ^keep\\.\nretentions = 1s:40s,5s:2m,30s:10m\nfinestBucket = last\n"
    "[all]\npattern = .*\nretentions = 1s:40s,5s:2m,30s:10m\n"
)
AGGREGATION = "[last]\npattern = \\.last$\naggregationMethod = last\n"
RULES = StorageRules(parse_storage_schemas(SCHEMAS, "schemas"), parse_storage_aggregation(AGGREGATION, "agg"))
NAMES = [f"{kind}.m{i}.{method}" for kind in ("acc", "keep") for i in range(6) for method in ("avg", "last")]
OPTIONS = StoreOptions(shards=2, block_columns=4, tile_rows=3, future_limit=5)


class Interrupted(Exception):
    """Stands for the kill: raised by the writer at the chosen point."""


def visible_state(store: Store, now: int) -> dict[tuple[str, int], list[tuple]]:
    """Every non-empty cell a reader can see at ``now``, every archive, every counter.

    A row taken over for a newer bucket and rolled back stays the newer
    bucket's, empty (see journal.py): its old bucket had left the retention,
    so no read shows it either way. Hence cells, not bytes.
    """
    names = store.names()
    out = {}
    for archive in range(3):
        result = store.fetch(names, now - 700, now + 10, now=now, fields=("count", "sum", "sumsq", "min", "max", "last"), archive=archive)
        assert not result.errors and not result.missing
        for ss in result.sets:
            buckets = ss.grid.buckets()
            for row, name in enumerate(ss.names):
                counters = {k: v[row] for k, v in ss.counters.items()}
                full = np.flatnonzero(counters["count"] > 0)
                out[(name, archive)] = [
                    (int(buckets[i]), *(float(counters[k][i]) for k in sorted(counters) if k != "count"), int(counters["count"][i]))
                    for i in full.tolist()
                ]
    return out


@st.composite
def batches(draw) -> list[tuple[WriteBatch, int]]:
    """A few batches of points around an advancing now: duplicates, gaps, resends, stale and old points."""
    out = []
    now = NOW
    for _ in range(draw(st.integers(2, 4))):
        now += draw(st.sampled_from([1, 7, 45, 130, 700]))  # rings of 40+5 s, 2 min and 10 min go round
        n = draw(st.integers(1, 40))
        names = [draw(st.sampled_from(NAMES)) for _ in range(n)]
        ages = draw(st.lists(st.integers(-4, 800), min_size=n, max_size=n))
        values = draw(st.lists(st.integers(-50, 50), min_size=n, max_size=n))
        out.append((WriteBatch.from_arrays(names, np.array([now - a for a in ages]), np.array(values, float)), now))
    return out


def cut_merge_after(cells: int):
    """A stand-in for ``merge_planned`` that stores the first ``cells`` runs of its call, then stops."""
    real = apply.merge_planned

    def merge(*args):
        args = list(args)
        action = args[11].copy()
        landing = np.flatnonzero(action)
        action[landing[cells:]] = 0
        args[11] = action
        real(*args)
        raise Interrupted

    return merge


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=batches(), stop_archive=st.integers(0, 30), stop_cells=st.integers(0, 5), mid_merge=st.booleans())
def test_an_interrupted_batch_rolls_back_to_what_it_found(
    tmp_path_factory: pytest.TempPathFactory, plan, stop_archive: int, stop_cells: int, mid_merge: bool
) -> None:
    root = tmp_path_factory.mktemp("journal")
    store_dir = root / "store"
    history, (last_batch, last_now) = plan[:-1], plan[-1]
    with Store.open(store_dir, RULES, writable=True, options=OPTIONS) as store:
        for batch, now in history:
            store.write(batch, now=now)
        # Metrics the last batch creates are created before the stop: that is not undone, nor needs to be.
        store.write(WriteBatch.from_arrays(list(last_batch.names), np.zeros(len(last_batch)), np.zeros(len(last_batch))), now=last_now)
        before = visible_state(store, last_now)

        captures = 0
        capture = store._journal.capture
        real_merge = apply.merge_planned

        def capture_then_maybe_stop(*args):
            nonlocal captures
            if captures == stop_archive and not mid_merge:
                raise Interrupted  # stop before this archive's record: earlier archives are changed
            capture(*args)
            if captures == stop_archive:
                apply.merge_planned = cut_merge_after(stop_cells)  # stop half way through this archive
            captures += 1

        store._journal.capture = capture_then_maybe_stop
        try:
            store.write(last_batch, now=last_now)
            stopped = False
        except Interrupted:
            stopped = True
        finally:
            apply.merge_planned = real_merge
            store._journal.capture = capture
        if stopped:
            # The write rolled back on the spot, as the next open does after a kill.
            assert visible_state(store, last_now) == before
            assert (store_dir / UNDO_NAME).stat().st_size == 0
            store.write(last_batch, now=last_now)
        after_retry = visible_state(store, last_now)

    # The same history written without a stop gives the same files.
    straight_dir = root / "straight"
    with Store.open(straight_dir, RULES, writable=True, options=OPTIONS) as straight:
        for batch, now in history:
            straight.write(batch, now=now)
        straight.write(WriteBatch.from_arrays(list(last_batch.names), np.zeros(len(last_batch)), np.zeros(len(last_batch))), now=last_now)
        straight.write(last_batch, now=last_now)
        assert visible_state(straight, last_now) == after_retry
    shutil.rmtree(root)


def test_a_journal_left_by_a_kill_is_rolled_back_at_the_next_open(tmp_path: Path) -> None:
    """The directory as a kill -9 leaves it half way through a batch: the next open restores it from the journal."""
    names = [f"acc.m{i}.avg" for i in range(6)] + [f"keep.m{i}.last" for i in range(6)]
    live, killed = tmp_path / "live", tmp_path / "killed"
    with Store.open(live, RULES, writable=True, options=OPTIONS) as store:
        store.write(WriteBatch.from_arrays(names, np.full(12, NOW - 3), np.arange(12.0)), now=NOW)
        before = visible_state(store, NOW + 50)
        capture = store._journal.capture
        calls = 0

        def capture_then_copy(*args):
            nonlocal calls
            capture(*args)
            calls += 1
            if calls == 4:  # three archives changed, the fourth's record written but not its cells
                shutil.copytree(live, killed)

        store._journal.capture = capture_then_copy
        # More points in the same buckets, and rows of the 45 s ring taken over for newer buckets.
        store.write(WriteBatch.from_arrays(names, np.full(12, NOW + 50), np.arange(12.0) + 100), now=NOW + 50)
        store._journal.capture = capture
        assert calls > 4
        assert visible_state(store, NOW + 50) != before
    with Store.open(killed, RULES, writable=True, options=OPTIONS) as store:
        assert store.recovered_cells > 0
        assert visible_state(store, NOW + 50) == before
    with Store.open(killed, RULES, writable=True, options=OPTIONS) as store:
        assert store.recovered_cells == 0  # the journal was emptied once applied


def test_a_journal_of_the_row_format_is_refused_by_name_unless_it_holds_no_record(tmp_path: Path) -> None:
    import struct
    import zlib

    with Store.open(tmp_path, RULES, writable=True, options=OPTIONS) as store:
        store.write(WriteBatch.from_arrays(["acc.a"], [NOW], [1.0]), now=NOW)
    body = b"ISTATUND" + struct.pack("<IH", 1, 5) + b"agent" + struct.pack("<Q", 7)
    header = body + struct.pack("<I", zlib.crc32(body))
    (tmp_path / UNDO_NAME).write_bytes(header + b"\x00" * 64)
    with pytest.raises(Exception, match=r"undo.log: .*journal format version 1 .* this program reads 2"):
        Store.open(tmp_path, RULES, writable=True, options=OPTIONS)
    # A batch that had only begun (no record yet) had changed nothing: the store opens
    # (in this same process: the refused open gave back the writer and index locks).
    (tmp_path / UNDO_NAME).write_bytes(header)
    with Store.open(tmp_path, RULES, writable=True, options=OPTIONS) as store:
        assert store.recovered_cells == 0
        assert np.nanmax(store.fetch_values(["acc.a"], NOW - 30, NOW + 1, now=NOW).sets[0].values[0]) == 1.0
    assert (tmp_path / UNDO_NAME).stat().st_size == 0
