"""The store: one storage directory, its name index and shard files, batches in, counters out.

``Store.open(directory, rules, writable=True)`` is the one writer (it holds
the directory's writer lock); any number of processes may open the same
directory with ``writable=False`` at the same time and read while it writes.

Writes take a ``WriteBatch`` and are vectorised end to end: points are
validated with array masks, mapped to slots with one dict lookup per point,
sorted once by (file, column, time) and applied file by file (``apply.py``).
When ``write`` returns, every point it accepted is in the page cache (so a
kill -9 of the process loses nothing); ``sync`` makes it durable and runs by
itself every ``fsync_interval`` seconds of writing.

Reads take names (or patterns through ``match``) and return, per shard file,
the sub-counters of all requested series on one time grid (``read.py``).
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import pairwise
from pathlib import Path

import numpy as np

from ..config.carbon_conf import CarbonConf
from ..config.retention import Retention, validate_retentions
from ..config.storage_rules import StorageRules
from .apply import Runs, apply_points, merge_runs, roll_up, rolled_until_after
from .batch import INVALID_TIMESTAMP, EncodedNames, WriteBatch, WriteResult
from .format import (
    FORMAT_VERSION,
    MAX_ARCHIVES,
    METHOD_CODES,
    TILE_ROWS,
    ArchiveSpec,
    CorruptFileError,
    FormatError,
    Layout,
)
from .journal import SEQUENCES_NAME, UNDO_NAME, SequenceTable, UndoJournal, decode_records, restore
from .lock import WriterLock, writer_alive
from .names import InvalidNameError, NameIndex, encode_name
from .read import FUSED_METHODS, TimeGrid, choose_grid, read_columns, read_values
from .shardfile import ShardFile, fsync_directory
from .stats import METHOD_NEEDS, NEEDS, SUB_COUNTERS, UnknownStatError, aggregate, derive

STORE_META = "store.json"
DATA_DIR = "data"
INDEX_NAME = "names.log"
SLOT_SHIFT = 32
COLUMN_MASK = (1 << SLOT_SHIFT) - 1
COMPACT_MIN_GARBAGE = 10_000
ANONYMOUS_SOURCE = ""  # the journal's source for writes without one
DEFAULT_VALUE = "default"  # in fetch fields: whatever the metrics' default values need
# A fetch of at least PARALLEL_READ_SERIES series reads its files on up to
# MAX_READ_THREADS threads (no more than the CPUs).
PARALLEL_READ_SERIES = 1000
MAX_READ_THREADS = 4


class StoreError(Exception):
    """A storage directory that cannot be used as asked."""


class UnknownMetricError(KeyError):
    """A metric name that is not in the store."""


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Settings fixed when a storage directory is created, and the writer's policies."""

    shards: int = 8
    block_columns: int = 128
    future_limit: int = 600  # seconds a point may be ahead of now
    fsync_interval: float = 10.0  # 0: fsync at the end of every write
    tile_rows: int = TILE_ROWS  # rows per tile in the shard files (see format.py)

    @classmethod
    def from_carbon_conf(cls, conf: CarbonConf) -> StoreOptions:
        """The store settings of carbon.conf's ``[istat]`` section."""
        return cls(shards=conf.shards, future_limit=conf.future_limit, fsync_interval=conf.fsync_interval)


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """Where a metric lives and how it is read."""

    name: str
    slot: int
    path: Path
    shard: int
    layout: Layout
    aggregation_method: str
    x_files_factor: float

    @property
    def stats(self) -> tuple[str, ...]:
        base = ("avg", "count", "sum", "sumsq", "min", "max", "stddev")
        return base + (("last",) if self.layout.with_last else ())


@dataclass(slots=True)
class SeriesSet:
    """Sub-counters of several series on one time grid (all from one shard file).

    A set read by ``Store.fetch_values`` holds the default values only
    (``values``) and no counters.
    """

    names: list[str]
    grid: TimeGrid
    counters: dict[str, np.ndarray]  # field -> (len(names), grid.points)
    methods: list[str]
    x_files_factors: list[float]
    finest_step: int
    values: np.ndarray | None = None  # default values, when read without the counters

    def stat(self, stat: str) -> np.ndarray:
        """avg, count, sum, sumsq, min, max, stddev or last, NaN where empty."""
        if "count" not in self.counters:
            raise UnknownStatError(f"{stat!r}: this set holds default values only (read by fetch_values)")
        return derive(stat, self.counters)

    def default_values(self) -> np.ndarray:
        """Each series' aggregation-method value, xFilesFactor applied."""
        if self.values is not None:
            return self.values
        groups = {(m, x) for m, x in zip(self.methods, self.x_files_factors, strict=True)}
        if len(groups) == 1:
            ((method, xff),) = groups
            return aggregate(
                method, self.counters, step=self.grid.step, finest_step=self.finest_step, x_files_factor=xff
            )
        out = np.empty((len(self.methods), self.grid.points), dtype=np.float64)
        methods = np.array(self.methods)
        xffs = np.array(self.x_files_factors)
        for method, xff in groups:
            pick = np.flatnonzero((methods == method) & (xffs == xff))
            sub = {k: v[pick] for k, v in self.counters.items()}
            out[pick] = aggregate(
                method, sub, step=self.grid.step, finest_step=self.finest_step, x_files_factor=xff
            )
        return out


