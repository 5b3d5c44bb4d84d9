"""IstatFinder through stock graphite-web 1.1.10: /render in every format, functions, find, expand, index."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import pickle
import random
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from graphite_site import STEP, Site

pytest_plugins = ['graphite_site']  # the session's graphite-web site

SUB_COUNTERS = ("avg", "count", "max", "min", "stddev", "sum")
HOSTS = ("h1", "h2", "h3")
POINTS = 60  # buckets in the rendered range


def exact_floats(rng: random.Random, n: int) -> list[float]:
    """Floats using every bit of the mantissa, so a rounding anywhere shows."""
    return [rng.uniform(-1e3, 1e3) * math.pi for _ in range(n)]


@pytest.fixture(scope="module")
def exact(graphite_site: Site) -> dict[str, list[float]]:
    """``exact.h*.lat``: one point per bucket, so every stat equals the point written."""
    rng = random.Random(5)
    start = graphite_site.now - (POINTS - 1) * STEP
    written = {f"exact.{h}.lat": exact_floats(rng, POINTS) for h in HOSTS}
    graphite_site.write(
        (name, start + i * STEP, v) for name, values in written.items() for i, v in enumerate(values)
    )
    return written


@pytest.fixture(scope="module")
def busy(graphite_site: Site) -> dict[str, list[list[float]]]:
    """``busy.h*.lat``: 1 to 6 points per bucket, so min, max, avg and stddev differ."""
    rng = random.Random(7)
    start = graphite_site.now - (POINTS - 1) * STEP
    written: dict[str, list[list[float]]] = {}
    points = []
    for h in HOSTS:
        name = f"busy.{h}.lat"
        buckets = [exact_floats(rng, rng.randint(1, 6)) for _ in range(POINTS)]
        written[name] = buckets
        for i, values in enumerate(buckets):
            points += [(name, start + i * STEP + j, v) for j, v in enumerate(values)]
    graphite_site.write(points)
    return written


def span(site: Site) -> dict[str, int]:
    return {"from": site.now - POINTS * STEP, "until": site.now}


def render_json(site: Site, *targets: str, **params) -> dict[str, list[list]]:
    response = site.client().get("/render", {"target": list(targets), "format": "json", **span(site), **params})
    assert response.status_code == 200, response.content[:2000]
    return {s["target"]: s["datapoints"] for s in json.loads(response.content)}


def values_of(datapoints: list[list]) -> list[float | None]:
    return [v for v, _ in datapoints]


# -- values, to the last bit, in every format -----------------------------------------


def test_json_values_equal_what_was_written(graphite_site, exact):
    series = render_json(graphite_site, "exact.h1.lat", *(f"exact.h1.lat.{s}" for s in SUB_COUNTERS))
    written = exact["exact.h1.lat"]
    for target in ("exact.h1.lat", "exact.h1.lat.avg", "exact.h1.lat.min", "exact.h1.lat.max", "exact.h1.lat.sum"):
        assert values_of(series[target]) == written, target
    assert values_of(series["exact.h1.lat.count"]) == [1.0] * POINTS
    assert values_of(series["exact.h1.lat.stddev"]) == [0.0] * POINTS
    timestamps = [t for _, t in series["exact.h1.lat"]]
    assert timestamps == list(range(graphite_site.now - (POINTS - 1) * STEP, graphite_site.now + 1, STEP))


def test_csv_raw_and_pickle_carry_the_same_bits(graphite_site, exact):
    client = graphite_site.client()
    written = exact["exact.h2.lat"]
    params = {"target": "exact.h2.lat.max", **span(graphite_site)}

    rows = list(csv.reader(io.StringIO(client.get("/render", {**params, "format": "csv"}).content.decode())))
    assert [r[0] for r in rows] == ["exact.h2.lat.max"] * POINTS
    assert [float(r[2]) for r in rows] == written

    raw = client.get("/render", {**params, "format": "raw"}).content.decode().strip()
    header, body = raw.split("|")
    name, start, end, step = header.split(",")
    assert (name, int(step)) == ("exact.h2.lat.max", STEP)
    assert int(start) == graphite_site.now - (POINTS - 1) * STEP and int(end) == graphite_site.now + STEP
    assert [float(v) for v in body.split(",")] == written

    (info,) = pickle.loads(client.get("/render", {**params, "format": "pickle"}).content)
    assert info["name"] == "exact.h2.lat.max" and info["step"] == STEP
    assert info["values"] == written


def test_svg_and_png_graphs_of_sub_counters(graphite_site, exact):
    client = graphite_site.client()
    params = {"target": ["exact.h1.lat.min", "exact.h1.lat.max"], "width": 640, "height": 320, **span(graphite_site)}
    svg = client.get("/render", {**params, "format": "svg"})
    assert svg["Content-Type"] == "image/svg+xml"
    assert b"<svg" in svg.content and b"exact.h1.lat.max" in svg.content
    png = client.get("/render", params)
    assert png["Content-Type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png.content[16:24])
    assert (width, height) == (640, 320)
    assert 2_000 < len(png.content) < 1_000_000


# -- graphite-web functions over sub-counters ----------------------------------------


def test_sum_and_max_series_over_hosts(graphite_site, exact):
    series = render_json(graphite_site, "sumSeries(exact.*.lat.max)", "maxSeries(exact.*.lat.min)")
    columns = [exact[f"exact.{h}.lat"] for h in HOSTS]  # graphite-web adds in name order
    assert values_of(series["sumSeries(exact.*.lat.max)"]) == [sum(vs) for vs in zip(*columns, strict=True)]
    assert values_of(series["maxSeries(exact.*.lat.min)"]) == [max(vs) for vs in zip(*columns, strict=True)]


def test_summarize_a_max_keeps_the_true_maximum(graphite_site, busy):
    series = render_json(graphite_site, "summarize(busy.h1.lat.max, '1min', 'max')")
    (datapoints,) = series.values()
    start = graphite_site.now - (POINTS - 1) * STEP
    for value, ts in datapoints:
        inside = [v for i, b in enumerate(busy["busy.h1.lat"]) if ts <= start + i * STEP < ts + 60 for v in b]
        assert value == (max(inside) if inside else None)


def test_max_data_points_consolidates_exactly_from_sub_counters(graphite_site, busy):
    targets = ["busy.h1.lat", *(f"busy.h1.lat.{s}" for s in SUB_COUNTERS)]
    series = render_json(graphite_site, *targets, maxDataPoints=7)
    start = graphite_site.now - (POINTS - 1) * STEP
    buckets = busy["busy.h1.lat"]
    (width,) = {b[1] - a[1] for s in series.values() for a, b in itertools.pairwise(s)}
    assert width > STEP and width % STEP == 0
    differs_from_average_of_averages = False
    for target, datapoints in series.items():
        assert len(datapoints) <= 7, target
        stat = target.rsplit(".", 1)[1] if target != "busy.h1.lat" else "avg"
        for value, ts in datapoints:
            group = [b for i, b in enumerate(buckets) if ts <= start + i * STEP < ts + width]
            raw = [v for b in group for v in b]
            if not raw:
                assert value in (None, 0.0)
                continue
            expected = {
                "count": len(raw), "min": min(raw), "max": max(raw), "sum": math.fsum(raw),
                "avg": math.fsum(raw) / len(raw), "stddev": float(_pstdev(raw)),
            }[stat]
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-9), (target, ts)
            if stat == "avg" and len(group) > 1:
                average_of_averages = sum(math.fsum(b) / len(b) for b in group) / len(group)
                differs_from_average_of_averages |= not math.isclose(value, average_of_averages)
    assert differs_from_average_of_averages


def _pstdev(values: list[float]) -> float:
    mean = math.fsum(values) / len(values)
    return math.sqrt(max(math.fsum((v - mean) ** 2 for v in values) / len(values), 0.0))


def test_consolidate_by_leaves_consolidation_to_graphite_web(graphite_site, busy):
    """consolidateBy() asks graphite-web for its own consolidation: the finder then does not consolidate."""
    plain = render_json(graphite_site, "busy.h1.lat.avg")["busy.h1.lat.avg"]
    (chosen,) = render_json(graphite_site, "consolidateBy(busy.h1.lat.avg, 'max')", maxDataPoints=7).values()
    # graphite-web's renderViewJson consolidation, applied by hand to the unconsolidated series
    values, start = values_of(plain), plain[0][1]
    per_point = math.ceil(POINTS / 7)
    seconds = per_point * STEP
    nudge = seconds + (start % STEP) - (start % seconds)
    values = values[max(nudge // STEP - 1, 0):]
    expected = [max(v for v in values[i : i + per_point] if v is not None) for i in range(0, len(values), per_point)]
    assert values_of(chosen) == expected


# -- find, expand, index ----------------------------------------------------------------


def test_find_treejson_shows_the_metric_as_a_branch_of_its_sub_counters(graphite_site, exact):
    client = graphite_site.client()
    level = json.loads(client.get("/metrics/find", {"query": "exact.h1.*"}).content)
    assert level == [{"text": "lat", "id": "exact.h1.lat", "allowChildren": 1, "expandable": 1, "leaf": 0}]
    below = json.loads(client.get("/metrics/find", {"query": "exact.h1.lat.*"}).content)
    assert [(n["id"], n["leaf"]) for n in below] == [(f"exact.h1.lat.{s}", 1) for s in SUB_COUNTERS]


def test_find_json_lists_the_leaf_and_the_branch_with_true_intervals(graphite_site, exact):
    nodes = json.loads(graphite_site.client().get("/metrics/find", {"query": "exact.h1.lat", "format": "json"}).content)
    assert sorted((n["path"], n["is_leaf"]) for n in nodes) == [("exact.h1.lat", False), ("exact.h1.lat", True)]
    (leaf,) = [n for n in nodes if n["is_leaf"]]
    (interval,) = leaf["intervals"]
    assert interval["end"] - interval["start"] == 7 * 86400  # the longest archive, 1m:7d


def test_find_completer_and_globs_over_sub_counters(graphite_site, exact):
    client = graphite_site.client()
    completer = json.loads(client.get("/metrics/find", {"query": "exact.h2.lat.m", "format": "completer"}).content)
    assert sorted(m["path"] for m in completer["metrics"]) == ["exact.h2.lat.max", "exact.h2.lat.min"]
    expand = json.loads(client.get("/metrics/expand", {"query": "exact.*.lat.{min,max}"}).content)
    assert expand["results"] == sorted(f"exact.{h}.lat.{s}" for h in HOSTS for s in ("min", "max"))
    grouped = json.loads(
        client.get("/metrics/expand", {"query": ["exact.h1.*", "exact.h1.lat.s*"], "groupByExpr": 1, "leavesOnly": 1}).content
    )
    assert grouped["results"] == {
        "exact.h1.*": ["exact.h1.lat"],
        "exact.h1.lat.s*": ["exact.h1.lat.stddev", "exact.h1.lat.sum"],
    }


def test_index_json_lists_stored_metrics_only(graphite_site, exact):
    index = json.loads(graphite_site.client().get("/metrics/index.json").content)
    assert {f"exact.{h}.lat" for h in HOSTS} <= set(index)
    assert not any(name.startswith("exact.") and name.count(".") > 2 for name in index)
    assert index == sorted(index)


def test_a_stored_metric_wins_over_a_sub_counter(graphite_site):
    t = graphite_site.now - STEP
    graphite_site.write([("wins.m", t, 1.0), ("wins.m", t, 5.0), ("wins.m.max", t, 42.0)])
    series = render_json(graphite_site, "wins.m.max", "wins.m.min", "wins.m")
    assert values_of(series["wins.m.max"])[-2] == 42.0
    assert values_of(series["wins.m.min"])[-2] == 1.0
    assert values_of(series["wins.m"])[-2] == 3.0


# -- beside whisper's StandardFinder ------------------------------------------------------


def test_graphite_web_merges_a_path_held_by_whisper_and_by_istat(graphite_site):
    import whisper

    start = graphite_site.now - (POINTS - 1) * STEP
    rng = random.Random(11)
    values = exact_floats(rng, POINTS)
    path = graphite_site.config.whisper_dir / "merge" / "m.wsp"
    path.parent.mkdir(parents=True, exist_ok=True)
    whisper.create(str(path), [(10, 8640), (60, 10080)], xFilesFactor=0.0)
    half = POINTS // 2
    whisper.update_many(str(path), [(start + i * STEP, values[i]) for i in range(half)])  # older half
    whisper.create(str(path.with_name("only.wsp")), [(10, 8640)])
    whisper.update_many(str(path.with_name("only.wsp")), [(start, 7.0)])
    graphite_site.write(("merge.m", start + i * STEP, values[i]) for i in range(half, POINTS))  # newer half

    series = render_json(graphite_site, "merge.m", "merge.only")
    assert values_of(series["merge.m"]) == values
    assert values_of(series["merge.only"])[0] == 7.0
    nodes = json.loads(graphite_site.client().get("/metrics/find", {"query": "merge.*", "format": "json"}).content)
    assert sorted((n["path"], n["is_leaf"]) for n in nodes) == [
        ("merge.m", False), ("merge.m", True), ("merge.only", True)
    ]


# -- readers, threads ----------------------------------------------------------------------


def test_a_leaf_node_reads_the_same_as_the_bulk_fetch_and_never_hides_a_type_error(graphite_site, exact):
    from graphite.storage import STORE

    from graphite_istat.finder import IstatReader, IstatReadError

    (node,) = [n for n in STORE.find("exact.h3.lat.max") if n.is_leaf]
    assert isinstance(node.reader, IstatReader)
    (start, end, step), values = node.fetch(graphite_site.now - POINTS * STEP, graphite_site.now)
    assert (end - start) // step == POINTS and values == exact["exact.h3.lat"]
    with pytest.raises(IstatReadError):
        node.fetch(None, graphite_site.now)  # graphite-web would retry a TypeError without arguments


def test_concurrent_renders_agree_while_the_store_is_written(graphite_site, exact):
    expected = render_json(graphite_site, "sumSeries(exact.*.lat.max)", "exact.h1.lat.stddev")
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            graphite_site.write([(f"concurrent.new{i}.m", graphite_site.now, float(i))])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(
                lambda _: render_json(graphite_site, "sumSeries(exact.*.lat.max)", "exact.h1.lat.stddev"), range(40)
            ))
    finally:
        stop.set()
        thread.join()
    assert all(r == expected for r in results)
    assert len(json.loads(graphite_site.client().get("/metrics/find", {"query": "concurrent.*"}).content)) > 0
