"""graphite-istat side by side with stock carbon-cache 1.1.10 + whisper: same load, same configs, one run.

Usage: python benchmarks/bench_compare.py [--quick] [--results DIR] [--connections N]

For 10k, 100k and 1M distinct metrics at 10 s resolution (``--quick``: 10k
only, a shorter window), each system in turn gets a fresh storage directory
and the same pre-built plaintext load over several TCP connections for a fixed
window: ``graphite-istat serve`` first, then ``carbon-cache.py --debug``.
Both read storage-schemas ``10s:6h,1m:7d,10m:5y`` and unthrottled cache
settings (MAX_CACHE_SIZE, MAX_UPDATES_PER_SECOND, MAX_CREATES_PER_MINUTE inf).

After the window a reader counts, metric by metric, the sent points it can
read back (whisper.fetch on each ``.wsp`` file; a read-only ``Store`` for
graphite-istat) until every point is readable or the drain limit passes; then
the daemon is frozen (SIGSTOP) and what is on disk is what it persisted in
the window. Each row: points/s accepted, points/s persisted and readable,
points lost, the daemon's CPU seconds per million persisted points, its peak
RSS, disk bytes per stored metric (apparent and allocated), seconds from the
last point sent until everything was readable, and ``/render?format=json``
latency through graphite-web 1.1.10 with each system's finder.

The full run writes ``RESULTS.md`` and ``throughput.png`` into ``--results``
(default: this directory); ``--quick`` only prints unless ``--results`` is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
from common import Progress, disk_usage, fmt_bytes, fmt_rate, fmt_ratio, fmt_seconds, print_table
from compare_load import (
    LINE,
    STEP,
    SendReport,
    Workload,
    connection_rounds,
    measure_capacity,
    metric_names,
    points_sent,
    send_rounds,
)
from compare_systems import (
    RETENTIONS,
    IstatCounts,
    Server,
    WhisperCounts,
    start_carbon,
    start_istat,
)

HERE = Path(__file__).resolve().parent
MAX_ROUNDS = 2000  # 20000 s of 10 s rounds: all of them stay inside the 6 h archive while we read
ROUND_BUFFER_BYTES = 2_500_000_000  # the pre-built rounds of one workload, at most
OFFERED_RATE = 4_000_000  # points/s the pre-built rounds can feed over a whole window
SCAN_CHUNK = 20_000
GENERATOR_BOUND = (
    0.7  # accepted rate above this share of the generator's capacity: it may have limited
)
TARGET_SPEEDUP = 10.0
SYSTEMS = ("istat", "whisper")
LABELS = {"istat": "graphite-istat", "whisper": "carbon+whisper"}


@dataclass(frozen=True, slots=True)
class Plan:
    metrics: int
    window: float  # seconds of sending
    drain: float  # seconds after sending to wait for everything to become readable


FULL = (Plan(10_000, 20, 75), Plan(100_000, 30, 120), Plan(1_000_000, 30, 30))
QUICK = (Plan(10_000, 5, 40),)


@dataclass
class Row:
    system: str
    metrics: int
    sent: int = 0
    accepted_rate: float = 0.0
    persisted: int = 0
    persisted_rate: float = 0.0
    complete: bool = False
    readable_after: float = math.nan  # seconds from the last point sent
    measured_for: float = 0.0  # seconds from the first point sent to the end of the measurement
    cpu_per_million: float = math.nan
    peak_rss: int = 0
    metrics_on_disk: int = 0
    apparent_per_metric: float = math.nan
    allocated_per_metric: float = math.nan
    render: dict[str, float] = field(default_factory=dict)
    render_points: dict[str, int] = field(default_factory=dict)
    render_plugin: dict[str, float] = field(
        default_factory=dict
    )  # istat with graphite_istat.functions
    first_on_disk: dict[str, int] = field(default_factory=dict)  # of the metrics each render reads
    generator_cpu: float = 0.0
    ran_out: bool = False
    generator_bound: bool = False
    profile: str = ""
    daemon_totals: dict = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.sent - self.persisted


def ensure_matplotlib() -> None:
    """Install matplotlib (benchmarks/requirements.txt) into this interpreter's environment if missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        subprocess.check_call(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                str(HERE / "requirements.txt"),
            ]
        )


