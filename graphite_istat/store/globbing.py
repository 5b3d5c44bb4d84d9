"""Graphite path globs, compiled once and matched one path level at a time.

A Graphite path is a sequence of dot-separated levels; a pattern is split on
dots the same way and each level is matched against the names found at that
depth, as graphite-web's ``StandardFinder`` does when it walks whisper's
directories. This module owns the pattern language and nothing else; walking
the name tree is ``names.NameIndex``'s job.

The language, with the same results as graphite-web 1.1.10 for valid patterns:

* Backslashes are removed from the whole pattern before anything else
  (graphite-web does ``pattern.replace('\\\\', '')``), so they escape nothing.
* Braces are expanded first, per level: ``{a,b}`` gives ``a`` and ``b``,
  groups nest (``{a,b{c,d}}`` gives ``a``, ``bc``, ``bd``), may be empty
  (``x{}`` is ``x``, ``{,y}`` gives the empty string and ``y``) and may contain
  other globs (``{web*,db[12]}``). Each alternative is then an fnmatch pattern.
  As in graphite-web, brackets do not protect braces (they are expanded over
  the raw text) and a comma outside braces is an ordinary character.
* ``*`` matches any run of characters within the level, ``?`` one character.
* ``[a-z]`` matches one character of the class and ``[!a-z]`` one character
  outside it. ``[^abc]`` is *not* a negation: like Python's fnmatch (which
  graphite-web uses) it matches ``^``, ``a``, ``b`` or ``c``. A ``]`` right
  after ``[`` or ``[!`` belongs to the class; a ``]`` outside a class is an
  ordinary character.
* ``**`` as a whole level (or as one whole brace alternative, ``{**,x}``)
  crosses levels, the way graphite-web 1.1.10's ``StandardFinder._find_paths``
  does it with ``os.walk``: when more levels follow, ``**`` matches **zero or
  more** branch levels (``a.**.b`` matches ``a.b``, ``a.x.b``, ``a.x.y.b``);
  when it is the last level it is rewritten to ``**.*`` and so matches **one or
  more** levels (``a.**`` matches every node strictly below ``a``). ``**``
  anywhere else (``a**b``) is just two ``*``.

Where this module differs from graphite-web, on purpose:

* An unbalanced ``{``/``}`` or a ``[`` without its closing ``]`` raises
  ``GlobError``; graphite-web silently treats such characters literally. A
  level whose braces would expand to more than ``MAX_ALTERNATIVES`` strings is
  refused too instead of being expanded without bound.
* In graphite-web a terminal ``{**,x}`` makes the *later* alternatives act as
  if another ``*`` level followed (a side effect of reassigning its loop
  variable, dependent on set ordering); here every alternative keeps its own
  meaning and the results are the union.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

MAX_ALTERNATIVES = 10_000
"""The most strings one level's braces may expand to."""

GLOB_CHARACTERS = frozenset("*?[")
"""Characters that make an fnmatch pattern something other than a literal."""

_LITERAL_RUN = re.compile(r"[^{},]+")


V = TypeVar("V")


class GlobError(ValueError):
    """A pattern that cannot be compiled (unbalanced braces or brackets, too many alternatives)."""


class LevelMatcher:
    """Matches the names of one path level against one level of a pattern.

    ``literal`` is set when the level is a single plain string, so a caller can
    look it up in a dict instead of scanning; ``literals`` is set when every
    brace alternative is plain (``{host1,host2}``), for the same reason.
    """

    __slots__ = ("_literal_set", "_matches_everything", "_regex_match", "literal", "literals", "source")

    def __init__(self, source: str, alternatives: Iterable[str]) -> None:
        variants = tuple(dict.fromkeys(alternatives))
        self.source = source
        self.literals: tuple[str, ...] | None = None
        self.literal: str | None = None
        self._literal_set: frozenset[str] = frozenset()
        self._regex_match = None
        # a bare ``*`` alternative matches every level name (none is empty or holds a dot)
        self._matches_everything = "*" in variants
        if all(GLOB_CHARACTERS.isdisjoint(v) for v in variants):
            self.literals = variants
            self.literal = variants[0] if len(variants) == 1 else None
            self._literal_set = frozenset(variants)
        else:
            regex = "|".join(f"(?:{fnmatch.translate(v)})" for v in variants)
            self._regex_match = re.compile(regex).match

    def match(self, name: str) -> bool:
        """True when ``name`` (one level, no dots) matches this level of the pattern."""
        if self._matches_everything:
            return True
        if self._regex_match is None:
            return name in self._literal_set
        return self._regex_match(name) is not None

    def filter(self, names: Iterable[str]) -> list[str]:
        """The names that match, in the order given."""
        if self._matches_everything:
            return list(names)
        regex_match = self._regex_match
        if regex_match is None:
            wanted = self._literal_set
            return [n for n in names if n in wanted]
        return [n for n in names if regex_match(n) is not None]

    def filter_items(self, children: Mapping[str, V]) -> Iterable[tuple[str, V]]:
        """The ``(name, value)`` pairs of ``children`` whose name matches, in the mapping's order."""
        if self._matches_everything:
            return children.items()
        regex_match = self._regex_match
        if regex_match is None:
            wanted = self._literal_set
            return [(n, v) for n, v in children.items() if n in wanted]
        return [(n, v) for n, v in children.items() if regex_match(n) is not None]

    def __repr__(self) -> str:
        return f"LevelMatcher({self.source!r})"


