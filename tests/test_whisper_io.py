"""Whisper history into the store and back: every archive compared with whisper.fetch, bad files, unsafe names."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import whisper

from graphite_istat.config import StorageRules
from graphite_istat.store.store import SUB_COUNTERS, Store
from graphite_istat.whisper_io.importer import ImportJournal, import_tree
from graphite_istat.whisper_io.paths import UnsafeNameError, name_for_path, path_for_name
from graphite_istat.whisper_io.sources import StoreSource
from graphite_istat.whisper_io.tools import export_metric
from graphite_istat.whisper_io.wsp_file import WspError, read_wsp

NOW = 1_700_000_003
METHODS = ("average", "sum", "last", "max", "min", "avg_zero", "absmax", "absmin")
RETENTIONS = [(10, 60), (60, 60), (600, 30)]  # 10 min, 1 h, 5 h


def make_wsp(
    path: Path,
    method: str,
    xff: float,
    seed: int,
    retentions: list[tuple[int, int]] = RETENTIONS,
    span: int = 5 * 3600,
) -> None:
    """A whisper file written the way carbon writes it: points in time order, with gaps."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    whisper.create(str(path), retentions, xff, method)
    ts = np.arange(NOW - span, NOW, 7)
    ts = ts[rng.random(len(ts)) > 0.3]
    ts = ts[(ts < NOW - 3 * 3600) | (ts > NOW - 2 * 3600)]  # a one-hour gap
    values = np.round(rng.normal(size=len(ts)) * 50, 3)
    for lo in range(0, len(ts), 40):
        chunk = [(int(t), float(v)) for t, v in zip(ts[lo : lo + 40], values[lo : lo + 40], strict=True)]
        whisper.update_many(str(path), chunk, now=chunk[-1][0] + 1)
    if span > 3 * 3600:
        # Late points inside the gap, older than the finer archives: whisper writes them
        # straight into the coarsest archive that still covers them.
        late = [(int(t), float(rng.normal() * 50)) for t in range(NOW - 3 * 3600 + 60, NOW - 2 * 3600, 250)]
        whisper.update_many(str(path), late, now=NOW)


def whisper_values(path: Path, step: int, rows: int) -> tuple[tuple[int, int, int], np.ndarray]:
    time_info, values = whisper.fetch(str(path), NOW - step * rows, NOW, now=NOW, archiveToSelect=step)
    return time_info, np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def store_archive(store: Store, name: str, archive: int, step: int, rows: int):
    result = store.fetch([name], NOW - step * rows, NOW, NOW, fields=(*SUB_COUNTERS, "last"), archive=archive)
    ((_, grid, series_set, row),) = list(result.series())
    return grid, series_set, row


