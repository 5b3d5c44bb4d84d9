"""The ``graphite-istat`` command line, run as a user runs it: the console script in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphite_istat.cli.main import main
from graphite_istat.store.store import shard_of

SCRIPT = Path(sys.executable).with_name("graphite-istat")

# Small archives keep dumps short: 10 s x 60 (10 min), 1 min x 60 (1 h).
SCHEMAS = """\
[small]
match-all = true
retentions = 10s:10m,1m:1h
"""
AGGREGATION = """\
[last]
pattern = \\.last$
aggregationMethod = last
xFilesFactor = 0

[summed]
pattern = \\.total$
aggregationMethod = sum
xFilesFactor = 0

[default]
match-all = true
aggregationMethod = average
xFilesFactor = 0
"""
ALL_STATS = ["avg", "count", "sum", "sumsq", "min", "max", "stddev"]


def write_conf(conf_dir: Path) -> Path:
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "storage-schemas.conf").write_text(SCHEMAS)
    (conf_dir / "storage-aggregation.conf").write_text(AGGREGATION)
    return conf_dir


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory with ./conf holding the small schemas; ./storage is created by the first write."""
    write_conf(tmp_path / "conf")
    return tmp_path


def run_cli(cwd: Path, *args: str, command: tuple[str, ...] = (str(SCRIPT),)) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def ok(cwd: Path, *args: str) -> str:
    """Run a command that must succeed; its stdout."""
    result = run_cli(cwd, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int = 2) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def fetch_json(cwd: Path, metric: str, *args: str) -> dict:
    return json.loads(ok(cwd, "fetch", metric, "--json", *args))


def recent_bucket(step: int = 60, age: int = 120) -> int:
    """A bucket start about ``age`` seconds ago, aligned to ``step`` (so aligned to 10 s too)."""
    t = int(time.time()) - age
    return t - t % step


# -- update and fetch -------------------------------------------------------


def test_update_then_fetch_every_stat_exactly(workdir: Path) -> None:
    b = recent_bucket()
    ok(workdir, "update", "web.latency", f"{b}:1", f"{b + 5}:3", f"{b + 9}:8", f"{b + 20}:-2.5")
    doc = fetch_json(workdir, "web.latency", "--from", str(b - 10), "--until", str(b + 20), "--stat", "all")
    assert doc["start"] == b and doc["step"] == 10 and doc["end"] == b + 30
    assert doc["stat"] == "all"
    values = doc["values"]
    assert list(values) == ALL_STATS
    assert values["count"] == [3, None, 1]  # an empty bucket reads as null
    assert values["sum"] == [12.0, None, -2.5]
    assert values["sumsq"] == [74.0, None, 6.25]
    assert values["min"] == [1.0, None, -2.5]
    assert values["max"] == [8.0, None, -2.5]
    assert values["avg"] == [4.0, None, -2.5]
    assert values["stddev"][0] == pytest.approx(np.std([1.0, 3.0, 8.0]))
    assert values["stddev"][1:] == [None, 0.0]


def test_fetch_plain_output_is_whisper_fetch_style(workdir: Path) -> None:
    b = recent_bucket()
    ok(workdir, "update", "web.latency", f"{b}:1", f"{b + 5}:3")
    out = ok(workdir, "fetch", "web.latency", "--from", str(b - 10), "--until", str(b + 10))
    assert out.splitlines() == [f"{b}\t2.0", f"{b + 10}\tNone"]
    out = ok(workdir, "fetch", "web.latency", "--from", str(b - 10), "--until", str(b), "--stat", "max")
    assert out.splitlines() == [f"{b}\t3.0"]
    out = ok(workdir, "fetch", "web.latency", "--from", str(b - 10), "--until", str(b), "--stat", "all")
    assert out.splitlines() == [
        "timestamp\t" + "\t".join(ALL_STATS),
        f"{b}\t2.0\t2\t4.0\t10.0\t1.0\t3.0\t1.0",
    ]


def test_fetch_json_has_exactly_the_documented_keys_and_the_default_stat(workdir: Path) -> None:
    b = recent_bucket()
    ok(workdir, "update", "requests.total", f"{b}:2", f"{b + 1}:5")
    ok(workdir, "update", "web.latency", f"{b}:2", f"{b + 1}:5")
    summed = fetch_json(workdir, "requests.total", "--from", str(b - 10), "--until", str(b + 10))
    assert set(summed) == {"metric", "start", "end", "step", "stat", "values"}
    assert summed["metric"] == "requests.total"
    assert summed["stat"] == "sum"
    assert summed["values"] == [7.0, None]
    averaged = fetch_json(workdir, "web.latency", "--from", str(b - 10), "--until", str(b + 10))
    assert averaged["stat"] == "average"
    assert averaged["values"] == [3.5, None]
    count = fetch_json(workdir, "web.latency", "--from", str(b - 10), "--until", str(b + 10), "--stat", "count")
    assert count["stat"] == "count" and count["values"] == [2, None]


