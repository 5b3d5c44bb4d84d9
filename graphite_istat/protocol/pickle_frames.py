"""Carbon's pickle protocol: length-prefixed pickled lists of ``(path, (timestamp, value))``.

Wire format (carbon's ``MetricPickleReceiver``, Twisted's ``Int32StringReceiver``)::

    frame   := length payload
    length  := 4 bytes, unsigned big-endian, the size of payload
    payload := pickle of a list (or tuple) of points
    point   := (path, (timestamp, value)), tuples or lists

Payloads are unpickled by ``SafeUnpickler``, which refuses every global, so a
frame can only build lists, tuples, strings, bytes, numbers, None, dicts and
sets; nothing is imported and nothing is called. A frame announcing more than
``max_frame_bytes`` raises ``FrameTooLarge`` (the receiver closes the
connection); a frame that does not unpickle is counted ``bad_pickle`` and
skipped; a point of the wrong shape or type is counted ``bad_pickle_point``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence

import numpy as np

from graphite_istat.protocol.errors import FrameTooLarge, UnsafePickle
from graphite_istat.protocol.metric_names import (
    InvalidMetricName,
    needs_normalising,
    normalise_metric_name,
)
from graphite_istat.protocol.plaintext_line import TIMESTAMP_LIMIT, timestamp_seconds
from graphite_istat.protocol.result import (
    BAD_PICKLE,
    BAD_PICKLE_POINT,
    BAD_TIMESTAMP,
    BAD_VALUE,
    NON_UTF8_NAME,
    ParseResult,
    Rejections,
)
from graphite_istat.store.batch import WriteBatch

DEFAULT_MAX_FRAME_BYTES = 1 << 20
LENGTH_PREFIX_BYTES = 4

_SEQUENCES = frozenset({tuple, list})
_NUMBERS = frozenset({int, float})
# What unpickling garbage can raise besides UnpicklingError.
_UNPICKLING_ERRORS = (
    pickle.UnpicklingError,
    UnsafePickle,
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    OverflowError,
    RecursionError,
    MemoryError,  # a length prefix inside the pickle far beyond the frame (BYTEARRAY8)
)


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that loads no global at all: plain data only."""

    def find_class(self, module: str, name: str) -> type:
        raise UnsafePickle(module, name)

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("persistent ids are not accepted")


def safe_loads(payload: bytes) -> object:
    """Unpickle ``payload`` with ``SafeUnpickler``; Python 2 ``str`` come out as ``bytes``."""
    return SafeUnpickler(io.BytesIO(payload), encoding="bytes").load()


class PickleDecoder:
    """Decodes one connection's stream of pickle frames; keeps an unfinished frame between chunks."""

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise ValueError(f"max_frame_bytes must be positive, not {max_frame_bytes}")
        self._max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._failure: FrameTooLarge | None = None

    def feed(self, chunk: bytes, now: int) -> ParseResult:
        """Decode every complete frame; raise ``FrameTooLarge`` (for good) on an oversized one."""
        if self._failure is not None:
            raise FrameTooLarge(self._failure.length, self._failure.limit)
        self._buffer += chunk
        buffer = self._buffer
        rejections = Rejections()
        accepted = _FramePoints()
        position = 0
        while len(buffer) - position >= LENGTH_PREFIX_BYTES:
            length = int.from_bytes(buffer[position : position + LENGTH_PREFIX_BYTES], "big")
            if length > self._max_frame_bytes:
                decoded = rejections.result(accepted.batch())
                self._failure = FrameTooLarge(length, self._max_frame_bytes, decoded)
                self._buffer = bytearray()
                raise self._failure
            start = position + LENGTH_PREFIX_BYTES
            if len(buffer) - start < length:
                break
            accepted.decode_frame(bytes(buffer[start : start + length]), now, rejections)
            position = start + length
        del buffer[:position]
        return rejections.result(accepted.batch())


