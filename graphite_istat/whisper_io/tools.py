"""The whisper tools' work on a store: resize, merge, fill, diff and export.

Resize and its crash behaviour. The store cannot rename a metric, so a
resize cannot build the new metric beside the old one and swap. Instead it
works like a write-ahead log: it reads every old archive, rebuilds the cells
for the new archives (``rebuild.py``), and writes the *result* to a journal
file in ``<storage>/tools/`` (written to a temporary name, fsynced, renamed).
Only then does it delete the metric, create it with the new archives, write
the cells, sync, and remove the journal. A crash before the rename leaves the
old metric untouched; a crash after it leaves a journal that the next resize
(``finish_pending_resizes``, also ``resize --resume``) replays from the top
(delete, create, write: all idempotent), so the data survive either way.

merge and fill copy a source's cells into a store's metrics, per archive,
rebuilt into the target's archives when their layouts differ. merge (as
whisper-merge) replaces the target's buckets wherever the source has data;
fill (as whisper-fill) only writes the buckets where the target has none. A
metric the target lacks is created with the source's archives.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..store.names import InvalidNameError
from ..store.shardfile import fsync_directory
from ..store.store import Store, StoreError
from .cells import FIELDS, Cells, read_archive, window_start, write_archive
from .paths import path_for_name
from .rebuild import rebuild
from .sources import HistorySource, StoreSource
from .wsp_file import WspError, write_wsp

JOURNAL_DIR = "tools"
JOURNAL_PREFIX = "resize-"


class ToolError(Exception):
    """A tool asked for something it cannot do to this metric."""


# -- resize ---------------------------------------------------------------


def _journal_dir(store: Store) -> Path:
    directory = store.directory / JOURNAL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _save_journal(path: Path, meta: dict[str, object], cells: list[Cells]) -> None:
    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for i, c in enumerate(cells):
        arrays[f"a{i}_buckets"] = c.buckets
        arrays[f"a{i}_approximate"] = c.approximate
        arrays[f"a{i}_last_known"] = c.last_known
        for f in FIELDS:
            arrays[f"a{i}_{f}"] = c.counters[f]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        np.savez(out, **arrays)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_directory(path.parent)


def _load_journal(path: Path) -> tuple[dict, list[Cells]]:
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        cells = []
        for i, (step, _) in enumerate(meta["retentions"]):
            cells.append(
                Cells(
                    int(step),
                    data[f"a{i}_buckets"],
                    {f: data[f"a{i}_{f}"] for f in FIELDS},
                    data[f"a{i}_approximate"],
                    data[f"a{i}_last_known"],
                )
            )
    return meta, cells


def _delete_exactly(store: Store, name: str) -> None:
    # Store.delete takes a glob; make sure it names this metric and nothing else.
    if name in store:
        if store.match(name) != [name]:
            raise ToolError(f"{name!r} is also a glob matching other metrics; it cannot be deleted alone")
        store.delete(name)


def _apply_journal(store: Store, path: Path) -> str:
    meta, cells = _load_journal(path)
    name = meta["name"]
    _delete_exactly(store, name)
    store.create_metric(
        name,
        [tuple(r) for r in meta["retentions"]],
        meta["method"],
        meta["x_files_factor"],
        keep_last=meta["keep_last"],
    )
    for i, c in enumerate(cells):
        write_archive(store, name, i, c, meta["now"])
    store.sync()
    path.unlink()
    fsync_directory(path.parent)
    return name


def finish_pending_resizes(store: Store) -> list[str]:
    """Replay the journals of resizes that were interrupted; returns the metrics finished."""
    directory = store.directory / JOURNAL_DIR
    if not directory.is_dir():
        return []
    for tmp in directory.glob(f"{JOURNAL_PREFIX}*.npz.tmp"):
        tmp.unlink()  # never renamed: that resize had not touched its metric
    return [_apply_journal(store, path) for path in sorted(directory.glob(f"{JOURNAL_PREFIX}*.npz"))]


def resize(
    store: Store,
    name: str,
    retentions: list[tuple[int, int]],
    *,
    method: str | None = None,
    x_files_factor: float | None = None,
    now: int,
) -> list[Cells]:
    """Give a metric new archives (and optionally a new method or xFilesFactor) keeping its data."""
    info = store.info(name)
    if store.match(name) != [name]:
        raise ToolError(f"{name!r} is also a glob matching other metrics; it cannot be resized alone")
    old = [(a.step, a.rows, read_archive(store, name, i, now)) for i, a in enumerate(info.layout.archives)]
    new_cells = rebuild(old, retentions, now)
    meta = {
        "name": name,
        "retentions": [list(r) for r in retentions],
        "method": method or info.aggregation_method,
        "x_files_factor": info.x_files_factor if x_files_factor is None else float(x_files_factor),
        "keep_last": info.layout.keep_last,
        "now": now,
    }
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    path = _journal_dir(store) / f"{JOURNAL_PREFIX}{digest}.npz"
    _save_journal(path, meta, new_cells)
    _apply_journal(store, path)
    return new_cells


# -- merge and fill -------------------------------------------------------


@dataclass(slots=True)
class CopyResult:
    metrics: int = 0
    created: int = 0
    cells: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)


def copy_metric(
    store: Store,
    source: HistorySource,
    name: str,
    *,
    only_gaps: bool,
    now: int,
    from_t: int | None = None,
    until_t: int | None = None,
    target_name: str | None = None,
) -> tuple[int, bool]:
    """Copy one metric's cells from ``source`` into ``store``; returns (cells written, created)."""
    target = target_name or name
    shape = source.shape(name)
    created = False
    if target not in store:
        store.create_metric(target, shape.retentions, shape.method, shape.x_files_factor)
        created = True
    layout = store.info(target).layout
    old = [(step, rows, source.cells(name, i, now)) for i, (step, rows) in enumerate(shape.retentions)]
    rebuilt = rebuild(old, [(a.step, a.rows) for a in layout.archives], now)
    written = 0
    for i, cells in enumerate(rebuilt):
        keep = np.ones(len(cells), dtype=bool)
        if from_t is not None:
            keep &= cells.buckets >= from_t - from_t % cells.step
        if until_t is not None:
            keep &= cells.buckets <= until_t
        if only_gaps and not created:
            have = read_archive(store, target, i, now).buckets
            keep &= ~np.isin(cells.buckets, have)
        written += write_archive(store, target, i, cells.take(keep), now)
    return written, created


