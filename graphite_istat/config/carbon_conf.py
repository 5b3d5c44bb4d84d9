"""carbon.conf: the settings graphite-istat's receiver takes from carbon's file.

Read the way carbon reads it: the ``[cache]`` section, then for an instance
``[cache:INSTANCE]`` on top of it; keys are case-insensitive, unknown keys
are ignored (carbon.conf has dozens graphite-istat has no use for), and a
missing section is no error. ``[DEFAULT]`` keys, as configparser does, sit
beneath every section.

graphite-istat's own settings live in ``[istat]`` (and ``[istat:INSTANCE]``
on top of it), kept whole as the read-only mapping ``CarbonConf.istat`` with
the keys this package knows parsed into typed fields.

Differences from carbon, on purpose:

* listeners bind 127.0.0.1 unless configured (carbon binds 0.0.0.0);
* ``STORAGE_DIR`` defaults to ``/opt/graphite/storage`` instead of coming from
  ``GRAPHITE_ROOT``/``GRAPHITE_STORAGE_DIR``: nothing here reads the
  environment. ``LOCAL_DATA_DIR`` defaults to ``STORAGE_DIR/istat`` (carbon's
  is ``STORAGE_DIR/whisper``) so the two formats never share a directory;
* the paths derived from ``STORAGE_DIR`` are derived from its final value;
* every value of a typed key is checked when the file is read; a bad one is a
  ``ConfigError`` naming the file, line, key and value, where carbon would keep
  the string and fail later.

As in carbon, with an instance the log directory gets a per-instance
subdirectory and the pid file a per-instance name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from graphite_istat.config.errors import ConfigError
from graphite_istat.config.ini import IniEntry, parse_ini_bool, read_ini_file
from graphite_istat.config.values import (
    parse_count,
    parse_path,
    parse_port,
    parse_seconds,
    parse_whole_seconds,
)

PROGRAM = "graphite-istat"
DEFAULT_STORAGE_DIR = Path("/opt/graphite/storage")
DEFAULT_CONF_DIR = Path("/opt/graphite/conf")


@dataclass(frozen=True, slots=True)
class CarbonConf:
    """The settings the receiver runs with. Build with ``load_carbon_conf`` or ``defaults()``."""

    conf_dir: Path = DEFAULT_CONF_DIR
    storage_dir: Path = DEFAULT_STORAGE_DIR
    local_data_dir: Path = DEFAULT_STORAGE_DIR / "istat"
    log_dir: Path = DEFAULT_STORAGE_DIR / "log" / PROGRAM
    pid_dir: Path = DEFAULT_STORAGE_DIR
    line_receiver_interface: str = "127.0.0.1"
    line_receiver_port: int = 2003
    pickle_receiver_interface: str = "127.0.0.1"
    pickle_receiver_port: int = 2004
    enable_udp_listener: bool = False
    udp_receiver_interface: str = "127.0.0.1"
    udp_receiver_port: int = 2003
    max_cache_size: float = math.inf
    carbon_metric_prefix: str = "carbon"
    carbon_metric_interval: int = 60
    # From [istat]:
    shards: int = 8
    future_limit: int = 600
    """Seconds a point's timestamp may be ahead of now before it is rejected."""
    fsync_interval: float = 10.0
    """Seconds between fsyncs of written data; 0 fsyncs after every write."""
    visibility_interval: float = 1.0
    """Seconds at most before written points are visible to readers."""
    ack_port: int = 2005
    istat: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """The whole [istat] section (instance overrides applied), keys upper-cased."""
    instance: str | None = None

    @classmethod
    def defaults(cls) -> CarbonConf:
        """The settings used when no carbon.conf is given."""
        return cls()

    @property
    def pid_file(self) -> Path:
        name = PROGRAM if self.instance is None else f"{PROGRAM}-{self.instance}"
        return self.pid_dir / f"{name}.pid"


def _text(text: str) -> str:
    return text


def _non_empty(text: str) -> str:
    if not text:
        raise ConfigError("may not be empty")
    return text


