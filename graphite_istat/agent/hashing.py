"""carbon-relay's consistent hashing (``carbon_ch``): which server a metric goes to.

The ring is carbon's: each destination ``(server, instance)`` sits at 100
positions, the position of replica ``i`` being the first four hex digits of
the md5 of ``"('server', 'instance'):i"`` (Python's ``str`` of the tuple, as
carbon formats it), taken as an integer and bumped by one while taken; a
metric goes to the first position at or after the md5 position of its name,
wrapping around. An agent configured with the same ``DESTINATIONS`` as a
carbon-relay (``RELAY_METHOD = consistent-hashing``) and graphite-web's
``CLUSTER_SERVERS`` therefore sends every metric where they expect it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from hashlib import md5

REPLICAS = 100
_CACHE_LIMIT = 1 << 20


def ring_position(key: str) -> int:
    """carbon's ``carbon_ch`` hash: the first 16 bits of the md5 of ``key``."""
    return int(md5(key.encode("utf-8")).hexdigest()[:4], 16)


def node_key(server: str, instance: str | None) -> str:
    """The text carbon hashes for a destination: ``str((server, instance))``."""
    return str((server, instance))


class CarbonHashRing:
    """The ring of destinations; ``node_for(name)`` is the index of the destination."""

    def __init__(self, nodes: Sequence[tuple[str, str | None]]) -> None:
        if not nodes:
            raise ValueError("a ring needs at least one destination")
        if len(set(nodes)) != len(nodes):
            raise ValueError(f"a (server, instance) appears twice among {list(nodes)}")
        entries: list[tuple[int, tuple[str, str | None]]] = []
        taken: set[int] = set()
        for server, instance in nodes:
            key = node_key(server, instance)
            for replica in range(REPLICAS):
                position = ring_position(f"{key}:{replica}")
                while position in taken:
                    position += 1
                taken.add(position)
                bisect.insort(entries, (position, (server, instance)))
        index_of = {node: i for i, node in enumerate(nodes)}
        self._positions = [position for position, _ in entries]
        self._owners = [index_of[node] for _, node in entries]
        self._cache: dict[str, int] = {}

    def node_for(self, name: str) -> int:
        """Index (into the ``nodes`` given) of the destination of metric ``name``."""
        node = self._cache.get(name)
        if node is None:
            index = bisect.bisect_left(self._positions, ring_position(name))
            node = self._owners[index % len(self._owners)]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[name] = node
        return node
