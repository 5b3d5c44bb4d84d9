"""The agent's settings: the ``[agent]`` section of its configuration file.

The file is INI, read like carbon.conf (``config.ini``: keys case-insensitive,
errors name file, line and key); it may be a carbon.conf with an ``[agent]``
section. Keys, all optional but ``DESTINATIONS`` and ``SPOOL_DIR``:

* ``LINE_RECEIVER_INTERFACE`` (127.0.0.1), ``LINE_RECEIVER_PORT`` (2003),
  ``PICKLE_RECEIVER_INTERFACE`` (127.0.0.1), ``PICKLE_RECEIVER_PORT`` (2004),
  ``ENABLE_UDP_LISTENER`` (true), ``UDP_RECEIVER_INTERFACE`` (127.0.0.1),
  ``UDP_RECEIVER_PORT`` (2003): where local programs send, as carbon's keys;
* ``DESTINATIONS``: ``host:port[:instance]``, comma-separated (carbon-relay's
  syntax); the port is the server's ``ACK_PORT``, or a carbon plaintext port
  with ``DESTINATION_PROTOCOL = plaintext``. Several destinations share the
  metrics by carbon_ch consistent hashing on the metric name;
* ``DESTINATION_PROTOCOL``: ``istat`` (acknowledged, exactly once; default) or
  ``plaintext`` (stock carbon or relay; at most once);
* ``SPOOL_DIR``: where the spool lives (a directory per destination);
* ``MAX_SPOOL_BYTES`` (1 GiB): per destination; the oldest are dropped beyond;
* ``SPOOL_MEMORY_BYTES`` (32 MiB): the newest batches also kept in memory;
* ``SPOOL_FSYNC`` (false): fsync every spooled batch (survives an OS crash too);
* ``SPOOL_COMPRESSION`` (true): zlib-compress the points of every batch (about 5 bytes
  per point instead of 25-50, on disk and on the wire);
* ``FLUSH_INTERVAL`` (1.0 s): received points are spooled within about half of it;
* ``MAX_BATCH_POINTS`` (100000): points per batch at most;
* ``WINDOW_BYTES`` (16 MiB): unacknowledged bytes in flight per destination;
* ``REPLAY_POINTS_PER_SECOND`` (500000; 0 = unlimited): sending rate of batches
  read back from disk;
* ``RECONNECT_MAX_DELAY`` (5 s): the longest wait between connection attempts;
* ``AGENT_ID`` (``<host>-agent``), ``CARBON_METRIC_PREFIX`` (carbon),
  ``CARBON_METRIC_INTERVAL`` (60; 0 = none): self-metrics under
  ``<prefix>.agents.<AGENT_ID>.``;
* ``PARSER_THREADS`` (1), ``LOG_DIR`` (none: stderr only).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphite_istat.config import ConfigError
from graphite_istat.config.ini import parse_ini_bool, read_ini_file
from graphite_istat.config.values import (
    parse_count,
    parse_path,
    parse_port,
    parse_seconds,
    parse_whole_seconds,
)

SECTION = "agent"
ISTAT, PLAINTEXT = "istat", "plaintext"
PROTOCOLS = (ISTAT, PLAINTEXT)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a share of the metrics goes: carbon's ``host:port:instance``."""

    host: str
    port: int
    instance: str | None = None

    @property
    def label(self) -> str:
        base = f"{self.host}:{self.port}"
        return f"{base}:{self.instance}" if self.instance else base

    @property
    def directory_name(self) -> str:
        """The spool directory's name: ``host`` or ``host_instance`` (carbon_ch's identity of
        a destination, so a changed port keeps its spool)."""
        name = self.host if not self.instance else f"{self.host}_{self.instance}"
        return name.replace("/", "_").replace(":", "_")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Everything the agent's wiring needs, in one immutable object."""

    destinations: tuple[Destination, ...]
    spool_dir: Path
    destination_protocol: str = ISTAT
    line_interface: str = "127.0.0.1"
    line_port: int = 2003
    pickle_interface: str = "127.0.0.1"
    pickle_port: int = 2004
    udp_enabled: bool = True
    udp_interface: str = "127.0.0.1"
    udp_port: int = 2003
    max_spool_bytes: int = 1 << 30
    spool_memory_bytes: int = 32 << 20
    spool_fsync: bool = False
    spool_compression: bool = True
    flush_interval: float = 1.0
    max_batch_points: int = 100_000
    window_bytes: int = 16 << 20
    replay_points_per_second: float = 500_000.0
    reconnect_max_delay: float = 5.0
    agent_id: str = "localhost-agent"
    metric_prefix: str = "carbon"
    metric_interval: int = 60
    parser_threads: int = 1
    log_dir: Path | None = None

    @property
    def metric_path(self) -> str:
        return f"{self.metric_prefix}.agents.{self.agent_id}."


