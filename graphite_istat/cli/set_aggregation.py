"""``graphite-istat set-aggregation-method METRIC METHOD [XFF]``: whisper-set-aggregation-method's equivalent.

METRIC is a name or a Graphite glob. The stored sub-counters do not change,
only how the metric's default value is computed from them, so any method can
be set afterwards and is exact at every archive. One exception: ``last``
needs the last point of each bucket, which is stored only for metrics created
with ``last``; setting it on another metric rebuilds the metric (like
``resize`` with the same retentions) and the buckets that held more than one
point get their last value estimated (their average) and marked approximate.
"""

from __future__ import annotations

import argparse
import time

from ..store.format import AGGREGATION_METHODS
from .context import Locations
from .errors import EXIT_OK, CommandError, UsageError
from .output import write_lines

SUMMARY = "change the aggregation method (and xFilesFactor) of metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metric", metavar="METRIC", help="a metric name or a Graphite glob")
    parser.add_argument("method", metavar="METHOD", choices=AGGREGATION_METHODS, help=", ".join(AGGREGATION_METHODS))
    parser.add_argument("xff", metavar="XFF", nargs="?", type=float, default=None, help="new xFilesFactor too")


def run(args: argparse.Namespace) -> int:
    from ..whisper_io.tools import resize

    if args.xff is not None and not 0.0 <= args.xff <= 1.0:
        raise UsageError(f"xFilesFactor must be between 0 and 1, not {args.xff}")
    lines = []
    with Locations.from_args(args).open_writer(creates_metrics=False) as store:
        names = store.match(args.metric)
        if not names:
            raise CommandError(f"no metric matches {args.metric!r}")
        for name in names:
            info = store.info(name)
            if args.method == "last" and not info.layout.with_last:
                retentions = [(a.step, a.rows) for a in info.layout.archives]
                resize(store, name, retentions, method="last", x_files_factor=args.xff, now=int(time.time()))
                note = " (rebuilt to keep the last point)"
            else:
                store.set_metadata(name, method=args.method, x_files_factor=args.xff)
                note = ""
            lines.append(f"Updated aggregation method: {name} ({info.aggregation_method} -> {args.method}){note}")
    write_lines(lines)
    return EXIT_OK
