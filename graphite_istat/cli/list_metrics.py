"""``graphite-istat list [PATTERN]``: the metric names in the store, sorted, one per line.

Without a pattern every metric is listed (the pattern ``**``); a pattern is a
Graphite glob (``*``, ``?``, ``[a-z]``, ``{a,b}``, ``**`` across levels).
"""

from __future__ import annotations

import argparse

from .context import Locations
from .errors import EXIT_OK
from .output import write_lines

SUMMARY = "list the metrics matching a Graphite glob (default: all of them)"
EVERY_METRIC = "**"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pattern",
        metavar="PATTERN",
        nargs="?",
        default=EVERY_METRIC,
        help="a Graphite glob such as 'servers.*.cpu' or 'servers.**' (default: every metric)",
    )


def run(args: argparse.Namespace) -> int:
    with Locations.from_args(args).open_reader() as store:
        names = store.match(args.pattern)
    write_lines(names)
    return EXIT_OK
