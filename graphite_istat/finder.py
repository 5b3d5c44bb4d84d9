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

Tagged series (``cpu.user;dc=ams;host=web1``) are answered from the same
names by ``graphite.tags``: the finder declares ``tags = True``, so
graphite-web hands it ``seriesByTag(...)`` targets and the tag
auto-completion, and ``IstatTagDB`` (``TAGDB =
'graphite_istat.finder.IstatTagDB'``) serves ``/tags``, ``/tags/<tag>`` and
``/tags/findSeries`` from the finder's tag index too (README.rst, "Tagged series").

graphite-web calls a finder from its worker threads at once: the store is
opened read-only once per finder, on first use, and calls into it are
serialised by one lock (a read-only store's name index must not refresh while
another thread walks it).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from graphite.errors import InputParameterError
from graphite.finders.utils import BaseFinder, FindQuery
from graphite.intervals import Interval, IntervalSet
from graphite.logger import log
from graphite.node import BranchNode, LeafNode
from graphite.readers.utils import BaseReader
from graphite.render.grammar import grammar
from graphite.tags.base import BaseTagDB
from graphite.tags.utils import TaggedSeries
from pyparsing import ParseBaseException

from .graphite import namespace
from .graphite.namespace import Leaf
from .graphite.rows import record_rows
from .graphite.series import LeafRead, read_leaves
from .graphite.tags import (
    StatsOf,
    TagExpressionError,
    TagIndex,
    resolve_tagged_path,
    stats_with_last,
)
from .store.globbing import GlobError
from .store.read import InvalidTimeRangeError, StoreBusyError
from .store.store import Store, StoreError, UnknownMetricError