def parse_destinations(text: str) -> tuple[Destination, ...]:
    """``host:port[:instance], ...`` (IPv6 hosts in brackets) into destinations."""
    destinations = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            rest = rest.removeprefix(":")
        else:
            host, _, rest = item.partition(":")
        port_text, _, instance = rest.partition(":")
        if not host or not port_text:
            raise ConfigError(f"{item!r} is not host:port[:instance]")
        destinations.append(Destination(host, parse_port(port_text), instance or None))
    if not destinations:
        raise ConfigError("at least one destination is needed")
    keys = [(d.host, d.instance) for d in destinations]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{text!r}: a (host, instance) appears twice")
    return tuple(destinations)


def _protocol(text: str) -> str:
    if text.lower() not in PROTOCOLS:
        raise ConfigError(f"{text!r} is not one of {', '.join(PROTOCOLS)}")
    return text.lower()


def _name(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ConfigError(f"{text!r} is not a metric name level")
    return text


_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DESTINATIONS": ("destinations", parse_destinations),
    "DESTINATION_PROTOCOL": ("destination_protocol", _protocol),
    "SPOOL_DIR": ("spool_dir", parse_path),
    "LINE_RECEIVER_INTERFACE": ("line_interface", str),
    "LINE_RECEIVER_PORT": ("line_port", parse_port),
    "PICKLE_RECEIVER_INTERFACE": ("pickle_interface", str),
    "PICKLE_RECEIVER_PORT": ("pickle_port", parse_port),
    "ENABLE_UDP_LISTENER": ("udp_enabled", parse_ini_bool),
    "UDP_RECEIVER_INTERFACE": ("udp_interface", str),
    "UDP_RECEIVER_PORT": ("udp_port", parse_port),
    "MAX_SPOOL_BYTES": ("max_spool_bytes", parse_count),
    "SPOOL_MEMORY_BYTES": ("spool_memory_bytes", parse_count),
    "SPOOL_FSYNC": ("spool_fsync", parse_ini_bool),
    "SPOOL_COMPRESSION": ("spool_compression", parse_ini_bool),
    "FLUSH_INTERVAL": ("flush_interval", parse_seconds),
    "MAX_BATCH_POINTS": ("max_batch_points", parse_count),
    "WINDOW_BYTES": ("window_bytes", parse_count),
    "REPLAY_POINTS_PER_SECOND": ("replay_points_per_second", parse_seconds),
    "RECONNECT_MAX_DELAY": ("reconnect_max_delay", parse_seconds),
    "AGENT_ID": ("agent_id", _name),
    "CARBON_METRIC_PREFIX": ("metric_prefix", _name),
    "CARBON_METRIC_INTERVAL": ("metric_interval", parse_whole_seconds),
    "PARSER_THREADS": ("parser_threads", parse_count),
    "LOG_DIR": ("log_dir", parse_path),
}


def load_agent_settings(path: str | Path, *, host: str | None = None) -> AgentSettings:
    """The ``[agent]`` section of the file at ``path``."""
    filename = str(path)
    sections = {section.name: section for section in read_ini_file(path)}
    section = sections.get(SECTION)
    if section is None:
        raise ConfigError(f"{filename}: no [{SECTION}] section")
    values: dict[str, Any] = {}
    for key, entry in section.entries.items():
        known = _KEYS.get(key.upper())
        if known is None:
            continue
        field_name, parse = known
        try:
            values[field_name] = parse(entry.value)
        except ConfigError as error:
            raise error.located(filename, entry.lineno, key.upper()) from None
    for required, key in (("destinations", "DESTINATIONS"), ("spool_dir", "SPOOL_DIR")):
        if required not in values:
            raise ConfigError(f"{filename}: [{SECTION}] needs {key}")
    if "agent_id" not in values:
        values["agent_id"] = f"{(host or socket.gethostname()).replace('.', '_')}-agent"
    return AgentSettings(**values)
