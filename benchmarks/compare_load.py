"""The load generator of the side-by-side benchmark: pre-built plaintext rounds sent over several TCP connections.

A workload is ``metrics`` distinct names, one point per metric per round,
rounds 10 s apart in timestamp. Every line has the same width, so a round is
built with numpy by writing the timestamp columns of a fixed name matrix,
before the clock starts; sending is then nothing but ``sendall`` of ready
``bytes`` from one thread per connection (``sendall`` releases the GIL).
Connection ``c`` carries the metrics ``c::connections``, in round order.

``measure_capacity`` times the same sending into a discarding sink in a child
process: the generator's own ceiling, against which each run's accepted rate
is compared to say whether the generator was the bottleneck.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

STEP = 10
NAME_WIDTH = 26  # bench.hostHHHHH.cpuCC.user
LINE = NAME_WIDTH + len(b" 1 ") + 10 + 1  # name, value, 10-digit timestamp, newline


def metric_name(index: int) -> str:
    """The ``index``-th metric: 100 metrics per host, so globs can pick 1,000 or 10,000 of them."""
    return f"bench.host{index // 100:05d}.cpu{index % 100:02d}.user"


def metric_names(count: int) -> list[str]:
    return [metric_name(i) for i in range(count)]


@dataclass(frozen=True, slots=True)
class Workload:
    """What one run sends: metric count, first timestamp, the rounds built, the send window."""

    metrics: int
    first_stamp: int
    rounds: int
    window: float  # seconds of sending at most
    connections: int

    def stamp(self, round_number: int) -> int:
        return self.first_stamp + STEP * round_number


@dataclass(frozen=True, slots=True)
class SendReport:
    """What the generator got into the kernel: per connection the rounds sent, and the times."""

    rounds_per_connection: list[int]
    started: float  # perf_counter at the first byte
    finished: float  # perf_counter after the last sendall returned
    cpu_seconds: float  # the generator's process CPU during sending
    ran_out: bool  # every pre-built round went out before the window closed

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def connection_rounds(workload: Workload) -> list[list[bytes]]:
    """Per connection, its rounds as ready-to-send ``bytes`` (built up front, untimed)."""
    names = np.frombuffer("".join(metric_names(workload.metrics)).encode(), dtype=np.uint8)
    names = names.reshape(workload.metrics, NAME_WIDTH)
    out: list[list[bytes]] = []
    for connection in range(workload.connections):
        mine = names[connection :: workload.connections]
        lines = np.empty((len(mine), LINE), dtype=np.uint8)
        lines[:, :NAME_WIDTH] = mine
        lines[:, NAME_WIDTH : NAME_WIDTH + 3] = np.frombuffer(b" 1 ", dtype=np.uint8)
        lines[:, -1] = ord("\n")
        rounds = []
        for round_number in range(workload.rounds):
            digits = np.frombuffer(b"%010d" % workload.stamp(round_number), dtype=np.uint8)
            lines[:, NAME_WIDTH + 3 : NAME_WIDTH + 13] = digits
            rounds.append(lines.tobytes())
        out.append(rounds)
    return out


def send_rounds(port: int, rounds: list[list[bytes]], window: float) -> SendReport:
    """Send every connection's rounds in order until they run out or ``window`` seconds pass."""
    sent = [0] * len(rounds)
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in rounds]
    gate = threading.Barrier(len(rounds) + 1)
    failures: list[BaseException] = []

    def send(index: int) -> None:
        sock = sockets[index]
        gate.wait()
        deadline = started + window
        try:
            for payload in rounds[index]:
                if time.perf_counter() >= deadline:
                    break
                sock.sendall(payload)
                sent[index] += 1
        except OSError as error:
            failures.append(error)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(rounds))]
    for thread in threads:
        thread.start()
    cpu_start = time.process_time()
    started = time.perf_counter()
    gate.wait()
    for thread in threads:
        thread.join()
    finished = time.perf_counter()
    cpu = time.process_time() - cpu_start
    for sock in sockets:
        sock.close()
    if failures:
        raise RuntimeError(f"sending failed: {failures[0]}")
    ran_out = all(count == len(r) for count, r in zip(sent, rounds, strict=True))
    return SendReport(sent, started, finished, cpu, ran_out)


SINK = """
import socket, threading, sys
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(64)
print(server.getsockname()[1], flush=True)
def drain(conn):
    buffer = bytearray(4 << 20)
    while conn.recv_into(buffer):
        pass
while True:
    conn, _ = server.accept()
    threading.Thread(target=drain, args=(conn,), daemon=True).start()
"""


def measure_capacity(connections: int, seconds: float = 3.0) -> float:
    """Points/s the generator gets into a sink that only discards (a child process)."""
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE)
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        metrics = 100_000
        workload = Workload(metrics, 1_000_000_000, 100, seconds, connections)
        report = send_rounds(port, connection_rounds(workload), seconds)
        return (
            sum(
                r * len(range(c, metrics, connections))
                for c, r in enumerate(report.rounds_per_connection)
            )
            / report.seconds
        )
    finally:
        sink.terminate()
        sink.wait(10)


def points_sent(workload: Workload, report: SendReport) -> int:
    return sum(
        rounds * len(range(c, workload.metrics, workload.connections))
        for c, rounds in enumerate(report.rounds_per_connection)
    )
