"""Where the demo feeder's points go.

``StoreSink`` writes into the store directly (the demo process is then its
one writer). ``CarbonPlaintextSink`` sends carbon's plaintext protocol to a
receiver on 127.0.0.1 (``graphite-istat serve``), which becomes the writer:
swapping one for the other is all the demo needs once the receiver runs.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Protocol

from ..store.batch import WriteBatch
from ..store.store import Store

Point = tuple[str, float, float]  # name, timestamp, value


class Sink(Protocol):
    def send(self, points: Sequence[Point]) -> None: ...

    def close(self) -> None: ...


class SinkError(Exception):
    """Points that could not be delivered."""


class StoreSink:
    """Writes straight into a store opened for writing."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rejected: dict[str, int] = {}

    def send(self, points: Sequence[Point]) -> None:
        result = self.store.write(WriteBatch.from_points(list(points)))
        for reason, count in result.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + count

    def close(self) -> None:
        self.store.close()


class CarbonPlaintextSink:
    """Sends ``name value timestamp`` lines to a carbon plaintext port on this host."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise SinkError(f"the demo only talks to this host, not {host}")
        self.address = (host, port)
        self.timeout = timeout

    def send(self, points: Sequence[Point]) -> None:
        payload = "".join(f"{name} {value!r} {timestamp!r}\n" for name, timestamp, value in points)
        try:
            with socket.create_connection(self.address, timeout=self.timeout) as connection:
                connection.sendall(payload.encode())
        except OSError as e:
            raise SinkError(f"cannot send to {self.address[0]}:{self.address[1]}: {e}") from e

    def close(self) -> None:
        pass
