"""Exit statuses of ``graphite-istat`` and the translation of errors into one line each.

Every failure a user can cause or meet ends the process with one line on
stderr and one of these statuses, never a traceback:

* ``EXIT_OK`` (0): done;
* ``EXIT_FAILURE`` (1): the command ran but did not succeed: the store is
  locked by a writer, a file is corrupt or unreadable, ``check`` found
  problems, every point of an ``update`` was rejected, nothing matched a
  ``delete``;
* ``EXIT_USAGE`` (2): the command was asked something it cannot mean: bad
  arguments, an unknown metric, a bad glob, a bad configuration file, a
  directory that is not a storage directory;
* ``EXIT_INTERRUPTED`` (130): stopped with Ctrl-C.

``describe`` knows the exception classes of the core; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno

from ..config.errors import ConfigError
from ..store.format import FormatError
from ..store.globbing import GlobError
from ..store.lock import StoreLockedError
from ..store.names import InvalidNameError, NameIndexError
from ..store.read import InvalidTimeRangeError, StoreBusyError
from ..store.stats import UnknownStatError
from ..store.store import StoreError, UnknownMetricError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure a command reports itself: a message and the exit status to end with."""

    def __init__(self, message: str, exit_status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_status = exit_status


class UsageError(CommandError):
    """Arguments the command cannot mean (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


# Checked in order: the first class an error is an instance of decides.
_USAGE_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    GlobError,
    InvalidNameError,
    InvalidTimeRangeError,
    UnknownStatError,
    StoreError,
)
_RUNTIME_ERRORS: tuple[type[BaseException], ...] = (
    StoreLockedError,
    FormatError,
    NameIndexError,
    StoreBusyError,
)


def describe(error: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) for an error a user can meet; None for a bug."""
    if isinstance(error, CommandError):
        return error.exit_status, error.message
    if isinstance(error, UnknownMetricError):
        name = error.args[0] if error.args else "?"
        return EXIT_USAGE, f"unknown metric {name!r}"
    if isinstance(error, _USAGE_ERRORS):
        return EXIT_USAGE, _one_line(str(error))
    if isinstance(error, _RUNTIME_ERRORS):
        return EXIT_FAILURE, _one_line(str(error))
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        reason = error.strerror or str(error)
        status = EXIT_USAGE if error.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_FAILURE
        return status, _one_line(where + reason)
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"
