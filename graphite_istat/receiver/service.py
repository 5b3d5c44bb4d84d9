"""The wiring of one receiver process: store, pipeline, listeners, timers, signals, shutdown.

``run_receiver`` is the whole life of ``graphite-istat serve``:

1. open the store (the writer lock) with the storage rules, start the pipeline;
2. listen (plaintext TCP, pickle TCP, UDP when enabled) and log the bound
   ports as ``listening: <line|pickle> <tcp|udp> HOST:PORT``, then ``ready``;
3. run the reactor: SIGHUP re-reads storage-schemas.conf and
   storage-aggregation.conf (for metrics created from then on; connections
   stay open), SIGUSR1 writes the self-metrics at once, SIGTERM/SIGINT stop;
4. on stop: stop listening, read what the kernel already acknowledged on
   every connection, close them, parse and write everything received,
   write the last self-metrics, close the store, log the totals as
   ``stopped: {json}``, return 0.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import LoopingCall

from graphite_istat.config import ConfigError, StorageRules, load_storage_rules
from graphite_istat.receiver.counters import ReceiverCounters
from graphite_istat.receiver.listeners import Listeners
from graphite_istat.receiver.pipeline import Pipeline
from graphite_istat.receiver.protocols import (
    ConnectionHub,
)
from graphite_istat.receiver.runner import run_service
from graphite_istat.receiver.selfmetrics import SelfMetrics
from graphite_istat.receiver.settings import ReceiverSettings
from graphite_istat.store.batch import WriteBatch, WriteResult
from graphite_istat.store.store import Store


class StoreWriter:
    """The pipeline's view of the store; also where storage rules are swapped (writer thread)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, batch: WriteBatch) -> WriteResult:
        return self.store.write(batch)

    def sync(self) -> None:
        self.store.sync()

    def replace_rules(self, rules: StorageRules) -> None:
        self.store.set_rules(rules)


class ReceiverService:
    """One daemon: listeners on the reactor, the pipeline behind them, the store at the end."""

    def __init__(
        self,
        reactor: Any,
        settings: ReceiverSettings,
        store: Store,
        conf_dir: Path,
        logger: logging.Logger,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.store = store
        self.conf_dir = conf_dir
        self.logger = logger
        self.counters = ReceiverCounters()
        self.writer = StoreWriter(store)
        self.pipeline = Pipeline(
            self.writer,
            self.counters,
            logger=logger,
            parser_threads=settings.parser_threads,
            write_batch_points=settings.write_batch_points,
            receive_queue_bytes=settings.receive_queue_bytes,
            write_queue_points=settings.write_queue_points,
            max_cache_size=settings.max_cache_size,
            visibility_interval=settings.visibility_interval,
            fsync_interval=settings.fsync_interval,
            on_pause=lambda: reactor.callFromThread(self.hub.pause),
            on_resume=lambda: reactor.callFromThread(self.hub.resume),
        )
        self.hub = ConnectionHub(self.pipeline, logger)
        self.self_metrics = SelfMetrics(
            settings.metric_path, self.counters, self.pipeline.buffered_points
        )
        self.listeners = Listeners(reactor, self.hub, self.pipeline, logger)
        self._metrics_timer: LoopingCall | None = None
        self._stopped = False

    # -- starting -----------------------------------------------------------

    def start(self) -> None:
        """Start the pipeline and listen; log the bound addresses."""
        self.pipeline.start()
        self.listeners.listen(self.settings)
        if self.settings.metric_interval > 0:
            self._metrics_timer = LoopingCall(self.write_self_metrics)
            self._metrics_timer.start(self.settings.metric_interval, now=False)

    # -- while running ------------------------------------------------------

    def write_self_metrics(self) -> None:
        """Queue the self-metrics of the interval just ended for the writer thread."""
        self.pipeline.call_in_writer(self._write_self_metrics_now)

    def _write_self_metrics_now(self) -> None:
        result = self.store.write(self.self_metrics.batch())
        if result.rejected:
            self.logger.warning("self-metrics rejected by the store: %s", result.rejected)

    def reload_rules(self) -> None:
        """Re-read the storage rules (on the writer thread); keep the old ones on an error."""
        self.pipeline.call_in_writer(self._reload_rules_now)

    def _reload_rules_now(self) -> None:
        try:
            rules = load_storage_rules(self.conf_dir)
        except (ConfigError, OSError) as error:
            self.logger.error("storage rules not reloaded, the old ones stay: %s", error)
            return
        self.writer.replace_rules(rules)
        self.logger.info("reloaded storage rules from %s", self.conf_dir)

    # -- stopping -----------------------------------------------------------

    def stop(self) -> Deferred:
        """Stop listening, close the connections, drain the pipeline, close the store."""
        if self._stopped:
            return succeed(None)
        self._stopped = True
        self.logger.info("stopping: draining what was received")
        if self._metrics_timer is not None and self._metrics_timer.running:
            self._metrics_timer.stop()
        stopped_listening = self.listeners.stop()
        drained = threads.deferToThread(self._drain)
        return DeferredList([stopped_listening, drained])

    def _drain(self) -> None:
        self.pipeline.stop()
        if self.settings.metric_interval > 0:
            self._write_self_metrics_now()
        self.store.close()
        self.logger.info(
            "stopped: %s", json.dumps(self.counters.totals().as_dict(), sort_keys=True)
        )


def run_receiver(
    settings: ReceiverSettings,
    store: Store,
    conf_dir: Path,
    logger: logging.Logger,
    *,
    on_ready: Callable[[ReceiverService], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status (0 when everything was written)."""
    from twisted.internet import reactor

    service = ReceiverService(reactor, settings, store, conf_dir, logger)
    return run_service(
        reactor,
        service,
        logger,
        signal_actions={signal.SIGHUP: service.reload_rules, signal.SIGUSR1: service.write_self_metrics},
        thread_pool_size=2,
        on_ready=on_ready,
    )
