"""The one-writer-per-storage-directory lock.

An exclusive ``flock`` on ``writer.lock``, held for as long as the writer has
the store open; the kernel drops it when the process dies, so a kill -9 never
leaves a stale lock behind. The file names the holder (pid and host) so a
second writer can say who has it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCK_NAME = "writer.lock"


class StoreLockedError(Exception):
    """Another process holds the writer lock of this storage directory."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(
            f"storage directory {directory} is already open for writing by {holder or 'another process'}"
        )
        self.directory = directory
        self.holder = holder


def writer_alive(directory: Path) -> bool:
    """True when some process holds the writer lock of ``directory``."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops a shared lock we got
    return False


class WriterLock:
    """Held while a writer has the store open; ``release`` lets the next one in."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd = fd

    @classmethod
    def acquire(cls, directory: Path) -> WriterLock:
        path = directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise StoreLockedError(directory, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        return cls(directory, fd)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