class _FramePoints:
    """Points decoded from the frames of one chunk, kept as one array pair per frame."""

    __slots__ = ("names", "timestamps", "values")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.timestamps: list[np.ndarray] = []
        self.values: list[np.ndarray] = []

    def decode_frame(self, payload: bytes, now: int, rejections: Rejections) -> None:
        try:
            points = safe_loads(payload)
        except _UNPICKLING_ERRORS:
            rejections.add(BAD_PICKLE, payload)
            return
        if type(points) not in _SEQUENCES:
            rejections.add(BAD_PICKLE, payload)
            return
        if not points:
            return
        fast = _decode_points_fast(points, now)
        if fast is not None:
            self._extend(*fast)
            return
        names: list[str] = []
        timestamps: list[int] = []
        values: list[float] = []
        for point in points:
            decoded = decode_point(point, now)
            if isinstance(decoded, str):
                rejections.add_described(decoded, lambda point=point: _describe(point))
                continue
            names.append(decoded[0])
            timestamps.append(decoded[1])
            values.append(decoded[2])
        self._extend(
            names, np.array(timestamps, dtype=np.int64), np.array(values, dtype=np.float64)
        )

    def _extend(self, names: list[str], timestamps: np.ndarray, values: np.ndarray) -> None:
        self.names.extend(names)
        self.timestamps.append(timestamps)
        self.values.append(values)

    def batch(self) -> WriteBatch:
        if not self.timestamps:
            return WriteBatch(self.names, np.empty(0, np.int64), np.empty(0, np.float64))
        return WriteBatch(self.names, np.concatenate(self.timestamps), np.concatenate(self.values))


def _decode_points_fast(
    points: Sequence[object], now: int
) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """The whole frame at C speed when every point is well-formed; ``None`` sends it point by point."""
    if not _all_pairs(points):
        return None
    paths, pairs = zip(*points, strict=True)
    if not _all_pairs(pairs) or set(map(type, paths)) != {str}:
        return None
    raw_timestamps, raw_values = zip(*pairs, strict=True)
    if not set(map(type, raw_timestamps)) <= _NUMBERS or not set(map(type, raw_values)) <= _NUMBERS:
        return None
    try:
        timestamps = np.array(raw_timestamps, dtype=np.float64)
        frame_values = np.array(raw_values, dtype=np.float64)
    except OverflowError:
        return None
    if not (np.isfinite(timestamps) & (np.abs(timestamps) < TIMESTAMP_LIMIT)).all():
        return None
    distinct = dict.fromkeys(paths)
    # One C-speed scan for the common case where no name needs normalising: a leading
    # "~", a trailing '"}', an empty name or any ";" shows in the joined names.
    joined = "\n" + "\n".join(distinct) + "\n"
    if ";" in joined or "\n~" in joined or '"}\n' in joined or "\n\n" in joined:
        unusual = [path for path in distinct if needs_normalising(path) or not path]
    else:
        unusual = []
    if unusual:
        try:
            canonical = {path: normalise_metric_name(path) for path in unusual}
        except InvalidMetricName:
            return None
        names = [canonical.get(path, path) for path in paths]
    else:
        names = list(paths)
    is_now = (timestamps > -2.0) & (timestamps <= -1.0)
    seconds = np.floor(timestamps).astype(np.int64)
    seconds[is_now] = now
    return names, seconds, frame_values


def _all_pairs(items: Sequence[object]) -> bool:
    return set(map(type, items)) <= _SEQUENCES and set(map(len, items)) == {2}  # type: ignore[arg-type]


def decode_point(point: object, now: int) -> tuple[str, int, float] | str:
    """One ``(path, (timestamp, value))`` as ``(name, seconds, value)``, or the reason it is refused."""
    if type(point) not in _SEQUENCES or len(point) != 2:  # type: ignore[arg-type]
        return BAD_PICKLE_POINT
    path, pair = point  # type: ignore[misc]
    if type(pair) not in _SEQUENCES or len(pair) != 2:
        return BAD_PICKLE_POINT
    raw_timestamp, raw_value = pair
    if isinstance(path, bytes):
        try:
            path = path.decode("utf-8")
        except UnicodeDecodeError:
            return NON_UTF8_NAME
    if not isinstance(path, str):
        return BAD_PICKLE_POINT
    try:
        name = normalise_metric_name(path)
    except InvalidMetricName as error:
        return error.reason
    value = _number(raw_value)
    if value is None:
        return BAD_PICKLE_POINT
    if isinstance(value, str):
        return BAD_VALUE
    timestamp = _number(raw_timestamp)
    if timestamp is None:
        return BAD_PICKLE_POINT
    if isinstance(timestamp, str):
        return BAD_TIMESTAMP
    seconds = timestamp_seconds(timestamp, now)
    if seconds is None:
        return BAD_TIMESTAMP
    return name, seconds, value


def _number(raw: object) -> float | str | None:
    """``float(raw)`` for numbers and numeric text (carbon converts both); a string marks text that
    is no number or a number too large for a float, ``None`` a type that is never a number."""
    if not isinstance(raw, int | float | str | bytes):
        return None
    try:
        return float(raw)
    except (ValueError, OverflowError):
        return "unparsable"


def _describe(point: object) -> bytes:
    try:
        text = repr(point)
    except (ValueError, RecursionError):  # an int too long to print, or nesting too deep
        text = f"<{type(point).__name__} too large to show>"
    return text.encode("utf-8", "backslashreplace")
