"""The agent: points/s forwarded live and replayed from a spool, spool bytes per point, and the
time to drain a 10-minute outage of 100k metrics at 10 s.

Starts ``graphite-istat serve`` and ``graphite-istat agent`` as subprocesses
(ports 0, everything in a temporary directory) and sends carbon plaintext to
the agent over one TCP connection, followed by a marker line; the points are
delivered once the marker is readable from a read-only ``Store`` (the agent
and the server keep the order of one connection). Every case then checks
that the store holds exactly the points sent (count per metric).

1. live: server up, ``--live-points`` points through the agent, and the same
   sent straight to the server's line port for comparison;
2. outage: server down, ``--metrics`` metrics x 60 points (10 minutes at 10 s)
   into the agent, which spools them (spool bytes per point measured); then
   the server comes back and the agent is restarted: the time until the spool
   is drained: unlimited, at the default replay rate, and with compressed batches;
3. frames: bytes per point and encoding speed of a spool batch, plain and
   zlib-compressed (in process).

Run with ``python benchmarks/bench_agent.py [--metrics 100000] [--live-points 2000000]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Progress, disk_usage, fmt_bytes, fmt_rate, fmt_seconds, print_table

from graphite_istat.agent.counters import AgentCounters
from graphite_istat.agent.forwarder import Forwarder
from graphite_istat.agent.spool import SEGMENT_HEADER, DestinationSpool
from graphite_istat.protocol.ack_frames import (
    BATCH_PREFIX_BYTES,
    HEADER_BYTES,
    AckProtocolError,
    batch_numbers,
    parse_header,
)
from graphite_istat.store.batch import WriteBatch
from graphite_istat.store.store import Store

STEP = 10
OUTAGE_POINTS_PER_METRIC = 60  # 10 minutes at 10 s
LISTENING = re.compile(r"listening: (\w+) (tcp|udp) (\S+):(\d+)")
STOPPED = re.compile(r"INFO stopped: (\{.*\})")
MARKER = "bench.marker"
SCHEMAS = "[default]\npattern = .*\nretentions = 10s:1d,1m:7d\n"
AGGREGATION = "[default]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n"


def metric_name(index: int) -> str:
    return f"bench.host{index // 100:05d}.metric{index % 100:02d}"


def plaintext(metrics: int, stamps: list[int]) -> list[bytes]:
    """One chunk per timestamp: every metric once, value = its index."""
    names = [metric_name(i).encode() for i in range(metrics)]
    return [
        b"".join(b"%s %d %d\n" % (name, i, stamp) for i, name in enumerate(names))
        for stamp in stamps
    ]


class Process:
    """A subprocess with its log, added to ``started`` (all are killed at the end if running)."""

    def __init__(self, argv: list[str], log: Path, started: list[Process]) -> None:
        started.append(self)
        self.log_path = log
        self._log = open(log, "wb")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not logged:\n{self.log()}")
            time.sleep(0.05)

    def ports(self) -> dict[tuple[str, str], int]:
        return {(m[0], m[1]): int(m[3]) for m in LISTENING.findall(self.log())}

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(600)
        self._log.close()
        match = STOPPED.search(self.log())
        return json.loads(match.group(1)) if match else {}


def start_server(root: Path, started: list[Process], ack_port: int = 0) -> Process:
    conf = root / "carbon.conf"
    conf.write_text(
        f"[cache]\nLOCAL_DATA_DIR = {root / 'storage'}\nLINE_RECEIVER_PORT = 0\n"
        f"PICKLE_RECEIVER_PORT = 0\nCARBON_METRIC_INTERVAL = 0\n[istat]\nACK_PORT = {ack_port}\n"
    )
    server = Process(
        [sys.executable, "-m", "graphite_istat.cli", "serve", "--config", str(conf)],
        root / f"serve-{time.monotonic_ns()}.log",
        started,
    )
    server.wait_for("listening: agent tcp")
    return server


def start_agent(root: Path, started: list[Process], ack_port: int, extra: str = "") -> Process:
    conf = root / "agent.conf"
    conf.write_text(
        f"[agent]\nDESTINATIONS = 127.0.0.1:{ack_port}\nSPOOL_DIR = {root / 'spool'}\n"
        "LINE_RECEIVER_PORT = 0\nPICKLE_RECEIVER_PORT = 0\nENABLE_UDP_LISTENER = false\n"
        "MAX_SPOOL_BYTES = 8589934592\nCARBON_METRIC_INTERVAL = 0\nRECONNECT_MAX_DELAY = 1\n"
        + extra
    )
    agent = Process(
        [sys.executable, "-m", "graphite_istat.cli", "agent", "--config", str(conf)],
        root / f"agent-{time.monotonic_ns()}.log",
        started,
    )
    agent.wait_for(" ready")
    return agent


def send(port: int, chunks: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for chunk in chunks:
            sock.sendall(chunk)


def wait_for_marker(storage: Path, value: int, timeout: float = 1800) -> None:
    """Until the marker's latest value is ``value`` (everything sent before it has arrived)."""
    deadline = time.monotonic() + timeout
    reader = None
    while time.monotonic() < deadline:
        if reader is None and (storage / "store.json").exists():
            reader = Store.open(storage, writable=False)
        if reader is not None:
            reader.refresh()
            if MARKER in reader:
                now = int(time.time())
                result = reader.fetch([MARKER], now - 3600, now + 60, fields=("max",))
                for _name, _grid, series, row in result.series():
                    if np.nanmax(series.counters["max"][row], initial=-1) >= value:
                        reader.close()
                        return
        time.sleep(0.05)
    raise RuntimeError("the marker never arrived")


