"""The tag index over stored names, and its expressions checked against graphite-web's own TagDB."""

from __future__ import annotations

import random

import pytest
from graphite_site import Site
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphite_istat.graphite.namespace import SUB_COUNTER_LEAVES, Leaf
from graphite_istat.graphite.tags import (
    STAT_TAG,
    TagExpression,
    TagExpressionError,
    TagIndex,
    format_tagged_name,
    parse_expressions,
    parse_tagged_name,
    resolve_tagged_path,
    stats_with_last,
    sub_counter_name,
)
from graphite_istat.protocol.metric_names import normalise_metric_name

pytest_plugins = ["graphite_site"]  # graphite-web's database, for its LocalDatabaseTagDB

METRICS = ("cpu.user", "cpu.sys", "mem.free", "disk.io")
TAG_VALUES = {"host": ("web1", "web2", "web10", "db1"), "dc": ("ams", "fra"), "role": ("front", "back")}


def corpus(seed: int, size: int) -> list[str]:
    """Canonical tagged names, each with a random subset of the tags, plus untagged names."""
    rng = random.Random(seed)
    names = {f"plain.{i}" for i in range(5)}
    while len(names) < size:
        tags = {t: rng.choice(v) for t, v in TAG_VALUES.items() if rng.random() < 0.7}
        if tags:
            names.add(format_tagged_name({"name": rng.choice(METRICS), **tags}))
    return sorted(names)


NAMES = corpus(11, 120)
INDEX = TagIndex(NAMES)


def test_the_index_holds_the_tagged_names_only():
    tagged = [n for n in NAMES if ";" in n]
    assert len(INDEX) == len(tagged) and INDEX.unparsable == 0
    assert "plain.1" not in INDEX
    for name in tagged:
        metric, *pairs = name.split(";")
        assert INDEX.tags_of(name) == {"name": metric, **dict(p.split("=") for p in pairs)}
    assert sum(INDEX.values("name").values()) == len(tagged)
    assert set(INDEX.tag_names()) == {"name", "host", "dc", "role", STAT_TAG}


def test_names_that_are_not_canonical_tagged_names_are_counted_not_indexed():
    index = TagIndex(["a;b", "a;=1", "a;x=~y", ";x=1", "a;x=1"])
    assert len(index) == 1 and index.unparsable == 4


def test_parse_and_format_agree_with_carbon_normalisation():
    for raw in ("cpu.user;host=web1;dc=ams", "m;b=2;a=1;b=3", "~x.y;t=v", 'm{host="w",dc="a"}'):
        canonical = normalise_metric_name(raw)
        tags = parse_tagged_name(canonical)
        assert tags is not None and format_tagged_name(tags) == canonical


def test_expressions_parse_like_graphite_and_refuse_what_it_refuses():
    assert TagExpression.parse("host!=~web.*").operator == "!=~"
    assert TagExpression.parse("name=a.b=c").spec == "a.b=c"  # graphite's parse_tagspec splits at the first operator
    for bad in ("host", "=x", "a;b=c", "host=x;y"):
        with pytest.raises(TagExpressionError):
            TagExpression.parse(bad)
    with pytest.raises(TagExpressionError, match="regular expression"):
        TagExpression.parse("host=~web[")
    with pytest.raises(TagExpressionError, match="empty value"):
        parse_expressions(["host!=web1", "dc=~.*"])


def test_stat_tag_selects_sub_counters_only_when_asked():
    index = TagIndex(["m;h=a", "m;h=b", "n;h=a"])
    stats_of = stats_with_last(lambda metric: metric == "m;h=b")
    assert index.find_leaves(["name=m"], stats_of) == [Leaf("m;h=a", "m;h=a"), Leaf("m;h=b", "m;h=b")]
    assert [leaf.path for leaf in index.find_leaves(["name=m", f"{STAT_TAG}=last"], stats_of)] == [
        "m;h=b;istat.stat=last"
    ]
    other = index.find_leaves(["h=a", f"{STAT_TAG}!=max"], stats_of)
    assert [(leaf.metric, leaf.stat) for leaf in other if leaf.metric == "n;h=a"] == [
        ("n;h=a", None), *(("n;h=a", s) for s in sorted(SUB_COUNTER_LEAVES) if s != "max"),
    ]
    assert index.find_leaves(["name=m", f"{STAT_TAG}="], stats_of) == index.find_leaves(["name=m"], stats_of)
    assert index.values(STAT_TAG, stats_of)["last"] == 1 and index.values(STAT_TAG, stats_of)["max"] == 3
    assert sub_counter_name("m;h=a", "max") == "m;h=a;istat.stat=max"
    assert sub_counter_name("m;z=a", "max") == "m;istat.stat=max;z=a"  # sorted in, canonical


