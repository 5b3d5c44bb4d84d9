"""Importing a whisper tree into a store: decode .wsp files (in worker processes), write cells (here).

The store has one writer, so the work is split: reading and decoding a file
(``decode_file``: the rings, the estimates of ``estimate.py``) is pure and
runs in up to ``jobs`` worker processes; creating metrics and writing cells
happens in the calling process.

Resuming: every archive is written with ``Store.write_cells``, which replaces
whole cells, so importing a file twice leaves the same data. A journal of the
files done (relative path, size, mtime) is kept in the storage directory; it
is appended only after ``Store.sync`` has made those files' cells durable, so
after a crash or Ctrl-C the next run skips what is certainly done and redoes
at most the files of the last few seconds. A file whose size or mtime changed
since is imported again.

Unreadable files (zero-length, truncated, corrupt header) and names the
store refuses are skipped with a message naming the file; a metric that
already exists with other archives than the file's is an error for that file.
Neither stops the import.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

from ..store.names import InvalidNameError
from ..store.store import Store, StoreError
from .cells import Cells, write_archive
from .estimate import history_cells
from .paths import name_for_path, walk_whisper_tree
from .progress import Progress
from .wsp_file import WspError, WspHeader, read_wsp

SYNC_INTERVAL = 5.0  # seconds between syncs (and journal appends)
JOURNAL_DIR = "tools"


class ImportConflictError(Exception):
    """The metric exists with archives other than the file's."""


@dataclass(slots=True)
class DecodedFile:
    relative: str
    name: str
    header: WspHeader
    cells: list[Cells]
    dropped: int
    size: int
    mtime_ns: int


@dataclass(slots=True)
class DecodeFailure:
    relative: str
    reason: str


@dataclass(slots=True)
class ImportSummary:
    files: int = 0  # imported by this run
    already_done: int = 0  # skipped: imported by an earlier run and unchanged since
    points: int = 0  # cells stored
    dropped: int = 0  # non-finite values left out
    skipped: list[tuple[str, str]] = field(default_factory=list)  # unreadable files, bad names
    errors: list[tuple[str, str]] = field(default_factory=list)  # files that could not be stored

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "already_done": self.already_done,
            "points": self.points,
            "dropped_points": self.dropped,
            "skipped": len(self.skipped),
            "errors": len(self.errors),
        }


def decode_file(root: Path, now: int, relative: Path) -> DecodedFile | DecodeFailure:
    """Read one .wsp and turn it into cells (runs in a worker process)."""
    path = root / relative
    try:
        name = name_for_path(relative)
        st = os.stat(path)
        contents = read_wsp(path, now)
        cells = history_cells(contents, now)
    except (WspError, InvalidNameError) as e:
        return DecodeFailure(str(relative), str(e) if isinstance(e, InvalidNameError) else e.problem)
    except OSError as e:
        return DecodeFailure(str(relative), e.strerror or str(e))
    dropped = sum(a.dropped for a in contents.archives)
    return DecodedFile(str(relative), name, contents.header, cells, dropped, st.st_size, st.st_mtime_ns)


def store_decoded(store: Store, decoded: DecodedFile, now: int, keep_last: bool) -> int:
    """Create the metric if needed and replace its cells; returns the cells stored."""
    header = decoded.header
    if decoded.name in store:
        have = [(a.step, a.rows) for a in store.info(decoded.name).layout.archives]
        if have != header.retentions:
            raise ImportConflictError(
                f"metric {decoded.name} exists with archives {have}, the file has {header.retentions}; "
                "resize or delete it first, or use fill"
            )
    else:
        store.create_metric(
            decoded.name, header.retentions, header.method, header.x_files_factor, keep_last=keep_last
        )
    return sum(write_archive(store, decoded.name, i, cells, now) for i, cells in enumerate(decoded.cells))


class ImportJournal:
    """The files an import of one whisper tree has finished (JSON lines, appended and fsynced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, tuple[int, int]] = {}
        if path.exists():
            data = path.read_bytes()
            whole = data[: data.rfind(b"\n") + 1]
            if len(whole) != len(data):
                # A torn last line from a crash: cut it off so appends start on a new line.
                with open(path, "r+b") as f:
                    f.truncate(len(whole))
            for line in whole.decode("utf-8", errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.done[entry["path"]] = (int(entry["size"]), int(entry["mtime_ns"]))
                except (ValueError, KeyError, TypeError):
                    continue  # an unreadable line: that file is imported again

    @classmethod
    def for_tree(cls, storage_dir: Path, root: Path) -> ImportJournal:
        digest = hashlib.sha256(str(root.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        directory = storage_dir / JOURNAL_DIR
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory / f"import-whisper-{digest}.jsonl")

    def is_done(self, relative: str, size: int, mtime_ns: int) -> bool:
        return self.done.get(relative) == (size, mtime_ns)

    def record(self, files: list[DecodedFile]) -> None:
        if not files:
            return
        lines = "".join(
            json.dumps({"path": f.relative, "size": f.size, "mtime_ns": f.mtime_ns}) + "\n" for f in files
        )
        with open(self.path, "a", encoding="utf-8", errors="surrogateescape") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())
        for f in files:
            self.done[f.relative] = (f.size, f.mtime_ns)

    def forget(self) -> None:
        self.done.clear()
        self.path.unlink(missing_ok=True)


def _decoded(root: Path, now: int, todo: list[Path], jobs: int) -> Iterator[DecodedFile | DecodeFailure]:
    work = partial(decode_file, root, now)
    if jobs <= 1:
        yield from map(work, todo)
        return
    # Windows of work keep decoded files from piling up faster than they are written.
    window = jobs * 8
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for lo in range(0, len(todo), window):
            yield from pool.imap_unordered(work, todo[lo : lo + window])


def import_tree(
    store: Store,
    root: Path,
    *,
    jobs: int = 1,
    now: int | None = None,
    keep_last: Callable[[str], bool] = lambda name: False,
    restart: bool = False,
    stream: TextIO | None = None,
) -> ImportSummary:
    """Import every .wsp under ``root`` into ``store`` (see the module docstring)."""
    now = int(time.time()) if now is None else int(now)
    journal = ImportJournal.for_tree(store.directory, root)
    if restart:
        journal.forget()
    summary = ImportSummary()
    todo: list[Path] = []
    for relative in walk_whisper_tree(root):
        try:
            st = os.stat(root / relative)
        except OSError as e:
            summary.skipped.append((str(relative), e.strerror or str(e)))
            continue
        if journal.is_done(str(relative), st.st_size, st.st_mtime_ns):
            summary.already_done += 1
        else:
            todo.append(relative)
    progress = Progress(len(todo), "files", stream)
    pending: list[DecodedFile] = []
    last_sync = time.monotonic()
    try:
        for result in _decoded(root, now, todo, jobs):
            if isinstance(result, DecodeFailure):
                summary.skipped.append((result.relative, result.reason))
                progress.message(f"skipped {root / result.relative}: {result.reason}")
            else:
                try:
                    summary.points += store_decoded(store, result, now, keep_last(result.name))
                    summary.dropped += result.dropped
                    summary.files += 1
                    pending.append(result)
                except (ImportConflictError, StoreError, InvalidNameError) as e:
                    summary.errors.append((result.relative, str(e)))
                    progress.message(f"error {root / result.relative}: {e}")
            progress.advance()
            if time.monotonic() - last_sync >= SYNC_INTERVAL:
                store.sync()
                journal.record(pending)
                pending.clear()
                last_sync = time.monotonic()
    finally:
        store.sync()
        journal.record(pending)
        progress.finish()
    return summary
