"""What a decoder hands back for one chunk: a batch, rejected counts by reason, a few samples.

The reason strings are part of the receiver's self-metrics, so they are named
here once and used by every decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphite_istat.store.batch import EncodedNames, WriteBatch

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


def concat_batches(batches: Sequence[WriteBatch]) -> WriteBatch:
    """One batch holding the points of ``batches``, in order.

    The store is several times faster per point on big batches, so decoders'
    pieces and the writer's gathered batches are joined into one. Batches
    that carry distinct names plus ``name_ids`` stay in that form (ids
    shifted), names as bytes (``EncodedNames``) stay bytes when every batch
    has them; plain ones are joined as plain name lists.
    """
    batches = [batch for batch in batches if len(batch)]
    if not batches:
        return empty_batch()
    if len(batches) == 1:
        return batches[0]
    timestamps = np.concatenate([batch.timestamps for batch in batches])
    values = np.concatenate([batch.values for batch in batches])
    encoded = all(isinstance(batch.names, EncodedNames) for batch in batches)
    if not encoded and all(batch.name_ids is None for batch in batches):
        return WriteBatch([name for batch in batches for name in batch.names], timestamps, values)
    ids, offset = [], 0
    for batch in batches:
        own = batch.name_ids if batch.name_ids is not None else np.arange(len(batch.names))
        ids.append(own + offset)
        offset += len(batch.names)
    if encoded:
        names: Sequence[str] = EncodedNames.concat([batch.names for batch in batches])  # type: ignore[misc]
    else:
        names = [name for batch in batches for name in batch.names]
    return WriteBatch(names, timestamps, values, np.concatenate(ids).astype(np.int64))


def merge_results(results: Sequence[ParseResult], *, max_samples: int | None = MAX_SAMPLES) -> ParseResult:
    """One result holding the points, counts and samples of several, in order (samples capped)."""
    if len(results) == 1:
        return results[0]
    rejected: dict[str, int] = {}
    samples: list[tuple[str, bytes]] = []
    for result in results:
        for reason, count in result.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + count
        samples.extend(result.samples)
    if max_samples is not None:
        samples = samples[:max_samples]
    return ParseResult(concat_batches([r.batch for r in results]), rejected, samples)


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
