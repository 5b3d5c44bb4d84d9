"""The ``graphite-istat`` entry point: builds the parser from ``commands.COMMANDS`` and runs one.

Importing this module imports the core (config, store) and the subcommand
modules, never Twisted, Django, carbon or graphite. Errors a user can meet
end in one line on stderr and the exit statuses documented in ``errors``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn, cast

from .commands import COMMANDS, Command
from .context import add_global_options
from .errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, describe

PROG = "graphite-istat"


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_command(module_name: str) -> Command:
    return cast(Command, importlib.import_module(module_name))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG,
        description="Read, write and check a graphite-istat storage directory "
        "(the whisper command-line tools' equivalents), and run its services.",
        epilog="Exit status: 0 done, 1 failed (locked, corrupt, problems found, "
        "nothing written or deleted), 2 bad usage (arguments, unknown metric, "
        "bad pattern or configuration).",
    )
    add_global_options(parser, suppress_defaults=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS:
        command = load_command(module_name)
        sub = subparsers.add_parser(name, help=command.SUMMARY, description=command.SUMMARY)
        command.add_arguments(sub)
        add_global_options(sub, suppress_defaults=True)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (``| head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as error:
        described = describe(error)
        if described is None:
            raise
        status, message = described
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
