"""The Twisted side of the receiver: sockets in, bytes handed to the pipeline, nothing parsed here.

``ReceiverConnection`` serves both TCP protocols (plaintext and pickle): it
only hands every read to the pipeline with its ``Stream``. ``ConnectionHub``
knows every open connection so that reading can be paused and resumed
(back-pressure) and everything closed at shutdown. ``DatagramReceiver``
serves plaintext over UDP.

Everything here runs on the reactor thread except ``_protocol_error``,
which a parser thread calls and which hops to the reactor.
"""

from __future__ import annotations

import logging
import socket
from collections import OrderedDict
from typing import Any

from twisted.internet import error as twisted_errors
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python.failure import Failure

from graphite_istat.protocol import ProtocolError
from graphite_istat.receiver.pipeline import Pipeline
from graphite_istat.receiver.streams import UDP, Stream

READ_BUFFER_BYTES = 1 << 20
"""Bytes asked for per read (Twisted asks for 64 KiB): fewer, bigger chunks under load."""
FINAL_READ_LIMIT = 16 << 20
"""At shutdown, at most this much is still read from each socket's kernel buffer."""
MAX_UDP_SENDERS = 1024
"""UDP senders remembered, each with its own stream and bad-input log."""


def describe_address(address: Any) -> str:
    host = getattr(address, "host", "?")
    port = getattr(address, "port", "?")
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class ConnectionHub:
    """The open TCP connections: pausing, resuming and closing them all (reactor thread only)."""

    def __init__(self, pipeline: Pipeline, logger: logging.Logger) -> None:
        self.pipeline = pipeline
        self.logger = logger
        self.connections: set[ReceiverConnection] = set()
        self.paused = False
        self.closing = False

    def connection_made(self, connection: ReceiverConnection) -> None:
        if self.closing:
            connection.transport.abortConnection()
            return
        self.connections.add(connection)
        self.pipeline.open_stream(connection.stream)
        if self.paused:
            connection.transport.pauseProducing()

    def connection_lost(self, connection: ReceiverConnection, *, clean: bool) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.pipeline.close_stream(connection.stream, clean=clean and not self.closing)

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.logger.info(
                "receive queue full: pausing reads from %d connections", len(self.connections)
            )
            for connection in self.connections:
                connection.transport.pauseProducing()

    def resume(self) -> None:
        if self.paused and not self.closing:
            self.paused = False
            self.logger.info("receive queue drained: resuming reads")
            for connection in self.connections:
                connection.transport.resumeProducing()

    def close_all(self) -> None:
        """Shutdown: stop reading, take what the kernel already acknowledged, close, hand the
        streams to the pipeline to finish (a last line without newline is dropped)."""
        self.closing = True
        for connection in list(self.connections):
            connection.transport.pauseProducing()
            connection.read_what_is_left()
            self.connections.discard(connection)
            self.pipeline.close_stream(connection.stream, clean=False)
            connection.transport.abortConnection()


class ReceiverConnection(Protocol):
    """One TCP client of the plaintext or pickle protocol."""

    def __init__(self, kind: str, hub: ConnectionHub, reactor: IReactorFromThreads) -> None:
        self.kind = kind
        self.hub = hub
        self.reactor = reactor
        self.stream: Stream

    def connectionMade(self) -> None:
        peer = describe_address(self.transport.getPeer())
        self.stream = Stream(
            self.kind, peer, self.hub.logger, on_protocol_error=self._protocol_error
        )
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = READ_BUFFER_BYTES
        self.hub.connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.hub.pipeline.submit(self.stream, data)

    def connectionLost(self, reason: Failure = twisted_errors.ConnectionDone) -> None:
        self.hub.connection_lost(
            self, clean=reason.check(twisted_errors.ConnectionDone) is not None
        )

    def read_what_is_left(self) -> None:
        """Read what the kernel holds for this socket now, without waiting."""
        handle = self.transport.getHandle()
        if not isinstance(handle, socket.socket):
            return
        taken = 0
        while taken < FINAL_READ_LIMIT:
            try:
                data = handle.recv(READ_BUFFER_BYTES)
            except OSError:  # EAGAIN (nothing left), a reset, a closed socket
                return
            if not data:
                return
            taken += len(data)
            self.hub.pipeline.submit(self.stream, data)

    def _protocol_error(self, error: ProtocolError) -> None:
        """Called on a parser thread when the peer broke the protocol: close the connection."""
        self.reactor.callFromThread(self.transport.abortConnection)


class ReceiverFactory(Factory):
    """Builds a ``ReceiverConnection`` of one protocol kind per accepted TCP connection."""

    def __init__(self, kind: str, hub: ConnectionHub, reactor: IReactorFromThreads) -> None:
        self.kind = kind
        self.hub = hub
        self.reactor = reactor

    def buildProtocol(self, addr: Any) -> ReceiverConnection:
        return ReceiverConnection(self.kind, self.hub, self.reactor)


class DatagramReceiver(DatagramProtocol):
    """Plaintext over UDP: each datagram is one or more whole lines.

    Each sender gets its own stream, so bad input is logged (at the limited
    rate of a TCP connection's) with the address that sent it. The table
    keeps the most recent ``MAX_UDP_SENDERS`` senders; the least recently
    heard one's stream is closed (its datagrams are whole lines: nothing of
    it is waiting for more) when a new sender needs the room.
    """

    def __init__(self, pipeline: Pipeline, logger: logging.Logger, label: str) -> None:
        self.pipeline = pipeline
        self.logger = logger
        self.label = label
        self.senders: OrderedDict[Any, Stream] = OrderedDict()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if datagram and not datagram.endswith(b"\n"):
            datagram += b"\n"
        self.pipeline.submit(self._stream_of(addr), datagram)

    def _stream_of(self, addr: Any) -> Stream:
        stream = self.senders.get(addr)
        if stream is not None:
            self.senders.move_to_end(addr)
            return stream
        if len(self.senders) >= MAX_UDP_SENDERS:
            _, oldest = self.senders.popitem(last=False)
            self.pipeline.close_stream(oldest, clean=True)
        host, port = addr[0], addr[1]
        sender = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
        stream = Stream(UDP, f"{sender} ({self.label})", self.logger)
        self.pipeline.open_stream(stream)
        self.senders[addr] = stream
        return stream
