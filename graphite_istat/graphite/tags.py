"""Graphite 1.1 tags answered from the store's names: parsing, the tag index, tag expressions.

Carbon stores a tagged series under its canonical name,
``cpu.user;dc=ams;host=web1`` (tags sorted, see
``graphite_istat.protocol.metric_names``), so the store's name index already
holds every tag of every tagged series. ``TagIndex`` is built from those names
(names without ``;`` are not tagged and are left out, as carbon's
``SKIP_TAGS_FOR_NONTAGGED`` default leaves them out of graphite-web's TagDB)
and answers graphite-web's tag questions without a second database.

Tag expressions follow graphite-web 1.1 (``graphite.tags.localdatabase``):

* ``tag=spec`` the value equals spec, ``tag!=spec`` it does not;
* ``tag=~regex`` / ``tag!=~regex`` the value matches / does not match the
  regular expression, anchored at the start of the value;
* a series without the tag has the empty value there, so an expression that
  the empty value satisfies also selects series without the tag;
* at least one expression must need a non-empty value;
* ``name`` is the tag holding the metric part (``name=cpu.user``).

Sub-counters: a tagged series has the same sub-counter views as any metric.
They are reached with the virtual tag ``istat.stat`` (``STAT_TAG``): each
stored series ``S`` stands for ``S`` (its storage-aggregation value, no
``istat.stat`` tag) and, once a query has an expression on ``istat.stat``,
for ``S;istat.stat=avg``, ``...=max`` and the rest, matched by the same rules.
So ``seriesByTag('name=cpu.user', 'istat.stat=max')`` is the max of every
``cpu.user``, and a query without ``istat.stat`` returns the stored series
only. The virtual names are canonical tagged names (the tag sorted in), so
graphite-web's ``aliasByTags`` and ``groupByTags`` see ``istat.stat`` as a tag.

Nothing here imports Django or graphite-web; ``graphite_istat.finder`` adapts it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .namespace import LAST, SUB_COUNTER_LEAVES, Leaf

NAME_TAG = "name"
STAT_TAG = "istat.stat"
"""The virtual tag selecting a sub-counter of a tagged series."""

OPERATORS = ("=", "!=", "=~", "!=~")
_EXPRESSION = re.compile(r"^([^;!=]+)(!?=~?)([^;]*)$")  # graphite-web's parse_tagspec

StatsOf = Callable[[str], Sequence[str]]
"""The sub-counter views a stored series has (``SUB_COUNTER_LEAVES``, plus ``last`` where stored)."""


class TagExpressionError(ValueError):
    """A tag expression graphite cannot evaluate (malformed, a bad regex, or nothing required)."""


@dataclass(frozen=True, slots=True)
class TagExpression:
    """One ``tag<operator>spec`` condition of a seriesByTag query."""

    tag: str
    operator: str
    spec: str
    pattern: re.Pattern[str] | None = None  # the anchored regex of =~ and !=~

    @classmethod
    def parse(cls, text: str) -> TagExpression:
        match = _EXPRESSION.match(text)
        if match is None:
            raise TagExpressionError(f"invalid tag expression {text!r}")
        tag, operator, spec = match.groups()
        pattern = None
        if operator.endswith("~"):
            anchored = spec if spec.startswith("^") else f"^({spec})"
            try:
                pattern = re.compile(anchored)
            except re.error as e:
                raise TagExpressionError(f"invalid regular expression in {text!r}: {e}") from e
        return cls(tag, operator, spec, pattern)

    def matches(self, value: str) -> bool:
        """Whether a series whose value of this tag is ``value`` ('' when absent) satisfies it."""
        if self.operator == "=":
            return value == self.spec
        if self.operator == "!=":
            return value != self.spec
        assert self.pattern is not None
        found = self.pattern.search(value) is not None
        return found if self.operator == "=~" else not found

    @property
    def matches_empty(self) -> bool:
        """Whether series without the tag satisfy it (then it cannot select series on its own)."""
        return self.matches("")


def parse_expressions(texts: Iterable[str]) -> list[TagExpression]:
    """Parse a query's expressions; raise ``TagExpressionError`` unless one of them needs a value."""
    expressions = [TagExpression.parse(text) for text in texts]
    if not any(not e.matches_empty for e in expressions):
        raise TagExpressionError(
            "at least one tag expression must not match the empty value: "
            + ", ".join(repr(f"{e.tag}{e.operator}{e.spec}") for e in expressions)
        )
    return expressions


