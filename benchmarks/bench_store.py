"""Benchmark of the store side by side with whisper 1.1.10: writes, fetches, globs, bytes on disk.

Usage: python benchmarks/bench_store.py [--quick] [--profile] [--metrics N] [--batches N]
       [--whisper-metrics N] [--fetches N] [--bulk N] [--glob-names N] [--whisper-tree N]
       [--rounds N] [--workdir DIR] [--keep]

Both systems get the same points at the same retentions (``10s:6h,1m:7d,10m:5y``,
average, xFilesFactor 0.5) in one run, and one table compares them:

* points/s applied: batches of one point per metric (consecutive 10 s
  timestamps), every archive updated (istat's coarse archives when their
  buckets end: the batches that end a minute carry its rollup).
  graphite-istat takes each batch in one ``Store.write``, names as a list
  of str and as bytes (``EncodedNames``, what the plaintext receiver hands
  over); whisper takes carbon's writer path, one ``whisper.update_many`` per
  metric with that metric's points of the batch, on an evenly spread subset
  of the metrics (a file per metric is too slow and too big for all of
  them). The measured batches land on rows a store reuses once it has run
  for a retention; the same batches written on fresh rows before them (the
  first pass of a new store, which enters a new tile every 8 batches) are
  shown apart. Median and mean per batch; creation is timed apart.
* one-metric fetch latency over one day (``fetch_stat`` vs ``whisper.fetch``;
  istat's reads go through a read-only ``Store``, as graphite-web's finder's do),
* bulk fetch of many metrics over one day (one ``Store.fetch_values``, and
  one ``Store.fetch`` of the counters plus ``default_values``, vs one
  ``whisper.fetch`` per metric),

  Before the reads, every metric read (the bulk selections and the whisper
  subset) gets a full day of history in its 1-minute archive, in both
  systems, so that reads copy a day of written cells, not empty rows.
* glob over a million names (``Store.match``) vs graphite-web 1.1.10's
  ``StandardFinder`` walking a smaller tree of empty ``.wsp`` files,
* bytes on disk per metric, apparent and allocated.

The machine may be shared, so each phase runs several rounds (or many
batches) and the table shows medians. Neither system fsyncs during the timed
writes (whisper's AUTOFLUSH is off, carbon's default; the store's fsync
interval is set beyond the run and one ``sync`` is timed apart).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import whisper
from common import (
    DiskUsage,
    Progress,
    disk_usage,
    fmt_bytes,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    median,
    percentile,
    print_table,
    rss_bytes,
    timed,
    verdict,
)

from graphite_istat.config import load_storage_rules
from graphite_istat.store.batch import EncodedNames, WriteBatch
from graphite_istat.store.format import TILE_ROWS
from graphite_istat.store.store import DEFAULT_VALUE, Store, StoreOptions, spare_rows

RETENTIONS = "10s:6h,1m:7d,10m:5y"
AGGREGATION = "average"
X_FILES_FACTOR = 0.5
STEP = 10  # seconds between a metric's consecutive points
DAY = 86400

TARGET_POINTS_PER_SECOND = 3_000_000
TARGET_BULK_SPEEDUP = 10.0
TARGET_BYTES_RATIO = 4.0

SCHEMAS_CONF = f"[all]\nmatch-all = true\nretentions = {RETENTIONS}\n"
AGGREGATION_CONF = (
    f"[all]\nmatch-all = true\nxFilesFactor = {X_FILES_FACTOR}\naggregationMethod = {AGGREGATION}\n"
)

# Patterns whose hosts exist in both the million-name store and the smaller
# whisper tree, so that both answer the same matches; the last one spans every
# host and so grows with the tree.
GLOB_PATTERNS = (
    "servers.host00[0-4]?.cpu.*.user",
    "servers.host00[1-3]?.mem.free",
    "servers.host0042.disk.*.{reads,writes}.bytes",
    "servers.*.mem.free",
)

CPU_METRICS = ("user", "system", "nice", "idle", "iowait", "irq", "softirq", "steal")
MEM_METRICS = ("used", "free", "cached", "buffers", "swap_used", "swap_free", "shared", "available")
DISK_METRICS = tuple(
    f"{op}.{what}" for op in ("reads", "writes") for what in ("count", "bytes", "time", "merged")
)
METRICS_PER_HOST = 16 * len(CPU_METRICS) + len(MEM_METRICS) + 8 * len(DISK_METRICS)


def host_metrics(host: int) -> list[str]:
    """The 200 metric names of one host, 4 to 6 levels deep."""
    prefix = f"servers.host{host:04d}"
    names = [f"{prefix}.cpu.core{core}.{m}" for core in range(16) for m in CPU_METRICS]
    names += [f"{prefix}.mem.{m}" for m in MEM_METRICS]
    names += [f"{prefix}.disk.sd{d}.{m}" for d in "abcdefgh" for m in DISK_METRICS]
    return names


def metric_names(first: int, count: int) -> list[str]:
    """Names number ``first`` to ``first + count - 1`` of the endless host-by-host sequence."""
    names: list[str] = []
    host = first // METRICS_PER_HOST
    skip = first % METRICS_PER_HOST
    while len(names) < count:
        names.extend(host_metrics(host)[skip:])
        skip = 0
        host += 1
    return names[:count]


def whisper_path(root: Path, name: str) -> str:
    return str(root.joinpath(*name.split("."))) + ".wsp"


@dataclass(frozen=True, slots=True)
class Settings:
    metrics: int  # metrics written, one point each per batch
    batches: int  # batches written; the first creates the metrics and is not in the rate
    whisper_metrics: int  # whisper files written (a spread subset of the metrics)
    fetches: int  # one-metric fetches per round and system
    bulk: int  # metrics in the bulk fetch
    glob_names: int  # names in the store when globs are timed
    whisper_tree: int  # empty .wsp files in the tree graphite-web walks
    rounds: int  # repeats of the fetch and glob phases
    profile_batches: int  # extra batches written under cProfile with --profile


FULL = Settings(
    metrics=100_000,
    batches=30,
    whisper_metrics=2_000,
    fetches=2_000,
    bulk=10_000,
    glob_names=1_000_000,
    whisper_tree=100_000,
    rounds=5,
    profile_batches=10,
)
QUICK = Settings(
    metrics=20_000,
    batches=8,
    whisper_metrics=100,
    fetches=300,
    bulk=2_000,
    glob_names=50_000,
    whisper_tree=10_000,
    rounds=3,
    profile_batches=4,
)


@dataclass(slots=True)
class Table:
    """Rows of the comparison table: section headings and measures."""

    rows: list[list[str]] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.rows.append([title])

    def add(
        self,
        measure: str,
        istat: str,
        whisper_figure: str = "",
        ratio: str = "",
        target: str = "",
        outcome: str = "",
        note: str = "",
    ) -> None:
        self.rows.append([measure, istat, whisper_figure, ratio, target, outcome, note])


def faster(ours: float, theirs: float) -> str:
    """``theirs / ours`` as 'Nx faster' (or slower) for durations."""
    ratio = theirs / ours
    return f"{fmt_ratio(ratio)} faster" if ratio >= 1 else f"{fmt_ratio(1 / ratio)} slower"


@dataclass(slots=True)
class Workload:
    """The metrics, their whisper subset and the points of every batch."""

    names: list[str]
    whisper_rows: np.ndarray  # indices into names of the metrics also written to whisper
    whisper_paths: list[str]
    start: int  # timestamp of batch 0
    values: np.ndarray  # (batches, metrics)
    encoded_names: EncodedNames  # the names as the plaintext receiver hands them over

    def timestamp(self, batch: int) -> int:
        return self.start + STEP * batch

    def now_after(self, batch: int) -> int:
        """The clock when batch ``batch`` is written: just after its timestamp."""
        return self.timestamp(batch) + STEP

    def istat_batch(self, batch: int, *, encoded: bool = False, shift: int = 0) -> WriteBatch:
        ts = np.full(len(self.names), self.timestamp(batch) - shift, dtype=np.int64)
        names = self.encoded_names if encoded else self.names
        return WriteBatch.from_arrays(names, ts, self.values[batch % len(self.values)])

    def whisper_jobs(self, batch: int, shift: int = 0) -> list[tuple[str, list[tuple[int, float]]]]:
        """(path, points) per whisper metric: what carbon's writer hands to update_many."""
        ts = self.timestamp(batch) - shift
        row = self.values[batch % len(self.values)]
        return [
            (path, [(ts, float(row[i]))])
            for path, i in zip(self.whisper_paths, self.whisper_rows.tolist(), strict=True)
        ]


