"""Counters of what the receiver did, shared by its threads.

Everything a point can meet is counted here: received (parsed from a
client), committed (accepted by the store), rejected by the store (by
reason), refused by a decoder as a bad line or frame (by reason), dropped by
the receiver itself (by reason). ``take_interval`` hands back what happened
since its last call (carbon's self-metrics are per interval); ``totals``
keeps the running sums.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

# Reasons the receiver drops points of its own accord.
DROPPED_CACHE_FULL = "cache_full"
DROPPED_WRITE_ERROR = "write_error"
# A decoder refusal that is a connection-level event rather than a line.
FRAME_TOO_LARGE = "frame_too_large"


@dataclass(slots=True)
class CounterValues:
    """One set of counts: an interval's or the running totals."""

    metrics_received: int = 0
    committed_points: int = 0
    update_operations: int = 0
    creates: int = 0
    errors: int = 0
    write_seconds: float = 0.0
    bad_lines: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "metricsReceived": self.metrics_received,
            "committedPoints": self.committed_points,
            "updateOperations": self.update_operations,
            "creates": self.creates,
            "errors": self.errors,
            "writeSeconds": self.write_seconds,
            "badLines": dict(self.bad_lines),
            "rejected": dict(self.rejected),
            "dropped": dict(self.dropped),
        }


def _add(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for reason, count in counts.items():
        if count:
            into[reason] = into.get(reason, 0) + count


class ReceiverCounters:
    """Thread-safe counters; every method takes the lock once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._interval = CounterValues()
        self._totals = CounterValues()

    def _both(self) -> tuple[CounterValues, CounterValues]:
        return self._interval, self._totals

    def parsed(self, points: int, bad_lines: Mapping[str, int]) -> None:
        with self._lock:
            for values in self._both():
                values.metrics_received += points
                _add(values.bad_lines, bad_lines)

    def written(
        self, accepted: int, created: int, rejected: Mapping[str, int], seconds: float
    ) -> None:
        with self._lock:
            for values in self._both():
                values.write_seconds += seconds
                values.committed_points += accepted
                values.update_operations += 1
                values.creates += created
                _add(values.rejected, rejected)

    def dropped(self, reason: str, points: int) -> None:
        if not points:
            return
        with self._lock:
            for values in self._both():
                values.dropped[reason] = values.dropped.get(reason, 0) + points

    def error(self) -> None:
        with self._lock:
            for values in self._both():
                values.errors += 1

    def take_interval(self) -> CounterValues:
        """The counts since the last call, and a fresh interval."""
        with self._lock:
            taken, self._interval = self._interval, CounterValues()
        return taken

    def totals(self) -> CounterValues:
        """A copy of the running totals."""
        with self._lock:
            t = self._totals
            return CounterValues(
                t.metrics_received,
                t.committed_points,
                t.update_operations,
                t.creates,
                t.errors,
                t.write_seconds,
                dict(t.bad_lines),
                dict(t.rejected),
                dict(t.dropped),
            )
