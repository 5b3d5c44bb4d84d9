"""Parsing single setting values (ports, counts, seconds, paths) with the errors config files report.

Shared by carbon.conf's reader and the agent's settings, so one key type
reads and fails the same way everywhere. Each raises ``ConfigError`` with the
offending text; the caller adds the file, line and key.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from graphite_istat.config.errors import ConfigError


def parse_path(text: str) -> Path:
    if not text:
        raise ConfigError("a path is needed")
    return Path(os.path.normpath(os.path.expanduser(text)))


def parse_integer(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not {what}") from None
    if value < minimum:
        raise ConfigError(f"{text!r} is not {what}")
    return value


def parse_port(text: str) -> int:
    value = parse_integer(text, 0, "a port number (0-65535)")
    if value > 65535:
        raise ConfigError(f"{text!r} is not a port number (0-65535)")
    return value


def parse_count(text: str) -> int:
    return parse_integer(text, 1, "a whole number of at least 1")


def parse_whole_seconds(text: str) -> int:
    return parse_integer(text, 0, "a whole number of seconds (0 or more)")


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{text!r} is not a finite number of seconds (0 or more)")
    return value
