"""From parsed points to numbered batches in each destination's spool (the agent's writer).

``Forwarder`` is what the receiver's ``Pipeline`` writes to in the agent, on
its one writer thread: it splits a batch by destination (carbon_ch on the
metric name when there are several), cuts it into frames of at most
``max_frame_points`` points, and appends each, numbered, to that
destination's ``DestinationSpool``. Sending happens elsewhere
(``agent.senders``); nothing here touches a socket.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from graphite_istat.agent.counters import DROPPED_SPOOL_ERROR, AgentCounters
from graphite_istat.agent.hashing import CarbonHashRing
from graphite_istat.agent.spool import DestinationSpool
from graphite_istat.protocol.ack_frames import encode_batch
from graphite_istat.store.batch import WriteBatch, WriteResult

DEFAULT_MAX_FRAME_POINTS = 100_000


def compact(batch: WriteBatch, keep: np.ndarray | None = None) -> WriteBatch:
    """The points ``keep`` (all when None) of ``batch``, with distinct names and ``name_ids``."""
    if batch.name_ids is None:
        names = batch.names
        if keep is not None:
            names = [names[i] for i in keep.tolist()]
        ids_by_name: dict[str, int] = {}
        ids = np.fromiter(
            (ids_by_name.setdefault(name, len(ids_by_name)) for name in names),
            dtype=np.int64,
            count=len(names),
        )
        distinct = list(ids_by_name)
    else:
        ids = batch.name_ids if keep is None else batch.name_ids[keep]
        used, ids = np.unique(ids, return_inverse=True)
        distinct = [batch.names[i] for i in used.tolist()]
    timestamps = batch.timestamps if keep is None else batch.timestamps[keep]
    values = batch.values if keep is None else batch.values[keep]
    return WriteBatch(distinct, timestamps, values, ids.astype(np.int64))


class Forwarder:
    """Spools every batch for its destinations; the agent pipeline's ``BatchWriter``."""

    def __init__(
        self,
        spools: Sequence[DestinationSpool],
        counters: AgentCounters,
        logger: logging.Logger,
        *,
        ring: CarbonHashRing | None = None,
        max_frame_points: int = DEFAULT_MAX_FRAME_POINTS,
        compress: bool = False,
    ) -> None:
        if not spools:
            raise ValueError("a forwarder needs at least one destination")
        if len(spools) > 1 and ring is None:
            raise ValueError("several destinations need a hash ring")
        self._spools = list(spools)
        self._counters = counters
        self._logger = logger
        self._ring = ring
        self._max_frame_points = max(1, max_frame_points)
        self._compress = compress

    def write(self, batch: WriteBatch) -> WriteResult:
        """Spool ``batch``; the result's ``accepted`` is the points spooled."""
        result = WriteResult()
        if not len(batch):
            return result
        for index, part in self._split(batch):
            result.accepted += self._spool(self._spools[index], part)
        return result

    def sync(self) -> None:
        """Nothing to do: every append is written as it happens."""

    def _split(self, batch: WriteBatch) -> list[tuple[int, WriteBatch]]:
        if self._ring is None:
            return [(0, compact(batch))]
        node_for = self._ring.node_for
        owner_of_name = np.fromiter(
            (node_for(name) for name in batch.names), dtype=np.int64, count=len(batch.names)
        )
        owners = owner_of_name if batch.name_ids is None else owner_of_name[batch.name_ids]
        parts = []
        for index in range(len(self._spools)):
            keep = np.flatnonzero(owners == index)
            if len(keep):
                parts.append((index, compact(batch, keep)))
        return parts

    def _spool(self, spool: DestinationSpool, batch: WriteBatch) -> int:
        spooled = 0
        for start in range(0, len(batch), self._max_frame_points):
            end = min(start + self._max_frame_points, len(batch))
            frame_points = (
                batch if (start, end) == (0, len(batch)) else compact(batch, np.arange(start, end))
            )
            points = len(frame_points)
            try:
                spool.append(
                    points,
                    lambda sequence, part=frame_points: encode_batch(
                        spool.source, sequence, part, compress=self._compress
                    ),
                )
            except OSError as error:
                self._logger.error(
                    "spooling %d points in %s failed: %s", points, spool.directory, error
                )
                self._counters.dropped(DROPPED_SPOOL_ERROR, points)
                continue
            spooled += points
        return spooled
