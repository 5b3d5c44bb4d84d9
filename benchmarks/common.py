"""Helpers shared by the benchmark scripts: timing, statistics, disk and memory use, table printing.

Nothing here knows about graphite-istat or whisper; the scripts measure, these
helpers turn measurements into figures and print them.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock and CPU seconds of one timed call."""

    wall: float
    cpu: float


def timed(action: Callable[[], object]) -> tuple[Timing, object]:
    """Run ``action`` once; its wall and process CPU seconds, and its result."""
    cpu_start = time.process_time()
    start = time.perf_counter()
    result = action()
    wall = time.perf_counter() - start
    return Timing(wall, time.process_time() - cpu_start), result


class Progress:
    """Elapsed-time lines on stderr, so a long run shows where it is (and where time went)."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def mark(self, what: str) -> None:
        print(f"[{time.perf_counter() - self._start:7.1f} s] {what}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1), nearest rank on the sorted values."""
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Bytes of the regular files under a directory: as listed, and as allocated."""

    files: int
    apparent: int  # st_size
    allocated: int  # st_blocks * 512

    def per(self, count: int) -> tuple[float, float]:
        return self.apparent / count, self.allocated / count


def disk_usage(root: Path) -> DiskUsage:
    """Sum st_size and st_blocks*512 over every regular file under ``root`` (symlinks not followed)."""
    files = apparent = allocated = 0
    for directory, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(directory, name))
            files += 1
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return DiskUsage(files, apparent, allocated)


def rss_bytes() -> int:
    """Resident set size of this process after a garbage collection."""
    gc.collect()
    return psutil.Process().memory_info().rss


def fmt_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f} k/s"
    return f"{per_second:.0f} /s"


def fmt_bytes(count: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count:.0f} B"


def fmt_ratio(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    return f"{ratio:.2f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], out=None) -> None:
    """Print rows as a plain-text table with columns padded to their widest cell.

    A row of one cell is a section heading spanning the table.
    """
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        if len(r) > 1:
            for i, cell in enumerate(r):
                widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    print(line(headers), file=out)
    print(rule, file=out)
    for r in rows:
        print(r[0] if len(r) == 1 else line(r), file=out)
