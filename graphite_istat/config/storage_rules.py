"""storage-schemas.conf and storage-aggregation.conf: which archives and which
aggregation each metric gets.

Semantics are carbon 1.1.10's:

* sections are tried in file order and the first whose ``pattern`` (a Python
  regular expression, applied with ``re.search``, so unanchored unless the
  pattern says ``^``/``$``) matches the metric name wins;
* tagged metrics are matched on their whole name, tags included, in the
  normalised form carbon's cache uses (``name;tag1=v1;tag2=v2``, tags sorted):
  ``^carbon\\.`` matches ``carbon.agents;host=a`` but ``\\.count$`` does not
  match ``hits.count;host=a``. Callers pass the normalised name;
* ``match-all = true`` (carbon 0.9's spelling, still found in old files) makes
  a section match every metric, in its place in the order;
* when no section matches: 60 s per point for 7 days (``60:10080``) and
  ``average`` with xFilesFactor 0.5, carbon's and whisper's defaults; in an
  aggregation section, a missing ``xFilesFactor`` or ``aggregationMethod``
  takes that default on its own, as whisper does when carbon passes None.

Where carbon logs and skips a broken section (missing pattern, retentions
that whisper rejects, a bad xFilesFactor) or ignores a key it does not know,
this module refuses the file with a ``ConfigError`` naming the file, line and
problem: a metric silently getting the wrong archives is worse than a service
that does not start.

Extension: ``finestBucket = accumulate | last`` in a schema section chooses
what the finest archive does with several points in one bucket; see
``FINEST_BUCKET_MODES``. Keys are case-insensitive, as in carbon.

Files are read with ``graphite_istat.config.ini`` rather than configparser,
so every error can name its line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from graphite_istat.config.errors import ConfigError
from graphite_istat.config.ini import (
    IniEntry,
    IniSection,
    parse_ini,
    parse_ini_bool,
    read_ini_file,
)
from graphite_istat.config.retention import Retention, parse_retentions, validate_retentions

SCHEMAS_FILENAME = "storage-schemas.conf"
AGGREGATION_FILENAME = "storage-aggregation.conf"

FINEST_BUCKET_MODES = ("accumulate", "last")
"""``accumulate``: every point in a finest bucket adds to its sub-counters (istat).
``last``: the finest bucket keeps only the last point received (whisper), for
senders that resend the same point."""

AGGREGATION_METHODS = ("average", "sum", "last", "max", "min", "avg_zero", "absmax", "absmin")
"""whisper 1.1.10's aggregation methods, the values carbon accepts."""

DEFAULT_X_FILES_FACTOR = 0.5
DEFAULT_AGGREGATION_METHOD = "average"


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"{pattern!r} is not a valid regular expression: {error}") from None


def _check_finest_bucket(mode: str) -> None:
    if mode not in FINEST_BUCKET_MODES:
        raise ConfigError(f"{mode!r} is not one of {', '.join(FINEST_BUCKET_MODES)}")


def _check_method(method: str) -> None:
    if method not in AGGREGATION_METHODS:
        raise ConfigError(f"{method!r} is not one of {', '.join(AGGREGATION_METHODS)}")


def _check_x_files_factor(value: float) -> None:
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ConfigError(f"{value!r} is not between 0 and 1")


@dataclass(frozen=True, slots=True)
class Schema:
    """The archives for metrics matching ``pattern`` (None: matches every metric).

    ``retentions`` are kept finest first, validated by whisper's rules.
    """

    name: str
    pattern: str | None
    retentions: tuple[Retention, ...]
    finest_bucket: str = "accumulate"
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "retentions", validate_retentions(self.retentions))
        _check_finest_bucket(self.finest_bucket)
        regex = None if self.pattern is None else _compile_pattern(self.pattern)
        object.__setattr__(self, "_regex", regex)

    def matches(self, metric: str) -> bool:
        return self._regex is None or self._regex.search(metric) is not None


@dataclass(frozen=True, slots=True)
class Aggregation:
    """How metrics matching ``pattern`` (None: every metric) are read back and rolled up."""

    name: str
    pattern: str | None
    x_files_factor: float = DEFAULT_X_FILES_FACTOR
    method: str = DEFAULT_AGGREGATION_METHOD
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_x_files_factor(self.x_files_factor)
        _check_method(self.method)
        regex = None if self.pattern is None else _compile_pattern(self.pattern)
        object.__setattr__(self, "_regex", regex)

    def matches(self, metric: str) -> bool:
        return self._regex is None or self._regex.search(metric) is not None


DEFAULT_SCHEMA = Schema("default", None, (Retention(60, 7 * 24 * 60),))
DEFAULT_AGGREGATION = Aggregation("default", None)


@dataclass(frozen=True, slots=True)
class StorageRules:
    """Both files' sections in order, and the lookups carbon does when it creates a metric.

    No memoisation: these run once per newly created metric, and a linear scan
    is cheap (measured: 4-7 us per lookup over 31 sections, a few seconds of
    CPU for a million new metrics).
    """

    schemas: tuple[Schema, ...] = ()
    aggregations: tuple[Aggregation, ...] = ()

    def schema_for(self, metric: str) -> Schema:
        """The first schema whose pattern matches ``metric``; ``DEFAULT_SCHEMA`` if none does."""
        for schema in self.schemas:
            if schema.matches(metric):
                return schema
        return DEFAULT_SCHEMA

    def aggregation_for(self, metric: str) -> Aggregation:
        """The first aggregation matching ``metric``; ``DEFAULT_AGGREGATION`` if none does."""
        for aggregation in self.aggregations:
            if aggregation.matches(metric):
                return aggregation
        return DEFAULT_AGGREGATION