@dataclass(frozen=True, slots=True)
class GlobstarLevel:
    """A ``**`` level: zero or more branch levels (one or more when it is the last level).

    ``alternative`` holds the other brace alternatives of a level such as
    ``{**,x}``, matched as an ordinary level; it is ``None`` for a plain ``**``.
    """

    alternative: LevelMatcher | None = None


GLOBSTAR = GlobstarLevel()
"""The plain ``**`` level."""

PatternLevel = LevelMatcher | GlobstarLevel


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A compiled pattern: one matcher per dot-separated level."""

    source: str
    levels: tuple[PatternLevel, ...]

    @property
    def literal_path(self) -> str | None:
        """The pattern itself when no level contains a glob, else ``None``."""
        parts = []
        for level in self.levels:
            if not isinstance(level, LevelMatcher) or level.literal is None:
                return None
            parts.append(level.literal)
        return ".".join(parts)

    @property
    def has_globstar(self) -> bool:
        return any(isinstance(level, GlobstarLevel) for level in self.levels)


def compile_pattern(pattern: str) -> PathPattern:
    """Parse a Graphite pattern into per-level matchers; raises ``GlobError`` if malformed."""
    clean = pattern.replace("\\", "")
    return PathPattern(pattern, tuple(compile_level(level) for level in clean.split(".")))


def compile_level(level: str) -> PatternLevel:
    """Compile one level (no dots) of a pattern."""
    alternatives = expand_braces(level)
    for alternative in alternatives:
        _check_brackets(alternative, level)
    if "**" not in alternatives:
        return LevelMatcher(level, alternatives)
    others = [a for a in alternatives if a != "**"]
    if not others:
        return GLOBSTAR
    return GlobstarLevel(LevelMatcher(level, others))


def expand_braces(level: str) -> list[str]:
    """All strings a level's braces expand to, without duplicates, in first-seen order."""
    alternatives, end = _expand_group(level, 0, nested=False)
    if end != len(level):  # pragma: no cover - _expand_group consumes all or raises
        raise GlobError(f"unbalanced '}}' in pattern level {level!r}")
    return list(dict.fromkeys(alternatives))


def _expand_group(text: str, pos: int, *, nested: bool) -> tuple[list[str], int]:
    """Expand ``text[pos:]`` up to the ``}`` closing the current group (or the end).

    Returns the alternatives and the position after the closing brace.
    """
    done: list[str] = []  # alternatives of earlier comma-separated branches
    current = [""]  # expansions of the branch being read
    while pos < len(text):
        char = text[pos]
        if char == "{":
            inner, pos = _expand_group(text, pos + 1, nested=True)
            current = [head + tail for head in current for tail in inner]
            if len(current) + len(done) > MAX_ALTERNATIVES:
                raise GlobError(
                    f"pattern level {text!r} expands to more than {MAX_ALTERNATIVES} alternatives"
                )
        elif char == "}":
            if not nested:
                raise GlobError(f"unbalanced '}}' at position {pos} in pattern level {text!r}")
            return done + current, pos + 1
        elif char == "," and nested:
            done.extend(current)
            current = [""]
            pos += 1
        else:
            run = _LITERAL_RUN.match(text, pos)
            piece = run.group() if run else char  # a comma outside braces is ordinary text
            current = [head + piece for head in current]
            pos += len(piece)
    if nested:
        raise GlobError(f"unclosed '{{' in pattern level {text!r}")
    return done + current, pos


def _check_brackets(alternative: str, level: str) -> None:
    """Raise ``GlobError`` when a ``[`` has no closing ``]`` (scanning as fnmatch does)."""
    pos = alternative.find("[")
    while pos != -1:
        end = pos + 1
        if end < len(alternative) and alternative[end] == "!":
            end += 1
        if end < len(alternative) and alternative[end] == "]":
            end += 1
        end = alternative.find("]", end)
        if end == -1:
            raise GlobError(f"unclosed '[' in pattern level {level!r}")
        pos = alternative.find("[", end + 1)