@dataclass(slots=True)
class FetchResult:
    sets: list[SeriesSet] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # not in the store
    errors: dict[str, str] = field(default_factory=dict)  # in an unreadable file: name -> problem
    out_of_range: list[str] = field(default_factory=list)  # no archive holds any of the range

    def series(self) -> Iterator[tuple[str, TimeGrid, SeriesSet, int]]:
        """(name, grid, set, row) for every series found."""
        for s in self.sets:
            for row, name in enumerate(s.names):
                yield name, s.grid, s, row


def _counters_to_read(layout: Layout, fields: Sequence[str], methods: Sequence[str]) -> tuple[str, ...]:
    """The stored counters a fetch of ``fields`` reads from a file of ``layout`` (see ``Store.fetch``)."""
    asked = {"count", *fields}
    if DEFAULT_VALUE in asked:
        asked |= {f for m in set(methods) for f in METHOD_NEEDS[m]}
    elif layout.with_last:
        asked.add("last")  # a default value by 'last' needs it
    stored = {name for name, _ in layout.fields}
    return tuple(f for f in (*SUB_COUNTERS, "last") if f in asked and f in stored)


def _group_by_file(slots: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(file number, indices into ``slots``) per file of the known slots, files by number.

    Inside a file, indices keep the order the slots were asked for.
    """
    order = np.flatnonzero(slots >= 0)
    if not len(order):
        return []
    file_of = slots[order] >> SLOT_SHIFT
    first = int(file_of.min())
    if first == int(file_of.max()):
        return [(first, order)]
    sort = np.argsort(file_of, kind="stable")
    order, file_of = order[sort], file_of[sort]
    bounds = [0, *(np.flatnonzero(file_of[1:] != file_of[:-1]) + 1).tolist(), len(order)]
    return [(int(file_of[lo]), order[lo:hi]) for lo, hi in pairwise(bounds)]


def spare_rows(step: int, future_limit: int) -> int:
    """Ring rows an archive needs beyond its retention for points up to ``future_limit`` ahead."""
    return -(-future_limit // step)


def _layout_for(rules: StorageRules, name: str, future_limit: int) -> tuple[Layout, str, float]:
    schema = rules.schema_for(name)
    agg = rules.aggregation_for(name)
    archives = tuple(ArchiveSpec(r.step, r.points, spare_rows(r.step, future_limit)) for r in schema.retentions)
    layout = Layout(archives, with_last=agg.method == "last", keep_last=schema.finest_bucket == "last")
    return layout, agg.method, agg.x_files_factor


def shard_of(name: str, shards: int) -> int:
    return zlib.crc32(name.encode("utf-8", "surrogateescape")) % shards


class Store:
    """A storage directory opened for writing (one process) or reading (any number)."""

    def __init__(
        self,
        directory: Path,
        rules: StorageRules | None,
        options: StoreOptions,
        index: NameIndex,
        lock: WriterLock | None,
    ) -> None:
        self.directory = directory
        self.rules = rules
        self.options = options
        self.index = index
        self._lock = lock
        self.writable = lock is not None
        self._files: dict[int, ShardFile] = {}
        self._bad_files: dict[int, str] = {}
        self._file_for_key: dict[tuple[int, str], int] = {}
        self._next_file_no = 0
        self._last_sync = time.monotonic()
        self._write_lock = threading.Lock()  # writes and deletes, within the writer process
        # The name index and the table of open files: refreshed, changed and
        # read under this lock, so many threads may read one Store. Copying
        # counters out of the files happens outside it.
        self._names_lock = threading.RLock()
        self._per_file: dict[str, np.ndarray] | None = None  # per-file lookup arrays, see _file_tables
        self.sequences = SequenceTable.open(directory / SEQUENCES_NAME, writable=lock is not None)
        self._journal = UndoJournal.open(directory / UNDO_NAME) if lock is not None else None
        self.recovered_cells = 0  # cells and rows written back from an interrupted batch at open

    # -- opening ----------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        rules: StorageRules | None = None,
        *,
        writable: bool,
        options: StoreOptions | None = None,
    ) -> Store:
        """Open (and, when writable, create) a storage directory.

        ``options`` shards and block_columns are used when the directory is
        created; afterwards the directory's own ``store.json`` decides them.
        """
        directory = Path(directory)
        options = options or StoreOptions()
        if writable:
            if rules is None:
                raise StoreError("a writable store needs storage rules to create metrics")
            directory.mkdir(parents=True, exist_ok=True)
            (directory / DATA_DIR).mkdir(exist_ok=True)
            lock = WriterLock.acquire(directory)
        else:
            if not (directory / STORE_META).exists():
                raise StoreError(f"{directory} is not a graphite-istat storage directory (no {STORE_META})")
            lock = None
        index: NameIndex | None = None
        store: Store | None = None
        try:
            # The index exists before store.json does, so a reader that sees
            # store.json finds a complete directory.
            index = NameIndex.open(directory / INDEX_NAME, writable=writable)
            options = cls._load_or_create_meta(directory, options, writable)
            store = cls(directory, rules, options, index, lock)
            store._scan_files()
            if writable:
                store._roll_back_interrupted_batch()
                store._reclaim_orphan_columns()
            return store
        except BaseException:
            # Give back what was opened (the index's lock, files, journal), so
            # that this process can open the directory again.
            if store is not None:
                store._close_handles()
            elif index is not None:
                index.close()
            if lock is not None:
                lock.release()
            raise

    @staticmethod
    def _load_or_create_meta(directory: Path, options: StoreOptions, writable: bool) -> StoreOptions:
        path = directory / STORE_META
        if not path.exists():
            meta = {
                "format": "graphite-istat",
                "version": FORMAT_VERSION,
                "shards": options.shards,
                "block_columns": options.block_columns,
                "tile_rows": options.tile_rows,
            }
            tmp = path.with_name(STORE_META + ".tmp")
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_directory(directory)
            return options
        try:
            meta = json.loads(path.read_text())
            if meta.get("format") != "graphite-istat":
                raise CorruptFileError(str(path), "not a graphite-istat store description")
            if meta.get("version") != FORMAT_VERSION:
                raise CorruptFileError(str(path), f"format version {meta.get('version')}, expected {FORMAT_VERSION}")
            shards, block_columns = int(meta["shards"]), int(meta["block_columns"])
            tile_rows = int(meta["tile_rows"])
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptFileError(str(path), f"unreadable: {e}") from e
        return replace(options, shards=shards, block_columns=block_columns, tile_rows=tile_rows)

    def _file_path(self, file_no: int) -> Path:
        return self.directory / DATA_DIR / f"{file_no:05d}.ist"

    def _scan_files(self) -> None:
        if self.writable:
            # A crash while creating a file leaves its temporary copy; the file never existed.
            for leftover in (self.directory / DATA_DIR).glob("*.ist.tmp"):
                leftover.unlink()
        for path in sorted((self.directory / DATA_DIR).glob("*.ist")):
            try:
                file_no = int(path.stem)
            except ValueError:
                continue
            self._next_file_no = max(self._next_file_no, file_no + 1)
            if not self.writable:
                continue  # readers open files when a read needs them
            try:
                shard_file = ShardFile.open(path, writable=True)
            except (FormatError, OSError) as e:
                self._bad_files[file_no] = str(e)
                continue
            self._files[file_no] = shard_file
            self._file_for_key[(shard_file.header.shard, shard_file.layout.key)] = file_no

    def _roll_back_interrupted_batch(self) -> None:
        assert self._journal is not None
        pending = self._journal.pending()
        if pending is None:
            self._journal.commit()
            return
        source, sequence, raw = pending
        if source == ANONYMOUS_SOURCE or self.sequences.last(source) < sequence:

            def fields_of(file_no: int):
                shard_file = self._files.get(file_no)
                return shard_file.layout.fields if shard_file is not None else None

            self.recovered_cells = restore(decode_records(raw, fields_of), self._files)
        self._journal.commit()

    def _reclaim_orphan_columns(self) -> None:
        # A crash between claiming a column and logging its name leaves the
        # column in use with no name: empty it and give it back.
        referenced: dict[int, set[int]] = {}
        for _, slot in self.index.items():
            referenced.setdefault(slot >> SLOT_SHIFT, set()).add(slot & COLUMN_MASK)
        for file_no, shard_file in list(self._files.items()):
            known = referenced.get(file_no, set())
            if known and max(known) >= shard_file.capacity:
                # Names point past the file's end: it lost blocks. Keep its
                # metrics (and their columns) away from new ones.
                self._bad_files[file_no] = f"{shard_file.path}: truncated: names point past its last block"
                del self._files[file_no]
                key = (shard_file.header.shard, shard_file.layout.key)
                if self._file_for_key.get(key) == file_no:
                    del self._file_for_key[key]
                shard_file.close()
                continue
            for column in shard_file.used_columns().tolist():
                if column not in known:
                    shard_file.release_column(column)

    def _file(self, file_no: int) -> ShardFile:
        """The file with this number, opened (readers) or refreshed after growth."""
        with self._names_lock:
            return self._open_file(file_no)

    def _open_file(self, file_no: int) -> ShardFile:
        shard_file = self._files.get(file_no)
        if shard_file is None:
            if file_no in self._bad_files:
                raise CorruptFileError(str(self._file_path(file_no)), self._bad_files[file_no])
            try:
                shard_file = ShardFile.open(self._file_path(file_no), writable=False)
            except FormatError as e:
                self._bad_files[file_no] = str(e)
                raise
            self._files[file_no] = shard_file
        return shard_file

    def close(self) -> None:
        if self.writable:
            self.sync()
        self._close_handles()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _close_handles(self) -> None:
        for shard_file in self._files.values():
            shard_file.close()
        self._files.clear()
        self.index.close()
        self.sequences.close()
        if self._journal is not None:
            self._journal.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------

    def _create_metric(self, name: str, explicit: tuple[Layout, str, float] | None = None) -> int:
        encode_name(name)  # refuse a bad name before it costs a column
        if explicit is None:
            assert self.rules is not None
            explicit = _layout_for(self.rules, name, self.options.future_limit)
        layout, method, xff = explicit
        shard = shard_of(name, self.options.shards)
        key = (shard, layout.key)
        file_no = self._file_for_key.get(key)
        if file_no is None:
            file_no = self._next_file_no
            self._next_file_no += 1
            shard_file = ShardFile.create(
                self._file_path(file_no), layout, shard, self.options.block_columns, self.options.tile_rows
            )
            self._files[file_no] = shard_file
            self._file_for_key[key] = file_no
        column = self._files[file_no].allocate_column(method, xff)
        slot = (file_no << SLOT_SHIFT) | column
        with self._names_lock:
            self.index.add(name, slot)
        return slot

    def _slots(self, names: Sequence[str], result: WriteResult) -> np.ndarray:
        """Slot per name, creating metrics on first sight; -1 where a name is unusable."""
        slots = self.index.slots_for_write(names)
        self._create_missing(names, slots, result)
        return slots

    def _create_missing(self, names: Sequence[str], slots: np.ndarray, result: WriteResult) -> None:
        """Create the metrics of the names whose slot is -1 (each once), in place; -1 stays for unusable names."""
        missing = np.flatnonzero(slots < 0)
        if len(missing):
            created: dict[str, int] = {}
            for i in missing.tolist():
                name = names[i]
                slot = created.get(name)
                if slot is None:
                    try:
                        slot = self._create_metric(name)
                    except InvalidNameError:
                        slot = -1
                    created[name] = slot
                slots[i] = slot
            result.created += sum(1 for s in created.values() if s >= 0)

    def _point_slots(self, batch: WriteBatch, keep: np.ndarray | None, result: WriteResult) -> np.ndarray:
        """The slot of every kept point (``keep``: indices, or None for all)."""
        if isinstance(batch.names, EncodedNames):
            return self._encoded_point_slots(batch, keep, result)
        if batch.name_ids is None:
            names = batch.names if keep is None else [batch.names[i] for i in keep.tolist()]
            return self._slots(names, result)
        ids = batch.name_ids if keep is None else batch.name_ids[keep]
        used = np.flatnonzero(np.bincount(ids, minlength=len(batch.names)))
        name_slots = np.full(len(batch.names), -1, dtype=np.int64)
        name_slots[used] = self._slots([batch.names[i] for i in used.tolist()], result)
        return name_slots[ids]

    def _encoded_point_slots(self, batch: WriteBatch, keep: np.ndarray | None, result: WriteResult) -> np.ndarray:
        """``_point_slots`` for names given as bytes: looked up in one pass, only unknown ones decoded."""
        names = batch.names
        assert isinstance(names, EncodedNames)
        name_slots = self.index.slots_of_encoded(names.data, names.offsets[:-1], names.offsets[1:])
        per_point = batch.name_ids if batch.name_ids is not None else np.arange(len(names))
        if keep is not None:
            per_point = per_point[keep]
        unknown = name_slots < 0
        if unknown.any():
            needed = np.zeros(len(names), dtype=bool)
            needed[per_point] = True
            missing = np.flatnonzero(unknown & needed)
            # Unknown to the table is unknown to the index: create them without a second lookup.
            decoded = names.tolist() if 8 * len(missing) > len(names) else names
            created = np.full(len(missing), -1, dtype=np.int64)
            self._create_missing([decoded[i] for i in missing.tolist()], created, result)
            name_slots[missing] = created
        return name_slots[per_point]

    def write(
        self,
        batch: WriteBatch,
        now: int | None = None,
        *,
        source: str | None = None,
        sequence: int | None = None,
    ) -> WriteResult:
        """Apply a batch; returns what was accepted, created and rejected (by reason).

        Every batch is applied wholly or not at all: a crash (or an error such
        as a full disk) half way through is rolled back, on the spot or on the
        next open (see ``journal.py``). With ``source`` and ``sequence`` it is
        also applied at most once: a sequence not above the last one applied
        for that source is a duplicate and changes nothing (``result.duplicate``).
        """
        if not self.writable:
            raise StoreError("this store was opened read-only")
        if (source is None) != (sequence is None):
            raise StoreError("source and sequence go together")
        now = int(time.time()) if now is None else int(now)
        result = WriteResult()
        if source == ANONYMOUS_SOURCE:
            raise StoreError("a source needs a name")
        with self._write_lock:
            assert self._journal is not None
            if source is not None:
                assert sequence is not None
                if sequence <= self.sequences.last(source):
                    result.duplicate = True
                    return result
            elif not len(batch):
                return result
            # Every write is journaled, so a batch is applied wholly or not at all.
            self._journal.begin(source or ANONYMOUS_SOURCE, sequence or 0)
            try:
                self._write(batch, now, result)
                self.index.flush(fsync=False)
                if source is not None:
                    self.sequences.append(source, int(sequence))  # the commit point
            except BaseException:
                self._roll_back_interrupted_batch()  # undo the rows it had changed
                raise
            self._journal.commit()
            if time.monotonic() - self._last_sync >= self.options.fsync_interval:
                self.sync()
        return result

    def last_sequence(self, source: str) -> int:
        """The last sequence applied for ``source`` (0 if none)."""
        return self.sequences.last(source)

    def _write(self, batch: WriteBatch, now: int, result: WriteResult) -> None:
        """Validate, map names to slots, sort, and apply file by file, journaling every row it changes."""
        assert self._journal is not None
        if not len(batch):
            return
        ts, values = batch.timestamps, batch.values
        nan = np.isnan(values)
        inf = np.isinf(values)
        bad_ts = ts == INVALID_TIMESTAMP
        future = ~bad_ts & (ts > now + self.options.future_limit)
        result.reject("nan", int(nan.sum()))
        result.reject("inf", int(inf.sum()))
        result.reject("bad_timestamp", int(bad_ts.sum()))
        result.reject("too_far_future", int(future.sum()))
        ok = ~(nan | inf | bad_ts | future)
        keep = None
        if not ok.all():
            keep = np.flatnonzero(ok)
            ts, values = ts[keep], values[keep]
        if not len(ts):
            return
        slots = self._point_slots(batch, keep, result)
        result.reject("invalid_name", int((slots < 0).sum()))
        file_no = slots >> SLOT_SHIFT
        tables = self._file_tables()
        nfiles = len(tables["usable"]) - 1
        usable = tables["usable"]
        # The oldest bucket any archive of the file still takes, measured from now.
        oldest = np.min(now - now % tables["steps"] - (tables["rows"] - 1) * tables["steps"], axis=1)
        file_idx = np.where(slots < 0, nfiles, file_no)
        bad_file = ~usable[file_idx] & (slots >= 0)
        result.reject("corrupt_file", int(bad_file.sum()))
        too_old = usable[file_idx] & (ts < oldest[file_idx])
        result.reject("too_old", int(too_old.sum()))
        # A file made when the future limit was smaller has fewer spare rows.
        too_far = usable[file_idx] & (ts > now + tables["ahead"][file_idx])
        result.reject("too_far_future", int(too_far.sum()))
        keep_mask = usable[file_idx] & ~too_old & ~too_far
        if not keep_mask.all():
            keep = np.flatnonzero(keep_mask)
            slots, ts, values = slots[keep], ts[keep], values[keep]
        if not len(ts):
            return
        order = self._sort_order(slots, ts)
        slots, ts, values = slots[order], ts[order], values[order]
        file_no = slots >> SLOT_SHIFT
        cuts = np.flatnonzero(file_no[1:] != file_no[:-1]) + 1
        bounds = np.concatenate(([0], cuts, [len(slots)])).tolist()
        groups = [(int(file_no[lo]), lo, hi) for lo, hi in pairwise(bounds)]
        self._roll_up(groups, slots, now)
        for number, lo, hi in groups:
            shard_file = self._files[number]
            columns = slots[lo:hi] & COLUMN_MASK
            before_change = partial(self._journal.capture, number, shard_file)
            apply_points(
                shard_file, columns, ts[lo:hi], values[lo:hi], now, shard_file.layout.keep_last, before_change
            )
        result.accepted += len(ts)

    def _roll_up(self, groups: list[tuple[int, int, int]], slots: np.ndarray, now: int) -> None:
        """Before a batch's points: roll up the buckets its blocks have finished, then move their ``rolled_until``.

        The rollups change no value a reader sees, so they are committed on
        their own (a journal checkpoint) before ``rolled_until`` says they are
        done; see "Rollups" in ``format.py``.
        """
        assert self._journal is not None
        moves = []
        stored = 0
        for number, lo, hi in groups:
            shard_file = self._files[number]
            block = (slots[lo:hi] & COLUMN_MASK) // shard_file.block_columns
            blocks = block[np.flatnonzero(np.diff(block, prepend=-1))]  # sorted by column
            until = rolled_until_after(shard_file, now)
            if len(shard_file.layout.archives) > 1:
                before_change = partial(self._journal.capture, number, shard_file)
                stored += roll_up(shard_file, blocks, until, before_change)
            moves.append((shard_file, blocks, until))
        if stored:
            self._journal.checkpoint()
        for shard_file, blocks, until in moves:
            rolled = shard_file.rolled_until
            rolled[blocks] = np.maximum(rolled[blocks], until)

    def _file_tables(self) -> dict[str, np.ndarray]:
        """Per-file facts as arrays indexed by file number (one extra entry for 'no file').

        ``usable``: the file is open for writing; ``steps``/``rows``: its
        archives (padded with its first one), from which the oldest bucket it
        can still take is computed per write; ``ahead``: how far ahead of now
        its spare rows reach; ``keep_last_step``: its finest step if it keeps
        the last point, else 0. Rebuilt only when files were added.
        """
        tables = self._per_file
        if tables is not None and len(tables["usable"]) == self._next_file_no + 1:
            return tables
        n = self._next_file_no + 1
        usable = np.zeros(n, dtype=bool)
        steps = np.ones((n, MAX_ARCHIVES), dtype=np.int64)
        rows = np.ones((n, MAX_ARCHIVES), dtype=np.int64)
        keep_last_step = np.zeros(n, dtype=np.int64)
        ahead = np.full(n, np.iinfo(np.int64).max // 4, dtype=np.int64)
        for no, shard_file in self._files.items():
            usable[no] = True
            ahead[no] = min(spec.spare * spec.step for spec in shard_file.layout.archives)
            archives = shard_file.layout.archives
            steps[no] = archives[0].step
            rows[no] = archives[0].rows
            for i, spec in enumerate(archives):
                steps[no, i], rows[no, i] = spec.step, spec.rows
            if shard_file.layout.keep_last:
                keep_last_step[no] = shard_file.layout.finest_step
        self._per_file = {
            "usable": usable,
            "steps": steps,
            "rows": rows,
            "keep_last_step": keep_last_step,
            "ahead": ahead,
        }
        return self._per_file

    def _sort_order(self, slots: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Order by (slot, time), stable so that equal times keep arrival order.

        Keep-last files order by finest bucket rather than time: the point
        received last wins its bucket, as in whisper.
        """
        if len(slots) == 1:
            return np.zeros(1, dtype=np.int64)
        keep_last_step = self._file_tables()["keep_last_step"]
        tkey = ts
        if keep_last_step.any():
            step = keep_last_step[slots >> SLOT_SHIFT]
            tkey = np.where(step > 0, ts - ts % np.maximum(step, 1), ts)
        tmin = int(tkey.min())
        span = int(tkey.max()) - tmin + 1
        # One int64 key when (dense slot rank, time) fits; a two-key sort otherwise.
        file_part = slots >> SLOT_SHIFT
        compact = (file_part << 24) | (slots & COLUMN_MASK)
        if int((slots & COLUMN_MASK).max()) < (1 << 24) and (int(compact.max()) + 1) * span < (1 << 62):
            return np.argsort(compact * span + (tkey - tmin), kind="stable")
        return np.lexsort((tkey, slots))

    def create_metric(
        self,
        name: str,
        archives: Sequence[tuple[int, int]],
        method: str,
        x_files_factor: float,
        *,
        keep_last: bool = False,
    ) -> MetricInfo:
        """Create a metric with explicit archives ((step, rows), finest first) instead of the rules'.

        For importers and carbon's ``create``; raises ``StoreError`` if it exists.
        """
        if not self.writable:
            raise StoreError("this store was opened read-only")
        if method not in METHOD_CODES:
            raise StoreError(f"unknown aggregation method {method!r}")
        future = self.options.future_limit
        specs = tuple(ArchiveSpec(int(step), int(rows), spare_rows(int(step), future)) for step, rows in archives)
        validate_retentions(Retention(s.step, s.rows) for s in specs)
        layout = Layout(specs, with_last=method == "last", keep_last=keep_last)
        with self._write_lock:
            if name in self.index:
                raise StoreError(f"{name}: already exists")
            slot = self._create_metric(name, (layout, method, float(x_files_factor)))
            self.index.flush(fsync=False)
            return self._info(name, slot)

    def write_cells(
        self,
        name: str,
        archive: int,
        buckets: np.ndarray,
        counters: dict[str, np.ndarray],
        *,
        approximate: bool,
        now: int | None = None,
    ) -> int:
        """Set whole cells of one archive (imported history): returns how many were stored.

        ``counters`` holds count, sum, sumsq, min and max per bucket (and
        ``last`` for metrics that store it). Cells are replaced, not
        combined, so importing the same history twice changes nothing.
        Buckets outside the archive's window measured from ``now`` are skipped.
        """
        if not self.writable:
            raise StoreError("this store was opened read-only")
        now = int(time.time()) if now is None else int(now)
        with self._write_lock:
            info = self.info(name)
            shard_file = self._files[info.slot >> SLOT_SHIFT]
            spec = info.layout.archives[archive]
            buckets = np.asarray(buckets, dtype=np.int64)
            order = np.argsort(buckets, kind="stable")
            buckets = buckets[order]
            if len(buckets) and ((buckets % spec.step).any() or (np.diff(buckets) == 0).any()):
                raise StoreError(f"{name}: buckets must be distinct multiples of {spec.step}")
            window_start = (now - now % spec.step) - (spec.rows - 1) * spec.step
            keep = order[buckets >= window_start]
            buckets = buckets[buckets >= window_start]
            if not len(buckets):
                return 0
            values = {k: np.asarray(v)[keep] for k, v in counters.items()}
            runs = Runs(
                column=np.full(len(buckets), info.slot & COLUMN_MASK, dtype=np.int64),
                bucket=buckets,
                count=values["count"].astype(np.int64),
                sum=values["sum"].astype(np.float64),
                sumsq=values["sumsq"].astype(np.float64),
                min=values["min"].astype(np.float64),
                max=values["max"].astype(np.float64),
                last=values.get("last", values["max"]).astype(np.float64),
                last_ts=buckets,
            )
            block = np.array([(info.slot & COLUMN_MASK) // shard_file.block_columns])
            shard_file.generations[block] += 1
            try:
                stored = merge_runs(shard_file, archive, runs, replace=True, approximate=approximate)
            finally:
                shard_file.generations[block] += 1
            return stored

    def set_rules(self, rules: StorageRules) -> None:
        """Use new storage rules for metrics created from now on (existing ones keep theirs)."""
        with self._write_lock:
            self.rules = rules

    def sync(self) -> None:
        """Make everything written so far durable (index and shard files).

        Compacts the name index first when most of its log is dead records.
        """
        if self.index.garbage_records > max(COMPACT_MIN_GARBAGE, len(self.index)):
            self.index.compact()
        self.index.flush(fsync=True)
        self.sequences.fsync()
        for shard_file in self._files.values():
            if shard_file.writable:
                shard_file.fsync()
        self._last_sync = time.monotonic()

    # -- metadata and names -------------------------------------------------

    def refresh(self) -> None:
        """Readers: pick up names and files the writer added since the last call."""
        if not self.writable:
            with self._names_lock:
                self.index.refresh()

    def info(self, name: str) -> MetricInfo:
        with self._names_lock:
            self.refresh()
            slot = self.index.get(name)
        if slot is None:
            raise UnknownMetricError(name)
        return self._info(name, slot)

    def _info(self, name: str, slot: int) -> MetricInfo:
        file_no, column = slot >> SLOT_SHIFT, slot & COLUMN_MASK
        with self._names_lock:
            shard_file = self._open_file(file_no)
            if column >= shard_file.capacity:
                shard_file.refresh()
            if column >= shard_file.capacity:
                raise CorruptFileError(str(shard_file.path), f"{name!r} is in column {column}, beyond the file's end")
        _, method, xff = shard_file.column_info(column)
        return MetricInfo(
            name, slot, shard_file.path, shard_file.header.shard, shard_file.layout, method, xff
        )

    def __contains__(self, name: str) -> bool:
        with self._names_lock:
            self.refresh()
            return name in self.index

    def __len__(self) -> int:
        return len(self.index)

    def names(self) -> list[str]:
        """Every metric name, sorted."""
        with self._names_lock:
            self.refresh()
            return sorted(name for name, _ in self.index.items())

    def match(self, pattern: str) -> list[str]:
        with self._names_lock:
            self.refresh()
            return self.index.match(pattern)

    def find(self, pattern: str):
        with self._names_lock:
            self.refresh()
            return self.index.find(pattern)

    def find_paths(self, pattern: str) -> dict[str, tuple[bool, bool]]:
        """``find`` unsorted: ``path -> (is_leaf, has_children)``."""
        with self._names_lock:
            self.refresh()
            return self.index.find_paths(pattern)

    def set_metadata(self, name: str, *, method: str | None = None, x_files_factor: float | None = None) -> MetricInfo:
        """Change a metric's aggregation method and/or xFilesFactor (whisper's setAggregationMethod)."""
        if not self.writable:
            raise StoreError("this store was opened read-only")
        with self._write_lock:
            info = self.info(name)
            new_method = method or info.aggregation_method
            if new_method == "last" and not info.layout.with_last:
                raise StoreError(f"{name}: 'last' is not stored for this metric; resize it to a layout that keeps it")
            xff = info.x_files_factor if x_files_factor is None else float(x_files_factor)
            if not 0.0 <= xff <= 1.0:
                raise StoreError(f"xFilesFactor must be between 0 and 1, not {xff}")
            column = info.slot & COLUMN_MASK
            self._file(info.slot >> SLOT_SHIFT).set_column(column, in_use=True, method=new_method, xff=xff)
            return self._info(name, info.slot)

    def delete(self, pattern: str) -> list[str]:
        """Remove the metrics a pattern matches and free their columns for reuse."""
        if not self.writable:
            raise StoreError("this store was opened read-only")
        with self._write_lock, self._names_lock:
            names = self.index.match(pattern)
            for name in names:
                slot = self.index.remove(name)
                if slot is None:
                    continue
                file_no = slot >> SLOT_SHIFT
                if file_no in self._files:
                    self._files[file_no].release_column(slot & COLUMN_MASK)
            self.index.flush(fsync=True)
            return names

    # -- reading ----------------------------------------------------------

    def fetch(
        self,
        names: Sequence[str],
        from_t: int,
        until_t: int,
        now: int | None = None,
        *,
        fields: Sequence[str] = SUB_COUNTERS,
        archive: int | None = None,
    ) -> FetchResult:
        """Sub-counters of many metrics at once, grouped per shard file.

        ``fields`` are the stored counters to read (``count`` is always read);
        ``last`` is read for metrics that store it. The name ``DEFAULT_VALUE``
        among them stands for the counters each file's metrics need for their
        default values (for ``average``, count and sum): reading fewer
        counters is the main saving of a bulk read. ``archive`` forces an
        archive index instead of whisper's choice.
        """

        def read(shard_file: ShardFile, columns: np.ndarray, grid: TimeGrid, methods, xffs) -> SeriesSet:
            use = _counters_to_read(shard_file.layout, fields, methods)
            counters = read_columns(
                shard_file, columns, grid, use, writer_alive=partial(writer_alive, self.directory)
            )
            return SeriesSet([], grid, counters, methods, xffs, shard_file.layout.finest_step)

        return self._fetch_by_file(names, from_t, until_t, now, archive, read)

    def fetch_values(
        self,
        names: Sequence[str],
        from_t: int,
        until_t: int,
        now: int | None = None,
        *,
        archive: int | None = None,
    ) -> FetchResult:
        """Default values only (each metric's aggregation method, xFilesFactor applied), whisper-like.

        The same values as ``fetch(..., fields=(DEFAULT_VALUE,))`` followed by
        ``default_values()``, made in one pass over the files without the
        counters in between (for average, sum, min, max and avg_zero; a file
        holding other methods is read through its counters). The sets hold
        ``values`` and no counters.
        """

        def read(shard_file: ShardFile, columns: np.ndarray, grid: TimeGrid, methods, xffs) -> SeriesSet:
            finest = shard_file.layout.finest_step
            alive = partial(writer_alive, self.directory)
            if FUSED_METHODS.keys() >= set(methods):
                values = read_values(shard_file, columns, grid, methods, xffs, writer_alive=alive)
            else:
                use = _counters_to_read(shard_file.layout, (DEFAULT_VALUE,), methods)
                counters = read_columns(shard_file, columns, grid, use, writer_alive=alive)
                values = SeriesSet([], grid, counters, methods, xffs, finest).default_values()
            return SeriesSet([], grid, {}, methods, xffs, finest, values)

        return self._fetch_by_file(names, from_t, until_t, now, archive, read)

    def _fetch_by_file(
        self,
        names: Sequence[str],
        from_t: int,
        until_t: int,
        now: int | None,
        archive: int | None,
        read: Callable[[ShardFile, np.ndarray, TimeGrid, list[str], list[float]], SeriesSet],
    ) -> FetchResult:
        """Find each name's file and column, choose each file's grid, and ``read`` each file's columns."""
        now = int(time.time()) if now is None else int(now)
        result = FetchResult()
        with self._names_lock:
            self.refresh()
            slots = self.index.slots_array(names)
        if (slots < 0).any():
            result.missing.extend(names[i] for i in np.flatnonzero(slots < 0).tolist())
        files = _group_by_file(slots)

        def read_file(file_no: int, members: np.ndarray) -> SeriesSet | list[str] | str:
            """The file's set; or the names outside its retention; or what is wrong with the file."""
            member_names = [names[i] for i in members.tolist()]
            try:
                columns = slots[members] & COLUMN_MASK
                with self._names_lock:
                    shard_file = self._open_file(file_no)
                    if int(columns.max()) >= shard_file.capacity:
                        shard_file.refresh()
                    if int(columns.max()) >= shard_file.capacity:
                        raise CorruptFileError(str(shard_file.path), "metrics beyond the file's end (truncated?)")
                grid = choose_grid(shard_file.layout, int(from_t), int(until_t), now, archive)
                if grid is None:
                    return member_names
                methods, xffs = shard_file.column_methods(columns)
                series_set = read(shard_file, columns, grid, methods, xffs)
            except (FormatError, OSError) as e:
                return str(e)
            series_set.names = member_names
            return series_set

        big = sum(len(members) for _, members in files) >= PARALLEL_READ_SERIES
        workers = min(len(files), os.cpu_count() or 1, MAX_READ_THREADS) if big else 1
        if workers > 1:
            # The copy loops release the GIL: big reads use the CPUs, a file per task.
            with ThreadPoolExecutor(workers, thread_name_prefix="istat-read") as pool:
                outcomes = list(pool.map(lambda item: read_file(*item), files))
        else:
            outcomes = [read_file(*item) for item in files]
        for (_, members), outcome in zip(files, outcomes, strict=True):
            if isinstance(outcome, SeriesSet):
                result.sets.append(outcome)
            elif isinstance(outcome, list):
                result.out_of_range.extend(outcome)
            else:
                for i in members.tolist():
                    result.errors[names[i]] = outcome
        return result

    def fetch_stat(
        self, name: str, from_t: int, until_t: int, now: int | None = None, stat: str | None = None
    ) -> tuple[TimeGrid, np.ndarray] | None:
        """One metric, one stat (None: its aggregation-method value), whisper-like."""
        fields = (DEFAULT_VALUE,) if stat is None else NEEDS.get(stat, SUB_COUNTERS)
        result = self.fetch([name], from_t, until_t, now, fields=fields)
        if name in result.errors:
            raise CorruptFileError(str(self.directory), result.errors[name])
        if result.missing:
            raise UnknownMetricError(name)
        for _, grid, series_set, row in result.series():
            values = series_set.default_values()[row] if stat is None else series_set.stat(stat)[row]
            return grid, values
        return None

    # -- accounting -------------------------------------------------------

    def files(self) -> dict[int, ShardFile]:
        """Every readable shard file, by number (opens them for readers)."""
        for path in sorted((self.directory / DATA_DIR).glob("*.ist")):
            try:
                self._file(int(path.stem))
            except (ValueError, FormatError, OSError):
                continue
        return dict(self._files)

    def bad_files(self) -> dict[Path, str]:
        return {self._file_path(no): problem for no, problem in self._bad_files.items()}
