"""Carbon's plaintext protocol (``name value timestamp\\n``) decoded into ``WriteBatch`` es.

Two paths give the same answer:

* the fast path handles whole buffers of well-formed lines without a Python
  loop per line: numpy finds the line structure (every byte <= 0x20 in one
  pass), Arrow's CSV reader splits the fields and converts the numbers, Arrow's
  dictionary encoding deduplicates the names so each distinct name is decoded
  to ``str`` and normalised once;
* ``plaintext_line.parse_line`` (carbon's own rules, one line at a time) takes
  every line the fast path doubts: other whitespace than one space between
  fields, a number Arrow will not parse, a name that is not plain ASCII or
  carries tags, an over-long line.

Points come out in the order of their lines. Rejected lines are counted by
reason; lines holding only whitespace are skipped silently.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from graphite_istat.protocol.metric_names import InvalidMetricName, normalise_metric_name
from graphite_istat.protocol.plaintext_line import TIMESTAMP_LIMIT, parse_line
from graphite_istat.protocol.result import (
    LINE_TOO_LONG,
    SAMPLE_BYTES,
    ParseResult,
    Rejections,
    empty_batch,
    merge_results,
)
from graphite_istat.store.batch import EncodedNames, WriteBatch

DEFAULT_MAX_LINE_LENGTH = 16384

_NEWLINE, _CR, _SPACE = 10, 13, 32
# Characters a number Arrow may parse can contain; a field with any other is left to ``float``.
_NUMBER_CHARS = "0123456789.eE+-nNaAiIfFtTyY"
_SLAB_BYTES = 1 << 18
_LF_LINE = np.array([_SPACE, _SPACE, _NEWLINE], dtype=np.uint8)
_CRLF_LINE = np.array([_SPACE, _SPACE, _CR, _NEWLINE], dtype=np.uint8)
# Arrow spreads buffers larger than this over its thread pool.
_THREADED_PARSE_BYTES = 4 << 20


class _NumberReading:
    """How to read numbers: as floats straight away (fastest when all parse), or as text first.

    A failed float read costs a second read as text; after one, a connection
    that sends unparsable numbers reads text first for a while.
    """

    __slots__ = ("_text_first_for",)
    TEXT_FIRST_CHUNKS = 16

    def __init__(self) -> None:
        self._text_first_for = 0

    def expect_bad_numbers(self) -> bool:
        if self._text_first_for:
            self._text_first_for -= 1
            return True
        return False

    def saw_bad_numbers(self) -> None:
        self._text_first_for = self.TEXT_FIRST_CHUNKS


class PlaintextDecoder:
    """Decodes one connection's byte stream; keeps the unfinished last line between chunks."""

    def __init__(self, *, max_line_length: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        if max_line_length < 1:
            raise ValueError(f"max_line_length must be positive, not {max_line_length}")
        self._max_line_length = max_line_length
        self._tail = b""
        # While an over-long line is being skipped: its first bytes, for the sample.
        self._skipped_line_start: bytes | None = None
        self._number_reading = _NumberReading()

    def feed(self, chunk: bytes, now: int) -> ParseResult:
        """Decode the complete lines of ``chunk`` (after what was left over); keep the rest."""
        rejections = Rejections()
        if self._skipped_line_start is not None:
            newline = chunk.find(b"\n")
            if newline < 0:
                self._extend_skipped(chunk)
                return rejections.result(empty_batch())
            self._extend_skipped(chunk[:newline])
            rejections.add(LINE_TOO_LONG, self._skipped_line_start)
            self._skipped_line_start = None
            chunk = chunk[newline + 1 :]
        data = self._tail + chunk if self._tail else chunk
        last_newline = data.rfind(b"\n")
        complete = memoryview(data)[: last_newline + 1]
        tail = data[last_newline + 1 :]
        if len(tail) > self._max_line_length:
            self._skipped_line_start = tail[:SAMPLE_BYTES]
            tail = b""
        self._tail = tail
        return _parse_complete_lines(
            complete, now, self._max_line_length, rejections, self._number_reading
        )

    def finish(self, now: int) -> ParseResult:
        """The connection closed: decode a last line that had no newline; forget all state."""
        rejections = Rejections()
        if self._skipped_line_start is not None:
            rejections.add(LINE_TOO_LONG, self._skipped_line_start)
            self._skipped_line_start = None
        tail, self._tail = self._tail, b""
        return _parse_complete_lines(
            memoryview(tail + b"\n" if tail else b""),
            now,
            self._max_line_length,
            rejections,
            self._number_reading,
        )

    def _extend_skipped(self, more: bytes) -> None:
        assert self._skipped_line_start is not None
        missing = SAMPLE_BYTES - len(self._skipped_line_start)
        if missing > 0:
            self._skipped_line_start += more[:missing]


def parse_lines(
    data: bytes, now: int, *, max_line_length: int = DEFAULT_MAX_LINE_LENGTH
) -> ParseResult:
    """Decode a buffer of complete lines (a UDP datagram); the last may lack its newline."""
    decoder = PlaintextDecoder(max_line_length=max_line_length)
    first = decoder.feed(data, now)
    last = decoder.finish(now)
    if len(last.batch) == 0 and not last.rejected:
        return first
    return merge_results([first, last])


def parse_lines_slowly(
    data: bytes, now: int, *, max_line_length: int = DEFAULT_MAX_LINE_LENGTH
) -> ParseResult:
    """``parse_lines`` one line at a time, without the fast path: the reference it is tested against."""
    rejections = Rejections()
    accepted = _SlowPoints()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        accepted.parse(line, now, max_line_length, rejections)
    return rejections.result(accepted.batch())


class _SlowPoints:
    """Points taken one line at a time by ``parse_line``."""

    __slots__ = ("names", "timestamps", "values")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.timestamps: list[int] = []
        self.values: list[float] = []

    def parse(self, line: bytes, now: int, max_line_length: int, rejections: Rejections) -> bool:
        """Parse ``line``; keep its point or count its rejection. True if a point was kept."""
        parsed = parse_line(line, now, max_line_length)
        if parsed is None:
            return False
        if isinstance(parsed, str):
            rejections.add(parsed, line)
            return False
        self.names.append(parsed[0])
        self.timestamps.append(parsed[1])
        self.values.append(parsed[2])
        return True

    def batch(self) -> WriteBatch:
        return WriteBatch(
            self.names,
            np.array(self.timestamps, dtype=np.int64),
            np.array(self.values, dtype=np.float64),
        )


class _LineLayout:
    """Where the lines of a buffer start and end, and which of them the fast path may take."""

    __slots__ = ("eligible", "ends", "starts")

    def __init__(self, buf: np.ndarray, max_line_length: int) -> None:
        special = _bytes_up_to_space(buf)
        kinds = buf[special]
        uniform = _uniform_lines(special, kinds)
        if uniform is not None:
            first_space, second_space, field_end, ends = uniform
            starts = np.empty_like(ends)
            starts[:1] = 0
            starts[1:] = ends[:-1] + 1
            inside_ok: np.ndarray | bool = True
        else:
            newline_at = np.flatnonzero(kinds == _NEWLINE)  # index into ``special``
            ends = special[newline_at]
            starts = np.empty_like(ends)
            starts[:1] = 0
            starts[1:] = ends[:-1] + 1
            # Bytes <= 0x20 inside each line, and a CR right before the newline (CRLF) set aside.
            inside = np.diff(newline_at, prepend=-1) - 1
            before_newline = np.maximum(newline_at - 1, 0)
            crlf = (
                (inside >= 1)
                & (kinds[before_newline] == _CR)
                & (special[before_newline] == ends - 1)
            )
            field_end = ends - crlf
            second_at = np.maximum(newline_at - 1 - crlf, 0)
            first_at = np.maximum(second_at - 1, 0)
            inside_ok = (
                ((inside - crlf) == 2) & (kinds[first_at] == _SPACE) & (kinds[second_at] == _SPACE)
            )
            first_space, second_space = special[first_at], special[second_at]
        self.starts, self.ends = starts, ends
        self.eligible = (
            inside_ok
            & (first_space > starts)  # a name
            & (second_space > first_space + 1)  # a value
            & (field_end > second_space + 1)  # a timestamp
            & (ends - starts <= max_line_length)
        )


def _uniform_lines(
    special: np.ndarray, kinds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The common case made cheap: every line is ``name SP value SP timestamp [CR] LF``.

    Returns the positions of the first and second space, of the field end and of
    the newline of each line, or ``None`` when some line has another shape.
    """
    for pattern in (_LF_LINE, _CRLF_LINE):
        width = len(pattern)
        if len(kinds) % width or not len(kinds):
            continue
        by_line = kinds.reshape(-1, width)
        if not (by_line == pattern).all():
            continue
        positions = special.reshape(-1, width)
        ends = positions[:, -1]
        if width == len(_CRLF_LINE) and not (positions[:, 2] == ends - 1).all():
            return None
        return positions[:, 0], positions[:, 1], positions[:, 2], ends
    return None


def _bytes_up_to_space(buf: np.ndarray) -> np.ndarray:
    """Positions of every byte <= 0x20: newlines, separators, and what only the slow path judges.

    Done a slab at a time so that the intermediate mask stays in the CPU cache.
    """
    if len(buf) <= _SLAB_BYTES:
        return np.flatnonzero(buf <= _SPACE)
    mask = np.empty(_SLAB_BYTES, dtype=bool)
    found = []
    for start in range(0, len(buf), _SLAB_BYTES):
        slab = buf[start : start + _SLAB_BYTES]
        slab_mask = mask[: len(slab)]
        np.less_equal(slab, _SPACE, out=slab_mask)
        found.append(np.flatnonzero(slab_mask) + start)
    return np.concatenate(found)


def _parse_complete_lines(
    data: memoryview,
    now: int,
    max_line_length: int,
    rejections: Rejections,
    reading: _NumberReading,
) -> ParseResult:
    """Decode ``data``, which is empty or ends with a newline."""
    if len(data) == 0:
        return rejections.result(empty_batch())
    layout = _LineLayout(np.frombuffer(data, dtype=np.uint8), max_line_length)
    eligible_lines = np.flatnonzero(layout.eligible)
    fast = _parse_eligible_lines(data, layout, eligible_lines, now, max_line_length, reading)

    doubted = np.flatnonzero(~layout.eligible & (layout.ends > layout.starts))
    if len(fast.refused):
        doubted = np.union1d(doubted, fast.refused)
    slow = _SlowPoints()
    slow_lines: list[int] = []
    starts, ends = layout.starts, layout.ends
    for line_number in doubted.tolist():
        if slow.parse(
            bytes(data[starts[line_number] : ends[line_number]]), now, max_line_length, rejections
        ):
            slow_lines.append(line_number)
    if not slow_lines:
        # The common case: keep the distinct names once, so the store looks each up once.
        distinct = fast.distinct if isinstance(fast.distinct, EncodedNames) else fast.distinct.tolist()
        batch = WriteBatch(distinct, fast.timestamps, fast.values, fast.name_ids)
        return rejections.result(batch)
    # Interleave the two sets of points back into line order.
    slow_batch = slow.batch()
    slow_line_numbers = np.array(slow_lines, dtype=np.int64)
    accepted = np.zeros(len(starts), dtype=bool)
    accepted[fast.lines] = True
    accepted[slow_line_numbers] = True
    rank = np.cumsum(accepted) - 1
    fast_at, slow_at = rank[fast.lines], rank[slow_line_numbers]
    total = len(fast.lines) + len(slow_lines)
    names = np.empty(total, dtype=object)
    names[fast_at] = np.asarray(fast.distinct, dtype=object)[fast.name_ids]
    names[slow_at] = slow_batch.names
    timestamps = np.empty(total, dtype=np.int64)
    timestamps[fast_at] = fast.timestamps
    timestamps[slow_at] = slow_batch.timestamps
    values = np.empty(total, dtype=np.float64)
    values[fast_at] = fast.values
    values[slow_at] = slow_batch.values
    return rejections.result(WriteBatch(names.tolist(), timestamps, values))


class _FastLines:
    """Points the fast path accepted (with their line numbers) and the lines it refused to judge."""

    __slots__ = ("distinct", "lines", "name_ids", "refused", "timestamps", "values")

    def __init__(
        self,
        lines: np.ndarray,
        distinct: EncodedNames | np.ndarray,
        name_ids: np.ndarray,
        timestamps: np.ndarray,
        values: np.ndarray,
        refused: np.ndarray,
    ) -> None:
        self.lines = lines
        self.distinct = distinct  # the distinct names (EncodedNames, or an object array of str)
        self.name_ids = name_ids  # int64 per point, into distinct
        self.timestamps = timestamps
        self.values = values
        self.refused = refused


def _parse_eligible_lines(
    data: memoryview,
    layout: _LineLayout,
    eligible_lines: np.ndarray,
    now: int,
    max_line_length: int,
    reading: _NumberReading,
) -> _FastLines:
    count = len(eligible_lines)
    if count == 0:
        nothing = np.empty(0, dtype=np.int64)
        return _FastLines(
            nothing, np.empty(0, dtype=object), nothing, nothing, np.empty(0, np.float64), nothing
        )
    fields = _eligible_bytes(data, layout, eligible_lines)
    table = None
    if not reading.expect_bad_numbers():
        try:
            table = _read_fields(fields, max_line_length, pa.float64())
            values = table.column(1).to_numpy()
            raw_timestamps = table.column(2).to_numpy()
            value_ok = timestamp_ok = np.ones(count, dtype=bool)
        except pa.ArrowInvalid:  # some number Arrow will not parse
            reading.saw_bad_numbers()
            table = None
    if table is None:  # read the numbers as text, then find which ones parse
        table = _read_fields(fields, max_line_length, pa.binary())
        values, value_ok = _parse_numbers(table.column(1))
        raw_timestamps, timestamp_ok = _parse_numbers(table.column(2))
    if table.num_rows != count:
        raise AssertionError(
            f"the CSV reader found {table.num_rows} rows in {count} well-formed lines"
        )
    distinct, name_ids, usable = _decode_names(table.column(0))
    name_ok = usable[name_ids]
    timestamp_ok &= np.isfinite(raw_timestamps) & (np.abs(raw_timestamps) < TIMESTAMP_LIMIT)
    ok = name_ok & value_ok & timestamp_ok
    if not ok.all():
        refused = eligible_lines[~ok]
        eligible_lines, name_ids, values, raw_timestamps = (
            eligible_lines[ok],
            name_ids[ok],
            values[ok],
            raw_timestamps[ok],
        )
    else:
        refused = np.empty(0, dtype=np.int64)
    is_now = (raw_timestamps > -2.0) & (raw_timestamps <= -1.0)
    timestamps = np.floor(raw_timestamps).astype(np.int64)
    timestamps[is_now] = now
    return _FastLines(eligible_lines, distinct, name_ids, timestamps, values, refused)


def _eligible_bytes(data: memoryview, layout: _LineLayout, eligible_lines: np.ndarray) -> pa.Buffer:
    """The eligible lines, newlines included, as one buffer (``data`` itself when all are)."""
    if len(eligible_lines) == len(layout.ends):
        return pa.py_buffer(data)
    # Runs of consecutive eligible lines are copied as one slice each.
    run_breaks = np.flatnonzero(np.diff(eligible_lines) != 1) + 1
    first_lines = eligible_lines[np.concatenate([[0], run_breaks])]
    last_lines = eligible_lines[np.concatenate([run_breaks - 1, [len(eligible_lines) - 1]])]
    run_starts = layout.starts[first_lines].tolist()
    run_ends = (layout.ends[last_lines] + 1).tolist()
    return pa.py_buffer(b"".join([data[a:b] for a, b in zip(run_starts, run_ends, strict=True)]))


def _read_fields(buffer: pa.Buffer, max_line_length: int, number_type: pa.DataType) -> pa.Table:
    """Split the lines into three columns: names as binary, numbers as ``number_type``."""
    read = pa_csv.ReadOptions(
        column_names=["name", "value", "timestamp"],
        use_threads=buffer.size > _THREADED_PARSE_BYTES,
        block_size=max(min(buffer.size + 1, 1 << 22), 2 * max_line_length + 2),
    )
    parse = pa_csv.ParseOptions(
        delimiter=" ",
        quote_char=False,
        escape_char=False,
        double_quote=False,
        ignore_empty_lines=False,
    )
    convert = pa_csv.ConvertOptions(
        column_types={"name": pa.binary(), "value": number_type, "timestamp": number_type},
        null_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    return pa_csv.read_csv(buffer, read_options=read, parse_options=parse, convert_options=convert)


def _decode_names(column: pa.ChunkedArray) -> tuple[EncodedNames | np.ndarray, np.ndarray, np.ndarray]:
    """The distinct normalised names (``EncodedNames`` when all are plain ASCII names, else an
    object array of str), each line's index into them, and per distinct name whether the fast
    path may keep it.

    Each distinct name is decoded and checked once. Names that are not plain
    ASCII, or carry tags or a leading ``~``, are normalised as carbon does; those
    that fail, or hold Unicode whitespace (carbon would split them), are left
    to the slow path, which says why.
    """
    chunks = pc.dictionary_encode(column).chunks  # one dictionary shared by all chunks
    distinct = chunks[0].dictionary
    indices = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in chunks]).astype(np.int64)
    high_byte, unusual = _name_flags(distinct)
    if not unusual.any():
        # plain ASCII names, used as they are: handed to the store as bytes
        return _as_encoded_names(distinct), indices, np.ones(len(distinct), dtype=bool)
    try:
        texts = distinct.cast(pa.string()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # some name is not UTF-8: decode the non-ASCII ones one by one
        texts = np.empty(len(distinct), dtype=object)
        ascii_only = ~high_byte
        texts[ascii_only] = (
            distinct.filter(pa.array(ascii_only)).cast(pa.string()).to_numpy(zero_copy_only=False)
        )
        for position in np.flatnonzero(high_byte).tolist():
            texts[position] = _utf8_or_none(distinct[position].as_py())
    usable = np.ones(len(texts), dtype=bool)
    for position in np.flatnonzero(unusual).tolist():
        texts[position] = _normalised_or_none(texts[position])
        usable[position] = texts[position] is not None
    return texts, indices, usable


def _binary_parts(names: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, offsets into them) of an Arrow binary array, without copying."""
    _, offsets_buffer, data_buffer = names.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[names.offset : names.offset + len(names) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return data, offsets


def _as_encoded_names(names: pa.Array) -> EncodedNames:
    data, offsets = _binary_parts(names)
    return EncodedNames(data, offsets)


def _name_flags(distinct: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Which names (non-empty, as Arrow binary) have a byte >= 0x80, and which are unusual:
    not plain ASCII, or carrying tags or a leading ``~``.

    Read straight from the array's offsets and bytes: one numpy pass instead of
    an Arrow kernel per test.
    """
    data, offsets = _binary_parts(distinct)
    first, end = int(offsets[0]), int(offsets[-1])
    data = data[first:end]
    starts, ends = offsets[:-1] - first, offsets[1:] - first
    high = np.concatenate([[0], np.cumsum(data >= 0x80, dtype=np.int64)])
    semicolons = np.concatenate([[0], np.cumsum(data == ord(";"), dtype=np.int64)])
    high_byte = high[ends] > high[starts]
    unusual = high_byte | (semicolons[ends] > semicolons[starts])
    unusual |= data[starts] == ord("~")
    unusual |= (
        (ends - starts >= 2)
        & (data[ends - 1] == ord("}"))
        & (data[np.maximum(ends - 2, 0)] == ord('"'))
    )
    return high_byte, unusual


def _utf8_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _normalised_or_none(text: str | None) -> str | None:
    if text is None or (not text.isascii() and text.split() != [text]):
        return None
    try:
        return normalise_metric_name(text)
    except InvalidMetricName:
        return None


def _parse_numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Per line: the field as float64, and whether Arrow parsed it (where not, ``float`` decides)."""
    raw = column.combine_chunks()
    try:
        return pc.cast(raw, pa.float64()).to_numpy(zero_copy_only=False), np.ones(
            len(raw), dtype=bool
        )
    except pa.ArrowInvalid:
        pass
    numbers = np.zeros(len(raw), dtype=np.float64)
    leftover = pc.binary_length(pc.ascii_trim(raw.view(pa.string()), _NUMBER_CHARS))
    plausible = np.asarray(pc.equal(leftover, 0).to_numpy(zero_copy_only=False), dtype=bool)
    parsed = np.zeros(len(raw), dtype=bool)
    _cast_where_possible(
        raw.filter(pa.array(plausible)), np.flatnonzero(plausible), numbers, parsed
    )
    return numbers, parsed


def _cast_where_possible(
    raw: pa.Array, rows: np.ndarray, numbers: np.ndarray, parsed: np.ndarray
) -> None:
    """Cast ``raw`` into ``numbers[rows]``, halving around the entries Arrow refuses."""
    if len(raw) == 0:
        return
    try:
        numbers[rows] = pc.cast(raw, pa.float64()).to_numpy(zero_copy_only=False)
        parsed[rows] = True
        return
    except pa.ArrowInvalid:
        if len(raw) == 1:
            return
    half = len(raw) // 2
    _cast_where_possible(raw.slice(0, half), rows[:half], numbers, parsed)
    _cast_where_possible(raw.slice(half), rows[half:], numbers, parsed)
