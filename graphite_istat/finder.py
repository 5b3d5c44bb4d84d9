"""graphite-web 1.1 finder serving a graphite-istat storage directory.

In graphite-web's local_settings.py::

    STORAGE_FINDERS = ['graphite_istat.finder.IstatFinder']
    ISTAT_STORAGE_DIR = '/opt/graphite/storage/istat'   # default: STORAGE_DIR

(beside ``'graphite.finders.standard.StandardFinder'`` to serve whisper files
too; graphite-web merges the series of a path both hold). The conf directory
(``ISTAT_CONF_DIR``, default ``CONF_DIR``) is not read here: every metric
keeps its aggregation method and xFilesFactor in its shard file.

Paths are described in ``graphite.namespace``: each stored metric is a leaf
(its aggregation method) and a branch of sub-counter leaves (``.avg``,
``.max`` ...). ``fetch`` reads every series of a render in one bulk store read
and, when the request carries maxDataPoints, consolidates exactly from the
sub-counters (``graphite.consolidation``).

graphite-web calls a finder from its worker threads at once: the store is
opened read-only once per finder, on first use, and calls into it are
serialised by one lock (a read-only store's name index must not refresh while
another thread walks it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings
from graphite.errors import InputParameterError
from graphite.finders.utils import BaseFinder, FindQuery
from graphite.intervals import Interval, IntervalSet
from graphite.logger import log
from graphite.node import BranchNode, LeafNode
from graphite.readers.utils import BaseReader

from .graphite import namespace
from .graphite.namespace import Leaf
from .graphite.series import LeafRead, read_leaves
from .store.globbing import GlobError
from .store.read import InvalidTimeRangeError, StoreBusyError
from .store.store import Store, StoreError, UnknownMetricError

CONSOLIDATE_BY = "consolidateBy("


class IstatPatternError(InputParameterError):
    """A pattern the store cannot compile (unbalanced braces or brackets ...)."""


class IstatReadError(Exception):
    """Series that could not be read; the message names the metrics and the problem.

    Deliberately not a ``TypeError``: graphite-web retries a reader's fetch
    without arguments on ``TypeError``, which would hide the failure.
    """


def storage_dir_setting() -> Path:
    """``ISTAT_STORAGE_DIR``, else graphite-web's ``STORAGE_DIR``."""
    return Path(getattr(settings, "ISTAT_STORAGE_DIR", "") or settings.STORAGE_DIR)


def conf_dir_setting() -> Path:
    """``ISTAT_CONF_DIR``, else graphite-web's ``CONF_DIR`` (for tools run inside the webapp)."""
    return Path(getattr(settings, "ISTAT_CONF_DIR", "") or settings.CONF_DIR)


def _log_error(message: str) -> None:
    # graphite-web's exception log, at ERROR level, without a traceback that says nothing.
    log.exception(message, exc_info=False)