def make_workload(settings: Settings, whisper_root: Path, now: int) -> Workload:
    names = metric_names(0, settings.metrics)
    whisper_count = min(settings.whisper_metrics, settings.metrics)
    rows = np.unique(np.linspace(0, settings.metrics - 1, whisper_count).astype(np.int64))
    paths = [whisper_path(whisper_root, names[i]) for i in rows.tolist()]
    total_batches = 2 * settings.batches + settings.profile_batches  # str names, then bytes
    # Batch 0 on a 10-minute boundary, the last batch before the wall clock.
    start = (now - STEP * (total_batches + 1)) // 600 * 600
    values = np.random.default_rng(7).normal(100.0, 15.0, size=(settings.batches, settings.metrics))
    return Workload(names, rows, paths, start, values, EncodedNames.from_strings(names))


def write_whisper_batch(jobs: Sequence[tuple[str, list[tuple[int, float]]]], now: int) -> None:
    for path, points in jobs:
        whisper.update_many(path, points, now=now)


def whisper_archives() -> list[tuple[int, int]]:
    return [whisper.parseRetentionDef(r) for r in RETENTIONS.split(",")]


def whisper_file_bytes() -> int:
    """Size of one .wsp file of these retentions, from whisper's own header sizes."""
    archives = whisper_archives()
    return whisper.metadataSize + whisper.archiveInfoSize * len(archives) + sum(
        points * whisper.pointSize for _, points in archives
    )


