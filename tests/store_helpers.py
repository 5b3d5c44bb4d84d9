"""Shared helpers of the store tests.

* ``RULES``: the storage rules every store test uses (schemas per name prefix).
* ``ReferenceStore``: a brute-force model of what a store must hold, written
  from README.rst ("What is stored, exactly") and the docstrings of ``store/``, point by point in plain
  Python, to compare the vectorised store against.
* ``read_stats`` / ``compare_archive``: read every stat of some metrics at one
  archive and compare it with the model, with tolerances that only allow for
  the order of float summation.
* The child processes of the concurrency, crash and full-disk tests, run as
  ``python store_helpers.py ROLE ARGS...`` so that they are real processes
  that can be killed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # run as a child process: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graphite_istat.config import StorageRules, parse_storage_aggregation, parse_storage_schemas
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.read import StoreBusyError
from graphite_istat.store.store import SUB_COUNTERS, Store, StoreOptions

TESTS_DIR = Path(__file__).resolve().parent
HELPER_SCRIPT = Path(__file__).resolve()

METHODS = ("average", "sum", "last", "max", "min", "avg_zero", "absmax", "absmin")
# xFilesFactors exactly representable in float32 (the column record stores f32).
AGG_XFFS = {"x0": 0.0, "x25": 0.25, "x50": 0.5, "x100": 1.0}

SCHEMAS_CONF = r"""
[big]
pattern = ^big\.
retentions = 10s:6h,1m:7d,10m:5y

[keep]
pattern = ^keep\.
retentions = 1s:60,5s:60,30s:60
finestBucket = last

[small]
pattern = ^small\.
retentions = 1s:60,5s:60,30s:60

[agg]
pattern = ^agg\.
retentions = 1s:60,5s:60,30s:60

[conc]
pattern = ^conc\.
retentions = 1s:600,10s:600

[crash]
pattern = ^crash\.
retentions = 1s:3600,10s:3600

[rest]
pattern = .
retentions = 1s:60,5s:60,30s:60
"""


def _aggregation_conf() -> str:
    sections = [
        "[lastm]\npattern = \\.lastm$\naggregationMethod = last\nxFilesFactor = 0\n",
    ]
    for method in METHODS:
        for code, xff in AGG_XFFS.items():
            sections.append(
                f"[agg_{method}_{code}]\npattern = ^agg\\.{method}\\.{code}$\n"
                f"aggregationMethod = {method}\nxFilesFactor = {xff}\n"
            )
    sections.append("[rest]\npattern = .\naggregationMethod = average\nxFilesFactor = 0.5\n")
    return "\n".join(sections)


AGGREGATION_CONF = _aggregation_conf()
RULES = StorageRules(parse_storage_schemas(SCHEMAS_CONF), parse_storage_aggregation(AGGREGATION_CONF))

ALL_FIELDS = (*SUB_COUNTERS, "last")
STAT_NAMES = ("count", "sum", "sumsq", "min", "max", "avg", "stddev")


def write_conf(conf_dir: Path) -> Path:
    """The same rules as files, for code that loads a conf directory."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "storage-schemas.conf").write_text(SCHEMAS_CONF)
    (conf_dir / "storage-aggregation.conf").write_text(AGGREGATION_CONF)
    return conf_dir


# ---------------------------------------------------------------- the reference


@dataclass(frozen=True, slots=True)
class MetricShape:
    """What the model needs to know about a metric."""

    archives: tuple[tuple[int, int], ...]  # (step, rows), finest first
    keep_last: bool
    with_last: bool
    ring: tuple[int, int]  # (file, block): metrics sharing one stamp per ring row

    @property
    def max_retention(self) -> int:
        return max(step * rows for step, rows in self.archives)


def shape_of(store: Store, name: str) -> MetricShape:
    info = store.info(name)
    file_no, column = info.slot >> 32, info.slot & 0xFFFFFFFF
    block = column // store.options.block_columns
    archives = tuple((a.step, a.rows) for a in info.layout.archives)
    return MetricShape(archives, info.layout.keep_last, info.layout.with_last, (file_no, block))


def archives_of(name: str) -> tuple[tuple[int, int], ...]:
    schema = RULES.schema_for(name)
    return tuple((r.step, r.points) for r in schema.retentions)


def window_start(now: int, step: int, rows: int) -> int:
    """The oldest bucket an archive takes at ``now`` (whisper's rule)."""
    return now - now % step - (rows - 1) * step


@dataclass(frozen=True, slots=True)
class RefPoint:
    name: str
    ts: int
    value: float
    seq: int  # arrival order over all writes
    now: int  # ``now`` of the write that brought it


