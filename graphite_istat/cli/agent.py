"""``graphite-istat agent --config FILE``: the forwarding agent in the foreground.

Argument handling only; the agent lives in ``graphite_istat.agent`` (imported
inside ``run``: Twisted is loaded only by this command). The configuration
is the ``[agent]`` section of FILE (see ``graphite_istat.agent.settings``).
"""

from __future__ import annotations

import argparse
import os

from .errors import UsageError

SUMMARY = "run the forwarding agent (local carbon protocols in, spooled acknowledged batches out)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        help="also log to DIR/console.log (default: LOG_DIR of the [agent] section, else none)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..agent.service import run_agent
    from ..agent.settings import load_agent_settings
    from ..receiver.logs import close_logging, configure_logging

    config_file = getattr(args, "config", None)
    if config_file is None:
        raise UsageError("agent needs --config FILE (its [agent] section)")
    if not config_file.is_file():
        raise UsageError(f"{config_file}: configuration file not found")
    settings = load_agent_settings(config_file)
    log_dir = Path(args.log_dir) if args.log_dir else settings.log_dir
    logger = configure_logging(log_dir)
    try:
        logger.info(
            "agent %s, pid %d, forwarding to %s (%s), spool %s",
            settings.agent_id,
            os.getpid(),
            ", ".join(d.label for d in settings.destinations),
            settings.destination_protocol,
            settings.spool_dir,
        )
        return run_agent(settings, logger)
    finally:
        close_logging()
