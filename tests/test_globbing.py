"""Graphite glob semantics, checked against graphite-web 1.1.10's own code.

graphite-web's brace expansion and per-level matching (``graphite.finders``)
import without Django, so levels are compared in-process. Whole-path finds,
``**`` included, are compared with graphite-web's ``StandardFinder`` walking a
real directory of whisper-named files, in a subprocess so that Django's
settings never leak into this test process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from graphite.finders import expand_braces as graphite_expand_braces
from graphite.finders import match_entries as graphite_match_entries

from graphite_istat.store.globbing import (
    GLOBSTAR,
    MAX_ALTERNATIVES,
    GlobError,
    GlobstarLevel,
    LevelMatcher,
    compile_level,
    compile_pattern,
    expand_braces,
)
from graphite_istat.store.names import NameIndex

LEVEL_NAMES = [
    "a", "b", "ab", "ba", "abc", "web1", "web2", "web10", "db1", "db2", "cpu", "core0",
    "core1", "user", "system", "^x", "]x", "x]", "x-y", "x_y", "x,y", "é", "a.b"[0], "1", "",
]  # fmt: skip

LEVEL_PATTERNS = [
    "a", "web1", "*", "?", "??", "a*", "*b", "*b*", "w*1", "web?", "web??", "[ab]", "[a-c]*",
    "[!a]*", "[!a-c]", "[^a]", "[^x]x", "[]x]*", "[]]x", "x]", "[!]]*", "{a,b}", "{a,ab,abc}",
    "{web*,db[12]}", "{a,b{a,c}}", "{a,{b,{ab,abc}}}", "web{1,2,10}", "{web,db}{1,2}",
    "{,a}b", "x{}", "{a,b}*", "*{1,2}", "core[01]", "[0-9]", "x,y", "{x\\,y}", "é", "?",
]  # fmt: skip


@pytest.mark.parametrize(
    "level",
    ["{a,b}", "{a,b{c,d}}", "{a,{b,{c,d}}}x", "{,a}{b,}", "x{}y", "{a,a}", "p{x,y}q{1,2}r", "a,b"],
)
def test_brace_expansion_equals_graphite_web(level: str) -> None:
    ours = expand_braces(level)
    assert sorted(ours) == sorted(graphite_expand_braces(level))
    assert len(ours) == len(set(ours))


@pytest.mark.parametrize("pattern", LEVEL_PATTERNS)
def test_level_matching_equals_graphite_web(pattern: str) -> None:
    matcher = compile_level(pattern.replace("\\", ""))
    assert isinstance(matcher, LevelMatcher)
    expected = set(graphite_match_entries(LEVEL_NAMES, pattern.replace("\\", "")))
    assert set(matcher.filter(LEVEL_NAMES)) == expected
    assert {name for name in LEVEL_NAMES if matcher.match(name)} == expected


def test_caret_in_brackets_is_not_negation_as_in_graphite_web() -> None:
    matcher = compile_level("[^a]")
    assert matcher.match("a")
    assert matcher.match("^")
    assert not matcher.match("b")
    negated = compile_level("[!a]")
    assert negated.match("b")
    assert not negated.match("a")


def test_literal_levels_are_marked_for_dict_lookup() -> None:
    pattern = compile_pattern("servers.{web1,db2}.cpu*.user")
    servers, hosts, cpu, user = pattern.levels
    assert isinstance(servers, LevelMatcher) and servers.literal == "servers"
    assert isinstance(hosts, LevelMatcher) and hosts.literal is None
    assert hosts.literals == ("web1", "db2")
    assert isinstance(cpu, LevelMatcher) and cpu.literal is None and cpu.literals is None
    assert isinstance(user, LevelMatcher) and user.literal == "user"
    assert pattern.literal_path is None
    assert compile_pattern("a.b.c").literal_path == "a.b.c"
    assert compile_level("{same,same}").literal == "same"  # type: ignore[union-attr]


def test_a_closing_bracket_alone_is_literal() -> None:
    matcher = compile_level("x]")
    assert isinstance(matcher, LevelMatcher)
    assert matcher.literal == "x]"


def test_backslashes_are_dropped_as_graphite_web_does() -> None:
    assert compile_pattern(r"a\*.b").levels[0].source == "a*"  # type: ignore[union-attr]
    assert compile_pattern(r"a\*.b").levels[0].match("abc")  # type: ignore[union-attr]


def test_globstar_forms() -> None:
    assert compile_pattern("**.user").levels[0] is GLOBSTAR
    assert compile_pattern("a.{**}").levels[1] is GLOBSTAR
    mixed = compile_pattern("a.{**,x*}").levels[1]
    assert isinstance(mixed, GlobstarLevel)
    assert mixed.alternative is not None and mixed.alternative.match("xy")
    not_globstar = compile_pattern("a**b").levels[0]
    assert isinstance(not_globstar, LevelMatcher)
    assert not_globstar.match("ab") and not_globstar.match("aXYb")
    assert compile_pattern("**").has_globstar
    assert not compile_pattern("a.*").has_globstar


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a.{b,c", "unclosed '{'"),
        ("a.b,c}", "unbalanced '}'"),
        ("a.{b}}", "unbalanced '}'"),
        ("a.[bc", "unclosed '['"),
        ("a.[!]", "unclosed '['"),
        ("a.x[]", "unclosed '['"),
        ("a.{[b,c]}", "unclosed '['"),  # braces expand first, leaving '[b' alone
    ],
)
def test_malformed_patterns_raise_glob_error(pattern: str, message: str) -> None:
    with pytest.raises(GlobError, match=re.escape(message)) as raised:
        compile_pattern(pattern)
    assert isinstance(raised.value, ValueError)


def test_brace_explosion_is_refused() -> None:
    exploding = "{a,b}" * 14  # 16384 alternatives
    assert 2**14 > MAX_ALTERNATIVES
    with pytest.raises(GlobError, match="alternatives"):
        compile_pattern(exploding)
    assert len(expand_braces("{a,b}" * 10)) == 1024


# ---------------------------------------------------------- whole-path finds

STORED_NAMES = [
    "servers.web1.cpu",
    "servers.web1.cpu.core0.user",
    "servers.web1.cpu.core0.system",
    "servers.web1.cpu.core1.user",
    "servers.web2.cpu.core0.user",
    "servers.web10.cpu.core1.system",
    "servers.web10.disk.sda.reads",
    "servers.db1.cpu.core0.user",
    "servers.db2.mem.free",
    "servers.^x.user",
    "servers.x-y.user",
    "user",
    "carbon.agents.a-1.metricsReceived",
    "carbon.agents.a-1.cpu.user",
]

FIND_PATTERNS = [
    "*",
    "*.*",
    "servers.*",
    "servers.*.cpu",
    "servers.*.cpu.*.user",
    "servers.web?.cpu.*",
    "servers.web[12].*",
    "servers.web[!1]*.*",
    "servers.[^w]*",
    "servers.{web1,db1}.*",
    "servers.{web*,db[12]}.cpu",
    "servers.{db,web{1,2}}.*",
    "servers.web1.cpu.core{0,1}.{user,system}",
    "servers.web1.cpu",
    "servers.web1.cpu.core0.user",
    "servers.web1.cpu.core0.user.more",
    "nothing.here",
    "**",
    "**.user",
    "**.cpu.*",
    "servers.**",
    "servers.**.user",
    "servers.**.core0.*",
    "servers.**.**.user",
    "**.web1.**",
    "carbon.**",
    "*.**.user",
]

_GRAPHITE_FIND_SCRIPT = """
import json, sys
import django
django.setup()
from graphite.finders.standard import StandardFinder
from graphite.finders.utils import FindQuery

