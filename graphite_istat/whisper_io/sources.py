"""Where history comes from for merge, fill and diff: a storage directory, a whisper tree or one .wsp.

Each source answers the same four questions about its metrics: which names
(matching a Graphite glob), the shape of one (archives, aggregation method,
xFilesFactor), the cells of one archive (``Cells``; for .wsp files those of
``estimate.history_cells``), and the value per bucket whisper-fetch or
graphite-istat fetch would print for one archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..store.globbing import GlobstarLevel, LevelMatcher, PatternLevel, compile_pattern
from ..store.store import STORE_META, SUB_COUNTERS, Store
from .cells import Cells, read_archive
from .estimate import history_cells
from .paths import SUFFIX, name_for_path, walk_whisper_tree
from .wsp_file import WspContents, read_header, read_wsp

ALL = "**"


class SourceError(Exception):
    """A path that is neither a storage directory, a whisper tree nor a .wsp file."""


@dataclass(frozen=True, slots=True)
class MetricShape:
    retentions: list[tuple[int, int]]
    method: str
    x_files_factor: float


class HistorySource(Protocol):
    label: str

    def names(self, pattern: str = ALL) -> list[str]: ...

    def shape(self, name: str) -> MetricShape: ...

    def cells(self, name: str, archive: int, now: int) -> Cells: ...

    def values(self, name: str, archive: int, now: int) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


class StoreSource:
    """The metrics of a storage directory (opened read-only unless a store is handed in)."""

    def __init__(self, store: Store, label: str, *, owned: bool) -> None:
        self.store = store
        self.label = label
        self._owned = owned

    @classmethod
    def open(cls, directory: Path) -> StoreSource:
        return cls(Store.open(directory, writable=False), str(directory), owned=True)

    def names(self, pattern: str = ALL) -> list[str]:
        return self.store.match(pattern)

    def shape(self, name: str) -> MetricShape:
        info = self.store.info(name)
        return MetricShape(
            [(a.step, a.rows) for a in info.layout.archives], info.aggregation_method, info.x_files_factor
        )

    def cells(self, name: str, archive: int, now: int) -> Cells:
        return read_archive(self.store, name, archive, now)

    def values(self, name: str, archive: int, now: int) -> tuple[np.ndarray, np.ndarray]:
        spec = self.store.info(name).layout.archives[archive]
        fields = (*SUB_COUNTERS, "last")
        result = self.store.fetch([name], now - spec.seconds, now, now, fields=fields, archive=archive)
        for _, grid, series_set, row in result.series():
            values = series_set.default_values()[row]
            keep = ~np.isnan(values)
            return grid.buckets()[keep], values[keep]
        return np.zeros(0, dtype=np.int64), np.zeros(0)

    def close(self) -> None:
        if self._owned:
            self.store.close()


class WhisperSource:
    """The .wsp files of a whisper tree, or one .wsp file under a given name."""

    def __init__(self, files: dict[str, Path], label: str) -> None:
        self.files = files
        self.label = label
        self._cache: tuple[str, int, WspContents, list[Cells]] | None = None

    @classmethod
    def tree(cls, root: Path) -> WhisperSource:
        files = {}
        for relative in walk_whisper_tree(root):
            try:
                files[name_for_path(relative)] = root / relative
            except ValueError:
                continue  # not a usable metric name; import-whisper reports these
        return cls(files, str(root))

    @classmethod
    def single(cls, path: Path, name: str) -> WhisperSource:
        return cls({name: path}, str(path))

    def names(self, pattern: str = ALL) -> list[str]:
        levels = compile_pattern(pattern).levels
        return sorted(n for n in self.files if _name_matches(levels, n.split(".")))

    def _read(self, name: str, now: int) -> tuple[WspContents, list[Cells]]:
        if self._cache is None or self._cache[:2] != (name, now):
            contents = read_wsp(self.files[name], now)
            self._cache = (name, now, contents, history_cells(contents, now))
        return self._cache[2], self._cache[3]

    def shape(self, name: str) -> MetricShape:
        header = read_header(self.files[name])
        return MetricShape(header.retentions, header.method, header.x_files_factor)

    def cells(self, name: str, archive: int, now: int) -> Cells:
        return self._read(name, now)[1][archive]

    def values(self, name: str, archive: int, now: int) -> tuple[np.ndarray, np.ndarray]:
        data = self._read(name, now)[0].archives[archive]
        return data.buckets, data.values

    def close(self) -> None:
        self._cache = None


def _name_matches(levels: tuple[PatternLevel, ...], parts: list[str]) -> bool:
    if not levels:
        return not parts
    level, rest = levels[0], levels[1:]
    if isinstance(level, GlobstarLevel):
        if level.alternative is not None and parts and level.alternative.match(parts[0]):
            if _name_matches(rest, parts[1:]):
                return True
        # ``**`` as the last level matches one or more levels, else zero or more.
        first = 1 if not rest else 0
        return any(_name_matches(rest, parts[k:]) for k in range(first, len(parts) + 1))
    assert isinstance(level, LevelMatcher)
    return bool(parts) and level.match(parts[0]) and _name_matches(rest, parts[1:])


def open_source(path: Path, metric: str | None = None) -> HistorySource:
    """A storage directory (has store.json), a .wsp file (named ``metric`` or its stem) or a whisper tree."""
    if path.is_dir() and (path / STORE_META).is_file():
        return StoreSource.open(path)
    if path.is_file() and path.name.endswith(SUFFIX):
        return WhisperSource.single(path, metric or path.name[: -len(SUFFIX)])
    if path.is_dir():
        return WhisperSource.tree(path)
    raise SourceError(f"{path}: not a storage directory, a whisper directory or a .wsp file")