def test_fetch_chooses_the_coarser_archive_for_an_older_range(workdir: Path) -> None:
    b = recent_bucket()
    ok(workdir, "update", "web.latency", f"{b}:1", f"{b + 30}:5")
    # 20 minutes back is beyond the 10-minute finest archive: the 1-minute one answers.
    now = int(time.time())
    doc = fetch_json(workdir, "web.latency", "--from", str(now - 1200), "--stat", "all")
    assert doc["step"] == 60
    assert doc["values"]["count"][(b - doc["start"]) // 60] == 2
    assert doc["values"]["sum"][(b - doc["start"]) // 60] == 6.0


def test_fetch_defaults_to_the_last_day(workdir: Path) -> None:
    ok(workdir, "update", "web.latency", "N:4")
    doc = fetch_json(workdir, "web.latency")
    # No archive reaches a day back: the one reaching furthest (1 minute) answers.
    assert doc["step"] == 60
    assert 4.0 in doc["values"]


def test_update_n_means_now(workdir: Path) -> None:
    before = int(time.time())
    ok(workdir, "update", "web.latency", "N:7", "N:9")
    doc = fetch_json(workdir, "web.latency", "--from", str(before - 20), "--stat", "all")
    assert sum(v for v in doc["values"]["count"] if v is not None) == 2
    assert max(v for v in doc["values"]["max"] if v is not None) == 9.0


def test_fetch_last_where_stored(workdir: Path) -> None:
    b = recent_bucket()
    ok(workdir, "update", "queue.last", f"{b + 2}:5", f"{b + 7}:1", f"{b + 4}:9")
    doc = fetch_json(workdir, "queue.last", "--from", str(b - 10), "--until", str(b), "--stat", "last")
    assert doc["values"] == [1.0]
    every = fetch_json(workdir, "queue.last", "--from", str(b - 10), "--until", str(b), "--stat", "all")
    assert list(every["values"]) == [*ALL_STATS, "last"]
    default = fetch_json(workdir, "queue.last", "--from", str(b - 10), "--until", str(b))
    assert default["stat"] == "last" and default["values"] == [1.0]


def test_fetch_of_a_range_no_archive_holds_is_empty(workdir: Path) -> None:
    ok(workdir, "update", "web.latency", "N:1")
    assert ok(workdir, "fetch", "web.latency", "--from", "1000", "--until", "2000") == ""
    doc = fetch_json(workdir, "web.latency", "--from", "1000", "--until", "2000")
    assert doc == {"metric": "web.latency", "start": 1000, "end": 2000, "step": None, "stat": "average", "values": []}


def test_update_reports_rejected_points_by_reason(workdir: Path) -> None:
    now = int(time.time())
    result = run_cli(workdir, "update", "web.latency", f"{now}:1", f"{now + 86400}:2", f"{now}:nan")
    assert result.returncode == 0
    assert "rejected 2 of 3" in result.stderr
    assert "too_far_future 1" in result.stderr and "nan 1" in result.stderr
    counts = fetch_json(workdir, "web.latency", "--from", str(now - 20), "--stat", "count")["values"]
    assert sum(v for v in counts if v is not None) == 1


def test_update_exits_1_when_every_point_is_rejected(workdir: Path) -> None:
    result = run_cli(workdir, "update", "web.latency", "1000:1", "N:inf")
    line = assert_one_line_error(result, status=1)
    assert "too_old 1" in line and "inf 1" in line


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    points=st.lists(
        st.tuples(st.integers(0, 59), st.integers(-1000, 1000)), min_size=1, max_size=12
    )
)
def test_update_then_fetch_matches_a_reference(
    capsys: pytest.CaptureFixture[str], points: list[tuple[int, int]]
) -> None:
    """In-process ``main`` with integer values: every stat of the 1-minute bucket is exact."""
    b = recent_bucket()
    with tempfile.TemporaryDirectory() as tmp:
        conf = write_conf(Path(tmp) / "conf")
        storage = Path(tmp) / "storage"
        where = ["--storage-dir", str(storage), "--conf-dir", str(conf)]
        assert main([*where, "update", "m.x", *(f"{b + dt}:{v}" for dt, v in points)]) == 0
        capsys.readouterr()
        # From further back than the 10-minute finest archive: the 1-minute rollup answers.
        status = main([*where, "fetch", "m.x", "--json", "--stat", "all",
                       "--from", str(b - 1200), "--until", str(b + 59)])
        assert status == 0
        doc = json.loads(capsys.readouterr().out)
    values = np.array([v for _, v in points], dtype=np.float64)
    assert doc["step"] == 60
    at = (b - doc["start"]) // 60
    got = {stat: series[at] for stat, series in doc["values"].items()}
    assert got["count"] == len(points)
    assert got["sum"] == values.sum()
    assert got["sumsq"] == (values * values).sum()
    assert got["min"] == values.min() and got["max"] == values.max()
    assert got["avg"] == pytest.approx(values.mean())
    assert got["stddev"] == pytest.approx(values.std(), abs=1e-9)


# -- info, dump, list -------------------------------------------------------


def test_info_shows_archives_aggregation_stats_and_bytes(workdir: Path) -> None:
    ok(workdir, "update", "queue.last", "N:1")
    text = ok(workdir, "info", "queue.last")
    assert "aggregationMethod: last" in text
    assert "xFilesFactor: 0.0" in text
    assert "stats: avg count sum sumsq min max stddev last" in text
    assert "retentionText: 10s:10m" in text and "retentionText: 1m:1h" in text
    doc = json.loads(ok(workdir, "info", "queue.last", "--json"))
    assert doc["maxRetention"] == 3600
    assert [(a["secondsPerPoint"], a["points"]) for a in doc["archives"]] == [(10, 60), (60, 60)]
    data_file = workdir / doc["file"]
    assert data_file.is_file()
    assert doc["fileApparentBytes"] == data_file.stat().st_size
    assert 0 < doc["fileAllocatedBytes"] <= doc["fileApparentBytes"]
    assert doc["fileMetrics"] == 1
    assert 0 < doc["metricApparentBytes"] <= doc["fileApparentBytes"]
    assert doc["metricAllocatedBytes"] == doc["fileAllocatedBytes"]


def test_dump_prints_every_bucket_of_every_archive(workdir: Path) -> None:
    b = recent_bucket()
    ok(workdir, "update", "web.latency", f"{b}:1", f"{b + 5}:3", f"{b + 20}:4")
    lines = ok(workdir, "dump", "web.latency").splitlines()
    assert "aggregationMethod: average" in lines
    first = lines.index("Archive 0 data:")
    second = lines.index("Archive 1 data:")
    assert lines[first + 1] == "timestamp\tcount\tsum\tsumsq\tmin\tmax"
    archive0 = [line for line in lines[first + 2 : second] if line]
    archive1 = lines[second + 2 :]
    assert len(archive0) == 60 and len(archive1) == 60
    assert f"{b}\t2\t4.0\t10.0\t1.0\t3.0" in archive0
    assert f"{b + 20}\t1\t4.0\t16.0\t4.0\t4.0" in archive0
    assert f"{b}\t3\t8.0\t26.0\t1.0\t4.0" in archive1
    empty = [line for line in archive0 if line.split("\t")[1] == "0"]
    assert len(empty) == 58 and all(line.endswith("\t0" + "\tNone" * 4) for line in empty)
    non_empty = ok(workdir, "dump", "web.latency", "--non-empty").splitlines()
    start = non_empty.index("Archive 0 data:")
    assert non_empty[start + 2 : start + 4] == [f"{b}\t2\t4.0\t10.0\t1.0\t3.0", f"{b + 20}\t1\t4.0\t16.0\t4.0\t4.0"]


def test_list_without_and_with_a_pattern(workdir: Path) -> None:
    for name in ("servers.a.cpu", "servers.b.cpu", "servers.b.disk.sda", "db.x"):
        ok(workdir, "update", name, "N:1")
    assert ok(workdir, "list").splitlines() == ["db.x", "servers.a.cpu", "servers.b.cpu", "servers.b.disk.sda"]
    assert ok(workdir, "list", "servers.*.cpu").splitlines() == ["servers.a.cpu", "servers.b.cpu"]
    assert ok(workdir, "list", "servers.b.**").splitlines() == ["servers.b.cpu", "servers.b.disk.sda"]
    assert ok(workdir, "list", "{db,nothing}.*").splitlines() == ["db.x"]
    assert ok(workdir, "list", "nothing.*") == ""


# -- delete -----------------------------------------------------------------


def test_delete_dry_run_then_delete(workdir: Path) -> None:
    for name in ("servers.a.cpu", "servers.b.cpu", "db.x"):
        ok(workdir, "update", name, "N:1")
    assert ok(workdir, "delete", "servers.*.cpu", "--dry-run").splitlines() == ["servers.a.cpu", "servers.b.cpu"]
    assert ok(workdir, "list").splitlines() == ["db.x", "servers.a.cpu", "servers.b.cpu"]
    assert ok(workdir, "delete", "servers.*.cpu").splitlines() == ["servers.a.cpu", "servers.b.cpu"]
    assert ok(workdir, "list").splitlines() == ["db.x"]
    line = assert_one_line_error(run_cli(workdir, "delete", "servers.*.cpu"), status=1)
    assert "no metric matches" in line
    assert "unknown metric" in assert_one_line_error(run_cli(workdir, "fetch", "servers.a.cpu"))


def test_delete_then_create_reuses_the_slot_and_leaves_no_old_data(workdir: Path) -> None:
    b = recent_bucket()
    ok(workdir, "update", "old.metric", f"{b}:100")
    old = json.loads(ok(workdir, "info", "old.metric", "--json"))
    shards = json.loads((workdir / "storage" / "store.json").read_text())["shards"]
    same_shard = next(
        f"new.metric{i}" for i in range(10_000) if shard_of(f"new.metric{i}", shards) == old["shard"]
    )
    assert ok(workdir, "delete", "old.metric") == "old.metric\n"
    ok(workdir, "update", same_shard, f"{b + 10}:1")
    new = json.loads(ok(workdir, "info", same_shard, "--json"))
    assert new["slot"] == old["slot"] and new["file"] == old["file"]
    assert new["fileApparentBytes"] == old["fileApparentBytes"]
    doc = fetch_json(workdir, same_shard, "--from", str(b - 10), "--until", str(b + 10), "--stat", "all")
    assert doc["values"]["count"] == [None, 1]
    assert doc["values"]["max"] == [None, 1.0]


# -- check ------------------------------------------------------------------


def test_check_ok_then_names_a_corrupt_file(workdir: Path) -> None:
    ok(workdir, "update", "web.latency", "N:1")
    assert ok(workdir, "check") == "OK\n"
    data_file = next((workdir / "storage" / "data").glob("*.ist"))
    with open(data_file, "r+b") as f:
        f.seek(20)
        byte = f.read(1)
        f.seek(20)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = run_cli(workdir, "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert data_file.name in result.stdout
    # Reading the metric in the corrupt file fails with one line and status 1.
    line = assert_one_line_error(run_cli(workdir, "fetch", "web.latency"), status=1)
    assert data_file.name in line


def test_check_of_a_missing_directory_is_a_usage_error(workdir: Path) -> None:
    line = assert_one_line_error(run_cli(workdir, "check", "--storage-dir", str(workdir / "nowhere")))
    assert "nowhere" in line


# -- reading while a writer holds the lock ------------------------------------

WRITER = """
import sys, time
from graphite_istat.config import load_storage_rules
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.store import Store
store = Store.open(sys.argv[1], load_storage_rules(sys.argv[2]), writable=True)
store.write(WriteBatch.from_points([("held.metric", time.time(), 42.0)]))
print("ready", flush=True)
sys.stdin.read()
store.close()
"""


def test_reading_works_while_another_process_holds_the_writer_lock(workdir: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(workdir / "storage"), str(workdir / "conf")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        assert ok(workdir, "list") == "held.metric\n"
        assert 42.0 in fetch_json(workdir, "held.metric", "--from", str(int(time.time()) - 30))["values"]
        assert "aggregationMethod: average" in ok(workdir, "info", "held.metric")
        assert "Archive 1 data:" in ok(workdir, "dump", "held.metric")
        assert ok(workdir, "delete", "held.*", "--dry-run") == "held.metric\n"
        assert ok(workdir, "check") == "OK\n"
        for args in (("update", "other.metric", "N:1"), ("delete", "held.metric")):
            line = assert_one_line_error(run_cli(workdir, *args), status=1)
            assert f"pid {writer.pid}" in line and "already open for writing" in line
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(timeout=60)
    assert writer.returncode == 0
    assert ok(workdir, "list") == "held.metric\n"


# -- bad arguments: one line, status 2, no traceback ---------------------------

BAD_ARGUMENTS = [
    (("fetch", "no.such.metric"), "unknown metric 'no.such.metric'"),
    (("info", "no.such.metric"), "unknown metric"),
    (("dump", "no.such.metric"), "unknown metric"),
    (("update", "web.latency", "abc:1"), "not a Unix timestamp"),
    (("update", "web.latency", "12"), "not TIMESTAMP:VALUE"),
    (("update", "web.latency", "12:zz"), "'zz' is not a number"),
    (("update", "web.latency"), "required"),
    (("update", "web..latency", "N:1"), "invalid metric name"),
    (("fetch", "web.latency", "--stat", "median"), "invalid choice"),
    (("fetch", "web.latency", "--stat", "last"), "does not store 'last'"),
    (("fetch", "web.latency", "--from", "yesterday"), "not a Unix timestamp"),
    (("fetch", "web.latency", "--from", "200", "--until", "100"), "is after"),
    (("list", "servers.{a"), "'{'"),
    (("list", "servers.[ab"), "'['"),
    (("delete", "servers.{a"), "'{'"),
    (("update", "web.latency", "N:1", "--conf-dir", "missing-conf"), "missing-conf"),
    (("list", "--storage-dir", "not-a-store"), "not a graphite-istat storage directory"),
    (("fetch", "web.latency", "--config", "no-carbon.conf"), "no-carbon.conf"),
    (("frobnicate",), "invalid choice"),
    ((), "required"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_ARGUMENTS, ids=[" ".join(a) or "none" for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_get_one_line_and_status_2(workdir: Path, args: tuple[str, ...], expected: str) -> None:
    ok(workdir, "update", "web.latency", "N:1")
    line = assert_one_line_error(run_cli(workdir, *args))
    assert expected in line


def test_a_bad_configuration_file_is_named_with_its_line(workdir: Path) -> None:
    (workdir / "conf" / "storage-schemas.conf").write_text("[broken]\nmatch-all = true\nretentions = 10s:abc\n")
    line = assert_one_line_error(run_cli(workdir, "update", "web.latency", "N:1"))
    assert "storage-schemas.conf:3" in line
    (workdir / "carbon.conf").write_text("[istat]\nSHARDS = many\n")
    line = assert_one_line_error(run_cli(workdir, "list", "--config", "carbon.conf"))
    assert "carbon.conf:2" in line and "SHARDS" in line


# -- options and entry points ---------------------------------------------------


def test_config_gives_the_storage_and_conf_directories(tmp_path: Path) -> None:
    etc = write_conf(tmp_path / "etc")
    data = tmp_path / "var" / "data"
    (etc / "carbon.conf").write_text(f"[cache]\nLOCAL_DATA_DIR = {data}\n\n[istat]\nSHARDS = 3\n")
    ok(tmp_path, "--config", str(etc / "carbon.conf"), "update", "web.latency", "N:1")
    assert json.loads((data / "store.json").read_text())["shards"] == 3
    assert ok(tmp_path, "list", "--config", str(etc / "carbon.conf")) == "web.latency\n"
    # --storage-dir wins over the carbon.conf.
    line = assert_one_line_error(
        run_cli(tmp_path, "list", "--config", str(etc / "carbon.conf"), "--storage-dir", "elsewhere")
    )
    assert "elsewhere" in line


def test_global_options_go_before_or_after_the_subcommand(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "c")
    store = tmp_path / "s"
    ok(tmp_path, "--storage-dir", str(store), "--conf-dir", str(conf), "update", "a.b", "N:1")
    ok(tmp_path, "update", "a.c", "N:1", "--storage-dir", str(store), "--conf-dir", str(conf))
    assert ok(tmp_path, "--storage-dir", str(store), "list") == "a.b\na.c\n"
    assert ok(tmp_path, "list", "--storage-dir", str(store)) == "a.b\na.c\n"


@pytest.mark.parametrize("module", ["graphite_istat.cli", "graphite_istat.cli.main"])
def test_python_dash_m_runs_the_same_command(workdir: Path, module: str) -> None:
    ok(workdir, "update", "web.latency", "N:1")
    result = run_cli(workdir, "list", command=(sys.executable, "-m", module))
    assert result.returncode == 0 and result.stdout == "web.latency\n"
    result = run_cli(workdir, "fetch", "nope", command=(sys.executable, "-m", module))
    assert assert_one_line_error(result) == "graphite-istat fetch: error: unknown metric 'nope'"


def test_help_lists_every_subcommand_and_imports_no_adapter() -> None:
    code = (
        "import sys\n"
        "from graphite_istat.cli.main import build_parser\n"
        "build_parser()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'twisted', 'django', 'carbon', 'graphite'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"
    help_text = run_cli(Path.cwd(), "--help").stdout
    for name in ("update", "fetch", "info", "dump", "list", "delete", "check"):
        assert name in help_text
