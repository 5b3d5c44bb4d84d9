"""The name index: persistence, crash recovery, readers in other processes, finding names."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from graphite.finders import expand_braces as graphite_expand_braces
from graphite.finders import match_entries as graphite_match_entries
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphite_istat.store.names import (
    COMPACTING_SUFFIX,
    HEADER,
    REASON_EMPTY,
    REASON_EMPTY_LEVEL,
    REASON_NEWLINE,
    REASON_NOT_STR,
    REASON_NOT_UTF8,
    REASON_NUL,
    REASON_TOO_LONG,
    FoundNode,
    IndexCorruptError,
    IndexLockedError,
    InvalidNameError,
    NameIndex,
    verify,
)


def _names(count: int) -> list[str]:
    return [f"servers.host{i % 7}.cpu.core{i % 3}.m{i}" for i in range(count)]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "names.log"


def _write(log_path: Path, names: list[str]) -> None:
    with NameIndex.open(log_path, writable=True) as index:
        for slot, name in enumerate(names):
            index.add(name, slot)


# ------------------------------------------------------------------ basics


def test_lookups(log_path: Path) -> None:
    with NameIndex.open(log_path, writable=True) as index:
        index.add("a.b.c", 7)
        index.add("a.b", 2**63 - 1)
        assert index.get("a.b.c") == 7
        assert index.get("a.b.d") is None
        assert index.get_many(["a.b", "nope", "a.b.c"]) == [2**63 - 1, None, 7]
        assert "a.b" in index and "a" not in index
        assert len(index) == 2
        assert sorted(index.items()) == [("a.b", 2**63 - 1), ("a.b.c", 7)]


def test_round_trip_through_the_log(log_path: Path) -> None:
    names = _names(500)
    _write(log_path, names)
    with NameIndex.open(log_path, writable=False) as reader:
        assert dict(reader.items()) == {name: slot for slot, name in enumerate(names)}
        assert reader.stats.records_replayed == 500
        assert reader.find("servers.host3.cpu.core1.*") == [
            FoundNode(name, True, False)
            for name in sorted(n for n in names if n.startswith("servers.host3.cpu.core1."))
        ]
    assert verify(log_path) == []


def test_open_creates_an_empty_log_only_when_writable(log_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        NameIndex.open(log_path, writable=False)
    assert not log_path.exists()
    NameIndex.open(log_path, writable=True).close()
    assert log_path.stat().st_size == HEADER.size
    with NameIndex.open(log_path, writable=False) as reader:
        assert len(reader) == 0


def test_remove_then_re_add(log_path: Path) -> None:
    with NameIndex.open(log_path, writable=True) as index:
        index.add("a.b.c", 1)
        index.add("a.x", 2)
        assert index.remove("a.b.c") == 1
        assert index.remove("a.b.c") is None
        # The branch a.b disappears with its last leaf.
        assert index.find("a.*") == [FoundNode("a.x", True, False)]
        index.add("a.b.c", 3)
        index.remove("a.x")
        index.add("a.x", 4)
        index.add("a.x", 5)  # re-pointing an existing name
    with NameIndex.open(log_path, writable=False) as reader:
        assert dict(reader.items()) == {"a.b.c": 3, "a.x": 5}
        assert reader.find("a.*") == [FoundNode("a.b", False, True), FoundNode("a.x", True, False)]


def test_adding_the_same_slot_again_writes_nothing(log_path: Path) -> None:
    with NameIndex.open(log_path, writable=True) as index:
        index.add("a.b", 1)
        index.flush(fsync=False)
        size = log_path.stat().st_size
        index.add("a.b", 1)
        index.flush(fsync=True)
        assert log_path.stat().st_size == size
        assert index.stats.log_records == 1


def test_records_stay_buffered_until_flush(log_path: Path) -> None:
    with NameIndex.open(log_path, writable=True) as index:
        index.add("a.b", 1)
        assert index.get("a.b") == 1
        assert log_path.stat().st_size == HEADER.size
        index.flush(fsync=False)
        assert log_path.stat().st_size > HEADER.size


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", REASON_EMPTY),
        ("a.\x00b", REASON_NUL),
        ("a.b\n", REASON_NEWLINE),
        ("a..b", REASON_EMPTY_LEVEL),
        (".a.b", REASON_EMPTY_LEVEL),
        ("a.b.", REASON_EMPTY_LEVEL),
        (".", REASON_EMPTY_LEVEL),
        ("a.\udcff", REASON_NOT_UTF8),
        ("a." + "x" * 70_000, REASON_TOO_LONG),
        (b"a.b", REASON_NOT_STR),
    ],
)
def test_invalid_names_are_refused_with_a_reason(log_path: Path, name: str, reason: str) -> None:
    with NameIndex.open(log_path, writable=True) as index:
        with pytest.raises(InvalidNameError) as raised:
            index.add(name, 1)
        assert raised.value.reason == reason
        assert isinstance(raised.value, ValueError)
        assert len(index) == 0
        index.add("a.b c:d/é", 1)  # anything else is a valid name
        assert index.get("a.b c:d/é") == 1
    assert verify(log_path) == []


@pytest.mark.parametrize("slot", [-1, 2**63])
def test_slots_must_be_non_negative_int64(log_path: Path, slot: int) -> None:
    with NameIndex.open(log_path, writable=True) as index, pytest.raises(ValueError, match="slot"):
        index.add("a.b", slot)


def test_read_only_index_refuses_changes(log_path: Path) -> None:
    _write(log_path, ["a.b"])
    with NameIndex.open(log_path, writable=False) as reader:
        with pytest.raises(PermissionError):
            reader.add("a.c", 1)
        with pytest.raises(PermissionError):
            reader.remove("a.b")
        assert reader.refresh() == 0


def test_one_writer_at_a_time(log_path: Path) -> None:
    with NameIndex.open(log_path, writable=True) as writer:
        writer.add("a.b", 1)
        with pytest.raises(IndexLockedError):
            NameIndex.open(log_path, writable=True)
        writer.compact()  # the lock follows the compacted file
        with pytest.raises(IndexLockedError):
            NameIndex.open(log_path, writable=True)
        with NameIndex.open(log_path, writable=False) as reader:
            assert reader.get("a.b") == 1
    NameIndex.open(log_path, writable=True).close()


# ------------------------------------------------------------ crash recovery


def test_a_torn_last_record_is_dropped_at_every_cut(tmp_path: Path) -> None:
    log_path = tmp_path / "names.log"
    _write(log_path, ["a.b", "a.c", "x.y.z"])
    before_last = log_path.stat().st_size
    with NameIndex.open(log_path, writable=True) as index:
        index.add("servers.last.one", 99)
    intact = log_path.read_bytes()
    assert len(intact) > before_last
    for cut in range(before_last, len(intact)):
        log_path.write_bytes(intact[:cut])
        with NameIndex.open(log_path, writable=False) as reader:
            assert dict(reader.items()) == {"a.b": 0, "a.c": 1, "x.y.z": 2}
            assert reader.stats.incomplete_tail_bytes == cut - before_last
        assert log_path.stat().st_size == cut  # a reader never truncates
        with NameIndex.open(log_path, writable=True) as index:
            assert dict(index.items()) == {"a.b": 0, "a.c": 1, "x.y.z": 2}
            assert index.stats.torn_records_dropped == (1 if cut > before_last else 0)
            assert index.stats.torn_bytes_dropped == cut - before_last
        assert log_path.stat().st_size == before_last
    log_path.write_bytes(intact)
    with NameIndex.open(log_path, writable=True) as index:
        assert index.get("servers.last.one") == 99


def test_a_garbled_last_record_is_a_torn_tail(log_path: Path) -> None:
    _write(log_path, ["a.b", "a.c"])
    data = bytearray(log_path.read_bytes())
    data[-3] ^= 0xFF  # inside the last record's checksum
    log_path.write_bytes(bytes(data))
    assert any("torn tail" in problem for problem in verify(log_path))
    with NameIndex.open(log_path, writable=True) as index:
        assert dict(index.items()) == {"a.b": 0}
        assert index.stats.torn_records_dropped == 1
    assert verify(log_path) == []


def test_a_zero_filled_tail_is_a_torn_tail(log_path: Path) -> None:
    _write(log_path, ["a.b", "a.c"])
    size = log_path.stat().st_size
    with log_path.open("ab") as log:
        log.write(b"\0" * 100)
    with NameIndex.open(log_path, writable=True) as index:
        assert len(index) == 2
        assert index.stats.torn_bytes_dropped == 100
    assert log_path.stat().st_size == size


def test_a_corrupt_middle_record_raises_with_its_offset(log_path: Path) -> None:
    _write(log_path, ["a.first", "a.second", "a.third"])
    data = bytearray(log_path.read_bytes())
    second_record = HEADER.size + 15 + len("a.first")
    data[second_record + 4] ^= 0x01  # a byte of the second record's name
    log_path.write_bytes(bytes(data))
    for writable in (False, True):
        with pytest.raises(IndexCorruptError, match=f"offset {second_record}") as raised:
            NameIndex.open(log_path, writable=writable)
        assert str(log_path) in str(raised.value)
    assert log_path.read_bytes() == bytes(data)  # nothing truncated
    problems = verify(log_path)
    assert len(problems) == 1 and f"offset {second_record}" in problems[0]


@pytest.mark.parametrize(
    ("offset", "message"),
    [(0, "bad magic"), (8, "header checksum"), (13, "header checksum")],
)
def test_a_bad_header_names_the_file(log_path: Path, offset: int, message: str) -> None:
    _write(log_path, ["a.b"])
    data = bytearray(log_path.read_bytes())
    data[offset] ^= 0x40
    log_path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=message) as raised:
        NameIndex.open(log_path, writable=True)
    assert str(log_path) in str(raised.value)
    assert any(message in problem for problem in verify(log_path))


def test_an_unknown_format_version_is_refused(log_path: Path) -> None:
    import struct
    import zlib

    start = struct.pack("<8sI", b"GISTNAME", 2)
    log_path.write_bytes(start + struct.pack("<I", zlib.crc32(start)))
    with pytest.raises(IndexCorruptError, match="unsupported format version 2"):
        NameIndex.open(log_path, writable=False)


def test_a_short_file_is_corrupt(log_path: Path) -> None:
    log_path.write_bytes(b"GIST")
    with pytest.raises(IndexCorruptError, match="shorter than"):
        NameIndex.open(log_path, writable=True)


def test_verify_reports_slots_shared_by_two_names(log_path: Path) -> None:
    with NameIndex.open(log_path, writable=True) as index:
        index.add("a.b", 5)
        index.add("a.c", 5)
    assert any("slot 5 is used by both" in problem for problem in verify(log_path))


# ----------------------------------------------------------------- compaction


def test_compaction_keeps_live_entries_only(log_path: Path) -> None:
    names = _names(300)
    with NameIndex.open(log_path, writable=True) as index:
        for slot, name in enumerate(names):
            index.add(name, slot)
        index.flush(fsync=False)
        for name in names[:200]:
            index.remove(name)
        index.add("late.buffered", 1000)  # only in the buffer when compaction runs
        assert index.garbage_records == 400  # 200 removed adds and their removes
        size_before = log_path.stat().st_size
        index.compact()
        assert index.garbage_records == 0
        assert log_path.stat().st_size < size_before / 2
        index.add("after.compaction", 1001)
    expected = {name: slot for slot, name in enumerate(names) if slot >= 200}
    expected |= {"late.buffered": 1000, "after.compaction": 1001}
    with NameIndex.open(log_path, writable=False) as reader:
        assert dict(reader.items()) == expected
        assert reader.stats.log_records == len(expected)
    assert verify(log_path) == []


def test_an_interrupted_compaction_leaves_the_old_log(log_path: Path) -> None:
    _write(log_path, ["a.b", "a.c"])
    leftover = Path(str(log_path) + COMPACTING_SUFFIX)
    leftover.write_bytes(b"half a compaction")  # a crash before the rename
    assert any("interrupted compaction" in problem for problem in verify(log_path))
    with NameIndex.open(log_path, writable=True) as index:
        assert dict(index.items()) == {"a.b": 0, "a.c": 1}
        assert not leftover.exists()
        index.compact()
    assert verify(log_path) == []


def test_refresh_follows_appends_and_compactions(log_path: Path) -> None:
    with NameIndex.open(log_path, writable=True) as writer:
        writer.add("a.one", 1)
        writer.flush(fsync=False)
        reader = NameIndex.open(log_path, writable=False)
        assert dict(reader.items()) == {"a.one": 1}
        assert reader.refresh() == 0
        writer.add("a.two", 2)
        writer.add("a.three", 3)
        assert reader.refresh() == 0  # still buffered by the writer
        writer.flush(fsync=False)
        assert reader.refresh() == 2
        writer.remove("a.one")
        writer.compact()
        writer.add("b.four", 4)
        writer.flush(fsync=False)
        assert reader.refresh() == 3  # the whole compacted log
        assert reader.stats.full_reloads == 1
        assert dict(reader.items()) == {"a.two": 2, "a.three": 3, "b.four": 4}
        assert reader.find("*") == [FoundNode("a", False, True), FoundNode("b", False, True)]
        reader.close()


_READER_SCRIPT = """
import json, sys, time
from graphite_istat.store.names import NameIndex

