"""carbon's database plugin for graphite-istat: ``DATABASE = istat`` makes stock carbon-cache store here.

carbon finds database plugins through ``TimeSeriesDatabase.plugins``, which
a subclass with a ``plugin_name`` joins when its module is imported; so the
plugin works in a carbon-cache started by ``graphite-istat carbon-cache``,
which imports this module first.

What the plugin owns:

* where the store is and how it is opened, from carbon's settings (the
  ``[cache]`` and ``[cache:INSTANCE]`` sections of carbon.conf, the only ones
  carbon hands a plugin): ``ISTAT_STORAGE_DIR``, else ``LOCAL_DATA_DIR``,
  except that carbon's default ``STORAGE_DIR/whisper`` (where a site that
  switches keeps its .wsp files) becomes ``STORAGE_DIR/istat``, graphite-istat's
  own default; ``ISTAT_SHARDS``, ``ISTAT_FUTURE_LIMIT``, ``ISTAT_FSYNC_INTERVAL``
  as in the ``[istat]`` section the receiver reads;
* the storage rules, read from carbon's ``CONF_DIR`` (where carbon itself
  reads storage-schemas.conf and storage-aggregation.conf) when carbon
  constructs the plugin, so a bad file stops carbon-cache before it listens;
* the store's lifetime. carbon constructs the plugin for every action
  (``stop`` too) and before twistd daemonizes, so the store (and its writer
  lock) is opened once the reactor runs, on a pool thread; if that fails
  carbon-cache stops instead of accepting points it cannot keep. The store is
  closed (synced, lock released) after the reactor has shut down, when
  carbon's writer thread is done.

``create`` honours carbon's archive list exactly, as carbon's whisper and
ceres plugins do: carbon re-reads storage-schemas.conf every minute and a
site expects an edited schema to apply to metrics created after the edit.
The plugin computes the same list from the same files (reloading them when
they change) and logs a warning when the two differ, since that means a
section one parser accepts and the other refuses. The store's rules supply
what carbon's call does not carry: ``finestBucket``, and the aggregation
method and xFilesFactor when no storage-aggregation.conf section matched.

Disk work runs where carbon calls the plugin: ``write``, ``exists`` and
``create`` on carbon's writer thread, metadata calls on the reactor (small
in-memory lookups and one record write). ``write`` returns once the points
are in the store's shared mapping (a crash of carbon-cache loses none of
them); the store fsyncs every ``ISTAT_FSYNC_INTERVAL`` seconds.

Tags: ``tag`` is carbon's own (new tagged series are posted to graphite-web's
TagDB at ``GRAPHITE_URL`` when ``ENABLE_TAGS`` is on); tagged names are stored
under carbon's normalised ``name;tag=value`` path.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from carbon import log
from carbon.database import TimeSeriesDatabase

from graphite_istat.config import (
    AGGREGATION_METHODS,
    CarbonConf,
    ConfigError,
    Retention,
    StorageRules,
    load_storage_rules,
    validate_retentions,
)
from graphite_istat.config.storage_rules import AGGREGATION_FILENAME, SCHEMAS_FILENAME
from graphite_istat.store.batch import WriteBatch, WriteResult
from graphite_istat.store.store import Store, StoreOptions

PLUGIN_NAME = "istat"
REJECTION_REPORT_INTERVAL = 60.0  # seconds between log lines about rejected points
METADATA_KEYS = ("aggregationMethod", "xFilesFactor")


@dataclass(frozen=True, slots=True)
class CarbonStoreSettings:
    """Where the store is and how to open it, taken from carbon's settings."""

    storage_dir: Path
    conf_dir: Path
    options: StoreOptions

    @classmethod
    def from_carbon(cls, settings: Mapping[str, Any]) -> CarbonStoreSettings:
        """Read carbon's settings object (a dict of upper-case keys, values typed by carbon)."""
        storage_dir = settings.get("ISTAT_STORAGE_DIR")
        if storage_dir:
            directory = _clean_path(str(storage_dir))
        else:
            local_data_dir = _clean_path(str(settings["LOCAL_DATA_DIR"]))
            carbon_storage_dir = _clean_path(str(settings["STORAGE_DIR"]))
            if local_data_dir == carbon_storage_dir / "whisper":
                local_data_dir = carbon_storage_dir / "istat"
            directory = local_data_dir
        defaults = CarbonConf.defaults()
        options = StoreOptions(
            shards=_setting(settings, "ISTAT_SHARDS", defaults.shards, int, minimum=1),
            future_limit=_setting(
                settings, "ISTAT_FUTURE_LIMIT", defaults.future_limit, int, minimum=0
            ),
            fsync_interval=_setting(
                settings, "ISTAT_FSYNC_INTERVAL", defaults.fsync_interval, float, minimum=0
            ),
        )
        return cls(directory, _clean_path(str(settings["CONF_DIR"])), options)


