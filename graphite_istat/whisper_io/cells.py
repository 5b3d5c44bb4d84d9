"""Cells: the sub-counters of some buckets of one archive, as arrays, and moving them between steps.

A ``Cells`` value is what the history tools pass around: the non-empty
buckets of one archive of one metric with their count, sum, sumsq, min, max
and last, plus a flag per bucket saying whether the cell is approximate
(estimated from an aggregate rather than made of the points themselves).

``regroup`` moves cells of one step to another step exactly where that is
possible: cells whose buckets fall wholly inside one bucket of the new step
combine exactly (counts and sums add, min of mins, max of maxes, last of the
latest). A cell that straddles buckets of the new step (the new step does not
divide into whole old cells, or the old step is coarser) is put whole into
the bucket holding its start, and the result is marked approximate.

``read_archive`` and ``write_archive`` read and write cells of a store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..store.format import CorruptFileError
from ..store.store import SUB_COUNTERS, Store

FIELDS = (*SUB_COUNTERS, "last")


@dataclass(slots=True)
class Cells:
    """Non-empty cells of one archive, sorted by bucket, distinct buckets.

    ``counters`` has ``count`` (int64) and sum, sumsq, min, max, last
    (float64). ``last_known`` is False where ``last`` is a stand-in (the
    source did not store it).
    """

    step: int
    buckets: np.ndarray
    counters: dict[str, np.ndarray]
    approximate: np.ndarray
    last_known: np.ndarray

    def __len__(self) -> int:
        return len(self.buckets)

    @classmethod
    def empty(cls, step: int) -> Cells:
        return cls(
            step,
            np.zeros(0, dtype=np.int64),
            {f: np.zeros(0, dtype=np.int64 if f == "count" else np.float64) for f in FIELDS},
            np.zeros(0, dtype=bool),
            np.zeros(0, dtype=bool),
        )

    @classmethod
    def of_points(cls, step: int, buckets: np.ndarray, values: np.ndarray) -> Cells:
        """One point per bucket: exact cells (count 1)."""
        values = np.asarray(values, dtype=np.float64)
        order = np.argsort(buckets, kind="stable")
        values = values[order]
        return cls(
            step,
            np.asarray(buckets, dtype=np.int64)[order],
            {
                "count": np.ones(len(values), dtype=np.int64),
                "sum": values.copy(),
                "sumsq": values * values,
                "min": values.copy(),
                "max": values.copy(),
                "last": values.copy(),
            },
            np.zeros(len(values), dtype=bool),
            np.ones(len(values), dtype=bool),
        )

    def take(self, pick: np.ndarray) -> Cells:
        """The cells at ``pick`` (indices or a boolean mask)."""
        return Cells(
            self.step,
            self.buckets[pick],
            {f: v[pick] for f, v in self.counters.items()},
            self.approximate[pick],
            self.last_known[pick],
        )

    def restrict(self, first_bucket: int, end: int | None = None) -> Cells:
        keep = self.buckets >= first_bucket
        if end is not None:
            keep &= self.buckets < end
        return self if keep.all() else self.take(keep)


def concat(parts: list[Cells], step: int) -> Cells:
    """Cells of several disjoint sets of buckets, sorted again."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Cells.empty(step)
    if len(parts) == 1:
        return parts[0]
    buckets = np.concatenate([p.buckets for p in parts])
    order = np.argsort(buckets, kind="stable")
    return Cells(
        step,
        buckets[order],
        {f: np.concatenate([p.counters[f] for p in parts])[order] for f in FIELDS},
        np.concatenate([p.approximate for p in parts])[order],
        np.concatenate([p.last_known for p in parts])[order],
    )


def regroup(cells: Cells, step: int) -> Cells:
    """The same points at another step: exact where whole old cells fit in one new bucket."""
    if cells.step == step or not len(cells):
        return Cells(step, cells.buckets, cells.counters, cells.approximate, cells.last_known)
    straddles = step % cells.step != 0
    target = cells.buckets - cells.buckets % step
    starts = np.flatnonzero(np.concatenate(([True], target[1:] != target[:-1])))
    c = cells.counters
    count = np.add.reduceat(c["count"], starts)
    ends = np.concatenate((starts[1:], [len(target)])) - 1  # the latest cell of each group
    return Cells(
        step,
        target[starts],
        {
            "count": count,
            "sum": np.add.reduceat(c["sum"], starts),
            "sumsq": np.add.reduceat(c["sumsq"], starts),
            "min": np.minimum.reduceat(c["min"], starts),
            "max": np.maximum.reduceat(c["max"], starts),
            "last": c["last"][ends],
        },
        np.logical_or.reduceat(cells.approximate, starts) | straddles,
        cells.last_known[ends],
    )


def window_start(step: int, rows: int, now: int) -> int:
    """The oldest bucket an archive of ``rows`` buckets holds at ``now`` (whisper's fetch window)."""
    return (now - now % step) - (rows - 1) * step


def read_archive(store: Store, name: str, archive: int, now: int) -> Cells:
    """Every non-empty cell of one archive of a metric at ``now``."""
    info = store.info(name)
    spec = info.layout.archives[archive]
    fields = (*SUB_COUNTERS, "last")
    result = store.fetch([name], now - spec.seconds, now, now, fields=fields, archive=archive)
    if name in result.errors:
        raise CorruptFileError(str(info.path), result.errors[name])
    for _, grid, series_set, row in result.series():
        counters = series_set.counters
        count = counters["count"][row].astype(np.int64)
        keep = np.flatnonzero(count > 0)
        has_last = "last" in counters
        out = {f: counters[f][row][keep].astype(np.float64) for f in SUB_COUNTERS if f != "count"}
        out["count"] = count[keep]
        if has_last:
            out["last"] = counters["last"][row][keep].astype(np.float64)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                out["last"] = out["sum"] / out["count"]
        last_known = np.full(len(keep), has_last) | (out["count"] == 1)
        return Cells(
            grid.step,
            grid.buckets()[keep],
            out,
            counters["approximate"][row][keep].astype(bool),
            last_known,
        )
    return Cells.empty(spec.step)


def write_archive(store: Store, name: str, archive: int, cells: Cells, now: int) -> int:
    """Replace the cells of one archive of a metric by ``cells``; returns how many were stored.

    A cell whose ``last`` is only a stand-in is approximate when the metric
    stores ``last`` and the cell holds more than one point.
    """
    if not len(cells):
        return 0
    approximate = cells.approximate.copy()
    if store.info(name).layout.with_last:
        approximate |= ~cells.last_known & (cells.counters["count"] > 1)
    stored = 0
    for flag in (False, True):
        pick = np.flatnonzero(approximate == flag)
        if len(pick):
            part = cells.take(pick)
            stored += store.write_cells(
                name, archive, part.buckets, part.counters, approximate=flag, now=now
            )
    return stored
