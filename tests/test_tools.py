"""The whisper tools' equivalents, run through the command line's entry point on real storage directories."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import whisper

from graphite_istat.cli.main import main
from graphite_istat.config import StorageRules, load_storage_rules
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.store import SUB_COUNTERS, Store
from graphite_istat.whisper_io.cells import read_archive
from graphite_istat.whisper_io.rebuild import rebuild
from graphite_istat.whisper_io.tools import JOURNAL_DIR, _save_journal

SCHEMAS = "[small]\nmatch-all = true\nretentions = 10s:10m,1m:1h\n"
AGGREGATION = "[default]\nmatch-all = true\naggregationMethod = average\nxFilesFactor = 0\n"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    directory = tmp_path / "conf"
    directory.mkdir()
    (directory / "storage-schemas.conf").write_text(SCHEMAS)
    (directory / "storage-aggregation.conf").write_text(AGGREGATION)
    return directory


def write_points(storage: Path, conf: Path, points: list[tuple[str, int, float]]) -> None:
    with Store.open(storage, load_storage_rules(conf), writable=True) as store:
        result = store.write(WriteBatch.from_points(points))
        assert result.accepted == len(points)


def raw_points(name: str, start: int, end: int, every: int, seed: int) -> list[tuple[str, int, float]]:
    rng = np.random.default_rng(seed)
    return [(name, t, float(np.round(rng.normal() * 10, 2))) for t in range(start, end, every)]


def cli(storage: Path, *args: str) -> int:
    return main(["--storage-dir", str(storage), *args])


def values_at(storage: Path, name: str, archive: int, stat: str | None = None) -> dict[int, float]:
    """bucket -> value of one archive, read as a user would (read-only store)."""
    with Store.open(storage, writable=False) as store:
        spec = store.info(name).layout.archives[archive]
        now = int(time.time())
        result = store.fetch([name], now - spec.seconds, now, now, fields=(*SUB_COUNTERS, "last"), archive=archive)
        ((_, grid, series_set, row),) = list(result.series())
        values = series_set.default_values()[row] if stat is None else series_set.stat(stat)[row]
        return {int(b): float(v) for b, v in zip(grid.buckets(), values, strict=True) if not np.isnan(v)}


def test_resize_combines_cells_exactly_into_coarser_archives(tmp_path: Path, conf: Path, capsys) -> None:
    storage = tmp_path / "storage"
    now = int(time.time())
    points = raw_points("m", now - 50 * 60, now, 2, seed=1)
    write_points(storage, conf, points)
    assert cli(storage, "resize", "m", "1m:2h", "5m:1d") == 0
    assert "resized m: 10s:10m,1m:1h -> 1m:2h,5m:1d" in capsys.readouterr().out
    with Store.open(storage, writable=False) as store:
        info = store.info("m")
        assert [(a.step, a.rows) for a in info.layout.archives] == [(60, 120), (300, 288)]
        cells = read_archive(store, "m", 1, int(time.time()))
    assert not cells.approximate.any()
    ts = np.array([t for _, t, _ in points])
    vs = np.array([v for _, _, v in points])
    checked = 0
    for j, bucket in enumerate(cells.buckets.tolist()):
        inside = (ts >= bucket) & (ts < bucket + 300)
        if bucket < now - 50 * 60 + 300:
            continue  # the first 5-minute bucket holds only part of its points (none were sent earlier)
        assert cells.counters["count"][j] == inside.sum()
        assert cells.counters["min"][j] == vs[inside].min()
        assert cells.counters["max"][j] == vs[inside].max()
        assert cells.counters["sum"][j] == pytest.approx(vs[inside].sum(), abs=1e-9)
        checked += 1
    assert checked >= 8


def test_resize_to_a_finer_step_keeps_every_point_marked_approximate(tmp_path: Path, conf: Path, capsys) -> None:
    storage = tmp_path / "storage"
    now = int(time.time())
    write_points(storage, conf, raw_points("m", now - 30 * 60, now, 5, seed=2))
    with Store.open(storage, writable=False) as store:
        old = read_archive(store, "m", 1, now)
    assert cli(storage, "resize", "m", "30s:2h", "--aggregationMethod", "max", "--xFilesFactor", "0.25") == 0
    with Store.open(storage, writable=False) as store:
        info = store.info("m")
        assert (info.aggregation_method, info.x_files_factor) == ("max", 0.25)
        new = read_archive(store, "m", 0, int(time.time()))
    # Where the old 10 s cells cover, 30 s buckets are exact; the part only
    # the old 1 min archive held lands, whole, in one 30 s bucket per minute.
    assert new.approximate.any() and not new.approximate.all()
    older = new.buckets < old.buckets[-1] - 15 * 60
    assert int(new.counters["count"][older].sum()) == int(old.counters["count"][old.buckets < old.buckets[-1] - 15 * 60].sum())
    assert new.approximate[older].all()


def test_an_interrupted_resize_is_finished_by_the_next(tmp_path: Path, conf: Path, capsys) -> None:
    storage = tmp_path / "storage"
    now = int(time.time())
    write_points(storage, conf, raw_points("a.m", now - 20 * 60, now, 3, seed=3))
    write_points(storage, conf, raw_points("b.m", now - 20 * 60, now, 3, seed=4))
    expected = {name: values_at(storage, name, 1) for name in ("a.m", "b.m")}
    with Store.open(storage, StorageRules(), writable=True) as store:
        for name in ("a.m", "b.m"):
            info = store.info(name)
            old = [(a.step, a.rows, read_archive(store, name, i, now)) for i, a in enumerate(info.layout.archives)]
            meta = {"name": name, "retentions": [[60, 180]], "method": "average", "x_files_factor": 0.0,
                    "keep_last": False, "now": now}
            journal = store.directory / JOURNAL_DIR / f"resize-{name}.npz"
            journal.parent.mkdir(exist_ok=True)
            _save_journal(journal, meta, rebuild(old, [(60, 180)], now))
        # a.m: killed before the metric was touched; b.m: killed right after deleting it.
        store.delete("b.m")
    assert cli(storage, "resize", "--resume") == 0
    out = capsys.readouterr().out
    assert "finished interrupted resize of a.m" in out and "finished interrupted resize of b.m" in out
    assert not list((storage / JOURNAL_DIR).glob("resize-*"))
    for name in ("a.m", "b.m"):
        with Store.open(storage, writable=False) as store:
            assert [(a.step, a.rows) for a in store.info(name).layout.archives] == [(60, 180)]
        got = values_at(storage, name, 0)
        shared = set(got) & set(expected[name])
        assert len(shared) >= 18
        for bucket in shared:
            assert got[bucket] == pytest.approx(expected[name][bucket], rel=1e-12)


def test_set_aggregation_method_and_xff(tmp_path: Path, conf: Path, capsys) -> None:
    storage = tmp_path / "storage"
    now = int(time.time())
    write_points(storage, conf, raw_points("m", now - 20 * 60, now, 3, seed=5))
    maxima = values_at(storage, "m", 1, "max")
    assert cli(storage, "set-aggregation-method", "m", "max") == 0
    assert capsys.readouterr().out == "Updated aggregation method: m (average -> max)\n"
    assert values_at(storage, "m", 1) == maxima  # the method's value is exact at once
    assert cli(storage, "set-aggregation-method", "m", "max", "0.5") == 0
    capsys.readouterr()
    assert cli(storage, "set-xff", "m", "0.75") == 0
    assert capsys.readouterr().out == "Updated xFilesFactor: m (0.5 -> 0.75)\n"
    shown = values_at(storage, "m", 1)  # only the first, partial minute can be hidden by it
    assert len(shown) >= len(maxima) - 1 and all(maxima[b] == v for b, v in shown.items())
    assert cli(storage, "set-aggregation-method", "m", "last") == 0
    assert "(max -> last) (rebuilt to keep the last point)" in capsys.readouterr().out
    with Store.open(storage, writable=False) as store:
        info = store.info("m")
        assert (info.aggregation_method, info.layout.with_last, info.x_files_factor) == ("last", True, 0.75)
    assert values_at(storage, "m", 1, "max") == maxima
    assert cli(storage, "set-xff", "m", "1.5") == 2
    assert cli(storage, "set-aggregation-method", "nothing.here", "sum") == 1


def two_stores(tmp_path: Path, conf: Path) -> tuple[Path, Path, int]:
    now = int(time.time())
    base = now - now % 60 - 8 * 60  # inside the 10-minute finest archive
    a, b = tmp_path / "a", tmp_path / "b"
    write_points(a, conf, [("m", base + 10 * i, 1.0) for i in range(0, 30)] + [("only.a", base, 7.0)])
    write_points(b, conf, [("m", base + 10 * i, 2.0) for i in range(20, 47)])
    return a, b, base


def test_merge_replaces_where_the_source_has_data(tmp_path: Path, conf: Path, capsys) -> None:
    a, b, base = two_stores(tmp_path, conf)
    assert cli(a, "merge", str(a), str(b)) == 0
    assert "metrics: 2\ncreated: 1\n" in capsys.readouterr().out
    got = values_at(b, "m", 0)
    assert all(got[base + 10 * i] == 1.0 for i in range(0, 30))
    assert all(got[base + 10 * i] == 2.0 for i in range(30, 47))
    assert values_at(b, "only.a", 0) == {base: 7.0}


def test_fill_only_writes_empty_buckets(tmp_path: Path, conf: Path, capsys) -> None:
    a, b, base = two_stores(tmp_path, conf)
    assert cli(a, "fill", str(a), str(b), "m") == 0
    got = values_at(b, "m", 0)
    assert all(got[base + 10 * i] == 1.0 for i in range(0, 20))
    assert all(got[base + 10 * i] == 2.0 for i in range(20, 47))
    with Store.open(b, writable=False) as store:
        assert "only.a" not in store  # the pattern limited the copy


def test_fill_and_merge_from_whisper_files(tmp_path: Path, conf: Path, capsys) -> None:
    now = int(time.time())
    wsp = tmp_path / "w" / "disk" / "used.wsp"
    wsp.parent.mkdir(parents=True)
    whisper.create(str(wsp), [(10, 60), (60, 60)], 0.0, "average")
    whisper.update_many(str(wsp), [(now - 600 + 10 * i, float(i)) for i in range(55)], now=now)
    store_dir = tmp_path / "store"
    write_points(store_dir, conf, [("disk.used", now - 100, 99.0)])
    assert cli(store_dir, "fill", str(tmp_path / "w"), str(store_dir)) == 0
    got = values_at(store_dir, "disk.used", 0)
    assert got[(now - 100) - (now - 100) % 10] == 99.0  # kept
    assert len(got) >= 50
    assert cli(store_dir, "merge", str(wsp), str(store_dir), "--metric", "disk.used") == 0
    (start, _, step), values = whisper.fetch(str(wsp), now - 600, now, now=now)
    expected = {start + step * i: v for i, v in enumerate(values) if v is not None}
    got = values_at(store_dir, "disk.used", 0)
    for bucket, value in expected.items():
        assert got[bucket] == value


def test_diff_lists_the_buckets_that_differ(tmp_path: Path, conf: Path, capsys) -> None:
    a, b, base = two_stores(tmp_path, conf)
    assert cli(a, "diff", str(a), str(a)) == 0
    assert "0 of" in capsys.readouterr().out
    assert cli(a, "diff", str(a), str(b), "--json") == 0
    report = {m["metric"]: m for m in json.loads(capsys.readouterr().out)["metrics"]}
    assert report["only.a"]["problem"] == f"only in {a}"
    finest = report["m"]["archives"][0]
    assert finest["total_differences"] == 47
    differences = {ts: (x, y) for ts, x, y in finest["differences"]}
    assert differences[base] == (1.0, None)
    assert differences[base + 200] == (1.0, 2.0)
    assert differences[base + 460] == (None, 2.0)
    assert cli(a, "diff", str(a), str(b), "m", "--summary", "--ignore-empty") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("m archive 0 (10s): 10 of 10 buckets differ")
    assert len(lines) == 2


def test_import_export_and_diff_on_the_command_line(tmp_path: Path, capsys) -> None:
    now = int(time.time())
    tree = tmp_path / "whisper"
    for name, method in (("web.latency", "max"), ("web.requests", "sum")):
        path = tree / f"{name.replace('.', '/')}.wsp"
        path.parent.mkdir(parents=True, exist_ok=True)
        whisper.create(str(path), [(10, 60), (60, 120)], 0.0, method)
        rng = np.random.default_rng(len(name))
        whisper.update_many(str(path), [(now - 7000 + 7 * i, float(rng.integers(100))) for i in range(1000)], now=now)
    (tree / "broken.wsp").write_bytes(b"")
    storage = tmp_path / "storage"
    assert cli(storage, "import-whisper", str(tree), "--jobs", "2") == 1  # one file skipped
    captured = capsys.readouterr()
    assert "files imported: 2\n" in captured.out and "skipped: 1\n" in captured.out
    assert f"skipped {tree / 'broken.wsp'}: empty file" in captured.err
    assert cli(storage, "import-whisper", str(tree), "--json") == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["files"], summary["already_done"], summary["skipped"]) == (0, 2, 1)
    assert cli(storage, "diff", str(tree), str(storage), "--summary") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"broken: only in {tree}"
    assert len(lines) == 5 and all(" 0 of " in line for line in lines[1:]), lines
    target = tmp_path / "export"
    assert cli(storage, "export-whisper", str(target), "web.*") == 0
    assert "metrics exported: 2\n" in capsys.readouterr().out
    assert cli(storage, "diff", str(tree / "web"), str(target / "web"), "--summary") == 0
    assert all(" 0 of " in line for line in capsys.readouterr().out.splitlines())
