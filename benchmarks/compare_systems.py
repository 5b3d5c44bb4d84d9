"""The two systems of the side-by-side benchmark as processes, and how each is read back.

``start_carbon`` runs stock carbon-cache 1.1.10 (``carbon-cache.py --debug
start``, whisper files) and ``start_istat`` runs ``graphite-istat serve``, both
on 127.0.0.1 with the same storage-schemas.conf, storage-aggregation.conf and
unthrottled cache settings. ``WhisperCounts`` and ``IstatCounts`` count, per
metric, the points of the sent range that a reader finds on disk: whisper
through ``whisper.fetch`` of each ``.wsp`` file, graphite-istat through a
read-only ``Store``. Neither looks at a counter the daemon reports itself.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import whisper

from graphite_istat.cli.carbon_cache import carbon_script
from graphite_istat.store.store import Store

RETENTIONS = "10s:6h,1m:7d,10m:5y"
SCHEMAS = f"[default]\npattern = .*\nretentions = {RETENTIONS}\n"
AGGREGATION = "[default]\npattern = .*\nxFilesFactor = 0.5\naggregationMethod = average\n"
# Shared by both: nothing throttled, no self-metrics in the measured storage.
COMMON_CACHE = """\
LINE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
ENABLE_UDP_LISTENER = False
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = inf
MAX_CREATES_PER_MINUTE = inf
CARBON_METRIC_INTERVAL = 0
"""
# Sparse files: 10m:5y is 3.2 MB a file, so allocating them all does not fit this disk
# at 10k metrics (carbon's default writes every byte of a new file).
CARBON_CONF = """\
[cache]
{common}STORAGE_DIR = {root}/storage
LOCAL_DATA_DIR = {whisper}
PID_DIR = {root}/run
LOG_DIR = {root}/log
LINE_RECEIVER_PORT = {line_port}
PICKLE_RECEIVER_PORT = {pickle_port}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query_port}
ENABLE_TAGS = False
WHISPER_SPARSE_CREATE = True
"""
ISTAT_CONF = """\
[cache]
{common}LOCAL_DATA_DIR = {storage}
LOG_DIR = {root}/log
LINE_RECEIVER_PORT = 0
PICKLE_RECEIVER_PORT = 0
[istat]
ACK_PORT = 0
"""
LISTENING = re.compile(r"listening: line tcp 127\.0\.0\.1:(\d+)")
START_TIMEOUT = 60.0


class ServerError(Exception):
    """A daemon that did not start or died."""


def free_port() -> int:
    """A port free now: carbon does not say what port 0 became, so it is given one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_rules(conf_dir: Path) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "storage-schemas.conf").write_text(SCHEMAS)
    (conf_dir / "storage-aggregation.conf").write_text(AGGREGATION)


@dataclass
class Server:
    """A started daemon: its process, log, line port and storage."""

    label: str
    process: subprocess.Popen[bytes]
    log_path: Path
    line_port: int
    storage: Path

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.process.pid)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return self.ps.memory_info().rss

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise ServerError(
                f"{self.label} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def freeze(self) -> None:
        """SIGSTOP: nothing more gets written, so what is on disk now is the window's work."""
        self.process.send_signal(signal.SIGSTOP)

    def stop(self, *, graceful: bool) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
            if graceful:
                try:
                    self.process.wait(120)
                    return
                except subprocess.TimeoutExpired:
                    self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)


def _spawn(
    command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def start_carbon(root: Path) -> Server:
    """Stock carbon-cache in the foreground, writing whisper files under ``root/whisper``."""
    conf_dir = root / "conf"
    write_rules(conf_dir)
    whisper_dir = root / "whisper"
    whisper_dir.mkdir(parents=True)
    line_port = free_port()
    conf = conf_dir / "carbon.conf"
    conf.write_text(
        CARBON_CONF.format(
            common=COMMON_CACHE,
            root=root,
            whisper=whisper_dir,
            line_port=line_port,
            pickle_port=free_port(),
            query_port=free_port(),
        )
    )
    env = {**os.environ, "GRAPHITE_ROOT": str(root), "GRAPHITE_CONF_DIR": str(conf_dir)}
    command = [sys.executable, str(carbon_script()), "--debug", "--config", str(conf), "start"]
    server = Server(
        "carbon-cache",
        _spawn(command, root / "carbon.log", env),
        root / "carbon.log",
        line_port,
        whisper_dir,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        server.check_running()
        try:
            socket.create_connection(("127.0.0.1", line_port), timeout=1).close()
            return server
        except OSError:
            if time.monotonic() > deadline:
                raise ServerError(f"carbon-cache did not listen:\n{server.log_tail()}") from None
            time.sleep(0.1)


def start_istat(root: Path) -> Server:
    """``graphite-istat serve`` with ports 0, storing under ``root/istat``."""
    conf_dir = root / "conf"
    write_rules(conf_dir)
    storage = root / "istat"
    conf = conf_dir / "carbon.conf"
    conf.write_text(ISTAT_CONF.format(common=COMMON_CACHE, root=root, storage=storage))
    command = [sys.executable, "-m", "graphite_istat.cli", "serve", "--config", str(conf)]
    log_path = root / "serve.log"
    process = _spawn(command, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if " ready" in text and (match := LISTENING.search(text)):
            return Server("graphite-istat serve", process, log_path, int(match.group(1)), storage)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise ServerError(
        f"graphite-istat serve did not start:\n{log_path.read_text(errors='replace')}"
    )


class WhisperCounts:
    """Points of ``[first, last]`` readable per metric from the ``.wsp`` files."""

    def __init__(self, whisper_dir: Path, names: Sequence[str], first: int, last: int) -> None:
        self.paths = [str(whisper_dir / (name.replace(".", "/") + ".wsp")) for name in names]
        self.first = first
        self.last = last

    def counts(self, indices: np.ndarray) -> np.ndarray:
        out = np.zeros(len(indices), dtype=np.int64)
        for slot, index in enumerate(indices):
            path = self.paths[index]
            if not os.path.exists(path):
                continue
            try:
                fetched = whisper.fetch(path, self.first - 10, self.last)
            except (
                whisper.WhisperException,
                OSError,
                ValueError,
            ):  # a file being created: next pass
                continue
            if fetched is not None:
                out[slot] = sum(value is not None for value in fetched[1])
        return out

    def close(self) -> None:
        pass


class IstatCounts:
    """Points of ``[first, last]`` readable per metric through a read-only ``Store``."""

    def __init__(self, storage: Path, names: Sequence[str], first: int, last: int) -> None:
        self.names = list(names)
        self.first = first
        self.last = last
        self.store: Store | None = None
        self.storage = storage

    def counts(self, indices: np.ndarray) -> np.ndarray:
        out = np.zeros(len(indices), dtype=np.int64)
        if self.store is None:
            if (
                not (self.storage / "store.json").exists()
                or not (self.storage / "names.log").exists()
            ):
                return out
            self.store = Store.open(self.storage, writable=False)
        self.store.refresh()
        wanted = [self.names[i] for i in indices]
        slot_of = {name: slot for slot, name in enumerate(wanted)}
        result = self.store.fetch(wanted, self.first - 10, self.last, fields=("count",))
        for series in result.sets:
            totals = np.nansum(series.counters["count"], axis=1)
            for name, total in zip(series.names, totals, strict=True):
                out[slot_of[name]] = int(total)
        return out

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
