"""Tagged series through stock graphite-web 1.1.10: seriesByTag, /tags, auto-completion, receiver path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from graphite_site import STEP, Site

from graphite_istat.config import load_storage_rules
from graphite_istat.protocol import parse_lines
from graphite_istat.store.store import Store

pytest_plugins = ["graphite_site"]  # the session's graphite-web site

POINTS = 6
HOSTS = {"web1": ("ams", 1.25), "web2": ("fra", 2.5), "db1": ("ams", 4.0)}


@pytest.fixture(scope="module")
def tagged(graphite_site: Site) -> dict[str, list[list[float]]]:
    """``tg.cpu.user`` per host (two points per bucket), ``tg.cpu.sys`` for web1, written normalised."""
    start = graphite_site.now - (POINTS - 1) * STEP
    written: dict[str, list[list[float]]] = {}
    points = []
    for host, (dc, base) in HOSTS.items():
        name = f"tg.cpu.user;dc={dc};host={host}"
        buckets = [[base + i, base * 3 + i / 8] for i in range(POINTS)]
        written[name] = buckets
        points += [(name, start + i * STEP + k, v) for i, b in enumerate(buckets) for k, v in enumerate(b)]
    written["tg.cpu.sys;dc=ams;host=web1"] = [[0.5 * i] for i in range(POINTS)]
    points += [("tg.cpu.sys;dc=ams;host=web1", start + i * STEP, 0.5 * i) for i in range(POINTS)]
    assert graphite_site.write(points).accepted == len(points)
    return written


@pytest.fixture
def istat_tagdb(graphite_site: Site, monkeypatch: pytest.MonkeyPatch):
    """graphite-web's STORE with ``TAGDB = 'graphite_istat.finder.IstatTagDB'``, built as graphite-web builds it."""
    from graphite.storage import get_tagdb

    from graphite_istat.finder import IstatTagDB

    tagdb = get_tagdb("graphite_istat.finder.IstatTagDB")
    assert isinstance(tagdb, IstatTagDB)
    monkeypatch.setattr(graphite_site.graphite_store, "tagdb", tagdb)
    return tagdb


def render(site: Site, target: str, **extra) -> dict[str, list]:
    params = {"target": target, "format": "json", "from": site.now - POINTS * STEP, "until": site.now, **extra}
    response = site.client().get("/render", params)
    assert response.status_code == 200, response.content
    return {s["target"]: [v for v, _ in s["datapoints"]] for s in json.loads(response.content)}


def get_json(site: Site, url: str, params: dict | None = None):
    response = site.client().get(url, params or {})
    assert response.status_code == 200, response.content
    return json.loads(response.content)


def test_series_by_tag_renders_the_default_values_of_the_matching_series(graphite_site, tagged):
    series = render(graphite_site, "seriesByTag('name=tg.cpu.user','host=~web')")
    assert sorted(series) == ["tg.cpu.user;dc=ams;host=web1", "tg.cpu.user;dc=fra;host=web2"]
    for name, values in series.items():
        assert values == [sum(b) / len(b) for b in tagged[name]]  # average, computed from sum and count


def test_tag_operators_follow_graphite(graphite_site, tagged):
    def names(*expressions: str) -> list[str]:
        return sorted(render(graphite_site, "seriesByTag(" + ",".join(repr(e) for e in expressions) + ")"))

    assert names("name=tg.cpu.user", "dc=ams") == ["tg.cpu.user;dc=ams;host=db1", "tg.cpu.user;dc=ams;host=web1"]
    assert names("name=tg.cpu.user", "dc!=ams") == ["tg.cpu.user;dc=fra;host=web2"]
    assert names("name=~tg.cpu", "host!=~web") == ["tg.cpu.user;dc=ams;host=db1"]
    # The site is shared with other tests' series: select this test's by name.
    assert names("name=~tg[.]cpu", "host=web1") == ["tg.cpu.sys;dc=ams;host=web1", "tg.cpu.user;dc=ams;host=web1"]
    assert names("name=tg.cpu.user", "host=web*") == []  # '=' is exact in graphite, no globbing
    assert names("name=tg.cpu.user", "rack=") == sorted(n for n in tagged if n.startswith("tg.cpu.user"))
    assert names("name=tg.cpu.user", "rack!=") == []


