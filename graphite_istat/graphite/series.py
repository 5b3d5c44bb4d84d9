"""Reading many Graphite leaves (metrics and sub-counters) with one bulk store read.

Every metric behind the leaves is read once, whatever number of its
sub-counters are asked for; each shard file's series are consolidated and
derived as whole arrays; each leaf's row is handed over as ``RowValues``,
which makes the Python floats (``None`` for an empty bucket) graphite-web's
functions expect only when graphite-web copies it into a ``TimeSeries``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..store.stats import NEEDS
from ..store.store import DEFAULT_VALUE, SeriesSet, Store
from .consolidation import consolidate
from .namespace import Leaf
from .rows import RowValues


@dataclass(frozen=True, slots=True)
class LeafSeries:
    """One leaf's values: ``values[i]`` is the bucket starting at ``start + i * step``."""

    path: str
    start: int
    end: int
    step: int
    values: RowValues

    @property
    def time_info(self) -> tuple[int, int, int]:
        return (self.start, self.end, self.step)


@dataclass(slots=True)
class LeafRead:
    """Series by leaf path; ``errors`` by metric name for metrics whose file could not be read.

    A leaf in neither (its metric deleted meanwhile, or the range outside
    its retention) has no data, as whisper answers for such a range.
    """

    series: dict[str, LeafSeries] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class _DerivedSet:
    """One consolidated series set and the stats derived from it so far (whole arrays)."""

    __slots__ = ("_derived", "series_set")

    def __init__(self, series_set: SeriesSet) -> None:
        self.series_set = series_set
        self._derived: dict[str | None, np.ndarray] = {}

    def values(self, stat: str | None) -> np.ndarray:
        derived = self._derived.get(stat)
        if derived is None:
            if stat is None:
                derived = self.series_set.default_values()
            else:
                derived = self.series_set.stat(stat)
            self._derived[stat] = derived
        return derived


def read_leaves(
    store: Store,
    leaves: Iterable[Leaf],
    from_t: int,
    until_t: int,
    now: int | None = None,
    *,
    max_points: int | None = None,
) -> LeafRead:
    """The values of ``leaves`` over [from_t, until_t], at most ``max_points`` each when given."""
    leaves = list(leaves)
    metrics = list(dict.fromkeys(leaf.metric for leaf in leaves))
    result = LeafRead()
    if not metrics:
        return result
    stats = {leaf.stat for leaf in leaves}
    if stats == {None} and not max_points:
        # plain paths, no consolidation: the values without their counters
        fetched = store.fetch_values(metrics, from_t, until_t, now)
    else:
        fields = {counter for stat in stats if stat is not None for counter in NEEDS[stat]}
        if None in stats:
            fields.add(DEFAULT_VALUE)
        fetched = store.fetch(metrics, from_t, until_t, now, fields=tuple(sorted(fields)))
    result.errors.update(fetched.errors)
    located: dict[str, tuple[_DerivedSet, int]] = {}
    for series_set in fetched.sets:
        derived = _DerivedSet(consolidate(series_set, max_points))
        for row, name in enumerate(series_set.names):
            located[name] = (derived, row)
    for leaf in leaves:
        where = located.get(leaf.metric)
        if where is None:
            continue
        derived, row = where
        grid = derived.series_set.grid
        values = derived.values(leaf.stat)[row]
        result.series[leaf.path] = LeafSeries(leaf.path, grid.start, grid.end, grid.step, RowValues(values))
    return result
