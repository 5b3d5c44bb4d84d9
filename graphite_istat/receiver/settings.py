"""The receiver's settings: what it takes from ``CarbonConf``, plus its tuning keys in ``[istat]``.

The tuning keys are optional and read from ``CarbonConf.istat`` (the whole
``[istat]`` section, kept by the config package):

* ``PARSER_THREADS``: threads decoding received bytes (default: one per CPU, at most 4);
* ``WRITE_BATCH_POINTS``: points the writer gathers before a write (default 200000);
  the store is several times faster per point on big batches, and a partial
  batch is written anyway once it is half ``VISIBILITY_INTERVAL`` old;
* ``RECEIVE_QUEUE_BYTES``: unparsed bytes held before reading from the TCP
  connections pauses (default 32 MiB);
* ``WRITE_QUEUE_POINTS``: parsed points awaiting the writer before reading
  pauses (default 2000000, never more than ``MAX_CACHE_SIZE``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from graphite_istat.config import CarbonConf, ConfigError

DEFAULT_WRITE_BATCH_POINTS = 200_000
DEFAULT_RECEIVE_QUEUE_BYTES = 32 << 20
DEFAULT_WRITE_QUEUE_POINTS = 2_000_000
DEFAULT_INSTANCE = "a"  # carbon's name for the instance started without one


def default_parser_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    """Everything the receiver's wiring needs to know, in one immutable object."""

    line_interface: str = "127.0.0.1"
    line_port: int = 2003
    pickle_interface: str = "127.0.0.1"
    pickle_port: int = 2004
    udp_enabled: bool = False
    udp_interface: str = "127.0.0.1"
    udp_port: int = 2003
    max_cache_size: float = float("inf")
    metric_prefix: str = "carbon"
    metric_interval: int = 60
    """Seconds between self-metric writes; 0 writes none."""
    visibility_interval: float = 1.0
    fsync_interval: float = 10.0
    parser_threads: int = 1
    write_batch_points: int = DEFAULT_WRITE_BATCH_POINTS
    receive_queue_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES
    write_queue_points: int = DEFAULT_WRITE_QUEUE_POINTS
    agent_name: str = "localhost-a"
    """``<host>-<instance>``, the self-metrics' level under ``<prefix>.agents``."""

    @classmethod
    def from_conf(cls, conf: CarbonConf, *, host: str | None = None) -> ReceiverSettings:
        istat = conf.istat
        host = (host or socket.gethostname()).replace(".", "_")
        max_cache = conf.max_cache_size
        queue_points = _positive_int(istat, "WRITE_QUEUE_POINTS", DEFAULT_WRITE_QUEUE_POINTS)
        return cls(
            line_interface=conf.line_receiver_interface,
            line_port=conf.line_receiver_port,
            pickle_interface=conf.pickle_receiver_interface,
            pickle_port=conf.pickle_receiver_port,
            udp_enabled=conf.enable_udp_listener,
            udp_interface=conf.udp_receiver_interface,
            udp_port=conf.udp_receiver_port,
            max_cache_size=max_cache,
            metric_prefix=conf.carbon_metric_prefix,
            metric_interval=conf.carbon_metric_interval,
            visibility_interval=conf.visibility_interval,
            fsync_interval=conf.fsync_interval,
            parser_threads=_positive_int(istat, "PARSER_THREADS", default_parser_threads()),
            write_batch_points=_positive_int(
                istat, "WRITE_BATCH_POINTS", DEFAULT_WRITE_BATCH_POINTS
            ),
            receive_queue_bytes=_positive_int(
                istat, "RECEIVE_QUEUE_BYTES", DEFAULT_RECEIVE_QUEUE_BYTES
            ),
            write_queue_points=int(min(queue_points, max_cache)),
            agent_name=f"{host}-{conf.instance or DEFAULT_INSTANCE}",
        )

    @property
    def metric_path(self) -> str:
        """The prefix of every self-metric, with its trailing dot."""
        return f"{self.metric_prefix}.agents.{self.agent_name}."


def _positive_int(section: Mapping[str, str], key: str, default: int) -> int:
    text = section.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"[istat] {key}: {text!r} is not a whole number") from None
    if value < 1:
        raise ConfigError(f"[istat] {key}: {text!r} is not a whole number of at least 1")
    return value