def parse_tagged_name(name: str) -> dict[str, str] | None:
    """The tags of a canonical tagged name (``name`` included); None unless it is one.

    Only the carbon form ``metric;tag=value;...`` is stored (receivers
    normalise OpenMetrics names to it), so only that form is read here.
    """
    metric, *segments = name.split(";")
    if not segments or not metric:
        return None
    tags: dict[str, str] = {}
    for segment in segments:
        tag, sep, value = segment.partition("=")
        if not sep or not tag or not value or any(c in tag for c in ";!^=") or value.startswith("~"):
            return None
        tags[tag] = value
    tags[NAME_TAG] = metric.lstrip("~") or metric
    return tags


def format_tagged_name(tags: Mapping[str, str]) -> str:
    """The canonical name of a tag set: the ``name`` value, then ``;tag=value`` sorted."""
    return tags[NAME_TAG] + "".join(sorted(f";{t}={v}" for t, v in tags.items() if t != NAME_TAG))


def sub_counter_name(metric: str, stat: str) -> str:
    """The virtual name of a stored tagged series' sub-counter: ``STAT_TAG`` sorted in."""
    tags = parse_tagged_name(metric)
    if tags is None:
        raise ValueError(f"{metric!r} is not a tagged name")
    tags[STAT_TAG] = stat
    return format_tagged_name(tags)


def default_stats(metric: str) -> Sequence[str]:
    """The sub-counter views every metric has (``last`` needs the store to tell)."""
    return SUB_COUNTER_LEAVES


