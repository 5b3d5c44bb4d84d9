"""Configuration files as an operator writes them: carbon's syntax, carbon's
semantics, and an error that says file, line and problem for every mistake."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import whisper
from hypothesis import given
from hypothesis import strategies as st

from graphite_istat.config import (
    DEFAULT_AGGREGATION,
    DEFAULT_SCHEMA,
    CarbonConf,
    ConfigError,
    Retention,
    StorageRules,
    format_retention,
    load_carbon_conf,
    load_storage_rules,
    parse_retention,
    parse_storage_aggregation,
    parse_storage_schemas,
    validate_retentions,
)

REPO_CONF = Path(__file__).resolve().parent.parent / "conf"
CARBON_EXAMPLES = Path(sys.prefix) / "conf"  # where the carbon package installs its examples


# --- retentions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "step", "points"),
    [
        ("60:1440", 60, 1440),
        ("10:6", 10, 6),
        ("10s:6h", 10, 2160),
        ("1m:7d", 60, 10080),
        ("10m:5y", 600, 262800),
        ("1h:2w", 3600, 336),
        ("10sec:1hour", 10, 360),
        ("10second:2hours", 10, 720),
        ("10seconds:1days", 10, 8640),
        ("1min:1day", 60, 1440),
        ("5minute:1week", 300, 2016),
        ("1minutes:1weeks", 60, 10080),
        ("1d:1year", 86400, 365),
        ("1d:2years", 86400, 730),
        ("60s:1440", 60, 1440),
        ("7s:1m", 7, 8),  # a duration is rounded down to whole points
        ("  1m:1d  ", 60, 1440),
    ],
)
def test_retention_forms_and_units(text: str, step: int, points: int) -> None:
    retention = parse_retention(text)
    assert retention == Retention(step, points)
    assert retention.seconds == step * points
    assert whisper.parseRetentionDef(text) == (step, points)


@pytest.mark.parametrize(
    "text", ["10s:abc", "10s", "abc:1d", "10x:1d", "10s:6q", "0:10", "10:0", "10s:5s", "-1:10",
             "10S:6H", "10 s:6h", "", "1.5m:1d", "10s:6h:1d", "10s:mo"]
)
def test_bad_retentions_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a valid retention"):
        parse_retention(text)


def test_retention_values_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        Retention(0, 10)
    with pytest.raises(ConfigError, match="at least 1"):
        Retention(10, 0)


@given(step=st.integers(1, 10 * 365 * 86400), points=st.integers(1, 10_000_000))
def test_formatted_retention_reads_back_equal(step: int, points: int) -> None:
    retention = Retention(step, points)
    text = format_retention(retention)
    assert parse_retention(text) == retention
    assert str(retention) == text


def test_formatting_uses_the_conventional_units() -> None:
    assert [format_retention(parse_retention(t)) for t in ("10s:6h", "60:10080", "600:262800")] == [
        "10s:6h",
        "1m:7d",
        "10m:5y",
    ]


# --- whisper's archive rules ----------------------------------------------------


def test_valid_archives_come_back_finest_first() -> None:
    archives = [Retention(600, 262800), Retention(10, 2160), Retention(60, 10080)]
    assert validate_retentions(archives) == (
        Retention(10, 2160),
        Retention(60, 10080),
        Retention(600, 262800),
    )


@pytest.mark.parametrize(
    ("archives", "problem"),
    [
        ([], "at least one"),
        ([Retention(60, 100), Retention(60, 200)], "same precision"),
        ([Retention(180, 3360), Retention(300, 8640)], "does not evenly divide"),
        ([Retention(10, 8640), Retention(60, 1440)], "not more than"),
        ([Retention(10, 5), Retention(60, 100)], "fewer than the 6"),
    ],
)
def test_whisper_rules_are_enforced(archives: list[Retention], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        validate_retentions(archives)
    with pytest.raises(whisper.InvalidConfiguration):
        whisper.validateArchiveList([(r.step, r.points) for r in archives])


@given(
    st.lists(
        st.builds(Retention, st.sampled_from([1, 2, 5, 10, 30, 60, 90, 300]), st.integers(1, 400)),
        max_size=4,
    )
)
def test_archive_rules_agree_with_whisper(archives: list[Retention]) -> None:
    try:
        whisper.validateArchiveList([(r.step, r.points) for r in archives])
        whisper_accepts = True
    except whisper.InvalidConfiguration:
        whisper_accepts = False
    try:
        validate_retentions(archives)
        we_accept = True
    except ConfigError:
        we_accept = False
    assert we_accept == whisper_accepts


# --- storage-schemas.conf -------------------------------------------------------

SCHEMAS = """\
# a comment
[carbon]
pattern = ^carbon\\.
retentions = 60:90d

