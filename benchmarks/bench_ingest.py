"""End-to-end ingest: points/s from the first byte sent until every point is readable.

Starts ``graphite-istat serve`` as a subprocess (ports 0, storage in a
temporary directory), creates the metrics with one untimed round, then sends
``--points`` plaintext points over ``--connections`` TCP connections (one
point per metric every 10 s of timestamps, metric-major within a round) and
waits until the last line of every connection is readable from a read-only
``Store``. Prints, per number of distinct metrics: sustained points/s, the
daemon's CPU seconds per million points, its peak RSS, and the points lost
(sent minus the counts read back: must be 0).

Run with ``python benchmarks/bench_ingest.py [--metrics 10000,100000,1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from graphite_istat.store.store import Store

STEP = 10
SEND_CHUNK = 1 << 20
LISTENING = re.compile(r"listening: (\w+) (tcp|udp) (\S+):(\d+)")
CARBON_CONF = """\
[cache]
LINE_RECEIVER_PORT = 0
PICKLE_RECEIVER_PORT = 0
LOCAL_DATA_DIR = {storage}
LOG_DIR = {logs}
CARBON_METRIC_INTERVAL = 60
[istat]
ACK_PORT = 0
{istat}
"""
SCHEMAS = "[default]\npattern = .*\nretentions = 10s:1d,1m:7d\n"
AGGREGATION = "[default]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n"


def metric_names(count: int) -> list[bytes]:
    return [f"bench.host{i // 100:05d}.cpu{i % 100:02d}.user".encode() for i in range(count)]


def connection_payloads(
    names: list[bytes], rounds: range, first_stamp: int, connections: int
) -> list[list[bytes]]:
    """Per connection, its lines in SEND_CHUNK pieces: metrics ``c::connections`` each round."""
    payloads = []
    for connection in range(connections):
        mine = names[connection::connections]
        pieces = []
        for round_number in rounds:
            stamp = b" %d\n" % (first_stamp + STEP * round_number)
            value = b" %d.5" % round_number
            pieces.append(b"".join(name + value + stamp for name in mine))
        data = b"".join(pieces)
        payloads.append([data[i : i + SEND_CHUNK] for i in range(0, len(data), SEND_CHUNK)])
    return payloads


class Daemon:
    def __init__(self, workdir: Path, istat: str) -> None:
        conf = workdir / "carbon.conf"
        (workdir / "storage-schemas.conf").write_text(SCHEMAS)
        (workdir / "storage-aggregation.conf").write_text(AGGREGATION)
        self.storage = workdir / "storage"
        conf.write_text(CARBON_CONF.format(storage=self.storage, logs=workdir / "log", istat=istat))
        self.log_path = workdir / "serve.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphite_istat.cli", "serve", "--config", str(conf)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.ports = self._wait_for_ports()
        self.ps = psutil.Process(self.process.pid)

    def _wait_for_ports(self) -> dict[str, int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log_path.read_text()
            if "ready" in text:
                return {m[0]: int(m[3]) for m in LISTENING.findall(text) if m[1] == "tcp"}
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the daemon did not start:\n{self.log_path.read_text()}")

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return self.ps.memory_info().rss

    def stop(self) -> dict:
        """SIGTERM; the daemon's totals from its ``stopped:`` line."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(120)
        self.log.close()
        match = re.search(r"stopped: (\{.*\})", self.log_path.read_text())
        return json.loads(match.group(1)) if match else {}


def send_all(port: int, payloads: list[list[bytes]], markers: list[bytes]) -> None:
    def send(chunks: list[bytes], marker: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.sendall(marker)

    senders = [
        threading.Thread(target=send, args=(chunks, marker))
        for chunks, marker in zip(payloads, markers, strict=True)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()


def wait_readable(reader: Store, names: list[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reader.refresh()
        if all(name in reader for name in names):
            return
        time.sleep(0.02)
    raise RuntimeError(f"not readable after {timeout} s: {names}")


def run_case(distinct: int, points: int, connections: int, istat: str) -> dict[str, float]:
    rounds = max(1, points // distinct)
    sent = rounds * distinct
    names = metric_names(distinct)
    now = int(time.time())
    first_stamp = (now - STEP * (rounds + 2)) // STEP * STEP
    warmup = connection_payloads(names, range(-1, 0), first_stamp, connections)
    timed = connection_payloads(names, range(rounds), first_stamp, connections)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    daemon = Daemon(workdir, istat)
    try:
        port = daemon.ports["line"]
        reader = Store.open(daemon.storage, writable=False)
        warm_markers = [f"bench.warm.c{c}" for c in range(connections)]
        send_all(port, warmup, [b"%s 1 %d\n" % (m.encode(), now) for m in warm_markers])
        wait_readable(reader, warm_markers)
        markers = [f"bench.done.c{c}" for c in range(connections)]
        cpu_before = daemon.cpu_seconds()
        started = time.perf_counter()
        send_all(port, timed, [b"%s 1 %d\n" % (m.encode(), now) for m in markers])
        sent_seconds = time.perf_counter() - started
        wait_readable(reader, markers)
        seconds = time.perf_counter() - started
        cpu = daemon.cpu_seconds() - cpu_before
        peak = daemon.peak_rss()
        text_names = [n.decode() for n in names]
        counted = total = 0.0
        for first in range(0, len(text_names), 100_000):
            result = reader.fetch(
                text_names[first : first + 100_000],
                first_stamp - STEP,  # whisper's grid starts one step after from
                first_stamp + STEP * (rounds - 1),
                fields=("count", "sum"),
            )
            for series in result.sets:
                counted += float(np.nansum(series.counters["count"]))
                total += float(np.nansum(series.counters["sum"]))
        expected_sum = distinct * sum(r + 0.5 for r in range(rounds))
        reader.close()
    finally:
        totals = daemon.stop()
        if os.environ.get("BENCH_KEEP_LOG"):
            print(daemon.log_path.read_text()[-3000:])
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "metrics": distinct,
        "points": sent,
        "seconds": seconds,
        "send_seconds": sent_seconds,
        "rate": sent / seconds,
        "cpu_per_million": cpu / sent * 1e6,
        "peak_rss_mb": peak / 2**20,
        "lost": sent - counted,
        "write_seconds": totals.get("writeSeconds", float("nan")),
        "sum_ok": abs(total - expected_sum) <= 1e-9 * abs(expected_sum),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default="10000,100000,1000000")
    parser.add_argument("--points", type=int, default=5_000_000, help="points per case")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--istat", default="", help="extra [istat] lines, e.g. PARSER_THREADS=2")
    args = parser.parse_args()
    print(f"nproc {os.cpu_count()}, {args.connections} TCP connections, 10 s resolution")
    header = f"{'metrics':>9} {'points':>9} {'seconds':>8} {'points/s':>10} {'CPU s/Mpt':>9} {'peak RSS MB':>11} {'lost':>5} {'sums':>5}"
    print(header)
    for distinct in (int(m) for m in args.metrics.split(",")):
        row = run_case(distinct, args.points, args.connections, args.istat.replace(";", "\n"))
        print(
            f"{row['metrics']:>9} {row['points']:>9} {row['seconds']:>8.2f} {row['rate']:>10,.0f} "
            f"{row['cpu_per_million']:>9.2f} {row['peak_rss_mb']:>11.0f} {row['lost']:>5.0f} "
            f"{'ok' if row['sum_ok'] else 'WRONG':>5}  (sending took {row['send_seconds']:.2f} s; "
            f"Store.write busy {row['write_seconds']:.2f} s in all, metric creation included)",
            flush=True,
        )


if __name__ == "__main__":
    main()