def create_whisper_files(paths: Sequence[str]) -> None:
    """carbon's way: make the directory, then whisper.create with fallocate."""
    archives = whisper_archives()
    for path in paths:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        whisper.create(path, archives, X_FILES_FACTOR, AGGREGATION, False, True)


def write_phase(
    table: Table, settings: Settings, store: Store, work: Workload, store_dir: Path, whisper_root: Path
) -> int:
    """Create, then write batches to both systems, interleaved; returns the next batch number.

    A store that has run for longer than its retentions reuses its rows; a
    new one touches fresh pages as it enters each new tile. The measured
    batches run on reused rows: the same batches are first written one ring
    of the 1-minute archive earlier (its rows; the first of them creates the
    metrics), then one ring of the finest archive earlier (its rows, timed:
    the first pass of a new store), the clock moving forward throughout;
    batch 0 then takes the rollups of the clock's jump to the measured hour.
    """
    n, w = len(work.names), len(work.whisper_paths)
    measured = range(1, 2 * settings.batches - 1)
    rss_before = rss_bytes()
    # the span of a ring: rows kept plus the spare rows for points ahead of now
    (step0, rows0), (step1, rows1) = whisper_archives()[:2]
    future = store.options.future_limit
    finest_ring = (rows0 + spare_rows(step0, future)) * step0
    minute_ring = (rows1 + spare_rows(step1, future)) * step1
    first = work.istat_batch(0, shift=minute_ring)
    create_istat, result = timed(lambda: store.write(first, now=work.now_after(0) - minute_ring))
    assert result.created == n and result.accepted == n, result
    create_whisper, _ = timed(lambda: create_whisper_files(work.whisper_paths))
    write_whisper_batch(work.whisper_jobs(0, minute_ring), work.now_after(0) - minute_ring)
    names = work.encoded_names
    table_build, _ = timed(lambda: store.index.slots_of_encoded(names.data, names.offsets[:-1], names.offsets[1:]))
    timed_writes(store, work, measured, encoded=True, shift=minute_ring)
    first_pass = timed_writes(store, work, measured, encoded=True, shift=finest_ring)
    # batch 0, untimed, rolls up what the 6 hours' jump of the clock ended
    timed_writes(store, work, range(1), encoded=True)
    str_writes = timed_writes(store, work, range(1, settings.batches), encoded=False)
    byte_writes = timed_writes(store, work, range(settings.batches, 2 * settings.batches - 1), encoded=True)
    rss_after = rss_bytes()
    sync_time, _ = timed(store.sync)

    table.section(
        f"Writes: 2 x {settings.batches - 1} batches of one point per metric on reused rows, "
        "median per batch; the target holds when the mean (all points over all batches' time) meets it too"
    )
    for title, writes, how, judged in (
        ("points/s applied, names as str", str_writes, "Store.write of a list of str, as the carbon plugin", True),
        ("points/s applied, names as bytes", byte_writes, "EncodedNames, as the plaintext receiver", True),
        (
            "  first pass through the rows",
            first_pass,
            f"the same batches a ring ({finest_ring // 3600} h) earlier, names as bytes, on a new store: "
            "every 8th batch enters new tiles (fresh pages)",
            False,
        ),
    ):
        rate = n / median(writes.istat)
        mean_rate = n * len(writes.istat) / sum(writes.istat)
        rates = sorted(n / t for t in writes.istat)
        whisper_rate = w / median(writes.whisper)
        table.add(
            title,
            fmt_rate(rate),
            fmt_rate(whisper_rate),
            fmt_ratio(rate / whisper_rate),
            f">= {fmt_rate(TARGET_POINTS_PER_SECOND)}" if judged else "",
            verdict(min(rate, mean_rate) >= TARGET_POINTS_PER_SECOND) if judged else "",
            f"{how}; mean {fmt_rate(mean_rate)}, range {fmt_rate(rates[0])}..{fmt_rate(rates[-1])}; "
            f"{n:,} points/batch; whisper {w:,} update_many calls/batch",
        )
        table.add(
            "  istat CPU per point",
            f"{median(writes.cpu) / n * 1e9:.0f} ns",
            f"{median(writes.whisper) / w * 1e6:.0f} µs",
            "",
            "",
            "",
            f"istat: process CPU time, median batch (mean {sum(writes.cpu) / len(writes.cpu) / n * 1e9:.0f} ns); "
            "whisper: wall time per update_many",
        )
    table.add(
        "  istat name table, new names added",
        fmt_seconds(table_build.wall),
        "",
        "",
        "",
        "",
        f"the {n:,} names the first write created, added to the byte table at the next lookup",
    )
    table.add(
        "create metrics (per metric)",
        fmt_seconds(create_istat.wall / n),
        fmt_seconds(create_whisper.wall / w),
        faster(create_istat.wall / n, create_whisper.wall / w),
        "",
        "",
        f"istat: first write of {n:,} new metrics, points included; "
        f"whisper: makedirs + create (fallocate) of {w:,} files",
    )
    table.add(
        "  istat writer RSS growth",
        fmt_bytes(rss_after - rss_before),
        "",
        "",
        "",
        "",
        f"{(rss_after - rss_before) / n:.0f} B/metric, mapped pages included",
    )
    table.add("  istat sync after the writes", fmt_seconds(sync_time.wall), "", "", "", "", "one fsync pass")

    istat_disk = disk_usage(store_dir)
    whisper_disk = disk_usage(whisper_root)
    bytes_rows(table, istat_disk, whisper_disk, n, w)
    return 2 * settings.batches - 1


