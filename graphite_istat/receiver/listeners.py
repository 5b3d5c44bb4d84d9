"""The carbon listeners of a daemon: line and pickle over TCP, line over UDP.

Shared by ``graphite-istat serve`` and the agent, which accept the same
protocols from the same kind of settings (``line_interface``/``line_port``,
``pickle_interface``/``pickle_port``, ``udp_enabled``/``udp_interface``/``udp_port``).
Every bound address is logged as ``listening: KIND TRANSPORT HOST:PORT``,
the line tests and tools read to find ports chosen with 0.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred

from graphite_istat.receiver.pipeline import Pipeline
from graphite_istat.receiver.protocols import (
    ConnectionHub,
    DatagramReceiver,
    ReceiverFactory,
    describe_address,
)
from graphite_istat.receiver.streams import LINE, PICKLE


class Listeners:
    """Listening ports and where they are bound."""

    def __init__(self, reactor: Any, hub: ConnectionHub, pipeline: Pipeline, logger: logging.Logger) -> None:
        self.reactor = reactor
        self.hub = hub
        self.pipeline = pipeline
        self.logger = logger
        self.ports: list[Any] = []
        self.bound: list[tuple[str, str, str, int]] = []  # (kind, transport, host, port)

    def listen(self, settings: Any) -> None:
        """Listen as ``settings`` says (raises if a port cannot be bound)."""
        s = settings
        self._listen_tcp(LINE, s.line_interface, s.line_port)
        self._listen_tcp(PICKLE, s.pickle_interface, s.pickle_port)
        if s.udp_enabled:
            label = f"udp {s.udp_interface}:{s.udp_port}"
            port = self.reactor.listenUDP(
                s.udp_port, DatagramReceiver(self.pipeline, self.logger, label), s.udp_interface
            )
            self._bound(LINE, "udp", port)

    def _listen_tcp(self, kind: str, interface: str, port_number: int) -> None:
        factory = ReceiverFactory(kind, self.hub, self.reactor)
        port = self.reactor.listenTCP(port_number, factory, backlog=128, interface=interface)
        self._bound(kind, "tcp", port)

    def _bound(self, kind: str, transport: str, port: Any) -> None:
        self.ports.append(port)
        address = port.getHost()
        self.bound.append((kind, transport, address.host, address.port))
        self.logger.info("listening: %s %s %s", kind, transport, describe_address(address))

    def stop(self) -> Deferred:
        """Stop listening and close every connection."""
        stopped = DeferredList([maybeDeferred(port.stopListening) for port in self.ports])
        self.hub.close_all()
        return stopped