def stored_points(storage: Path, metrics: int, start: int, end: int) -> int:
    reader = Store.open(storage, writable=False)
    try:
        names = [metric_name(i) for i in range(metrics)]
        result = reader.fetch(names, start - STEP, end + STEP, now=end + STEP, fields=("count",))
        return int(sum(np.nansum(series.counters["count"]) for series in result.sets))
    finally:
        reader.close()


def spooled_points(spool_dir: Path) -> int:
    """Points in the spool's segments, from the frame headers (the agent may be writing)."""
    total = 0
    for segment in spool_dir.glob("*/*.seg"):
        with open(segment, "rb") as file:
            file.seek(SEGMENT_HEADER.size)
            while True:
                head = file.read(HEADER_BYTES + BATCH_PREFIX_BYTES)
                if len(head) < HEADER_BYTES + BATCH_PREFIX_BYTES:
                    break
                try:
                    length = parse_header(head).length
                except AckProtocolError:
                    break  # a record being written, or one cut short by a full disk
                total += batch_numbers(head[HEADER_BYTES:])[1]
                file.seek(length - BATCH_PREFIX_BYTES, 1)
    return total


def wait_spooled(spool_dir: Path, points: int, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while spooled_points(spool_dir) < points:
        if time.monotonic() > deadline:
            raise RuntimeError("the agent never spooled everything")
        time.sleep(0.2)


def marker_line(value: int) -> bytes:
    return b"%s %d %d\n" % (MARKER.encode(), value, int(time.time()))


def frame_figures(metrics: int) -> list[list[str]]:
    """Bytes per point and encoding speed of spooled frames, plain and compressed."""
    rows = []
    stamp = int(time.time()) // STEP * STEP
    names = [metric_name(i) for i in range(metrics)]
    batch = WriteBatch.from_arrays(names, np.full(metrics, stamp), np.arange(metrics, dtype=float))
    for compress in (False, True):
        directory = Path(tempfile.mkdtemp(prefix="bench-agent-frames-"))
        try:
            spool = DestinationSpool(
                directory,
                agent_id="bench",
                counters=AgentCounters(),
                logger=logging.getLogger("bench"),
                max_bytes=1 << 34,
            )
            spool.open()
            forwarder = Forwarder(
                [spool], AgentCounters(), logging.getLogger("bench"), compress=compress
            )
            rounds = 10
            started = time.perf_counter()
            for _ in range(rounds):
                forwarder.write(batch)
            elapsed = time.perf_counter() - started
            points = rounds * metrics
            rows.append(
                [
                    "zlib" if compress else "plain",
                    f"{spool.total_bytes() / points:.1f}",
                    fmt_rate(points / elapsed),
                ]
            )
            spool.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=100_000)
    parser.add_argument("--live-points", type=int, default=2_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    progress = Progress()
    root = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    metrics = args.metrics
    now = int(time.time()) // STEP * STEP
    server_root, agent_root = root / "server", root / "agent"
    server_root.mkdir()
    agent_root.mkdir()
    (server_root / "storage-schemas.conf").write_text(SCHEMAS)
    (server_root / "storage-aggregation.conf").write_text(AGGREGATION)
    live_rows, outage_rows = [], []
    processes: list[Process] = []
    try:
        # -- live ---------------------------------------------------------------------
        live_stamps = [now - 3000 - STEP * k for k in range(max(1, args.live_points // metrics))]
        live_chunks = plaintext(metrics, live_stamps)
        live_points = metrics * len(live_stamps)
        server = start_server(server_root, processes)
        ack_port = server.ports()[("agent", "tcp")]
        line_port = server.ports()[("line", "tcp")]
        # Create the metrics first (one untimed round), as a long-running server has them.
        send(line_port, [*plaintext(metrics, [now - 6000]), marker_line(1)])
        wait_for_marker(server_root / "storage", 1)
        progress.mark(f"{metrics} metrics created")

        started = time.perf_counter()
        send(line_port, [*live_chunks, marker_line(2)])
        wait_for_marker(server_root / "storage", 2)
        direct = time.perf_counter() - started
        live_rows.append(
            [
                "straight to serve (line port)",
                f"{live_points:,}",
                fmt_seconds(direct),
                fmt_rate(live_points / direct),
            ]
        )
        progress.mark("direct ingest done")

        agent = start_agent(agent_root, processes, ack_port)
        live_stamps = [stamp - 1000 for stamp in live_stamps]
        live_chunks = plaintext(metrics, live_stamps)
        started = time.perf_counter()
        send(agent.ports()[("line", "tcp")], [*live_chunks, marker_line(3)])
        wait_for_marker(server_root / "storage", 3)
        through = time.perf_counter() - started
        live_rows.append(
            [
                "through the agent (acknowledged)",
                f"{live_points:,}",
                fmt_seconds(through),
                fmt_rate(live_points / through),
            ]
        )
        totals = agent.stop()
        assert totals.get("dropped") == {}, totals
        stored = stored_points(server_root / "storage", metrics, live_stamps[-1], live_stamps[0])
        assert stored == live_points, (stored, live_points)
        progress.mark("live forwarding done")

        # -- outage -------------------------------------------------------------------
        server.stop()
        outage_stamps = [now - STEP * k for k in range(OUTAGE_POINTS_PER_METRIC)]
        outage_points = metrics * len(outage_stamps)
        cases = (
            ("unlimited, plain", "REPLAY_POINTS_PER_SECOND = 0\nSPOOL_COMPRESSION = false\n"),
            ("unlimited, zlib", "REPLAY_POINTS_PER_SECOND = 0\nSPOOL_COMPRESSION = true\n"),
            ("defaults (500k/s, zlib)", ""),
        )
        for turn, (label, options) in enumerate(cases):
            marker = 4 + turn
            shutil.rmtree(agent_root / "spool", ignore_errors=True)
            agent = start_agent(agent_root, processes, ack_port, options)
            # Each case in buckets of its own, so that each can be counted exactly.
            stamps = [stamp - 700 * turn for stamp in outage_stamps]
            started = time.perf_counter()
            send(agent.ports()[("line", "tcp")], [*plaintext(metrics, stamps), marker_line(marker)])
            # Sent is not received: wait until the agent has spooled all of it.
            wait_spooled(agent_root / "spool", outage_points + 1)
            spooling = time.perf_counter() - started
            totals = agent.stop()
            usage = disk_usage(agent_root / "spool")
            assert totals["spooled"] == outage_points + 1, totals
            progress.mark(f"outage spooled ({label})")
            server = start_server(server_root, processes, ack_port)
            started = time.perf_counter()
            agent = start_agent(agent_root, processes, ack_port, options)
            wait_for_marker(server_root / "storage", marker)
            drain = time.perf_counter() - started
            totals = agent.stop()
            stored = stored_points(server_root / "storage", metrics, stamps[-1], stamps[0])
            assert stored == outage_points, (stored, outage_points)
            server.stop()
            outage_rows.append(
                [
                    label,
                    f"{outage_points:,}",
                    fmt_rate(outage_points / spooling),
                    f"{usage.apparent / outage_points:.1f}",
                    fmt_bytes(usage.apparent),
                    fmt_seconds(drain),
                    fmt_rate(outage_points / drain),
                ]
            )
            progress.mark(f"outage drained ({label})")
        frames = frame_figures(metrics)
    finally:
        for process in processes:
            if process.process.poll() is None:
                process.process.kill()
                process.process.wait()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\nLive forwarding ({metrics:,} metrics; from the first byte sent until readable)")
    print_table(["path", "points", "time", "points/s"], live_rows)
    print(
        f"\nA 10-minute outage of {metrics:,} metrics at {STEP} s, spooled, then drained "
        "after restarting server and agent"
    )
    print_table(
        [
            "replay",
            "points",
            "spooled/s",
            "spool B/point",
            "spool size",
            "drain time",
            "replayed/s",
        ],
        outage_rows,
    )
    print(f"\nSpool frames ({metrics:,} distinct metrics per batch, in process)")
    print_table(["payload", "spool B/point", "spooled points/s"], frames)


if __name__ == "__main__":
    main()
