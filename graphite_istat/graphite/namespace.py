"""Graphite paths over the store: stored metrics, and their sub-counters as leaves below them.

A stored metric ``a.b.c`` is a leaf whose value is its aggregation method. It
is also a branch: below it are the leaves ``a.b.c.avg``, ``.count``, ``.sum``,
``.min``, ``.max``, ``.stddev`` (and ``.last`` when the metric stores it),
views of its sub-counters. A stored metric of the same name as a sub-counter
(``a.b.c.max`` written by a client) wins: it is served instead.

``find`` answers a pattern with the union of two cheap index walks:

* the pattern itself against the stored names (``store.find``) gives the
  stored leaves and branches;
* only when the pattern's last level can match a sub-counter name, its parent
  levels against the stored names (``store.match``) give the metrics whose
  sub-counters the last level selects. ``servers.*.cpu`` never walks twice.

``**`` keeps graphite-web's meaning over the extra level: a trailing ``**``
(one or more levels) reaches the sub-counters of every metric below, and
``a.**.max`` (zero or more levels in the middle) the ``max`` of ``a`` itself
and of every metric below it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from ..store.globbing import (
    GLOBSTAR,
    GlobstarLevel,
    LevelMatcher,
    PatternLevel,
    compile_level,
    compile_pattern,
)
from ..store.store import Store, UnknownMetricError

SUB_COUNTER_LEAVES: tuple[str, ...] = ("avg", "count", "sum", "min", "max", "stddev")
"""The sub-counter leaves every metric has; ``last`` is added where it is stored."""

LAST = "last"
ANY_LEVEL = compile_level("*")


class Leaf(NamedTuple):
    """A readable Graphite path: ``stat`` None is the metric's default value."""

    path: str
    metric: str
    stat: str | None = None


@dataclass(slots=True)
class FoundPaths:
    """What a pattern matches: leaves (stored and sub-counter) and branches, by path."""

    leaves: dict[str, Leaf] = field(default_factory=dict)
    branches: list[str] = field(default_factory=list)


def find(store: Store, pattern: str, *, leaves_only: bool = False) -> FoundPaths:
    """Leaves and branches matching a Graphite pattern; raises ``GlobError`` when malformed."""
    compiled = compile_pattern(pattern)
    raw_levels = pattern.replace("\\", "").split(".")
    found = FoundPaths()
    leaves, branches = found.leaves, found.branches
    for path, (is_leaf, has_children) in store.find_paths(pattern).items():
        if is_leaf:
            leaves[path] = Leaf(path, path)
        # A stored leaf is also the branch holding its sub-counters.
        if not leaves_only and (has_children or is_leaf):
            branches.append(path)
    for parent, last_level in _sub_counter_queries(raw_levels, list(compiled.levels)):
        stats = [s for s in (*SUB_COUNTER_LEAVES, LAST) if last_level.match(s)]
        if not stats:
            continue
        wants_last = stats[-1] == LAST
        plain = [s for s in stats if s != LAST]
        for metric in store.match(parent):
            for stat in plain:
                _add_sub_counter(found, metric, stat)
            if wants_last and _stores_last(store, metric):
                _add_sub_counter(found, metric, LAST)
    return found


def _add_sub_counter(found: FoundPaths, metric: str, stat: str) -> None:
    path = f"{metric}.{stat}"
    if path not in found.leaves:  # a stored metric of that name wins
        found.leaves[path] = Leaf(path, metric, stat)


def _stores_last(store: Store, metric: str) -> bool:
    try:
        return store.info(metric).layout.with_last
    except UnknownMetricError:  # deleted since the match
        return False


def _sub_counter_queries(
    raw_levels: list[str], levels: list[PatternLevel]
) -> list[tuple[str, LevelMatcher]]:
    """(pattern of metrics, matcher of sub-counter names) pairs covering the pattern."""
    *raw_parent, _ = raw_levels
    *parent, last = levels
    if not isinstance(last, GlobstarLevel):
        return [(p, last) for p in _parent_patterns(raw_parent, parent)]
    # A trailing ``**`` is ``**.*`` with the inner ``**`` matching zero or more levels.
    queries = [(p, ANY_LEVEL) for p in _parent_patterns([*raw_parent, "**"], [*parent, GLOBSTAR])]
    if last.alternative is not None:
        queries += [(p, last.alternative) for p in _parent_patterns(raw_parent, parent)]
    return queries


def _parent_patterns(raw_levels: list[str], levels: list[PatternLevel]) -> list[str]:
    """Patterns that, as whole patterns, match what these levels match as a prefix.

    The difference is a trailing ``**``: in the middle of a pattern it matches
    zero or more levels, at its end one or more, so the zero case is added.
    """
    if not levels:
        return []
    patterns = [".".join(raw_levels)]
    if isinstance(levels[-1], GlobstarLevel):
        patterns += _parent_patterns(raw_levels[:-1], levels[:-1])
    return patterns