def test_series_by_tag_composes_with_functions_and_tag_functions(graphite_site, tagged):
    (total,) = render(graphite_site, "sumSeries(seriesByTag('name=tg.cpu.user'))").values()
    users = [tagged[n] for n in tagged if n.startswith("tg.cpu.user")]
    assert total == [sum(sum(h[i]) / len(h[i]) for h in users) for i in range(POINTS)]
    aliased = render(graphite_site, "aliasByTags(seriesByTag('name=tg.cpu.user','dc=ams'),'host')")
    assert sorted(aliased) == ["db1", "web1"]
    grouped = render(graphite_site, "seriesByTag('name=tg.cpu.user')|groupByTags('max','dc')")
    assert sorted(grouped) == ["tg.cpu.user;dc=ams", "tg.cpu.user;dc=fra"]
    ams = [tagged["tg.cpu.user;dc=ams;host=web1"], tagged["tg.cpu.user;dc=ams;host=db1"]]
    assert grouped["tg.cpu.user;dc=ams"] == [max(sum(h[i]) / 2 for h in ams) for i in range(POINTS)]


def test_sub_counters_through_the_stat_tag(graphite_site, tagged):
    series = render(graphite_site, "seriesByTag('name=tg.cpu.user','host=web2','istat.stat=~(min|max|count)')")
    base = "tg.cpu.user;dc=fra;host=web2"
    buckets = tagged[base]
    assert series == {
        f"{base};istat.stat=count": [2.0] * POINTS,
        f"{base};istat.stat=max": [max(b) for b in buckets],
        f"{base};istat.stat=min": [min(b) for b in buckets],
    }
    # The virtual name is a target of its own, and a tag to alias by.
    assert render(graphite_site, f"{base};istat.stat=max") == {f"{base};istat.stat=max": [max(b) for b in buckets]}
    aliased = render(graphite_site, "aliasByTags(seriesByTag('host=web2','istat.stat=stddev'),'istat.stat')")
    assert list(aliased) == ["stddev"]
    assert aliased["stddev"] == pytest.approx([math.sqrt(((b[0] - b[1]) / 2) ** 2) for b in buckets])


def test_a_tagged_name_is_a_target_in_any_tag_order(graphite_site, tagged):
    name = "tg.cpu.user;dc=ams;host=db1"
    expected = [sum(b) / 2 for b in tagged[name]]
    assert render(graphite_site, name) == {name: expected}
    assert render(graphite_site, "tg.cpu.user;host=db1;dc=ams") == {name: expected}
    assert render(graphite_site, f"{name}.max") == {f"{name}.max": [max(b) for b in tagged[name]]}
    assert render(graphite_site, "tg.cpu.user;host=nowhere") == {}


def test_auto_complete_tags_and_values(graphite_site, tagged):
    assert get_json(graphite_site, "/tags/autoComplete/tags", {"tagPrefix": "h"}) == ["host"]
    assert get_json(graphite_site, "/tags/autoComplete/tags", {"expr": "name=tg.cpu.sys"}) == [
        "dc", "host", "istat.stat",
    ]
    assert get_json(
        graphite_site, "/tags/autoComplete/values", {"tag": "host", "valuePrefix": "web", "expr": "name=tg.cpu.user"}
    ) == ["web1", "web2"]
    assert get_json(graphite_site, "/tags/autoComplete/values", {"tag": "dc", "expr": "host=web2"}) == ["fra"]
    assert get_json(graphite_site, "/tags/autoComplete/values", {"tag": "istat.stat", "valuePrefix": "s"}) == [
        "stddev", "sum",
    ]
    assert get_json(graphite_site, "/tags/autoComplete/values", {"tag": "name", "valuePrefix": "tg.cpu."}) == [
        "tg.cpu.sys", "tg.cpu.user",
    ]