def load_storage_rules(conf_dir: str | Path) -> StorageRules:
    """Read ``storage-schemas.conf`` (required) and ``storage-aggregation.conf``
    (optional: defaults when absent) from ``conf_dir``."""
    directory = Path(conf_dir)
    schemas_path = directory / SCHEMAS_FILENAME
    if not schemas_path.is_file():
        raise ConfigError("file not found; graphite-istat needs it to create metrics",
                          str(schemas_path))
    schemas = _schemas_from_sections(read_ini_file(schemas_path), str(schemas_path))
    aggregation_path = directory / AGGREGATION_FILENAME
    aggregations: tuple[Aggregation, ...] = ()
    if aggregation_path.exists():
        aggregations = _aggregations_from_sections(
            read_ini_file(aggregation_path), str(aggregation_path)
        )
    return StorageRules(schemas, aggregations)


def parse_storage_schemas(text: str, filename: str = SCHEMAS_FILENAME) -> tuple[Schema, ...]:
    """The schemas in storage-schemas.conf ``text``, in file order."""
    return _schemas_from_sections(parse_ini(text, filename), filename)


def parse_storage_aggregation(
    text: str, filename: str = AGGREGATION_FILENAME
) -> tuple[Aggregation, ...]:
    """The aggregations in storage-aggregation.conf ``text``, in file order."""
    return _aggregations_from_sections(parse_ini(text, filename), filename)


_SCHEMA_KEYS = ("pattern", "match-all", "retentions", "finestbucket")
_AGGREGATION_KEYS = ("pattern", "match-all", "xfilesfactor", "aggregationmethod")


@contextmanager
def _located(filename: str, lineno: int, key: str | None = None) -> Iterator[None]:
    try:
        yield
    except ConfigError as error:
        raise error.located(filename, lineno, key) from None


def _check_section(section: IniSection, known_keys: tuple[str, ...], filename: str) -> None:
    if section.name == "DEFAULT":
        raise ConfigError(
            "a [DEFAULT] section is not supported here: carbon would treat it as a rule "
            "and copy its keys into every other section",
            filename,
            section.lineno,
        )
    # Unknown keys are refused rather than ignored: a misspelt finestBucket would
    # otherwise silently give a metric the other bucket semantics.
    for entry in section.entries.values():
        if entry.key not in known_keys:
            raise ConfigError(
                f"unknown key {entry.key!r} in [{section.name}] "
                f"(known: {', '.join(known_keys)})",
                filename,
                entry.lineno,
            )


def _pattern_of(section: IniSection, filename: str) -> str | None:
    """The section's pattern, or None for a ``match-all = true`` section."""
    pattern = section.entries.get("pattern")
    match_all = section.entries.get("match-all")
    if match_all is not None:
        with _located(filename, match_all.lineno, "match-all"):
            is_match_all = parse_ini_bool(match_all.value)
        if is_match_all:
            if pattern is not None:
                raise ConfigError(
                    f"[{section.name}] has both a pattern and match-all = true; keep one",
                    filename,
                    pattern.lineno,
                )
            return None
    if pattern is None or not pattern.value:
        raise ConfigError(
            f"[{section.name}] has no pattern (use pattern = <regex>, or match-all = true)",
            filename,
            section.lineno if pattern is None else pattern.lineno,
        )
    with _located(filename, pattern.lineno, "pattern"):
        _compile_pattern(pattern.value)
    return pattern.value


def _schemas_from_sections(sections: tuple[IniSection, ...], filename: str) -> tuple[Schema, ...]:
    schemas = []
    for section in sections:
        _check_section(section, _SCHEMA_KEYS, filename)
        pattern = _pattern_of(section, filename)
        retentions_entry = section.entries.get("retentions")
        if retentions_entry is None:
            raise ConfigError(
                f"[{section.name}] has no retentions (e.g. retentions = 10s:6h,1m:7d)",
                filename,
                section.lineno,
            )
        with _located(filename, retentions_entry.lineno, "retentions"):
            retentions = parse_retentions(retentions_entry.value)
        finest_bucket = "accumulate"
        finest_entry = section.entries.get("finestbucket")
        if finest_entry is not None:
            finest_bucket = finest_entry.value
            with _located(filename, finest_entry.lineno, "finestBucket"):
                _check_finest_bucket(finest_bucket)
        with _located(filename, section.lineno, f"[{section.name}]"):
            schemas.append(Schema(section.name, pattern, retentions, finest_bucket))
    return tuple(schemas)


def _aggregations_from_sections(
    sections: tuple[IniSection, ...], filename: str
) -> tuple[Aggregation, ...]:
    aggregations = []
    for section in sections:
        _check_section(section, _AGGREGATION_KEYS, filename)
        pattern = _pattern_of(section, filename)
        x_files_factor = DEFAULT_X_FILES_FACTOR
        xff_entry = section.entries.get("xfilesfactor")
        if xff_entry is not None:
            with _located(filename, xff_entry.lineno, "xFilesFactor"):
                x_files_factor = _parse_x_files_factor(xff_entry)
        method = DEFAULT_AGGREGATION_METHOD
        method_entry = section.entries.get("aggregationmethod")
        if method_entry is not None:
            method = method_entry.value
            with _located(filename, method_entry.lineno, "aggregationMethod"):
                _check_method(method)
        with _located(filename, section.lineno, f"[{section.name}]"):
            aggregations.append(Aggregation(section.name, pattern, x_files_factor, method))
    return tuple(aggregations)


def _parse_x_files_factor(entry: IniEntry) -> float:
    try:
        value = float(entry.value)
    except ValueError:
        raise ConfigError(f"{entry.value!r} is not a number between 0 and 1") from None
    _check_x_files_factor(value)
    return value

