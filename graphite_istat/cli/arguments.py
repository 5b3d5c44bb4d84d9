"""Parsing the values users type: timestamps, ``TS:VALUE`` points, metric names.

Each parser raises ``argparse.ArgumentTypeError`` with a message that fits on
one line, so argparse reports it as a usage error (exit status 2).
"""

from __future__ import annotations

import argparse
import math

from ..store.names import InvalidNameError, encode_name

NOW = "N"
"""The timestamp that means "now" in whisper-update's ``N:VALUE``."""


def timestamp(text: str) -> int:
    """Seconds since the epoch: an integer, or a number that is floored (whisper's rule)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Unix timestamp") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Unix timestamp")
    return math.floor(value)


def metric_name(text: str) -> str:
    """A metric name the store accepts (no empty level, not too long, ...)."""
    try:
        encode_name(text)
    except InvalidNameError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def point(text: str, now: int) -> tuple[int, float]:
    """``TS:VALUE`` as whisper-update reads it; ``N`` as TS means ``now``.

    The value is any float Python reads, NaN and infinities included: the
    store rejects those and the command reports them by reason.
    """
    stamp_text, sep, value_text = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not TIMESTAMP:VALUE")
    if stamp_text == NOW:
        stamp = now
    else:
        try:
            stamp = timestamp(stamp_text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {stamp_text!r} is not a Unix timestamp or {NOW}"
            ) from None
    try:
        value = float(value_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value_text!r} is not a number") from None
    return stamp, value
