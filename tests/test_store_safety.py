"""Safety: one writer, kill -9 at any moment, a full file system.

* A second writer is refused with an error naming the holder's pid.
* A writer printing ``ack K`` after each write is killed with SIGKILL at
  several moments (while creating metrics, between and inside writes); every
  acknowledged batch must be there, the store must open, read and check
  clean, and a restarted writer must go on writing.
* A writer that runs out of disk space gets a clear error, and what it wrote
  before stays readable.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from store_helpers import (
    CRASH_BASE,
    CRASH_METRICS,
    CRASH_POINTS,
    RULES,
    ReferenceStore,
    child_command,
    child_env,
    compare_archive,
    crash_metric,
    read_stats,
    shape_of,
)

from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.check import check_store
from graphite_istat.store.format import HEADER_SIZE, unpack_header
from graphite_istat.store.lock import StoreLockedError
from graphite_istat.store.read import StoreBusyError
from graphite_istat.store.store import Store, StoreError, StoreOptions

# ------------------------------------------------------------------ one writer


def test_a_second_writer_is_refused_with_the_holder_pid(tmp_path: Path) -> None:
    Store.open(tmp_path, RULES, writable=True).close()
    holder = subprocess.Popen(
        child_command("hold-lock", tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=rf"\bpid {holder.pid}\b"):
            Store.open(tmp_path, RULES, writable=True)
        with Store.open(tmp_path, writable=False) as reader:  # readers are welcome meanwhile
            assert len(reader) == 0
    finally:
        holder.communicate(timeout=30)
    assert holder.returncode == 0
    Store.open(tmp_path, RULES, writable=True).close()


# ------------------------------------------------------------------ a full file system


@dataclass
class SmallFileSystem:
    """Where the child writes, how its space is limited, and how to give space back afterwards."""

    path: Path
    limit_child: Callable[[], None] | None
    make_room: Callable[[], None]


@contextlib.contextmanager
def _small_file_system(path: Path) -> Iterator[SmallFileSystem]:
    """An 8 MB tmpfs at ``path`` (as root); otherwise an 8 MB file size limit for the child.

    ``make_room`` grows the tmpfs before the parent reads: on a full tmpfs even a
    read of a hole in a mapped file needs a page, and the reader would get SIGBUS.
    """
    path.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], check=False
    ).returncode == 0
    if not mounted:

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))

        yield SmallFileSystem(path, limit, lambda: None)
        return

    def make_room() -> None:
        subprocess.run(["mount", "-o", "remount,size=64m", str(path)], check=True)

    try:
        yield SmallFileSystem(path, None, make_room)
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_file_system_is_a_clear_error_and_loses_nothing_written(tmp_path: Path) -> None:
    with _small_file_system(tmp_path / "small") as fs:
        store_dir = fs.path / "store"
        child = subprocess.run(
            child_command("fill-disk", store_dir),
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=120,
            preexec_fn=fs.limit_child,
            check=False,
        )
        lines = child.stdout.splitlines()
        acked = [int(line.split()[1]) for line in lines if line.startswith("ack ")]
        assert acked, child.stderr[-2000:]
        problems = []
        if child.returncode < 0:
            problems.append(
                f"the writer was killed by {signal.Signals(-child.returncode).name} after {len(acked)} acknowledged batches"
            )
        elif not (lines and lines[-1].startswith(("error", "rejected"))):
            problems.append(f"no clear error: exit {child.returncode}, last lines {lines[-2:]}, stderr {child.stderr[-500:]}")
        elif lines[-1].startswith("error") and "No space" not in lines[-1] and "too large" not in lines[-1]:
            problems.append(f"unclear error: {lines[-1]}")
        fs.make_room()
        try:
            with Store.open(store_dir, writable=False) as reader:
                for k in acked:
                    names = [f"small.fill{k:05d}.m{i:02d}" for i in range(50)]
                    result = reader.fetch(names, 1_600_000_000, 1_700_000_000, now=1_700_000_000, archive=0)
                    sums = {n: float(np.nansum(ss.stat("sum")[row])) for n, _, ss, row in result.series()}
                    if sums != dict.fromkeys(names, float(k + 1)):
                        problems.append(f"batch {k} not read back: {result.errors or sums}")
                        break
        except (StoreBusyError, StoreError, OSError, ValueError) as e:  # report every facet, not just the first
            problems.append(f"reading after the full disk failed: {type(e).__name__}: {e}")
        assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ kill -9


def _check_acknowledged(directory: Path, acked: int) -> list[str]:
    """Problems with the acknowledged batches 0..acked-1, read through a fresh reader."""
    problems: list[str] = []
    now = CRASH_BASE + acked
    names = [crash_metric(i) for i in range(CRASH_METRICS)]
    try:
        with Store.open(directory, writable=False) as reader:
            for archive, step in ((0, 1), (1, 10)):
                result = reader.fetch(names, CRASH_BASE - 1, now, now=now, archive=archive)
                if acked == 0:
                    result.missing = []  # killed while creating the metrics: they may not exist yet
                if result.missing or result.errors:
                    problems.append(f"missing {result.missing[:3]} errors {list(result.errors.items())[:3]}")
                    continue
                for name, grid, ss, row in result.series():
                    buckets = grid.buckets()
                    whole = buckets + step <= CRASH_BASE + acked  # buckets made of acknowledged batches only
                    whole &= buckets >= CRASH_BASE
                    first = buckets[whole] - CRASH_BASE
                    want_count = np.full(len(first), step * CRASH_POINTS)
                    want_sum = CRASH_POINTS * (step * (first + 1) + step * (step - 1) / 2)
                    got_count = ss.counters["count"][row][whole]
                    got_sum = ss.counters["sum"][row][whole]
                    if not (np.array_equal(got_count, want_count) and np.array_equal(got_sum, want_sum)):
                        bad = np.flatnonzero((got_count != want_count) | (got_sum != want_sum))[0]
                        problems.append(
                            f"{name} archive {archive} bucket {buckets[whole][bad]}: count {got_count[bad]} sum "
                            f"{got_sum[bad]}, acknowledged {want_count[bad]} / {want_sum[bad]}"
                        )
                        break
    except (StoreBusyError, StoreError, OSError) as e:
        problems.append(f"reading failed: {type(e).__name__}: {e}")
    return problems


@pytest.mark.parametrize(
    ("after_acks", "delay"),
    [(0, 0.0), (1, 0.004), (3, 0.011), (6, 0.023)],
    ids=["creating_metrics", "early", "middle", "later"],
)
def test_kill_9_loses_no_acknowledged_batch_and_corrupts_nothing(tmp_path: Path, after_acks: int, delay: float) -> None:
    store_dir = tmp_path / "store"
    writer = subprocess.Popen(
        child_command("crash-writer", store_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
    )
    assert writer.stdout is not None
    acked = 0
    line = writer.stdout.readline()
    assert line.strip() == "open", writer.stderr.read() if writer.stderr else ""
    while acked < after_acks:
        line = writer.stdout.readline()
        assert line.startswith("ack "), line
        acked += 1
    time.sleep(delay)
    writer.kill()
    rest, _ = writer.communicate(timeout=30)
    acked += sum(1 for line in rest.splitlines() if line.startswith("ack "))
    assert writer.returncode == -9

    problems = [f"before the writer reopened: {p}" for p in _check_acknowledged(store_dir, acked)]
    for path in sorted((store_dir / "data").glob("*.ist")):
        with open(path, "rb") as f:
            unpack_header(str(path), f.read(HEADER_SIZE))
    with Store.open(store_dir, RULES, writable=True):  # a restarted writer reclaims what the crash left
        pass
    problems += [f"check: {p}" for p in check_store(store_dir)]
    problems += [f"after the writer reopened: {p}" for p in _check_acknowledged(store_dir, acked)]
    with Store.open(store_dir, RULES, writable=True) as store:  # and it can go on writing
        names = [crash_metric(i) for i in range(CRASH_METRICS)]
        next_second = CRASH_BASE + acked + 20  # clear of the batch that may be half written
        result = store.write(
            WriteBatch.from_arrays(names, np.full(len(names), next_second), np.ones(len(names))), now=next_second
        )
        if result.accepted != len(names):
            problems.append(f"writing after the crash: {result}")
    assert not problems, f"killed after {acked} acknowledged batches:\n" + "\n".join(problems[:20])


def test_a_block_left_mid_write_by_a_crash_is_readable_after_the_writer_restarts(tmp_path: Path) -> None:
    # kill -9 between the two generation increments of apply_points leaves a block's
    # generation odd ("writer busy") on disk: the state is made here by hand.
    now = 1_600_000_000
    points = [(f"small.g{i}", now - 3, float(i)) for i in range(5)]
    with Store.open(tmp_path, RULES, writable=True, options=StoreOptions(shards=1)) as store:
        store.write(WriteBatch.from_points(points), now=now)
        path = store.info("small.g0").path
    generation_offset = HEADER_SIZE + 16
    with open(path, "r+b") as f:
        f.seek(generation_offset)
        generation = int.from_bytes(f.read(8), "little")
        assert generation % 2 == 0
        f.seek(generation_offset)
        f.write((generation + 1).to_bytes(8, "little"))
    with Store.open(tmp_path, RULES, writable=True) as store:
        store.write(WriteBatch.from_points([("small.g0", now - 2, 10.0)]), now=now)
    ref = ReferenceStore(600)
    ref.write([*points, ("small.g0", now - 2, 10.0)], now)
    with Store.open(tmp_path, writable=False) as reader:
        names = [n for n, _, _ in points]
        shapes = {n: shape_of(reader, n) for n in names}
        cells = ref.cells(shapes)
        reads = read_stats(reader, names, 0, 0, now)
        problems = [p for n in names for p in compare_archive(n, 0, reads[n], cells.get((n, 0), {}))]
        assert not problems, problems
