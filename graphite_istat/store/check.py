"""``check``: verify a storage directory without changing it, naming every bad file.

What is checked:

* ``store.json`` is readable and of this format version;
* the name index log (``names.verify``): header, record checksums, torn tail;
* every shard file: header magic, version and checksum, a size that is a
  whole number of blocks, every block header, every column record checksum;
* every cell with data: a row stamp on its archive's step grid, and
  min <= avg <= max, sum of squares >= 0 (a torn or corrupt cell breaks them);
* every block's ``rolled_until`` (see "Rollups" in ``format.py``): not in the
  future, and not so far behind the block's newest finest bucket that reads
  would take buckets not rolled up from the coarse cells;
* the index and the files agree: every name points at an in-use column of a
  readable file; in-use columns no name points at are reported (a writer
  reclaims them when it next opens the store).

It only reads, so it may run while the writer is writing; a cell the writer
is changing at that moment is re-read through the block's generation.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .format import COUNT_MAX, FORMAT_VERSION, HEADER_SIZE, FormatError, column_record_ok
from .names import IndexCorruptError, NameIndex, NameIndexError, verify
from .shardfile import ShardFile

ROW_CHUNK = 4096
# Relative slack for min <= avg <= max: the mean of n floats can round past an
# extreme by a few ulps.
AVG_TOLERANCE = 1e-9
# A rolled_until more than this ahead of the wall clock cannot have been written by a writer.
FUTURE_SLACK = 86400


def check_store(directory: str | os.PathLike) -> list[str]:
    """Problems found in a storage directory; an empty list means it is sound."""
    directory = Path(directory)
    problems: list[str] = []
    meta = directory / "store.json"
    try:
        desc = json.loads(meta.read_text())
        if desc.get("format") != "graphite-istat" or desc.get("version") != FORMAT_VERSION:
            problems.append(f"{meta}: not a graphite-istat store of format version {FORMAT_VERSION}")
    except (OSError, ValueError) as e:
        problems.append(f"{meta}: unreadable: {e}")
        return problems

    index_path = directory / "names.log"
    problems.extend(f"{index_path}: {p}" if str(index_path) not in p else p for p in verify(index_path))
    slots: dict[int, set[int]] = {}
    try:
        index = NameIndex.open(index_path, writable=False)
    except (IndexCorruptError, NameIndexError, OSError):
        index = None
    files: dict[int, ShardFile] = {}
    for path in sorted((directory / "data").glob("*")):
        if path.suffix != ".ist":
            problems.append(f"{path}: unexpected file in the data directory (left over from an interrupted write?)")
            continue
        try:
            shard_file = ShardFile.open(path, writable=False)
        except (FormatError, OSError) as e:
            problems.append(str(e) if str(path) in str(e) else f"{path}: {e}")
            continue
        files[int(path.stem)] = shard_file
        problems.extend(_check_file(shard_file))
    if index is not None:
        for name, slot in index.items():
            file_no, column = slot >> 32, slot & 0xFFFFFFFF
            slots.setdefault(file_no, set()).add(column)
            shard_file = files.get(file_no)
            if shard_file is None:
                problems.append(f"{index_path}: {name!r} points at missing or unreadable file number {file_no}")
            elif column >= shard_file.capacity or not shard_file.column_info(column)[0]:
                problems.append(f"{shard_file.path}: column {column} of {name!r} is not in use")
        for file_no, shard_file in files.items():
            orphans = sorted(set(shard_file.used_columns().tolist()) - slots.get(file_no, set()))
            if orphans:
                problems.append(
                    f"{shard_file.path}: {len(orphans)} columns in use without a name (first: {orphans[0]}); "
                    "the writer reclaims them on its next open"
                )
        index.close()
    for shard_file in files.values():
        shard_file.close()
    return problems


def _check_file(shard_file: ShardFile) -> list[str]:
    path = shard_file.path
    problems = []
    size = shard_file.apparent_bytes()
    if (size - HEADER_SIZE) % shard_file.header.block_bytes:
        problems.append(f"{path}: size {size} is not a whole number of blocks (truncated?)")
    if not shard_file.nblocks:
        return problems
    raw_columns = shard_file.columns.view(np.uint8).reshape(shard_file.nblocks, shard_file.block_columns, -1)
    for block in range(shard_file.nblocks):
        if shard_file.block_is_blank(block):
            continue  # grown but not initialised yet: a writer finishes it
        if not shard_file.block_magic_ok(block):
            problems.append(f"{path}: block {block} has a bad header")
            continue
        bad = [c for c in range(shard_file.block_columns) if not column_record_ok(raw_columns[block, c].tobytes())]
        if bad:
            problems.append(f"{path}: block {block}: {len(bad)} column records fail their checksum (first: {bad[0]})")
        for archive, view in enumerate(shard_file.archives):
            problems.extend(_check_cells(path, block, archive, view))
        problems.extend(_check_rolled_until(shard_file, block))
    return problems


def _check_rolled_until(shard_file: ShardFile, block: int) -> list[str]:
    rolled = int(shard_file.rolled_until[block])
    finest = shard_file.layout.archives[0]
    newest = int(np.max(shard_file.archives[0].stamps[block]))
    where = f"{shard_file.path}: block {block}: rolled_until {rolled}"
    if rolled > time.time() + FUTURE_SLACK:
        return [f"{where} is in the future"]
    if newest > 0 and rolled < newest - finest.step - finest.spare * finest.step:
        return [f"{where} is behind its newest finest bucket {newest}"]
    return []


def _check_cells(path: Path, block: int, archive: int, view) -> list[str]:
    stamps = np.array(view.stamps[block])
    used = np.flatnonzero(stamps)
    if not len(used):
        return []
    problems = []
    off_grid = used[stamps[used] % view.step != 0]
    if len(off_grid):
        problems.append(f"{path}: block {block} archive {archive}: {len(off_grid)} row stamps off the {view.step}s grid")
    for lo in range(0, len(used), ROW_CHUNK):
        rows = used[lo : lo + ROW_CHUNK]
        blocks = np.full(len(rows), block)
        count = view.row_cells("count", blocks, rows) & COUNT_MAX
        has = count > 0
        if not has.any():
            continue
        n = count[has].astype(np.float64)
        total = view.row_cells("sum", blocks, rows)[has]
        sumsq = view.row_cells("sumsq", blocks, rows)[has]
        lo_v = view.row_cells("min", blocks, rows)[has]
        hi_v = view.row_cells("max", blocks, rows)[has]
        with np.errstate(invalid="ignore", over="ignore"):
            avg = total / n
            slack = AVG_TOLERANCE * np.maximum(np.abs(lo_v), np.abs(hi_v))
            broken = ~(lo_v <= hi_v) | ~(avg >= lo_v - slack) | ~(avg <= hi_v + slack) | ~(sumsq >= 0)
        if broken.any():
            problems.append(
                f"{path}: block {block} archive {archive}: {int(broken.sum())} cells break min <= avg <= max"
            )
    return problems