def test_tagged_paths_resolve_in_every_spelling():
    index = TagIndex(["m;a=1;b=2", "m;a=1;b=2.max"])
    assert resolve_tagged_path(index, "m;b=2;a=1") == Leaf("m;a=1;b=2", "m;a=1;b=2")
    assert resolve_tagged_path(index, "m;a=1;b=2;istat.stat=min") == Leaf("m;a=1;b=2;istat.stat=min", "m;a=1;b=2", "min")
    assert resolve_tagged_path(index, "m;a=1;b=2.avg") == Leaf("m;a=1;b=2.avg", "m;a=1;b=2", "avg")
    assert resolve_tagged_path(index, "m;a=1;b=2.max") == Leaf("m;a=1;b=2.max", "m;a=1;b=2.max")  # stored wins
    assert resolve_tagged_path(index, "m;a=1;b=2;istat.stat=last") is None  # not stored for this metric
    assert resolve_tagged_path(index, "m;a=1") is None


def test_auto_complete_limits_and_prefixes():
    assert INDEX.auto_complete_tags([], "h", 10) == ["host"]
    assert INDEX.auto_complete_tags([], None, 2) == ["dc", "host"]
    assert INDEX.auto_complete_values([], "host", "web", 10) == ["web1", "web10", "web2"]
    assert INDEX.auto_complete_values(["name=cpu.user"], "host", "web1", 1) == ["web1"]
    queried = INDEX.auto_complete_tags(["host=web1", "dc=ams"], None, 10)
    assert "host" not in queried and "dc" not in queried and STAT_TAG in queried


# -- against graphite-web's LocalDatabaseTagDB ---------------------------------

SPECS = ("web1", "web2", "ams", "cpu.user", "front", "", "web", "web.*", "w", "cpu", "(ams|fra)", ".*", "db1|web10",
         "[a-z]+1", "^cpu", "x")


@pytest.fixture(scope="module")
def graphite_tagdb(graphite_site: Site):
    """graphite-web's own database TagDB holding the corpus, as carbon would have fed it."""
    from django.conf import settings as django_settings
    from graphite.tags.localdatabase import LocalDatabaseTagDB

    tagdb = LocalDatabaseTagDB(django_settings, cache=None, log=None)
    tagged = [n for n in NAMES if ";" in n]
    tagdb.tag_multi_series(tagged)
    yield tagdb
    tagdb.del_multi_series(tagged)  # graphite-web's database is shared by the session's tests
    assert tagdb.find_series(["name=~.+"]) == []


expressions = st.lists(
    st.builds(
        lambda tag, op, spec: f"{tag}{op}{spec}",
        st.sampled_from(("name", "host", "dc", "role", "rack")),
        st.sampled_from(("=", "!=", "=~", "!=~")),
        st.sampled_from(SPECS),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=expressions)
def test_find_selects_what_graphite_web_selects(graphite_tagdb, query):
    ours = set(NAMES) & set(graphite_tagdb.find_series(query)) if _graphite_accepts(graphite_tagdb, query) else None
    if ours is None:
        with pytest.raises(TagExpressionError):
            INDEX.find_leaves(query)
        return
    assert [leaf.path for leaf in INDEX.find_leaves(query)] == sorted(ours)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=expressions, tag=st.sampled_from(("host", "dc", "name")), prefix=st.sampled_from(("", "w", "a", "c")))
def test_auto_complete_offers_what_graphite_web_offers(graphite_tagdb, query, tag, prefix):
    if not _graphite_accepts(graphite_tagdb, query):
        return
    graphite_values = graphite_tagdb.auto_complete_values(query, tag, valuePrefix=prefix or None, limit=100)
    assert INDEX.auto_complete_values(query, tag, prefix or None, 100) == graphite_values
    graphite_tags = graphite_tagdb.auto_complete_tags(query, tagPrefix=prefix or None, limit=100)
    ours = [t for t in INDEX.auto_complete_tags(query, prefix or None, 100) if t != STAT_TAG]
    assert ours == graphite_tags


def _graphite_accepts(tagdb, query: list[str]) -> bool:
    try:
        tagdb.find_series_query(query)
    except ValueError:  # graphite-web: no expression needs a value
        return False
    return True


STORED = st.sets(st.sampled_from([*NAMES, "bad;x", "m;y=~1"]), max_size=40)


@settings(max_examples=100, deadline=None)
@given(before=STORED, after=STORED)
def test_an_updated_index_equals_one_built_afresh(before, after):
    updated = TagIndex(before)
    updated.update(after)
    fresh = TagIndex(after)
    assert len(updated) == len(fresh) and updated.unparsable == fresh.unparsable
    assert updated.tag_names() == fresh.tag_names()
    for tag in ("name", "host", "dc", "role"):
        assert updated.values(tag) == fresh.values(tag)
    for query in (["host=~w"], ["name=cpu.user", "dc!=ams"], ["role=front", "host!=~web1"]):
        assert updated.find_leaves(query) == fresh.find_leaves(query)
