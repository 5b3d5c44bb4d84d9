"""``graphite-istat dump METRIC``: whisper-dump's equivalent.

Prints the header ``info`` prints, then every archive's buckets, oldest
first, with all the sub-counters stored for the metric (count, sum, sumsq,
min, max, and last where stored). An empty bucket shows count 0 and
``None`` for the rest; ``--non-empty`` leaves empty buckets out.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ..store.stats import SUB_COUNTERS
from ..store.store import MetricInfo, Store
from . import arguments
from .context import Locations
from .errors import EXIT_OK, CommandError
from .info import describe, header_lines
from .output import EMPTY, write_lines

SUMMARY = "print a metric's header and every archive's buckets with all sub-counters"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metric", metavar="METRIC", type=arguments.metric_name)
    parser.add_argument(
        "--non-empty", action="store_true", help="leave out buckets that hold no point"
    )


def archive_lines(
    store: Store, info: MetricInfo, archive: int, now: int, *, non_empty: bool
) -> list[str]:
    """The buckets of one archive, oldest first: ``TS count sum sumsq min max [last]``."""
    spec = info.layout.archives[archive]
    fields = (*SUB_COUNTERS, "last") if info.layout.with_last else SUB_COUNTERS
    result = store.fetch(
        [info.name], now - spec.seconds, now, now, fields=fields, archive=archive
    )
    if info.name in result.errors:
        raise CommandError(result.errors[info.name])
    lines = []
    for _, grid, series_set, row in result.series():
        count = series_set.counters["count"][row]
        stamps = grid.buckets().tolist()
        columns = [series_set.counters[f][row].tolist() for f in fields[1:]]
        for i in np.flatnonzero(count) if non_empty else range(len(stamps)):
            n = int(count[i])
            if n:
                rest = [repr(float(column[i])) for column in columns]
            else:
                rest = [EMPTY] * len(columns)
            lines.append("\t".join([str(stamps[i]), str(n), *rest]))
    return lines


def run(args: argparse.Namespace) -> int:
    now = int(time.time())
    with Locations.from_args(args).open_reader() as store:
        info = store.info(args.metric)
        sys.stdout.write("\n".join(header_lines(describe(store, info))) + "\n")
        fields = (*SUB_COUNTERS, "last") if info.layout.with_last else SUB_COUNTERS
        for number in range(len(info.layout.archives)):
            sys.stdout.write(f"\nArchive {number} data:\n")
            sys.stdout.write("\t".join(("timestamp", *fields)) + "\n")
            write_lines(archive_lines(store, info, number, now, non_empty=args.non_empty))
    return EXIT_OK
