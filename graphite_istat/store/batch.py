"""The unit of work handed to the store: many points as three parallel arrays.

``WriteBatch`` is what every producer (the receiver's parsers, the carbon
plugin, the command line, importers) builds and what ``Store.write`` consumes.
Timestamps are whole seconds (carbon truncates them the same way); values are
float64. Validation of values and timestamps against retentions happens in the
store, which knows them, so every producer gets the same rules and counters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np


class EncodedNames(Sequence[str]):
    """Names as one buffer of UTF-8 bytes and their offsets: name i is ``data[offsets[i]:offsets[i + 1]]``.

    The form a parser that cut names out of received bytes can hand over
    without making a Python string of each: the store looks them up in
    one compiled pass (``name_table.py``). It is also a sequence of str,
    decoded on access, for everything else; bytes that are not UTF-8 decode
    to lone surrogates, which the store refuses as an invalid name.
    """

    __slots__ = ("data", "offsets")

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self.data = np.asarray(data, dtype=np.uint8)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        if len(self.offsets) == 0 or np.any(np.diff(self.offsets) < 0) or self.offsets[-1] > len(self.data):
            raise ValueError("offsets must be non-decreasing, start the first name and end inside data")

    @classmethod
    def from_strings(cls, names: Sequence[str]) -> EncodedNames:
        encoded = [name.encode("utf-8", "surrogatepass") for name in names]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    @classmethod
    def concat(cls, parts: Sequence[EncodedNames]) -> EncodedNames:
        """The names of ``parts``, one after the other."""
        datas, offsets, at = [], [np.zeros(1, dtype=np.int64)], 0
        for part in parts:
            first, end = int(part.offsets[0]), int(part.offsets[-1])
            datas.append(part.data[first:end])
            offsets.append(part.offsets[1:] - first + at)
            at += end - first
        return cls(np.concatenate(datas) if datas else np.zeros(0, np.uint8), np.concatenate(offsets))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        raw = self.data[self.offsets[index] : self.offsets[index + 1]].tobytes()
        return raw.decode("utf-8", "surrogateescape")

    def __iter__(self) -> Iterator[str]:
        return iter(self.tolist())

    def tolist(self) -> list[str]:
        text = self.data[self.offsets[0] : self.offsets[-1]].tobytes()
        cuts = (self.offsets - self.offsets[0]).tolist()
        return [text[a:b].decode("utf-8", "surrogateescape") for a, b in pairwise(cuts)]


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Points to store: point i had ``values[i]`` at ``timestamps[i]``.

    Its name is ``names[i]``, or, when ``name_ids`` is given,
    ``names[name_ids[i]]``: producers that already know the distinct names
    (a parser that deduplicates them) pass each once, and the store then
    looks each up once. ``names`` may be ``EncodedNames`` (bytes the store
    looks up without a Python string per name).
    """

    names: Sequence[str]
    timestamps: np.ndarray  # int64 seconds since the epoch
    values: np.ndarray  # float64
    name_ids: np.ndarray | None = None  # int64 index into names, one per point

    def point_names(self) -> Sequence[str]:
        """The name of every point (expands ``name_ids``)."""
        if self.name_ids is None:
            return self.names
        names = self.names.tolist() if isinstance(self.names, EncodedNames) else self.names
        return [names[i] for i in self.name_ids.tolist()]

    @classmethod
    def from_points(cls, points: Sequence[tuple[str, float, float]]) -> WriteBatch:
        """Build a batch from ``(name, timestamp, value)`` tuples (timestamps floored)."""
        names = [p[0] for p in points]
        ts = np.floor(np.array([p[1] for p in points], dtype=np.float64))
        vals = np.array([p[2] for p in points], dtype=np.float64)
        return cls.from_arrays(names, ts, vals)

    @classmethod
    def from_arrays(cls, names: Sequence[str], timestamps, values, name_ids=None) -> WriteBatch:
        """Build a batch from parallel sequences; float timestamps are floored.

        Timestamps that are not finite or do not fit in int64 become the
        sentinel ``INVALID_TIMESTAMP`` so that the store rejects them by reason
        instead of the conversion raising for the whole batch.
        """
        ts = np.asarray(timestamps)
        if ts.dtype.kind in "uO":  # big unsigned or Python ints: range-check as floats
            ts = ts.astype(np.float64)
        if ts.dtype.kind == "f":
            ts_f = np.floor(ts)
            ok = np.isfinite(ts_f) & (np.abs(ts_f) < 2.0**62)
            ts = np.where(ok, ts_f, INVALID_TIMESTAMP).astype(np.int64)
        else:
            ts = ts.astype(np.int64, copy=False)
        vals = np.asarray(values, dtype=np.float64)
        if name_ids is not None:
            name_ids = np.asarray(name_ids, dtype=np.int64)
            if len(name_ids) and (name_ids.min() < 0 or name_ids.max() >= len(names)):
                raise ValueError("name_ids must index into names")
        per_point = len(names) if name_ids is None else len(name_ids)
        if not (per_point == len(ts) == len(vals)):
            raise ValueError(
                f"names, timestamps and values differ in length: {per_point}, {len(ts)}, {len(vals)}"
            )
        return cls(names, ts, vals, name_ids)

    def __len__(self) -> int:
        return len(self.timestamps)


# A timestamp no retention can hold; used for timestamps that could not be converted.
INVALID_TIMESTAMP = np.iinfo(np.int64).min


@dataclass(slots=True)
class WriteResult:
    """What a write did: points applied, metrics created, points rejected by reason."""

    accepted: int = 0
    created: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    duplicate: bool = False  # a (source, sequence) already applied: nothing was written

    def reject(self, reason: str, count: int) -> None:
        if count:
            self.rejected[reason] = self.rejected.get(reason, 0) + int(count)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