[counts]
pattern = \\.count$
retentions = 10s:1d,1m:30d
finestBucket = last

[web]
pattern = ^web\\.
retentions = 1m:7d

[everything]
match-all = true
retentions = 10s:6h,1m:7d,10m:5y
"""


def test_first_matching_section_wins() -> None:
    rules = StorageRules(parse_storage_schemas(SCHEMAS), ())
    assert rules.schema_for("carbon.agents.a.count").name == "carbon"  # also ends in .count
    assert rules.schema_for("web.hits.count").name == "counts"
    assert rules.schema_for("web.latency").name == "web"
    assert rules.schema_for("web.hits.count").finest_bucket == "last"
    assert rules.schema_for("web.latency").finest_bucket == "accumulate"


def test_patterns_are_searched_not_matched() -> None:
    rules = StorageRules(parse_storage_schemas("[x]\npattern = latency\nretentions = 1:10\n"), ())
    assert rules.schema_for("web.latency.p99").name == "x"


def test_match_all_section_catches_the_rest_in_its_place() -> None:
    schemas = parse_storage_schemas(SCHEMAS)
    rules = StorageRules(schemas, ())
    everything = rules.schema_for("db.queries")
    assert everything.name == "everything"
    assert everything.pattern is None
    assert everything.retentions == (Retention(10, 2160), Retention(60, 10080), Retention(600, 262800))
    # a match-all section first shadows everything after it
    rules = StorageRules((schemas[3], *schemas[:3]), ())
    assert rules.schema_for("carbon.agents.a").name == "everything"


def test_match_all_false_is_not_match_all() -> None:
    with pytest.raises(ConfigError, match="no pattern"):
        parse_storage_schemas("[x]\nmatch-all = false\nretentions = 1:10\n")
    schema = parse_storage_schemas("[x]\nmatch-all = no\npattern = ^a\nretentions = 1:10\n")[0]
    assert schema.pattern == "^a"


def test_defaults_when_nothing_matches() -> None:
    rules = StorageRules(parse_storage_schemas("[web]\npattern = ^web\\.\nretentions = 1m:1d\n"),
                         parse_storage_aggregation("[web]\npattern = ^web\\.\naggregationMethod = sum\n"))
    assert rules.schema_for("db.queries") == DEFAULT_SCHEMA
    assert DEFAULT_SCHEMA.retentions == (Retention(60, 10080),)
    assert rules.aggregation_for("db.queries") == DEFAULT_AGGREGATION
    assert (DEFAULT_AGGREGATION.method, DEFAULT_AGGREGATION.x_files_factor) == ("average", 0.5)
    empty = StorageRules()
    assert empty.schema_for("anything") == DEFAULT_SCHEMA
    assert empty.aggregation_for("anything") == DEFAULT_AGGREGATION


def test_tagged_names_are_matched_whole_as_carbon_does() -> None:
    rules = StorageRules(parse_storage_schemas(SCHEMAS), ())
    assert rules.schema_for("carbon.agents.a;host=x").name == "carbon"
    # "$" sits after the tags, so a suffix pattern does not see the bare name
    assert rules.schema_for("web.hits.count;host=x").name == "web"
    tagged = StorageRules(parse_storage_schemas("[prod]\npattern = ;env=prod(;|$)\nretentions = 1:10\n"), ())
    assert tagged.schema_for("disk.used;env=prod;host=a").name == "prod"
    assert tagged.schema_for("disk.used;env=production").name == "default"


def test_schema_keys_are_case_insensitive_and_retentions_may_continue_on_the_next_line() -> None:
    text = "[x]\nPATTERN = ^a\nRetentions = 10s:6h,\n    1m:7d\nFINESTBUCKET = last\n"
    schema = parse_storage_schemas(text)[0]
    assert schema.retentions == (Retention(10, 2160), Retention(60, 10080))
    assert schema.finest_bucket == "last"


def test_hash_inside_a_pattern_is_kept() -> None:
    schema = parse_storage_schemas("[x]\npattern = ^a#b\nretentions = 1:10\n")[0]
    assert schema.pattern == "^a#b"


# --- storage-aggregation.conf ---------------------------------------------------


def test_aggregation_rules_first_match_and_per_key_defaults() -> None:
    text = """\
