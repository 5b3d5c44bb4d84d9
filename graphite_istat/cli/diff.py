"""``graphite-istat diff A B [PATTERN]``: whisper-diff's equivalent, for stores, whisper trees and .wsp files.

A and B are each a storage directory, a whisper tree or one .wsp file (named
``--metric``). For every metric matching PATTERN in either, every archive's
buckets are compared by the metric's default value (what graphite-web
shows); the buckets that differ are printed as ``TIMESTAMP A B`` (``None``
for an empty bucket). ``--summary`` prints only the counts per archive,
``--json`` one JSON object. A metric only on one side, or with other archives
on each side, is reported as such. Exit status 0 whether or not they differ
(as whisper-diff).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import arguments
from .errors import EXIT_OK, CommandError
from .output import format_value, write_lines

SUMMARY = "print the buckets that differ between two stores, whisper trees or .wsp files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", type=Path, help="storage directory, whisper tree or .wsp file")
    parser.add_argument("b", metavar="B", type=Path, help="storage directory, whisper tree or .wsp file")
    parser.add_argument("pattern", metavar="PATTERN", nargs="?", default="**", help="a Graphite glob (default: all)")
    parser.add_argument("--metric", metavar="NAME", type=arguments.metric_name, help="the metric name of a .wsp file")
    parser.add_argument("--summary", action="store_true", help="only the number of differing buckets")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--ignore-empty", action="store_true", help="compare only buckets both sides have")
    parser.add_argument("--until", dest="until_t", type=arguments.timestamp, default=None, help="newest bucket")
    parser.add_argument(
        "--rtol", type=float, default=0.0, help="relative difference still counted as equal (default 0)"
    )


def run(args: argparse.Namespace) -> int:
    from ..whisper_io.sources import SourceError, open_source
    from ..whisper_io.tools import MetricDiff, diff_metric
    from ..whisper_io.wsp_file import WspError

    try:
        a = open_source(args.a, args.metric)
        b = open_source(args.b, args.metric)
    except SourceError as e:
        raise CommandError(str(e), 2) from None
    now = int(time.time())
    diffs: list[MetricDiff] = []
    try:
        names_a, names_b = set(a.names(args.pattern)), set(b.names(args.pattern))
        if not names_a | names_b:
            raise CommandError(f"no metric matches {args.pattern!r}")
        for name in sorted(names_a | names_b):
            if name not in names_b:
                diffs.append(MetricDiff(name, f"only in {a.label}"))
            elif name not in names_a:
                diffs.append(MetricDiff(name, f"only in {b.label}"))
            else:
                try:
                    diffs.append(
                        diff_metric(
                            a, b, name, now=now, ignore_empty=args.ignore_empty, until_t=args.until_t, rtol=args.rtol
                        )
                    )
                except WspError as e:
                    diffs.append(MetricDiff(name, str(e)))
    finally:
        a.close()
        b.close()
    if args.json:
        sys.stdout.write(json.dumps({"metrics": [_as_json(d, args.summary) for d in diffs]}) + "\n")
    else:
        write_lines(_lines(diffs, args.summary))
    return EXIT_OK


def _as_json(diff, summary: bool) -> dict[str, object]:
    out: dict[str, object] = {"metric": diff.name, "differs": diff.differs}
    if diff.problem:
        out["problem"] = diff.problem
    out["archives"] = [
        {
            "archive": a.archive,
            "secondsPerPoint": a.step,
            "points": a.points,
            "total_differences": len(a.differing),
            **({} if summary else {"differences": [list(d) for d in a.differing]}),
        }
        for a in diff.archives
    ]
    return out


def _lines(diffs, summary: bool) -> list[str]:
    lines = []
    for diff in diffs:
        if diff.problem:
            lines.append(f"{diff.name}: {diff.problem}")
            continue
        for a in diff.archives:
            lines.append(f"{diff.name} archive {a.archive} ({a.step}s): {len(a.differing)} of {a.points} buckets differ")
            if not summary:
                lines.extend(
                    f"{ts} {format_value(float('nan') if va is None else va)} "
                    f"{format_value(float('nan') if vb is None else vb)}"
                    for ts, va, vb in a.differing
                )
    return lines
