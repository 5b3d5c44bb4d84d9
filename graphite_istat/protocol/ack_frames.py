"""The acknowledged protocol between an agent and a server: THE one place it is documented.

The agent sends numbered batches of points; the server applies each batch to
its store exactly once and acknowledges it only after the store has it. The
same frames, byte for byte, are the records of the agent's on-disk spool
(``graphite_istat.agent.spool``).

Conversation over one TCP connection (the server's ``ACK_PORT``)::

    agent  -> server   HELLO(source)
    server -> agent    ACK(last sequence the store applied for source, 0 if none)
    agent  -> server   BATCH(source, sequence, points) ...   (increasing sequences)
    server -> agent    ACK(highest sequence applied for source) ...

* ``source`` names one producer of sequences: the agent id and the epoch of
  the agent's spool for that server (``"<agent id>/<epoch>"``).
* Sequences of a source increase; gaps are allowed (batches the agent dropped).
  The server applies a batch with ``Store.write(points, source=, sequence=)``,
  which ignores a sequence not above the last one applied (a re-sent batch is
  a duplicate and counts nothing), atomically with respect to a crash.
* An ACK carries the highest sequence applied for the connection's source:
  every batch up to it is in the store, so the agent drops them from its
  spool. A duplicate is acknowledged at once.
* The agent sends batches in sequence order only, and waits for the reply to
  HELLO before its first batch; after a broken connection it starts again
  with HELLO and re-sends everything above the acknowledged sequence.
* A frame that fails its checks ends the connection (``AckProtocolError``).

Frame, version 1 (all integers little-endian)::

    frame   := header body
    header  := magic     2 bytes  b"gA"
               version   u8       1
               kind      u8       1 HELLO, 2 BATCH, 3 ACK
               flags     u8       bit 0: the batch payload is zlib-compressed
               reserved  u8       0
               length    u32      bytes of body (at most MAX_BODY_BYTES)
               crc32     u32      zlib.crc32 of the 10 header bytes before it, then of body
    HELLO body := source_length u16, source utf-8
    ACK body   := sequence u64
    BATCH body := sequence u64, points u32, source_length u16, source utf-8, payload
    payload    := (zlib-compressed when flags bit 0)
                  names u32, name_lengths u32[names], names utf-8 (concatenated),
                  name_ids u32[points], timestamps i64[points], values f64[points]

Point ``i`` is ``(names[name_ids[i]], timestamps[i], values[i])``. The
sequence and point count sit before the payload, uncompressed, so a spool
scan reads them without decompressing.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from graphite_istat.protocol.errors import ProtocolError
from graphite_istat.store.batch import WriteBatch

MAGIC = b"gA"
VERSION = 1
HELLO, BATCH, ACK = 1, 2, 3
KINDS = frozenset({HELLO, BATCH, ACK})
FLAG_ZLIB = 0x01
MAX_BODY_BYTES = 256 << 20
MAX_SOURCE_BYTES = 1024

HEADER = struct.Struct("<2sBBBBII")
HEADER_BYTES = HEADER.size  # 14
_CRC_COVERED = HEADER_BYTES - 4
_BATCH_PREFIX = struct.Struct("<QIH")
_SEQUENCE = struct.Struct("<Q")
_SOURCE_LENGTH = struct.Struct("<H")
_COUNT = struct.Struct("<I")
_ZLIB_LEVEL = 1


class AckProtocolError(ProtocolError):
    """A frame broke the acknowledged protocol (magic, version, kind, length, checksum, shape)."""


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The fixed 14 bytes before every body."""

    kind: int
    flags: int
    length: int
    crc: int

    @property
    def frame_bytes(self) -> int:
        return HEADER_BYTES + self.length


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked frame: its kind, flags and body."""

    kind: int
    flags: int
    body: bytes


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What a BATCH body says before its payload: enough to route, count and skip it."""

    sequence: int
    points: int
    source: str
    payload_offset: int


@dataclass(frozen=True, slots=True)
class AgentBatch:
    """A decoded BATCH: who sent it, its number, its points."""

    source: str
    sequence: int
    batch: WriteBatch


# -- frames -------------------------------------------------------------------


def _frame(kind: int, flags: int, body: bytes) -> bytes:
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"a frame body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    head = struct.pack("<2sBBBBI", MAGIC, VERSION, kind, flags, 0, len(body))
    crc = zlib.crc32(body, zlib.crc32(head))
    return head + _COUNT.pack(crc) + body


