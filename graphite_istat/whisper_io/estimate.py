"""Whisper's one value per bucket turned into sub-counters: exact where it can be, estimated elsewhere.

The finest archive of a .wsp holds one value per bucket (the last point
carbon wrote there; earlier points of the same bucket were overwritten, so
whisper no longer knows them). It becomes an exact cell: count 1, sum v,
sumsq v², min = max = last = v.

A coarser archive (step S, finest step F, k = S / F) holds one aggregate v
made by the file's aggregation method from the finer archive. Two cases:

* **Recomputed, exact.** When the finest archive still holds every slot of
  the coarse bucket, the cell is the exact combination of those finest cells
  (count = known slots, sum, sumsq, min, max, last), provided that
  combination read back through the metric's method and xFilesFactor gives
  whisper's v (it does not, e.g., for ``average`` above the second archive
  when finer buckets had unequal counts, since whisper averaged averages;
  for ``absmin`` across signs; or where xFilesFactor hid what whisper showed).
* **Estimated, approximate.** Otherwise the cell is built from v alone,
  marked approximate, with count = k (so xFilesFactor never hides a value
  whisper showed: count >= xff * k always) and zero spread:

  ============  =========  ============  ======================
  method        sum        min = max     sumsq
  ============  =========  ============  ======================
  sum           v          v / k         v² / k
  every other   v * k      v             v² * k
  ============  =========  ============  ======================

  and last = v. Read back, the method's value is v (average and avg_zero to
  within one rounding of v * k / k). What else is then known: for ``average``
  the avg is whisper's average of the finer values; for ``min``/``max`` that
  stat is exact; for ``sum`` the sum is exact; the other stats are guesses
  (count is the number of finest slots, not of points; stddev reads 0; min and
  max of an averaged bucket are the average).
"""

from __future__ import annotations

import numpy as np

from ..store.stats import aggregate
from .cells import Cells, concat, regroup, window_start
from .wsp_file import WspContents


def estimated_cells(method: str, step: int, finest_step: int, buckets: np.ndarray, values: np.ndarray) -> Cells:
    """Approximate cells carrying whisper's aggregate ``values`` (see the table above)."""
    k = step // finest_step
    values = np.asarray(values, dtype=np.float64)
    if method == "sum":
        per_slot = values / k
        total, sumsq = values.copy(), values * values / k
    else:
        per_slot = values
        total, sumsq = values * k, values * values * k
    n = len(values)
    return Cells(
        step,
        np.asarray(buckets, dtype=np.int64),
        {
            "count": np.full(n, k, dtype=np.int64),
            "sum": total,
            "sumsq": sumsq,
            "min": per_slot.copy(),
            "max": per_slot.copy(),
            "last": values.copy(),
        },
        np.ones(n, dtype=bool),
        np.ones(n, dtype=bool),
    )


def _matches(read_back: np.ndarray, values: np.ndarray, cells: Cells) -> np.ndarray:
    """Equal up to the order of summation (whisper adds finer aggregates left to right)."""
    c = cells.counters
    magnitude = np.maximum(np.abs(c["min"]), np.abs(c["max"])) * c["count"]
    tolerance = 16 * np.finfo(np.float64).eps * magnitude + np.spacing(np.abs(values))
    with np.errstate(invalid="ignore"):
        return np.abs(read_back - values) <= tolerance


def history_cells(contents: WspContents, now: int) -> list[Cells]:
    """The cells to store for every archive of a .wsp file, finest first."""
    header = contents.header
    finest = contents.archives[0]
    finest_cells = Cells.of_points(finest.step, finest.buckets, finest.values)
    finest_start = window_start(finest.step, finest.rows, now)
    out = [finest_cells]
    for data in contents.archives[1:]:
        estimate = estimated_cells(header.method, data.step, finest.step, data.buckets, data.values)
        covered = np.flatnonzero(estimate.buckets >= finest_start)
        if not len(covered):
            out.append(estimate)
            continue
        exact = regroup(finest_cells.restrict(int(estimate.buckets[covered[0]])), data.step)
        # Line the recomputed cells up with whisper's buckets (some may be missing).
        at = np.searchsorted(exact.buckets, estimate.buckets[covered])
        found = at < len(exact.buckets)
        found[found] = exact.buckets[at[found]] == estimate.buckets[covered][found]
        candidates = covered[found]
        recomputed = exact.take(at[found])
        read_back = aggregate(
            header.method,
            recomputed.counters,
            step=data.step,
            finest_step=finest.step,
            x_files_factor=np.float32(header.x_files_factor).item(),
        )
        good = _matches(read_back, data.values[candidates], recomputed)
        keep_estimate = np.ones(len(estimate), dtype=bool)
        keep_estimate[candidates[good]] = False
        out.append(concat([estimate.take(keep_estimate), recomputed.take(good)], data.step))
    return out
