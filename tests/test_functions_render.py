"""The plugin through graphite-web's /render: the same JSON as stock on whisper data, and exact pooling.

Every request goes through Django's test client with ``noCache`` and fixed
``from``/``until``/``now``, once with ``FUNCTION_PLUGINS`` empty and once
with this plugin, against whisper files read by graphite-web's own
StandardFinder. istatPooled and istatBand are checked against statistics
computed from the raw points written to a graphite-istat store.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import pytest
import whisper
from functions_site import graphite_web, plugin_enabled, serving  # noqa: F401

pytestmark = pytest.mark.usefixtures("graphite_web")

HOSTS = ("h1", "h2", "h3", "h4")
WINDOW = 3600


@pytest.fixture
def now() -> int:
    return int(time.time()) // 600 * 600


def write_whisper(root: Path, name: str, step: int, now: int, rng: random.Random) -> None:
    path = root.joinpath(*name.split(".")).with_suffix(".wsp")
    path.parent.mkdir(parents=True, exist_ok=True)
    whisper.create(str(path), [(step, 2 * WINDOW // step)], xFilesFactor=0.0)
    points = [
        (t, rng.choice([rng.uniform(-50, 500), rng.randint(0, 9) * 0.1, 1e15 + rng.random()]))
        for t in range(now - WINDOW, now, step)
        if rng.random() > 0.2
    ]
    whisper.update_many(str(path), points, now=now)


@pytest.fixture
def whisper_finder(tmp_path: Path, now: int):
    from graphite.finders.standard import StandardFinder

    rng = random.Random(7)
    root = tmp_path / "whisper"
    for host in HOSTS:
        for metric in ("latency", "errors"):
            write_whisper(root, f"servers.{host}.{metric}", 10, now, rng)
    write_whisper(root, "mixed.fine", 10, now, rng)
    write_whisper(root, "mixed.coarse", 60, now, rng)
    write_whisper(root, "mixed.odd", 40, now, rng)
    return StandardFinder([str(root) + "/"])


def render(params: dict) -> tuple[int, bytes]:
    from django.test import Client

    response = Client().get("/render", {"format": "json", "noCache": "1", **params})
    return response.status_code, response.content


def render_stock_and_plugin(finder, params: dict) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """The same request through ``finder``, with stock functions and with the plugin."""
    with serving([finder]):
        with plugin_enabled(False):
            stock = render(params)
        with plugin_enabled(True):
            plugin = render(params)
    return stock, plugin


TARGETS = [
    "sumSeries(servers.*.latency)",
    "sum(servers.*.*)",
    "averageSeries(servers.*.latency)",
    "avg(servers.*.latency,servers.h1.errors)",
    "minSeries(servers.*.latency)",
    "maxSeries(servers.*.latency)",
    "diffSeries(servers.*.latency)",
    "multiplySeries(servers.h1.latency,servers.h2.latency)",
    "rangeOfSeries(servers.*.latency)",
    "stddevSeries(servers.*.latency)",
    "countSeries(servers.*.latency)",
    "percentileOfSeries(servers.*.latency,90)",
    "percentileOfSeries(servers.*.latency,50,true)",
    'aggregate(servers.*.latency,"median")',
    'aggregate(servers.*.*,"avg_zero",0.5)',
    'groupByNode(servers.*.*,2,"sum")',
    'groupByNode(servers.*.*,1,"maxSeries")',
    'groupByNodes(servers.*.*,"average",1,2)',
    "sumSeriesWithWildcards(servers.*.*,1)",
    "averageSeriesWithWildcards(servers.*.*,2)",
    "sumSeries(mixed.*)",
    "averageSeries(mixed.*,servers.h1.latency)",
    "stddevSeries(mixed.*)",
    "scale(sumSeries(servers.*.latency),0.5)",
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("extra", [{}, {"xFilesFactor": "0.5"}, {"maxDataPoints": "50"}])
def test_render_json_is_identical(target, extra, whisper_finder, now):
    params = {"target": target, "from": now - WINDOW, "until": now, "now": now, **extra}
    (stock_status, stock_body), (status, body) = render_stock_and_plugin(whisper_finder, params)
    assert stock_status == 200
    assert json.loads(stock_body), "the target must find data"
    assert any(
        value is not None
        for series in json.loads(stock_body)
        for value, _ in series["datapoints"]
    )
    assert status == stock_status
    assert body == stock_body


def test_plugin_functions_are_the_ones_registered():
    from graphite.functions import SeriesFunction

    from graphite_istat.functions import combine

    with plugin_enabled(True):
        assert SeriesFunction("sumSeries") is combine.sumSeries
        assert SeriesFunction("groupByNode") is combine.groupByNode
    with plugin_enabled(False):
        assert SeriesFunction("sumSeries") is not combine.sumSeries


def test_errors_are_stock_errors(whisper_finder, now):
    params = {"target": 'aggregate(servers.*.latency,"nosuch")', "from": now - WINDOW,
              "until": now, "now": now}
    with serving([whisper_finder]):
        with plugin_enabled(False):
            stock_response = render(params)
        with plugin_enabled(True):
            response = render(params)
    assert stock_response[0] == 400
    assert response == stock_response


# -- istatPooled and istatBand over a graphite-istat store ------------------------------------

SCHEMAS = """\
[coarse]
pattern = ^coarse\\.
retentions = 60s:1d
[default]
match-all = true
retentions = 10s:1d
"""


def istat_finder(tmp_path: Path, points: list[tuple[str, int, float]], now: int):
    """An IstatFinder over a fresh store holding ``points`` (schemas ``SCHEMAS``)."""
    from graphite_istat.config import load_storage_rules
    from graphite_istat.finder import IstatFinder
    from graphite_istat.store.batch import WriteBatch
    from graphite_istat.store.store import Store

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "storage-schemas.conf").write_text(SCHEMAS)
    storage = tmp_path / "istat"
    with Store.open(storage, load_storage_rules(conf), writable=True) as store:
        assert store.write(WriteBatch.from_points(points), now=now).accepted == len(points)
    return IstatFinder(storage)


@pytest.fixture
def istat_points(tmp_path: Path, now: int):
    """Raw points written to a store: ``{metric: [(timestamp, value), ...]}``, and its finder."""
    rng = random.Random(11)
    raw: dict[str, list[tuple[int, float]]] = {}
    for index, host in enumerate(HOSTS):
        name = f"pool.{host}.latency"
        per_bucket = index * 3 + 1  # hosts serve very different numbers of requests
        raw[name] = [
            (t + rng.randrange(10), rng.lognormvariate(3 + index, 0.5))
            for t in range(now - 600, now, 10)
            for _ in range(rng.randrange(per_bucket + 1))
        ]
    raw["coarse.c1.latency"] = [
        (t + rng.randrange(60), rng.uniform(0, 1000)) for t in range(now - 600, now, 60)
        for _ in range(5)
    ]
    points = [(name, t, v) for name, values in raw.items() for t, v in values]
    return raw, istat_finder(tmp_path, points, now)


def expected_stats(raw, names, step, now):
    """Per bucket of ``step`` over the last 600 s: every raw point of ``names`` pooled."""
    buckets: dict[int, list[float]] = {}
    for name in names:
        for t, v in raw[name]:
            buckets.setdefault(t - t % step, []).append(v)
    return {t: np.array(values) for t, values in buckets.items() if now - 600 <= t < now}


def render_pooled(target, now, finder):
    params = {"target": target, "from": now - 600, "until": now, "now": now}
    with serving([finder]), plugin_enabled(True):
        status, body = render(params)
    assert status == 200, body
    return json.loads(body)


@pytest.mark.parametrize("stat", ["avg", "count", "sum", "min", "max", "stddev"])
def test_istat_pooled_matches_the_raw_points(stat, istat_points, now):
    raw, finder = istat_points
    names = [f"pool.{host}.latency" for host in HOSTS]
    (series,) = render_pooled(f'istatPooled(pool.*.latency,"{stat}")', now, finder)
    assert series["target"] == f'istatPooled(pool.*.latency,"{stat}")'
    expected = expected_stats(raw, names, 10, now)
    compute = {
        "avg": np.mean, "count": len, "sum": np.sum, "min": np.min, "max": np.max,
        "stddev": np.std,
    }[stat]
    checked = 0
    for value, t in series["datapoints"]:
        if t not in expected:
            assert value is None
            continue
        want = float(compute(expected[t]))
        if stat in ("count", "min", "max"):
            assert value == want
        else:
            assert math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-9), (t, value, want)
        checked += 1
    assert checked >= 50


def test_istat_pooled_is_not_an_average_of_averages(istat_points, now):
    _, finder = istat_points
    (pooled,) = render_pooled('istatPooled(pool.*.latency,"avg")', now, finder)
    (averaged,) = render_pooled("averageSeries(pool.*.latency)", now, finder)
    differ = [
        (p, a) for (p, _), (a, _) in zip(pooled["datapoints"], averaged["datapoints"], strict=True)
        if p is not None and a is not None and not math.isclose(p, a, rel_tol=1e-6)
    ]
    assert len(differ) > 10


def test_istat_pooled_takes_exactly_the_given_metrics(istat_points, now):
    raw, finder = istat_points
    (series,) = render_pooled(
        'istatPooled(exclude(pool.*.latency,"h4"),"count")', now, finder
    )
    expected = expected_stats(raw, ["pool.h1.latency", "pool.h2.latency", "pool.h3.latency"], 10, now)
    for value, t in series["datapoints"]:
        assert value == (len(expected[t]) if t in expected else None)


def test_istat_pooled_over_mixed_steps(istat_points, now):
    raw, finder = istat_points
    names = ["pool.h1.latency", "pool.h3.latency", "coarse.c1.latency"]
    (series,) = render_pooled(
        'istatPooled(group(pool.h1.latency,pool.h3.latency,coarse.c1.latency),"stddev")',
        now, finder,
    )
    expected = expected_stats(raw, names, 60, now)
    assert series["datapoints"][1][1] - series["datapoints"][0][1] == 60
    checked = 0
    for value, t in series["datapoints"]:
        # The 10 s series start at from + 10 (whisper's grid): the first minute is partial.
        if t in expected and t > now - 600:
            assert math.isclose(value, float(np.std(expected[t])), rel_tol=1e-9)
            checked += 1
    assert checked >= 8


def test_istat_band(istat_points, now):
    raw, finder = istat_points
    band = render_pooled("istatBand(pool.*.latency)", now, finder)
    labels = [series["target"] for series in band]
    assert labels == [
        f'istatBand(pool.*.latency,"{label}")'
        for label in ("min", "avg-stddev", "avg", "avg+stddev", "max")
    ]
    expected = expected_stats(raw, [f"pool.{host}.latency" for host in HOSTS], 10, now)
    by_label = dict(zip(("min", "lo", "avg", "hi", "max"), band, strict=True))
    for index, (_, t) in enumerate(by_label["avg"]["datapoints"]):
        if t not in expected:
            continue
        points = expected[t]
        mean, spread = float(np.mean(points)), float(np.std(points))
        assert by_label["min"]["datapoints"][index][0] == float(points.min())
        assert by_label["max"]["datapoints"][index][0] == float(points.max())
        assert math.isclose(by_label["avg"]["datapoints"][index][0], mean, rel_tol=1e-9)
        assert math.isclose(by_label["lo"]["datapoints"][index][0], mean - spread, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(by_label["hi"]["datapoints"][index][0], mean + spread, rel_tol=1e-9)


def test_istat_pooled_refuses_metrics_without_sub_counters(whisper_finder, now):
    params = {"target": 'istatPooled(servers.*.latency,"avg")', "from": now - 600,
              "until": now, "now": now}
    with serving([whisper_finder]), plugin_enabled(True):
        status, body = render(params)
    assert status == 400
    assert b"no sub-counters" in body
    assert b"servers.h1.latency" in body


def test_istat_pooled_refuses_unknown_stats(istat_points, now):
    _, finder = istat_points
    params = {"target": 'istatPooled(pool.*.latency,"median")', "from": now - 600,
              "until": now, "now": now}
    with serving([finder]), plugin_enabled(True):
        status, _ = render(params)
    assert status == 400


# -- the arrays the finder hands the plugin ------------------------------------------------------

IN_PLACE_TARGETS = [
    "sumSeries(live.*.value)",
    "sumSeries(scale(live.*.value,-1))",  # scale changes the series in place
    "minSeries(scale(live.*.value,-1))",  # -0.0 for 0.0: only min and max see the sign
    "maxSeries(offset(live.*.value,0))",
    "multiplySeries(absolute(live.h1.value),live.h2.value)",
    "averageSeries(transformNull(live.*.value,0))",
    "groupByNode(live.*.value,1,'sumSeries')",
    "percentileOfSeries(live.*.value,50)",
    # changed in place, then renamed back to the paths the finder read
    r"sumSeries(aliasSub(scale(live.*.value,-1),'^scale\((.*),-1\)$','\1'))",
    r"minSeries(aliasSub(offset(live.*.value,0),'^offset\((.*),0\)$','\1'))",  # -0.0 + 0 is 0.0
]


@pytest.fixture
def istat_live(tmp_path: Path, now: int):
    """A store of 10 s series with gaps, zeros of both signs, negatives; and its finder."""
    rng = random.Random(5)
    points = [
        (f"live.{host}.value", t, rng.choice([0.0, -0.0, rng.uniform(-50, 50), rng.randint(0, 3) * 0.5]))
        for host in HOSTS
        for t in range(now - WINDOW, now, 10)
        if rng.random() > 0.15
    ]
    return istat_finder(tmp_path, points, now)


@pytest.mark.parametrize("extra", [{}, {"maxDataPoints": "50"}])
def test_series_changed_in_place_render_as_in_stock(istat_live, now, extra):
    """The plugin takes the finder's arrays only for series nobody changed: same JSON as stock."""
    params = {"target": IN_PLACE_TARGETS, "from": now - WINDOW, "until": now, "now": now, **extra}
    (stock_status, stock_body), (status, body) = render_stock_and_plugin(istat_live, params)
    assert stock_status == 200, stock_body
    assert len(json.loads(stock_body)) >= len(IN_PLACE_TARGETS)
    assert status == 200
    assert body == stock_body


def test_the_plugin_takes_the_finders_arrays(istat_live, now, monkeypatch):
    """An unchanged series is read from the finder's array, not converted from its list."""
    from graphite_istat.functions import columns

    converted = []
    real = columns.raw_array
    monkeypatch.setattr(columns, "raw_array", lambda values: converted.append(values) or real(values))
    params = {"target": "sumSeries(live.*.value)", "from": now - WINDOW, "until": now, "now": now}
    with serving([istat_live]), plugin_enabled(True):
        assert render(params)[0] == 200
        assert converted == []
        assert render({**params, "target": "sumSeries(scale(live.*.value,2))"})[0] == 200
        assert len(converted) == len(HOSTS)