def test_tags_views_answer_from_the_store(graphite_site, tagged, istat_tagdb):
    tags = [t["tag"] for t in get_json(graphite_site, "/tags")]
    assert {"dc", "host", "name", "istat.stat"} <= set(tags) and tags == sorted(tags)
    assert get_json(graphite_site, "/tags", {"filter": "ho"}) == [{"tag": "host"}]
    host = get_json(graphite_site, "/tags/host", {"filter": "web|db"})
    assert host["tag"] == "host"
    counts = {v["value"]: v["count"] for v in host["values"]}
    # The site is shared with other tests, which may tag their own series host=web1.
    assert counts["db1"] == 1 and counts["web2"] == 1 and counts["web1"] >= 2
    assert [v["value"] for v in host["values"]] == sorted(counts)
    assert graphite_site.client().get("/tags/no-such-tag").content == b"null"
    found = get_json(graphite_site, "/tags/findSeries", {"expr": ["name=tg.cpu.user", "dc=ams"]})
    assert found == ["tg.cpu.user;dc=ams;host=db1", "tg.cpu.user;dc=ams;host=web1"]
    # Tagging returns the canonical name; the series is indexed once it is written.
    tagged_name = graphite_site.client().post("/tags/tagSeries", {"path": "tg.x;b=2;a=1"})
    assert json.loads(tagged_name.content) == "tg.x;a=1;b=2"
    assert istat_tagdb.get_series("tg.cpu.user;dc=fra;host=web2").tags == {
        "name": "tg.cpu.user", "dc": "fra", "host": "web2",
    }
    assert istat_tagdb.get_series("tg.x;a=1;b=2") is None


def test_a_new_series_is_found_at_once(graphite_site, tagged, istat_tagdb):
    assert render(graphite_site, "seriesByTag('name=tg.fresh')") == {}
    graphite_site.write([("tg.fresh;zone=z9", graphite_site.now - STEP, 7.0)])
    assert render(graphite_site, "seriesByTag('name=tg.fresh')")["tg.fresh;zone=z9"][-2:] == [7.0, None]
    assert get_json(graphite_site, "/tags/zone") == {"tag": "zone", "values": [{"value": "z9", "count": 1}]}


def test_a_deleted_series_leaves_the_index(graphite_site, tagged, istat_tagdb):
    graphite_site.write([("tg.gone;zone=z8", graphite_site.now - STEP, 1.0)])
    assert list(render(graphite_site, "seriesByTag('zone=z8')")) == ["tg.gone;zone=z8"]
    rules = load_storage_rules(graphite_site.config.istat_conf_dir)
    with Store.open(graphite_site.config.istat_storage_dir, rules, writable=True) as store:
        assert store.delete("tg.gone;zone=z8") == ["tg.gone;zone=z8"]
    assert render(graphite_site, "seriesByTag('zone=z8')") == {}
    zone = get_json(graphite_site, "/tags/zone") or {"values": []}  # null once no series has the tag
    assert "z8" not in [v["value"] for v in zone["values"]]


def test_bad_expressions_are_client_errors(graphite_site, tagged, istat_tagdb):
    client = graphite_site.client()
    for target in ("seriesByTag('host!=web1')", "seriesByTag('host=~web[')", "seriesByTag('novalue')"):
        response = client.get("/render", {"target": target, "format": "json"})
        assert response.status_code == 400, (target, response.status_code, response.content)


def test_a_tagged_line_received_as_plaintext_is_found_by_tag(graphite_site: Site):
    ts = graphite_site.now - 2 * STEP
    lines = f"tg.recv.load;host=web1;dc=ams 1.5 {ts}\ntg.recv.load;dc=fra;host=web2 2.5 {ts}\n".encode()
    parsed = parse_lines(lines, now=graphite_site.now)
    assert not parsed.rejected
    rules = load_storage_rules(graphite_site.config.istat_conf_dir)
    with Store.open(graphite_site.config.istat_storage_dir, rules, writable=True) as store:
        assert store.write(parsed.batch).accepted == 2
    series = render(graphite_site, "seriesByTag('name=tg.recv.load','host=web1')")
    assert list(series) == ["tg.recv.load;dc=ams;host=web1"]
    assert series["tg.recv.load;dc=ams;host=web1"][-3:] == [1.5, None, None]


