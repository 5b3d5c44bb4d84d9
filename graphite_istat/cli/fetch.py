"""``graphite-istat fetch METRIC``: whisper-fetch's equivalent, one stat or all of them.

The archive and the time grid are the store's (whisper's choice: the finest
archive covering ``--from``). Without ``--stat`` the values are the metric's
default value: its aggregationMethod computed from the sub-counters with
xFilesFactor applied, what Graphite shows for the bare metric name.

Plain output is whisper-fetch's: ``TIMESTAMP<TAB>VALUE`` per bucket, ``None``
for an empty one; with ``--stat all`` a header line names the columns.
``--json`` prints one object (see README.rst, "The graphite-istat command line").
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from ..store.read import TimeGrid
from ..store.stats import STATS, SUB_COUNTERS
from ..store.store import MetricInfo, SeriesSet, Store, UnknownMetricError
from . import arguments
from .context import Locations
from .errors import EXIT_OK, CommandError, UsageError
from .output import format_count, format_value, json_values, write_lines

SUMMARY = "print a metric's values over a time range (one stat, or all)"
ALL = "all"
DAY = 86400


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metric", metavar="METRIC", type=arguments.metric_name)
    parser.add_argument(
        "--from",
        dest="from_t",
        metavar="TS",
        type=arguments.timestamp,
        help="Unix time of the start of the range (default: 24 hours ago)",
    )
    parser.add_argument(
        "--until",
        dest="until_t",
        metavar="TS",
        type=arguments.timestamp,
        help="Unix time of the end of the range (default: now)",
    )
    parser.add_argument(
        "--stat",
        choices=(*STATS, ALL),
        help="the stat to print (default: the metric's aggregationMethod value, "
        "xFilesFactor applied); 'all' prints every stat the metric has",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def read_series(
    store: Store, info: MetricInfo, from_t: int, until_t: int, now: int
) -> tuple[TimeGrid, SeriesSet, int] | None:
    """The metric's counters on whisper's grid for the range; None when no archive holds it."""
    fields = (*SUB_COUNTERS, "last") if info.layout.with_last else SUB_COUNTERS
    result = store.fetch([info.name], from_t, until_t, now, fields=fields)
    if info.name in result.errors:
        raise CommandError(result.errors[info.name])
    if result.missing:
        raise UnknownMetricError(info.name)
    for _, grid, series_set, row in result.series():
        return grid, series_set, row
    return None


def run(args: argparse.Namespace) -> int:
    now = int(time.time())
    until_t = now if args.until_t is None else args.until_t
    from_t = now - DAY if args.from_t is None else args.from_t
    if from_t > until_t:
        raise UsageError(f"--from ({from_t}) is after --until ({until_t})")
    with Locations.from_args(args).open_reader() as store:
        info = store.info(args.metric)
        if args.stat not in (None, ALL) and args.stat not in info.stats:
            raise UsageError(
                f"{args.metric} does not store {args.stat!r}; it has {', '.join(info.stats)}"
            )
        found = read_series(store, info, from_t, until_t, now)
    stat_label = info.aggregation_method if args.stat is None else args.stat
    stats = info.stats if args.stat == ALL else (stat_label,)
    if found is None:
        columns: dict[str, np.ndarray] = {s: np.zeros(0) for s in stats}
        start, end, step, buckets = from_t, until_t, None, np.zeros(0, dtype=np.int64)
    else:
        grid, series_set, row = found
        if args.stat is None:
            columns = {stat_label: series_set.default_values()[row]}
        else:
            columns = {s: series_set.stat(s)[row] for s in stats}
        start, end, step, buckets = grid.start, grid.end, grid.step, grid.buckets()
    if args.json:
        values: object
        if args.stat == ALL:
            values = {s: json_values(v, integral=s == "count") for s, v in columns.items()}
        else:
            values = json_values(columns[stat_label], integral=stat_label == "count")
        document = {
            "metric": args.metric,
            "start": start,
            "end": end,
            "step": step,
            "stat": stat_label,
            "values": values,
        }
        sys.stdout.write(json.dumps(document) + "\n")
        return EXIT_OK
    if args.stat == ALL:
        sys.stdout.write("\t".join(("timestamp", *stats)) + "\n")
    formatters = [format_count if s == "count" else format_value for s in stats]
    rows = zip(buckets.tolist(), *(columns[s].tolist() for s in stats), strict=True)
    write_lines(
        "\t".join([str(ts), *(f(v) for f, v in zip(formatters, values, strict=True))])
        for ts, *values in rows
    )
    return EXIT_OK
