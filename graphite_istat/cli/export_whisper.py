"""``graphite-istat export-whisper TARGET_DIR [PATTERN]``: write metrics out as a whisper tree.

Each metric becomes ``TARGET_DIR/a/b/c.wsp`` with its archives, aggregation
method and xFilesFactor, holding its default value per bucket in every
archive (what graphite-web would have shown). A ``/`` inside a name level
is written ``%2F``; a name that cannot be a path inside TARGET_DIR is skipped
with a message. Existing files of the same metrics are replaced. Exit status
1 when anything was skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .context import Locations
from .errors import EXIT_FAILURE, EXIT_OK, CommandError

SUMMARY = "write metrics out as .wsp files (every archive, the default value per bucket)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target_dir", metavar="TARGET_DIR", type=Path, help="root of the whisper tree to write")
    parser.add_argument("pattern", metavar="PATTERN", nargs="?", default="**", help="a Graphite glob (default: all)")


def run(args: argparse.Namespace) -> int:
    from ..whisper_io.paths import UnsafeNameError
    from ..whisper_io.progress import Progress
    from ..whisper_io.sources import StoreSource
    from ..whisper_io.tools import export_metric
    from ..whisper_io.wsp_file import WspError

    now = int(time.time())
    args.target_dir.mkdir(parents=True, exist_ok=True)
    source = StoreSource(Locations.from_args(args).open_reader(), "store", owned=True)
    metrics = points = skipped = 0
    try:
        names = source.names(args.pattern)
        if not names:
            raise CommandError(f"no metric matches {args.pattern!r}")
        progress = Progress(len(names), "metrics")
        for name in names:
            try:
                _, written = export_metric(source, name, args.target_dir, now=now)
                metrics += 1
                points += written
            except (UnsafeNameError, WspError) as e:
                skipped += 1
                progress.message(f"skipped {name!r}: {e}")
            progress.advance()
        progress.finish()
    finally:
        source.close()
    sys.stdout.write(f"metrics exported: {metrics}\npoints: {points}\nskipped: {skipped}\n")
    return EXIT_FAILURE if skipped else EXIT_OK