def rounds_for(plan: Plan) -> int:
    by_memory = ROUND_BUFFER_BYTES // (plan.metrics * LINE)
    by_rate = math.ceil(OFFERED_RATE * plan.window / plan.metrics)
    return max(1, min(MAX_ROUNDS, by_memory, by_rate))


def wait_readable(
    reader, row: Row, workload: Workload, report: SendReport, server: Server, drain: float
) -> np.ndarray:
    """Scan metric by metric until every sent point is readable or ``drain`` s pass; the counts read."""
    per_connection = np.array(report.rounds_per_connection)
    expected = per_connection[np.arange(workload.metrics) % workload.connections]
    counts = np.zeros(workload.metrics, dtype=np.int64)
    remaining = np.arange(workload.metrics)
    last_seen_complete = report.finished
    deadline = report.finished + drain
    while True:
        scan_start = time.perf_counter()
        for first in range(0, len(remaining), SCAN_CHUNK):
            chunk = remaining[first : first + SCAN_CHUNK]
            counts[chunk] = reader.counts(chunk)
            if (counts[chunk] >= expected[chunk]).any():
                last_seen_complete = time.perf_counter()
        remaining = remaining[counts[remaining] < expected[remaining]]
        now = time.perf_counter()
        if not len(remaining):
            row.complete = True
            row.readable_after = last_seen_complete - report.finished
            row.measured_for = last_seen_complete - report.started
            return counts
        if now >= deadline:
            server.freeze()
            row.measured_for = time.perf_counter() - report.started
            counts[remaining] = reader.counts(remaining)
            return counts
        server.check_running()
        time.sleep(min(2.0, max(0.05, now - scan_start), max(0.0, deadline - now)))


def run_system(
    system: str,
    plan: Plan,
    workload: Workload,
    rounds: list[list[bytes]],
    names: list[str],
    capacity: float,
    workdir: Path,
    reps: int,
    progress: Progress,
    with_plugin: bool,
) -> Row:
    root = workdir / f"{system}-{plan.metrics}"
    root.mkdir()
    server = start_istat(root) if system == "istat" else start_carbon(root)
    row = Row(system, plan.metrics)
    try:
        cpu_before = server.cpu_seconds()
        progress.mark(
            f"{LABELS[system]}, {plan.metrics:,} metrics: sending for up to {plan.window:.0f} s"
        )
        report = send_rounds(server.line_port, rounds, plan.window)
        row.sent = points_sent(workload, report)
        row.accepted_rate = row.sent / report.seconds
        row.generator_cpu = report.cpu_seconds / report.seconds
        row.ran_out = report.ran_out
        row.generator_bound = row.accepted_rate >= GENERATOR_BOUND * capacity
        last = workload.stamp(max(report.rounds_per_connection) - 1)
        reader_type = IstatCounts if system == "istat" else WhisperCounts
        reader = reader_type(server.storage, names, workload.first_stamp, last)
        progress.mark(f"  sent {row.sent:,} points in {report.seconds:.1f} s; reading back")
        counts = wait_readable(reader, row, workload, report, server, plan.drain)
        reader.close()
        row.cpu_per_million = (server.cpu_seconds() - cpu_before) / max(1, counts.sum()) * 1e6
        row.peak_rss = server.peak_rss()
        row.persisted = int(counts.sum())
        row.persisted_rate = row.persisted / row.measured_for
        row.metrics_on_disk = int((counts > 0).sum())
        row.first_on_disk = {
            key: int((counts[:n] > 0).sum()) for key, n in RENDERED_METRICS.items()
        }
        progress.mark(
            f"  persisted {row.persisted:,} ({'all' if row.complete else 'cut off'}) "
            f"in {row.measured_for:.1f} s"
        )
    finally:
        server.stop(graceful=row.complete)
    if system == "istat":
        row.daemon_totals = stopped_totals(server.log_path.read_text(errors="replace"))
    usage = disk_usage(server.storage)
    if row.metrics_on_disk:
        row.apparent_per_metric, row.allocated_per_metric = usage.per(row.metrics_on_disk)
    progress.mark(f"  rendering through graphite-web ({reps} reps)")
    spec = {
        "finder": system,
        "storage": str(server.storage),
        "conf": str(root / "conf"),
        "reps": reps,
        "warmup": with_plugin,  # the quick run renders each target once, cold, to stay short
    }
    rendered = render_child({**spec, "site": str(root / "site"), "profile": system == "istat"})
    row.render = rendered["seconds"]
    row.render_points = rendered["non_null"]
    row.profile = rendered.get("profile", "")
    if system == "istat" and with_plugin:
        progress.mark("  rendering again with graphite_istat.functions loaded")
        row.render_plugin = render_child(
            {**spec, "site": str(root / "site-plugin"), "function_plugin": True}
        )["seconds"]
    shutil.rmtree(root, ignore_errors=True)
    return row


