"""The Twisted side of sending: one sender per destination, reading its spool in order.

``AckSender`` speaks the acknowledged protocol (``protocol.ack_frames``) to a
graphite-istat server: HELLO, then BATCH frames in sequence order, at most
``window_bytes`` unacknowledged at a time; each ACK lets the spool forget
what it covers. After a broken connection it reconnects (backing off up to
``reconnect_max_delay`` seconds) and starts again above the acknowledged
sequence, so nothing is lost, and the server's exactly-once write makes the
re-sent batches count once.

``PlaintextSender`` sends carbon's plaintext protocol to a stock carbon or
relay, which acknowledges nothing: a batch counts as delivered (and leaves
the spool) when it is handed to the connection. That is at most once:
points in the connection's buffers when it breaks, or when the agent is
killed, are lost. While the relay is unreachable they wait in the spool as
for a graphite-istat server.

Batches read back from disk (a replay, after an outage) are sent at most
``replay_points_per_second``; batches still in memory go at once. Spool reads
and acknowledgements (disk work) run in the reactor's thread pool, one of
each at a time per sender. Everything else runs on the reactor thread.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from typing import Any

from twisted.internet import threads
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, ReconnectingClientFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from graphite_istat.agent.counters import DROPPED_CONNECTION_LOST, AgentCounters
from graphite_istat.agent.settings import Destination
from graphite_istat.agent.spool import DestinationSpool, SpoolRecord
from graphite_istat.protocol.ack_frames import (
    ACK,
    AckProtocolError,
    Frame,
    FrameReader,
    decode_ack,
    decode_batch,
    encode_hello,
    read_frame,
)

DEFAULT_WINDOW_BYTES = 16 << 20
DEFAULT_READ_BYTES = 4 << 20
RETRY_AFTER_ERROR = 1.0
REPLAY_SHARES_PER_SECOND = 10


class _Connection(Protocol):
    """One TCP connection of a sender; hands everything to the sender."""

    def __init__(self, sender: _Sender) -> None:
        self.sender = sender
        self.reader = FrameReader()

    def connectionMade(self) -> None:
        self.sender.connected(self)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except AckProtocolError as error:
            self.sender.logger.error("%s: %s; reconnecting", self.sender.destination.label, error)
            self.transport.abortConnection()
            return
        for frame in frames:
            self.sender.frame_received(self, frame)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.sender.disconnected(self, reason)


class _Factory(ReconnectingClientFactory):
    initialDelay = 0.25

    def __init__(self, sender: _Sender, max_delay: float) -> None:
        self.sender = sender
        self.maxDelay = max_delay

    def buildProtocol(self, addr: Any) -> _Connection:
        self.resetDelay()
        return _Connection(self.sender)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.sender.connection_failed(reason)
        super().clientConnectionFailed(connector, reason)


class _Sender(ABC):
    """What both senders share: connecting, reading the spool in order, the replay rate."""

    def __init__(
        self,
        reactor: Any,
        destination: Destination,
        spool: DestinationSpool,
        counters: AgentCounters,
        logger: logging.Logger,
        *,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        read_bytes: int = DEFAULT_READ_BYTES,
        replay_points_per_second: float = 0.0,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        self.reactor = reactor
        self.destination = destination
        self.spool = spool
        self.counters = counters
        self.logger = logger
        self.window_bytes = window_bytes
        self.read_bytes = read_bytes
        self.replay_rate = replay_points_per_second
        self._factory = _Factory(self, reconnect_max_delay)
        self.connection: _Connection | None = None
        self.ready = False
        self.stopping = False
        self.reading = False
        self.dirty = False
        self.sent_through = 0
        self.next_read_at = 0.0
        self._pump_call: Any = None
        self._failures_logged = 0

    # -- lifecycle (reactor thread) -----------------------------------------------

    def start(self) -> None:
        self.reactor.connectTCP(
            self.destination.host, self.destination.port, self._factory, timeout=10
        )

    def stop(self) -> None:
        self.stopping = True
        self._factory.stopTrying()
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        if self.connection is not None:
            self.connection.transport.abortConnection()

    def wake(self) -> None:
        """New batches were spooled."""
        self.dirty = True
        self.pump()

    # -- connection events ------------------------------------------------------

    def connected(self, connection: _Connection) -> None:
        if self.stopping:
            connection.transport.abortConnection()
            return
        self.connection = connection
        self._failures_logged = 0
        self.logger.info("connected to %s", self.destination.label)
        self.on_connected(connection)

    def disconnected(self, connection: _Connection, reason: Failure | None) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self.ready = False
        self.on_disconnected()
        if not self.stopping:
            why = reason.getErrorMessage() if reason is not None else "closed"
            self.logger.warning("connection to %s lost: %s", self.destination.label, why)

    def connection_failed(self, reason: Failure) -> None:
        # Logged for the first few attempts of an outage only: retries go on quietly.
        if self._failures_logged < 3 and not self.stopping:
            self._failures_logged += 1
            self.logger.warning(
                "cannot connect to %s: %s", self.destination.label, reason.getErrorMessage()
            )

    @abstractmethod
    def frame_received(self, connection: _Connection, frame: Frame) -> None:
        """Handle a frame from the destination."""

    @abstractmethod
    def on_connected(self, connection: _Connection) -> None:
        """A connection is up: start the conversation."""

    @abstractmethod
    def on_disconnected(self) -> None:
        """The connection is gone: forget what was in flight on it."""

    # -- reading the spool ----------------------------------------------------------

    @abstractmethod
    def room(self) -> int:
        """Bytes the connection may take now."""

    def pump(self) -> None:
        """Read the next batches from the spool if the connection has room for them."""
        if self.stopping or not self.ready or self.reading or self.connection is None:
            return
        room = self.room()
        if room <= 0:
            return
        delay = self.next_read_at - time.monotonic()
        if delay > 0:
            if self._pump_call is None or not self._pump_call.active():
                self._pump_call = self.reactor.callLater(delay, self.pump)
            return
        self.reading = True
        self.dirty = False
        connection = self.connection
        deferred = threads.deferToThread(self.read_in_thread, self.sent_through, room)
        deferred.addCallbacks(
            lambda result: self._records_read(connection, result), self._read_failed
        )

    def read_in_thread(self, after: int, room: int) -> Any:
        return self.spool.read(after, min(room, self.read_bytes), self.replay_share())

    def replay_share(self) -> int | None:
        """Points read from disk at a time: a tenth of a second's worth of the replay rate."""
        if self.replay_rate <= 0:
            return None
        return max(1, int(self.replay_rate / REPLAY_SHARES_PER_SECOND))

    def _records_read(self, connection: _Connection, records: list[SpoolRecord]) -> None:
        self.reading = False
        if connection is not self.connection or not self.ready or self.stopping:
            # Read for a connection that is gone: the next one reads again from its start.
            self.pump()
            return
        if records:
            self.send(connection, records)
            self._count_sent(records)
        if records or self.dirty:
            self.pump()

    def _count_sent(self, records: list[SpoolRecord]) -> None:
        """Count records just sent, and pace the next read by the points replayed from disk."""
        replayed = sum(r.points for r in records if r.from_disk)
        self.counters.sent(sum(r.points for r in records), len(records), replayed=replayed)
        if replayed and self.replay_rate > 0:
            self.next_read_at = time.monotonic() + replayed / self.replay_rate

    def _read_failed(self, failure: Failure) -> None:
        self.reading = False
        self.logger.error(
            "reading the spool of %s failed: %s", self.destination.label, failure.getErrorMessage()
        )
        self.next_read_at = time.monotonic() + RETRY_AFTER_ERROR
        self.pump()

    @abstractmethod
    def send(self, connection: _Connection, records: list[SpoolRecord]) -> None:
        """Put spooled records on the connection."""