[min]
pattern = \\.min$
xFilesFactor = 0.1
aggregationMethod = min

[only_method]
pattern = \\.count$
aggregationMethod = sum

[only_xff]
pattern = ^sparse\\.
xFilesFactor = 0
"""
    rules = StorageRules((), parse_storage_aggregation(text))
    assert (rules.aggregation_for("a.min").method, rules.aggregation_for("a.min").x_files_factor) == ("min", 0.1)
    only_method = rules.aggregation_for("a.count")
    assert (only_method.method, only_method.x_files_factor) == ("sum", 0.5)
    only_xff = rules.aggregation_for("sparse.x")
    assert (only_xff.method, only_xff.x_files_factor) == ("average", 0.0)


@pytest.mark.parametrize("method", ["average", "sum", "last", "max", "min", "avg_zero", "absmax", "absmin"])
def test_every_carbon_aggregation_method_is_accepted(method: str) -> None:
    assert method in whisper.aggregationMethods
    text = f"[x]\npattern = .\naggregationMethod = {method}\n"
    assert parse_storage_aggregation(text)[0].method == method


# --- bad files: every error names the file and the line -------------------------


@pytest.mark.parametrize(
    ("text", "lineno", "problem"),
    [
        ("[a]\npattern = ^a(\nretentions = 1:10\n", 2, "pattern: '^a(' is not a valid regular expression"),
        ("[a]\npattern = ^a\n", 1, "has no retentions"),
        ("[a]\npattern = ^a\nretentions =\n", 3, "no retentions given"),
        ("[a]\npattern = ^a\nretentions = 10s:abc\n", 3, "retentions: '10s:abc' is not a valid retention"),
        ("[a]\npattern = ^a\nretentions = 10s:6h,,1m:7d\n", 3, "empty retention"),
        ("[a]\npattern = ^a\nretentions = 1m:1d,1m:7d\n", 3, "same precision"),
        ("[a]\npattern = ^a\nretentions = 3m:7d,5m:30d\n", 3, "does not evenly divide"),
        ("[a]\npattern = ^a\nretentions = 1:10\nfinestBucket = first\n", 4, "finestBucket: 'first' is not one of accumulate, last"),
        ("[a]\npattern = ^a\nretentions = 1:10\npattern = ^b\n", 4, "key 'pattern' appears twice in section [a] (first on line 2)"),
        ("[a]\npattern = ^a\nretentions = 1:10\n\n[a]\npattern = ^b\nretentions = 1:10\n", 5, "section [a] appears twice (first on line 1)"),
        ("[a]\npattern = ^a\nretentions 10s\n", 3, "'retentions 10s' is not a 'key = value' line"),
        ("[a]\npattern = ^a\nretentions 1:10\n", 3, "unknown key 'retentions 1'"),
        ("[a]\nretentions = 1:10\n", 1, "[a] has no pattern"),
        ("[a]\npattern =\nretentions = 1:10\n", 2, "[a] has no pattern"),
        ("[a]\npattern = ^a\nmatch-all = true\nretentions = 1:10\n", 2, "both a pattern and match-all"),
        ("[a]\nmatch-all = sometimes\nretentions = 1:10\n", 2, "match-all: 'sometimes' is not a boolean"),
        ("[a]\npattern = ^a\nretention = 1:10\n", 3, "unknown key 'retention'"),
        ("pattern = ^a\n[a]\nretentions = 1:10\n", 1, "before the first [section]"),
        ("[a\npattern = ^a\n", 1, "is not a [section] header"),
        ("[DEFAULT]\npattern = ^a\nretentions = 1:10\n", 1, "[DEFAULT] section is not supported"),
        ("[a]\n = ^a\n", 2, "has no key"),
    ],
)
def test_bad_schema_files_name_file_line_and_problem(text: str, lineno: int, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_storage_schemas(text, "storage-schemas.conf")
    assert (caught.value.filename, caught.value.lineno) == ("storage-schemas.conf", lineno)
    assert str(caught.value).startswith(f"storage-schemas.conf:{lineno}: ")
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("text", "lineno", "problem"),
    [
        ("[a]\npattern = .\nxFilesFactor = half\n", 3, "xFilesFactor: 'half' is not a number between 0 and 1"),
        ("[a]\npattern = .\nxFilesFactor = 1.5\n", 3, "xFilesFactor: 1.5 is not between 0 and 1"),
        ("[a]\npattern = .\nxFilesFactor = nan\n", 3, "xFilesFactor: nan is not between 0 and 1"),
        ("[a]\npattern = .\naggregationMethod = median\n", 3, "aggregationMethod: 'median' is not one of average"),
        ("[a]\npattern = .\naggregationMethod = Average\n", 3, "'Average' is not one of"),
        ("[a]\npattern = *\n", 2, "pattern: '*' is not a valid regular expression"),
        ("[a]\nxFilesFactor = 0\n", 1, "[a] has no pattern"),
        ("[a]\npattern = .\nretentions = 1:10\n", 3, "unknown key 'retentions'"),
    ],
)
def test_bad_aggregation_files_name_file_line_and_problem(text: str, lineno: int, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_storage_aggregation(text, "storage-aggregation.conf")
    assert str(caught.value).startswith(f"storage-aggregation.conf:{lineno}: ")
    assert problem in str(caught.value)


def test_config_error_is_a_value_error_with_its_parts() -> None:
    error = ConfigError("retentions: bad", "storage-schemas.conf", 12)
    assert isinstance(error, ValueError)
    assert str(error) == "storage-schemas.conf:12: retentions: bad"
    assert str(ConfigError("bad", "carbon.conf")) == "carbon.conf: bad"
    assert str(ConfigError("bad")) == "bad"


# --- loading a conf directory ----------------------------------------------------


def test_load_storage_rules_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "storage-schemas.conf").write_text(SCHEMAS)
    (tmp_path / "storage-aggregation.conf").write_text("[c]\npattern = \\.count$\naggregationMethod = sum\n")
    rules = load_storage_rules(tmp_path)
    assert rules.schema_for("carbon.x").name == "carbon"
    assert rules.aggregation_for("a.count").method == "sum"
    assert rules.aggregation_for("a.b") == DEFAULT_AGGREGATION


def test_aggregation_file_is_optional(tmp_path: Path) -> None:
    (tmp_path / "storage-schemas.conf").write_text(SCHEMAS)
    rules = load_storage_rules(str(tmp_path))
    assert rules.aggregations == ()
    assert rules.aggregation_for("a.count") == DEFAULT_AGGREGATION


def test_schemas_file_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage-schemas\.conf: file not found"):
        load_storage_rules(tmp_path)


def test_errors_from_files_carry_the_path(tmp_path: Path) -> None:
    (tmp_path / "storage-schemas.conf").write_text(SCHEMAS)
    (tmp_path / "storage-aggregation.conf").write_text("[a]\npattern = .\n\nxFilesFactor = 2\n")
    with pytest.raises(ConfigError) as caught:
        load_storage_rules(tmp_path)
    assert caught.value.filename == str(tmp_path / "storage-aggregation.conf")
    assert caught.value.lineno == 4


def test_shipped_storage_files_load() -> None:
    rules = load_storage_rules(REPO_CONF)
    assert rules.schema_for("carbon.agents.a.metricsReceived").retentions == (Retention(60, 129600),)
    default = rules.schema_for("web.hits")
    assert (default.name, default.pattern) == ("default", None)
    assert default.retentions == (Retention(10, 2160), Retention(60, 10080), Retention(600, 262800))
    assert rules.aggregation_for("web.requests.count").method == "sum"
    assert rules.aggregation_for("web.latency.max").method == "max"
    assert rules.aggregation_for("web.latency").method == "average"


def test_the_documented_finest_bucket_example_is_valid() -> None:
    text = (REPO_CONF / "storage-schemas.conf").read_text()
    example = "\n".join(line.removeprefix("#") for line in text.splitlines()
                        if line.startswith(("#[collectd]", "#pattern", "#retentions", "#finestBucket")))
    schema = parse_storage_schemas(example)[0]
    assert (schema.name, schema.finest_bucket) == ("collectd", "last")


def test_carbons_own_example_files_load() -> None:
    schemas = parse_storage_schemas((CARBON_EXAMPLES / "storage-schemas.conf.example").read_text())
    assert [s.name for s in schemas] == ["carbon", "default"]
    aggregations = parse_storage_aggregation((CARBON_EXAMPLES / "storage-aggregation.conf.example").read_text())
    assert [a.method for a in aggregations] == ["min", "max", "max", "average"]
    conf = load_carbon_conf(CARBON_EXAMPLES / "carbon.conf.example")
    assert conf.line_receiver_interface == "0.0.0.0"
    assert conf.max_cache_size == math.inf


# --- carbon.conf ------------------------------------------------------------------

CARBON_CONF = """\
[cache]
STORAGE_DIR = /srv/graphite
LINE_RECEIVER_PORT = 2003
PICKLE_RECEIVER_INTERFACE = 0.0.0.0
ENABLE_UDP_LISTENER = yes
MAX_CACHE_SIZE = 5000000
MAX_UPDATES_PER_SECOND = 500
DATABASE = whisper