class IstatFinder(BaseFinder):
    """Finds and reads the metrics of one graphite-istat storage directory."""

    local = True
    disabled = False
    tags = False

    def __init__(self, storage_dir: str | Path | None = None) -> None:
        super().__init__()
        self._storage_dir = Path(storage_dir) if storage_dir is not None else None
        self._store: Store | None = None
        self._lock = threading.Lock()

    # -- the store ------------------------------------------------------------

    @property
    def storage_dir(self) -> Path:
        return self._storage_dir if self._storage_dir is not None else storage_dir_setting()

    def _open(self) -> Store:
        """The read-only store, opened on first use (caller holds the lock)."""
        if self._store is None:
            self._store = Store.open(self.storage_dir, writable=False)
        return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    # -- finding ----------------------------------------------------------------

    def _find(self, pattern: str, *, leaves_only: bool) -> namespace.FoundPaths:
        try:
            with self._lock:
                return namespace.find(self._open(), pattern, leaves_only=leaves_only)
        except GlobError as e:
            raise IstatPatternError(f"{pattern!r}: {e}") from e
        except StoreError as e:
            # No writer has created the directory yet: nothing to find, but say why.
            _log_error(f"graphite-istat: cannot open {self.storage_dir}: {e}")
            return namespace.FoundPaths()

    def find_nodes(self, query: FindQuery) -> list[BranchNode | LeafNode]:
        """Branches and leaves for a query (a list: graphite-web iterates it in another thread)."""
        found = self._find(query.pattern, leaves_only=bool(query.leaves_only))
        nodes: list[BranchNode | LeafNode] = [BranchNode(path) for path in found.branches]
        nodes += [LeafNode(leaf.path, IstatReader(self, leaf)) for leaf in found.leaves.values()]
        return nodes

    def get_index(self, requestContext: dict | None = None) -> list[str]:
        """Every stored metric name, sorted; sub-counter leaves are not listed (they follow by rule)."""
        try:
            with self._lock:
                store = self._open()
                store.refresh()
                return sorted(name for name, _ in store.index.items())
        except StoreError as e:
            _log_error(f"graphite-istat: cannot open {self.storage_dir}: {e}")
            return []

    # -- reading ----------------------------------------------------------------

    def fetch(
        self,
        patterns: Sequence[str],
        start_time: int,
        end_time: int,
        now: int | None = None,
        requestContext: dict | None = None,
    ) -> list[dict]:
        """Series of every leaf matched by ``patterns``, read in one bulk store read."""
        context = requestContext or {}
        matched: list[tuple[str, Leaf]] = []
        for pattern in patterns:
            found = self._find(pattern, leaves_only=True)
            matched += [(pattern, leaf) for leaf in found.leaves.values()]
        if not matched:
            return []
        read = self._read([leaf for _, leaf in matched], start_time, end_time, now, context)
        results = []
        for pattern, leaf in matched:
            series = read.series.get(leaf.path)
            if series is None:
                continue
            results.append(
                {
                    "pathExpression": pattern,
                    "path": leaf.path,
                    "name": leaf.path,
                    "time_info": series.time_info,
                    "values": list(series.values),
                }
            )
        return results

    def fetch_leaf(
        self, leaf: Leaf, start_time: int, end_time: int, now: int | None, context: dict
    ) -> tuple[tuple[int, int, int], list[float | None]] | None:
        series = self._read([leaf], start_time, end_time, now, context).series.get(leaf.path)
        return None if series is None else (series.time_info, series.values)

    def _read(
        self, leaves: list[Leaf], start_time: int, end_time: int, now: int | None, context: dict
    ) -> LeafRead:
        max_points = _max_points(context)
        try:
            with self._lock:
                read = read_leaves(
                    self._open(), leaves, int(start_time), int(end_time),
                    None if now is None else int(now), max_points=max_points,
                )
        except (StoreError, StoreBusyError, InvalidTimeRangeError, OSError) as e:
            metrics = ", ".join(sorted({leaf.metric for leaf in leaves}))
            _log_error(f"graphite-istat: reading {metrics} failed: {e}")
            raise IstatReadError(f"reading {metrics} failed: {e}") from e
        if read.errors:
            for metric, problem in sorted(read.errors.items()):
                _log_error(f"graphite-istat: cannot read metric {metric}: {problem}")
            if not read.series or getattr(settings, "STORE_FAIL_ON_ERROR", False):
                names = ", ".join(sorted(read.errors))
                raise IstatReadError(f"cannot read metrics {names}: see the exception log")
        return read

    def intervals(self, metric: str) -> IntervalSet:
        """The time the metric's archives cover, ending now."""
        try:
            with self._lock:
                retention = self._open().info(metric).layout.max_retention
        except (UnknownMetricError, StoreError):
            return IntervalSet([])
        now = int(time.time())
        return IntervalSet([Interval(now - retention, now)])


def _max_points(context: dict) -> int | None:
    """The request's maxDataPoints, unless a target chose its own consolidation.

    graphite-web 1.1 passes ``maxDataPoints`` in the request context. A target
    using consolidateBy() asked graphite-web to consolidate its way, so then
    the finder leaves every series of the request unconsolidated.
    """
    max_points = context.get("maxDataPoints")
    if not max_points:
        return None
    if any(CONSOLIDATE_BY in str(target) for target in context.get("targets") or ()):
        return None
    return int(max_points)


class IstatReader(BaseReader):
    """The reader behind one leaf node (graphite-web uses it for single-node fetches and merges)."""

    __slots__ = ("finder", "leaf")

    def __init__(self, finder: IstatFinder, leaf: Leaf) -> None:
        self.finder = finder
        self.leaf = leaf

    def fetch(
        self,
        startTime: int,
        endTime: int,
        now: int | None = None,
        requestContext: dict | None = None,
    ) -> tuple[tuple[int, int, int], list[float | None]] | None:
        try:
            return self.finder.fetch_leaf(self.leaf, startTime, endTime, now, requestContext or {})
        except TypeError as e:  # never let graphite-web's TypeError retry swallow a bug
            raise IstatReadError(f"reading {self.leaf.path} failed: {e!r}") from e

    def get_intervals(self) -> IntervalSet:
        return self.finder.intervals(self.leaf.metric)

    def __repr__(self) -> str:
        return f"IstatReader({self.leaf.path!r})"
