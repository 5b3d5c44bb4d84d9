"""Benchmark of graphite-web end to end: IstatFinder over the store against StandardFinder over whisper.

Usage: python benchmarks/bench_render.py [--quick] [--profile] [--metrics N] [--find-names N]
       [--whisper-tree N] [--repeat N] [--case-budget S] [--workdir DIR] [--keep]

One run builds the same data twice and asks stock graphite-web 1.1.10 for it:

* graphite-istat: a store at ``10s:6h,1m:7d,10m:5y`` (average, xFilesFactor
  0.5) holding ``--metrics`` metrics ``bench.hostHHH.mMM`` with one point every
  10 s over the last 6 h, plus ``--find-names`` metrics named like a fleet of
  hosts (``servers.hostNNNN.cpu.core0.user`` ...), one point each (8 days old,
  so only the 10-minute archive holds it: a point of now would take 7 KB of
  disk per name);
* whisper 1.1.10: a .wsp file per ``bench`` metric with the same points
  (``whisper.create`` with the same archives, one ``update_many`` per file),
  and a tree of ``--whisper-tree`` empty ``.wsp`` files named like the fleet
  (a million real .wsp files do not fit this machine's time or disk: 3.3 MB
  each apparent; graphite-web's StandardFinder only walks the directories for
  ``/metrics/find``, so empty files are enough).

Only the last 6 h hold points (the budget for creating the whisper files); the
1-day renders read each system's 1-minute archive, which holds those 6 h and is
null for the rest of the day.

graphite-web then runs four times, each in a fresh process (Django settings are
fixed per process): {IstatFinder, StandardFinder} x {stock functions,
``FUNCTION_PLUGINS = ['graphite_istat.functions']``}. Every request goes
through Django's test client (graphite-web's full URL routing, views and
middleware, in process; no HTTP socket) with a fixed ``now`` so both systems
read the same window. Each case gets one untimed warm-up request, then
``--repeat`` timed ones (fewer when a case's time passes ``--case-budget``;
never fewer than 3); the table shows the median and the 95th percentile
(nearest rank, so with few samples it is the slowest). No render or find cache
is configured (graphite-web's default without memcached), so every request
finds and reads. Files are in the page cache for both systems (just written).
graphite-web's ``FETCH_TIMEOUT`` (6 s) and ``FIND_TIMEOUT`` (3 s) are raised to
600 s for both: with the defaults, stock graphite-web fails the 10,000-metric
whisper renders with "Timed out after 6s for fetch".

A fifth and sixth process measure graphite-web's own floor on the same
renders: ``MemoryFinder`` serves the bench series from arrays already in
memory, as ``RowValues`` the plugin may take back, so the read costs nothing
and what is left is graphite-web (``TimeSeries``, tags, the Python floats,
its garbage collector) and the functions. No finder can make a render faster
than that row; "best possible" is whisper's time over it.

The targets print PASS or MISS. Where one misses, a cProfile summary of the
istat side of that case (top functions by cumulative time) follows the table;
``--profile`` prints them all.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import math
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
from common import (
    Progress,
    fmt_bytes,
    fmt_ratio,
    fmt_seconds,
    median,
    percentile,
    print_table,
    verdict,
)

RETENTIONS = "10s:6h,1m:7d,10m:5y"
WHISPER_ARCHIVES = [(10, 2160), (60, 10080), (600, 262800)]
AGGREGATION = "average"
X_FILES_FACTOR = 0.5
STEP = 10
SIX_HOURS = 6 * 3600
METRICS_PER_HOST = 100
MAX_DATA_POINTS = 1000
PLUGIN = "graphite_istat.functions"

TARGET_RENDER_SPEEDUP = 10.0
TARGET_FIND_SECONDS = 0.050
TARGET_PLUGIN_SPEEDUP = 10.0

SCHEMAS_CONF = f"[all]\nmatch-all = true\nretentions = {RETENTIONS}\n"
AGGREGATION_CONF = (
    f"[all]\nmatch-all = true\nxFilesFactor = {X_FILES_FACTOR}\naggregationMethod = {AGGREGATION}\n"
)
FIND_PATTERNS = (
    "servers.host0042.*",  # the composer opening one host
    "servers.host0042.disk.*.{reads,writes}.bytes",
    "servers.host00[0-4]?.cpu.*.user",
    "servers.*.mem.free",  # one metric of every host
)


@dataclass(frozen=True, slots=True)
class Settings:
    metrics: int  # bench.* metrics with 6 h of 10 s points in both systems
    find_names: int  # names in the istat store for /metrics/find
    whisper_tree: int  # empty .wsp files for StandardFinder's /metrics/find
    repeat: int  # timed requests per case
    case_budget: float  # seconds of timed requests per case before stopping early (at least 3)


FULL = Settings(metrics=10_000, find_names=1_000_000, whisper_tree=100_000, repeat=5, case_budget=10.0)
QUICK = Settings(metrics=200, find_names=50_000, whisper_tree=5_000, repeat=3, case_budget=1.0)


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    label: str
    params: dict  # query parameters besides now
    path: str = "/render"


def render_cases(metrics: int) -> list[Case]:
    """The renders, each plain and with maxDataPoints (as Grafana sends it)."""
    subset_hosts = max(1, metrics // 10 // METRICS_PER_HOST)  # a tenth: 1,000 of 10,000
    hosts = ",".join(f"host{h:03d}" for h in range(subset_hosts))
    subset = f"bench.{{{hosts}}}.*" if subset_hosts > 1 else f"bench.{hosts}.*"
    base = [
        ("one", "1 metric, 1 day", "bench.host000.m00", "-1d"),
        ("sum1k", f"sumSeries {subset_hosts * METRICS_PER_HOST:,} metrics, 1 day", f"sumSeries({subset})", "-1d"),
        ("sumall", f"sumSeries {metrics:,} metrics, 1 day", "sumSeries(bench.*.*)", "-1d"),
        # 6 h less one step: at exactly 6 h whisper and the store would both
        # still choose the 10 s archive, but one step of margin keeps that true
        ("sumall6h", f"sumSeries {metrics:,} metrics, 6 h at 10 s", "sumSeries(bench.*.*)",
         f"-{SIX_HOURS - STEP}s"),
    ]
    cases = []
    for key, label, target, since in base:
        params = {"target": target, "from": since, "format": "json"}
        cases.append(Case(key, label, params))
        cases.append(Case(f"{key}-mdp", f"{label}, maxDataPoints={MAX_DATA_POINTS}",
                          {**params, "maxDataPoints": str(MAX_DATA_POINTS)}))
    return cases


def find_cases() -> list[Case]:
    return [Case(f"find{i}", p, {"query": p, "format": "treejson"}, "/metrics/find")
            for i, p in enumerate(FIND_PATTERNS)]


# -- building the data ------------------------------------------------------------------


def bench_names(count: int) -> list[str]:
    return [f"bench.host{i // METRICS_PER_HOST:03d}.m{i % METRICS_PER_HOST:02d}" for i in range(count)]


def bench_values(count: int, points: int, seed: int = 7) -> np.ndarray:
    """(count, points) latency-like values, rounded to microseconds (identical in both systems)."""
    rng = np.random.default_rng(seed)
    return np.round(rng.gamma(2.0, 0.02, size=(count, points)), 6)


def whisper_path(root: Path, name: str) -> Path:
    return root.joinpath(*name.split(".")).with_suffix(".wsp")


def build_istat(storage: Path, conf: Path, names: list[str], timestamps: np.ndarray,
                values: np.ndarray, find_names: int, now: int, progress: Progress) -> dict:
    from bench_store import metric_names

    from graphite_istat.config import load_storage_rules
    from graphite_istat.store.batch import WriteBatch
    from graphite_istat.store.store import Store, StoreOptions

    rules = load_storage_rules(conf)
    start = time.perf_counter()
    options = StoreOptions(fsync_interval=1e9)
    with Store.open(storage, rules, writable=True, options=options) as store:
        chunk = max(1, 2_000_000 // len(names))  # timestamps per batch: ~2M points
        ids = np.arange(len(names), dtype=np.int64)
        for lo in range(0, len(timestamps), chunk):
            hi = min(lo + chunk, len(timestamps))
            batch = WriteBatch.from_arrays(
                names, np.repeat(timestamps[lo:hi], len(names)),
                values[:, lo:hi].T.ravel(), name_ids=np.tile(ids, hi - lo),
            )
            result = store.write(batch, now=now)
            assert result.rejected_total == 0, result.rejected
        render_seconds = time.perf_counter() - start
        progress.mark(f"istat: {len(names):,} metrics x {len(timestamps)} points written")
        # One point 8 days back: it lands in the 10-minute archive only, which
        # keeps the store's disk use for a million names near 2.3 GB instead of 7 GB.
        # /metrics/find reads the name index alone, so the point's age does not matter.
        old = now - 8 * 86400
        for lo in range(0, find_names, 200_000):
            fleet = metric_names(lo, min(200_000, find_names - lo))
            batch = WriteBatch.from_arrays(fleet, np.full(len(fleet), old, dtype=np.int64), np.ones(len(fleet)))
            store.write(batch, now=now)
        store.sync()
        total = len(store)
    progress.mark(f"istat: store holds {total:,} names")
    return {"render_data_s": render_seconds, "total_s": time.perf_counter() - start, "names": total}


def write_whisper_files(root: Path, names: list[str], timestamps: np.ndarray, values: np.ndarray,
                        now: int) -> None:
    """A .wsp file per name holding its row of ``values`` (one ``update_many`` per file)."""
    import whisper

    stamps = timestamps.tolist()
    made: set[Path] = set()
    for index, name in enumerate(names):
        path = whisper_path(root, name)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        # sparse: the 10-minute archive of 5 years would otherwise write 3 MB of zeros per file
        whisper.create(str(path), WHISPER_ARCHIVES, X_FILES_FACTOR, AGGREGATION, True, False)
        whisper.update_many(str(path), list(zip(stamps, values[index].tolist(), strict=True)), now=now)


def build_whisper(root: Path, names: list[str], timestamps: np.ndarray, values: np.ndarray,
                  tree: int, now: int, progress: Progress) -> dict:
    from bench_store import make_whisper_tree, metric_names

    start = time.perf_counter()
    # Building is not measured: one process per CPU, each a whole host's directory at a time.
    workers = max(1, min(os.cpu_count() or 1, len(names) // METRICS_PER_HOST))
    bounds = [round(len(names) / METRICS_PER_HOST * i / workers) * METRICS_PER_HOST for i in range(workers + 1)]
    with ProcessPoolExecutor(workers) as pool:
        jobs = [pool.submit(write_whisper_files, root, names[lo:hi], timestamps, values[lo:hi], now)
                for lo, hi in itertools.pairwise(bounds)]
        for job in jobs:
            job.result()
    render_seconds = time.perf_counter() - start
    progress.mark(f"whisper: {len(names):,} files written")
    make_whisper_tree(root, metric_names(0, tree))
    progress.mark(f"whisper: tree of {tree:,} empty files made")
    return {"render_data_s": render_seconds, "total_s": time.perf_counter() - start}


# -- one graphite-web process -------------------------------------------------------------


MEMORY_FINDER = "bench_render.MemoryFinder"


def memory_finder_class():
    """``MemoryFinder``, defined on first use: it subclasses graphite-web's BaseFinder (Django must be set up)."""
    from graphite.finders.utils import BaseFinder

    class Finder(MemoryFinderMethods, BaseFinder):
        pass

    return Finder


