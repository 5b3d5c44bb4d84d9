"""Bad input and damaged storage: every rejected point counted, nothing else lost.

Points: NaN, +-inf, timestamps that do not fit, negative, too old, too far in
the future, invalid names. Each batch mixes the bad points with good ones;
the counter of the reason goes up by exactly the number of bad points and
every good point is stored exactly.

Files: truncated, bad magic, flipped header byte, garbage or missing shard
files, torn or corrupt name index. The damaged file is named in the error;
metrics in other files still read and write.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from store_helpers import (
    RULES,
    ReferenceStore,
    compare_archive,
    read_stats,
    shape_of,
)

from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.check import check_store
from graphite_istat.store.format import HEADER_SIZE, CorruptFileError
from graphite_istat.store.names import IndexCorruptError
from graphite_istat.store.store import Store, StoreOptions, shard_of

NOW = 1_600_000_000
FUTURE_LIMIT = 600
GOOD = [
    ("small.good1", NOW - 3, 1.5),
    ("small.good1", NOW - 3, 2.5),
    ("small.good2", NOW - 10, -4.0),
    ("small.good1", NOW - 100, 7.0),
    ("small.good3.lastm", NOW - 1000, 1e12),
]


def _assert_stored_exactly(store: Store, ref: ReferenceStore, names: list[str], now: int = NOW) -> None:
    shapes = {n: shape_of(store, n) for n in names}
    cells = ref.cells(shapes)
    problems: list[str] = []
    by_layout: dict[tuple, list[str]] = {}
    for name in names:
        by_layout.setdefault(shapes[name].archives, []).append(name)
    for archives, group in by_layout.items():
        for archive in range(len(archives)):
            reads = read_stats(store, group, archive, 0, now)
            for name in group:
                problems += compare_archive(name, archive, reads[name], cells.get((name, archive), {}))
    assert not problems, "\n".join(problems[:20])


# ------------------------------------------------------------------ bad points


def _floats(bad_ts: float) -> Callable[[list], WriteBatch]:
    def build(good: list) -> WriteBatch:
        names = [n for n, _, _ in good] + ["small.good1"]
        ts = np.array([float(t) for _, t, _ in good] + [bad_ts])
        return WriteBatch.from_arrays(names, ts, [v for _, _, v in good] + [1.0])

    return build


def _ints(bad_ts: int, dtype: object = None) -> Callable[[list], WriteBatch]:
    def build(good: list) -> WriteBatch:
        names = [n for n, _, _ in good] + ["small.good2"]
        ts = [t for _, t, _ in good] + [bad_ts]
        return WriteBatch.from_arrays(names, ts if dtype is None else np.array(ts, dtype=dtype), [v for _, _, v in good] + [1.0])

    return build


def _points(*bad: tuple[str, float, float]) -> Callable[[list], WriteBatch]:
    def build(good: list) -> WriteBatch:
        mixed = good[:2] + list(bad) + good[2:]
        return WriteBatch.from_points(mixed)

    return build


BAD_POINTS = {
    "nan": (_points(("small.good1", NOW - 3, float("nan"))), {"nan": 1}),
    "nan_new_metric": (_points(("small.never", NOW - 3, float("nan"))), {"nan": 1}),
    "inf": (_points(("small.good1", NOW - 3, float("inf")), ("small.good2", NOW - 3, float("-inf"))), {"inf": 2}),
    "float_ts_1e30": (_floats(1e30), {"bad_timestamp": 1}),
    "float_ts_minus_1e30": (_floats(-1e30), {"bad_timestamp": 1}),
    "float_ts_2_pow_63": (_floats(2.0**63), {"bad_timestamp": 1}),
    "float_ts_nan": (_floats(float("nan")), {"bad_timestamp": 1}),
    "float_ts_inf": (_floats(float("inf")), {"bad_timestamp": 1}),
    "python_int_ts_2_pow_70": (_ints(2**70), {"bad_timestamp": 1}),
    "uint64_ts_above_int64": (_ints(2**63 + 5, np.uint64), {"bad_timestamp": 1}),
    "int64_max_ts": (_ints(2**63 - 1, np.int64), {"too_far_future": 1}),
    "negative_ts": (_ints(-5), {"too_old": 1}),
    "zero_ts": (_ints(0), {"too_old": 1}),
    "too_old": (_points(("small.good1", NOW - 1801, 1.0)), {"too_old": 1}),
    "far_future": (_points(("small.good1", NOW + FUTURE_LIMIT + 1, 1.0)), {"too_far_future": 1}),
    "empty_name": (_points(("", NOW - 3, 1.0)), {"invalid_name": 1}),
    "empty_level": (_points(("small..x", NOW - 3, 1.0)), {"invalid_name": 1}),
    "leading_dot": (_points((".small.x", NOW - 3, 1.0)), {"invalid_name": 1}),
    "trailing_dot": (_points(("small.x.", NOW - 3, 1.0)), {"invalid_name": 1}),
    "dot_dot_alone": (_points(("..", NOW - 3, 1.0)), {"invalid_name": 1}),
    "nul": (_points(("small.a\x00b", NOW - 3, 1.0)), {"invalid_name": 1}),
    "newline": (_points(("small.a\nb", NOW - 3, 1.0)), {"invalid_name": 1}),
    "surrogate": (_points(("small.\udcff", NOW - 3, 1.0)), {"invalid_name": 1}),
    "invalid_name_three_times": (
        _points(("small..x", NOW - 3, 1.0), ("small..x", NOW - 4, 2.0), ("small..x", NOW - 5, 3.0)),
        {"invalid_name": 3},
    ),
    "one_of_each": (
        _points(
            ("small.good1", NOW - 3, float("nan")),
            ("small.good1", NOW - 3, float("inf")),
            ("small.good1", NOW - 1801, 1.0),
            ("small.good1", NOW + FUTURE_LIMIT + 1, 1.0),
            ("small..x", NOW - 3, 1.0),
        ),
        {"nan": 1, "inf": 1, "too_old": 1, "too_far_future": 1, "invalid_name": 1},
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_POINTS))
def test_bad_points_are_counted_and_the_rest_is_stored_exactly(tmp_path: Path, case: str) -> None:
    build, expected = BAD_POINTS[case]
    ref = ReferenceStore(FUTURE_LIMIT)
    options = StoreOptions(future_limit=FUTURE_LIMIT)
    with Store.open(tmp_path, RULES, writable=True, options=options) as store:
        first = [("small.good1", NOW - 20, 3.0)]  # good1 exists before the bad batch
        store.write(WriteBatch.from_points(first), now=NOW)
        ref.write(first, NOW)
        files_before = sorted(p.name for p in (tmp_path / "data").iterdir())

        result = store.write(build(GOOD), now=NOW)

        assert result.rejected == expected
        assert result.accepted == len(GOOD)
        ref.write(GOOD, NOW)
        names = sorted({n for n, _, _ in GOOD})
        assert sorted(store.match("**")) == names
        assert result.created == len(names) - 1
        _assert_stored_exactly(store, ref, names)
        # A refused point claims no column and creates no file: the files are the good metrics'.
        files_after = {p.name for p in (tmp_path / "data").iterdir()}
        assert set(files_before) <= files_after
        assert files_after == {store.info(n).path.name for n in names}
        used = sum(len(f.used_columns()) for f in store.files().values())
        assert used == len(names)
    with Store.open(tmp_path, writable=False) as reader:
        _assert_stored_exactly(reader, ref, names)


def test_the_future_limit_and_the_longest_retention_are_inclusive(tmp_path: Path) -> None:
    # small.*: 1s:60,5s:60,30s:60. The coarsest ring holds 60 buckets of 30 s
    # ending with now's, so its oldest bucket starts 59 * 30 s before now's;
    # one second earlier would need the row of now's bucket.
    oldest = NOW - NOW % 30 - 59 * 30
    with Store.open(tmp_path, RULES, writable=True, options=StoreOptions(future_limit=FUTURE_LIMIT)) as store:
        edge = [("small.edge", NOW + FUTURE_LIMIT, 1.0), ("small.edge", oldest, 2.0), ("small.edge", oldest - 1, 4.0)]
        result = store.write(WriteBatch.from_points(edge), now=NOW)
        assert (result.accepted, result.rejected) == (2, {"too_old": 1})
        assert store.fetch_stat("small.edge", oldest - 30, NOW, now=NOW, stat="sum")[1][0] == 2.0


# ------------------------------------------------------------------ damaged shard files


def _populated_store(directory: Path) -> tuple[ReferenceStore, list[str]]:
    ref = ReferenceStore(FUTURE_LIMIT)
    names = [f"small.m{i:02d}" for i in range(40)]
    points = [(n, NOW - 1 - (i % 50), float(i)) for i, n in enumerate(names)] + [
        (n, NOW - 200, -float(i)) for i, n in enumerate(names)
    ]
    with Store.open(directory, RULES, writable=True, options=StoreOptions(shards=4)) as store:
        store.write(WriteBatch.from_points(points), now=NOW)
    ref.write(points, NOW)
    return ref, names


def _truncate(size: Callable[[Path], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        os.truncate(path, size(path))

    return damage


def _overwrite(offset: int, data: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    return damage


def _flip(offset: int) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0x10]))

    return damage


def _garbage(path: Path) -> None:
    size = path.stat().st_size
    rng = np.random.default_rng(7)
    with open(path, "wb") as f:
        for start in range(0, size, 1 << 20):
            f.write(rng.integers(0, 256, min(1 << 20, size - start), dtype=np.uint8).tobytes())


def _block_bytes(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[32:40], "little")


DAMAGE = {
    "truncated_inside_header": _truncate(lambda p: 100),
    "truncated_to_empty": _truncate(lambda p: 0),
    "truncated_inside_first_block": _truncate(lambda p: HEADER_SIZE + _block_bytes(p) // 2),
    "truncated_to_the_header": _truncate(lambda p: HEADER_SIZE),  # a whole number of (zero) blocks
    "bad_magic": _overwrite(0, b"NOTSHARD"),
    "flipped_version_byte": _flip(8),
    "flipped_archive_byte": _flip(41),
    "flipped_checksum_byte": _flip(HEADER_SIZE - 2),
    "replaced_by_garbage": _garbage,
    "deleted": lambda p: p.unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_shard_file_is_named_and_other_files_keep_working(tmp_path: Path, damage: str) -> None:
    ref, names = _populated_store(tmp_path)
    with Store.open(tmp_path, writable=False) as reader:
        victim_path = reader.info(names[0]).path
        victims = [n for n in names if reader.info(n).path == victim_path]
        healthy = [n for n in names if n not in victims]
    assert victims and healthy
    DAMAGE[damage](victim_path)

    # A reader: the damaged file's metrics come back as errors naming it; the others exactly.
    with Store.open(tmp_path, writable=False) as reader:
        result = reader.fetch(names, 0, NOW, now=NOW)
        assert sorted(result.errors) == sorted(victims), "damaged metrics must be reported, not read as empty"
        for message in result.errors.values():
            assert str(victim_path) in message
        _assert_stored_exactly(reader, ref, healthy)
        with pytest.raises(CorruptFileError, match=re.escape(str(victim_path))):
            reader.fetch_stat(victims[0], 0, NOW, now=NOW)

    # The check names it (by path, or by number when the file is gone).
    named = (str(victim_path), f"file number {int(victim_path.stem)}")
    assert any(any(n in problem for n in named) for problem in check_store(tmp_path))

    # A writer opens the store, counts points for damaged metrics, stores the rest, and new
    # metrics of the damaged file's shard go elsewhere without touching the damaged metrics.
    shards = 4
    victim_shard = shard_of(victims[0], shards)
    newcomers = [n for n in (f"small.new{i}" for i in range(200)) if shard_of(n, shards) == victim_shard][:3]
    more = [(n, NOW - 2, 10.0 + i) for i, n in enumerate(healthy)] + [(n, NOW - 2, 5.0) for n in newcomers]
    with Store.open(tmp_path, RULES, writable=True) as store:
        result = store.write(WriteBatch.from_points([(v, NOW - 2, 99.0) for v in victims] + more), now=NOW)
        assert result.rejected == {"corrupt_file": len(victims)}
        assert result.accepted == len(more)
        ref.write(more, NOW)
        _assert_stored_exactly(store, ref, healthy + newcomers)
        assert all(store.info(n).path != victim_path for n in newcomers)  # never the damaged metrics' columns
    with Store.open(tmp_path, writable=False) as reader:
        _assert_stored_exactly(reader, ref, healthy + newcomers)
        assert sorted(reader.fetch(victims, 0, NOW, now=NOW).errors) == sorted(victims)


# ------------------------------------------------------------------ damaged name index


def _last_record_bytes(name: str) -> int:
    return 1 + 2 + len(name.encode()) + 8 + 4


def test_torn_tail_of_the_name_index_loses_nothing_else(tmp_path: Path) -> None:
    ref, names = _populated_store(tmp_path)
    with open(tmp_path / "names.log", "ab") as f:
        f.write(b"\x01\x20\x00small.half")  # an append cut short by a crash
    with Store.open(tmp_path, writable=False) as reader:
        _assert_stored_exactly(reader, ref, names)
    with Store.open(tmp_path, RULES, writable=True) as store:
        _assert_stored_exactly(store, ref, names)
        store.write(WriteBatch.from_points([("small.after", NOW - 1, 1.0)]), now=NOW)
        ref.write([("small.after", NOW - 1, 1.0)], NOW)
    with Store.open(tmp_path, writable=False) as reader:
        _assert_stored_exactly(reader, ref, [*names, "small.after"])
    assert check_store(tmp_path) == []


def test_a_cut_last_index_record_loses_only_that_name_and_the_name_comes_back_clean(tmp_path: Path) -> None:
    ref, names = _populated_store(tmp_path)
    log = tmp_path / "names.log"
    lost = names[-1]  # created last: its record is the last one
    os.truncate(log, log.stat().st_size - 3)
    with Store.open(tmp_path, writable=False) as reader:
        assert lost not in reader
        _assert_stored_exactly(reader, ref, names[:-1])
    with Store.open(tmp_path, RULES, writable=True) as store:
        result = store.write(WriteBatch.from_points([(lost, NOW - 7, 42.0)]), now=NOW)
        assert (result.accepted, result.created) == (1, 1)
        fresh = ReferenceStore(FUTURE_LIMIT)
        fresh.write([(lost, NOW - 7, 42.0)], NOW)
        _assert_stored_exactly(store, fresh, [lost])  # none of the old column's data shows through
        _assert_stored_exactly(store, ref, names[:-1])
    assert check_store(tmp_path) == []


def test_a_corrupt_index_record_is_a_clear_error_and_releases_the_lock(tmp_path: Path) -> None:
    _populated_store(tmp_path)
    log = tmp_path / "names.log"
    _flip(16 + 5)(log)  # inside the first record's name
    for writable in (False, True, True):  # twice writable: a failed open must not keep the lock
        with pytest.raises(IndexCorruptError, match=re.escape(str(log))):
            Store.open(tmp_path, RULES if writable else None, writable=writable)
    problems = check_store(tmp_path)
    assert any(str(log) in p for p in problems)
