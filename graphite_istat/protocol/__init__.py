"""Carbon wire protocols: bytes in, ``WriteBatch`` out. Pure functions, no sockets."""

from graphite_istat.protocol.errors import FrameTooLarge, ProtocolError, UnsafePickle
from graphite_istat.protocol.pickle_frames import PickleDecoder
from graphite_istat.protocol.plaintext import PlaintextDecoder, parse_lines
from graphite_istat.protocol.result import ParseResult

__all__ = [
    "FrameTooLarge",
    "ParseResult",
    "PickleDecoder",
    "PlaintextDecoder",
    "ProtocolError",
    "UnsafePickle",
    "parse_lines",
]
