"""Sub-counters as Graphite paths: which leaves and branches a pattern finds (no graphite-web needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphite_istat.config import parse_storage_aggregation, parse_storage_schemas
from graphite_istat.config.storage_rules import StorageRules
from graphite_istat.graphite import namespace
from graphite_istat.graphite.namespace import SUB_COUNTER_LEAVES, Leaf
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.globbing import GlobError
from graphite_istat.store.store import Store

RULES = StorageRules(
    parse_storage_schemas("[all]\nmatch-all = true\nretentions = 10s:1h\n"),
    parse_storage_aggregation(
        "[lasts]\npattern = ^lasts\\.\naggregationMethod = last\n"
        "[all]\nmatch-all = true\naggregationMethod = average\n"
    ),
)
METRICS = [
    "servers.web1.latency",
    "servers.web2.latency",
    "servers.web2.cpu.user",
    "servers.db1.latency",
    "servers.db1.latency.max",  # a stored metric named like a sub-counter: it wins
    "servers.db1.latency.p99.x",  # makes servers.db1.latency.p99 a stored branch
    "lasts.queue",
    "top",
]


def write_store(path: Path, names: list[str]) -> Store:
    with Store.open(path, RULES, writable=True) as store:
        store.write(WriteBatch.from_points([(name, 1_000_000_000, 1.0) for name in names]), now=1_000_000_000)
    return Store.open(path, writable=False)


def expanded(names: list[str]) -> list[str]:
    """The same namespace with every sub-counter stored as a metric of its own."""
    out = set(names)
    for name in names:
        stats = (*SUB_COUNTER_LEAVES, "last") if name.startswith("lasts.") else SUB_COUNTER_LEAVES
        out.update(f"{name}.{stat}" for stat in stats)
    return sorted(out)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Store]:
    root = tmp_path_factory.mktemp("namespace")
    virtual = write_store(root / "virtual", METRICS)
    reference = write_store(root / "reference", expanded(METRICS))
    yield virtual, reference
    virtual.close()
    reference.close()


def leaves(store: Store, pattern: str) -> dict[str, Leaf]:
    return namespace.find(store, pattern).leaves


def test_a_metric_is_a_leaf_of_its_default_value_and_a_branch_of_sub_counters(stores):
    store, _ = stores
    found = namespace.find(store, "servers.web1.latency")
    assert found.leaves == {"servers.web1.latency": Leaf("servers.web1.latency", "servers.web1.latency", None)}
    assert found.branches == ["servers.web1.latency"]
    below = leaves(store, "servers.web1.latency.*")
    assert sorted(below) == [f"servers.web1.latency.{s}" for s in sorted(SUB_COUNTER_LEAVES)]
    assert below["servers.web1.latency.stddev"] == Leaf("servers.web1.latency.stddev", "servers.web1.latency", "stddev")


def test_last_is_a_leaf_only_where_it_is_stored(stores):
    store, _ = stores
    assert "lasts.queue.last" in leaves(store, "lasts.queue.*")
    assert "servers.web1.latency.last" not in leaves(store, "servers.web1.latency.*")
    assert leaves(store, "servers.*.latency.last") == {}


def test_a_stored_metric_wins_over_a_sub_counter_of_the_same_name(stores):
    store, _ = stores
    found = namespace.find(store, "servers.db1.latency.max")
    assert found.leaves == {
        "servers.db1.latency.max": Leaf("servers.db1.latency.max", "servers.db1.latency.max", None)
    }
    below = leaves(store, "servers.db1.latency.*")
    assert below["servers.db1.latency.max"].stat is None
    assert below["servers.db1.latency.min"].stat == "min"
    # p99 is a stored branch, not a sub-counter: no leaf
    assert "servers.db1.latency.p99" not in below
    assert "servers.db1.latency.p99" in namespace.find(store, "servers.db1.latency.*").branches


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("servers.*.latency.{min,max}", [
            "servers.db1.latency.max", "servers.db1.latency.min",
            "servers.web1.latency.max", "servers.web1.latency.min",
            "servers.web2.latency.max", "servers.web2.latency.min",
        ]),
        ("servers.web*.latency.m[ai]?", [
            "servers.web1.latency.max", "servers.web1.latency.min",
            "servers.web2.latency.max", "servers.web2.latency.min",
        ]),
        ("servers.**.user.max", ["servers.web2.cpu.user.max"]),
        ("top.{avg,count}", ["top.avg", "top.count"]),
        ("servers.web2.**", ["servers.web2.cpu.user", *[f"servers.web2.cpu.user.{s}" for s in sorted(SUB_COUNTER_LEAVES)],
                             "servers.web2.latency", *[f"servers.web2.latency.{s}" for s in sorted(SUB_COUNTER_LEAVES)]]),
        ("servers.cpu", []),
    ],
)
def test_globs_reach_over_the_sub_counter_level(stores, pattern, expected):
    store, _ = stores
    assert sorted(leaves(store, pattern)) == sorted(expected)


def test_a_malformed_pattern_raises_glob_error(stores):
    store, _ = stores
    with pytest.raises(GlobError):
        namespace.find(store, "servers.{web1.latency")


def test_leaves_only_leaves_out_branches(stores):
    store, _ = stores
    assert namespace.find(store, "servers.*", leaves_only=True).branches == []
    assert namespace.find(store, "servers.*.latency", leaves_only=True).branches == []


LEVELS = st.sampled_from(
    ["servers", "web1", "web2", "db1", "latency", "cpu", "user", "lasts", "queue", "top", "p99", "x",
     "max", "min", "avg", "last", "stddev", "count", "sum", "sumsq",
     "*", "**", "?", "m*", "*e*", "{max,min}", "{**,max}", "[ms]??", "[!m]*", "{web*,db?}", "l*t"]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(levels=st.lists(LEVELS, min_size=1, max_size=6))
def test_the_virtual_namespace_equals_one_where_sub_counters_are_stored(stores, levels):
    """Whatever the pattern, find answers as if every sub-counter were a stored metric."""
    virtual, reference = stores
    pattern = ".".join(levels)
    found = namespace.find(virtual, pattern)
    assert sorted(found.leaves) == reference.match(pattern)
    assert sorted(found.branches) == sorted(n.path for n in reference.find(pattern) if n.has_children)
