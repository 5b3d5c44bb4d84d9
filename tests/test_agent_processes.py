"""``graphite-istat agent`` and ``serve`` as real processes on 127.0.0.1: kill -9 on both sides.

Ports are 0 in every configuration and read from the ``listening:`` log
lines; a server restarted after a kill -9 is given the ack port it had, so
the running agent finds it again. The store is read back through a
read-only ``Store``: per metric, the count and the sum of the points must be
exactly those sent (a point lost or applied twice changes them).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_receiver_daemon import Daemon, counts_and_sums, wait_until

from graphite_istat.protocol.ack_frames import (
    BATCH,
    HEADER_BYTES,
    HELLO,
    FrameReader,
    batch_info,
    decode_hello,
    encode_ack,
)
from graphite_istat.store.store import Store

LISTENING = re.compile(r"listening: (\w+) (tcp|udp) (\S+):(\d+)")
STOPPED = re.compile(r"^.*INFO stopped: (\{.*\})$", re.MULTILINE)
METRICS = 1000


class Server:
    """``graphite-istat serve`` with its ack listener; restartable on the same port and storage."""

    def __init__(self, root: Path, ack_port: int = 0) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.daemon = Daemon(root, extra=f"ACK_PORT = {ack_port}\n")
        try:
            self.daemon.wait_for_log("listening: agent tcp")
        except AssertionError:
            self.daemon.kill()
            raise
        ports = {(m[0], m[1]): int(m[3]) for m in LISTENING.findall(self.daemon.log())}
        self.ack_port = ports[("agent", "tcp")]
        self.storage = self.daemon.storage

    def kill(self) -> None:
        self.daemon.kill()

    def stop(self) -> dict:
        return self.daemon.stop()


class Agent:
    """One ``graphite-istat agent`` process with its configuration and spool under ``root``."""

    def __init__(self, root: Path, destinations: str, extra: str = "") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.spool_dir = root / "spool"
        self.conf = root / "agent.conf"
        base = (
            f"DESTINATIONS = {destinations}\n"
            f"SPOOL_DIR = {self.spool_dir}\n"
            "LINE_RECEIVER_PORT = 0\nPICKLE_RECEIVER_PORT = 0\nUDP_RECEIVER_PORT = 0\n"
            "FLUSH_INTERVAL = 0.2\nRECONNECT_MAX_DELAY = 0.5\nCARBON_METRIC_INTERVAL = 0\n"
            "AGENT_ID = test-agent\n"
        )
        overridden = {line.split("=")[0].strip() for line in extra.splitlines()}
        kept = [line for line in base.splitlines() if line.split("=")[0].strip() not in overridden]
        self.conf.write_text("[agent]\n" + "\n".join(kept) + "\n" + extra)
        self.start()

    def start(self) -> None:
        self.output = self.root / f"agent-{time.monotonic_ns()}.out"
        self._output = open(self.output, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphite_istat.cli", "agent", "--config", str(self.conf)],
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while " ready" not in self.log():
            assert self.process.poll() is None, self.log()
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the agent did not start:\n{self.log()}")
            time.sleep(0.05)
        self.ports = {(m[0], m[1]): int(m[3]) for m in LISTENING.findall(self.log())}

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        wait_until(lambda: text in self.log(), timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._output.close()

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(120)
        self._output.close()
        assert status == 0, self.log()
        match = STOPPED.search(self.log())
        assert match, self.log()
        return json.loads(match.group(1))

    def resident_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def spooled_points(spool_dir: Path) -> int:
    """Points in the spool's segment files, read with the frame headers only."""
    total = 0
    for segment in spool_dir.glob("*/*.seg"):
        data = segment.read_bytes()
        offset = 12
        while offset + HEADER_BYTES + 14 <= len(data):
            (length,) = struct.unpack_from("<I", data, offset + 6)
            if offset + HEADER_BYTES + length > len(data):
                break
            total += batch_info(data[offset + HEADER_BYTES : offset + HEADER_BYTES + length]).points
            offset += HEADER_BYTES + length
    return total


def lines(first: int, count: int, stamp: int) -> bytes:
    """Points ``first .. first+count-1``: point i is ``agent.m<i % METRICS>`` with value i."""
    return b"".join(
        b"agent.m%d %d %d\n" % (i % METRICS, i, stamp) for i in range(first, first + count)
    )


