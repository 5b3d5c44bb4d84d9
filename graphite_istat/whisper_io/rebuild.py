"""Moving a metric's cells from one set of archives to another (resize, merge and fill across layouts).

For each new archive (step S) every bucket takes its cells from one old
archive, the first in this order whose window still holds the whole bucket:

1. old archives whose step divides S, finest first: their cells combine
   exactly into the new bucket (an exact old cell stays exact);
2. the other old archives, finest first: their cells straddle new buckets,
   so each goes whole into the new bucket holding its start, approximate.

A new bucket no old archive holds stays empty. Old cells newer than the new
archive's window or older than it are left out (the new archive cannot hold
them).
"""

from __future__ import annotations

import numpy as np

from .cells import Cells, concat, regroup, window_start


def rebuild(
    old: list[tuple[int, int, Cells]],
    new: list[tuple[int, int]],
    now: int,
) -> list[Cells]:
    """``old``: (step, rows, cells) per old archive; ``new``: (step, rows) per new archive."""
    out = []
    for step, rows in new:
        first = window_start(step, rows, now)
        buckets = first + step * np.arange(rows, dtype=np.int64)
        owner = np.full(rows, -1, dtype=np.int64)
        order = sorted(range(len(old)), key=lambda i: (step % old[i][0] != 0, old[i][0]))
        for i in order:
            old_step, old_rows, _ = old[i]
            holds = (owner < 0) & (buckets >= window_start(old_step, old_rows, now))
            owner[holds] = i
        parts = []
        for i in order:
            cells = old[i][2]
            if not len(cells):
                continue
            target = cells.buckets - cells.buckets % step
            slot = (target - first) // step
            inside = (slot >= 0) & (slot < rows)
            mine = np.zeros(len(cells), dtype=bool)
            mine[inside] = owner[slot[inside]] == i
            if mine.any():
                parts.append(regroup(cells.take(mine), step))
        out.append(concat(parts, step))
    return out
