"""The receiver's own metrics, under carbon's names, as a ``WriteBatch`` for the store.

Every ``CARBON_METRIC_INTERVAL`` seconds the daemon writes, under
``<CARBON_METRIC_PREFIX>.agents.<host>-<instance>.``, what happened during the
interval, as carbon-cache does (so existing carbon dashboards keep working):

* ``metricsReceived``, ``committedPoints``, ``updateOperations``,
  ``pointsPerUpdate``, ``avgUpdateTime`` (seconds per store write), ``creates``,
  ``errors``, ``cache.size`` (points received and not yet written);
* ``cpuUsage`` (percent of one CPU over the interval) and ``memUsage`` (resident bytes);
* per reason, when not zero: ``badLines.<reason>`` (refused by a decoder),
  ``rejected.<reason>`` (refused by the store), ``dropped.<reason>`` (dropped by
  the receiver).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable

import numpy as np

from graphite_istat.receiver.counters import ReceiverCounters
from graphite_istat.store.batch import WriteBatch

_STATM = "/proc/self/statm"


def resident_bytes() -> int:
    """The process's resident set size now (Linux), else its peak."""
    try:
        with open(_STATM, "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class SelfMetrics:
    """Turns the counters of each interval into points named like carbon's."""

    def __init__(
        self,
        path: str,
        counters: ReceiverCounters,
        buffered_points: Callable[[], int],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._counters = counters
        self._buffered_points = buffered_points
        self._clock = clock
        self._last_time = clock()
        self._last_cpu = cpu_seconds()

    def batch(self) -> WriteBatch:
        """The interval that just ended, stamped now."""
        now = self._clock()
        cpu = cpu_seconds()
        elapsed = max(now - self._last_time, 1e-6)
        cpu_percent = 100.0 * (cpu - self._last_cpu) / elapsed
        self._last_time, self._last_cpu = now, cpu
        counts = self._counters.take_interval()
        updates = counts.update_operations
        values: dict[str, float] = {
            "metricsReceived": counts.metrics_received,
            "committedPoints": counts.committed_points,
            "updateOperations": updates,
            "pointsPerUpdate": counts.committed_points / updates if updates else 0.0,
            "avgUpdateTime": counts.write_seconds / updates if updates else 0.0,
            "creates": counts.creates,
            "errors": counts.errors,
            "cache.size": self._buffered_points(),
            "cpuUsage": cpu_percent,
            "memUsage": resident_bytes(),
        }
        for group, by_reason in (
            ("badLines", counts.bad_lines),
            ("rejected", counts.rejected),
            ("dropped", counts.dropped),
        ):
            for reason, count in by_reason.items():
                values[f"{group}.{reason}"] = count
        names = [self._path + name for name in values]
        stamp = int(now)
        return WriteBatch.from_arrays(
            names,
            np.full(len(names), stamp, dtype=np.int64),
            np.array(list(values.values()), dtype=np.float64),
        )
