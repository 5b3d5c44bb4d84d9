"""Names handed over as bytes: the compiled name table, ``EncodedNames``, and writes that use them.

The table is checked against a dict through any mix of additions,
re-pointings, removals and growth (hypothesis); a store written with
``EncodedNames`` must hold exactly what the same points written with str
names make, creating unknown names, refusing undecodable ones by name and
counting them, and keeping up with names added and deleted between writes;
batches of such names join into one that keeps them as bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_helpers import RULES

from graphite_istat.protocol.result import concat_batches
from graphite_istat.store.batch import EncodedNames, WriteBatch
from graphite_istat.store.name_table import NameTable, encode_names, join_names
from graphite_istat.store.store import Store, StoreOptions

NOW = 1_600_000_000

name_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12)
operations = st.lists(
    st.tuples(st.sampled_from(["add", "remove"]), st.lists(name_text, max_size=40), st.integers(0, 2**40)),
    max_size=25,
)


@settings(deadline=None, max_examples=150)
@given(operations=operations, probes=st.lists(name_text, max_size=30))
def test_the_table_answers_as_a_dict_through_additions_removals_and_growth(operations, probes) -> None:
    table, model = NameTable(), {}
    for op, names, base in operations:
        encoded = encode_names(names)
        if op == "add":
            table.add(*encoded, np.arange(base, base + len(names)))
            for i, name in enumerate(names):
                model[name] = base + i
        else:
            table.remove(*encoded)
            for name in names:
                model.pop(name, None)
        assert len(table) == len(model)
    asked = list(model) + probes
    assert table.lookup(*encode_names(asked)).tolist() == [model.get(name, -1) for name in asked]
    joined = join_names(asked)
    if joined is not None:  # a name holding a newline cannot be joined
        assert table.lookup(*joined).tolist() == [model.get(name, -1) for name in asked]


def test_names_that_share_a_hash_bucket_or_a_prefix_are_told_apart() -> None:
    names = ["a", "ab", "abc", "", "b" * 300, "b" * 299 + "c"] + [f"m{i}" for i in range(5000)]
    table = NameTable()
    table.add(*encode_names(names), np.arange(len(names)))
    assert table.lookup(*encode_names([*names, "abcd", "b" * 301])).tolist() == [*range(len(names)), -1, -1]
    assert table.lookup(*join_names([*names, "abcd", "b" * 301])).tolist() == [*range(len(names)), -1, -1]
    assert join_names(["a", "b\nc"]) is None and join_names(["a", 3]) is None


def test_encoded_names_are_a_sequence_of_their_strings() -> None:
    names = ["servers.a.cpu", "ünï.cödé", "", "x"]
    encoded = EncodedNames.from_strings(names)
    assert len(encoded) == 4 and list(encoded) == names and encoded.tolist() == names
    assert encoded[1] == "ünï.cödé" and encoded[-1] == "x" and encoded[1:3] == names[1:3]
    joined = EncodedNames.concat([encoded, EncodedNames.from_strings(["y"]), EncodedNames.from_strings([])])
    assert joined.tolist() == [*names, "y"]
    with pytest.raises(IndexError):
        encoded[4]
    with pytest.raises(ValueError, match="offsets"):
        EncodedNames(np.zeros(3, np.uint8), np.array([0, 5]))


def _everything(store: Store, names: list[str]) -> dict:
    result = store.fetch(names, NOW - 3600, NOW, now=NOW, fields=("count", "sum", "min", "max"))
    return {
        name: {f: series_set.counters[f][row].tolist() for f in ("count", "sum", "min", "max")}
        for name, _, series_set, row in result.series()
    }


@settings(deadline=None, max_examples=25)
@given(
    points=st.lists(
        st.tuples(st.sampled_from(["big.a", "big.b", "small.c", "small.d.lastm"]), st.integers(0, 600), st.floats(-1e6, 1e6)),
        min_size=1,
        max_size=40,
    ),
    with_ids=st.booleans(),
)
def test_a_store_written_with_encoded_names_holds_what_str_names_make(tmp_path_factory, points, with_ids) -> None:
    names = [name for name, _, _ in points]
    ts = np.array([NOW - age for _, age, _ in points], dtype=np.int64)
    values = np.array([value for _, _, value in points])
    plain_dir, encoded_dir = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("encoded")
    with Store.open(plain_dir, RULES, writable=True) as plain:
        expected = plain.write(WriteBatch.from_arrays(names, ts, values), now=NOW)
        want = _everything(plain, sorted(set(names)))
    if with_ids:
        distinct = sorted(set(names))
        ids = np.array([distinct.index(n) for n in names], dtype=np.int64)
        batch = WriteBatch(EncodedNames.from_strings(distinct), ts, values, ids)
    else:
        batch = WriteBatch(EncodedNames.from_strings(names), ts, values)
    with Store.open(encoded_dir, RULES, writable=True) as store:
        got = store.write(batch, now=NOW)
        # and again, now that every name is known
        store.write(batch, now=NOW)
        twice = _everything(store, sorted(set(names)))
    assert (got.accepted, got.created, got.rejected) == (expected.accepted, expected.created, expected.rejected)
    for name, counters in want.items():
        assert twice[name]["count"] == [2 * c for c in counters["count"]]
        assert twice[name]["min"] == counters["min"] or not any(counters["count"])


def test_undecodable_names_are_refused_and_counted_and_the_rest_is_written(tmp_path: Path) -> None:
    good, bad = b"small.ok", b"small.\xff\xfe"
    data = np.frombuffer(good + bad, dtype=np.uint8)
    offsets = np.array([0, len(good), len(good) + len(bad)])
    batch = WriteBatch(EncodedNames(data, offsets), np.array([NOW, NOW]), np.array([1.0, 2.0]))
    with Store.open(tmp_path / "store", RULES, writable=True) as store:
        result = store.write(batch, now=NOW)
        assert (result.accepted, result.created, result.rejected) == (1, 1, {"invalid_name": 1})
        assert store.names() == ["small.ok"]


def test_names_created_and_deleted_between_encoded_writes_are_seen(tmp_path: Path) -> None:
    def write(store: Store, names: list[str], value: float):
        batch = WriteBatch(
            EncodedNames.from_strings(names), np.full(len(names), NOW), np.full(len(names), value)
        )
        return store.write(batch, now=NOW)

    options = StoreOptions(shards=2)
    with Store.open(tmp_path / "store", RULES, writable=True, options=options) as store:
        assert write(store, ["small.a", "small.b"], 1.0).created == 2
        store.write(WriteBatch.from_points([("small.c", NOW, 5.0)]), now=NOW)  # through str names
        assert write(store, ["small.a", "small.c"], 2.0).created == 0
        assert store.delete("small.a") == ["small.a"]
        result = write(store, ["small.a", "small.b"], 3.0)
        assert result.created == 1  # small.a again, in a fresh slot
        counts = _everything(store, ["small.a", "small.b", "small.c"])
        assert [sum(counts[n]["count"]) for n in ("small.a", "small.b", "small.c")] == [1, 2, 2]
        assert max(counts["small.a"]["max"][-1:]) == 3.0
        # the table itself knows every name the index holds (not only through the dict's fallback)
        everyone = EncodedNames.from_strings(["small.a", "small.b", "small.c", "small.gone"])
        slots = store.index.slots_of_encoded(everyone.data, everyone.offsets[:-1], everyone.offsets[1:]).tolist()
        assert slots == [store.info(n).slot for n in everyone.tolist()[:3]] + [-1]


def test_batches_of_encoded_names_are_joined_as_encoded_names() -> None:
    first = WriteBatch(EncodedNames.from_strings(["a", "b"]), np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0]), np.array([0, 1, 0]))
    second = WriteBatch(EncodedNames.from_strings(["c", "a"]), np.array([4, 5]), np.array([4.0, 5.0]))
    joined = concat_batches([first, second])
    assert isinstance(joined.names, EncodedNames)
    assert list(joined.point_names()) == ["a", "b", "a", "c", "a"]
    assert joined.timestamps.tolist() == [1, 2, 3, 4, 5] and joined.values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    mixed = concat_batches([first, WriteBatch(["d"], np.array([6]), np.array([6.0]))])
    assert list(mixed.point_names()) == ["a", "b", "a", "d"]