def __getattr__(name: str):
    if name == "MemoryFinder":  # imported by graphite-web as bench_render.MemoryFinder
        return memory_finder_class()
    raise AttributeError(name)


class MemoryFinderMethods:
    """The bench series held as arrays in memory, handed over as IstatFinder hands them (no read at all).

    Ranges within 6 h get the 10 s points, longer ones their 1-minute
    averages, on whisper's grid. Configured by the ``BENCH_MEMORY`` setting.
    """

    local = True
    disabled = False
    tags = False

    def __init__(self) -> None:
        from django.conf import settings

        from graphite_istat.store.globbing import compile_pattern

        config = settings.BENCH_MEMORY
        self.now = int(config["now"])
        self.names = bench_names(int(config["metrics"]))
        fine = bench_values(len(self.names), SIX_HOURS // STEP)
        self.first = self.now - SIX_HOURS + STEP  # time of column 0 of ``fine``
        self.fine = fine
        self.coarse = fine.reshape(len(self.names), -1, 60 // STEP).mean(axis=2)
        self.compile = compile_pattern
        self.index = {name: i for i, name in enumerate(self.names)}
        self.matched: dict[str, list[str]] = {}  # by pattern: the floor pays for no glob after the first

    def _matches(self, pattern: str) -> list[str]:
        if pattern not in self.matched:
            levels = self.compile(pattern).levels
            self.matched[pattern] = [
                n for n in self.names
                if len(parts := n.split(".")) == len(levels)
                and all(lv.match(p) for lv, p in zip(levels, parts, strict=True))
            ]
        return self.matched[pattern]

    def find_nodes(self, query):
        from graphite.node import LeafNode

        return [LeafNode(name, None) for name in self._matches(query.pattern)]

    def fetch(self, patterns, start_time, end_time, now=None, requestContext=None):
        from graphite_istat.graphite.rows import RowValues, record_rows

        now = int(now or self.now)
        step = STEP if now - start_time <= SIX_HOURS else 60
        data = self.fine if step == STEP else self.coarse
        start = int(start_time) - int(start_time) % step + step
        end = int(end_time) - int(end_time) % step + step
        times = np.arange(start, end, step)
        # column of each bucket in ``data``; NaN (empty) outside the 6 h held
        first_bucket = self.first - self.first % step
        column = (times - first_bucket) // step
        held = (column >= 0) & (column < data.shape[1])
        results, rows = [], {}
        index = self.index
        for pattern in patterns:
            for name in self._matches(pattern):
                row = np.full(len(times), np.nan)
                row[held] = data[index[name], column[held]]
                values = RowValues(row)
                rows[(name, start, step)] = values
                results.append({"pathExpression": pattern, "path": name, "name": name,
                                "time_info": (start, end, step), "values": values})
        if requestContext is not None:
            record_rows(requestContext, rows)
        return results



def run_worker(request: dict) -> dict:
    """Activate graphite-web as asked, time every case, and return the figures."""
    from graphite_istat.graphite.site import (
        ISTAT_FINDER,
        WHISPER_FINDER,
        GraphiteSite,
        activate_site,
        write_site,
    )

    root = Path(request["root"])
    istat = request["system"] == "istat"
    finder = {"istat": ISTAT_FINDER, "whisper": WHISPER_FINDER, "memory": MEMORY_FINDER}[request["system"]]
    extra: dict[str, object] = {
        "BENCH_MEMORY": {"now": request["now"], "metrics": request["metrics"]},
        "FUNCTION_PLUGINS": [PLUGIN] if request["plugin"] else [],
        "WHISPER_DIR": request["whisper_dir"],
        "STANDARD_DIRS": [request["whisper_dir"]],
        # graphite-web's defaults (6 s fetch, 3 s find) fail the 10,000-metric whisper renders outright
        "FETCH_TIMEOUT": 600.0,
        "FIND_TIMEOUT": 600.0,
    }
    site = GraphiteSite(
        directory=root / "site", storage_dir=root / "storage",
        istat_storage_dir=Path(request["istat_dir"]), istat_conf_dir=Path(request["conf_dir"]),
        finders=(finder,), extra_settings=extra,
    )
    write_site(site)
    activate_site(site)
    from django.test import Client, override_settings

    client = Client()
    answer: dict[str, dict] = {}
    # once per process, untimed: imports, opening the store, loading the name index
    warm_up = ["/render?target=bench.host000.m00&from=-1h&format=json"]
    if request["system"] != "memory":
        warm_up.append("/metrics/find?query=servers.*")
    for url in warm_up:
        if client.get(url).status_code != 200:
            raise RuntimeError(f"warm-up request {url} failed")
    for raw in request["cases"]:
        case = Case(**raw)
        url = f"{case.path}?{urlencode({**case.params, 'now': str(request['now'])})}"
        seconds: list[float] = []
        body = None
        while len(seconds) < request["repeat"] and (len(seconds) < 3 or sum(seconds) < request["budget"]):
            start = time.perf_counter()
            response = client.get(url)
            content = response.content
            seconds.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {response.status_code}: {content[:500]!r}")
            if body is None:
                body = json.loads(content)
        result: dict[str, object] = {"seconds": seconds}
        if case.path == "/render":
            result["series"] = [[point[0] for point in s["datapoints"]] for s in body]
        else:
            result["nodes"] = len(body)
        if istat and case.key in request["profile"]:
            # graphite-web reads in its worker pool's threads, which cProfile does not
            # see; with one finder the pool only adds a thread hop, so run the read inline
            profiler = cProfile.Profile()
            with override_settings(USE_WORKER_POOL=False):
                profiler.enable()
                client.get(url).content  # noqa: B018 - the response body is what is profiled
                profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
            result["profile"] = text.getvalue()
        answer[case.key] = result
    return answer


def spawn_worker(request: dict, workdir: Path) -> dict:
    out = workdir / f"result-{request['system']}-{int(request['plugin'])}.json"
    request = {**request, "out": str(out)}
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(request)],
        capture_output=True, text=True, cwd=workdir, timeout=3600, check=False,
    )
    if completed.returncode != 0 or not out.exists():
        raise RuntimeError(f"graphite-web worker failed:\n{completed.stderr[-4000:]}")
    return json.loads(out.read_text())


