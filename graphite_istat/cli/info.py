"""``graphite-istat info METRIC``: whisper-info's equivalent, plus where the metric lives on disk.

Bytes on disk: a metric has no file of its own but a column of a shard
file, so both the file's size and the metric's share of it are shown:

* ``fileApparentBytes`` / ``fileAllocatedBytes``: the shard file's size and
  the disk space it occupies (shard files are sparse, so the second is
  usually far smaller);
* ``metricApparentBytes``: the bytes reserved for one metric column in the
  file (a block's size divided by its columns);
* ``metricAllocatedBytes``: the file's allocated bytes divided evenly among
  the metrics in it (``fileMetrics``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

from ..config import Retention, format_retention
from ..store.store import MetricInfo, Store
from . import arguments
from .context import Locations
from .errors import EXIT_OK

SUMMARY = "print a metric's archives, aggregation, stats and bytes on disk"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metric", metavar="METRIC", type=arguments.metric_name)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


@dataclass(frozen=True, slots=True)
class DiskUsage:
    file_apparent: int
    file_allocated: int
    file_metrics: int
    metric_apparent: int
    metric_allocated: int


def disk_usage(store: Store, info: MetricInfo) -> DiskUsage:
    st = os.stat(info.path)
    allocated = st.st_blocks * 512
    shard_file = next((f for f in store.files().values() if f.path == info.path), None)
    if shard_file is None:
        metrics, per_column = 1, 0
    else:
        metrics = max(len(shard_file.used_columns()), 1)
        per_column = shard_file.header.block_bytes // shard_file.block_columns
    return DiskUsage(st.st_size, allocated, metrics, per_column, allocated // metrics)


def describe(store: Store, info: MetricInfo) -> dict[str, object]:
    """Everything ``info`` prints, as a JSON-ready mapping (header keys first)."""
    usage = disk_usage(store, info)
    layout = info.layout
    return {
        "metric": info.name,
        "aggregationMethod": info.aggregation_method,
        "xFilesFactor": round(info.x_files_factor, 6),  # stored as float32
        "maxRetention": layout.max_retention,
        "finestBucket": "last" if layout.keep_last else "accumulate",
        "stats": list(info.stats),
        "slot": info.slot,
        "shard": info.shard,
        "file": str(info.path),
        "fileApparentBytes": usage.file_apparent,
        "fileAllocatedBytes": usage.file_allocated,
        "fileMetrics": usage.file_metrics,
        "metricApparentBytes": usage.metric_apparent,
        "metricAllocatedBytes": usage.metric_allocated,
        "archives": [
            {
                "retention": spec.seconds,
                "secondsPerPoint": spec.step,
                "points": spec.rows,
                "retentionText": format_retention(Retention(spec.step, spec.rows)),
            }
            for spec in layout.archives
        ],
    }


def header_lines(description: dict[str, object]) -> list[str]:
    """``key: value`` lines like whisper-info's, archives as indented blocks."""
    lines = []
    for key, value in description.items():
        if key == "archives":
            continue
        shown = " ".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"{key}: {shown}")
    archives = description["archives"]
    assert isinstance(archives, list)
    for number, archive in enumerate(archives):
        lines.append("")
        lines.append(f"Archive {number}")
        lines.extend(f"{key}: {value}" for key, value in archive.items())
    return lines


def run(args: argparse.Namespace) -> int:
    with Locations.from_args(args).open_reader() as store:
        description = describe(store, store.info(args.metric))
    if args.json:
        sys.stdout.write(json.dumps(description) + "\n")
    else:
        sys.stdout.write("\n".join(header_lines(description)) + "\n")
    return EXIT_OK
