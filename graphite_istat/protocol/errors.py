"""Exceptions raised by the wire-protocol decoders.

Only conditions after which a connection cannot go on are raised; everything
that can be skipped (a bad line, a bad pickle frame, a bad point) is counted
in ``ParseResult.rejected`` instead.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A peer broke the wire protocol; the receiver should close the connection."""


class FrameTooLarge(ProtocolError):
    """A pickle frame announced a length over the configured maximum."""

    def __init__(self, length: int, limit: int, decoded: object = None) -> None:
        super().__init__(f"pickle frame of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit
        # The ParseResult of the frames before this one in the same chunk, to be kept.
        self.decoded = decoded


class UnsafePickle(ProtocolError):
    """A pickle tried to load a global (a class or function); nothing was imported or called."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"pickle refers to the global {module}.{name}, which is never loaded")
        self.module = module
        self.name = name
