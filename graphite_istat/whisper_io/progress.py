"""Progress of a long job on stderr: a redrawn bar on a terminal, a plain line now and then otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30


class Progress:
    """``advance(n)`` after each item; ``finish()`` once at the end.

    On a TTY the bar is redrawn at most ``tty_interval`` seconds apart;
    elsewhere (logs, pipes) one line is written every ``line_interval`` seconds.
    """

    def __init__(
        self,
        total: int,
        what: str,
        stream: TextIO | None = None,
        *,
        tty_interval: float = 0.1,
        line_interval: float = 10.0,
    ) -> None:
        self.total = total
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.is_tty = self.stream.isatty()
        self.interval = tty_interval if self.is_tty else line_interval
        self.started = time.monotonic()
        self.last_shown = self.started

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last_shown >= self.interval:
            self.last_shown = now
            self._show(note)

    def message(self, text: str) -> None:
        """A line of its own (an error about one item), without breaking the bar."""
        if self.is_tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def _show(self, note: str) -> None:
        fraction = self.done / self.total if self.total else 1.0
        elapsed = time.monotonic() - self.started
        text = f"{self.done}/{self.total} {self.what} ({fraction:.0%}, {elapsed:.0f}s)"
        if self.is_tty:
            filled = int(BAR_WIDTH * fraction)
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            self.stream.write(f"\r\x1b[K[{bar}] {text} {note}"[:200])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.is_tty:
            self._show("")
            self.stream.write("\n")
            self.stream.flush()
