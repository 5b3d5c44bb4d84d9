"""The server side of the agents' acknowledged protocol (``protocol.ack_frames``).

``start_ack_server`` adds a listener on ``ACK_PORT`` to a running
``ReceiverService``; it logs ``listening: agent tcp HOST:PORT``. For each
connection:

* HELLO(source): the store's last sequence for that source is looked up on
  the writer thread and sent back as an ACK;
* BATCH: a sequence at or below the highest known to be applied for its
  source is a duplicate, acknowledged at once; any other is handed to the
  pipeline's one writer thread, which decodes it and applies it with
  ``Store.write(points, source=, sequence=)`` (exactly once, atomic with
  respect to a crash; the store itself recognises duplicates after a
  restart), then sends back ACK(highest sequence applied) -- only after the
  store returned. Nothing is acknowledged from the reactor thread that is
  not already in the store;
* a frame that fails its checks, or a write that raises, closes the
  connection without an ACK; the agent reconnects and re-sends.

Agent points are counted in the receiver's counters like any other
(``metricsReceived``, ``committedPoints``, ``rejected.*``); the agent-side
totals (batches, duplicates) are logged as ``ack server totals: {json}`` at shutdown.
Reading from a connection pauses while more than ``max_pending_bytes`` of its
batches wait for the writer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from graphite_istat.config import CarbonConf
from graphite_istat.protocol.ack_frames import (
    BATCH,
    HELLO,
    AckProtocolError,
    Frame,
    FrameReader,
    batch_info,
    decode_batch,
    decode_hello,
    encode_ack,
)
from graphite_istat.receiver.protocols import describe_address

DEFAULT_MAX_PENDING_BYTES = 64 << 20
ACK_INTERFACE_KEY = "ACK_INTERFACE"


@dataclass(slots=True)
class AckCounts:
    hellos: int = 0
    batches: int = 0
    duplicates: int = 0
    duplicate_points: int = 0
    applied_points: int = 0
    failed_batches: int = 0
    bad_frames: int = 0


class AppliedSequences:
    """The highest sequence known to be in the store, per source (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._highest: dict[str, int] = {}

    def get(self, source: str) -> int | None:
        with self._lock:
            return self._highest.get(source)

    def raise_to(self, source: str, sequence: int) -> int:
        with self._lock:
            highest = max(self._highest.get(source, 0), sequence)
            self._highest[source] = highest
            return highest


class AckServer:
    """The listener and its connections, bound to one receiver service."""

    def __init__(
        self,
        service: Any,
        *,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self.service = service
        self.reactor = service.reactor
        self.logger: logging.Logger = service.logger
        self.max_pending_bytes = max_pending_bytes
        self.applied = AppliedSequences()
        self.counts = AckCounts()
        self._counts_lock = threading.Lock()
        self.connections: set[AckConnection] = set()
        self.port: Any = None
        self.closing = False

    def listen(self, interface: str, port_number: int) -> None:
        self.port = self.reactor.listenTCP(
            port_number, AckFactory(self), backlog=128, interface=interface
        )
        self.logger.info("listening: agent tcp %s", describe_address(self.port.getHost()))
        self.reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    def stop(self) -> Any:
        """Stop listening and drop the connections; batches already queued are still applied
        (their ACKs are not sent: the agents re-send, and the store recognises them)."""
        self.closing = True
        for connection in list(self.connections):
            connection.transport.abortConnection()
        with self._counts_lock:
            totals = _as_dict(self.counts)
        self.logger.info("ack server totals: %s", json.dumps(totals, sort_keys=True))
        if self.port is not None:
            return maybeDeferred(self.port.stopListening)
        return None

    def count(self, **increments: int) -> None:
        with self._counts_lock:
            for name, value in increments.items():
                setattr(self.counts, name, getattr(self.counts, name) + value)

    # -- the writer thread ----------------------------------------------------------

    def look_up(self, connection: AckConnection, source: str) -> None:
        """HELLO: the store's last sequence for ``source`` (writer thread)."""
        store = self.service.store
        highest = self.applied.raise_to(source, store.last_sequence(source))
        self.reactor.callFromThread(connection.send_ack, highest, 0)

    def apply(self, connection: AckConnection, frame: Frame) -> None:
        """Decode and apply one batch, then acknowledge it (writer thread)."""
        size = len(frame.body)
        try:
            decoded = decode_batch(frame)
        except AckProtocolError as error:
            self.logger.warning("bad batch from %s: %s; closing", connection.peer, error)
            self.count(bad_frames=1)
            self.reactor.callFromThread(connection.abort, size)
            return
        points = len(decoded.batch)
        counters = self.service.counters
        started = time.monotonic()
        try:
            result = self.service.store.write(
                decoded.batch, source=decoded.source, sequence=decoded.sequence
            )
        except Exception:
            # Not applied, not acknowledged: the agent re-sends after reconnecting.
            self.logger.exception(
                "applying batch %d of %s (%d points) failed; closing the connection",
                decoded.sequence,
                decoded.source,
                points,
            )
            counters.error()
            self.count(failed_batches=1)
            self.reactor.callFromThread(connection.abort, size)
            return
        if result.duplicate:
            self.count(batches=1, duplicates=1, duplicate_points=points)
        else:
            counters.parsed(points, {})
            counters.written(
                result.accepted, result.created, result.rejected, time.monotonic() - started
            )
            self.count(batches=1, applied_points=points)
        last = self.service.store.last_sequence(decoded.source)
        highest = self.applied.raise_to(decoded.source, max(last, decoded.sequence))
        self.reactor.callFromThread(connection.send_ack, highest, size)


def _as_dict(counts: AckCounts) -> dict[str, int]:
    return {name: getattr(counts, name) for name in AckCounts.__slots__}


class AckConnection(Protocol):
    """One agent's connection (reactor thread, except what ``AckServer`` runs in the writer)."""

    def __init__(self, server: AckServer) -> None:
        self.server = server
        self.reader = FrameReader()
        self.peer = "?"
        self.pending_bytes = 0
        self.paused = False
        self.closed = False

    def connectionMade(self) -> None:
        self.peer = describe_address(self.transport.getPeer())
        if self.server.closing:
            self.transport.abortConnection()
            return
        self.server.connections.add(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        self.server.connections.discard(self)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except AckProtocolError as error:
            self._refuse(str(error))
            return
        for frame in frames:
            if self.closed:
                return
            if frame.kind == HELLO:
                self._hello(frame)
            elif frame.kind == BATCH:
                self._batch(frame)
            else:
                self._refuse(f"unexpected frame kind {frame.kind} from an agent")

    def _refuse(self, problem: str) -> None:
        self.server.logger.warning("bad frame from agent %s: %s; closing", self.peer, problem)
        self.server.count(bad_frames=1)
        self.closed = True
        self.transport.abortConnection()

    def _hello(self, frame: Frame) -> None:
        try:
            source = decode_hello(frame)
        except AckProtocolError as error:
            self._refuse(str(error))
            return
        self.server.count(hellos=1)
        self.server.service.pipeline.call_in_writer(lambda: self.server.look_up(self, source))

    def _batch(self, frame: Frame) -> None:
        try:
            info = batch_info(frame.body)
        except AckProtocolError as error:
            self._refuse(str(error))
            return
        known = self.server.applied.get(info.source)
        if known is not None and info.sequence <= known:
            self.server.count(batches=1, duplicates=1, duplicate_points=info.points)
            self.send_ack(known, 0)
            return
        self.pending_bytes += len(frame.body)
        if self.pending_bytes > self.server.max_pending_bytes and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        self.server.service.pipeline.call_in_writer(lambda: self.server.apply(self, frame))

    # -- called on the reactor thread by the writer's callFromThread ------------------

    def _done(self, size: int) -> None:
        self.pending_bytes -= size
        if self.paused and self.pending_bytes <= self.server.max_pending_bytes // 2:
            self.paused = False
            if not self.closed:
                self.transport.resumeProducing()

    def send_ack(self, sequence: int, size: int) -> None:
        self._done(size)
        if not self.closed:
            self.transport.write(encode_ack(sequence))

    def abort(self, size: int) -> None:
        self._done(size)
        self.closed = True
        self.transport.abortConnection()


class AckFactory(Factory):
    def __init__(self, server: AckServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> AckConnection:
        return AckConnection(self.server)


def start_ack_server(service: Any, carbon_conf: CarbonConf) -> AckServer | None:
    """Listen for agents on ``ACK_PORT`` (interface: ``[istat] ACK_INTERFACE``, else the
    line receiver's) next to a started ``ReceiverService``; runs on the reactor thread.

    A port that cannot be bound is logged as an error; the carbon listeners go on."""
    interface = carbon_conf.istat.get(ACK_INTERFACE_KEY, carbon_conf.line_receiver_interface)
    server = AckServer(service)
    try:
        server.listen(interface, carbon_conf.ack_port)
    except CannotListenError as error:
        service.logger.error("not listening for agents: %s", error)
        return None
    return server