def parse_header(data: bytes | memoryview) -> FrameHeader:
    """Check the header at the start of ``data`` (at least ``HEADER_BYTES``)."""
    magic, version, kind, flags, reserved, length, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise AckProtocolError(f"bad frame magic {bytes(magic)!r}")
    if version != VERSION:
        raise AckProtocolError(f"frame version {version} (this build speaks {VERSION})")
    if kind not in KINDS:
        raise AckProtocolError(f"unknown frame kind {kind}")
    if reserved != 0 or flags & ~FLAG_ZLIB:
        raise AckProtocolError(f"unknown frame flags {flags:#x}/{reserved:#x}")
    if length > MAX_BODY_BYTES:
        raise AckProtocolError(f"a frame body of {length} bytes exceeds {MAX_BODY_BYTES}")
    return FrameHeader(kind, flags, length, crc)


def check_body(header: FrameHeader, head: bytes | memoryview, body: bytes | memoryview) -> None:
    """Raise ``AckProtocolError`` unless ``body`` matches the header's checksum."""
    if zlib.crc32(body, zlib.crc32(head[:_CRC_COVERED])) != header.crc:
        raise AckProtocolError("frame checksum mismatch")


class FrameReader:
    """Splits a byte stream into checked frames; keeps a cut frame for the next chunk."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        position = 0
        while len(buffer) - position >= HEADER_BYTES:
            head = bytes(buffer[position : position + HEADER_BYTES])
            header = parse_header(head)
            end = position + header.frame_bytes
            if end > len(buffer):
                break
            body = bytes(buffer[position + HEADER_BYTES : end])
            check_body(header, head, body)
            frames.append(Frame(header.kind, header.flags, body))
            position = end
        del buffer[:position]
        return frames


# -- HELLO and ACK ------------------------------------------------------------


def _encode_source(source: str) -> bytes:
    raw = source.encode("utf-8")
    if not raw or len(raw) > MAX_SOURCE_BYTES:
        raise ValueError(f"a source must be 1 to {MAX_SOURCE_BYTES} bytes of utf-8: {source!r}")
    return _SOURCE_LENGTH.pack(len(raw)) + raw


def encode_hello(source: str) -> bytes:
    return _frame(HELLO, 0, _encode_source(source))


def decode_hello(frame: Frame) -> str:
    _expect(frame, HELLO)
    source, end = _read_source(frame.body, 0)
    if end != len(frame.body):
        raise AckProtocolError("HELLO body has trailing bytes")
    return source


def encode_ack(sequence: int) -> bytes:
    return _frame(ACK, 0, _SEQUENCE.pack(sequence))


def decode_ack(frame: Frame) -> int:
    _expect(frame, ACK)
    if len(frame.body) != _SEQUENCE.size:
        raise AckProtocolError(f"ACK body of {len(frame.body)} bytes, not {_SEQUENCE.size}")
    return _SEQUENCE.unpack(frame.body)[0]


# -- BATCH --------------------------------------------------------------------


def encode_batch(source: str, sequence: int, batch: WriteBatch, *, compress: bool = False) -> bytes:
    """One BATCH frame holding every point of ``batch``."""
    if sequence < 1:
        raise ValueError(f"sequences start at 1, not {sequence}")
    points = len(batch)
    if batch.name_ids is None:
        ids_by_name: dict[str, int] = {}
        names: list[str] = []
        ids = np.empty(points, np.uint32)
        for i, name in enumerate(batch.names):
            known = ids_by_name.get(name)
            if known is None:
                known = ids_by_name[name] = len(names)
                names.append(name)
            ids[i] = known
    else:
        names = list(batch.names)
        ids = batch.name_ids.astype("<u4")
    encoded = [name.encode("utf-8") for name in names]
    lengths = np.fromiter((len(raw) for raw in encoded), dtype="<u4", count=len(encoded))
    payload = b"".join(
        (
            _COUNT.pack(len(encoded)),
            lengths.tobytes(),
            b"".join(encoded),
            ids.tobytes(),
            batch.timestamps.astype("<i8", copy=False).tobytes(),
            batch.values.astype("<f8", copy=False).tobytes(),
        )
    )
    flags = 0
    if compress:
        payload = zlib.compress(payload, _ZLIB_LEVEL)
        flags = FLAG_ZLIB
    raw_source = source.encode("utf-8")
    if not raw_source or len(raw_source) > MAX_SOURCE_BYTES:
        raise ValueError(f"a source must be 1 to {MAX_SOURCE_BYTES} bytes of utf-8: {source!r}")
    prefix = _BATCH_PREFIX.pack(sequence, points, len(raw_source)) + raw_source
    return _frame(BATCH, flags, prefix + payload)


BATCH_PREFIX_BYTES = _BATCH_PREFIX.size


def batch_numbers(body: bytes | memoryview) -> tuple[int, int]:
    """Sequence and point count from the first ``BATCH_PREFIX_BYTES`` of a BATCH body."""
    if len(body) < _BATCH_PREFIX.size:
        raise AckProtocolError("BATCH body too short")
    sequence, points, _ = _BATCH_PREFIX.unpack_from(body)
    return sequence, points


def batch_info(body: bytes | memoryview) -> BatchInfo:
    """Sequence, point count and source of a BATCH body, without reading the payload."""
    if len(body) < _BATCH_PREFIX.size:
        raise AckProtocolError("BATCH body too short")
    sequence, points, source_length = _BATCH_PREFIX.unpack_from(body)
    end = _BATCH_PREFIX.size + source_length
    if end > len(body):
        raise AckProtocolError("BATCH source runs past the body")
    try:
        source = bytes(body[_BATCH_PREFIX.size : end]).decode("utf-8")
    except UnicodeDecodeError:
        raise AckProtocolError("BATCH source is not utf-8") from None
    return BatchInfo(sequence, points, source, end)


def decode_batch(frame: Frame) -> AgentBatch:
    """The points of a checked BATCH frame; every length is bounds-checked."""
    _expect(frame, BATCH)
    info = batch_info(frame.body)
    payload = frame.body[info.payload_offset :]
    if frame.flags & FLAG_ZLIB:
        try:
            payload = zlib.decompress(payload)
        except zlib.error as error:
            raise AckProtocolError(f"BATCH payload does not decompress: {error}") from None
    points = info.points
    if len(payload) < _COUNT.size:
        raise AckProtocolError("BATCH payload too short")
    (name_count,) = _COUNT.unpack_from(payload)
    lengths_end = _COUNT.size + 4 * name_count
    if lengths_end > len(payload):
        raise AckProtocolError("BATCH name lengths run past the payload")
    lengths = np.frombuffer(payload, "<u4", name_count, _COUNT.size).astype(np.int64)
    names_end = lengths_end + int(lengths.sum())
    expected = names_end + points * (4 + 8 + 8)
    if expected != len(payload):
        raise AckProtocolError(f"BATCH payload is {len(payload)} bytes, its counts say {expected}")
    blob = payload[lengths_end:names_end]
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]] if ends else []
    try:
        if blob.isascii():
            text = blob.decode("ascii")
            names = [text[a:b] for a, b in zip(starts, ends, strict=True)]
        else:
            names = [blob[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)]
    except UnicodeDecodeError:
        raise AckProtocolError("BATCH name is not utf-8") from None
    ids = np.frombuffer(payload, "<u4", points, names_end).astype(np.int64)
    if points and int(ids.max()) >= name_count:
        raise AckProtocolError("BATCH name id out of range")
    offset = names_end + 4 * points
    timestamps = np.frombuffer(payload, "<i8", points, offset).astype(np.int64)
    values = np.frombuffer(payload, "<f8", points, offset + 8 * points).astype(np.float64)
    return AgentBatch(info.source, info.sequence, WriteBatch(names, timestamps, values, ids))


def read_frame(data: bytes | memoryview, offset: int) -> tuple[Frame, int]:
    """The checked frame at ``offset`` of a buffer holding it whole, and the offset after it."""
    if len(data) - offset < HEADER_BYTES:
        raise AckProtocolError("frame header cut short")
    header = parse_header(data[offset : offset + HEADER_BYTES])
    end = offset + header.frame_bytes
    if end > len(data):
        raise AckProtocolError("frame body cut short")
    body = data[offset + HEADER_BYTES : end]
    check_body(header, data[offset : offset + HEADER_BYTES], body)
    return Frame(header.kind, header.flags, bytes(body)), end


def _expect(frame: Frame, kind: int) -> None:
    if frame.kind != kind:
        raise AckProtocolError(f"expected a frame of kind {kind}, got {frame.kind}")


def _read_source(body: bytes, offset: int) -> tuple[str, int]:
    if len(body) < offset + _SOURCE_LENGTH.size:
        raise AckProtocolError("source length cut short")
    (length,) = _SOURCE_LENGTH.unpack_from(body, offset)
    start = offset + _SOURCE_LENGTH.size
    end = start + length
    if length == 0 or end > len(body):
        raise AckProtocolError("source empty or cut short")
    try:
        return body[start:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise AckProtocolError("source is not utf-8") from None