CONSOLIDATE_BY = "consolidateBy("
SERIES_BY_TAG = "seriesByTag("
Answer = TypeVar("Answer")


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
    tags = True  # seriesByTag and tag auto-completion come here (answered from the stored names)

    def __init__(self, storage_dir: str | Path | None = None) -> None:
        super().__init__()
        self._storage_dir = Path(storage_dir) if storage_dir is not None else None
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._tag_index: TagIndex | None = None
        self._tag_index_version: tuple[int, ...] = ()

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
            self._tag_index = None

    # -- finding ----------------------------------------------------------------

    def _find(self, pattern: str, *, leaves_only: bool) -> namespace.FoundPaths:
        try:
            with self._lock:
                if pattern.startswith(SERIES_BY_TAG):
                    return _found(self._tagged_leaves(tag_expressions(pattern)))
                if ";" in pattern:  # a tagged name: looked up exactly, as whisper's finder does
                    index, stats_of = self._tags_and_stats()
                    leaf = resolve_tagged_path(index, pattern, stats_of)
                    return _found([] if leaf is None else [leaf])
                return namespace.find(self._open(), pattern, leaves_only=leaves_only)
        except (GlobError, TagExpressionError) as e:
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

    # -- tags -------------------------------------------------------------------

    def _tags_and_stats(self) -> tuple[TagIndex, StatsOf]:
        """The tag index, brought up to date when the store's names changed (caller holds the lock).

        The name index's counters change whenever a refresh applied records or
        reloaded a compacted log, so equal counters mean the same names.
        """
        store = self._open()
        store.refresh()
        stats = store.index.stats
        version = (stats.records_replayed, stats.log_records, stats.compactions, stats.full_reloads)
        if self._tag_index is None:
            self._tag_index = TagIndex(name for name, _ in store.index.items())
        elif version != self._tag_index_version:
            self._tag_index.update(name for name, _ in store.index.items())
        self._tag_index_version = version
        return self._tag_index, stats_with_last(lambda metric: _stores_last(store, metric))

    def _tagged_leaves(self, expressions: Sequence[str]) -> list[Leaf]:
        index, stats_of = self._tags_and_stats()
        return index.find_leaves(expressions, stats_of)

    def _with_tags(self, answer: Callable[[TagIndex, StatsOf], Answer], default: Answer) -> Answer:
        """``answer(index, stats_of)`` under the lock; ``default`` when the store cannot be opened."""
        try:
            with self._lock:
                return answer(*self._tags_and_stats())
        except TagExpressionError as e:
            raise IstatPatternError(str(e)) from e
        except StoreError as e:
            _log_error(f"graphite-istat: cannot open {self.storage_dir}: {e}")
            return default

    def find_series(self, expressions: Sequence[str]) -> list[str]:
        """Paths of the series a seriesByTag query selects, sorted."""
        return self._with_tags(
            lambda index, stats_of: [leaf.path for leaf in index.find_leaves(expressions, stats_of)], []
        )

    def tagged_series(self, path: str) -> dict[str, str] | None:
        """The tags of a stored tagged series (or of one of its sub-counters); None if there is none."""

        def answer(index: TagIndex, stats_of: StatsOf) -> dict[str, str] | None:
            leaf = resolve_tagged_path(index, path, stats_of)
            if leaf is None or leaf.path != path:
                return None
            return dict(TaggedSeries.parse(leaf.path).tags)

        return self._with_tags(answer, None)

    def tag_values(self, tag: str) -> dict[str, int]:
        """Each value of ``tag`` among the stored tagged series and how many have it."""
        return self._with_tags(lambda index, stats_of: index.values(tag, stats_of), {})

    def tag_names(self) -> list[str]:
        return self._with_tags(lambda index, stats_of: index.tag_names(), [])

    def auto_complete_tags(
        self, exprs: Sequence[str], tagPrefix: str | None = None, limit: int | str | None = None,
        requestContext: dict | None = None,
    ) -> list[str]:
        limit = _limit(limit)
        return self._with_tags(
            lambda index, stats_of: index.auto_complete_tags(list(exprs), tagPrefix, limit, stats_of), []
        )

    def auto_complete_values(
        self, exprs: Sequence[str], tag: str, valuePrefix: str | None = None,
        limit: int | str | None = None, requestContext: dict | None = None,
    ) -> list[str]:
        limit = _limit(limit)
        return self._with_tags(
            lambda index, stats_of: index.auto_complete_values(list(exprs), tag, valuePrefix, limit, stats_of),
            [],
        )

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
        if requestContext is not None:
            record_rows(requestContext, {(s.path, s.start, s.step): s.values for s in read.series.values()})
        results = []
        for pattern, leaf in matched:
            series = read.series.get(leaf.path)
            if series is None:
                continue
            # RowValues, not a list: graphite-web copies it into a TimeSeries,
            # which makes the Python floats then (graphite/rows.py says why)
            results.append(
                {
                    "pathExpression": pattern,
                    "path": leaf.path,
                    "name": leaf.path,
                    "time_info": series.time_info,
                    "values": series.values,
                }
            )
        return results

    def fetch_leaf(
        self, leaf: Leaf, start_time: int, end_time: int, now: int | None, context: dict
    ) -> tuple[tuple[int, int, int], list[float | None]] | None:
        series = self._read([leaf], start_time, end_time, now, context).series.get(leaf.path)
        return None if series is None else (series.time_info, list(series.values))

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


def tag_expressions(pattern: str) -> list[str]:
    """The expressions of a ``seriesByTag('a=b', 'c=~d')`` target (parsed as graphite-web parses it)."""
    try:
        call = grammar.parseString(pattern).expression.call
    except ParseBaseException as e:
        raise IstatPatternError(f"cannot parse {pattern!r}: {e}") from e
    if call.funcname != "seriesByTag":
        raise IstatPatternError(f"not a seriesByTag call: {pattern!r}")
    return [arg.string[1:-1] for arg in call.args if arg.string]


def _found(leaves: Sequence[Leaf]) -> namespace.FoundPaths:
    return namespace.FoundPaths(leaves={leaf.path: leaf for leaf in leaves})


def _stores_last(store: Store, metric: str) -> bool:
    try:
        return store.info(metric).layout.with_last
    except UnknownMetricError:  # deleted since the index was built
        return False


