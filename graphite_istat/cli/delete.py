"""``graphite-istat delete PATTERN``: remove the metrics a glob matches and free their columns.

The freed columns are emptied and reused by the next metrics created in the
same shard file. Prints each deleted name; ``--dry-run`` prints what would be
deleted without taking the writer lock. Exit status 1 when nothing matches.
"""

from __future__ import annotations

import argparse

from .context import Locations
from .errors import EXIT_OK, CommandError
from .output import write_lines

SUMMARY = "delete the metrics matching a Graphite glob, freeing their slots for reuse"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", metavar="PATTERN", help="a Graphite glob, or one metric name")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be deleted, delete nothing"
    )


def run(args: argparse.Namespace) -> int:
    locations = Locations.from_args(args)
    if args.dry_run:
        with locations.open_reader() as store:
            names = store.match(args.pattern)
    else:
        with locations.open_writer(creates_metrics=False) as store:
            names = store.delete(args.pattern)
    if not names:
        raise CommandError(f"no metric matches {args.pattern!r}")
    write_lines(names)
    return EXIT_OK