path, total = sys.argv[1], int(sys.argv[2])
final = {f"m.{i}": i * 10 for i in range(total // 2, total)}
reader = NameIndex.open(path, writable=False)
print("ready", flush=True)
states, problems = set(), []
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    reader.refresh()
    seen = dict(reader.items())
    count = len(seen)
    # Adds m.0.. in order, then removes m.0.. in order: every prefix of the
    # writer's records leaves m.0..m.(count-1) or m.(total-count)..m.(total-1).
    first = {f"m.{i}": i * 10 for i in range(count)}
    last = {f"m.{i}": i * 10 for i in range(total - count, total)}
    if seen != first and seen != last:
        problems.append(sorted(seen)[:5])
    states.add(count)
    if seen == final and reader.stats.incomplete_tail_bytes == 0:
        break
json.dump({"problems": problems[:3], "states": len(states), "done": seen == final,
           "reloads": reader.stats.full_reloads}, sys.stdout)
"""


def test_a_reader_process_sees_a_consistent_prefix(tmp_path: Path, log_path: Path) -> None:
    total = 4000
    NameIndex.open(log_path, writable=True).close()
    script = tmp_path / "reader.py"
    script.write_text(_READER_SCRIPT)
    reader = subprocess.Popen(
        [sys.executable, str(script), str(log_path), str(total)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "ready"
    with NameIndex.open(log_path, writable=True) as writer:
        for i in range(total):
            writer.add(f"m.{i}", i * 10)
            if i % 37 == 0:
                writer.flush(fsync=False)
                time.sleep(0.001)  # let the reader interleave; nothing is timed
            if i == total * 3 // 4:
                writer.compact()
        writer.flush(fsync=False)
        for i in range(total // 2):
            writer.remove(f"m.{i}")
            if i % 41 == 0:
                writer.flush(fsync=False)
                time.sleep(0.001)
            if i == total // 4:
                writer.compact()
    output, _ = reader.communicate(timeout=180)
    assert reader.returncode == 0
    result = json.loads(output)
    assert result["problems"] == []
    assert result["done"]
    assert result["reloads"] >= 1


# ------------------------------------------------------------------- finding


def test_find_reports_leaf_and_branch_together(log_path: Path) -> None:
    with NameIndex.open(log_path, writable=True) as index:
        index.add("servers.web1.cpu", 1)
        index.add("servers.web1.cpu.user", 2)
        index.add("servers.web1.load", 3)
        assert index.find("servers.web1.*") == [
            FoundNode("servers.web1.cpu", True, True),
            FoundNode("servers.web1.load", True, False),
        ]
        assert index.find("servers.web1") == [FoundNode("servers.web1", False, True)]
        assert index.find_paths("servers.web1.*") == {
            "servers.web1.cpu": (True, True), "servers.web1.load": (True, False)
        }
        assert index.match("servers.web1") == []
        assert index.match("servers.web1.*") == ["servers.web1.cpu", "servers.web1.load"]
        assert index.find("servers.web1.cpu.user.x") == []
        assert index.find("") == []


def test_concurrent_readers_in_threads(log_path: Path) -> None:
    names = _names(2000)
    _write(log_path, names)
    patterns = ["servers.*.cpu.*.*", "servers.host{1,2}.**", "**.m1?", "servers.host3.cpu.core0.*"]
    with NameIndex.open(log_path, writable=False) as reader:
        serial = [reader.match(p) for p in patterns] * 25
        with ThreadPoolExecutor(max_workers=8) as pool:
            threaded = list(pool.map(reader.match, patterns * 25))
            slots = list(pool.map(reader.get_many, [names] * 8))
    assert [sorted(set(r)) for r in threaded] == [sorted(set(r)) for r in serial]
    order = {p: i for i, p in enumerate(patterns)}
    for pattern, result in zip(patterns * 25, threaded, strict=True):
        assert result == serial[order[pattern]]
    assert all(s == list(range(2000)) for s in slots)


# ------------------------------------------------- property: match vs brute force

LEVELS = ["a", "b", "ab", "ba", "abc", "x1", "x2"]
level_patterns = st.one_of(
    st.sampled_from(LEVELS),
    st.sampled_from(["*", "?", "??", "a*", "*b", "?b", "x?", "*1", "[ab]", "[!a]*", "**"]),
    st.lists(st.sampled_from([*LEVELS, "*", "x*", "?a"]), min_size=1, max_size=3).map(
        lambda alternatives: "{" + ",".join(alternatives) + "}"
    ),
    st.sampled_from(["{a,b{a,c}}", "{x{1,2},a*}", "a{,b}", "{**,ab}"]),
)
name_sets = st.sets(
    st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4).map(".".join), max_size=40
)
patterns = st.lists(level_patterns, min_size=1, max_size=4).map(".".join)


def _level_matches(level: str, pattern_level: str) -> bool:
    return bool(graphite_match_entries([level], pattern_level))


def _path_matches(path: list[str], pattern: list[str]) -> bool:
    """Reference matcher: each level per graphite-web, ``**`` crossing levels as documented."""
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    alternatives = _expand(head)
    for alternative in alternatives:
        if alternative == "**":
            least = 1 if not rest else 0  # terminal ** is **.* (one or more levels)
            if any(_path_matches(path[skip:], rest) for skip in range(least, len(path) + 1)):
                return True
        elif path and _level_matches(path[0], alternative) and _path_matches(path[1:], rest):
            return True
    return False


def _expand(pattern_level: str) -> list[str]:
    return graphite_expand_braces(pattern_level)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(added=name_sets, pattern=patterns, data=st.data())
def test_match_and_find_equal_a_brute_force_reference(
    tmp_path: Path, added: set[str], pattern: str, data: st.DataObject
) -> None:
    removed = data.draw(st.sets(st.sampled_from(sorted(added)))) if added else set()
    names = added - removed
    log_path = tmp_path / "property.log"
    index = NameIndex.open(log_path, writable=True)
    try:
        for slot, name in enumerate(sorted(added)):
            index.add(name, slot)
        for name in removed:
            index.remove(name)
        pattern_levels = pattern.split(".")
        expected_names = sorted(n for n in names if _path_matches(n.split("."), pattern_levels))
        assert index.match(pattern) == expected_names
        nodes = {
            ".".join(n.split(".")[:depth]) for n in names for depth in range(1, n.count(".") + 2)
        }
        expected_found = [
            FoundNode(node, node in names, any(n.startswith(node + ".") for n in names))
            for node in sorted(nodes)
            if _path_matches(node.split("."), pattern_levels)
        ]
        assert index.find(pattern) == expected_found
    finally:
        index.close()
        log_path.unlink()


def test_reference_matcher_knows_the_globstar_rules() -> None:
    assert _path_matches(["a", "b"], ["a", "**", "b"])
    assert _path_matches(["a", "x", "y", "b"], ["a", "**", "b"])
    assert not _path_matches(["a"], ["a", "**"])
    assert _path_matches(["a", "b", "c"], ["a", "**"])
    assert _path_matches(["a"], ["{**,a}"])
    assert not _path_matches(["b"], ["a*"])


def test_the_level_tree_gives_the_garbage_collector_nothing_to_walk(log_path: Path) -> None:
    import gc

    with NameIndex.open(log_path, writable=True) as index:
        for h in range(200):
            for c in range(16):
                index.add(f"servers.host{h:03d}.cpu.core{c}.user", h * 16 + c)
        tree = index._tree
        gc.collect()
        assert len(tree.children) > 3000  # a branch per host and per core
        assert not any(gc.is_tracked(children) for children in tree.children)
        assert not gc.is_tracked(tree.leaf_flags)


def test_pruned_branches_are_reused_and_stay_exact(log_path: Path) -> None:
    with NameIndex.open(log_path, writable=True) as index:
        for slot, name in enumerate(["a.b.c", "a.b.d", "x.y"]):
            index.add(name, slot)
        branches = len(index._tree.children)
        index.remove("a.b.c")
        index.remove("a.b.d")
        assert [n.path for n in index.find("*")] == ["x"]
        index.add("p.q.r", 4)
        index.add("p.q", 5)
        assert len(index._tree.children) == branches  # a and a.b were pruned and their numbers reused
        assert [(n.path, n.is_leaf, n.has_children) for n in index.find("p.*")] == [("p.q", True, True)]
        assert index.match("p.q.*") == ["p.q.r"]
        assert index.find("a.*") == []