def _cache_size(text: str) -> float:
    try:
        value = float(int(text))
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{text!r} is not a number of points or inf") from None
    if math.isnan(value) or value <= 0:
        raise ConfigError(f"{text!r} is not a positive number of points or inf")
    return value


def _boolean(text: str) -> bool:
    return parse_ini_bool(text)


_Parser = Callable[[str], Any]

_CACHE_KEYS: dict[str, tuple[str, _Parser]] = {
    "STORAGE_DIR": ("storage_dir", parse_path),
    "LOCAL_DATA_DIR": ("local_data_dir", parse_path),
    "LOG_DIR": ("log_dir", parse_path),
    "PID_DIR": ("pid_dir", parse_path),
    "LINE_RECEIVER_INTERFACE": ("line_receiver_interface", _text),
    "LINE_RECEIVER_PORT": ("line_receiver_port", parse_port),
    "PICKLE_RECEIVER_INTERFACE": ("pickle_receiver_interface", _text),
    "PICKLE_RECEIVER_PORT": ("pickle_receiver_port", parse_port),
    "ENABLE_UDP_LISTENER": ("enable_udp_listener", _boolean),
    "UDP_RECEIVER_INTERFACE": ("udp_receiver_interface", _text),
    "UDP_RECEIVER_PORT": ("udp_receiver_port", parse_port),
    "MAX_CACHE_SIZE": ("max_cache_size", _cache_size),
    "CARBON_METRIC_PREFIX": ("carbon_metric_prefix", _non_empty),
    "CARBON_METRIC_INTERVAL": ("carbon_metric_interval", parse_whole_seconds),
}

_ISTAT_KEYS: dict[str, tuple[str, _Parser]] = {
    "SHARDS": ("shards", parse_count),
    "FUTURE_LIMIT": ("future_limit", parse_whole_seconds),
    "FSYNC_INTERVAL": ("fsync_interval", parse_seconds),
    "VISIBILITY_INTERVAL": ("visibility_interval", parse_seconds),
    "ACK_PORT": ("ack_port", parse_port),
}


def load_carbon_conf(path: str | Path, instance: str | None = None) -> CarbonConf:
    """Read carbon.conf at ``path`` for ``instance`` (None: no instance overrides)."""
    filename = str(path)
    sections = {section.name: section for section in read_ini_file(path)}
    defaults = sections.get("DEFAULT")

    def merged(name: str) -> dict[str, IniEntry]:
        """``[name]`` with ``[name:INSTANCE]`` on top, over ``[DEFAULT]``; keys upper-cased."""
        names = [name, f"{name}:{instance}"] if instance else [name]
        present = [sections[n] for n in names if n in sections]
        layers = [defaults, *present] if present and defaults is not None else present
        return {key.upper(): entry for layer in layers for key, entry in layer.entries.items()}

    cache_entries = merged("cache")
    istat_entries = merged("istat")
    values: dict[str, Any] = {}
    for entries, typed_keys in ((cache_entries, _CACHE_KEYS), (istat_entries, _ISTAT_KEYS)):
        for key, (field_name, parse) in typed_keys.items():
            entry = entries.get(key)
            if entry is None:
                continue
            try:
                values[field_name] = parse(entry.value)
            except ConfigError as error:
                raise error.located(filename, entry.lineno, key) from None

    storage_dir = values.setdefault("storage_dir", DEFAULT_STORAGE_DIR)
    values.setdefault("local_data_dir", storage_dir / "istat")
    values.setdefault("pid_dir", storage_dir)
    log_dir = values.setdefault("log_dir", storage_dir / "log" / PROGRAM)
    if instance:
        values["log_dir"] = log_dir / f"{PROGRAM}-{instance}"
    return CarbonConf(
        conf_dir=Path(os.path.dirname(os.path.normpath(os.path.abspath(path)))),
        istat=MappingProxyType({key: entry.value for key, entry in istat_entries.items()}),
        instance=instance or None,
        **values,
    )
