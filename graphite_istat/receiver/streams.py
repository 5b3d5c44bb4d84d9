"""One sender's stream of bytes: its decoder, its unparsed bytes, its bad-input log.

A ``Stream`` belongs to one TCP connection (or to the UDP listener). The
reactor thread appends the bytes it reads; the pipeline hands them, in
order, to one parser thread at a time, so the decoder's carried-over state
(a half line, a half pickle frame) is never touched by two threads.

Bad input is logged with the peer's address at a limited rate: the first
``LOGGED_PER_STREAM`` refused lines or frames one by one, then one summary
line per ``SUMMARY_INTERVAL`` seconds (and at the end) with the counts by
reason of those not shown.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from graphite_istat.protocol import (
    FrameTooLarge,
    PickleDecoder,
    PlaintextDecoder,
    ProtocolError,
    parse_lines,
)
from graphite_istat.protocol.result import ParseResult, merge_results
from graphite_istat.receiver.counters import FRAME_TOO_LARGE

LOGGED_PER_STREAM = 5
SUMMARY_INTERVAL = 60.0

LINE, PICKLE, UDP = "line", "pickle", "udp"


class Decoder(Protocol):
    def feed(self, chunk: bytes, now: int) -> ParseResult: ...

    def finish(self, now: int) -> ParseResult: ...


class PickleStreamDecoder:
    """``PickleDecoder`` with the ``finish`` every stream decoder has (a cut frame holds no point)."""

    def __init__(self) -> None:
        self._decoder = PickleDecoder()

    def feed(self, chunk: bytes, now: int) -> ParseResult:
        return self._decoder.feed(chunk, now)

    def finish(self, now: int) -> ParseResult:
        return ParseResult.empty()


class DatagramDecoder:
    """UDP: every datagram is whole lines; datagrams are joined with a newline before decoding."""

    def feed(self, chunk: bytes, now: int) -> ParseResult:
        return parse_lines(chunk, now)

    def finish(self, now: int) -> ParseResult:
        return ParseResult.empty()


def decoder_for(kind: str) -> Decoder:
    if kind == LINE:
        return PlaintextDecoder()
    if kind == PICKLE:
        return PickleStreamDecoder()
    if kind == UDP:
        return DatagramDecoder()
    raise ValueError(f"no decoder for {kind!r}")


class BadInputLog:
    """Logs a stream's refused input: the first few one by one, then periodic summaries."""

    def __init__(
        self,
        peer: str,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._peer = peer
        self._logger = logger
        self._clock = clock
        self._logged = 0
        self._unlogged: dict[str, int] = {}
        self._last_summary = clock()

    def note(self, result: ParseResult) -> None:
        if not result.rejected:
            return
        shown: dict[str, int] = {}
        for reason, sample in result.samples:
            if self._logged >= LOGGED_PER_STREAM:
                break
            self._logged += 1
            shown[reason] = shown.get(reason, 0) + 1
            self._logger.warning("bad input from %s: %s: %r", self._peer, reason, sample)
            if self._logged == LOGGED_PER_STREAM:
                self._logger.warning(
                    "bad input from %s: further bad input is summarised every %.0f s",
                    self._peer,
                    SUMMARY_INTERVAL,
                )
        for reason, count in result.rejected.items():
            unshown = count - shown.get(reason, 0)
            if unshown > 0:
                self._unlogged[reason] = self._unlogged.get(reason, 0) + unshown
        if self._clock() - self._last_summary >= SUMMARY_INTERVAL:
            self.summarise()

    def summarise(self) -> None:
        self._last_summary = self._clock()
        if not self._unlogged:
            return
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self._unlogged.items()))
        total = sum(self._unlogged.values())
        self._logger.warning("bad input from %s: %d more not shown: %s", self._peer, total, reasons)
        self._unlogged.clear()


class Stream:
    """One sender's bytes on their way to a parser thread.

    The attributes under "pipeline state" are read and changed only with the
    pipeline's lock held; ``decode`` runs on one parser thread at a time.
    """

    def __init__(
        self,
        kind: str,
        peer: str,
        logger: logging.Logger,
        *,
        on_protocol_error: Callable[[ProtocolError], None] | None = None,
    ) -> None:
        self.kind = kind
        self.peer = peer
        self._decoder = decoder_for(kind)
        self._logger = logger
        self._bad_input = BadInputLog(peer, logger)
        self._on_protocol_error = on_protocol_error
        self._failed = False
        # Pipeline state.
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.pending_since = 0.0  # monotonic time the oldest waiting byte arrived
        self.scheduled = False
        self.closing = False
        self.clean_close = False
        self.finished = False

    def decode(self, data: bytes, now: int, *, finish: bool) -> ParseResult:
        """Decode ``data`` (and, when ``finish``, what the decoder still holds)."""
        results: list[ParseResult] = []
        if data and not self._failed:
            try:
                results.append(self._decoder.feed(data, now))
            except ProtocolError as error:
                results.append(self._protocol_failure(error))
        if finish:
            if self.clean_close and not self._failed:
                results.append(self._decoder.finish(now))
            self._bad_input.summarise()
        # every sample is kept: the bad-input log decides how many it shows
        result = merge_results(results, max_samples=None)
        self._bad_input.note(result)
        return result

    def _protocol_failure(self, error: ProtocolError) -> ParseResult:
        self._failed = True
        self._logger.warning("closing the connection from %s: %s", self.peer, error)
        kept = ParseResult.empty()
        if isinstance(error, FrameTooLarge) and isinstance(error.decoded, ParseResult):
            kept = error.decoded
        rejected = dict(kept.rejected)
        rejected[FRAME_TOO_LARGE] = rejected.get(FRAME_TOO_LARGE, 0) + 1
        if self._on_protocol_error is not None:
            self._on_protocol_error(error)
        return ParseResult(kept.batch, rejected, kept.samples)