class AckSender(_Sender):
    """The acknowledged protocol to a graphite-istat server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight: deque[tuple[int, int, int]] = deque()  # (sequence, points, bytes)
        self.in_flight_bytes = 0
        self._ack_target = 0
        self._acking = False

    def on_connected(self, connection: _Connection) -> None:
        connection.transport.write(encode_hello(self.spool.source))

    def on_disconnected(self) -> None:
        self.in_flight.clear()
        self.in_flight_bytes = 0

    def room(self) -> int:
        return self.window_bytes - self.in_flight_bytes

    def frame_received(self, connection: _Connection, frame: Frame) -> None:
        if connection is not self.connection:
            return
        try:
            if frame.kind != ACK:
                raise AckProtocolError(f"unexpected frame kind {frame.kind} from the server")
            sequence = decode_ack(frame)
        except AckProtocolError as error:
            self.logger.error("%s: %s; reconnecting", self.destination.label, error)
            connection.transport.abortConnection()
            return
        if not self.ready:
            # The reply to HELLO: the server has everything up to ``sequence``.
            self.ready = True
            self.sent_through = max(sequence, self.spool.acknowledged, self._ack_target)
            self.logger.info(
                "%s has %s up to sequence %d", self.destination.label, self.spool.source, sequence
            )
        points = batches = 0
        while self.in_flight and self.in_flight[0][0] <= sequence:
            _, frame_points, size = self.in_flight.popleft()
            points += frame_points
            batches += 1
            self.in_flight_bytes -= size
        if batches:
            self.counters.acknowledged(points, batches)
        self._acknowledge(sequence)
        self.pump()

    def send(self, connection: _Connection, records: list[SpoolRecord]) -> None:
        for record in records:
            connection.transport.write(record.frame)
            self.in_flight.append((record.sequence, record.points, len(record.frame)))
            self.in_flight_bytes += len(record.frame)
            self.sent_through = record.sequence

    def _acknowledge(self, sequence: int) -> None:
        """Let the spool forget up to ``sequence`` (disk work: in a thread, one at a time)."""
        if sequence <= self._ack_target:
            return
        self._ack_target = sequence
        if self._acking:
            return
        self._acking = True
        deferred = threads.deferToThread(self.spool.acknowledge, sequence)
        deferred.addBoth(self._acknowledged, sequence)

    def _acknowledged(self, result: Any, sequence: int) -> None:
        self._acking = False
        if isinstance(result, Failure):
            self.logger.error(
                "acknowledging %d in the spool of %s failed: %s",
                sequence,
                self.destination.label,
                result.getErrorMessage(),
            )
        if self._ack_target > sequence:
            target, self._ack_target = self._ack_target, sequence
            self._acknowledge(target)


@implementer(IPushProducer)
class PlaintextSender(_Sender):
    """Carbon's plaintext protocol to a stock carbon or relay: at most once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.paused = False

    def on_connected(self, connection: _Connection) -> None:
        connection.transport.registerProducer(self, True)
        self.paused = False
        self.ready = True
        self.sent_through = self.spool.acknowledged
        self.pump()

    def on_disconnected(self) -> None:
        self.paused = False

    # IPushProducer: the transport pauses us when its buffer is full.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.pump()

    def stopProducing(self) -> None:
        self.paused = True

    def room(self) -> int:
        return 0 if self.paused else self.read_bytes

    def frame_received(self, connection: _Connection, frame: Frame) -> None:
        self.logger.warning("%s sent a frame over plaintext; ignored", self.destination.label)

    def read_in_thread(self, after: int, room: int) -> Any:
        """Read, render as plaintext, and forget at once: delivered means handed over."""
        records = self.spool.read(after, min(room, self.read_bytes), self.replay_share())
        if not records:
            return records
        self.spool.acknowledge(records[-1].sequence)
        return [(record, plaintext_lines(record.frame)) for record in records]

    def send(self, connection: _Connection, records: Any) -> None:
        points = batches = 0
        for record, lines in records:
            connection.transport.write(lines)
            self.sent_through = record.sequence
            points += record.points
            batches += 1
        self.counters.acknowledged(points, batches)

    def _records_read(self, connection: _Connection, records: Any) -> None:
        # The records of a plaintext read come with their rendered lines.
        plain = [record for record, _ in records] if records else []
        self.reading = False
        if connection is not self.connection or not self.ready or self.stopping:
            if plain:
                self.counters.dropped(DROPPED_CONNECTION_LOST, sum(r.points for r in plain))
            self.pump()
            return
        if plain:
            self.send(connection, records)
            self._count_sent(plain)
        if plain or self.dirty:
            self.pump()


def plaintext_lines(frame: bytes) -> bytes:
    """A spooled BATCH frame as carbon plaintext lines (``name value timestamp``)."""
    decoded = decode_batch(read_frame(frame, 0)[0]).batch
    names = decoded.point_names()
    return "".join(
        f"{name} {value!r} {stamp}\n"
        for name, value, stamp in zip(
            names, decoded.values.tolist(), decoded.timestamps.tolist(), strict=True
        )
    ).encode("utf-8")
