"""The subcommands of ``graphite-istat``: the one list a new subcommand is added to.

Each entry is ``(name, module)``. The module is imported when the parser is
built, so at import time it may import only what the parser needs (the core
is fine; Twisted, Django, carbon and graphite are imported inside ``run``).
It provides:

* ``SUMMARY: str``: one line for ``graphite-istat --help``;
* ``add_arguments(parser: argparse.ArgumentParser) -> None``;
* ``run(args: argparse.Namespace) -> int``: the exit status (see ``errors``);
  it may raise the core's exceptions or ``errors.CommandError``, which the
  entry point turns into one line on stderr.
"""

from __future__ import annotations

import argparse
from typing import Protocol

COMMANDS: tuple[tuple[str, str], ...] = (
    ("update", "graphite_istat.cli.update"),
    ("fetch", "graphite_istat.cli.fetch"),
    ("info", "graphite_istat.cli.info"),
    ("dump", "graphite_istat.cli.dump"),
    ("list", "graphite_istat.cli.list_metrics"),
    ("delete", "graphite_istat.cli.delete"),
    ("check", "graphite_istat.cli.check"),
    ("serve", "graphite_istat.cli.serve"),
    ("carbon-cache", "graphite_istat.cli.carbon_cache"),
    ("agent", "graphite_istat.cli.agent"),
    ("import-whisper", "graphite_istat.cli.import_whisper"),
    ("export-whisper", "graphite_istat.cli.export_whisper"),
    ("resize", "graphite_istat.cli.resize"),
    ("set-aggregation-method", "graphite_istat.cli.set_aggregation"),
    ("set-xff", "graphite_istat.cli.set_xff"),
    ("merge", "graphite_istat.cli.merge"),
    ("fill", "graphite_istat.cli.fill"),
    ("diff", "graphite_istat.cli.diff"),
)


class Command(Protocol):
    """What a subcommand module provides."""

    SUMMARY: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...
