"""Benchmark of the name index: build, memory, log size, reopen, lookups and finds.

Usage: python benchmarks/bench_names.py [--hosts 5000] [--repeat 5]

Each host has 200 metrics of 4 to 6 levels (``servers.host0042.cpu.core3.user``,
``servers.host0042.mem.free``, ``servers.host0042.disk.sdb.reads.bytes``), so
the default 5000 hosts make one million names. Prints one table.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from graphite_istat.store.names import NameIndex

CPU_METRICS = ["user", "system", "nice", "idle", "iowait", "irq", "softirq", "steal"]
MEM_METRICS = ["used", "free", "cached", "buffers", "swap_used", "swap_free", "shared", "available"]
DISK_METRICS = [
    f"{op}.{what}" for op in ("reads", "writes") for what in ("count", "bytes", "time", "merged")
]


def host_metrics(host: int) -> list[str]:
    prefix = f"servers.host{host:04d}"
    names = [f"{prefix}.cpu.core{core}.{m}" for core in range(16) for m in CPU_METRICS]
    names += [f"{prefix}.mem.{m}" for m in MEM_METRICS]
    names += [f"{prefix}.disk.sd{d}.{m}" for d in "abcdefgh" for m in DISK_METRICS]
    return names


def rss_bytes() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def best_of(repeat: int, action: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rows: list[tuple[str, str, str]] = []

    def row(what: str, figure: str, note: str = "") -> None:
        rows.append((what, figure, note))

    with tempfile.TemporaryDirectory() as directory:
        log_path = Path(directory) / "names.log"
        baseline = rss_bytes()
        names = [name for host in range(args.hosts) for name in host_metrics(host)]
        count = len(names)
        names_rss = rss_bytes() - baseline

        start = time.perf_counter()
        calibration: dict[str, int] = {}
        for slot, name in enumerate(names):
            calibration[name] = slot
        calibration_seconds = time.perf_counter() - start
        del calibration

        start = time.perf_counter()
        index = NameIndex.open(log_path, writable=True)
        for slot, name in enumerate(names):
            index.add(name, slot)
        added = time.perf_counter()
        index.flush(fsync=True)
        flushed = time.perf_counter()
        row("names", f"{count:,}", "4-6 levels, 200 per host")
        row(
            "calibration: plain dict fill",
            fmt_seconds(calibration_seconds),
            "same names, for scale",
        )
        row(
            "build: add all",
            fmt_seconds(added - start),
            f"{(added - start) / count * 1e9:.0f} ns/name",
        )
        row("build: flush + fsync", fmt_seconds(flushed - added), "one write call")
        sample = random.Random(1).sample(names, 100_000)
        del names
        index_rss = rss_bytes() - baseline
        row(
            "RSS growth, index built",
            f"{index_rss / 2**20:.0f} MiB",
            f"{index_rss / count:.0f} B/name",
        )
        row(
            "  of which the name list", f"{names_rss / 2**20:.0f} MiB", "before building, for scale"
        )
        row(
            "log size",
            f"{log_path.stat().st_size / 2**20:.1f} MiB",
            f"{log_path.stat().st_size / count:.1f} B/name",
        )

        before_reader = rss_bytes()
        start = time.perf_counter()
        reader = NameIndex.open(log_path, writable=False)
        row("reopen (replay log)", fmt_seconds(time.perf_counter() - start), "read-only")
        row("RSS growth, reopened reader", f"{(rss_bytes() - before_reader) / 2**20:.0f} MiB", "")

        lookups = sample[:90_000] + [f"missing.metric.{i}" for i in range(10_000)]
        seconds, slots = best_of(args.repeat, lambda: reader.get_many(lookups))
        assert isinstance(slots, list) and sum(s is not None for s in slots) == 90_000
        row("get_many 100k (90% hits)", fmt_seconds(seconds), f"{seconds / 1e5 * 1e9:.0f} ns/name")

        patterns = [
            "servers.host0042.cpu.core3.user",
            "servers.host00*.cpu.*.user",
            "servers.*.cpu.core3.user",
            "servers.{host0001,host0002}.*.*.*",
            "servers.host00*.**.user",
            "**.user",
        ]
        for pattern in patterns:
            find_seconds, found = best_of(args.repeat, lambda p=pattern: reader.find(p))
            match_seconds, matched = best_of(args.repeat, lambda p=pattern: reader.match(p))
            assert isinstance(found, list) and isinstance(matched, list)
            row(f"find  {pattern}", fmt_seconds(find_seconds), f"{len(found):,} nodes")
            row(f"match {pattern}", fmt_seconds(match_seconds), f"{len(matched):,} names")

        whole_name = re.compile(r"servers\.[^.]*\.cpu\.core3\.user\Z")
        seconds, matched = best_of(
            1, lambda: sorted(n for n, _ in reader.items() if whole_name.match(n))
        )
        row("baseline: one regex over all names", fmt_seconds(seconds), "servers.*.cpu.core3.user")

        for i in range(10_000):
            index.add(f"late.host{i}.metric", count + i)
        index.flush(fsync=False)
        seconds, applied = best_of(1, reader.refresh)
        row("refresh, 10k appended records", fmt_seconds(seconds), f"{applied:,} applied")

        for name in sample[:200_000]:
            index.remove(name)
        start = time.perf_counter()
        index.compact()
        row(
            "compact (live entries)",
            fmt_seconds(time.perf_counter() - start),
            f"{len(index):,} live",
        )
        seconds, applied = best_of(1, reader.refresh)
        row("refresh after compaction", fmt_seconds(seconds), "full reload")
        reader.close()
        index.close()

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'figure':>10}  note")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 24}")
    for what, figure, note in rows:
        print(f"{what:<{width}}  {figure:>10}  {note}")
    print(f"(python {sys.version.split()[0]}, best of {args.repeat} for finds and lookups)")


if __name__ == "__main__":
    main()