@dataclass(slots=True)
class WriteTimes:
    """Seconds per batch: istat wall and CPU, whisper wall."""

    istat: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    whisper: list[float] = field(default_factory=list)


def timed_writes(store: Store, work: Workload, batches: range, *, encoded: bool, shift: int = 0) -> WriteTimes:
    """Write ``batches`` (``shift`` seconds earlier, clock included) to both systems, interleaved, each timed."""
    times = WriteTimes()
    n = len(work.names)
    for batch in batches:
        istat_batch = work.istat_batch(batch, encoded=encoded, shift=shift)
        jobs = work.whisper_jobs(batch, shift)
        now = work.now_after(batch) - shift
        t, result = timed(lambda b=istat_batch, now=now: store.write(b, now=now))
        assert result.accepted == n and not result.rejected, result
        times.istat.append(t.wall)
        times.cpu.append(t.cpu)
        t, _ = timed(lambda jobs=jobs, now=now: write_whisper_batch(jobs, now))
        times.whisper.append(t.wall)
    return times


def bytes_rows(table: Table, istat_disk: DiskUsage, whisper_disk: DiskUsage, n: int, w: int) -> None:
    istat_apparent, istat_allocated = istat_disk.per(n)
    whisper_apparent, whisper_allocated = whisper_disk.per(w)
    table.section("Bytes on disk per metric, after the writes")
    apparent_ratio = istat_apparent / whisper_apparent
    table.add(
        "apparent (st_size)",
        fmt_bytes(istat_apparent),
        fmt_bytes(whisper_apparent),
        f"{fmt_ratio(apparent_ratio)} whisper",
        f"<= {TARGET_BYTES_RATIO:g}x whisper",
        verdict(apparent_ratio <= TARGET_BYTES_RATIO),
        "what every metric costs once all its buckets have been written",
    )
    allocated_ratio = istat_allocated / whisper_allocated
    table.add(
        "allocated (st_blocks*512)",
        fmt_bytes(istat_allocated),
        fmt_bytes(whisper_allocated),
        f"{fmt_ratio(allocated_ratio)} whisper",
        f"<= {TARGET_BYTES_RATIO:g}x whisper",
        verdict(allocated_ratio <= TARGET_BYTES_RATIO),
        f"istat files are sparse and fill in as buckets are written; "
        f"{istat_disk.files} istat files, {whisper_disk.files:,} .wsp",
    )