[cache:b]
LINE_RECEIVER_PORT = 2103
enable_udp_listener = FALSE

[relay]
LINE_RECEIVER_PORT = 2013

[istat]
SHARDS = 4
fsync_interval = 0
AGENT_SPOOL_DIR = /var/spool/istat

[istat:b]
SHARDS = 8
"""


def test_carbon_conf_cache_section(tmp_path: Path) -> None:
    path = tmp_path / "carbon.conf"
    path.write_text(CARBON_CONF)
    conf = load_carbon_conf(path)
    assert conf.conf_dir == tmp_path
    assert conf.storage_dir == Path("/srv/graphite")
    assert conf.local_data_dir == Path("/srv/graphite/istat")
    assert conf.log_dir == Path("/srv/graphite/log/graphite-istat")
    assert conf.pid_file == Path("/srv/graphite/graphite-istat.pid")
    assert (conf.line_receiver_interface, conf.line_receiver_port) == ("127.0.0.1", 2003)
    assert (conf.pickle_receiver_interface, conf.pickle_receiver_port) == ("0.0.0.0", 2004)
    assert conf.enable_udp_listener is True
    assert conf.max_cache_size == 5_000_000
    assert (conf.shards, conf.fsync_interval, conf.future_limit, conf.ack_port) == (4, 0.0, 600, 2005)
    assert conf.istat["AGENT_SPOOL_DIR"] == "/var/spool/istat"
    with pytest.raises(TypeError):
        conf.istat["SHARDS"] = "2"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.shards = 2  # type: ignore[misc]


def test_carbon_conf_instance_overrides(tmp_path: Path) -> None:
    path = tmp_path / "carbon.conf"
    path.write_text(CARBON_CONF)
    conf = load_carbon_conf(path, instance="b")
    assert conf.instance == "b"
    assert conf.line_receiver_port == 2103
    assert conf.enable_udp_listener is False
    assert conf.pickle_receiver_interface == "0.0.0.0"  # inherited from [cache]
    assert conf.shards == 8
    assert conf.istat["SHARDS"] == "8"
    assert conf.fsync_interval == 0.0  # inherited from [istat]
    assert conf.log_dir == Path("/srv/graphite/log/graphite-istat/graphite-istat-b")
    assert conf.pid_file == Path("/srv/graphite/graphite-istat-b.pid")
    # an instance without its own section is the plain [cache] section
    other = load_carbon_conf(path, instance="c")
    assert other.line_receiver_port == 2003
    assert other.shards == 4


@pytest.mark.parametrize(
    ("word", "value"),
    [("True", True), ("true", True), ("YES", True), ("1", True), ("on", True),
     ("False", False), ("no", False), ("0", False), ("OFF", False)],
)
def test_carbon_conf_booleans(tmp_path: Path, word: str, value: bool) -> None:
    path = tmp_path / "carbon.conf"
    path.write_text(f"[cache]\nENABLE_UDP_LISTENER = {word}\n")
    assert load_carbon_conf(path).enable_udp_listener is value


@pytest.mark.parametrize("word", ["inf", "Inf", "INF", "infinity"])
def test_carbon_conf_infinite_cache(tmp_path: Path, word: str) -> None:
    path = tmp_path / "carbon.conf"
    path.write_text(f"[cache]\nMAX_CACHE_SIZE = {word}\n")
    assert load_carbon_conf(path).max_cache_size == math.inf


def test_carbon_conf_default_section_sits_beneath(tmp_path: Path) -> None:
    path = tmp_path / "carbon.conf"
    path.write_text("[DEFAULT]\nLINE_RECEIVER_PORT = 3003\nSHARDS = 2\n[cache]\nPICKLE_RECEIVER_PORT = 3004\n"
                    "[cache:a]\n[istat]\nSHARDS = 3\n")
    conf = load_carbon_conf(path, "a")
    assert (conf.line_receiver_port, conf.pickle_receiver_port, conf.shards) == (3003, 3004, 3)


@pytest.mark.parametrize(
    ("section", "line", "problem"),
    [
        ("cache", "LINE_RECEIVER_PORT = two thousand", "LINE_RECEIVER_PORT: 'two thousand' is not a port number"),
        ("cache", "PICKLE_RECEIVER_PORT = 70000", "PICKLE_RECEIVER_PORT: '70000' is not a port number"),
        ("cache", "ENABLE_UDP_LISTENER = maybe", "ENABLE_UDP_LISTENER: 'maybe' is not a boolean"),
        ("cache", "MAX_CACHE_SIZE = lots", "MAX_CACHE_SIZE: 'lots' is not a number of points or inf"),
        ("cache", "MAX_CACHE_SIZE = -5", "MAX_CACHE_SIZE: '-5' is not a positive number"),
        ("cache", "CARBON_METRIC_INTERVAL = 1m", "CARBON_METRIC_INTERVAL: '1m' is not a whole number of seconds"),
        ("cache", "CARBON_METRIC_PREFIX =", "CARBON_METRIC_PREFIX: may not be empty"),
        ("cache", "LOCAL_DATA_DIR =", "LOCAL_DATA_DIR: a path is needed"),
        ("istat", "SHARDS = 0", "SHARDS: '0' is not a whole number of at least 1"),
        ("istat", "FUTURE_LIMIT = soon", "FUTURE_LIMIT: 'soon' is not a whole number of seconds"),
        ("istat", "FSYNC_INTERVAL = -1", "FSYNC_INTERVAL: '-1' is not a finite number of seconds"),
        ("istat", "VISIBILITY_INTERVAL = inf", "VISIBILITY_INTERVAL: 'inf' is not a finite number"),
        ("istat", "ACK_PORT = -1", "ACK_PORT: '-1' is not a port number"),
    ],
)
def test_bad_carbon_conf_values_name_file_line_key_and_value(
    tmp_path: Path, section: str, line: str, problem: str
) -> None:
    path = tmp_path / "carbon.conf"
    path.write_text(f"# carbon.conf\n[{section}]\nUSER =\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_carbon_conf(path)
    assert str(caught.value).startswith(f"{path}:4: {problem}")


def test_bad_values_in_an_unused_instance_are_not_read(tmp_path: Path) -> None:
    path = tmp_path / "carbon.conf"
    path.write_text("[cache]\nLINE_RECEIVER_PORT = 2003\n[cache:x]\nLINE_RECEIVER_PORT = nope\n")
    assert load_carbon_conf(path).line_receiver_port == 2003
    with pytest.raises(ConfigError, match=r"carbon\.conf:4: LINE_RECEIVER_PORT: 'nope'"):
        load_carbon_conf(path, "x")


def test_missing_carbon_conf_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"carbon\.conf: file not found"):
        load_carbon_conf(tmp_path / "carbon.conf")


def test_shipped_carbon_conf_matches_the_defaults() -> None:
    conf = load_carbon_conf(REPO_CONF / "carbon.conf")
    assert conf.conf_dir == REPO_CONF
    assert set(conf.istat) == {"SHARDS", "FUTURE_LIMIT", "FSYNC_INTERVAL", "VISIBILITY_INTERVAL", "ACK_PORT"}
    assert dataclasses.replace(conf, conf_dir=CarbonConf.defaults().conf_dir,
                               istat=CarbonConf.defaults().istat) == CarbonConf.defaults()


def test_defaults_bind_loopback() -> None:
    conf = CarbonConf.defaults()
    assert {conf.line_receiver_interface, conf.pickle_receiver_interface, conf.udp_receiver_interface} == {
        "127.0.0.1"
    }
    assert (conf.line_receiver_port, conf.pickle_receiver_port, conf.udp_receiver_port) == (2003, 2004, 2003)
    assert (conf.carbon_metric_prefix, conf.carbon_metric_interval, conf.max_cache_size) == ("carbon", 60, math.inf)
    assert (conf.shards, conf.future_limit, conf.fsync_interval, conf.visibility_interval, conf.ack_port) == (
        8, 600, 10.0, 1.0, 2005,
    )
    assert conf.instance is None and dict(conf.istat) == {}


def test_line_numbers_count_only_line_breaks() -> None:
    text = "[a]\r\npattern = ^a\x0cb\r\n\r\nretentions = 10s:x\r\n"
    with pytest.raises(ConfigError) as caught:
        parse_storage_schemas(text, "storage-schemas.conf")
    assert caught.value.lineno == 4
