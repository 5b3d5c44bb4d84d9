"""``graphite-istat fill SRC DST [PATTERN]``: whisper-fill's equivalent.

Like ``merge`` (same arguments), but only DST's empty buckets are written:
what DST already holds is never changed. The way to add whisper history to
a store that has been receiving live data already.
"""

from __future__ import annotations

import argparse

from .merge import add_copy_arguments, copy_history

SUMMARY = "fill the empty buckets of a store's metrics from a store, whisper tree or .wsp (whisper-fill)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_copy_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return copy_history(args, only_gaps=True)
