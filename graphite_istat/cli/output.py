"""How numbers are printed: ``None`` for an empty bucket (whisper-fetch's way), JSON ``null``."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

import numpy as np

EMPTY = "None"


def format_value(value: float) -> str:
    """A float as Python prints it (``1.5``, ``2.0``), ``None`` for NaN."""
    return EMPTY if math.isnan(value) else repr(float(value))


def format_count(value: float) -> str:
    return EMPTY if math.isnan(value) else str(int(value))


def json_values(values: np.ndarray, *, integral: bool = False) -> list[float | int | None]:
    """A row of values for JSON: NaN becomes null, counts become integers."""
    convert = int if integral else float
    return [None if math.isnan(v) else convert(v) for v in values.tolist()]


def write_lines(lines: Iterable[str]) -> None:
    """Write many lines in large chunks (a dump can be hundreds of thousands of lines)."""
    out = sys.stdout
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= 8192:
            out.write("\n".join(chunk) + "\n")
            chunk.clear()
    if chunk:
        out.write("\n".join(chunk) + "\n")