def profile_writes(settings: Settings, store: Store, work: Workload, first_batch: int) -> str:
    """cProfile of ``profile_batches`` more batches through Store.write (whisper gets them unprofiled)."""
    batches = [work.istat_batch(b) for b in range(first_batch, first_batch + settings.profile_batches)]
    profiler = cProfile.Profile()
    profiler.enable()
    for offset, batch in enumerate(batches):
        store.write(batch, now=work.now_after(first_batch + offset))
    profiler.disable()
    # whisper gets the same points, so that both still hold the same data.
    for number in range(first_batch, first_batch + settings.profile_batches):
        write_whisper_batch(work.whisper_jobs(number), work.now_after(number))
    return format_profile(
        profiler,
        f"Store.write, {settings.profile_batches} batches of {len(work.names):,} points "
        f"over {len(work.names):,} metrics",
    )


def format_profile(profiler: cProfile.Profile, title: str, top: int = 25) -> str:
    text = io.StringIO()
    text.write(f"\n=== profile: {title} ===\n")
    for order in ("tottime", "cumulative"):
        text.write(f"--- top {top} by {order} ---\n")
        stats = pstats.Stats(profiler, stream=text)
        stats.strip_dirs().sort_stats(order).print_stats(top)
    return text.getvalue()


def as_float_array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def agreement(store: Store, work: Workload, now: int, sample: int = 20) -> tuple[int, int]:
    """How many (metric, range) reads give the same grid and values from both systems."""
    same = total = 0
    picks = np.linspace(0, len(work.whisper_paths) - 1, min(sample, len(work.whisper_paths)))
    for k in np.unique(picks.astype(np.int64)).tolist():
        name = work.names[int(work.whisper_rows[k])]
        for span in (3600, DAY):
            total += 1
            ours = store.fetch_stat(name, now - span, now, now=now)
            (start, end, step), theirs = whisper.fetch(work.whisper_paths[k], now - span, now, now=now)
            if ours is None:
                continue
            grid, values = ours
            if (grid.start, grid.end, grid.step) == (start, end, step) and np.allclose(
                values, as_float_array(theirs), equal_nan=True
            ):
                same += 1
    return same, total


def bulk_selections(settings: Settings, work: Workload) -> dict[str, tuple[list[int], str]]:
    """The metrics (indices into names) of each bulk read, and how they were picked."""
    count = min(settings.bulk, len(work.names))
    spread = np.linspace(0, len(work.names) - 1, count).astype(np.int64).tolist()
    return {
        "spread": (spread, "every k-th metric"),
        "whole hosts": (list(range(count)), f"{count // METRICS_PER_HOST} hosts' metrics"),
    }


def fill_history(settings: Settings, store: Store, work: Workload, now: int) -> list[int]:
    """A day of history before batch 0 in the 1-minute archive of every metric read, in both systems.

    istat gets whole cells (``Store.write_cells``, as an import does), each as
    if the metric had sent its minute's value every 10 s; whisper gets the
    same values, one point a minute, through ``update_many``. The reads then
    copy a day of written cells in both. Returns the metrics filled (indices
    into names).
    """
    filled = set(work.whisper_rows.tolist())
    for rows, _ in bulk_selections(settings, work).values():
        filled.update(rows)
    metrics = sorted(filled)
    minutes = np.arange(work.start - DAY, work.start, 60, dtype=np.int64)
    values = np.random.default_rng(5).normal(100.0, 15.0, size=(len(metrics), len(minutes)))
    per_minute = 60 // STEP
    for k, metric in enumerate(metrics):
        row = values[k]
        counters = {
            "count": np.full(len(minutes), per_minute),
            "sum": row * per_minute,
            "sumsq": row * row * per_minute,
            "min": row,
            "max": row,
        }
        store.write_cells(work.names[metric], 1, minutes, counters, approximate=False, now=now)
    position = {metric: k for k, metric in enumerate(metrics)}
    stamps = minutes.tolist()
    for path, metric in zip(work.whisper_paths, work.whisper_rows.tolist(), strict=True):
        whisper.update_many(path, list(zip(stamps, values[position[metric]].tolist(), strict=True)), now=now)
    return metrics


def istat_bulk(store: Store, names: Sequence[str], from_t: int, now: int, *, counters: bool = False) -> int:
    """One read of the default values of all ``names``; the number of series read.

    ``Store.fetch_values`` (what the finder uses for plain paths), or with
    ``counters`` ``Store.fetch`` of the counters they need and ``default_values``.
    """
    if counters:
        result = store.fetch(names, from_t, now, now=now, fields=(DEFAULT_VALUE,))
    else:
        result = store.fetch_values(names, from_t, now, now=now)
    assert not result.missing and not result.errors
    return sum(len(s.default_values()) for s in result.sets)