def render_child(spec: dict) -> dict:
    """Run compare_render.py in a child process (graphite-web is configured once per process)."""
    done = subprocess.run(
        [sys.executable, str(HERE / "compare_render.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"render child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stopped_totals(log: str) -> dict:
    marker = log.rfind("stopped: {")
    if marker < 0:
        return {}
    try:
        return json.loads(log[marker + len("stopped: ") :].splitlines()[0])
    except json.JSONDecodeError:
        return {}


# ---------------------------------------------------------------- output


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def ratio(a: float, b: float) -> str:
    if not (a > 0 and b > 0) or math.isnan(a) or math.isnan(b):
        return "-"
    return fmt_ratio(a / b)


def readable_cell(row: Row) -> str:
    if row.complete:
        return fmt_seconds(row.readable_after)
    return f"not all ({row.persisted / max(1, row.sent):.1%} after {row.measured_for:.0f} s)"


RENDERED_METRICS = {"one": 1, "sum1k": 1_000, "sum10k": 10_000}


def render_cell(row: Row, key: str, seconds: float | None = None) -> str:
    if key not in row.render:
        return "-"
    cell = fmt_seconds(row.render[key] if seconds is None else seconds)
    on_disk = row.first_on_disk.get(key, 0)
    if on_disk < RENDERED_METRICS[key]:
        cell += f" ({on_disk:,} of {RENDERED_METRICS[key]:,} metrics on disk)"
    return cell


def render_complete(row: Row, key: str) -> bool:
    return row.first_on_disk.get(key, 0) >= RENDERED_METRICS[key]


def wide_rows(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "metrics",
        "system",
        "accepted",
        "persisted",
        "lost",
        "CPU s/Mpt",
        "peak RSS",
        "disk/metric (app / alloc)",
        "readable after last sent",
        "render 1",
        "render 1k",
        "render 10k",
    ]
    out = []
    for r in rows:
        out.append(
            [
                f"{r.metrics:,}",
                LABELS[r.system],
                fmt_rate(r.accepted_rate),
                fmt_rate(r.persisted_rate) + ("" if r.complete else " (window)"),
                f"{r.lost:,}",
                f"{r.cpu_per_million:.2f}",
                fmt_bytes(r.peak_rss),
                f"{fmt_bytes(r.apparent_per_metric)} / {fmt_bytes(r.allocated_per_metric)}",
                readable_cell(r),
                render_cell(r, "one"),
                render_cell(r, "sum1k"),
                render_cell(r, "sum10k"),
            ]
        )
    return headers, out


def comparison_rows(istat: Row, carbon: Row) -> list[list[str]]:
    """One measure a line: graphite-istat, carbon+whisper, and istat : whisper (>1 means istat is better)."""

    def inverse(a: float, b: float) -> str:
        return ratio(b, a)  # smaller is better: whisper / istat

    lines = [
        [
            "points/s accepted",
            fmt_rate(istat.accepted_rate),
            fmt_rate(carbon.accepted_rate),
            ratio(istat.accepted_rate, carbon.accepted_rate),
        ],
        [
            "points/s persisted and readable",
            fmt_rate(istat.persisted_rate),
            fmt_rate(carbon.persisted_rate),
            ratio(istat.persisted_rate, carbon.persisted_rate),
        ],
        ["points sent", f"{istat.sent:,}", f"{carbon.sent:,}", ""],
        ["points lost (sent, not readable at the end)", f"{istat.lost:,}", f"{carbon.lost:,}", ""],
        [
            "CPU s per million points",
            f"{istat.cpu_per_million:.2f}",
            f"{carbon.cpu_per_million:.2f}",
            inverse(istat.cpu_per_million, carbon.cpu_per_million),
        ],
        [
            "peak RSS",
            fmt_bytes(istat.peak_rss),
            fmt_bytes(carbon.peak_rss),
            inverse(istat.peak_rss, carbon.peak_rss),
        ],
        [
            "disk per metric, apparent",
            fmt_bytes(istat.apparent_per_metric),
            fmt_bytes(carbon.apparent_per_metric),
            inverse(istat.apparent_per_metric, carbon.apparent_per_metric),
        ],
        [
            "disk per metric, allocated",
            fmt_bytes(istat.allocated_per_metric),
            fmt_bytes(carbon.allocated_per_metric),
            inverse(istat.allocated_per_metric, carbon.allocated_per_metric),
        ],
        [
            "last point sent → all readable",
            readable_cell(istat),
            readable_cell(carbon),
            inverse(istat.readable_after, carbon.readable_after),
        ],
    ]
    for key, what in (
        ("one", "render 1 metric, 1 day"),
        ("sum1k", "render sumSeries 1,000"),
        ("sum10k", "render sumSeries 10,000"),
    ):
        lines.append(
            [
                what,
                render_cell(istat, key),
                render_cell(carbon, key),
                comparable(istat, carbon, key, istat.render.get(key, math.nan)),
            ]
        )
    for key, what in (
        ("sum1k", "render sumSeries 1,000, istat + function plugin"),
        ("sum10k", "render sumSeries 10,000, istat + function plugin"),
    ):
        if key in istat.render_plugin:
            lines.append(
                [
                    what,
                    render_cell(istat, key, istat.render_plugin[key]),
                    render_cell(carbon, key),
                    comparable(istat, carbon, key, istat.render_plugin[key]),
                ]
            )
    return lines


def comparable(istat: Row, carbon: Row, key: str, istat_seconds: float) -> str:
    """whisper / istat render time, where both read every metric the target names."""
    if not (render_complete(istat, key) and render_complete(carbon, key)):
        return "-"
    return ratio(carbon.render.get(key, math.nan), istat_seconds)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in rows]
    return "\n".join(lines)


def target_notes(pairs: dict[int, tuple[Row, Row]]) -> list[str]:
    notes = []
    if 100_000 in pairs:
        istat, carbon = pairs[100_000]
        speedup = (
            istat.persisted_rate / carbon.persisted_rate if carbon.persisted_rate else math.inf
        )
        ok = speedup >= TARGET_SPEEDUP and istat.lost == 0
        notes.append(
            f"* Persisted points/s at 100k metrics, istat ≥ 10x carbon+whisper with 0 lost: "
            f"**{'met' if ok else 'missed'}** — {speedup:.1f}x ({fmt_rate(istat.persisted_rate)} vs "
            f"{fmt_rate(carbon.persisted_rate)}), {istat.lost:,} points lost"
            + ("." if ok else f"; short by {TARGET_SPEEDUP / speedup:.2f}x of the target.")
        )
        if not ok:
            notes.append(daemon_breakdown(istat))
    render_pair = pairs.get(100_000) or pairs.get(max(pairs))
    istat, carbon = render_pair
    if "sum10k" in istat.render and "sum10k" in carbon.render:
        speedup = carbon.render["sum10k"] / istat.render["sum10k"]
        ok = speedup >= TARGET_SPEEDUP
        notes.append(
            f"* `sumSeries` over 10,000 metrics through graphite-web at {istat.metrics:,} metrics, "
            f"istat ≥ 10x faster: **{'met' if ok else 'missed'}** — {speedup:.1f}x "
            f"({fmt_seconds(istat.render['sum10k'])} vs {fmt_seconds(carbon.render['sum10k'])})"
            + (
                "."
                if ok
                else f"; short by {TARGET_SPEEDUP / speedup:.2f}x. Where the istat side's time goes "
                f"(cProfile of one request, by own time):\n\n```\n{trim_profile(istat.profile)}\n```"
            )
        )
        if "sum10k" in istat.render_plugin:
            plugin_speedup = carbon.render["sum10k"] / istat.render_plugin["sum10k"]
            notes.append(
                f"* The same render with graphite-istat's function plugin loaded as well "
                f"(`FUNCTION_PLUGINS = ['graphite_istat.functions']`, numpy `sumSeries`): "
                f"{fmt_seconds(istat.render_plugin['sum10k'])}, {plugin_speedup:.1f}x carbon+whisper "
                f"(**{'met' if plugin_speedup >= TARGET_SPEEDUP else 'missed'}** with the plugin)."
            )
    return notes


def daemon_breakdown(row: Row) -> str:
    keys = {
        k: v for k, v in row.daemon_totals.items() if "econds" in k or k in ("points", "batches")
    }
    return (
        f"  The istat daemon's own totals for that run (where its time went): `{json.dumps(keys)}`"
    )


def trim_profile(text: str) -> str:
    """The profile's table, with file names shortened to the package path."""
    text = re.sub(r"\S*/(?:site-packages|benchmarks)/", "", text)
    text = re.sub(r"\S*/(graphite_istat/)", r"\1", text)
    lines = [line for line in text.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start : start + 16])


def write_results(
    directory: Path,
    rows: list[Row],
    pairs: dict[int, tuple[Row, Row]],
    capacity: float,
    connections: int,
    plans: tuple[Plan, ...],
    workloads: dict[int, Workload],
    started: datetime.datetime,
    elapsed: float,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    headers, table = wide_rows(rows)
    parts = [
        "# graphite-istat vs carbon-cache + whisper",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs ({cpu_model()}), Python "
        f"{platform.python_version()}, carbon {version('carbon')}, whisper {version('whisper')}, "
        f"graphite-web {version('graphite-web')}; the whole run took {elapsed / 60:.1f} min. "
        "Produced by `make bench` (`python benchmarks/bench_compare.py`).",
        "",
        f"Both systems: storage-schemas `{RETENTIONS}`, average, xFilesFactor 0.5; MAX_CACHE_SIZE, "
        "MAX_UPDATES_PER_SECOND and MAX_CREATES_PER_MINUTE `inf`; self-metrics off; 127.0.0.1 only. "
        "One system after the other on the same machine, each with a fresh storage directory and no "
        "warm-up: metric creation is part of the measurement.",
        "",
        "Load: plaintext, one point per metric per round, rounds 10 s apart in timestamp (each metric's "
        f"points are consecutive 10 s buckets), pre-built before the clock starts, over {connections} TCP "
        f"connections as fast as the daemon reads them. The generator alone reaches {fmt_rate(capacity)} "
        "into a discarding sink; a row whose accepted rate came within "
        f"{GENERATOR_BOUND:.0%} of that is marked as possibly generator-bound.",
        "",
        "| metrics | send window | rounds pre-built |",
        "|---|---|---|",
    ]
    for plan in plans:
        parts.append(
            f"| {plan.metrics:,} | {plan.window:.0f} s (drain limit {plan.drain:.0f} s) | "
            f"{workloads[plan.metrics].rounds:,} |"
        )
    parts += [
        "",
        "## All rows",
        "",
        markdown_table(headers, table),
        "",
        "*persisted*: points read back from disk (whisper.fetch of every `.wsp`; a read-only graphite-istat "
        "`Store`), divided by the time from the first byte sent until the last metric was seen complete. "
        "*(window)*: not everything was readable by the drain limit; the daemon was then frozen and the rate "
        "is what it had persisted in that fixed window. *lost*: sent minus read back at that moment. "
        "CPU is the daemon's (user + system, psutil) from the first byte to the end of the measurement, "
        "per million persisted points. Disk is per metric holding at least one point. Render: median of "
        "repeated `/render?format=json&from=-1d` through graphite-web's Django test client with one finder "
        "(StandardFinder on the whisper directory, IstatFinder on the istat directory).",
        "",
    ]
    parts += [
        "In the tables per workload, *istat : whisper* says how many times better graphite-istat did: "
        "istat / whisper for rates, whisper / istat for CPU, memory, bytes and seconds; below 1 whisper did better.",
        "",
    ]
    for metrics, (istat, carbon) in pairs.items():
        parts += [
            f"## {metrics:,} metrics",
            "",
            markdown_table(
                ["measure", "graphite-istat", "carbon+whisper", "istat : whisper"],
                comparison_rows(istat, carbon),
            ),
            "",
        ]
        flags = []
        for r in (istat, carbon):
            if r.generator_bound:
                flags.append(
                    f"{LABELS[r.system]}: accepted {fmt_rate(r.accepted_rate)}, within "
                    f"{GENERATOR_BOUND:.0%} of the generator's capacity — the generator may have been "
                    "the bottleneck."
                )
            if r.ran_out:
                flags.append(
                    f"{LABELS[r.system]}: took every pre-built round before the window closed "
                    "(its accepted rate is a lower bound)."
                )
            if not render_complete(r, "sum10k"):
                flags.append(
                    f"{LABELS[r.system]}: only {r.first_on_disk.get('sum10k', 0):,} of the 10,000 metrics "
                    "the sumSeries renders read were on disk, so its render times are not comparable."
                )
        parts += [f"* {flag}" for flag in flags] + ([""] if flags else [])
    parts += [
        "## Targets",
        "",
        *target_notes(pairs),
        "",
        "![points/s persisted against metric count](throughput.png)",
        "",
        "## Notes",
        "",
        "* carbon runs with `WHISPER_SPARSE_CREATE = True`: a `10m:5y` whisper file is 3.2 MB, and writing "
        "every byte of 10,000 of them does not fit this disk. It makes carbon's creates cheaper, not "
        "dearer; its allocated bytes are what the sparse files really use.",
        "* The 1M-metric row for carbon+whisper is a fixed window: whisper cannot create and fill a "
        "million files in minutes, so the table shows what it persisted by then instead of waiting hours.",
        "",
    ]
    (directory / "RESULTS.md").write_text("\n".join(parts))
    draw_plot(directory / "throughput.png", pairs)


def draw_plot(path: Path, pairs: dict[int, tuple[Row, Row]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    metrics = sorted(pairs)
    for index, (system, marker) in enumerate((("istat", "o"), ("whisper", "s"))):
        rates = [pairs[m][index].persisted_rate for m in metrics]
        axes.plot(metrics, rates, marker=marker, label=LABELS[system])
        for m, rate, row in zip(metrics, rates, (pairs[m][index] for m in metrics), strict=True):
            if not row.complete:
                axes.annotate(
                    "fixed window",
                    (m, rate),
                    textcoords="offset points",
                    xytext=(-80, 6),
                    fontsize=8,
                )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("distinct metrics (10 s resolution)")
    axes.set_ylabel("points/s persisted and readable")
    axes.set_title(f"Ingest, same load, same machine ({os.cpu_count()} CPUs)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k metrics only, a short window")
    parser.add_argument(
        "--results", type=Path, default=None, help="where RESULTS.md and throughput.png go"
    )
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="parent of the temporary storage"
    )
    args = parser.parse_args()
    results = args.results if args.results is not None else (None if args.quick else HERE)
    if results is not None:
        ensure_matplotlib()
    plans = QUICK if args.quick else FULL
    reps = 1 if args.quick else 2
    started_at = datetime.datetime.now(datetime.UTC)
    progress = Progress()
    clock = time.perf_counter()
    capacity = measure_capacity(args.connections, 2.0)
    progress.mark(f"load generator alone: {fmt_rate(capacity)} into a discarding sink")
    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-", dir=args.workdir))
    rows: list[Row] = []
    pairs: dict[int, tuple[Row, Row]] = {}
    workloads: dict[int, Workload] = {}
    try:
        for plan in plans:
            count = rounds_for(plan)
            first_stamp = (int(time.time()) - STEP * (count + 2)) // STEP * STEP
            workload = Workload(plan.metrics, first_stamp, count, plan.window, args.connections)
            workloads[plan.metrics] = workload
            progress.mark(f"building {count:,} rounds of {plan.metrics:,} metrics")
            rounds = connection_rounds(workload)
            names = metric_names(plan.metrics)
            pair = tuple(
                run_system(
                    system,
                    plan,
                    workload,
                    rounds,
                    names,
                    capacity,
                    workdir,
                    reps,
                    progress,
                    not args.quick,
                )
                for system in SYSTEMS
            )
            del rounds
            rows += pair
            pairs[plan.metrics] = pair  # type: ignore[assignment]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    headers, table = wide_rows(rows)
    print(
        f"\nnproc {os.cpu_count()} ({cpu_model()}), {args.connections} connections, "
        f"generator alone {fmt_rate(capacity)}"
    )
    print_table(headers, table)
    for metrics, (istat, carbon) in pairs.items():
        print(f"\n{metrics:,} metrics")
        print_table(
            ["measure", "graphite-istat", "carbon+whisper", "istat : whisper"],
            comparison_rows(istat, carbon),
        )
    print()
    for note in target_notes(pairs):
        print(note)
    if results is not None:
        write_results(
            results,
            rows,
            pairs,
            capacity,
            args.connections,
            plans,
            workloads,
            started_at,
            time.perf_counter() - clock,
        )
        print(f"\nwrote {results / 'RESULTS.md'} and {results / 'throughput.png'}")


if __name__ == "__main__":
    main()