@dataclass(frozen=True, slots=True)
class CellStats:
    count: int
    sum: float
    sumsq: float
    min: float
    max: float
    avg: float
    variance: float
    last: float
    abs_sum: float  # sum of |x|: the scale of the rounding error of sum and avg

    @classmethod
    def of(cls, points: Sequence[RefPoint]) -> CellStats:
        values = [p.value for p in points]
        n = len(values)
        total = math.fsum(values)
        mean = total / n
        last = max(points, key=lambda p: (p.ts, p.seq)).value
        return cls(
            count=n,
            sum=total,
            sumsq=math.fsum(v * v for v in values),
            min=min(values),
            max=max(values),
            avg=mean,
            variance=math.fsum((v - mean) ** 2 for v in values) / n,
            last=last,
            abs_sum=math.fsum(abs(v) for v in values),
        )


class ReferenceStore:
    """What a store must hold, from the rules in README.rst and ``store/``'s docstrings.

    * A point whose bucket is older than every archive's window (the oldest
      bucket the coarsest ring still holds) is ``too_old``; one more than
      ``future_limit`` ahead of ``now`` is ``too_far_future``.
    * An accepted point lands in archive i iff its bucket (``ts - ts % step``)
      is at or after ``window_start(now, step, rows)`` of the write.
    * A ring has rows + ceil(future_limit / step) rows (spare rows take
      points ahead of now); a ring row holds one bucket at a time: the newest
      bucket that ever landed in it. Rows are shared by the metrics of one block of a shard
      file (one stamp per row, see format.py), so the newest bucket of any
      metric of the block owns the row.
    * Keep-last metrics: a finest bucket keeps the last point received; a
      coarse bucket holds the combination of the kept finest values (the
      model is exact for points inside the finest archive's window at a
      fixed ``now``, which is what the keep-last tests generate).
    """

    def __init__(self, future_limit: int) -> None:
        self.future_limit = future_limit
        self.accepted: list[RefPoint] = []
        self._seq = 0

    def write(self, points: Iterable[tuple[str, int, float]], now: int) -> tuple[int, dict[str, int]]:
        accepted = 0
        rejected: Counter[str] = Counter()
        for name, ts, value in points:
            self._seq += 1
            oldest = min(window_start(now, step, rows) for step, rows in archives_of(name))
            if ts > now + self.future_limit:
                rejected["too_far_future"] += 1
            elif ts < oldest:
                rejected["too_old"] += 1
            else:
                self.accepted.append(RefPoint(name, ts, value, self._seq, now))
                accepted += 1
        return accepted, dict(rejected)

    def ring_rows(self, step: int, rows: int) -> int:
        return rows + -(-self.future_limit // step)

    def cells(self, shapes: dict[str, MetricShape]) -> dict[tuple[str, int], dict[int, list[RefPoint]]]:
        """(name, archive) -> bucket -> the points that bucket holds.

        Ring rows are shared by metrics of one block, so ``shapes`` should name
        every metric of the blocks asked about (all but damaged ones).
        """
        stamps: dict[tuple[tuple[int, int], int, int], int] = {}
        landed: dict[tuple[str, int, int], list[RefPoint]] = defaultdict(list)
        for p in self.accepted:
            shape = shapes.get(p.name)
            if shape is None:
                continue  # not asked about
            for i, (step, rows) in enumerate(shape.archives):
                bucket = p.ts - p.ts % step
                if bucket < window_start(p.now, step, rows):
                    continue
                key = (shape.ring, i, (bucket // step) % self.ring_rows(step, rows))
                stamps[key] = max(stamps.get(key, bucket), bucket)
                landed[(p.name, i, bucket)].append(p)
        out: dict[tuple[str, int], dict[int, list[RefPoint]]] = defaultdict(dict)
        for (name, i, bucket), pts in landed.items():
            shape = shapes[name]
            step, rows = shape.archives[i]
            if stamps[(shape.ring, i, (bucket // step) % self.ring_rows(step, rows))] == bucket:
                out[(name, i)][bucket] = pts
        for name, shape in shapes.items():
            if shape.keep_last:
                finest = {b: [max(pts, key=lambda p: p.seq)] for b, pts in out[(name, 0)].items()}
                out[(name, 0)] = finest
                for i, (step, _) in enumerate(shape.archives[1:], start=1):
                    coarse: dict[int, list[RefPoint]] = defaultdict(list)
                    for b, pts in finest.items():
                        coarse[b - b % step].extend(pts)
                    out[(name, i)] = dict(coarse)
        return out


# ---------------------------------------------------------------- reading and comparing


@dataclass(slots=True)
class ArchiveRead:
    buckets: np.ndarray
    step: int
    finest_step: int
    stats: dict[str, np.ndarray]
    approximate: np.ndarray
    default: np.ndarray
    method: str
    x_files_factor: float


def read_stats(
    store: Store, names: Sequence[str], archive: int, from_t: int, now: int
) -> dict[str, ArchiveRead]:
    """Every stat of ``names`` at one archive, from ``from_t`` to ``now``."""
    res = store.fetch(names, from_t, now, now=now, fields=ALL_FIELDS, archive=archive)
    assert not res.errors, res.errors
    assert not res.missing, res.missing
    out = {}
    for ss in res.sets:
        stats = {stat: ss.stat(stat) for stat in STAT_NAMES}
        raw_count = ss.counters["count"]
        shown_count = stats["count"]  # an empty bucket may read as 0 or as null
        assert np.array_equal(shown_count[raw_count > 0], raw_count[raw_count > 0])
        assert np.all((shown_count[raw_count == 0] == 0) | np.isnan(shown_count[raw_count == 0]))
        stats["count"] = raw_count
        if "last" in ss.counters:
            stats["last"] = ss.stat("last")
        default = ss.default_values()
        approximate = ss.counters.get("approximate", np.zeros_like(ss.counters["count"], dtype=bool))
        for row, name in enumerate(ss.names):
            out[name] = ArchiveRead(
                buckets=ss.grid.buckets(),
                step=ss.grid.step,
                finest_step=ss.finest_step,
                stats={k: v[row] for k, v in stats.items()},
                approximate=np.asarray(approximate[row]),
                default=default[row],
                method=ss.methods[row],
                x_files_factor=ss.x_files_factors[row],
            )
    assert set(out) == set(names), f"fetch returned {sorted(out)} for {sorted(names)}"
    return out


def _close(actual: float, expected: float, scale: float) -> bool:
    return abs(actual - expected) <= 1e-9 * scale + 1e-300


def compare_archive(
    name: str, archive: int, read: ArchiveRead, expected: dict[int, list[RefPoint]]
) -> list[str]:
    """Mismatches between what was read and the model, as readable lines."""
    problems: list[str] = []
    buckets = read.buckets
    index = {int(b): j for j, b in enumerate(buckets.tolist())}
    count = read.stats["count"]
    wanted = np.zeros(len(buckets), dtype=np.int64)
    cells: dict[int, CellStats] = {}
    for bucket, pts in expected.items():
        j = index.get(bucket)
        if j is None:
            continue  # outside the grid read (e.g. in the future of ``now``)
        wanted[j] = len(pts)
        cells[j] = CellStats.of(pts)
    where = f"{name} archive {archive}"
    for j in np.flatnonzero(count != wanted).tolist()[:5]:
        problems.append(f"{where} bucket {buckets[j]}: count {count[j]:g}, expected {wanted[j]}")
    if read.approximate.any():
        problems.append(f"{where}: cells flagged approximate though made of raw points")
    empty = wanted == 0
    for stat, values in read.stats.items():
        if stat != "count" and not np.isnan(values[empty]).all():
            problems.append(f"{where}: {stat} not NaN in empty buckets")
    for j, cell in cells.items():
        if count[j] != cell.count:
            continue
        got = {k: float(v[j]) for k, v in read.stats.items()}
        checks = {
            "sum": _close(got["sum"], cell.sum, cell.abs_sum),
            "sumsq": _close(got["sumsq"], cell.sumsq, cell.sumsq),
            "avg": _close(got["avg"], cell.avg, cell.abs_sum / cell.count),
            "stddev": _close(got["stddev"] ** 2, cell.variance, cell.sumsq / cell.count),
            "min": got["min"] == cell.min,
            "max": got["max"] == cell.max,
        }
        if "last" in got:
            checks["last"] = got["last"] == cell.last
        for stat, ok in checks.items():
            if not ok:
                want = cell.variance if stat == "stddev" else getattr(cell, stat)
                problems.append(f"{where} bucket {buckets[j]}: {stat} {got[stat]!r}, expected {want!r}")
    return problems


def default_value(method: str, cell: CellStats, step: int, finest_step: int, xff: float) -> set[float]:
    """The aggregation-method value of a bucket (stats.py's rules); a set when a tie allows two."""
    if method == "average":
        values = {cell.avg}
    elif method == "sum":
        values = {cell.sum}
    elif method == "last":
        values = {cell.last}
    elif method == "max":
        values = {cell.max}
    elif method == "min":
        values = {cell.min}
    elif method == "avg_zero":
        values = {cell.sum / (step / finest_step)}
    elif method == "absmax":
        top = max(abs(cell.min), abs(cell.max))
        values = {v for v in (cell.min, cell.max) if abs(v) == top}
    elif method == "absmin":
        if cell.min >= 0:
            values = {cell.min}
        elif cell.max <= 0:
            values = {cell.max}
        else:
            low = min(abs(cell.min), abs(cell.max))
            values = {v for v in (cell.min, cell.max) if abs(v) == low}
    else:
        raise ValueError(method)
    if step > finest_step and xff > 0 and cell.count < xff * (step / finest_step):
        return {math.nan}
    return values


# ---------------------------------------------------------------- child processes

CONC_BASE = 1_700_000_000  # a multiple of 10: coarse buckets hold batches 10j .. 10j+9
CONC_POINTS = 3  # points per metric and batch, all of one value


def conc_metric(i: int) -> str:
    return f"conc.m{i:04d}"


def conc_first_batch(i: int) -> int:
    """The batch in which the concurrency writer creates metric ``i``."""
    return max(0, i - 40) // 2


def conc_value(batch: int) -> float:
    return float(batch + 1)


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.01)


def conc_writer(directory: str, batches: int, metrics: int, readers: int) -> int:
    """Write ``batches`` batches; batch k puts CONC_POINTS points of value k+1 at BASE+k."""
    root = Path(directory)
    store = Store.open(root / "store", RULES, writable=True, options=StoreOptions(shards=2, block_columns=32))
    (root / "writer-open").touch()
    for r in range(readers):
        _wait_for(root / f"reader-{r}-ready")
    for k in range(batches):
        names = [conc_metric(i) for i in range(metrics) if conc_first_batch(i) <= k]
        all_names = [n for n in names for _ in range(CONC_POINTS)]
        ts = np.full(len(all_names), CONC_BASE + k, dtype=np.int64)
        values = np.full(len(all_names), conc_value(k))
        result = store.write(WriteBatch.from_arrays(all_names, ts, values), now=CONC_BASE + k)
        if result.accepted != len(all_names):
            print(f"batch {k}: {result}", flush=True)
            return 1
    store.close()
    (root / "writer-done").touch()
    return 0


def conc_check(store: Store, names: list[str], now: int, final: bool, batches: int) -> list[str]:
    """Invariants of one read (and, when ``final``, that everything written is there)."""
    problems: list[str] = []
    for archive, step in ((0, 1), (1, 10)):
        res = store.fetch(names, CONC_BASE - 1, now, now=now, fields=ALL_FIELDS, archive=archive)
        if res.errors:
            problems.append(f"errors {res.errors}")
        for name, grid, ss, row in res.series():
            where = f"{name} archive {archive}"
            i = int(name.rsplit("m", 1)[1])
            buckets = grid.buckets()
            count = ss.counters["count"][row]
            stats = {s: ss.stat(s)[row] for s in STAT_NAMES}
            has = count > 0
            if (count < 0).any():
                problems.append(f"{where}: negative count")
            for s in ("sum", "min", "max", "avg", "stddev"):
                if np.isnan(stats[s][has]).any():
                    problems.append(f"{where}: NaN {s} where count > 0")
            lo, hi, avg = stats["min"][has], stats["max"][has], stats["avg"][has]
            slack = 1e-12 * np.maximum(np.abs(lo), np.abs(hi))
            if ((avg < lo - slack) | (avg > hi + slack) | (lo > hi)).any():
                problems.append(f"{where}: min <= avg <= max broken")
            if (stats["stddev"][has] < 0).any():
                problems.append(f"{where}: negative stddev")
            # Batches land whole and in order: n batches from the first one this bucket can hold.
            batches_in = count // CONC_POINTS
            first = np.maximum(buckets - CONC_BASE, conc_first_batch(i))
            want_sum = CONC_POINTS * (batches_in * (first + 1) + batches_in * (batches_in - 1) / 2)
            ok = (count % CONC_POINTS == 0) & (batches_in <= step)
            ok &= stats["sum"] == want_sum
            ok &= stats["min"] == first + 1
            ok &= stats["max"] == first + batches_in
            bad = np.flatnonzero(has & ~ok)
            if len(bad):
                j = bad[0]
                got = (int(count[j]), stats["sum"][j], stats["min"][j], stats["max"][j])
                problems.append(
                    f"{where} bucket {buckets[j]}: torn or foreign cell (count, sum, min, max) = {got}; "
                    f"{len(bad)} such cells"
                )
            if final:
                expected = _conc_final_counts(i, buckets, archive, batches)
                if not np.array_equal(count, expected):
                    problems.append(f"{where}: final counts differ from what was written")
    return problems


def _conc_final_counts(i: int, buckets: np.ndarray, archive: int, batches: int) -> np.ndarray:
    first = CONC_BASE + conc_first_batch(i)
    last = CONC_BASE + batches - 1
    if archive == 0:
        return np.where((buckets >= first) & (buckets <= last), CONC_POINTS, 0)
    lo = np.maximum(buckets, first)
    hi = np.minimum(buckets + 10, last + 1)
    return np.maximum(hi - lo, 0) * CONC_POINTS


def conc_reader(directory: str, reader_no: int, batches: int, metrics: int) -> int:
    """Read while the writer writes; print a JSON summary; exit 1 on any violation."""
    root = Path(directory)
    _wait_for(root / "writer-open")
    store = Store.open(root / "store", writable=False)
    rng = np.random.default_rng(reader_no)
    (root / f"reader-{reader_no}-ready").touch()
    reads = busy = 0
    problems: list[str] = []
    all_names = [conc_metric(i) for i in range(metrics)]
    while not (root / "writer-done").exists() and len(problems) < 20:
        names = [n for n in all_names if rng.random() < 0.3] or all_names[:1]
        now = CONC_BASE + int(rng.integers(0, batches))
        try:
            problems += conc_check(store, names, now, final=False, batches=batches)
        except StoreBusyError:
            busy += 1
            continue
        reads += 1
    problems += conc_check(store, all_names, CONC_BASE + batches - 1, final=True, batches=batches)
    store.close()
    print(json.dumps({"reads": reads, "busy": busy, "problems": problems[:20]}), flush=True)
    return 1 if problems else 0


CRASH_BASE = 1_700_000_000
CRASH_METRICS = 2000
CRASH_POINTS = 10


def crash_metric(i: int) -> str:
    return f"crash.host{i % 50:02d}.m{i:05d}"


def crash_writer(directory: str) -> int:
    """Write batch after batch until killed; print ``ack K`` after each write returned."""
    store = Store.open(directory, RULES, writable=True, options=StoreOptions(shards=4, block_columns=64))
    names = [crash_metric(i) for i in range(CRASH_METRICS) for _ in range(CRASH_POINTS)]
    print("open", flush=True)
    for k in range(100_000):
        ts = np.full(len(names), CRASH_BASE + k, dtype=np.int64)
        values = np.full(len(names), float(k + 1))
        store.write(WriteBatch.from_arrays(names, ts, values), now=CRASH_BASE + k)
        print(f"ack {k}", flush=True)
    return 0


def hold_lock(directory: str) -> int:
    """Open the store for writing, say so, and keep it open until stdin closes."""
    store = Store.open(directory, RULES, writable=True)
    print("locked", flush=True)
    sys.stdin.read()
    store.close()
    return 0


def fill_disk(directory: str) -> int:
    """Write new metrics until the file system is full; ``ack K`` after each write, ``error ...`` at the end."""
    now = 1_700_000_000
    store = Store.open(directory, RULES, writable=True)
    for k in range(100_000):
        names = [f"small.fill{k:05d}.m{i:02d}" for i in range(50)]
        batch = WriteBatch.from_arrays(names, np.full(50, now - 1), np.full(50, float(k + 1)))
        try:
            result = store.write(batch, now=now)
        except OSError as e:
            print(f"error {type(e).__name__}: {e}", flush=True)
            return 3
        if result.rejected:
            print(f"rejected {k} {json.dumps(result.rejected)}", flush=True)
            return 4
        print(f"ack {k}", flush=True)
    return 0


ROLES: dict[str, Callable[..., int]] = {
    "conc-writer": lambda d, b, m, r: conc_writer(d, int(b), int(m), int(r)),
    "conc-reader": lambda d, n, b, m: conc_reader(d, int(n), int(b), int(m)),
    "crash-writer": crash_writer,
    "hold-lock": hold_lock,
    "fill-disk": fill_disk,
}


def child_command(role: str, *args: object) -> list[str]:
    return [sys.executable, str(HELPER_SCRIPT), role, *map(str, args)]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR.parent), env.get("PYTHONPATH", "")]))
    return env


if __name__ == "__main__":
    sys.exit(ROLES[sys.argv[1]](*sys.argv[2:]))
