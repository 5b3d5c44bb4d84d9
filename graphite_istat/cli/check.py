"""``graphite-istat check``: verify a storage directory and name every bad file.

Reads only, so it runs while the writer is writing. Prints ``OK`` and exits 0
when nothing is wrong; otherwise prints one problem per line (each names its
file) and exits 1.
"""

from __future__ import annotations

import argparse
import sys

from ..store.check import check_store
from .context import Locations
from .errors import EXIT_FAILURE, EXIT_OK, UsageError
from .output import write_lines

SUMMARY = "verify the storage directory; print OK or every problem, naming its file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``check`` takes only the global options."""


def run(args: argparse.Namespace) -> int:
    directory = Locations.from_args(args).storage_dir
    if not directory.is_dir():
        raise UsageError(f"{directory}: storage directory not found")
    problems = check_store(directory)
    if not problems:
        print("OK")
        return EXIT_OK
    write_lines(problems)
    print(f"{len(problems)} problem(s) found in {directory}", file=sys.stderr)
    return EXIT_FAILURE
