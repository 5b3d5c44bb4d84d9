"""``graphite-istat update METRIC TS:VALUE ...``: whisper-update's equivalent.

Writes the points through the store (creating the metric from the storage
rules on first write) and reports what the store rejected, by reason.
Exit status 1 when every point was rejected.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..store.batch import WriteBatch
from . import arguments
from .context import Locations
from .errors import EXIT_FAILURE, EXIT_OK, UsageError

SUMMARY = "write TS:VALUE points to a metric (N:VALUE means now), creating it on first write"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metric", metavar="METRIC", type=arguments.metric_name)
    parser.add_argument(
        "points",
        metavar="TS:VALUE",
        nargs="+",
        help="a Unix timestamp (or N for now) and a value, like whisper-update",
    )


def run(args: argparse.Namespace) -> int:
    now = int(time.time())
    points = []
    for text in args.points:
        try:
            points.append(arguments.point(text, now))
        except argparse.ArgumentTypeError as error:
            raise UsageError(f"argument TS:VALUE: {error}") from None
    batch = WriteBatch.from_points([(args.metric, stamp, value) for stamp, value in points])
    locations = Locations.from_args(args)
    with locations.open_writer(creates_metrics=True) as store:
        result = store.write(batch, now=now)
    if result.rejected:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(result.rejected.items()))
        print(
            f"rejected {result.rejected_total} of {len(batch)} point(s) of {args.metric}: {reasons}",
            file=sys.stderr,
        )
    return EXIT_FAILURE if result.accepted == 0 else EXIT_OK
