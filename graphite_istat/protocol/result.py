"""What a decoder hands back for one chunk: a batch, rejected counts by reason, a few samples.

The reason strings are part of the receiver's self-metrics, so they are named
here once and used by every decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from graphite_istat.store.batch import WriteBatch

# Plaintext line protocol.
MISSING_FIELDS = "missing_fields"
EXTRA_FIELDS = "extra_fields"
BAD_VALUE = "bad_value"
BAD_TIMESTAMP = "bad_timestamp"
EMPTY_NAME = "empty_name"
NON_UTF8_NAME = "non_utf8_name"
BAD_TAGS = "bad_tags"
LINE_TOO_LONG = "line_too_long"
# Pickle protocol.
BAD_PICKLE = "bad_pickle"
BAD_PICKLE_POINT = "bad_pickle_point"

MAX_SAMPLES = 5
SAMPLE_BYTES = 200


@dataclass(slots=True)
class ParseResult:
    """Points decoded from one chunk, and what was rejected from it."""

    batch: WriteBatch
    rejected: dict[str, int] = field(default_factory=dict)
    # The first few (reason, offending input truncated to SAMPLE_BYTES), for rate-limited logs.
    samples: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def empty(cls) -> ParseResult:
        return cls(empty_batch())

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def empty_batch() -> WriteBatch:
    return WriteBatch.from_arrays([], np.empty(0, np.int64), np.empty(0, np.float64))


class Rejections:
    """Accumulates rejected counts and the first few samples while a chunk is decoded."""

    __slots__ = ("counts", "samples")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.samples: list[tuple[str, bytes]] = []

    def add(self, reason: str, offending: bytes, count: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + count
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append((reason, bytes(offending[:SAMPLE_BYTES])))

    def add_described(self, reason: str, describe: Callable[[], bytes]) -> None:
        """Like ``add``, but builds the sample only if it is still wanted."""
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append((reason, bytes(describe()[:SAMPLE_BYTES])))

    def result(self, batch: WriteBatch) -> ParseResult:
        return ParseResult(batch, self.counts, self.samples)