def expected(points: range) -> dict[str, tuple[float, float]]:
    found: dict[str, list[float]] = {}
    for i in points:
        entry = found.setdefault(f"agent.m{i % METRICS}", [0.0, 0.0])
        entry[0] += 1
        entry[1] += i
    return {name: (count, total) for name, (count, total) in found.items()}


def stored(storage: Path, stamp: int) -> dict[str, tuple[float, float]]:
    reader = Store.open(storage, writable=False)
    try:
        names = [f"agent.m{m}" for m in range(METRICS)]
        found = counts_and_sums(reader, names, stamp - 10, stamp + 10)
        return {name: value for name, value in found.items() if value[0]}
    finally:
        reader.close()


def stored_total(storage: Path, stamp: int) -> int:
    if not (storage / "store.json").exists():
        return 0
    return int(sum(count for count, _ in stored(storage, stamp).values()))


def send(port: int, data: bytes, pieces: int = 1, between=None) -> None:
    """Send ``data`` over one TCP connection in ``pieces``, calling ``between(i)`` after each."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        size = -(-len(data) // pieces)
        for piece in range(pieces):
            chunk = data[piece * size : (piece + 1) * size]
            # Cut at a line end so that a piece is whole lines (the agent does not care).
            sock.sendall(chunk)
            if between is not None:
                between(piece)


@pytest.fixture
def stamp() -> int:
    return int(time.time()) // 10 * 10 - 20


def test_a_server_killed_mid_stream_loses_and_doubles_nothing(tmp_path: Path, stamp: int) -> None:
    server = Server(tmp_path / "server")
    agent = Agent(tmp_path / "agent", f"127.0.0.1:{server.ack_port}")
    total = 1_000_000
    servers = [server]

    def kill_and_restart(piece: int) -> None:
        # Twice: kill the server while the agent streams batches at it, restart it on the
        # same port a few seconds later (the second time, right away). The first kill comes
        # once batches were committed, the second during the new server's first write.
        if piece in (2, 6):
            connected = len(servers)
            wait_until(lambda: agent.log().count(" has test-agent/") == connected)
            if piece == 2:
                wait_until(lambda: stored_total(server.storage, stamp) > 0)
            time.sleep(0.1)
            servers[-1].kill()
            time.sleep(2 if piece == 2 else 0.2)
            servers.append(Server(tmp_path / "server", server.ack_port))

    try:
        send(
            agent.ports[("line", "tcp")],
            lines(0, total, stamp),
            pieces=10,
            between=kill_and_restart,
        )
        wait_until(lambda: stored_total(server.storage, stamp) >= total, timeout=90)
        assert stored(server.storage, stamp) == expected(range(total))
        totals = agent.stop()
        assert totals["metricsReceived"] == totals["spooled"] == total
        assert totals["acknowledged"] == total and totals["dropped"] == {}
        assert totals["forwarded"] >= total
        assert agent.log().count("connection to 127.0.0.1") == 2
        assert servers[-1].stop()["errors"] == 0
    finally:
        agent.kill()
        for each in servers:
            each.kill()


def test_an_agent_killed_with_a_full_spool_replays_it_exactly(tmp_path: Path, stamp: int) -> None:
    # A server that is gone: its port is taken and closed again.
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        ack_port = placeholder.getsockname()[1]
    agent_root = tmp_path / "agent"
    agent = Agent(agent_root, f"127.0.0.1:{ack_port}", "REPLAY_POINTS_PER_SECOND = 150000\n")
    total = 600_000
    server = None
    try:
        send(agent.ports[("line", "tcp")], lines(0, total, stamp), pieces=4)
        wait_until(lambda: spooled_points(agent.spool_dir) == total)
        agent.kill()
        server = Server(tmp_path / "server", ack_port)
        agent.start()
        # Replaying at 150k points/s: kill it again half way through the replay.
        wait_until(lambda: stored_total(server.storage, stamp) >= total // 3)
        agent.kill()
        assert stored_total(server.storage, stamp) < total
        agent.start()
        wait_until(lambda: stored_total(server.storage, stamp) >= total, timeout=90)
        assert stored(server.storage, stamp) == expected(range(total))
        totals = agent.stop()
        assert totals["replayed"] > 0 and totals["dropped"] == {}
        assert "has test-agent/" in agent.log()
    finally:
        agent.kill()
        if server is not None:
            server.kill()


def test_a_full_spool_drops_the_oldest_counts_them_and_delivers_the_rest(
    tmp_path: Path, stamp: int
) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        ack_port = placeholder.getsockname()[1]
    agent = Agent(
        tmp_path / "agent",
        f"127.0.0.1:{ack_port}",
        "MAX_SPOOL_BYTES = 1048576\nMAX_BATCH_POINTS = 5000\n",
    )
    total = 300_000
    server = None
    try:
        send(agent.ports[("line", "tcp")], lines(0, total, stamp), pieces=6)
        totals = agent.stop()  # everything received is spooled (or dropped) before it exits
        dropped = totals["dropped"]["spool_full"]
        assert totals["metricsReceived"] == total and 0 < dropped < total
        assert "full" in agent.log()
        server = Server(tmp_path / "server", ack_port)
        agent.start()
        wait_until(lambda: stored_total(server.storage, stamp) >= total - dropped, timeout=60)
        # The oldest went: what arrived is exactly the points from ``dropped`` on.
        assert stored(server.storage, stamp) == expected(range(dropped, total))
        assert agent.stop()["dropped"] == {}
    finally:
        agent.kill()
        if server is not None:
            server.kill()


class SlowServer:
    """A server that acknowledges one batch every ``delay`` seconds (the agent's view of an
    overloaded server), written against ``ack_frames`` independently of the real one."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.batches = 0
        self.acknowledged_points = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self._serve_one()
        except OSError:
            pass  # the agent went away (the test stopped it)

    def _serve_one(self) -> None:
        connection, _ = self.listener.accept()
        reader = FrameReader()
        with connection:
            while not self.stopping:
                data = connection.recv(1 << 16)
                if not data:
                    return
                for frame in reader.feed(data):
                    if frame.kind == HELLO:
                        assert decode_hello(frame).startswith("test-agent/")
                        connection.sendall(encode_ack(0))
                    elif frame.kind == BATCH:
                        time.sleep(self.delay)
                        info = batch_info(frame.body)
                        connection.sendall(encode_ack(info.sequence))
                        self.batches += 1
                        self.acknowledged_points += info.points

    def close(self) -> None:
        self.stopping = True
        self.listener.close()


