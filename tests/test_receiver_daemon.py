"""``graphite-istat serve`` as a user runs it: a subprocess, real sockets on 127.0.0.1, signals.

Ports are 0 in carbon.conf; the tests read the bound ports from the
``listening:`` log lines and the totals from the ``stopped:`` line, and read
the points back through a read-only ``Store``.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from graphite_istat.store.store import Store

LISTENING = re.compile(r"listening: (\w+) (tcp|udp) (\S+):(\d+)")
STOPPED = re.compile(r"stopped: (\{.*\})")
AGGREGATION = "[default]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n"
SCHEMAS = "[carbon]\npattern = ^carbon\\.\nretentions = 60:1d\n\n[default]\npattern = .*\nretentions = 10s:1d\n"


class Daemon:
    """One ``graphite-istat serve`` process with its own configuration in a temporary directory."""

    def __init__(self, root: Path, *, schemas: str = SCHEMAS, extra: str = "") -> None:
        self.root = root
        self.conf = root / "carbon.conf"
        self.storage = root / "storage"
        self.log_dir = root / "log"
        self.pidfile = root / "run" / "serve.pid"
        (root / "storage-schemas.conf").write_text(schemas)
        (root / "storage-aggregation.conf").write_text(AGGREGATION)
        self.conf.write_text(
            "[cache]\n"
            f"LOCAL_DATA_DIR = {self.storage}\n"
            f"LOG_DIR = {self.log_dir}\n"
            "LINE_RECEIVER_PORT = 0\nPICKLE_RECEIVER_PORT = 0\n"
            "ENABLE_UDP_LISTENER = true\nUDP_RECEIVER_PORT = 0\n"
            "CARBON_METRIC_INTERVAL = 60\n"
            "[istat]\nVISIBILITY_INTERVAL = 0.5\n"
            + ("" if "ACK_PORT" in extra else "ACK_PORT = 0\n")  # never a fixed port
            + extra
        )
        self.output = root / "serve.out"
        self._output = open(self.output, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "graphite_istat.cli",
                "serve",
                "--config",
                str(self.conf),
                "--pidfile",
                str(self.pidfile),
            ],
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        self.ports = self._wait_ready()

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def _wait_ready(self) -> dict[tuple[str, str], int]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log()
            if " ready" in text:
                return {(m[0], m[1]): int(m[3]) for m in LISTENING.findall(text)}
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the daemon did not start:\n{self.log()}")

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert time.monotonic() < deadline, f"{text!r} never logged:\n{self.log()}"
            time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM) -> dict:
        self.process.send_signal(signum)
        status = self.process.wait(120)
        self._output.close()
        assert status == 0, self.log()
        match = STOPPED.search(self.log())
        assert match, self.log()
        return json.loads(match.group(1))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._output.close()


@pytest.fixture
def daemon(tmp_path: Path):
    running = Daemon(tmp_path)
    yield running
    running.kill()


def send_tcp(port: int, data: bytes, chunk_sizes: list[int] | None = None) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not chunk_sizes:
            sock.sendall(data)
            return
        position, turn = 0, 0
        while position < len(data):
            size = chunk_sizes[turn % len(chunk_sizes)]
            sock.sendall(data[position : position + size])
            position += size
            turn += 1


def wait_until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def counts_and_sums(
    store: Store, names: list[str], start: int, end: int
) -> dict[str, tuple[float, float]]:
    store.refresh()
    found: dict[str, tuple[float, float]] = {}
    result = store.fetch(names, start - 10, end, now=end + 10, fields=("count", "sum"))
    for name, _grid, series, row in result.series():
        found[name] = (
            float(np.nansum(series.counters["count"][row])),
            float(np.nansum(series.counters["sum"][row])),
        )
    return found


def test_a_million_lines_over_concurrent_connections_arrive_exactly(daemon: Daemon) -> None:
    """Chunks of every size from 1 byte up cut lines at every position across reads."""
    assert daemon.pidfile.read_text().strip() == str(daemon.process.pid)
    now = int(time.time()) // 10 * 10
    connections, lines_each, metrics = 4, 250_000, 1000
    payloads = []
    for c in range(connections):
        payloads.append(
            b"".join(
                b"exact.c%d.m%d %d %d\n" % (c, i % metrics, i, now - 10 * (i % 3))
                for i in range(lines_each)
            )
        )
    rng = random.Random(4)
    # The first 64 KiB of each connection go out in sizes 1, 2, 3, ... (every cut position of
    # a line is met), the rest in random sizes.
    small = list(range(1, 80))
    senders = [
        threading.Thread(
            target=send_tcp,
            args=(
                daemon.ports[("line", "tcp")],
                payload,
                small * 20 + [rng.randrange(1, 70_000) for _ in range(400)],
            ),
        )
        for payload in payloads
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    names = [f"exact.c{c}.m{m}" for c in range(connections) for m in range(metrics)]
    reader = Store.open(daemon.storage, writable=False)

    def all_arrived() -> bool:
        found = counts_and_sums(reader, names, now - 20, now)
        return sum(count for count, _ in found.values()) == connections * lines_each

    wait_until(all_arrived)
    found = counts_and_sums(reader, names, now - 20, now)
    for c in range(connections):
        for m in range(metrics):
            mine = range(m, lines_each, metrics)
            assert found[f"exact.c{c}.m{m}"] == (len(mine), float(sum(mine)))
    reader.close()
    totals = daemon.stop()
    assert totals["metricsReceived"] == totals["committedPoints"] == connections * lines_each
    assert totals["badLines"] == {} and totals["dropped"] == {}
    assert not daemon.pidfile.exists()
    console = (daemon.log_dir / "console.log").read_text()
    assert "listening: line tcp 127.0.0.1:" in console


def frame(points: object) -> bytes:
    payload = pickle.dumps(points, protocol=2)
    return struct.pack("!I", len(payload)) + payload


class Forbidden:
    def __reduce__(self):
        return (print, ("never run",))


def test_every_malformed_case_is_counted_and_the_good_points_beside_it_stored(
    daemon: Daemon,
) -> None:
    now = int(time.time())
    lines = [
        b"good.line.1 1 %d" % now,
        b"missing.fields 1",
        b"just.a.name",
        b"bad.value abc %d" % now,
        b"bad.timestamp 1 yesterday",
        b"nan.value nan %d" % now,
        b"inf.value inf %d" % now,
        b"negative.timestamp 1 -5000",
        b"far.future 1 %d" % (now + 86_400),
        b"\xff\xfe.name 1 %d" % now,
        b";only=tags 1 %d" % now,
        b"long." + b"x" * 20_000 + b" 1 %d" % now,
        b"good.line.2 2 %d" % now,
        b"good.crlf 3 %d\r" % now,
        b"good.spaces   4   %d" % now,
        b"good.tagged;b=2;a=1 5 %d" % now,
        b"good.minus.one 6 -1",
    ]
    send_tcp(daemon.ports[("line", "tcp")], b"\n".join(lines) + b"\n", [1000, 7, 13])
    pickle_port = daemon.ports[("pickle", "tcp")]
    good_frame = frame([("good.pickle", (now, 7.0)), ("good.pickle", (now, 8.0))])
    forbidden = pickle.dumps([("x", (now, Forbidden()))], protocol=2)
    send_tcp(
        pickle_port,
        good_frame
        + struct.pack("!I", len(forbidden))
        + forbidden
        + frame([("bad.pickle.point", "not a pair"), ("good.pickle.2", (now, 9.0))]),
        [5, 3, 50],
    )
    # An oversized frame: the frames before it are kept, the connection is closed.
    with socket.create_connection(("127.0.0.1", pickle_port)) as sock:
        sock.sendall(
            frame([("before.oversized", (now, 10.0))]) + struct.pack("!I", 2 << 20) + b"x" * 100
        )
        sock.settimeout(30)
        try:
            assert sock.recv(10) == b""  # closed by the daemon
        except ConnectionResetError:
            pass  # closed by the daemon, with unread bytes left: a reset
    # A truncated frame: waited for across reads; the part before the cut is kept.
    cut_frame = frame([("after.truncated", (now, 11.0))])
    with socket.create_connection(("127.0.0.1", pickle_port)) as sock:
        sock.sendall(frame([("before.truncated", (now, 12.0))]) + cut_frame[:9])
        time.sleep(0.3)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp_sender = f"127.0.0.1:{udp.getsockname()[1]}"
    udp.sendto(
        b"good.udp 13 %d\nbad udp datagram line\ngood.udp 14 %d" % (now, now),
        ("127.0.0.1", daemon.ports[("line", "udp")]),
    )
    udp.close()
    good = {
        "good.line.1": (1, 1.0),
        "good.line.2": (1, 2.0),
        "good.crlf": (1, 3.0),
        "good.spaces": (1, 4.0),
        "good.tagged;a=1;b=2": (1, 5.0),
        "good.minus.one": (1, 6.0),
        "good.pickle": (2, 15.0),
        "good.pickle.2": (1, 9.0),
        "before.oversized": (1, 10.0),
        "before.truncated": (1, 12.0),
        "good.udp": (2, 27.0),
    }
    reader = Store.open(daemon.storage, writable=False)
    wait_until(lambda: len(counts_and_sums(reader, list(good), now, now + 10)) == len(good))
    assert counts_and_sums(reader, list(good), now - 10, now + 10) == {
        name: (float(c), s) for name, (c, s) in good.items()
    }
    reader.refresh()
    assert "after.truncated" not in reader and "nan.value" not in reader
    assert "far.future" not in reader and "bad.pickle.point" not in reader
    totals = daemon.stop()
    assert totals["badLines"] == {
        "missing_fields": 2,
        "extra_fields": 1,  # the UDP line of four words
        "bad_value": 1,
        "bad_timestamp": 1,
        "non_utf8_name": 1,
        "empty_name": 1,
        "line_too_long": 1,
        "bad_pickle": 1,  # the forbidden global
        "bad_pickle_point": 1,
        "frame_too_large": 1,
    }
    assert totals["rejected"] == {"nan": 1, "inf": 1, "too_far_future": 1, "too_old": 1}
    assert totals["committedPoints"] == sum(count for count, _ in good.values())
    # The self-metrics written at shutdown carry the same counts, in the store itself.
    reader.refresh()
    self_names = reader.match("carbon.agents.*.badLines.*")
    assert any(name.endswith(".badLines.frame_too_large") for name in self_names)
    reader.close()
    log = daemon.log()
    assert "bad input from 127.0.0.1:" in log
    assert f"bad input from {udp_sender} (udp " in log  # a datagram's bad line names its sender
    assert "pickle frame of 2097152 bytes exceeds" in log


def test_sigterm_under_load_keeps_every_line_it_read(daemon: Daemon) -> None:
    now = int(time.time()) // 10 * 10
    connections, metrics, per_chunk = 4, 50, 2000
    port = daemon.ports[("line", "tcp")]
    errors: list[BaseException] = []

    def keep_sending(c: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.settimeout(60)
            first = 0
            try:
                while True:
                    sock.sendall(
                        b"".join(
                            b"load.c%d.m%d %d %d\n" % (c, i % metrics, i, now)
                            for i in range(first, first + per_chunk)
                        )
                    )
                    first += per_chunk
            except (ConnectionError, OSError) as error:  # the daemon closed the connection
                if isinstance(error, TimeoutError):
                    errors.append(error)

    senders = [threading.Thread(target=keep_sending, args=(c,)) for c in range(connections)]
    for sender in senders:
        sender.start()
    time.sleep(1.5)
    totals = daemon.stop()
    for sender in senders:
        sender.join(60)
    assert not errors
    reader = Store.open(daemon.storage, writable=False)
    names = [f"load.c{c}.m{m}" for c in range(connections) for m in range(metrics)]
    found = counts_and_sums(reader, names, now, now + 10)
    reader.close()
    stored = 0
    for c in range(connections):
        # What was read from each connection is a prefix of its lines, all of it stored.
        read = int(sum(found.get(f"load.c{c}.m{m}", (0, 0))[0] for m in range(metrics)))
        assert read > 0
        for m in range(metrics):
            mine = range(m, read, metrics)
            assert found.get(f"load.c{c}.m{m}", (0.0, 0.0)) == (float(len(mine)), float(sum(mine)))
        stored += read
    assert totals["metricsReceived"] == totals["committedPoints"] == stored
    assert totals["dropped"] == {} and totals["badLines"] == {}


def test_sighup_applies_changed_schemas_to_new_metrics_without_closing_connections(
    daemon: Daemon,
) -> None:
    now = int(time.time())
    reader = Store.open(daemon.storage, writable=False)
    with socket.create_connection(("127.0.0.1", daemon.ports[("line", "tcp")])) as sock:
        sock.sendall(b"hup.old 1 %d\n" % now)
        wait_until(lambda: reader.refresh() or "hup.old" in reader)
        (daemon.root / "storage-schemas.conf").write_text(
            "[hup]\npattern = ^hup\\.new\nretentions = 1m:2d\n\n" + SCHEMAS
        )
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log("reloaded storage rules")
        sock.sendall(b"hup.new 2 %d\nhup.old 3 %d\n" % (now, now))
        wait_until(lambda: reader.refresh() or "hup.new" in reader)
    assert reader.info("hup.new").layout.archives[0].step == 60
    assert reader.info("hup.old").layout.archives[0].step == 10
    wait_until(lambda: counts_and_sums(reader, ["hup.old"], now, now + 10)["hup.old"][0] == 2)
    # SIGUSR1 writes the self-metrics at once.
    daemon.process.send_signal(signal.SIGUSR1)
    wait_until(lambda: reader.refresh() or bool(reader.match("carbon.agents.*.metricsReceived")))
    reader.close()
    totals = daemon.stop(signal.SIGINT)
    assert totals["committedPoints"] == 3


def test_a_broken_schema_on_sighup_keeps_the_old_rules(daemon: Daemon) -> None:
    (daemon.root / "storage-schemas.conf").write_text("[broken]\npattern = (\nretentions = x\n")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for_log("storage rules not reloaded")
    now = int(time.time())
    send_tcp(daemon.ports[("line", "tcp")], b"after.broken 1 %d\n" % now)
    reader = Store.open(daemon.storage, writable=False)
    wait_until(lambda: reader.refresh() or "after.broken" in reader)
    assert reader.info("after.broken").layout.archives[0].step == 10
    reader.close()
    daemon.stop()


def test_a_second_daemon_on_the_same_storage_fails_with_a_message(daemon: Daemon) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "graphite_istat.cli", "serve", "--config", str(daemon.conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert f"already open for writing by pid {daemon.process.pid}" in result.stderr
    daemon.stop()
