"""The wiring of one agent process: listeners, pipeline, spools, senders, timers, signals.

``run_agent`` is the whole life of ``graphite-istat agent``:

1. open every destination's spool (scanning what a previous run left, cutting
   torn tails) before the reactor runs;
2. start the receiver's pipeline with a ``Forwarder`` as its writer, listen
   with the receiver's own protocols (plaintext TCP, pickle TCP, UDP) and log
   ``listening: <line|pickle> <tcp|udp> HOST:PORT``, then ``ready``; start one
   sender per destination, which replays whatever the spool holds;
3. run: SIGUSR1 forwards the self-metrics at once, SIGTERM/SIGINT stop;
4. on stop: stop listening, read what the kernel already acknowledged on every
   connection, spool everything received, close the senders and the spools,
   log the totals as ``stopped: {json}``.

What the agent has spooled survives it; what it received in the last
``FLUSH_INTERVAL`` before a kill -9 does not.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import LoopingCall

from graphite_istat.agent.counters import AgentCounters
from graphite_istat.agent.forwarder import Forwarder
from graphite_istat.agent.hashing import CarbonHashRing
from graphite_istat.agent.selfmetrics import AgentSelfMetrics
from graphite_istat.agent.senders import AckSender, PlaintextSender
from graphite_istat.agent.settings import PLAINTEXT, AgentSettings
from graphite_istat.agent.spool import DestinationSpool
from graphite_istat.receiver.counters import ReceiverCounters
from graphite_istat.receiver.listeners import Listeners
from graphite_istat.receiver.pipeline import Pipeline
from graphite_istat.receiver.protocols import (
    ConnectionHub,
)
from graphite_istat.receiver.runner import run_service

# The pipeline writes (spools) this often even when nothing waits, which costs nothing.
_NO_FSYNC = 3600.0


class AgentService:
    """One agent: local listeners, the pipeline into the spools, a sender per destination."""

    def __init__(self, reactor: Any, settings: AgentSettings, logger: logging.Logger) -> None:
        self.reactor = reactor
        self.settings = settings
        self.logger = logger
        self.received = ReceiverCounters()
        self.counters = AgentCounters()
        self.spools = [
            DestinationSpool(
                settings.spool_dir / destination.directory_name,
                agent_id=settings.agent_id,
                counters=self.counters,
                logger=logger,
                max_bytes=settings.max_spool_bytes,
                memory_bytes=settings.spool_memory_bytes,
                fsync=settings.spool_fsync,
            )
            for destination in settings.destinations
        ]
        ring = None
        if len(settings.destinations) > 1:
            ring = CarbonHashRing([(d.host, d.instance) for d in settings.destinations])
        self.forwarder = Forwarder(
            self.spools,
            self.counters,
            logger,
            ring=ring,
            max_frame_points=settings.max_batch_points,
            compress=settings.spool_compression,
        )
        self.pipeline = Pipeline(
            self.forwarder,
            self.received,
            logger=logger,
            parser_threads=settings.parser_threads,
            write_batch_points=settings.max_batch_points,
            max_write_points=4 * settings.max_batch_points,
            visibility_interval=settings.flush_interval,
            fsync_interval=_NO_FSYNC,
            on_pause=lambda: reactor.callFromThread(self.hub.pause),
            on_resume=lambda: reactor.callFromThread(self.hub.resume),
        )
        self.hub = ConnectionHub(self.pipeline, logger)
        sender_class = PlaintextSender if settings.destination_protocol == PLAINTEXT else AckSender
        self.senders = [
            sender_class(
                reactor,
                destination,
                spool,
                self.counters,
                logger,
                window_bytes=settings.window_bytes,
                replay_points_per_second=settings.replay_points_per_second,
                reconnect_max_delay=settings.reconnect_max_delay,
            )
            for destination, spool in zip(settings.destinations, self.spools, strict=True)
        ]
        self.self_metrics = AgentSelfMetrics(
            settings.metric_path, self.received, self.counters, self.spool_bytes
        )
        self.listeners = Listeners(reactor, self.hub, self.pipeline, logger)
        self._metrics_timer: LoopingCall | None = None
        self._stopped = False

    def spool_bytes(self) -> int:
        return sum(spool.total_bytes() for spool in self.spools)

    # -- starting -----------------------------------------------------------------

    def open_spools(self) -> None:
        """Read what earlier runs left (disk work: before the reactor runs)."""
        for destination, spool in zip(self.settings.destinations, self.spools, strict=True):
            spool.open()
            self.logger.info(
                "spool for %s: %s, source %s, %d bytes, acknowledged up to %d",
                destination.label,
                spool.directory,
                spool.source,
                spool.total_bytes(),
                spool.acknowledged,
            )

    def start(self) -> None:
        self.pipeline.start()
        s = self.settings
        self.listeners.listen(s)
        for sender, spool in zip(self.senders, self.spools, strict=True):
            spool.add_listener(lambda wake=sender.wake: self.reactor.callFromThread(wake))
            sender.start()
        if s.metric_interval > 0:
            self._metrics_timer = LoopingCall(self.write_self_metrics)
            self._metrics_timer.start(s.metric_interval, now=False)

    # -- while running ----------------------------------------------------------------

    def write_self_metrics(self) -> None:
        """Spool the self-metrics of the interval just ended (on the writer thread)."""
        self.pipeline.call_in_writer(self._write_self_metrics_now)

    def _write_self_metrics_now(self) -> None:
        self.forwarder.write(self.self_metrics.batch())

    def totals(self) -> dict[str, object]:
        received = self.received.totals()
        totals = self.counters.totals().as_dict()
        dropped = dict(received.dropped)
        for reason, count in self.counters.totals().dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
        totals.update(
            metricsReceived=received.metrics_received,
            badLines=dict(received.bad_lines),
            dropped=dropped,
            errors=received.errors,
            spoolBytes=self.spool_bytes(),
        )
        return totals

    # -- stopping ---------------------------------------------------------------------

    def stop(self) -> Deferred:
        """Stop listening, spool everything received, close the senders and spools."""
        if self._stopped:
            return succeed(None)
        self._stopped = True
        self.logger.info("stopping: spooling what was received")
        if self._metrics_timer is not None and self._metrics_timer.running:
            self._metrics_timer.stop()
        stopped_listening = self.listeners.stop()
        drained = threads.deferToThread(self._drain)
        drained.addCallback(lambda _: self._close())
        return DeferredList([stopped_listening, drained])

    def _drain(self) -> None:
        self.pipeline.stop()
        if self.settings.metric_interval > 0:
            self._write_self_metrics_now()

    def _close(self) -> Deferred:
        for sender in self.senders:
            sender.stop()
        return threads.deferToThread(self._close_spools)

    def _close_spools(self) -> None:
        for spool in self.spools:
            spool.close()
        self.logger.info("stopped: %s", json.dumps(self.totals(), sort_keys=True))


def run_agent(
    settings: AgentSettings,
    logger: logging.Logger,
    *,
    on_ready: Callable[[AgentService], None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; the exit status (0 when everything received was spooled)."""
    from twisted.internet import reactor

    service = AgentService(reactor, settings, logger)
    service.open_spools()
    return run_service(
        reactor,
        service,
        logger,
        signal_actions={signal.SIGUSR1: service.write_self_metrics},
        thread_pool_size=4 + 2 * len(settings.destinations),
        on_ready=on_ready,
    )
