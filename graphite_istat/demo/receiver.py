"""The demo's receiver: ``graphite-istat serve`` as a child process on 127.0.0.1.

It gets its own carbon.conf in the demo folder (written each run, since the
port may change), its bound port is read from its log line
``listening: line tcp 127.0.0.1:PORT``, and it is stopped with SIGTERM, which
makes it write everything it received before it exits.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

LISTENING = re.compile(r"listening: line tcp 127\.0\.0\.1:(\d+)")
START_TIMEOUT = 60.0


class ReceiverError(Exception):
    """The receiver did not start; the message says why (its last log lines)."""


def carbon_conf(storage: Path, log_dir: Path, line_port: int) -> str:
    return (
        "# Written by the demo on every run.\n"
        "[cache]\n"
        f"LOCAL_DATA_DIR = {storage}\n"
        f"LOG_DIR = {log_dir}\n"
        "LINE_RECEIVER_INTERFACE = 127.0.0.1\n"
        f"LINE_RECEIVER_PORT = {line_port}\n"
        "PICKLE_RECEIVER_INTERFACE = 127.0.0.1\n"
        "PICKLE_RECEIVER_PORT = 0\n"
        "ENABLE_UDP_LISTENER = False\n"
        "[istat]\n"
        "ACK_PORT = 0\n"
        "VISIBILITY_INTERVAL = 1.0\n"
    )


class ReceiverProcess:
    """A running ``graphite-istat serve``; ``line_port`` is where to send plaintext."""

    def __init__(self, process: subprocess.Popen, line_port: int, lines: queue.Queue[str]) -> None:
        self.process = process
        self.line_port = line_port
        self._lines = lines

    @classmethod
    def start(cls, conf_dir: Path, storage: Path, log_dir: Path, line_port: int) -> ReceiverProcess:
        conf = conf_dir / "carbon.conf"
        conf.write_text(carbon_conf(storage, log_dir, line_port))
        command = [sys.executable, "-m", "graphite_istat.cli", "serve", "--config", str(conf), "--conf-dir", str(conf_dir)]
        # Its own session: a Ctrl-C in the terminal reaches the demo only, which
        # then stops the receiver once, after the feeder has finished.
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        lines: queue.Queue[str] = queue.Queue()

        def collect() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)

        threading.Thread(target=collect, name="receiver-log", daemon=True).start()
        seen: list[str] = []
        port = None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                if process.poll() is not None:
                    break
                continue
            seen.append(line.rstrip())
            match = LISTENING.search(line)
            if match:
                port = int(match.group(1))
            if port is not None and line.rstrip().endswith("ready"):
                return cls(process, port, lines)
        if process.poll() is None:
            process.kill()
            process.wait()
        raise ReceiverError("\n".join(seen[-5:]) or "the receiver exited without a word")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for everything received to be written; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)
