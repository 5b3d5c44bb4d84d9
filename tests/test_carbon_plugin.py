"""The carbon plugin in-process: carbon's writer calls against a real store in tmp_path.

The calls are made in the order carbon's writer makes them (exists, create
with carbon's archive list, write with carbon's datapoints); the processes
test (test_carbon_plugin_processes.py) runs stock carbon-cache itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from carbon.conf import Settings
from carbon.database import TimeSeriesDatabase
from twisted.python import log as twisted_log

from graphite_istat.carbon_plugin import CarbonStoreSettings, IstatDatabase
from graphite_istat.cli.carbon_cache import carbon_arguments
from graphite_istat.cli.main import build_parser, main
from graphite_istat.config import ConfigError
from graphite_istat.store.store import Store

SCHEMAS = """\
[carbon]
pattern = ^carbon\\.
retentions = 60:90d

[lasts]
pattern = ^gauges\\.
retentions = 10s:6h,1m:7d
finestBucket = last

[default]
pattern = .*
retentions = 10s:6h,1m:7d
"""
AGGREGATION = """\
[sums]
pattern = \\.count$
xFilesFactor = 0
aggregationMethod = sum

[default]
pattern = .*
xFilesFactor = 0.5
aggregationMethod = average
"""
DEFAULT_ARCHIVES = [(10, 2160), (60, 10080)]


def carbon_settings(tmp_path: Path, **overrides: object) -> Settings:
    """carbon's settings object as carbon builds it: defaults, then carbon.conf's [cache] keys."""
    settings = Settings()
    storage_dir = tmp_path / "storage"
    settings.update(
        STORAGE_DIR=str(storage_dir),
        LOCAL_DATA_DIR=str(storage_dir / "whisper"),
        CONF_DIR=str(tmp_path / "conf"),
    )
    settings.update(overrides)
    return settings


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "conf"
    directory.mkdir()
    (directory / "storage-schemas.conf").write_text(SCHEMAS)
    (directory / "storage-aggregation.conf").write_text(AGGREGATION)
    return directory


@pytest.fixture
def database(tmp_path: Path, conf_dir: Path) -> Iterator[IstatDatabase]:
    db = IstatDatabase(carbon_settings(tmp_path))
    yield db
    db.close()


@pytest.fixture
def carbon_log() -> Iterator[list[str]]:
    """The messages the plugin logs through carbon's log (Twisted's log)."""
    messages: list[str] = []

    def observe(event: dict) -> None:
        messages.append(" ".join(str(part) for part in event.get("message", ())))

    twisted_log.addObserver(observe)
    yield messages
    twisted_log.removeObserver(observe)


def read_bucket(storage_dir: Path, name: str, bucket: int, stat: str) -> float:
    """One stat of one finest bucket, read by a separate read-only store."""
    with Store.open(storage_dir, writable=False) as reader:
        result = reader.fetch_stat(name, bucket - 1, bucket + 1, stat=stat)
    assert result is not None
    grid, values = result
    return float(values[list(grid.buckets()).index(bucket)])


def recent_bucket(step: int = 10, back: int = 3) -> int:
    import time

    now = int(time.time())
    return now - now % step - back * step


# -- registration and settings ----------------------------------------------------


def test_database_istat_names_the_plugin():
    assert TimeSeriesDatabase.plugins["istat"] is IstatDatabase
    assert {"average", "sum", "last", "max", "min"} <= set(IstatDatabase.aggregationMethods)


def test_store_goes_beside_carbons_default_whisper_directory(tmp_path: Path):
    location = CarbonStoreSettings.from_carbon(carbon_settings(tmp_path))
    assert location.storage_dir == tmp_path / "storage" / "istat"
    assert location.conf_dir == tmp_path / "conf"


def test_explicit_local_data_dir_and_istat_storage_dir(tmp_path: Path):
    explicit = carbon_settings(tmp_path, LOCAL_DATA_DIR=str(tmp_path / "data"))
    assert CarbonStoreSettings.from_carbon(explicit).storage_dir == tmp_path / "data"
    overridden = carbon_settings(
        tmp_path, LOCAL_DATA_DIR=str(tmp_path / "data"), ISTAT_STORAGE_DIR=str(tmp_path / "st")
    )
    assert CarbonStoreSettings.from_carbon(overridden).storage_dir == tmp_path / "st"


def test_istat_options_come_from_carbon_settings(tmp_path: Path):
    # carbon types unknown keys itself: "4" arrives as 4, "0.5" as 0.5.
    settings = carbon_settings(
        tmp_path, ISTAT_SHARDS=4, ISTAT_FUTURE_LIMIT=30, ISTAT_FSYNC_INTERVAL=0.5
    )
    options = CarbonStoreSettings.from_carbon(settings).options
    assert (options.shards, options.future_limit, options.fsync_interval) == (4, 30, 0.5)


@pytest.mark.parametrize(
    ("key", "value"),
    [("ISTAT_SHARDS", 0), ("ISTAT_FSYNC_INTERVAL", "soon"), ("ISTAT_FUTURE_LIMIT", -1)],
)
def test_bad_istat_option_is_a_config_error_naming_the_key(tmp_path: Path, key: str, value: object):
    with pytest.raises(ConfigError, match=key):
        CarbonStoreSettings.from_carbon(carbon_settings(tmp_path, **{key: value}))


def test_bad_storage_schemas_stop_the_plugin_at_construction(tmp_path: Path, conf_dir: Path):
    (conf_dir / "storage-schemas.conf").write_text("[x]\npattern = .*\nretentions = 10s:abc\n")
    with pytest.raises(ConfigError, match=r"storage-schemas\.conf"):
        IstatDatabase(carbon_settings(tmp_path))


def test_construction_opens_nothing(tmp_path: Path, conf_dir: Path):
    # carbon constructs the plugin for `stop` too, while the running cache holds the store.
    IstatDatabase(carbon_settings(tmp_path))
    assert not (tmp_path / "storage").exists()


# -- carbon's writer calls ------------------------------------------------------------


def test_writer_sequence_stores_every_point_in_istat_sub_counters(database: IstatDatabase):
    bucket = recent_bucket()
    assert not database.exists("web.latency")
    database.create("web.latency", DEFAULT_ARCHIVES, None, None)
    assert database.exists("web.latency")
    # carbon hands the points as dict items (one value per timestamp).
    database.write("web.latency", {bucket: 1.0, bucket + 3: 5.0, bucket + 7: 3.0}.items())
    directory = database.location.storage_dir
    assert read_bucket(directory, "web.latency", bucket, "count") == 3
    assert read_bucket(directory, "web.latency", bucket, "sum") == 9.0
    assert read_bucket(directory, "web.latency", bucket, "min") == 1.0
    assert read_bucket(directory, "web.latency", bucket, "max") == 5.0
    assert read_bucket(directory, "web.latency", bucket, "avg") == 3.0


def test_create_uses_carbons_archives_and_the_aggregation_rules(database: IstatDatabase):
    database.create("web.hits.count", DEFAULT_ARCHIVES, 0.0, "sum")
    info = database.store().info("web.hits.count")
    assert [(a.step, a.rows) for a in info.layout.archives] == DEFAULT_ARCHIVES
    assert (info.aggregation_method, info.x_files_factor) == ("sum", 0.0)
    # No storage-aggregation.conf section matched in carbon: it passes None, None.
    database.create("web.other", DEFAULT_ARCHIVES, None, None)
    other = database.store().info("web.other")
    assert (other.aggregation_method, other.x_files_factor) == ("average", 0.5)


def test_finest_bucket_last_comes_from_the_rules(database: IstatDatabase):
    bucket = recent_bucket()
    database.create("gauges.queue", DEFAULT_ARCHIVES, None, None)
    assert database.store().info("gauges.queue").layout.keep_last
    database.write("gauges.queue", [(bucket + 1, 7.0)])
    database.write("gauges.queue", [(bucket + 2, 4.0)])
    assert read_bucket(database.location.storage_dir, "gauges.queue", bucket, "count") == 1
    assert read_bucket(database.location.storage_dir, "gauges.queue", bucket, "max") == 4.0


def test_carbons_archive_list_wins_and_a_difference_is_logged_once(
    database: IstatDatabase, carbon_log: list[str]
):
    carbon_list = [(60, 1440)]
    database.create("web.a", carbon_list, None, None)
    database.create("web.b", carbon_list, None, None)
    for name in ("web.a", "web.b"):
        archives = database.store().info(name).layout.archives
        assert [(a.step, a.rows) for a in archives] == carbon_list
    warnings = [m for m in carbon_log if "carbon creates" in m]
    assert len(warnings) == 1
    assert "web.a" in warnings[0] and "(10, 2160)" in warnings[0]


def test_matching_archive_list_logs_nothing(database: IstatDatabase, carbon_log: list[str]):
    database.create("carbon.agents.x.cpu", [(60, 129600)], None, None)
    assert not [m for m in carbon_log if "carbon creates" in m]


def test_edited_schemas_are_reread_like_carbon_does(
    database: IstatDatabase, conf_dir: Path, carbon_log: list[str]
):
    database.create("web.before", DEFAULT_ARCHIVES, None, None)
    schemas = conf_dir / "storage-schemas.conf"
    schemas.write_text("[default]\npattern = .*\nretentions = 1m:30d\n")
    stat = schemas.stat()
    os.utime(schemas, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    database.create("web.after", [(60, 43200)], None, None)
    assert not [m for m in carbon_log if "carbon creates" in m]
    # Metrics the store creates by itself (a write without create) follow the new rules too.
    database.write("web.unannounced", [(recent_bucket(60), 1.0)])
    archives = database.store().info("web.unannounced").layout.archives
    assert [(a.step, a.rows) for a in archives] == [(60, 43200)]


def test_rejected_points_are_counted_by_reason_and_logged(
    database: IstatDatabase, carbon_log: list[str]
):
    database.create("web.old", DEFAULT_ARCHIVES, None, None)
    database.write(
        "web.old", [(1_000_000, 1.0), (recent_bucket(), math.nan), (recent_bucket(), 2.0)]
    )
    assert database.rejected_points == {"too_old": 1, "nan": 1}
    assert any("too_old 1" in m and "nan 1" in m for m in carbon_log)


def test_metadata_round_trip(database: IstatDatabase):
    database.create("web.meta", DEFAULT_ARCHIVES, 0.5, "average")
    assert database.getMetadata("web.meta", "aggregationMethod") == "average"
    assert database.setMetadata("web.meta", "aggregationMethod", "max") == "average"
    assert database.getMetadata("web.meta", "aggregationMethod") == "max"
    assert database.setMetadata("web.meta", "xFilesFactor", 0.25) == 0.5
    assert database.getMetadata("web.meta", "xFilesFactor") == 0.25
    with Store.open(database.location.storage_dir, writable=False) as reader:
        info = reader.info("web.meta")
    assert (info.aggregation_method, info.x_files_factor) == ("max", 0.25)


def test_metadata_refuses_unknown_keys_and_methods(database: IstatDatabase):
    database.create("web.meta", DEFAULT_ARCHIVES, 0.5, "average")
    with pytest.raises(ValueError, match="Unsupported metadata key"):
        database.getMetadata("web.meta", "retentions")
    with pytest.raises(ValueError, match="unknown aggregation method"):
        database.setMetadata("web.meta", "aggregationMethod", "median")
    assert database.getMetadata("web.meta", "aggregationMethod") == "average"


def test_filesystem_path_is_the_shard_file(database: IstatDatabase):
    assert database.getFilesystemPath("web.nowhere") is None
    database.create("web.here", DEFAULT_ARCHIVES, None, None)
    path = database.getFilesystemPath("web.here")
    assert path is not None and Path(path).is_file()
    assert Path(path).parent.parent == database.location.storage_dir


def test_validate_archive_list_raises_value_error_as_carbon_expects(database: IstatDatabase):
    database.validateArchiveList([(10, 2160), (60, 10080)])
    with pytest.raises(ValueError, match="same precision"):
        database.validateArchiveList([(60, 10), (60, 20)])
    with pytest.raises(ValueError, match="evenly divide"):
        database.validateArchiveList([(10, 360), (15, 1000)])


def test_tagged_series_are_stored_under_carbons_normalised_name(database: IstatDatabase):
    name = "cpu.load;dc=eu;host=web1"
    database.create(name, DEFAULT_ARCHIVES, None, None)
    database.write(name, [(recent_bucket(), 0.5)])
    assert read_bucket(database.location.storage_dir, name, recent_bucket(), "sum") == 0.5


def test_close_releases_the_writer_lock(database: IstatDatabase):
    database.create("web.x", DEFAULT_ARCHIVES, None, None)
    database.close()
    Store.open(database.location.storage_dir, database.rules_files.rules, writable=True).close()


# -- the command line ---------------------------------------------------------------


def test_command_line_passes_carbons_options_through():
    args = build_parser().parse_args(
        ["carbon-cache", "--debug", "--instance", "b", "--config", "c/carbon.conf", "stop"]
    )
    assert carbon_arguments(args) == [
        "--debug",
        "--instance",
        "b",
        "--config",
        "c/carbon.conf",
        "stop",
    ]


def test_command_line_refuses_storage_dir(capsys: pytest.CaptureFixture[str]):
    assert main(["carbon-cache", "--storage-dir", "x", "start"]) == 2
    assert "ISTAT_STORAGE_DIR" in capsys.readouterr().err
