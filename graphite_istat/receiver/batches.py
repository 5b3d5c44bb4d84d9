"""Joining many small ``WriteBatch`` es into one big one for the store.

The store is several times faster per point on big batches, so the writer
joins everything it has gathered into one. Batches that carry distinct
names plus ``name_ids`` stay in that form (ids shifted); plain ones are
joined as plain name lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphite_istat.store.batch import WriteBatch


def empty_batch() -> WriteBatch:
    return WriteBatch([], np.empty(0, np.int64), np.empty(0, np.float64))


def concat_batches(batches: Sequence[WriteBatch]) -> WriteBatch:
    """One batch holding the points of ``batches``, in order."""
    batches = [batch for batch in batches if len(batch)]
    if not batches:
        return empty_batch()
    if len(batches) == 1:
        return batches[0]
    timestamps = np.concatenate([batch.timestamps for batch in batches])
    values = np.concatenate([batch.values for batch in batches])
    names: list[str] = []
    if all(batch.name_ids is None for batch in batches):
        for batch in batches:
            names.extend(batch.names)
        return WriteBatch(names, timestamps, values)
    ids = []
    for batch in batches:
        offset = len(names)
        names.extend(batch.names)
        own = batch.name_ids if batch.name_ids is not None else np.arange(len(batch.names))
        ids.append(own + offset)
    return WriteBatch(names, timestamps, values, np.concatenate(ids).astype(np.int64))
