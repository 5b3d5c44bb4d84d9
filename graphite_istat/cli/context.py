"""The global options every subcommand shares, and opening the store the way a command needs it.

Where things are, most specific first:

* the storage directory: ``--storage-dir``, else ``LOCAL_DATA_DIR`` of the
  ``--config`` carbon.conf, else ``./storage``;
* the directory of storage-schemas.conf and storage-aggregation.conf:
  ``--conf-dir``, else the directory of the ``--config`` file (where carbon
  looks for them), else ``./conf``.

Commands that only read open the store read-only: no lock, so they work
while the receiver (or any writer) is writing. Commands that change it take
the writer lock, and fail with a message naming the holder if it is taken.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..config import CarbonConf, StorageRules, load_carbon_conf, load_storage_rules
from ..store.store import STORE_META, Store, StoreOptions
from .errors import UsageError

DEFAULT_STORAGE_DIR = Path("storage")
DEFAULT_CONF_DIR = Path("conf")


def add_global_options(parser: argparse.ArgumentParser, *, suppress_defaults: bool) -> None:
    """The options accepted before and after the subcommand name.

    Subcommand parsers get them with suppressed defaults so that an option
    given before the subcommand is not overwritten by the subparser's default.
    """
    default = argparse.SUPPRESS if suppress_defaults else None
    group = parser.add_argument_group("where the data and configuration are")
    group.add_argument(
        "--storage-dir",
        metavar="DIR",
        type=Path,
        default=default,
        help="storage directory (default: LOCAL_DATA_DIR of --config, else ./storage)",
    )
    group.add_argument(
        "--conf-dir",
        metavar="DIR",
        type=Path,
        default=default,
        help="directory of storage-schemas.conf and storage-aggregation.conf "
        "(default: the directory of --config, else ./conf)",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        default=default,
        help="carbon.conf to take LOCAL_DATA_DIR and the [istat] settings from",
    )


@dataclass(frozen=True, slots=True)
class Locations:
    """The resolved global options of one invocation."""

    storage_dir: Path
    conf_dir: Path
    carbon_conf: CarbonConf

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Locations:
        config_file: Path | None = getattr(args, "config", None)
        if config_file is not None:
            if not config_file.is_file():
                raise UsageError(f"{config_file}: carbon.conf not found")
            carbon_conf = load_carbon_conf(config_file)
            storage_dir = carbon_conf.local_data_dir
            conf_dir = carbon_conf.conf_dir
        else:
            carbon_conf = CarbonConf.defaults()
            storage_dir = DEFAULT_STORAGE_DIR
            conf_dir = DEFAULT_CONF_DIR
        storage_dir = getattr(args, "storage_dir", None) or storage_dir
        conf_dir = getattr(args, "conf_dir", None) or conf_dir
        return cls(storage_dir, conf_dir, carbon_conf)

    def store_options(self) -> StoreOptions:
        """The store settings of carbon.conf's [istat] section (its defaults without --config)."""
        return StoreOptions.from_carbon_conf(self.carbon_conf)

    def storage_rules(self) -> StorageRules:
        if not self.conf_dir.is_dir():
            raise UsageError(
                f"{self.conf_dir}: configuration directory not found "
                "(give --conf-dir, the directory of storage-schemas.conf)"
            )
        return load_storage_rules(self.conf_dir)

    def open_reader(self) -> Store:
        """The store opened read-only; needs an existing storage directory."""
        self._require_store()
        return Store.open(self.storage_dir, writable=False)

    def open_writer(self, *, creates_metrics: bool) -> Store:
        """The store opened for writing (the writer lock held).

        A command that creates metrics (``update``) needs the storage rules and
        creates the storage directory if missing; one that does not (``delete``)
        needs neither the configuration nor may it create a directory.
        """
        if creates_metrics:
            rules = self.storage_rules()
        else:
            self._require_store()
            rules = StorageRules()  # never consulted: no metric is created
        return Store.open(self.storage_dir, rules, writable=True, options=self.store_options())

    def _require_store(self) -> None:
        if not (self.storage_dir / STORE_META).is_file():
            raise UsageError(
                f"{self.storage_dir} is not a graphite-istat storage directory "
                f"(no {STORE_META}; give --storage-dir or --config)"
            )