SITE_SCRIPT = """
import json, sys
from pathlib import Path
from graphite_istat.graphite.site import GraphiteSite, activate_site
root = Path(sys.argv[1])
activate_site(GraphiteSite(root / "site", root / "storage", root / "storage" / "istat", root / "conf"))
from django.test import Client
from graphite.storage import STORE
client = Client(raise_request_exception=False)
answers = [type(STORE.tagdb).__name__]
for url, params in json.loads(sys.argv[2]):
    response = client.get(url, params)
    is_json = response.get("Content-Type", "").startswith("application/json")
    answers.append([response.status_code, json.loads(response.content) if is_json else None])
print(json.dumps(answers))
"""


def test_a_site_configured_as_documented(tmp_path, graphite_site: Site):
    """IstatFinder alone and ``TAGDB = 'graphite_istat.finder.IstatTagDB'``, in a graphite-web of its own."""
    from graphite_istat.graphite.site import ISTAT_FINDER, GraphiteSite, write_site

    conf = tmp_path / "conf"
    conf.mkdir()
    for name in ("storage-schemas.conf", "storage-aggregation.conf"):
        (conf / name).write_text((graphite_site.config.istat_conf_dir / name).read_text())
    config = GraphiteSite(
        tmp_path / "site", tmp_path / "storage", tmp_path / "storage" / "istat", conf,
        finders=(ISTAT_FINDER,), extra_settings={"TAGDB": "graphite_istat.finder.IstatTagDB"},
    )
    write_site(config)
    now = graphite_site.now
    with Store.open(config.istat_storage_dir, load_storage_rules(conf), writable=True) as store:
        store.write(parse_lines(f"disk.used;host=a;dc=x 3 {now}\ndisk.used;dc=y;host=b 5 {now}\n".encode(), now).batch)
    requests = [
        ("/render", {"target": "seriesByTag('name=disk.used','dc=y')", "format": "json", "from": now - 60,
                     "until": now}),
        ("/tags", {}),
        ("/tags/host", {}),
        ("/tags/autoComplete/values", {"tag": "dc", "expr": "host=a"}),
        ("/render", {"target": "seriesByTag('host!=a')", "format": "json"}),  # a failing finder's answer
    ]
    done = subprocess.run(
        [sys.executable, "-c", SITE_SCRIPT, str(tmp_path), json.dumps(requests)],
        capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if k not in ("GRAPHITE_SETTINGS_MODULE", "DJANGO_SETTINGS_MODULE")},
    )
    assert done.returncode == 0, done.stderr
    tagdb, render_answer, tags, host, values, bad = json.loads(done.stdout.splitlines()[-1])
    assert tagdb == "IstatTagDB"
    status, series = render_answer
    assert status == 200 and [(s["target"], s["datapoints"][-1][0]) for s in series] == [("disk.used;dc=y;host=b", 5.0)]
    assert tags == [200, [{"tag": t} for t in ("dc", "host", "istat.stat", "name")]]
    assert host == [200, {"tag": "host", "values": [{"value": "a", "count": 1}, {"value": "b", "count": 1}]}]
    assert values == [200, ["x"]]
    assert bad == [500, None]


def test_istat_pooled_over_tagged_series(graphite_site, tagged):
    from functions_site import plugin_enabled

    with plugin_enabled(True):
        pooled = render(graphite_site, "istatPooled(seriesByTag('name=tg.cpu.user','dc=ams'),'max')")
    (values,) = pooled.values()
    ams = [tagged["tg.cpu.user;dc=ams;host=web1"], tagged["tg.cpu.user;dc=ams;host=db1"]]
    assert values == [max(max(h[i]) for h in ams) for i in range(POINTS)]
