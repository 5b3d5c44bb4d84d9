"""A compiled name -> slot table over the names' UTF-8 bytes, for writes that hand names over as bytes.

``NameIndex`` keeps names in a dict of Python strings; a batch whose names
arrive as one buffer of bytes and their offsets (``batch.EncodedNames``, as
the plaintext parser cuts them out of what it received) is looked up here
instead, in one compiled pass without a Python object per name. The table
is open addressing with linear probing over a power-of-two array of
(hash, entry) pairs, at most half full; entries keep each name's bytes in
one growing buffer. Lookups fetch the lines of later names while they
compare the current one (``_lookup``), so the cache misses of a large
table overlap instead of queueing.

Not thread-safe: the one writer calls it under its write lock.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from .batch import EncodedNames
from .kernels import prefetch

EMPTY = -1
REMOVED = -2
LOOKAHEAD = 8
NEWLINE = 10
_SEED = np.uint64(0x9E3779B97F4A7C15)
_MULTIPLIER = np.uint64(0xC6A4A7935BD1E995)
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)


@njit(cache=True, nogil=True)
def _hash_names(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, out: np.ndarray) -> None:
    """out[i] = a 64-bit hash of bytes starts[i]..ends[i], as int64.

    Eight bytes at a time (little-endian words, the tail zero-padded), each
    word multiplied in, then murmur3's finaliser; the table compares bytes,
    so the hash only has to spread names, not resist anyone.
    """
    for i in range(out.shape[0]):
        start = starts[i]
        end = ends[i]
        h = _SEED ^ (np.uint64(end - start) * _MULTIPLIER)
        j = start
        while j + 8 <= end:
            word = np.uint64(0)
            for k in range(8):
                word |= np.uint64(data[j + k]) << np.uint64(8 * k)
            h = (h ^ word) * _MULTIPLIER
            h ^= h >> np.uint64(29)
            j += 8
        if j < end:
            word = np.uint64(0)
            for k in range(end - j):
                word |= np.uint64(data[j + k]) << np.uint64(8 * k)
            h = (h ^ word) * _MULTIPLIER
            h ^= h >> np.uint64(29)
        h ^= h >> np.uint64(33)
        h *= _FMIX1
        h ^= h >> np.uint64(33)
        h *= _FMIX2
        h ^= h >> np.uint64(33)
        out[i] = np.int64(h)


@njit(cache=True, nogil=True, inline="always")
def _same_bytes(data: np.ndarray, start: int, length: int, keys: np.ndarray, key_start: int) -> bool:
    for j in range(length):
        if data[start + j] != keys[key_start + j]:
            return False
    return True


@njit(cache=True, nogil=True, inline="always")
def _find(table, entries, keys, h, data, start, length) -> int:
    """The table position holding the name, or -(first free position) - 1."""
    mask = table.shape[0] - 1
    p = h & mask
    free = -1
    while True:
        e = table[p, 1]
        if e == EMPTY:
            return -(p if free < 0 else free) - 1
        if e == REMOVED:
            if free < 0:
                free = p
        elif (
            table[p, 0] == h
            and entries[e, 1] == length
            and _same_bytes(data, start, length, keys, entries[e, 0])
        ):
            return p
        p = (p + 1) & mask


@njit(cache=True, nogil=True)
def _lookup(table, entries, keys, hashes, data, starts, ends, out) -> None:
    """out[i] = the slot of name i, or -1.

    A name's lookup touches three cache lines in random places: its table
    position, its entry, its key bytes, each found from the one before. They
    are fetched in a pipeline ``LOOKAHEAD`` names deep per stage: the table
    position of name i + 3L, the entry of the first position matching the
    hash of name i + 2L, the key bytes of that entry for name i + L; name i
    is then compared with everything in cache.
    """
    mask = table.shape[0] - 1
    n = hashes.shape[0]
    depth = LOOKAHEAD
    candidate = np.full(n, -1, dtype=np.int64)
    for i in range(n + 3 * depth):
        if i < n:
            prefetch(table, (hashes[i] & mask, 0))
        b = i - 2 * depth
        if 0 <= b < n:
            h = hashes[b]
            p = h & mask
            while table[p, 1] != EMPTY:
                if table[p, 0] == h and table[p, 1] >= 0:
                    candidate[b] = table[p, 1]
                    prefetch(entries, (table[p, 1], 0))
                    break
                p = (p + 1) & mask
        c = i - depth
        if 0 <= c < n and candidate[c] >= 0:
            prefetch(keys, (entries[candidate[c], 0],))
        d = i - 3 * depth
        if d >= 0:
            start = starts[d]
            p = _find(table, entries, keys, hashes[d], data, start, ends[d] - start)
            out[d] = entries[table[p, 1], 2] if p >= 0 else -1


@njit(cache=True, nogil=True)
def _insert(table, entries, keys, count, used, hashes, data, starts, ends, slots) -> tuple[int, int, int]:
    """Add or re-point each name; returns (entries, key bytes used, removed positions reused)."""
    reused = 0
    for i in range(hashes.shape[0]):
        start = starts[i]
        length = ends[i] - start
        p = _find(table, entries, keys, hashes[i], data, start, length)
        if p >= 0:
            entries[table[p, 1], 2] = slots[i]
            continue
        p = -p - 1
        if table[p, 1] == REMOVED:
            reused += 1
        keys[used : used + length] = data[start : start + length]
        entries[count, 0] = used
        entries[count, 1] = length
        entries[count, 2] = slots[i]
        table[p, 0] = hashes[i]
        table[p, 1] = count
        count += 1
        used += length
    return count, used, reused


@njit(cache=True, nogil=True)
def _remove(table, entries, keys, hashes, data, starts, ends) -> int:
    """Remove each name present; returns how many were."""
    removed = 0
    for i in range(hashes.shape[0]):
        start = starts[i]
        p = _find(table, entries, keys, hashes[i], data, start, ends[i] - start)
        if p >= 0:
            entries[table[p, 1], 2] = -1
            table[p, 1] = REMOVED
            removed += 1
    return removed


def encode_names(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bytes, starts, ends) of names as UTF-8: name i is bytes[starts[i]:ends[i]]."""
    encoded = EncodedNames.from_strings(names)
    return encoded.data, encoded.offsets[:-1], encoded.offsets[1:]