def fetch_phase(
    table: Table,
    settings: Settings,
    store: Store,
    work: Workload,
    now: int,
    filled: list[int],
    agreed: tuple[int, int],
) -> None:
    same, total = agreed
    rng = np.random.default_rng(11)
    from_t = now - DAY
    istat_latency: list[float] = []
    whisper_latency: list[float] = []
    for _ in range(settings.rounds):
        for i in rng.choice(filled, settings.fetches).tolist():
            t, got = timed(lambda name=work.names[i]: store.fetch_stat(name, from_t, now, now=now))
            assert got is not None
            istat_latency.append(t.wall)
        for i in rng.integers(0, len(work.whisper_paths), settings.fetches).tolist():
            t, _ = timed(lambda path=work.whisper_paths[i]: whisper.fetch(path, from_t, now, now=now))
            whisper_latency.append(t.wall)

    table.section(
        f"Reads: one day (1 min archive, 1440 points, a day of history in every metric read), "
        f"{settings.rounds} rounds"
    )
    ours, theirs = median(istat_latency), median(whisper_latency)
    table.add(
        "one-metric fetch, median",
        fmt_seconds(ours),
        fmt_seconds(theirs),
        faster(ours, theirs),
        "",
        "",
        f"{len(istat_latency):,} fetches each, random metrics with history; istat fetch_stat, whisper.fetch",
    )
    ours, theirs = percentile(istat_latency, 0.95), percentile(whisper_latency, 0.95)
    table.add("one-metric fetch, p95", fmt_seconds(ours), fmt_seconds(theirs), faster(ours, theirs))

    bulk_count = min(settings.bulk, len(work.names))
    bulk_paths = [work.whisper_paths[i % len(work.whisper_paths)] for i in range(bulk_count)]
    name_sets = {
        kind: ([work.names[i] for i in rows], description)
        for kind, (rows, description) in bulk_selections(settings, work).items()
    }

    def whisper_bulk() -> int:
        return sum(1 for path in bulk_paths if whisper.fetch(path, from_t, now, now=now))

    istat_bulk_times: dict[tuple[str, bool], list[float]] = {
        (kind, counters): [] for kind in name_sets for counters in (False, True)
    }
    whisper_bulk_times: list[float] = []
    for _ in range(settings.rounds):
        for (kind, counters), times in istat_bulk_times.items():
            names = name_sets[kind][0]
            t, got = timed(lambda names=names, c=counters: istat_bulk(store, names, from_t, now, counters=c))
            assert got == bulk_count, got
            times.append(t.wall)
        t, got = timed(whisper_bulk)
        assert got == bulk_count, got
        whisper_bulk_times.append(t.wall)
    theirs = median(whisper_bulk_times)
    for kind, (_, description) in name_sets.items():
        ours = median(istat_bulk_times[(kind, False)])
        table.add(
            f"bulk fetch {bulk_count:,} metrics, {kind}",
            fmt_seconds(ours),
            fmt_seconds(theirs),
            faster(ours, theirs),
            f">= {TARGET_BULK_SPEEDUP:g}x faster",
            verdict(theirs / ours >= TARGET_BULK_SPEEDUP),
            f"istat: one fetch_values of {description}; whisper: {bulk_count:,} "
            f"fetches cycling over its {len(work.whisper_paths):,} files",
        )
        ours = median(istat_bulk_times[(kind, True)])
        table.add(
            "  the same through the counters",
            fmt_seconds(ours),
            fmt_seconds(theirs),
            faster(ours, theirs),
            "",
            "",
            "istat: one fetch of count and sum, then default_values",
        )
    table.add(
        "  same answers as whisper",
        f"{same}/{total}",
        "",
        "",
        "",
        "",
        "grid and values of fetch_stat vs whisper.fetch, 1 h and 1 day ranges, before the history",
    )


def profile_bulk(settings: Settings, store: Store, work: Workload, now: int) -> str:
    bulk_count = min(settings.bulk, len(work.names))
    names = [work.names[i] for i in bulk_selections(settings, work)["spread"][0]]
    profiler = cProfile.Profile()
    profiler.enable()
    istat_bulk(store, names, now - DAY, now)
    profiler.disable()
    return format_profile(profiler, f"Store.fetch_values, {bulk_count:,} metrics x 1 day, spread")


