"""Where the daemon's log lines go: stderr always, ``LOG_DIR/console.log`` when asked.

Lines look like ``2024-05-01 12:00:00,123 INFO listening: line tcp 127.0.0.1:2003``.
The ``listening:`` lines have that fixed form so that tests and tools can
read the ports actually bound (port 0 in carbon.conf picks a free one).
Twisted's own log events are routed into the same handlers.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "graphite_istat.receiver"
CONSOLE_LOG = "console.log"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def configure_logging(log_dir: Path | None, *, level: int = logging.INFO) -> logging.Logger:
    """Set up the receiver's logger (and Twisted's); returns the receiver's logger.

    A log directory that cannot be created is reported on stderr and skipped.
    """
    formatter = logging.Formatter(_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    problem = None
    if log_dir is not None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(log_dir / CONSOLE_LOG))
        except OSError as error:
            problem = f"not logging to {log_dir}: {error}"
    for name in (LOGGER_NAME, "twisted"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        for old in list(logger.handlers):
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            handler.setFormatter(formatter)
            logger.addHandler(handler)
    logger = logging.getLogger(LOGGER_NAME)
    if problem:
        logger.warning(problem)
    return logger


def close_logging() -> None:
    for name in (LOGGER_NAME, "twisted"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            handler.flush()
            logger.removeHandler(handler)
            handler.close()
