"""``graphite-istat resize METRIC RETENTION...``: whisper-resize's equivalent, keeping the data.

METRIC is a name or a Graphite glob (every match is resized). RETENTION is
``10s:6h`` or ``60:1440`` as in storage-schemas.conf. Each new archive takes
its buckets from the old archives, exactly where whole old cells fit into a
new bucket (``whisper_io.rebuild``). ``--aggregationMethod`` and
``--xFilesFactor`` change those too. The old data are journaled in the
storage directory before the metric is touched, so an interrupted resize is
finished by the next one (or by ``resize --resume``): see ``whisper_io.tools``.
"""

from __future__ import annotations

import argparse
import time

from ..config import Retention, format_retention, parse_retention, validate_retentions
from ..config.errors import ConfigError
from ..store.format import AGGREGATION_METHODS
from .context import Locations
from .errors import EXIT_OK, CommandError, UsageError
from .output import write_lines

SUMMARY = "change a metric's retentions (and method, xFilesFactor) keeping its data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metric", metavar="METRIC", nargs="?", help="a metric name or a Graphite glob")
    parser.add_argument("retentions", metavar="RETENTION", nargs="*", help="e.g. 10s:6h 1m:7d (finest first)")
    parser.add_argument("--xFilesFactor", dest="xff", type=float, default=None, help="new xFilesFactor")
    parser.add_argument(
        "--aggregationMethod", dest="method", choices=AGGREGATION_METHODS, default=None, help="new method"
    )
    parser.add_argument(
        "--resume", action="store_true", help="only finish resizes that were interrupted"
    )


def _format(retentions: list[tuple[int, int]]) -> str:
    return ",".join(format_retention(Retention(step, rows)) for step, rows in retentions)


def run(args: argparse.Namespace) -> int:
    from ..whisper_io.tools import ToolError, finish_pending_resizes, resize

    if not args.resume and (args.metric is None or not args.retentions):
        raise UsageError("give METRIC and at least one RETENTION (or --resume)")
    retentions: list[tuple[int, int]] = []
    if args.retentions:
        try:
            checked = validate_retentions(parse_retention(text) for text in args.retentions)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        retentions = [(r.step, r.points) for r in checked]
    if args.xff is not None and not 0.0 <= args.xff <= 1.0:
        raise UsageError(f"--xFilesFactor must be between 0 and 1, not {args.xff}")
    lines = []
    with Locations.from_args(args).open_writer(creates_metrics=False) as store:
        lines += [f"finished interrupted resize of {name}" for name in finish_pending_resizes(store)]
        if not args.resume:
            names = store.match(args.metric)
            if not names:
                raise CommandError(f"no metric matches {args.metric!r}")
            now = int(time.time())
            for name in names:
                before = [(a.step, a.rows) for a in store.info(name).layout.archives]
                try:
                    cells = resize(store, name, retentions, method=args.method, x_files_factor=args.xff, now=now)
                except ToolError as e:
                    raise CommandError(str(e)) from None
                kept = sum(len(c) for c in cells)
                approximate = sum(int(c.approximate.sum()) for c in cells)
                lines.append(
                    f"resized {name}: {_format(before)} -> {_format(retentions)} "
                    f"({kept} buckets kept, {approximate} approximate)"
                )
    write_lines(lines)
    return EXIT_OK