FINDER_SCRIPT = """
import json, sys, time
import django
django.setup()
from graphite.finders.standard import StandardFinder
from graphite.finders.utils import FindQuery

request = json.load(sys.stdin)
finder = StandardFinder([request["root"]])
answer = {}
for pattern in request["patterns"]:
    seconds = []
    for _ in range(request["rounds"]):
        start = time.perf_counter()
        nodes = list(finder.find_nodes(FindQuery(pattern, None, None)))
        seconds.append(time.perf_counter() - start)
    answer[pattern] = {"seconds": seconds, "leaves": sum(1 for n in nodes if n.is_leaf)}
json.dump(answer, sys.stdout)
"""


def make_whisper_tree(root: Path, names: Sequence[str]) -> None:
    """Empty .wsp files named like the metrics: enough for a directory walk."""
    made: set[str] = set()
    for name in names:
        path = whisper_path(root, name)
        directory = os.path.dirname(path)
        if directory not in made:
            os.makedirs(directory, exist_ok=True)
            made.add(directory)
        with open(path, "wb"):
            pass


def graphite_web_find_times(workdir: Path, root: Path, rounds: int) -> dict[str, dict]:
    """Time graphite-web's StandardFinder on each pattern, in a child process set up for Django."""
    storage = workdir / "graphite-storage"
    (storage / "log" / "webapp").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="graphite.settings", GRAPHITE_STORAGE_DIR=str(storage))
    request = {"root": str(root), "patterns": list(GLOB_PATTERNS), "rounds": rounds}
    completed = subprocess.run(
        [sys.executable, "-c", FINDER_SCRIPT],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=1800,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"graphite-web finder failed:\n{completed.stderr}")
    return json.loads(completed.stdout)


def time_matches(store: Store, rounds: int) -> dict[str, tuple[float, int]]:
    answer = {}
    for pattern in GLOB_PATTERNS:
        seconds = []
        for _ in range(rounds):
            t, found = timed(lambda pattern=pattern: store.match(pattern))
            seconds.append(t.wall)
        answer[pattern] = (median(seconds), len(found))
    return answer


def grow_store(store: Store, first: int, total: int, ts: int, now: int) -> tuple[float, int]:
    """Write one point for each of names ``first`` .. ``total - 1``; the seconds it took."""
    created = 0
    seconds = 0.0
    chunk = 100_000
    for lo in range(first, total, chunk):
        names = metric_names(lo, min(chunk, total - lo))
        batch = WriteBatch.from_arrays(names, np.full(len(names), ts, dtype=np.int64), np.ones(len(names)))
        t, result = timed(lambda batch=batch: store.write(batch, now=now))
        seconds += t.wall
        created += result.created
    return seconds, created


