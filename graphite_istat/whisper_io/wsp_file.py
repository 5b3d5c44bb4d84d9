"""Whisper (.wsp) files in and out: the header through the ``whisper`` module, archive rings as arrays.

The whisper 1.1 format, big-endian throughout::

    metadata     "!2LfL"  aggregation type (1 average, 2 sum, 3 last, 4 max, 5 min,
                          6 avg_zero, 7 absmax, 8 absmin), max retention, xFilesFactor,
                          archive count
    archive info "!3L"    per archive: byte offset of its ring, seconds per point, points
    rings        "!Ld"    per archive, ``points`` slots of (interval, value)

A ring slot holds the bucket start it was written for. Reading follows
whisper's ``fetch``: a ring whose first slot has interval 0 is empty; slot
``i`` counts only if its interval lies ``i`` slots after the first slot's
(modulo the ring), and only buckets inside the archive's window at ``now``
are returned (``window_start`` .. the bucket holding ``now``).

Checks beyond whisper's own header checks: at least one archive, whisper's
archive rules, rings laid out back to back right after the header, and the
file long enough to hold them (a truncated file is refused, not half read).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from .cells import window_start

POINT_DTYPE = np.dtype([("interval", ">u4"), ("value", ">f8")])
METADATA_BYTES = 16
ARCHIVE_INFO_BYTES = 12


class WspError(Exception):
    """A .wsp file that cannot be read (corrupt, truncated, empty) or written."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class WspArchive:
    offset: int
    step: int
    rows: int

    @property
    def seconds(self) -> int:
        return self.step * self.rows


@dataclass(frozen=True, slots=True)
class WspHeader:
    method: str
    x_files_factor: float
    archives: tuple[WspArchive, ...]

    @property
    def retentions(self) -> list[tuple[int, int]]:
        return [(a.step, a.rows) for a in self.archives]


@dataclass(slots=True)
class WspArchiveData:
    """The points of one archive that whisper's fetch would return, oldest first."""

    step: int
    rows: int
    buckets: np.ndarray  # int64
    values: np.ndarray  # float64, finite
    dropped: int  # non-finite values left out


@dataclass(slots=True)
class WspContents:
    header: WspHeader
    archives: list[WspArchiveData]

    @property
    def points(self) -> int:
        return sum(len(a.buckets) for a in self.archives)


def _whisper() -> ModuleType:
    # Imported on first use: whisper is an optional dependency (the carbon extra),
    # and the command line imports this package when building its parser.
    import whisper

    return whisper


def read_header(path: str | os.PathLike) -> WspHeader:
    """The header of a .wsp file, checked against the file's size; ``WspError`` otherwise."""
    whisper = _whisper()
    try:
        size = os.stat(path).st_size
        if size == 0:
            raise WspError(path, "empty file (0 bytes)")
        info = whisper.info(str(path))
    except whisper.WhisperException as e:
        raise WspError(path, f"corrupt whisper header ({e})") from None
    except OSError as e:
        raise WspError(path, e.strerror or str(e)) from None
    archives = tuple(WspArchive(a["offset"], a["secondsPerPoint"], a["points"]) for a in info["archives"])
    if not archives:
        raise WspError(path, "corrupt whisper header (no archives)")
    try:
        whisper.validateArchiveList([(a.step, a.rows) for a in archives])
    except whisper.InvalidConfiguration as e:
        raise WspError(path, f"corrupt whisper header ({e})") from None
    expected = METADATA_BYTES + ARCHIVE_INFO_BYTES * len(archives)
    for number, archive in enumerate(archives):
        if archive.offset != expected:
            raise WspError(path, f"corrupt whisper header (archive {number} at offset {archive.offset}, expected {expected})")
        expected += archive.rows * POINT_DTYPE.itemsize
    if size < expected:
        raise WspError(path, f"truncated: {size} bytes, the header describes {expected}")
    return WspHeader(info["aggregationMethod"], float(info["xFilesFactor"]), archives)


def _ring_points(ring: np.ndarray, archive: WspArchive, now: int) -> tuple[np.ndarray, np.ndarray]:
    intervals = ring["interval"].astype(np.int64)
    base = int(intervals[0]) if len(intervals) else 0
    if base == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    distance = intervals - base
    slot = np.arange(len(intervals), dtype=np.int64)
    valid = (intervals != 0) & (distance % archive.step == 0)
    valid &= (distance // archive.step) % archive.rows == slot
    valid &= (intervals >= window_start(archive.step, archive.rows, now)) & (intervals <= now - now % archive.step)
    pick = np.flatnonzero(valid)
    buckets = intervals[pick]
    order = np.argsort(buckets, kind="stable")
    return buckets[order], ring["value"][pick][order].astype(np.float64)


def read_wsp(path: str | os.PathLike, now: int) -> WspContents:
    """Every archive's points as whisper's fetch sees them at ``now``; ``WspError`` if unreadable."""
    header = read_header(path)
    archives = []
    try:
        with open(path, "rb") as f:
            for archive in header.archives:
                f.seek(archive.offset)
                ring = np.fromfile(f, dtype=POINT_DTYPE, count=archive.rows)
                if len(ring) != archive.rows:
                    raise WspError(path, "truncated while reading")
                buckets, values = _ring_points(ring, archive, now)
                finite = np.isfinite(values)
                dropped = int((~finite).sum())
                if dropped:
                    buckets, values = buckets[finite], values[finite]
                archives.append(WspArchiveData(archive.step, archive.rows, buckets, values, dropped))
    except OSError as e:
        raise WspError(path, e.strerror or str(e)) from None
    return WspContents(header, archives)


def write_wsp(
    path: str | os.PathLike,
    retentions: list[tuple[int, int]],
    method: str,
    x_files_factor: float,
    points: list[tuple[np.ndarray, np.ndarray]],
) -> int:
    """Create a .wsp file holding ``points[i]`` (buckets, values) in archive ``i``; returns points written.

    Each archive's ring is written directly (no propagation between
    archives), so every archive holds exactly the values given for it. The
    file is written under a temporary name and renamed into place.
    """
    whisper = _whisper()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        whisper.create(str(tmp), retentions, float(x_files_factor), method)
        header = read_header(tmp)
        written = 0
        with open(tmp, "r+b") as f:
            for archive, (given, values) in zip(header.archives, points, strict=True):
                buckets = np.asarray(given, dtype=np.int64)
                if not len(buckets):
                    continue
                ring = np.zeros(archive.rows, dtype=POINT_DTYPE)
                base = int(buckets.min())
                slots = ((buckets - base) // archive.step) % archive.rows
                ring["interval"][slots] = buckets
                ring["value"][slots] = values
                f.seek(archive.offset)
                f.write(ring.tobytes())
                written += len(buckets)
        os.replace(tmp, path)
    except (whisper.WhisperException, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise WspError(path, str(e)) from None
    return written
