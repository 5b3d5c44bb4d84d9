"""The level tree of the name index: Graphite's find over stored names, level by level.

Each branch (a path with children) is a number; ``children[branch]`` maps the
level name of each child to the child's branch number, or to ``LEAF`` when
the child is only a stored name with nothing below it. ``leaf_flags[branch]``
is 1 when the branch's own path is also a stored name.

Branches are numbers in a list of plain ``str -> int`` dicts, not objects
pointing at each other, for the garbage collector's sake: such dicts hold
nothing it could follow, so CPython leaves them untracked, and a full
collection visits one list instead of a few hundred thousand branch objects
(a million names made a graphite-web process spend ~0.2 s per full
collection walking the tree; now it is a few milliseconds).

Not thread-safe for mutation: the name index serialises ``add``/``remove``
against everything else.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from .globbing import GlobstarLevel, LevelMatcher, PathPattern

LEAF = -1  # a child that is only a stored name
ROOT = 0

# path -> (is a stored name, has children)
Found = dict[str, tuple[bool, bool]]


class LevelTree:
    """Stored names split at dots, for matching Graphite patterns one level at a time."""

    __slots__ = ("_free", "_last_parent", "_last_parent_path", "children", "leaf_flags")

    def __init__(self) -> None:
        self.children: list[dict[str, int]] = [{}]
        self.leaf_flags = bytearray(1)
        self._free: list[int] = []  # numbers of pruned branches, for reuse
        # Names arrive grouped by parent (a host's metrics, a compacted log),
        # so remembering the last parent skips most walks from the root.
        self._last_parent_path = ""
        self._last_parent = ROOT

    # -- changing ---------------------------------------------------------------

    def add(self, name: str) -> None:
        """Add a stored name (which must not be stored yet)."""
        parent_path, _, leaf = name.rpartition(".")
        if parent_path == self._last_parent_path and self._last_parent >= 0:
            node = self._last_parent
        else:
            node = self._branch_creating(parent_path)
            self._last_parent_path, self._last_parent = parent_path, node
        children = self.children[node]
        child = children.get(leaf)
        if child is None:
            children[sys.intern(leaf)] = LEAF
        elif child != LEAF:
            self.leaf_flags[child] = 1

    def remove(self, name: str) -> None:
        """Remove a stored name (which must be stored), pruning branches left empty."""
        self._last_parent = -1  # the cached branch may be pruned below
        *parents, leaf = name.split(".")
        trail: list[tuple[int, str]] = []
        node = ROOT
        for level in parents:
            trail.append((node, level))
            node = self.children[node][level]
        child = self.children[node][leaf]
        if child == LEAF:
            del self.children[node][leaf]
        else:
            self.leaf_flags[child] = 0
        # Drop branches left without children so has_children stays exact.
        while trail and not self.children[node]:
            parent, level = trail.pop()
            if self.leaf_flags[node]:
                self.children[parent][level] = LEAF
                self._release(node)
                break
            del self.children[parent][level]
            self._release(node)
            node = parent

    def _branch_creating(self, path: str) -> int:
        """The branch at ``path`` ("" is the root), created with its ancestors if missing."""
        node = ROOT
        if not path:
            return node
        for level in path.split("."):
            children = self.children[node]
            child = children.get(level)
            if child is None or child == LEAF:
                # A leaf-only child becomes a branch that is also a leaf.
                new_branch = self._new_branch(is_leaf=child == LEAF)
                children[sys.intern(level)] = new_branch
                child = new_branch
            node = child
        return node

    def _new_branch(self, *, is_leaf: bool) -> int:
        if self._free:
            node = self._free.pop()
            self.children[node] = {}
            self.leaf_flags[node] = is_leaf
            return node
        self.children.append({})
        self.leaf_flags.append(is_leaf)
        return len(self.children) - 1

    def _release(self, node: int) -> None:
        self.children[node] = {}
        self.leaf_flags[node] = 0
        self._free.append(node)

    # -- finding ----------------------------------------------------------------

    def find(self, pattern: PathPattern, *, leaves_only: bool) -> Found:
        """Paths of as many levels as the pattern that it matches (unsorted)."""
        # (path prefix, branch) pairs; every prefix is followed by ``tail``, the
        # literal levels walked since, so a run of plain levels (``.mem.free``)
        # builds no string per match until the end. Paths are unique (``**``
        # dedupes into a dict).
        frontier: list[tuple[str, int]] = [("", ROOT)]
        tail = ""
        all_children = self.children
        *inner_levels, last_level = pattern.levels
        for level in inner_levels:
            if isinstance(level, LevelMatcher) and level.literal is not None:
                literal = level.literal
                following = []
                for dotted, node in frontier:
                    child = all_children[node].get(literal, LEAF)
                    if child != LEAF:
                        following.append((dotted, child))
                tail += f"{literal}."
            elif isinstance(level, GlobstarLevel):
                below: dict[str, int] = {}
                for dotted, node in frontier:
                    self._collect_branches(f"{dotted}{tail}"[:-1], node, below)
                following = [(f"{path}." if path else "", node) for path, node in below.items()]
                if level.alternative is not None:
                    seen = set(below)
                    following += [
                        (dotted, node) for dotted, node in self._match_branches(frontier, tail, level.alternative)
                        if dotted[:-1] not in seen
                    ]
                tail = ""
            else:
                following = self._match_branches(frontier, tail, level)
                tail = ""
            if not following:
                return {}
            frontier = following
        found: Found = {}
        if isinstance(last_level, GlobstarLevel):
            # A terminal ``**`` is ``**.*``: everything strictly below the frontier.
            for dotted, node in frontier:
                self._collect_descendants(f"{dotted}{tail}"[:-1], node, found, leaves_only=leaves_only)
            if last_level.alternative is not None:
                self._match_last_level(frontier, tail, last_level.alternative, found, leaves_only=leaves_only)
        else:
            self._match_last_level(frontier, tail, last_level, found, leaves_only=leaves_only)
        return found

    def _match_branches(
        self, frontier: list[tuple[str, int]], tail: str, level: LevelMatcher
    ) -> list[tuple[str, int]]:
        """The child branches of the frontier whose level name matches ``level``, with whole prefixes."""
        literals = level.literals
        all_children = self.children
        following = []
        append = following.append
        for dotted, node in frontier:
            children = all_children[node]
            prefix = f"{dotted}{tail}"
            if literals is not None:
                for literal in literals:
                    child = children.get(literal, LEAF)
                    if child != LEAF:
                        append((f"{prefix}{literal}.", child))
            else:
                for name, child in level.filter_items(children):
                    if child != LEAF:
                        append((f"{prefix}{name}.", child))
        return following

    def _match_last_level(
        self, frontier: list[tuple[str, int]], tail: str, level: LevelMatcher, found: Found, *, leaves_only: bool
    ) -> None:
        literal, literals = level.literal, level.literals
        all_children, leaf_flags = self.children, self.leaf_flags
        if literal is not None:
            end = f"{tail}{literal}"
            for dotted, node in frontier:
                child = all_children[node].get(literal)
                if child is None:
                    continue
                if child == LEAF:
                    found[dotted + end] = (True, False)
                elif leaf_flags[child] or not leaves_only:
                    found[dotted + end] = (bool(leaf_flags[child]), True)
            return
        for dotted, node in frontier:
            children = all_children[node]
            prefix = f"{dotted}{tail}"
            items: Iterable[tuple[str, int]] = (
                [(n, children[n]) for n in literals if n in children]
                if literals is not None
                else level.filter_items(children)
            )
            for name, child in items:
                if child == LEAF:
                    found[prefix + name] = (True, False)
                elif leaf_flags[child] or not leaves_only:
                    found[prefix + name] = (bool(leaf_flags[child]), True)

    def _collect_branches(self, prefix: str, node: int, into: dict[str, int]) -> None:
        """``node`` and every branch below it, by path (``**`` matching zero or more levels)."""
        into[prefix] = node
        stack = [(prefix, node)]
        while stack:
            path, branch = stack.pop()
            for name, child in self.children[branch].items():
                if child != LEAF:
                    child_path = f"{path}.{name}" if path else name
                    into[child_path] = child
                    stack.append((child_path, child))

    def _collect_descendants(self, prefix: str, node: int, found: Found, *, leaves_only: bool) -> None:
        """Every path strictly below ``node`` (a terminal ``**``)."""
        stack = [(prefix, node)]
        while stack:
            path, branch = stack.pop()
            for name, child in self.children[branch].items():
                child_path = f"{path}.{name}" if path else name
                if child == LEAF:
                    found[child_path] = (True, False)
                else:
                    if self.leaf_flags[child] or not leaves_only:
                        found[child_path] = (bool(self.leaf_flags[child]), True)
                    stack.append((child_path, child))
