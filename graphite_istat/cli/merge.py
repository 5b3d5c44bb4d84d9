"""``graphite-istat merge FROM TO [PATTERN]``: whisper-merge's equivalent.

FROM is a storage directory, a whisper tree or one .wsp file (named
``--metric``, default its file name without ``.wsp``); TO is a storage
directory (created if missing). As whisper-merge does, every bucket FROM has
data for replaces TO's bucket; buckets FROM lacks are left alone. Metrics TO
lacks are created with FROM's archives; when both have the metric with
different archives, FROM's cells are rebuilt into TO's (``whisper_io.rebuild``).
``--from``/``--until`` limit the buckets copied (whisper-merge's time_from,
time_to). ``fill`` copies only into TO's empty buckets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..config import StorageRules
from ..store.store import Store
from . import arguments
from .context import Locations
from .errors import EXIT_FAILURE, EXIT_OK, CommandError

SUMMARY = "copy history from a store, whisper tree or .wsp into a store, replacing its buckets (whisper-merge)"


def add_copy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FROM", type=Path, help="storage directory, whisper tree or .wsp file")
    parser.add_argument("target", metavar="TO", type=Path, help="storage directory to write into")
    parser.add_argument("pattern", metavar="PATTERN", nargs="?", default="**", help="a Graphite glob (default: all)")
    parser.add_argument("--metric", metavar="NAME", type=arguments.metric_name, help="the metric name of a single .wsp FROM")
    parser.add_argument("--from", dest="from_t", type=arguments.timestamp, default=None, help="oldest bucket to copy")
    parser.add_argument("--until", dest="until_t", type=arguments.timestamp, default=None, help="newest bucket to copy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_copy_arguments(parser)


def copy_history(args: argparse.Namespace, *, only_gaps: bool) -> int:
    from ..whisper_io.sources import SourceError, open_source
    from ..whisper_io.tools import copy_all

    try:
        source = open_source(args.source, args.metric)
    except SourceError as e:
        raise CommandError(str(e), 2) from None
    options = Locations.from_args(args).store_options()
    try:
        with Store.open(args.target, StorageRules(), writable=True, options=options) as store:
            result = copy_all(
                store,
                source,
                args.pattern,
                only_gaps=only_gaps,
                now=int(time.time()),
                from_t=args.from_t,
                until_t=args.until_t,
            )
    finally:
        source.close()
    for name, reason in result.errors:
        print(f"error {name}: {reason}", file=sys.stderr)
    if not result.metrics and not result.errors:
        raise CommandError(f"no metric in {args.source} matches {args.pattern!r}")
    sys.stdout.write(
        f"metrics: {result.metrics}\ncreated: {result.created}\nbuckets written: {result.cells}\n"
        f"errors: {len(result.errors)}\n"
    )
    return EXIT_FAILURE if result.errors else EXIT_OK


def run(args: argparse.Namespace) -> int:
    return copy_history(args, only_gaps=False)
