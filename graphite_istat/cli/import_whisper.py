"""``graphite-istat import-whisper WHISPER_DIR [--jobs N]``: move a whisper tree's history into the store.

Every archive of every .wsp under WHISPER_DIR is imported into the metric
named by its path (``a/b/c.wsp`` -> ``a.b.c``) with the file's archives,
aggregation method and xFilesFactor (what is exact and what is estimated:
``whisper_io.estimate``). Re-running is safe and resumes an interrupted
import (``whisper_io.importer``). A progress bar goes to stderr on a
terminal (a line every 10 s otherwise); the summary goes to stdout. Exit
status 1 when any file was skipped or could not be stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import StorageRules
from ..store.store import Store
from .context import Locations
from .errors import EXIT_FAILURE, EXIT_OK, UsageError

SUMMARY = "import a whisper tree's .wsp files (every archive) into the store; resumable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("whisper_dir", metavar="WHISPER_DIR", type=Path, help="the root of a whisper tree")
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="worker processes decoding .wsp files (default 1)"
    )
    parser.add_argument(
        "--restart", action="store_true", help="forget what earlier runs imported and import every file again"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..whisper_io.importer import import_tree

    if not args.whisper_dir.is_dir():
        raise UsageError(f"{args.whisper_dir}: not a directory")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    locations = Locations.from_args(args)
    # Metrics take their archives from the files; the rules (when present) only
    # decide whether a metric's finest bucket keeps the last point.
    rules = locations.storage_rules() if locations.conf_dir.is_dir() else StorageRules()
    with Store.open(locations.storage_dir, rules, writable=True, options=locations.store_options()) as store:
        summary = import_tree(
            store,
            args.whisper_dir,
            jobs=args.jobs,
            keep_last=lambda name: rules.schema_for(name).finest_bucket == "last",
            restart=args.restart,
        )
    if args.json:
        report = summary.as_dict() | {
            "skipped_files": [{"path": p, "reason": r} for p, r in summary.skipped],
            "error_files": [{"path": p, "reason": r} for p, r in summary.errors],
        }
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(
            f"files imported: {summary.files}\n"
            f"already imported (unchanged): {summary.already_done}\n"
            f"points: {summary.points}\n"
            f"non-finite values dropped: {summary.dropped}\n"
            f"skipped: {len(summary.skipped)}\n"
            f"errors: {len(summary.errors)}\n"
        )
    return EXIT_FAILURE if summary.skipped or summary.errors else EXIT_OK