# -- the report ---------------------------------------------------------------------------------


def agree(a: list | None, b: list | None) -> str:
    """Whether two renders hold the same values (relative 1e-9: the 1-min archives average differently)."""
    if a is None or b is None or len(a) != len(b):
        return "no"
    for sa, sb in zip(a, b, strict=True):
        if len(sa) != len(sb):
            # the finder consolidates on buckets aligned to their width, graphite-web on the series start
            return f"n/a: {len(sa)} vs {len(sb)} points"
        for x, y in zip(sa, sb, strict=True):
            if (x is None) != (y is None) or (x is not None and not math.isclose(x, y, rel_tol=1e-9)):
                return "no"
    return "yes"


def latency(result: dict) -> tuple[float, float]:
    return median(result["seconds"]), percentile(result["seconds"], 0.95)


def non_null(series: list) -> str:
    points = sum(len(s) for s in series)
    filled = sum(1 for s in series for v in s if v is not None)
    return f"{len(series)} series, {filled}/{points} points"


# Frames every request passes through on the way to graphite-web's view: left out of the summary.
WRAPPER_FRAMES = ("django/test/", "django/core/handlers/", "django/utils/deprecation", "graphite/errors.py",
                  "queue.py", "threading.py", "_thread.lock")


def strip_profile(text: str, width: int = 160) -> str:
    """pstats output without its header lines, with install prefixes cut from file names."""
    lines = []
    for line in text.splitlines():
        if not line.strip() or line.strip().startswith(("Ordered by", "List reduced")):
            continue
        if any(frame in line for frame in WRAPPER_FRAMES):
            continue
        short = re.sub(r"/\S*/site-packages/", "", line)
        short = re.sub(r"/\S*/(graphite_istat|benchmarks)/", r"\1/", short)
        lines.append(short[:width])
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--profile", action="store_true", help="print every istat profile, not just misses")
    parser.add_argument("--metrics", type=int)
    parser.add_argument("--find-names", type=int)
    parser.add_argument("--whisper-tree", type=int)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--case-budget", type=float)
    parser.add_argument("--workdir", type=Path, help="build here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="leave the work directory behind")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        request = json.loads(args.worker)
        Path(request["out"]).write_text(json.dumps(run_worker(request)))
        return 0

    base = QUICK if args.quick else FULL
    settings = Settings(
        metrics=args.metrics or base.metrics,
        find_names=args.find_names or base.find_names,
        whisper_tree=args.whisper_tree or base.whisper_tree,
        repeat=args.repeat or base.repeat,
        case_budget=args.case_budget if args.case_budget is not None else base.case_budget,
    )
    if settings.metrics < METRICS_PER_HOST or settings.metrics % METRICS_PER_HOST:
        parser.error(f"--metrics must be a positive multiple of {METRICS_PER_HOST}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-render-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return run(settings, workdir, args.profile)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run(settings: Settings, workdir: Path, profile_all: bool) -> int:
    progress = Progress()
    conf = workdir / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "storage-schemas.conf").write_text(SCHEMAS_CONF)
    (conf / "storage-aggregation.conf").write_text(AGGREGATION_CONF)
    now = int(time.time()) // 600 * 600
    timestamps = np.arange(now - SIX_HOURS + STEP, now + 1, STEP, dtype=np.int64)
    names = bench_names(settings.metrics)
    values = bench_values(settings.metrics, len(timestamps))
    istat_dir, whisper_dir = workdir / "istat", workdir / "whisper"
    istat_build = build_istat(istat_dir, conf, names, timestamps, values, settings.find_names, now, progress)
    whisper_build = build_whisper(whisper_dir, names, timestamps, values, settings.whisper_tree, now, progress)
    del values

    cases = render_cases(settings.metrics)
    finds = find_cases()
    profile_keys = ["one", "sumall", "sumall6h"]
    results: dict[tuple[str, bool], dict] = {}
    for plugin in (False, True):
        for system in ("istat", "whisper", "memory"):
            run_cases = cases if system == "memory" else cases + (finds if not plugin else [])
            request = {
                "metrics": settings.metrics,
                "root": str(workdir / f"web-{system}-{int(plugin)}"), "system": system, "plugin": plugin,
                "istat_dir": str(istat_dir), "whisper_dir": str(whisper_dir), "conf_dir": str(conf),
                "now": now, "cases": [asdict(c) for c in run_cases], "repeat": settings.repeat,
                "budget": settings.case_budget, "profile": profile_keys,
            }
            results[(system, plugin)] = spawn_worker(request, workdir)
            progress.mark(f"graphite-web with {system}, {'plugin' if plugin else 'stock functions'} done")

    report(settings, cases, finds, results, istat_build, whisper_build, istat_dir, whisper_dir, profile_all)
    return 0


def report(settings: Settings, cases: list[Case], finds: list[Case], results: dict,
           istat_build: dict, whisper_build: dict, istat_dir: Path, whisper_dir: Path,
           profile_all: bool) -> None:
    from common import disk_usage

    headers = ("case", "istat median", "istat p95", "whisper median", "whisper p95", "speed-up", "n",
               "same values", "istat answer")
    rows: list[list[str]] = []

    def row(label: str, ours: dict, theirs: dict, same: str, answer: str) -> list[str]:
        (om, op), (tm, tp) = latency(ours), latency(theirs)
        return [f"  {label}", fmt_seconds(om), fmt_seconds(op), fmt_seconds(tm), fmt_seconds(tp),
                fmt_ratio(tm / om), f"{len(ours['seconds'])}/{len(theirs['seconds'])}", same, answer]

    for plugin in (False, True):
        rows.append([f"/render?format=json through Django's test client, "
                     f"{'FUNCTION_PLUGINS = [' + repr(PLUGIN) + ']' if plugin else 'stock graphite-web functions'}"])
        for case in cases:
            ours, theirs = results[("istat", plugin)][case.key], results[("whisper", plugin)][case.key]
            rows.append(row(case.label, ours, theirs, agree(ours["series"], theirs["series"]),
                            non_null(ours["series"])))
    for plugin in (False, True):
        rows.append([f"graphite-web's floor, {'plugin' if plugin else 'stock functions'}: MemoryFinder (the series "
                     f"already in memory, no read) in the istat columns; its speed-up is the best any finder could reach"])
        for case in cases:
            floor, theirs = results[("memory", plugin)][case.key], results[("whisper", plugin)][case.key]
            rows.append(row(case.label, floor, theirs, "-", non_null(floor["series"])))
    rows.append([f"/metrics/find (treejson): istat over {istat_build['names']:,} names, "
                 f"whisper StandardFinder over {settings.whisper_tree:,} empty .wsp files, format=treejson (entries: distinct names)"])
    for case in finds:
        ours, theirs = results[("istat", False)][case.key], results[("whisper", False)][case.key]
        rows.append(row(case.label, ours, theirs, "-", f"{ours['nodes']:,} entries (whisper {theirs['nodes']:,})"))
    print(f"graphite-web 1.1.10, {settings.metrics:,} metrics of 6 h at 10 s ({RETENTIONS}), "
          f"same points in both systems; n = timed requests istat/whisper")
    print_table(headers, rows)

    def med(system: str, plugin: bool, key: str) -> float:
        return median(results[(system, plugin)][key]["seconds"])

    render_speedup = med("whisper", False, "sumall") / med("istat", False, "sumall")
    worst_find = max(med("istat", False, c.key) for c in finds)
    plugin_speedup = med("whisper", False, "sumall6h") / med("istat", True, "sumall6h")
    render_floor = med("whisper", False, "sumall") / med("memory", False, "sumall")
    plugin_floor = med("whisper", False, "sumall6h") / med("memory", True, "sumall6h")
    targets = [
        (f"sumSeries {settings.metrics:,} metrics, 1 day, stock functions: istat >= "
         f"{TARGET_RENDER_SPEEDUP:.0f}x faster than whisper", fmt_ratio(render_speedup),
         render_speedup >= TARGET_RENDER_SPEEDUP, "sumall", fmt_ratio(render_floor)),
        (f"/metrics/find over {istat_build['names']:,} names < {TARGET_FIND_SECONDS * 1e3:.0f} ms "
         f"(slowest pattern)", fmt_seconds(worst_find), worst_find < TARGET_FIND_SECONDS, None, "-"),
        (f"sumSeries {settings.metrics:,} metrics x 6 h at 10 s: istat + plugin >= "
         f"{TARGET_PLUGIN_SPEEDUP:.0f}x faster than stock graphite-web on whisper",
         fmt_ratio(plugin_speedup), plugin_speedup >= TARGET_PLUGIN_SPEEDUP, "sumall6h", fmt_ratio(plugin_floor)),
    ]
    print()
    scale = "" if settings.metrics >= 10_000 and settings.find_names >= 1_000_000 else \
        "  (reduced sizes: the targets are set for 10,000 metrics and 1M names)"
    print_table(("target" + scale, "measured", "verdict", "best possible (floor)"),
                [[t[0], t[1], verdict(t[2]), t[4]] for t in targets])

    istat_disk, whisper_disk = disk_usage(istat_dir), disk_usage(whisper_dir)
    print()
    print(f"data built: istat {settings.metrics:,} metrics in {fmt_seconds(istat_build['render_data_s'])}, "
          f"with the {settings.find_names:,} find names {fmt_seconds(istat_build['total_s'])}, "
          f"{fmt_bytes(istat_disk.allocated)} allocated; whisper {settings.metrics:,} files in "
          f"{fmt_seconds(whisper_build['render_data_s'])}, with the tree {fmt_seconds(whisper_build['total_s'])}, "
          f"{fmt_bytes(whisper_disk.allocated)} allocated ({fmt_bytes(whisper_disk.apparent)} apparent, sparse)")

    missed = [key for _, _, ok, key, _ in targets if not ok and key is not None]
    for key in dict.fromkeys(["one", "sumall", "sumall6h"] if profile_all else missed):
        for plugin in (False, True):
            entry = results[("istat", plugin)][key]
            print()
            print(f"cProfile of one istat request ({'plugin' if plugin else 'stock functions'}): "
                  f"{next(c.label for c in cases if c.key == key)}, by cumulative time "
                  f"(Django's request wrappers left out)")
            print(strip_profile(entry["profile"]))


if __name__ == "__main__":
    sys.exit(main())