request = json.load(sys.stdin)
finder = StandardFinder([request["root"]])
answer = {}
for pattern in request["patterns"]:
    nodes = finder.find_nodes(FindQuery(pattern, None, None))
    answer[pattern] = [[node.path, bool(node.is_leaf)] for node in nodes]
json.dump(answer, sys.stdout)
"""


def _graphite_web_find(tmp_path: Path, names: list[str], patterns: list[str]) -> dict[str, list]:
    """Run graphite-web's StandardFinder over empty ``.wsp`` files named after ``names``."""
    whisper_root = tmp_path / "whisper"
    for name in names:
        file_path = whisper_root.joinpath(*name.split(".")).with_suffix(".wsp")
        file_path.parent.mkdir(parents=True, exist_ok=True)
        file_path.touch()
    storage = tmp_path / "graphite-storage"
    (storage / "log" / "webapp").mkdir(parents=True)
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="graphite.settings",
        GRAPHITE_STORAGE_DIR=str(storage),
    )
    completed = subprocess.run(
        [sys.executable, "-c", _GRAPHITE_FIND_SCRIPT],
        input=json.dumps({"root": str(whisper_root), "patterns": patterns}),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def _merge_graphite_nodes(nodes: list) -> list[tuple[str, bool, bool]]:
    """graphite-web yields a leaf and a branch node for one path; merge them like our index."""
    merged: dict[str, tuple[bool, bool]] = {}
    for path, is_leaf in nodes:
        leaf, branch = merged.get(path, (False, False))
        merged[path] = (leaf or is_leaf, branch or not is_leaf)
    return sorted((path, leaf, branch) for path, (leaf, branch) in merged.items())


def test_find_equals_graphite_web_standard_finder(tmp_path: Path) -> None:
    expected = _graphite_web_find(tmp_path, STORED_NAMES, FIND_PATTERNS)
    with NameIndex.open(tmp_path / "names.log", writable=True) as index:
        for slot, name in enumerate(STORED_NAMES):
            index.add(name, slot)
        for pattern in FIND_PATTERNS:
            ours = [(n.path, n.is_leaf, n.has_children) for n in index.find(pattern)]
            assert ours == _merge_graphite_nodes(expected[pattern]), pattern
            leaves = [path for path, is_leaf, _ in ours if is_leaf]
            assert index.match(pattern) == leaves, pattern
    # The comparison means something only if the patterns find things.
    assert sum(1 for pattern in FIND_PATTERNS if expected[pattern]) >= len(FIND_PATTERNS) - 2