def test_a_slow_server_does_not_make_the_agent_grow(tmp_path: Path, stamp: int) -> None:
    slow = SlowServer(delay=0.05)
    agent = Agent(
        tmp_path / "agent",
        f"127.0.0.1:{slow.port}",
        "WINDOW_BYTES = 1048576\nSPOOL_MEMORY_BYTES = 4194304\nMAX_SPOOL_BYTES = 33554432\n"
        "MAX_BATCH_POINTS = 10000\nSPOOL_COMPRESSION = false\n",
    )
    peaks: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.02) and agent.process.poll() is None:
            peaks[-1] = max(peaks[-1], agent.resident_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        send(agent.ports[("line", "tcp")], lines(0, 200_000, stamp))
        wait_until(lambda: slow.batches > 0)
        baseline = agent.resident_bytes()
        peaks.append(baseline)
        sampler.start()
        sent = 200_000
        halves, per_half = 2, 4_000_000
        for half in range(halves):
            if half:
                peaks.append(agent.resident_bytes())
            for _ in range(per_half // 500_000):
                send(agent.ports[("line", "tcp")], lines(sent, 500_000, stamp))
                sent += 500_000
            wait_until(lambda: agent.process.poll() is not None or "full" in agent.log())
        sampling.set()
        sampler.join()
        totals = agent.stop()
        # 8 million points (about 200 MB of frames) went through an agent whose window,
        # memory cache, pipeline and spool are bounded: the second half of the stream made
        # it no bigger than the first, and neither made it grow by anything like what passed.
        print(
            f"agent resident: {baseline >> 20} MiB after warm-up, "
            f"peaks {[p >> 20 for p in peaks]} MiB"
        )
        assert totals["metricsReceived"] == sent
        assert totals["dropped"].get("spool_full", 0) > 0
        assert peaks[0] - baseline < 100 << 20, (baseline, peaks)
        assert peaks[1] - peaks[0] < 32 << 20, (baseline, peaks)
        assert 0 < totals["acknowledged"] <= slow.acknowledged_points
    finally:
        agent.kill()
        slow.close()
