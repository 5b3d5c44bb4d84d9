"""``graphite-istat set-xff METRIC XFF``: whisper-set-xfilesfactor's equivalent.

METRIC is a name or a Graphite glob. Only reading changes: xFilesFactor
decides when a coarse bucket's default value is shown (``store.stats``).
"""

from __future__ import annotations

import argparse

from .context import Locations
from .errors import EXIT_OK, CommandError, UsageError
from .output import write_lines

SUMMARY = "change the xFilesFactor of metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metric", metavar="METRIC", help="a metric name or a Graphite glob")
    parser.add_argument("xff", metavar="XFF", type=float, help="between 0 and 1")


def run(args: argparse.Namespace) -> int:
    if not 0.0 <= args.xff <= 1.0:
        raise UsageError(f"xFilesFactor must be between 0 and 1, not {args.xff}")
    lines = []
    with Locations.from_args(args).open_writer(creates_metrics=False) as store:
        names = store.match(args.metric)
        if not names:
            raise CommandError(f"no metric matches {args.metric!r}")
        for name in names:
            old = store.info(name).x_files_factor
            new = store.set_metadata(name, x_files_factor=args.xff).x_files_factor
            lines.append(f"Updated xFilesFactor: {name} ({round(old, 6)} -> {round(new, 6)})")
    write_lines(lines)
    return EXIT_OK
