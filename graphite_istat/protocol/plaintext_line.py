"""One plaintext line, exactly as carbon reads it: the reference for every line the fast path doubts.

Carbon decodes a line as UTF-8, splits it on whitespace (``str.split``: runs of
spaces, tabs, CR and Unicode spaces) and converts the fields with ``float``.
This module does the same, one line at a time, and says why a line is refused.
The checks run in this order, and the first failure names the reason:
field count, name (UTF-8, tags), value, timestamp.
"""

from __future__ import annotations

import math

from graphite_istat.protocol.metric_names import InvalidMetricName, normalise_metric_name
from graphite_istat.protocol.result import (
    BAD_TIMESTAMP,
    BAD_VALUE,
    EXTRA_FIELDS,
    LINE_TOO_LONG,
    MISSING_FIELDS,
    NON_UTF8_NAME,
)

# Timestamps at or beyond this magnitude cannot be whole seconds in an int64.
TIMESTAMP_LIMIT = 2.0**62


def parse_line(line: bytes, now: int, max_line_length: int) -> tuple[str, int, float] | str | None:
    """Parse one line without its ``\\n``.

    Returns ``(name, timestamp, value)`` for a point, a rejection reason (``str``)
    for a malformed line, or ``None`` for a line with nothing but whitespace.
    """
    if len(line) > max_line_length:
        return LINE_TOO_LONG
    fields: list[str] | list[bytes]
    try:
        fields = line.decode("utf-8").split()
    except UnicodeDecodeError:
        fields = line.split()
    if not fields:
        return None
    if len(fields) < 3:
        return MISSING_FIELDS
    if len(fields) > 3:
        return EXTRA_FIELDS
    raw_name, raw_value, raw_timestamp = fields
    if isinstance(raw_name, bytes):
        try:
            raw_name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            return NON_UTF8_NAME
    try:
        name = normalise_metric_name(raw_name)
    except InvalidMetricName as error:
        return error.reason
    try:
        value = float(raw_value)
    except ValueError:
        return BAD_VALUE
    try:
        timestamp = float(raw_timestamp)
    except ValueError:
        return BAD_TIMESTAMP
    seconds = timestamp_seconds(timestamp, now)
    if seconds is None:
        return BAD_TIMESTAMP
    return name, seconds, value


def timestamp_seconds(timestamp: float, now: int) -> int | None:
    """Whole seconds of a received timestamp: floored, and -1 (as carbon: ``int(ts) == -1``) is now.

    ``None`` when the timestamp is not finite or too large for an int64.
    """
    if not math.isfinite(timestamp) or abs(timestamp) >= TIMESTAMP_LIMIT:
        return None
    if -2.0 < timestamp <= -1.0:
        return int(now)
    return math.floor(timestamp)