def _clean_path(text: str) -> Path:
    return Path(os.path.normpath(os.path.expanduser(text)))


def _setting(
    settings: Mapping[str, Any], key: str, default: Any, kind: type, *, minimum: float
) -> Any:
    raw = settings.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{key}: {raw!r} must be at least {minimum}")
    return value


class RulesFiles:
    """storage-schemas.conf and storage-aggregation.conf, reloaded when either changes."""

    def __init__(self, conf_dir: Path) -> None:
        self.conf_dir = conf_dir
        self._signature = self._stat()
        self.rules: StorageRules = load_storage_rules(conf_dir)

    def _stat(self) -> tuple[tuple[int, int] | None, ...]:
        signature = []
        for name in (SCHEMAS_FILENAME, AGGREGATION_FILENAME):
            try:
                st = os.stat(self.conf_dir / name)
            except FileNotFoundError:
                signature.append(None)
            else:
                signature.append((st.st_mtime_ns, st.st_size))
        return tuple(signature)

    def reload_if_changed(self) -> bool:
        """Re-read the files if they changed since the last read; True if the rules changed.

        A file that no longer parses keeps the previous rules (and is logged),
        as carbon keeps its schemas when a reload fails.
        """
        signature = self._stat()
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            rules = load_storage_rules(self.conf_dir)
        except (ConfigError, OSError) as error:
            log.msg(f"istat: keeping the previous storage rules: {error}")
            return False
        changed = rules != self.rules
        self.rules = rules
        return changed


