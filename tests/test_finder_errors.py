"""Errors surface through graphite-web: unreadable files name their metric, bad globs fail like graphite-web."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from graphite_site import Site

from graphite_istat.config import load_storage_rules
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.store import Store, shard_of

pytest_plugins = ['graphite_site']  # the session's graphite-web site


def two_metrics_in_different_files(shards: int) -> tuple[str, str]:
    first = "broken.a"
    second = next(f"healthy.m{i}" for i in range(100) if shard_of(f"healthy.m{i}", shards) != shard_of(first, shards))
    return first, second


@pytest.fixture
def broken_store(graphite_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A storage directory whose first shard file is damaged, served by its own IstatFinder alone."""
    from graphite.storage import STORE

    from graphite_istat.finder import IstatFinder

    rules = load_storage_rules(graphite_site.config.istat_conf_dir)
    with Store.open(tmp_path, rules, writable=True) as store:
        broken, healthy = two_metrics_in_different_files(store.options.shards)
        t = graphite_site.now - 10
        store.write(WriteBatch.from_points([(broken, t, 1.0)]))  # creates data/00000.ist
        store.write(WriteBatch.from_points([(healthy, t, 2.0)]))
    shard_file = tmp_path / "data" / "00000.ist"
    with open(shard_file, "r+b") as f:
        f.write(b"NOTASHRD")
    finder = IstatFinder(tmp_path)
    monkeypatch.setattr(STORE, "finders", [finder])
    yield broken, healthy
    finder.close()


def render(site: Site, *targets: str):
    client = site.client()
    client.raise_request_exception = False
    return client.get("/render", {"target": list(targets), "format": "json", "from": site.now - 600, "until": site.now})


def test_an_unreadable_metric_fails_the_render_and_is_logged_by_name(graphite_site, broken_store):
    broken, _ = broken_store
    response = render(graphite_site, broken)
    assert response.status_code == 500
    log = graphite_site.exception_log()
    assert f"cannot read metric {broken}" in log
    assert "00000.ist" in log


def test_other_series_are_still_served_and_the_broken_one_is_logged(graphite_site, broken_store):
    broken, healthy = broken_store
    response = render(graphite_site, broken, healthy)
    assert response.status_code == 200
    (series,) = json.loads(response.content)
    assert series["target"] == healthy
    assert [v for v, _ in series["datapoints"]][-2] == 2.0
    assert f"cannot read metric {broken}" in graphite_site.exception_log()


def test_a_malformed_glob_is_graphite_webs_usual_finder_error(graphite_site, monkeypatch):
    from graphite.storage import STORE

    monkeypatch.setattr(STORE, "finders", [graphite_site.istat_finder()])
    client = graphite_site.client()
    client.raise_request_exception = False
    response = client.get("/metrics/find", {"query": "exact.{h1.lat"})
    assert response.status_code == 500
    log = graphite_site.exception_log()
    assert "All requests failed for find" in log and "IstatPatternError" in log and "exact.{h1" in log


def test_beside_whisper_a_malformed_glob_only_drops_istat_results(graphite_site):
    response = graphite_site.client().get("/metrics/find", {"query": "nothing.{h1"})
    assert response.status_code == 200
    assert json.loads(response.content) == []
    info = (graphite_site.config.log_dir / "info.log").read_text()
    assert "Exception during find <FindQuery: nothing.{h1" in info


def test_a_storage_directory_not_created_yet_finds_nothing_and_says_why(graphite_site, tmp_path):
    from graphite.finders.utils import FindQuery

    from graphite_istat.finder import IstatFinder

    finder = IstatFinder(tmp_path / "not-yet")
    assert finder.find_nodes(FindQuery("*", None, None)) == []
    assert finder.get_index({}) == []
    assert f"cannot open {tmp_path / 'not-yet'}" in graphite_site.exception_log()
    # once a writer has created it, the same finder serves it
    rules = load_storage_rules(graphite_site.config.istat_conf_dir)
    with Store.open(tmp_path / "not-yet", rules, writable=True) as store:
        store.write(WriteBatch.from_points([("late.m", graphite_site.now - 10, 1.0)]))
    assert [n.path for n in finder.find_nodes(FindQuery("late.*", None, None)) if n.is_leaf] == ["late.m"]
    finder.close()