def glob_phase(
    table: Table,
    settings: Settings,
    store: Store,
    work: Workload,
    workdir: Path,
    ts: int,
    now: int,
    progress: Progress,
) -> None:
    rounds = max(settings.rounds, 5)
    at_start = time_matches(store, rounds)
    start_count = len(store)
    grow_seconds, created = grow_store(store, start_count, settings.glob_names, ts, now)
    assert len(store) == settings.glob_names, len(store)
    progress.mark(f"store grown to {len(store):,} names")
    at_full = time_matches(store, rounds)

    tree = workdir / "whisper-tree"
    tree_names = metric_names(0, settings.whisper_tree)
    tree_time, _ = timed(lambda: make_whisper_tree(tree, tree_names))
    progress.mark(f"whisper tree of {len(tree_names):,} files made")
    theirs = graphite_web_find_times(workdir, tree, rounds)

    table.section(
        f"Globs: istat store.match over {settings.glob_names:,} names; whisper: graphite-web "
        f"StandardFinder over {settings.whisper_tree:,} .wsp files; median of {rounds}"
    )
    for pattern in GLOB_PATTERNS:
        ours, ours_found = at_full[pattern]
        ours_small, ours_small_found = at_start[pattern]
        their_seconds = median(theirs[pattern]["seconds"])
        their_found = theirs[pattern]["leaves"]
        table.add(
            pattern,
            fmt_seconds(ours),
            fmt_seconds(their_seconds),
            faster(ours, their_seconds),
            "",
            "",
            f"matches {ours_found:,} vs {their_found:,}; istat at {start_count:,} names: "
            f"{fmt_seconds(ours_small)} ({ours_small_found:,})",
        )
    table.add(
        "  growing the store for globs",
        fmt_seconds(grow_seconds),
        fmt_seconds(tree_time.wall),
        "",
        "",
        "",
        f"istat: {created:,} new metrics written ({fmt_seconds(grow_seconds / max(created, 1))} each); "
        f"whisper: touching {settings.whisper_tree:,} empty files",
    )


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, under a minute")
    parser.add_argument("--profile", action="store_true", help="print cProfile of the write and bulk paths")
    for name in Settings.__dataclass_fields__:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the scratch directory")
    parser.add_argument("--keep", action="store_true", help="leave the scratch directory in place")
    parser.add_argument(
        "--tile-rows", type=int, default=TILE_ROWS, help=f"rows per tile of the store's files (default {TILE_ROWS})"
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    overrides = {
        name: getattr(args, name) for name in Settings.__dataclass_fields__ if getattr(args, name) is not None
    }
    settings = replace(settings, **overrides)
    if settings.batches < 2 or settings.metrics < 1 or settings.whisper_metrics < 1:
        parser.error("need at least 2 batches, 1 metric and 1 whisper metric")
    if settings.glob_names < settings.metrics:
        parser.error("--glob-names must be at least --metrics")
    if settings.whisper_tree < 50 * METRICS_PER_HOST:
        parser.error(f"--whisper-tree must be at least {50 * METRICS_PER_HOST} (50 hosts) for the patterns")
    return settings, args


def run(settings: Settings, args: argparse.Namespace, emit: Callable[[str], None]) -> None:
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.workdir))
    conf_dir, store_dir, whisper_root = scratch / "conf", scratch / "istat", scratch / "whisper"
    profiles: list[str] = []
    progress = Progress()
    try:
        conf_dir.mkdir()
        (conf_dir / "storage-schemas.conf").write_text(SCHEMAS_CONF)
        (conf_dir / "storage-aggregation.conf").write_text(AGGREGATION_CONF)
        rules = load_storage_rules(conf_dir)
        work = make_workload(settings, whisper_root, int(time.time()))
        table = Table()
        options = StoreOptions(fsync_interval=float(10**9), tile_rows=args.tile_rows)
        with Store.open(store_dir, rules, writable=True, options=options) as store:
            next_batch = write_phase(table, settings, store, work, store_dir, whisper_root)
            progress.mark("writes done")
            if args.profile:
                profiles.append(profile_writes(settings, store, work, next_batch))
                next_batch += settings.profile_batches
                progress.mark("write profile done")
            now = work.now_after(next_batch - 1)
            same = agreement(store, work, now)
            filled = fill_history(settings, store, work, now)
            progress.mark(f"history filled: {len(filled):,} metrics x 1 day")
            # Reads come from a reader's store, as graphite-web's finder opens it.
            with Store.open(store_dir, writable=False) as reader:
                fetch_phase(table, settings, reader, work, now, filled, same)
                progress.mark("fetches done")
                if args.profile:
                    profiles.append(profile_bulk(settings, reader, work, now))
                    progress.mark("fetch profile done")
            glob_phase(table, settings, store, work, scratch, work.timestamp(next_batch - 1), now, progress)
        progress.mark("globs done")
        emit(
            f"graphite-istat store vs whisper 1.1.10, retentions {RETENTIONS}, {AGGREGATION}, "
            f"xFilesFactor {X_FILES_FACTOR}; {args.tile_rows} rows per tile; {os.cpu_count()} CPUs"
        )
        emit(
            f"istat: {settings.metrics:,} metrics; whisper: {len(work.whisper_paths):,} of them "
            f"(evenly spread; a .wsp per metric for all would take {fmt_bytes(whisper_file_bytes() * settings.metrics)}), "
            "so whisper figures are rates and per-metric costs, not totals."
        )
        emit(
            "whisper as carbon runs it: update_many per metric, no fsync (AUTOFLUSH off), files created "
            "with fallocate (carbon.conf.example's WHISPER_FALLOCATE_CREATE = True). istat: fsync only "
            "in the separately timed sync."
        )
        emit("")
        print_table(
            ["measure", "graphite-istat", "whisper 1.1.10", "istat vs whisper", "target", "", "note"],
            table.rows,
        )
        for text in profiles:
            emit(text)
    finally:
        if args.keep:
            emit(f"scratch directory kept: {scratch}")
        else:
            for part in sorted(scratch.iterdir()):
                shutil.rmtree(part, ignore_errors=True)
                progress.mark(f"removed {part.name}")
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    settings, args = parse_args(argv)
    run(settings, args, print)


if __name__ == "__main__":
    main()