def _limit(limit: int | str | None) -> int:
    """An auto-complete request's limit, else graphite-web's ``TAGDB_AUTOCOMPLETE_LIMIT``."""
    return int(limit) if limit else int(getattr(settings, "TAGDB_AUTOCOMPLETE_LIMIT", 100))


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


class IstatTagDBError(Exception):
    """A TagDB call that cannot be honoured: the tag index is the store's names, not a database."""


class IstatTagDB(BaseTagDB):
    """graphite-web's TagDB answered from the store's names: ``TAGDB = 'graphite_istat.finder.IstatTagDB'``.

    graphite-web 1.1.10 asks finders with ``tags = True`` for seriesByTag and
    auto-completion, but ``/tags``, ``/tags/<tag>`` and ``/tags/findSeries``
    only ever ask ``STORE.tagdb``; this TagDB answers them from the same
    index as the finder (the finder of ``STORAGE_FINDERS`` when there is one),
    always current, without a cache or a second database. Series enter it by
    being written; ``tagSeries`` only returns the canonical name.
    """

    def __init__(self, settings, *args, **kwargs) -> None:
        super().__init__(settings, *args, **kwargs)
        self._finder: IstatFinder | None = None

    @property
    def finder(self) -> IstatFinder:
        if self._finder is None:
            # Imported late: graphite.storage builds its STORE, and this TagDB, at import.
            from graphite.storage import STORE

            configured = [f for f in getattr(STORE, "finders", ()) if isinstance(f, IstatFinder)]
            self._finder = configured[0] if configured else IstatFinder()
        return self._finder

    def find_series(self, tags, requestContext=None) -> list[str]:
        return self._find_series(tags, requestContext)

    def _find_series(self, tags, requestContext=None) -> list[str]:
        return self.finder.find_series(list(tags))

    def get_series(self, path, requestContext=None) -> TaggedSeries | None:
        tags = self.finder.tagged_series(path)
        return None if tags is None else TaggedSeries(tags["name"], tags)

    def list_tags(self, tagFilter=None, limit=None, requestContext=None) -> list[dict]:
        selected = _filtered(self.finder.tag_names(), tagFilter)
        return [{"tag": tag} for tag in selected[: int(limit) if limit else None]]

    def get_tag(self, tag, valueFilter=None, limit=None, requestContext=None) -> dict | None:
        if tag not in self.finder.tag_names():
            return None
        return {"tag": tag, "values": self.list_values(tag, valueFilter, limit, requestContext)}

    def list_values(self, tag, valueFilter=None, limit=None, requestContext=None) -> list[dict]:
        counts = self.finder.tag_values(tag)
        selected = _filtered(list(counts), valueFilter)
        return [{"value": v, "count": counts[v]} for v in selected[: int(limit) if limit else None]]

    def auto_complete_tags(self, exprs, tagPrefix=None, limit=None, requestContext=None) -> list[str]:
        return self.finder.auto_complete_tags(exprs, tagPrefix, limit, requestContext)

    def auto_complete_values(self, exprs, tag, valuePrefix=None, limit=None, requestContext=None) -> list[str]:
        return self.finder.auto_complete_values(exprs, tag, valuePrefix, limit, requestContext)

    def tag_series(self, series, requestContext=None) -> str:
        return TaggedSeries.parse(series).path

    def del_series(self, series, requestContext=None) -> bool:
        raise IstatTagDBError(
            f"cannot untag {series!r}: a series leaves the tag index when its metric is deleted from the store"
        )


def _filtered(candidates: list[str], regex: str | None) -> list[str]:
    """``candidates`` matching a /tags filter, anchored at the start as graphite-web anchors it."""
    if not regex:
        return candidates
    try:
        pattern = re.compile(regex if regex.startswith("^") else f"^({regex})")
    except re.error as e:
        raise IstatPatternError(f"invalid filter {regex!r}: {e}") from e
    return [c for c in candidates if pattern.search(c)]
