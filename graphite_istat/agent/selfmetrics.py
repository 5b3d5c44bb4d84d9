"""The agent's own metrics, under carbon's ``carbon.agents`` naming, as a ``WriteBatch``.

Every ``CARBON_METRIC_INTERVAL`` seconds the agent forwards, like any other
points, under ``<CARBON_METRIC_PREFIX>.agents.<AGENT_ID>.``, what happened
during the interval:

* ``metricsReceived`` (points decoded from local clients), ``badLines.<reason>``;
* ``spooled``, ``forwarded`` (re-sends included), ``replayed`` (sent from disk),
  ``acknowledged``, ``batchesSent``, ``batchesAcknowledged``;
* ``dropped.<reason>`` (``spool_full``, ``spool_corrupt``, ``cache_full``, ...);
* gauges: ``spoolBytes`` (all destinations), ``cpuUsage``, ``memUsage``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from graphite_istat.agent.counters import AgentCounters
from graphite_istat.receiver.counters import ReceiverCounters
from graphite_istat.receiver.selfmetrics import cpu_seconds, resident_bytes
from graphite_istat.store.batch import WriteBatch


class AgentSelfMetrics:
    """Turns each interval's counts into points named like carbon's."""

    def __init__(
        self,
        path: str,
        received: ReceiverCounters,
        counters: AgentCounters,
        spool_bytes: Callable[[], int],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._received = received
        self._counters = counters
        self._spool_bytes = spool_bytes
        self._clock = clock
        self._last_time = clock()
        self._last_cpu = cpu_seconds()

    def values(self) -> dict[str, float]:
        """The interval that just ended, by metric name under the agent's path."""
        now = self._clock()
        cpu = cpu_seconds()
        elapsed = max(now - self._last_time, 1e-6)
        cpu_percent = 100.0 * (cpu - self._last_cpu) / elapsed
        self._last_time, self._last_cpu = now, cpu
        received = self._received.take_interval()
        counts = self._counters.take_interval()
        values: dict[str, float] = {
            "metricsReceived": received.metrics_received,
            "spooled": counts.spooled,
            "forwarded": counts.forwarded,
            "replayed": counts.replayed,
            "acknowledged": counts.acknowledged,
            "batchesSent": counts.batches_sent,
            "batchesAcknowledged": counts.batches_acknowledged,
            "spoolBytes": self._spool_bytes(),
            "cpuUsage": cpu_percent,
            "memUsage": resident_bytes(),
        }
        for reason, count in received.bad_lines.items():
            values[f"badLines.{reason}"] = count
        dropped = dict(received.dropped)
        for reason, count in counts.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
        for reason, count in dropped.items():
            values[f"dropped.{reason}"] = count
        return values

    def batch(self) -> WriteBatch:
        values = self.values()
        names = [self._path + name for name in values]
        stamp = int(self._clock())
        return WriteBatch.from_arrays(
            names,
            np.full(len(names), stamp, dtype=np.int64),
            np.array(list(values.values()), dtype=np.float64),
        )
