"""Retentions: ``10s:6h``-style archive definitions, parsed, formatted and validated.

A retention is "one point per ``step`` seconds, ``points`` points kept", the
unit of every archive in storage-schemas.conf. Both carbon forms are read:

* ``60:1440`` -- seconds per point, number of points;
* ``10s:6h``, ``1m:7d``, ``10m:5y`` -- each side a count and a unit. When the
  right side has a unit it is a duration and ``points = duration // step``.

Units are whisper's: any non-empty prefix of ``seconds``, ``minutes``,
``hours``, ``days``, ``weeks`` or ``years`` (so ``s``, ``sec``, ``second``,
``m``, ``min``, ``minute`` ... all work; ``m`` is minutes, a year is 365 days),
lower case, no space between count and unit. carbon 1.1.10 itself only reads
the single-letter units; every file it accepts is read the same way here.

``validate_retentions`` applies whisper's rules for a list of archives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

from graphite_istat.config.errors import ConfigError

# Checked in this order, so an ambiguous prefix resolves the way whisper's does.
_UNIT_SECONDS: tuple[tuple[str, int], ...] = (
    ("seconds", 1),
    ("minutes", 60),
    ("hours", 3600),
    ("days", 86400),
    ("weeks", 7 * 86400),
    ("years", 365 * 86400),
)
# Units used when formatting, largest first; weeks left out so 7 days reads "7d".
_FORMAT_UNITS: tuple[tuple[str, int], ...] = (
    ("y", 365 * 86400),
    ("d", 86400),
    ("h", 3600),
    ("m", 60),
)
_COUNT_AND_UNIT = re.compile(r"([0-9]+)([a-z]+)")
_COUNT = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Retention:
    """One archive: a point every ``step`` seconds, ``points`` points kept."""

    step: int
    points: int

    def __post_init__(self) -> None:
        if self.step < 1:
            raise ConfigError(f"seconds per point must be at least 1, got {self.step}")
        if self.points < 1:
            raise ConfigError(f"number of points must be at least 1, got {self.points}")

    @property
    def seconds(self) -> int:
        """The time the archive covers."""
        return self.step * self.points

    def __str__(self) -> str:
        return format_retention(self)


def unit_seconds(unit: str) -> int:
    """Seconds in ``unit``, a non-empty prefix of seconds/minutes/hours/days/weeks/years."""
    if unit:
        for name, seconds in _UNIT_SECONDS:
            if name.startswith(unit):
                return seconds
    raise ConfigError(
        f"unknown unit {unit!r} (use s, m, h, d, w, y or a longer form such as min or days)"
    )


def _parse_duration(text: str, what: str) -> tuple[int, bool]:
    """``(value, has_unit)``: seconds for ``10m``, the bare number for ``600``."""
    if _COUNT.fullmatch(text):
        return int(text), False
    match = _COUNT_AND_UNIT.fullmatch(text)
    if match is None:
        raise ConfigError(f"{what} {text!r} is neither a number nor a count with a unit like 10s")
    return int(match.group(1)) * unit_seconds(match.group(2)), True


def parse_retention(text: str) -> Retention:
    """Parse one archive definition such as ``10s:6h`` or ``60:1440``."""
    definition = text.strip()
    step_text, colon, points_text = definition.partition(":")
    try:
        if not colon:
            raise ConfigError("expected seconds-per-point:points, e.g. 10s:6h or 60:1440")
        step, _ = _parse_duration(step_text, "precision")
        if step < 1:
            raise ConfigError("seconds per point must be at least 1")
        amount, is_duration = _parse_duration(points_text, "retention")
        points = amount // step if is_duration else amount
        if points < 1:
            what = f"{points_text} at one point per {step}s" if is_duration else points_text
            raise ConfigError(f"{what} keeps no points")
        return Retention(step, points)
    except ConfigError as error:
        raise ConfigError(f"{definition!r} is not a valid retention: {error.message}") from None


def parse_retentions(text: str) -> tuple[Retention, ...]:
    """Parse a comma-separated list of archives and validate it; finest first."""
    if not text.strip():
        raise ConfigError("no retentions given (expected e.g. 10s:6h,1m:7d)")
    parts = [part.strip() for part in text.split(",")]
    if "" in parts:
        raise ConfigError(f"{text.strip()!r} has an empty retention between commas")
    return validate_retentions(parse_retention(part) for part in parts)


def format_retention(retention: Retention) -> str:
    """The shortest conventional text for ``retention``; ``parse_retention`` reads it back equal."""
    return f"{_format_seconds(retention.step)}:{_format_span(retention)}"


def _format_seconds(seconds: int) -> str:
    for unit, size in _FORMAT_UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _format_span(retention: Retention) -> str:
    # A duration is only exact when it is a whole number of some unit; else count points.
    seconds = retention.seconds
    for unit, size in _FORMAT_UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return str(retention.points)


def validate_retentions(retentions: Iterable[Retention]) -> tuple[Retention, ...]:
    """Check a list of archives against whisper's rules; return it sorted finest first.

    The rules (whisper's ``validateArchiveList``): at least one archive; no two
    with the same step; each finer step divides every coarser step; each coarser
    archive covers more time than the finer one before it; and the finer archive
    holds at least the points that make up one point of the next coarser one.
    """
    archives = tuple(sorted(retentions, key=lambda retention: retention.step))
    if not archives:
        raise ConfigError("at least one retention is needed")
    for finer, coarser in pairwise(archives):
        if finer.step == coarser.step:
            raise ConfigError(f"two archives with the same precision: {finer} and {coarser}")
        if coarser.step % finer.step:
            raise ConfigError(
                f"precision {finer.step}s of {finer} does not evenly divide "
                f"precision {coarser.step}s of {coarser}"
            )
        if coarser.seconds <= finer.seconds:
            raise ConfigError(
                f"{coarser} covers {coarser.seconds}s, not more than the {finer.seconds}s "
                f"of the finer archive {finer}"
            )
        points_per_coarse_point = coarser.step // finer.step
        if finer.points < points_per_coarse_point:
            raise ConfigError(
                f"{finer} keeps {finer.points} points, fewer than the {points_per_coarse_point} "
                f"that make up one point of {coarser}"
            )
    return archives
