"""``graphite-istat serve``: the receiver daemon in the foreground (carbon-cache's equivalent).

Argument parsing and the pid file only; the daemon lives in
``graphite_istat.receiver`` (imported inside ``run``: Twisted is loaded only
by this command).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..config import load_carbon_conf
from ..store.store import Store
from .context import Locations
from .errors import CommandError, UsageError

SUMMARY = "run the receiver (carbon's plaintext, pickle and UDP protocols) in the foreground"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--instance",
        metavar="NAME",
        help="carbon instance: [cache:NAME] and [istat:NAME] of carbon.conf apply on top",
    )
    parser.add_argument(
        "--pidfile", metavar="FILE", type=Path, help="write the process id here while running"
    )
    parser.add_argument(
        "--log-dir",
        metavar="DIR",
        type=Path,
        help="also log to DIR/console.log (default: LOG_DIR of --config; none without --config)",
    )


def run(args: argparse.Namespace) -> int:
    from ..receiver.ack_server import start_ack_server
    from ..receiver.logs import close_logging, configure_logging
    from ..receiver.service import run_receiver
    from ..receiver.settings import ReceiverSettings

    locations = Locations.from_args(args)
    carbon_conf = locations.carbon_conf
    config_file = getattr(args, "config", None)
    if args.instance:
        if config_file is None:
            raise UsageError("--instance needs --config")
        carbon_conf = load_carbon_conf(config_file, args.instance)
        if getattr(args, "storage_dir", None) is None:
            locations = Locations(carbon_conf.local_data_dir, locations.conf_dir, carbon_conf)
    settings = ReceiverSettings.from_conf(carbon_conf)
    rules = locations.storage_rules()
    log_dir = args.log_dir or (carbon_conf.log_dir if config_file is not None else None)
    logger = configure_logging(log_dir)
    try:
        with _PidFile(args.pidfile):
            store = Store.open(
                locations.storage_dir, rules, writable=True, options=locations.store_options()
            )
            logger.info(
                "storage %s, storage rules from %s, pid %d",
                locations.storage_dir,
                locations.conf_dir,
                os.getpid(),
            )
            return run_receiver(
                settings,
                store,
                locations.conf_dir,
                logger,
                on_ready=lambda service: start_ack_server(service, carbon_conf),
            )
    finally:
        close_logging()


class _PidFile:
    """Writes the pid file on entry (refusing one of a running process), removes it on exit."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __enter__(self) -> _PidFile:
        if self.path is None:
            return self
        try:
            other = int(self.path.read_text().strip())
        except (OSError, ValueError):
            other = None
        if other is not None and other != os.getpid() and _alive(other):
            raise CommandError(f"{self.path}: already running as pid {other}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