class IstatDatabase(TimeSeriesDatabase):
    """carbon's ``TimeSeriesDatabase`` over one graphite-istat storage directory."""

    plugin_name = PLUGIN_NAME
    aggregationMethods = list(AGGREGATION_METHODS)

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__(settings)
        self.location = CarbonStoreSettings.from_carbon(settings)
        self.rules_files = RulesFiles(self.location.conf_dir)
        self.startup_error: BaseException | None = None
        """Why the store could not be opened at startup (carbon-cache then stops)."""
        self.rejected_points: Counter[str] = Counter()
        """Points the store refused since startup, by reason."""
        self._store: Store | None = None
        self._open_lock = threading.Lock()
        self._unreported: Counter[str] = Counter()
        self._last_report: float | None = None
        self._reported_differences: set[tuple[object, ...]] = set()
        self._schedule_open()

    # -- the store's lifetime ------------------------------------------------

    def _schedule_open(self) -> None:
        from twisted.internet import reactor

        # Runs only if the reactor starts: not for ``stop``/``status``, and in
        # the daemon process, not the one twistd forks it from.
        reactor.callWhenRunning(self._open_at_startup)

    def _open_at_startup(self) -> None:
        from twisted.internet import reactor, threads

        reactor.addSystemEventTrigger("after", "shutdown", self.close)
        opening = threads.deferToThread(self.store)
        opening.addErrback(self._startup_failed)

    def _startup_failed(self, failure: Any) -> None:
        from twisted.internet import reactor

        self.startup_error = failure.value
        log.msg(
            f"istat: cannot open the storage directory {self.location.storage_dir}: "
            f"{failure.getErrorMessage()}; stopping (each carbon-cache instance needs its "
            "own ISTAT_STORAGE_DIR)"
        )
        if reactor.running:
            reactor.stop()

    def store(self) -> Store:
        """The store, opened for writing on first use."""
        with self._open_lock:
            if self._store is None:
                self._store = Store.open(
                    self.location.storage_dir,
                    self.rules_files.rules,
                    writable=True,
                    options=self.location.options,
                )
                log.msg(f"istat: storing into {self.location.storage_dir}")
            return self._store

    def close(self) -> None:
        """Sync and close the store, releasing its writer lock (no-op if never opened)."""
        with self._open_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
                log.msg(f"istat: closed {self.location.storage_dir}")

    # -- carbon's TimeSeriesDatabase ------------------------------------------

    def write(self, metric: str, datapoints: Iterable[tuple[float, float]]) -> None:
        points = list(datapoints)
        timestamps = np.array([point[0] for point in points], dtype=np.float64)
        values = np.array([point[1] for point in points], dtype=np.float64)
        batch = WriteBatch.from_arrays(
            [metric], timestamps, values, name_ids=np.zeros(len(points), dtype=np.int64)
        )
        self._count_rejected(metric, self.store().write(batch))

    def exists(self, metric: str) -> bool:
        return metric in self.store()

    def create(
        self,
        metric: str,
        retentions: Iterable[tuple[int, int]],
        xfilesfactor: float | None,
        aggregation_method: str | None,
    ) -> None:
        store = self.store()
        if self.rules_files.reload_if_changed():
            store.set_rules(self.rules_files.rules)
        rules = self.rules_files.rules
        schema, aggregation = rules.schema_for(metric), rules.aggregation_for(metric)
        archives = tuple((int(step), int(points)) for step, points in retentions)
        method = aggregation.method if aggregation_method is None else aggregation_method
        x_files_factor = aggregation.x_files_factor if xfilesfactor is None else float(xfilesfactor)
        expected = (
            tuple((r.step, r.points) for r in schema.retentions),
            aggregation.method,
            aggregation.x_files_factor,
        )
        if (archives, method, x_files_factor) != expected:
            self._report_difference(metric, (archives, method, x_files_factor), expected)
        store.create_metric(
            metric, archives, method, x_files_factor, keep_last=schema.finest_bucket == "last"
        )

    def getMetadata(self, metric: str, key: str) -> str | float:
        _check_metadata_key(key)
        info = self.store().info(metric)
        return info.aggregation_method if key == "aggregationMethod" else info.x_files_factor

    def setMetadata(self, metric: str, key: str, value: str | float) -> str | float:
        """Set ``key`` for ``metric``; returns the old value (as whisper's setAggregationMethod)."""
        old = self.getMetadata(metric, key)
        if key == "aggregationMethod":
            if value not in AGGREGATION_METHODS:
                raise ValueError(f"unknown aggregation method {value!r}")
            self.store().set_metadata(metric, method=str(value))
        else:
            self.store().set_metadata(metric, x_files_factor=float(value))
        return old

    def getFilesystemPath(self, metric: str) -> str | None:
        """The shard file holding ``metric`` (shared with other metrics), None if it is not stored."""
        store = self.store()
        if metric not in store:
            return None
        return str(store.info(metric).path)

    def validateArchiveList(self, archiveList: Iterable[tuple[int, int]]) -> None:
        """Raise ValueError (``ConfigError``) unless whisper's rules allow these archives."""
        validate_retentions(Retention(int(step), int(points)) for step, points in archiveList)

    # -- reporting -------------------------------------------------------------

    def _count_rejected(self, metric: str, result: WriteResult) -> None:
        if not result.rejected:
            return
        self.rejected_points.update(result.rejected)
        self._unreported.update(result.rejected)
        now = time.monotonic()
        if self._last_report is None or now - self._last_report >= REJECTION_REPORT_INTERVAL:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(self._unreported.items()))
            log.msg(f"istat: points rejected since the last report: {reasons} (last: {metric})")
            self._unreported.clear()
            self._last_report = now

    def _report_difference(
        self, metric: str, carbon_asks: tuple[object, ...], rules_give: tuple[object, ...]
    ) -> None:
        key = (carbon_asks, rules_give)
        if key in self._reported_differences:
            return
        self._reported_differences.add(key)
        log.msg(
            f"istat: carbon creates {metric} with archives, method, xFilesFactor {carbon_asks}; "
            f"the storage rules in {self.rules_files.conf_dir} give {rules_give}. "
            "Using carbon's (later metrics with the same difference are not logged)."
        )


def _check_metadata_key(key: str) -> None:
    if key not in METADATA_KEYS:
        raise ValueError(
            f"Unsupported metadata key {key!r} (supported: {', '.join(METADATA_KEYS)})"
        )