def join_names(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``encode_names`` in two C calls: the names joined by newlines, encoded once.

    None when some name holds a newline (no valid name does) or is not a str.
    """
    try:
        joined = "\n".join(names).encode("utf-8", "surrogatepass")
    except TypeError:
        return None
    data = np.frombuffer(joined, dtype=np.uint8)
    cuts = np.flatnonzero(data == NEWLINE)
    if len(cuts) != len(names) - 1:
        return None
    starts = np.empty(len(names), dtype=np.int64)
    starts[0] = 0
    starts[1:] = cuts + 1
    ends = np.empty(len(names), dtype=np.int64)
    ends[:-1] = cuts
    ends[-1] = len(data)
    return data, starts, ends


class NameTable:
    """name bytes -> slot; -1 for a name it does not hold."""

    def __init__(self) -> None:
        self._table = np.full((16, 2), EMPTY, dtype=np.int64)
        self._entries = np.zeros((8, 3), dtype=np.int64)  # key start, key length, slot (-1: removed)
        self._keys = np.zeros(256, dtype=np.uint8)
        self._count = 0  # entries, removed ones included
        self._used = 0  # key bytes
        self._live = 0
        self._removed_positions = 0

    def __len__(self) -> int:
        return self._live

    def lookup(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The slot of each name ``data[starts[i]:ends[i]]``, -1 where unknown."""
        hashes = np.empty(len(starts), dtype=np.int64)
        _hash_names(data, starts, ends, hashes)
        out = np.empty(len(starts), dtype=np.int64)
        _lookup(self._table, self._entries, self._keys, hashes, data, starts, ends, out)
        return out

    def add(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, slots: np.ndarray) -> None:
        """Map each name to its slot (a name already held is re-pointed)."""
        n = len(starts)
        if not n:
            return
        hashes = np.empty(n, dtype=np.int64)
        _hash_names(data, starts, ends, hashes)
        self._make_room(n, int((ends - starts).sum()))
        before = self._count
        self._count, self._used, reused = _insert(
            self._table, self._entries, self._keys, self._count, self._used,
            hashes, data, starts, ends, np.asarray(slots, dtype=np.int64),
        )  # fmt: skip
        self._live += self._count - before
        self._removed_positions -= reused

    def remove(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        hashes = np.empty(len(starts), dtype=np.int64)
        _hash_names(data, starts, ends, hashes)
        removed = _remove(self._table, self._entries, self._keys, hashes, data, starts, ends)
        self._live -= removed
        self._removed_positions += removed

    def _make_room(self, names: int, key_bytes: int) -> None:
        if self._count + names > len(self._entries):
            grown = np.zeros((max(2 * len(self._entries), self._count + names), 3), dtype=np.int64)
            grown[: self._count] = self._entries[: self._count]
            self._entries = grown
        if self._used + key_bytes > len(self._keys):
            grown_keys = np.zeros(max(2 * len(self._keys), self._used + key_bytes), dtype=np.uint8)
            grown_keys[: self._used] = self._keys[: self._used]
            self._keys = grown_keys
        occupied = self._live + self._removed_positions + names
        if 2 * occupied > len(self._table):
            self._rehash(max(16, 1 << int(2 * (self._live + names) - 1).bit_length()))

    def _rehash(self, size: int) -> None:
        """A table of ``size`` positions holding the live entries (removed positions dropped)."""
        live = np.flatnonzero(self._entries[: self._count, 2] >= 0)
        entries = self._entries[live]
        starts, lengths = entries[:, 0], entries[:, 1]
        offsets = np.zeros(len(live) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = np.empty(int(offsets[-1]), dtype=np.uint8)
        _gather_keys(self._keys, starts, lengths, offsets, data)
        slots = entries[:, 2].copy()
        self._table = np.full((size, 2), EMPTY, dtype=np.int64)
        self._entries = np.zeros_like(self._entries)
        self._count = self._used = self._live = self._removed_positions = 0
        if len(live):
            hashes = np.empty(len(live), dtype=np.int64)
            _hash_names(data, offsets[:-1], offsets[1:], hashes)
            self._count, self._used, _ = _insert(
                self._table, self._entries, self._keys, 0, 0, hashes, data, offsets[:-1], offsets[1:], slots
            )
            self._live = self._count


@njit(cache=True, nogil=True)
def _gather_keys(keys, starts, lengths, offsets, out) -> None:
    for i in range(starts.shape[0]):
        out[offsets[i] : offsets[i + 1]] = keys[starts[i] : starts[i] + lengths[i]]