def assert_same_values(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Equal where whisper has a value, empty where it has none; equal up to float rounding."""
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    known = ~np.isnan(theirs)
    scale = 1e-12 * (np.abs(theirs[known]) + 60 * 200)  # sums of up to 60 values of |v| < 200
    assert (np.abs(ours[known] - theirs[known]) <= scale).all()


@pytest.fixture
def whisper_tree(tmp_path: Path) -> Path:
    root = tmp_path / "whisper"
    for i, method in enumerate(METHODS):
        for xff in (0.0, 0.5):
            make_wsp(root / "servers" / f"{method}_x{int(xff * 10)}.wsp", method, xff, seed=i * 10 + int(xff * 10))
    return root


def open_store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "storage", StorageRules(), writable=True)


def test_every_archive_reads_back_as_whisper_fetch_returns_it(tmp_path: Path, whisper_tree: Path) -> None:
    with open_store(tmp_path) as store:
        summary = import_tree(store, whisper_tree, now=NOW, stream=io.StringIO())
        assert (summary.files, summary.skipped, summary.errors) == (16, [], [])
        assert summary.points > 2000
        exact_coarse = approximate_coarse = 0
        for path in sorted(whisper_tree.rglob("*.wsp")):
            name = name_for_path(path.relative_to(whisper_tree))
            method = whisper.info(str(path))["aggregationMethod"]
            info = store.info(name)
            assert [(a.step, a.rows) for a in info.layout.archives] == RETENTIONS
            assert info.aggregation_method == method
            for archive, (step, rows) in enumerate(RETENTIONS):
                time_info, expected = whisper_values(path, step, rows)
                grid, series_set, row = store_archive(store, name, archive, step, rows)
                assert (grid.start, grid.end, grid.step) == time_info
                assert_same_values(series_set.default_values()[row], expected)
                approximate = series_set.counters["approximate"][row]
                known = ~np.isnan(expected)
                if archive == 0:
                    # What whisper kept: one point per bucket, exact.
                    assert not approximate.any()
                    assert (series_set.counters["count"][row][known] == 1).all()
                    np.testing.assert_array_equal(series_set.stat("min")[row][known], expected[known])
                    np.testing.assert_array_equal(series_set.stat("max")[row][known], expected[known])
                else:
                    exact_coarse += int((known & ~approximate).sum())
                    approximate_coarse += int(approximate.sum())
                    if method in ("max", "min"):
                        # The method's own stat stays exact wherever it was estimated.
                        np.testing.assert_array_equal(series_set.stat(method)[row][known], expected[known])
                    if method == "sum":
                        assert_same_values(series_set.stat("sum")[row], expected)
        # Coarse buckets the finest archive still covers are recomputed exactly;
        # older ones carry whisper's aggregate and are marked approximate.
        assert exact_coarse > 50
        assert approximate_coarse > 500


def test_recomputed_coarse_buckets_hold_the_finest_points_exactly(tmp_path: Path) -> None:
    path = tmp_path / "w" / "lat.wsp"
    make_wsp(path, "max", 0.0, seed=3)
    with open_store(tmp_path) as store:
        import_tree(store, tmp_path / "w", now=NOW, stream=io.StringIO())
        fine = read_wsp(path, NOW).archives[0]
        grid, series_set, row = store_archive(store, "lat", 1, 60, 60)
        buckets = grid.buckets()
        exact = np.flatnonzero(~series_set.counters["approximate"][row] & (series_set.counters["count"][row] > 0))
        assert len(exact) >= 5
        for j in exact.tolist():
            inside = (fine.buckets >= buckets[j]) & (fine.buckets < buckets[j] + 60)
            points = fine.values[inside]
            assert series_set.counters["count"][row][j] == len(points)
            assert series_set.stat("min")[row][j] == points.min()
            assert series_set.stat("max")[row][j] == points.max()
            assert series_set.stat("avg")[row][j] == pytest.approx(points.mean(), rel=1e-12)


def counters_of(store: Store, name: str) -> list[dict[str, np.ndarray]]:
    out = []
    for archive, (step, rows) in enumerate(RETENTIONS):
        _, series_set, row = store_archive(store, name, archive, step, rows)
        out.append({k: v[row].copy() for k, v in series_set.counters.items()})
    return out


def test_reimport_changes_nothing_and_an_interrupted_import_resumes(tmp_path: Path, whisper_tree: Path) -> None:
    names = [name_for_path(p.relative_to(whisper_tree)) for p in sorted(whisper_tree.rglob("*.wsp"))]
    with open_store(tmp_path) as store:
        import_tree(store, whisper_tree, now=NOW, stream=io.StringIO())
        before = {n: counters_of(store, n) for n in names}
        again = import_tree(store, whisper_tree, now=NOW, stream=io.StringIO())
        assert (again.files, again.already_done) == (0, 16)
        # Forget the journal: every file is imported again, into the same cells.
        redone = import_tree(store, whisper_tree, now=NOW, restart=True, stream=io.StringIO())
        assert redone.files == 16
        for n in names:
            for ours, theirs in zip(counters_of(store, n), before[n], strict=True):
                for key in theirs:
                    np.testing.assert_array_equal(ours[key], theirs[key])
        # An interruption: the journal lost its last entries and ends in a torn line.
        journal = ImportJournal.for_tree(store.directory, whisper_tree)
        lines = journal.path.read_text().splitlines()
        journal.path.write_text("\n".join(lines[:5]) + "\n" + lines[5][:10])
        resumed = import_tree(store, whisper_tree, now=NOW, stream=io.StringIO())
        assert (resumed.files, resumed.already_done) == (11, 5)
        assert len(store) == 16
        # A file changed since it was imported is imported again.
        changed = sorted(whisper_tree.rglob("*.wsp"))[0]
        whisper.update(str(changed), 12345.0, NOW - 5, now=NOW)
        once_more = import_tree(store, whisper_tree, now=NOW, stream=io.StringIO())
        assert once_more.files == 1
        grid, series_set, row = store_archive(store, name_for_path(changed.relative_to(whisper_tree)), 0, 10, 60)
        bucket = (NOW - 5) - (NOW - 5) % 10
        assert series_set.stat("max")[row][grid.buckets() == bucket].tolist() == [12345.0]


def test_worker_processes_import_the_same_cells(tmp_path: Path, whisper_tree: Path) -> None:
    with Store.open(tmp_path / "one", StorageRules(), writable=True) as one:
        import_tree(one, whisper_tree, now=NOW, stream=io.StringIO())
        serial = {n: counters_of(one, n) for n in one.match("**")}
    with Store.open(tmp_path / "two", StorageRules(), writable=True) as two:
        summary = import_tree(two, whisper_tree, jobs=3, now=NOW, stream=io.StringIO())
        assert summary.files == 16
        for name, expected in serial.items():
            for ours, theirs in zip(counters_of(two, name), expected, strict=True):
                for key in theirs:
                    np.testing.assert_array_equal(ours[key], theirs[key])


def test_corrupt_truncated_and_empty_files_are_skipped_by_name(tmp_path: Path) -> None:
    root = tmp_path / "whisper"
    make_wsp(root / "good.wsp", "average", 0.5, seed=1)
    make_wsp(root / "truncated.wsp", "average", 0.5, seed=2)
    data = (root / "truncated.wsp").read_bytes()
    (root / "truncated.wsp").write_bytes(data[: len(data) // 2])
    (root / "empty.wsp").write_bytes(b"")
    (root / "garbage.wsp").write_bytes(b"\xff" * 100)
    header_only = bytearray((root / "good.wsp").read_bytes()[:40])
    header_only[16:20] = (999).to_bytes(4, "big")  # archive 0 at a wrong offset
    (root / "badoffset.wsp").write_bytes(bytes(header_only))
    (root / "notes.txt").write_text("not whisper")
    messages = io.StringIO()
    with open_store(tmp_path) as store:
        summary = import_tree(store, root, now=NOW, stream=messages)
        assert summary.files == 1
        assert "good" in store
        assert len(store) == 1
    skipped = dict(summary.skipped)
    assert set(skipped) == {"truncated.wsp", "empty.wsp", "garbage.wsp", "badoffset.wsp"}
    assert "truncated" in skipped["truncated.wsp"]
    assert "empty" in skipped["empty.wsp"]
    assert "corrupt" in skipped["garbage.wsp"]
    assert "corrupt" in skipped["badoffset.wsp"]
    text = messages.getvalue()
    for bad in skipped:
        assert f"skipped {root / bad}:" in text
    for bad in ("truncated.wsp", "empty.wsp", "garbage.wsp"):
        with pytest.raises(WspError, match=bad):
            read_wsp(root / bad, NOW)


def test_unsafe_names_stay_inside_the_storage_and_target_directories(tmp_path: Path) -> None:
    root = tmp_path / "whisper"
    make_wsp(root / "ok" / "x..wsp", "average", 0.0, seed=1, span=600)  # name "ok.x." : refused
    make_wsp(root / "ok" / "%2F..%2Fescape.wsp", "average", 0.0, seed=2, span=600)  # "/../escape": refused
    make_wsp(root / "ok" / "%2Fetc%2Fpasswd.wsp", "average", 0.0, seed=3, span=600)  # a "/" inside a level
    storage = tmp_path / "storage"
    with open_store(tmp_path) as store:
        summary = import_tree(store, root, now=NOW, stream=io.StringIO())
        assert store.match("**") == ["ok./etc/passwd"]
    assert {p for p, _ in summary.skipped} == {"ok/x..wsp", "ok/%2F..%2Fescape.wsp"}
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")}
    assert not any(p.name in ("passwd", "escape") for p in before)
    assert all(p.parts[0] in ("whisper", "storage") for p in before)

    target = tmp_path / "export"
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "link").parent.mkdir()
    (target / "link").symlink_to(outside)
    with Store.open(storage, StorageRules(), writable=True) as store:
        store.create_metric("link.x", RETENTIONS, "average", 0.0)
        source = StoreSource(store, "store", owned=False)
        path, _ = export_metric(source, "ok./etc/passwd", target, now=NOW)
        assert path == target / "ok" / "%2Fetc%2Fpasswd.wsp"
        assert path.is_file()
        with pytest.raises(UnsafeNameError, match="outside"):
            export_metric(source, "link.x", target, now=NOW)
    assert list(outside.iterdir()) == []
    for bad in ("a..b", "a.b.", "a\x00b"):
        with pytest.raises(UnsafeNameError):
            path_for_name(target, bad)


def test_export_then_whisper_fetch_matches_the_original(tmp_path: Path, whisper_tree: Path) -> None:
    target = tmp_path / "export"
    with open_store(tmp_path) as store:
        import_tree(store, whisper_tree, now=NOW, stream=io.StringIO())
        source = StoreSource(store, "store", owned=False)
        for name in store.match("**"):
            export_metric(source, name, target, now=NOW)
    originals = sorted(p.relative_to(whisper_tree) for p in whisper_tree.rglob("*.wsp"))
    assert sorted(p.relative_to(target) for p in target.rglob("*.wsp")) == originals
    for relative in originals:
        theirs, ours = whisper_tree / relative, target / relative
        info_a, info_b = whisper.info(str(theirs)), whisper.info(str(ours))
        for key in ("aggregationMethod", "xFilesFactor", "maxRetention"):
            assert info_a[key] == info_b[key]
        for step, rows in RETENTIONS:
            time_a, expected = whisper_values(theirs, step, rows)
            time_b, got = whisper_values(ours, step, rows)
            assert time_a == time_b
            assert_same_values(got, expected)


def test_progress_is_plain_lines_off_a_terminal(tmp_path: Path, whisper_tree: Path) -> None:
    from graphite_istat.whisper_io.progress import Progress

    stream = io.StringIO()
    progress = Progress(3, "files", stream, line_interval=0.0)
    for _ in range(3):
        progress.advance()
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("3/3 files (100%")
    assert "\r" not in stream.getvalue()
    # The journal is JSON lines naming the files done.
    with open_store(tmp_path) as store:
        import_tree(store, whisper_tree, now=NOW, stream=io.StringIO())
        journal = ImportJournal.for_tree(store.directory, whisper_tree)
    entries = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert len(entries) == 16 and all(e["path"].endswith(".wsp") for e in entries)