def copy_all(
    store: Store,
    source: HistorySource,
    pattern: str,
    *,
    only_gaps: bool,
    now: int,
    from_t: int | None = None,
    until_t: int | None = None,
) -> CopyResult:
    result = CopyResult()
    for name in source.names(pattern):
        try:
            written, created = copy_metric(
                store, source, name, only_gaps=only_gaps, now=now, from_t=from_t, until_t=until_t
            )
        except (WspError, StoreError, InvalidNameError) as e:
            result.errors.append((name, str(e)))
            continue
        result.metrics += 1
        result.created += created
        result.cells += written
    store.sync()
    return result


# -- diff -----------------------------------------------------------------


@dataclass(slots=True)
class ArchiveDiff:
    archive: int
    step: int
    points: int  # buckets compared
    differing: list[tuple[int, float | None, float | None]]


@dataclass(slots=True)
class MetricDiff:
    name: str
    problem: str | None = None  # "only in A", "archives differ ...": nothing compared
    archives: list[ArchiveDiff] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return self.problem is not None or any(a.differing for a in self.archives)


def _nan_to_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def diff_metric(
    a: HistorySource,
    b: HistorySource,
    name: str,
    *,
    now: int,
    ignore_empty: bool = False,
    until_t: int | None = None,
    rtol: float = 0.0,
) -> MetricDiff:
    """The buckets where the two sources' values (each metric's default value) differ, per archive."""
    shape_a, shape_b = a.shape(name), b.shape(name)
    if shape_a.retentions != shape_b.retentions:
        return MetricDiff(name, f"archives differ: {shape_a.retentions} vs {shape_b.retentions}")
    out = MetricDiff(name)
    for i, (step, rows) in enumerate(shape_a.retentions):
        first = window_start(step, rows, now)
        grid = first + step * np.arange(rows, dtype=np.int64)
        if until_t is not None:
            grid = grid[grid <= until_t]
        sides = []
        for source in (a, b):
            buckets, values = source.values(name, i, now)
            row = np.full(len(grid), np.nan)
            slot = (buckets - first) // step
            ok = (slot >= 0) & (slot < len(grid))
            row[slot[ok]] = values[ok]
            sides.append(row)
        va, vb = sides
        known_a, known_b = ~np.isnan(va), ~np.isnan(vb)
        compared = (known_a & known_b) if ignore_empty else (known_a | known_b)
        with np.errstate(invalid="ignore"):
            equal = (known_a == known_b) & ((~known_a) | (np.abs(va - vb) <= rtol * np.abs(vb)))
        differ = np.flatnonzero(compared & ~equal)
        out.archives.append(
            ArchiveDiff(
                i,
                step,
                int(compared.sum()),
                [(int(grid[j]), _nan_to_none(va[j]), _nan_to_none(vb[j])) for j in differ.tolist()],
            )
        )
    return out


# -- export ---------------------------------------------------------------


def export_metric(source: StoreSource, name: str, target_dir: Path, *, now: int) -> tuple[Path, int]:
    """Write one metric as ``target_dir/a/b/c.wsp`` (its default value per bucket); returns (path, points)."""
    path = path_for_name(target_dir, name)
    shape = source.shape(name)
    points = [source.values(name, i, now) for i in range(len(shape.retentions))]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    written = write_wsp(path, shape.retentions, shape.method, shape.x_files_factor, points)
    return path, written
