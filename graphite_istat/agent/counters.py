"""Counters of what the agent did with points, shared by its threads.

What the agent's listeners received and the decoders refused is counted by
the receiver's ``ReceiverCounters`` (the same parsers and reasons); this
class counts the rest of a point's way: spooled (written to the spool: every
point is, before it is sent), forwarded (sent to a server, re-sends
included), replayed (sent after being read back from disk), acknowledged
(the server has it), dropped by reason. ``take_interval`` hands back what
happened since its last call; ``totals`` keeps the running sums.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

# Reasons the agent drops points.
DROPPED_SPOOL_FULL = "spool_full"
DROPPED_SPOOL_CORRUPT = "spool_corrupt"
DROPPED_SPOOL_ERROR = "spool_error"
# Plaintext forwarding: batches taken from the spool for a connection that broke meanwhile.
DROPPED_CONNECTION_LOST = "connection_lost"


@dataclass(slots=True)
class AgentCounts:
    """One set of counts: an interval's or the running totals."""

    spooled: int = 0
    forwarded: int = 0
    replayed: int = 0
    acknowledged: int = 0
    batches_sent: int = 0
    batches_acknowledged: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def copy(self) -> AgentCounts:
        return AgentCounts(
            self.spooled,
            self.forwarded,
            self.replayed,
            self.acknowledged,
            self.batches_sent,
            self.batches_acknowledged,
            dict(self.dropped),
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "spooled": self.spooled,
            "forwarded": self.forwarded,
            "replayed": self.replayed,
            "acknowledged": self.acknowledged,
            "batchesSent": self.batches_sent,
            "batchesAcknowledged": self.batches_acknowledged,
            "dropped": dict(self.dropped),
        }


class AgentCounters:
    """Thread-safe counters; every method takes the lock once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._interval = AgentCounts()
        self._totals = AgentCounts()

    def spooled(self, points: int) -> None:
        with self._lock:
            for counts in (self._interval, self._totals):
                counts.spooled += points

    def sent(self, points: int, batches: int, *, replayed: int) -> None:
        with self._lock:
            for counts in (self._interval, self._totals):
                counts.forwarded += points
                counts.batches_sent += batches
                counts.replayed += replayed

    def acknowledged(self, points: int, batches: int) -> None:
        with self._lock:
            for counts in (self._interval, self._totals):
                counts.acknowledged += points
                counts.batches_acknowledged += batches

    def dropped(self, reason: str, points: int) -> None:
        with self._lock:
            for counts in (self._interval, self._totals):
                counts.dropped[reason] = counts.dropped.get(reason, 0) + points

    def take_interval(self) -> AgentCounts:
        with self._lock:
            taken, self._interval = self._interval, AgentCounts()
        return taken

    def totals(self) -> AgentCounts:
        with self._lock:
            return self._totals.copy()