class TagIndex:
    """Every tagged name of a store, by tag and value.

    Built from the store's names, then kept equal to them with ``update``
    (which parses only the names that changed). Not thread-safe: callers
    serialise ``update`` with every other call.
    """

    __slots__ = ("_by_tag", "_tags", "_unparsable")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._tags: dict[str, dict[str, str]] = {}
        self._by_tag: dict[str, dict[str, set[str]]] = {}
        self._unparsable: set[str] = set()
        self.update(names)

    @property
    def unparsable(self) -> int:
        """Stored names with ``;`` that are not canonical tagged names (left out of the index)."""
        return len(self._unparsable)

    def update(self, names: Iterable[str]) -> None:
        """Make the index hold exactly the tagged names among ``names``."""
        current = {name for name in names if ";" in name}
        for name in self._tags.keys() - current:
            self._remove(name)
        self._unparsable &= current
        for name in current - self._tags.keys() - self._unparsable:
            self._add(name)

    def _add(self, name: str) -> None:
        tags = parse_tagged_name(name)
        if tags is None:
            self._unparsable.add(name)
            return
        self._tags[name] = tags
        for tag, value in tags.items():
            self._by_tag.setdefault(tag, {}).setdefault(value, set()).add(name)

    def _remove(self, name: str) -> None:
        for tag, value in self._tags.pop(name).items():
            values = self._by_tag[tag]
            values[value].discard(name)
            if not values[value]:
                del values[value]
                if not values:
                    del self._by_tag[tag]

    def __len__(self) -> int:
        return len(self._tags)

    def __contains__(self, name: object) -> bool:
        return name in self._tags

    def tags_of(self, name: str) -> Mapping[str, str] | None:
        return self._tags.get(name)

    # -- series ---------------------------------------------------------------

    def find(self, expressions: Sequence[TagExpression]) -> list[str]:
        """Stored names satisfying every expression, sorted (every tagged name when none needs a value)."""
        required = [e for e in expressions if not e.matches_empty]
        filters = [e for e in expressions if e.matches_empty]
        if required:
            selections = sorted((self._selected(e) for e in required), key=len)
            found = set(selections[0])  # a copy: a selection may be the index's own set
            for selection in selections[1:]:
                found.intersection_update(selection)
                if not found:
                    return []
        else:
            found = set(self._tags)
        if filters:
            found = {
                name for name in found
                if all(e.matches(self._tags[name].get(e.tag, "")) for e in filters)
            }
        return sorted(found)

    def _selected(self, expression: TagExpression) -> set[str]:
        """Names having ``expression.tag`` with a value satisfying it."""
        values = self._by_tag.get(expression.tag)
        if not values:
            return set()
        if expression.operator == "=":
            return values.get(expression.spec, set())
        selected: set[str] = set()
        for value, names in values.items():
            if expression.matches(value):
                selected.update(names)
        return selected

    def find_leaves(self, texts: Iterable[str], stats_of: StatsOf = default_stats) -> list[Leaf]:
        """The leaves a seriesByTag query selects: stored series and, with ``STAT_TAG``, their sub-counters."""
        expressions = parse_expressions(texts)
        on_stat = [e for e in expressions if e.tag == STAT_TAG]
        metrics = self.find([e for e in expressions if e.tag != STAT_TAG])
        if not on_stat:
            return [Leaf(metric, metric) for metric in metrics]
        leaves = []
        for metric in metrics:
            if all(e.matches("") for e in on_stat):
                leaves.append(Leaf(metric, metric))
            for stat in stats_of(metric):
                if all(e.matches(stat) for e in on_stat):
                    leaves.append(Leaf(sub_counter_name(metric, stat), metric, stat))
        return sorted(leaves, key=lambda leaf: leaf.path)

    # -- tags and values ------------------------------------------------------

    def tag_names(self) -> list[str]:
        """Every tag of the stored series, with ``STAT_TAG`` when there is any, sorted."""
        names = set(self._by_tag)
        if self._tags:
            names.add(STAT_TAG)
        return sorted(names)

    def values(self, tag: str, stats_of: StatsOf = default_stats) -> dict[str, int]:
        """Each value of ``tag`` and how many stored series have it, in value order."""
        if tag == STAT_TAG:
            counts: dict[str, int] = {}
            for metric in self._tags:
                for stat in stats_of(metric):
                    counts[stat] = counts.get(stat, 0) + 1
            return dict(sorted(counts.items()))
        return {value: len(names) for value, names in sorted(self._by_tag.get(tag, {}).items())}

    def auto_complete_tags(
        self, texts: Sequence[str], prefix: str | None, limit: int, stats_of: StatsOf = default_stats
    ) -> list[str]:
        """Tags to offer next: those of the series ``texts`` select, other than the ones queried."""
        if not texts:
            candidates = self.tag_names()
        else:
            queried = {TagExpression.parse(text).tag for text in texts}
            found: set[str] = set()
            for leaf in self.find_leaves(texts, stats_of):
                found.update(self._tags[leaf.metric])
                found.add(STAT_TAG)
            candidates = sorted(found - queried)
        return [tag for tag in candidates if not prefix or tag.startswith(prefix)][:limit]

    def auto_complete_values(
        self,
        texts: Sequence[str],
        tag: str,
        prefix: str | None,
        limit: int,
        stats_of: StatsOf = default_stats,
    ) -> list[str]:
        """Values of ``tag`` to offer among the series ``texts`` select (all series when none)."""
        if not texts:
            candidates: Iterable[str] = self.values(tag, stats_of)
        elif tag == STAT_TAG:
            found = {stat for leaf in self.find_leaves(texts, stats_of) for stat in stats_of(leaf.metric)}
            candidates = sorted(found)
        else:
            leaves = self.find_leaves([*texts, f"{tag}!="], stats_of)
            candidates = sorted({self._tags[leaf.metric][tag] for leaf in leaves})
        return [value for value in candidates if not prefix or value.startswith(prefix)][:limit]


def resolve_tagged_path(index: TagIndex, path: str, stats_of: StatsOf = default_stats) -> Leaf | None:
    """The leaf a plain target naming a tagged series refers to, if any.

    Accepted: the stored name itself, the same tags in another order, the
    virtual sub-counter name (``...;istat.stat=max``) and the stored name with
    a sub-counter suffix (``cpu.user;host=web1.max``, the form functions that
    append a sub-counter to a series name produce).
    """
    if path in index:
        return Leaf(path, path)
    tags = parse_tagged_name(path)
    if tags is not None:
        stat = tags.pop(STAT_TAG, None)
        metric = format_tagged_name(tags)
        if metric in index:
            if stat is None:
                return Leaf(metric, metric)
            if stat in stats_of(metric):
                return Leaf(sub_counter_name(metric, stat), metric, stat)
    metric, dot, stat = path.rpartition(".")
    if dot and metric in index and stat in stats_of(metric):
        return Leaf(path, metric, stat)
    return None


def stats_with_last(stores_last: Callable[[str], bool]) -> StatsOf:
    """A ``StatsOf`` adding ``last`` for the metrics ``stores_last`` says keep it."""

    def stats_of(metric: str) -> Sequence[str]:
        return (*SUB_COUNTER_LEAVES, LAST) if stores_last(metric) else SUB_COUNTER_LEAVES

    return stats_of
