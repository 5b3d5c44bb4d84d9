"""Stock carbon 1.1.10 processes storing into graphite-istat: carbon-cache and carbon-relay.

``graphite-istat carbon-cache`` runs carbon's own carbon-cache with
``DATABASE = istat``; points go in over carbon's plaintext and pickle
protocols (and through a stock consistent-hashing carbon-relay) and are read
back by a separate read-only store, by the finder and by graphite-web.
Every process a test starts is stopped by its pid when the test ends.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from graphite_site import Site, graphite_site  # noqa: F401 - the fixture

from graphite_istat.cli.carbon_cache import carbon_script
from graphite_istat.store.store import Store

T = TypeVar("T")
STEP = 10
SCHEMAS = """\
[default]
pattern = .*
retentions = 10s:6h,1m:7d
"""
AGGREGATION = """\
[sums]
pattern = \\.hits$
xFilesFactor = 0
aggregationMethod = sum

[default]
pattern = .*
xFilesFactor = 0
aggregationMethod = average
"""
CACHE_SETTINGS = """\
[cache]
DATABASE = istat
STORAGE_DIR = {storage}
PID_DIR = {storage}/run
LOG_DIR = {storage}/log
LINE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = 0
ENABLE_UDP_LISTENER = False
ENABLE_TAGS = False
MAX_CREATES_PER_MINUTE = inf
"""
INSTANCE_SETTINGS = """
[cache:{instance}]
LINE_RECEIVER_PORT = {line_port}
PICKLE_RECEIVER_PORT = {pickle_port}
ISTAT_STORAGE_DIR = {storage_dir}
"""
RELAY_SETTINGS = """
[relay]
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle_port}
RELAY_METHOD = consistent-hashing
DESTINATIONS = {destinations}
"""
START_TIMEOUT = 30.0
DATA_TIMEOUT = 20.0


def free_port() -> int:
    """A port nothing listens on now (carbon does not report what port 0 became)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DATA_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class CarbonInstance:
    name: str
    line_port: int
    pickle_port: int
    storage_dir: Path


@dataclass
class CarbonProcess:
    process: subprocess.Popen[bytes]
    output: Path

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def errors(self) -> list[str]:
        """Lines where carbon reports a failure (a write, a create, any traceback)."""
        return [line for line in self.log().splitlines() if "Error" in line or "Traceback" in line]

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"carbon exited with {self.process.returncode}:\n{self.log()}")


class CarbonSite:
    """A carbon.conf in tmp_path with cache instances (and a relay), and the processes started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf_dir = root / "conf"
        self.conf_dir.mkdir()
        (self.conf_dir / "storage-schemas.conf").write_text(SCHEMAS)
        (self.conf_dir / "storage-aggregation.conf").write_text(AGGREGATION)
        self.storage = root / "storage"
        self.instances: dict[str, CarbonInstance] = {}
        self.relay_ports: tuple[int, int] | None = None
        self.processes: list[CarbonProcess] = []

    @property
    def carbon_conf(self) -> Path:
        return self.conf_dir / "carbon.conf"

    def add_instance(self, name: str, storage_dir: Path | None = None) -> CarbonInstance:
        instance = CarbonInstance(
            name, free_port(), free_port(), storage_dir or self.storage / f"istat-{name}"
        )
        self.instances[name] = instance
        self._write_conf()
        return instance

    def add_relay(self) -> int:
        self.relay_ports = (free_port(), free_port())
        self._write_conf()
        return self.relay_ports[0]

    def _write_conf(self) -> None:
        text = CACHE_SETTINGS.format(storage=self.storage)
        for instance in self.instances.values():
            text += INSTANCE_SETTINGS.format(
                instance=instance.name,
                line_port=instance.line_port,
                pickle_port=instance.pickle_port,
                storage_dir=instance.storage_dir,
            )
        if self.relay_ports is not None:
            destinations = ", ".join(
                f"127.0.0.1:{i.pickle_port}:{i.name}" for i in self.instances.values()
            )
            text += RELAY_SETTINGS.format(
                line_port=self.relay_ports[0],
                pickle_port=self.relay_ports[1],
                destinations=destinations,
            )
        self.carbon_conf.write_text(text)

    def cache_command(self, *arguments: str) -> list[str]:
        return [sys.executable, "-m", "graphite_istat.cli", "carbon-cache", *arguments]

    def spawn(self, command: list[str], label: str) -> CarbonProcess:
        output = self.root / f"{label}.out"
        with open(output, "wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        started = CarbonProcess(process, output)
        self.processes.append(started)
        return started

    def start_cache(self, name: str) -> CarbonProcess:
        command = self.cache_command(
            "--debug", "--config", str(self.carbon_conf), "--instance", name, "start"
        )
        started = self.spawn(command, f"cache-{name}")
        # carbon opens its listeners one after the other: wait for every one the tests use
        wait_listening(self.instances[name].line_port, started.check_running)
        wait_listening(self.instances[name].pickle_port, started.check_running)
        return started

    def start_relay(self) -> CarbonProcess:
        assert self.relay_ports is not None
        script = carbon_script().with_name("carbon-relay.py")
        command = [
            sys.executable,
            str(script),
            "--debug",
            "--config",
            str(self.carbon_conf),
            "start",
        ]
        started = self.spawn(command, "relay")
        for port in self.relay_ports:
            wait_listening(port, started.check_running)
        return started

    def stop_all(self) -> None:
        for started in self.processes:
            if started.process.poll() is None:
                started.process.send_signal(signal.SIGTERM)
        for started in self.processes:
            try:
                started.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                started.process.kill()
                started.process.wait()


def wait_listening(port: int, check_running: Callable[[], None]) -> None:
    """Wait until something accepts connections on ``port``; ``check_running`` raises if it died."""

    def listening() -> bool | None:
        check_running()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return None
        return True

    wait_for(f"carbon listening on {port}", listening, START_TIMEOUT)


@pytest.fixture
def carbon_site(tmp_path: Path) -> Iterator[CarbonSite]:
    site = CarbonSite(tmp_path)
    yield site
    site.stop_all()


def send_plaintext(port: int, lines: list[str]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall("".join(f"{line}\n" for line in lines).encode())


def send_pickle(port: int, points: list[tuple[str, tuple[int, float]]]) -> None:
    payload = pickle.dumps(points, protocol=2)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(struct.pack("!L", len(payload)) + payload)


def store_created(storage_dir: Path) -> bool:
    # The writer creates store.json before its name index: a reader needs both.
    return (storage_dir / "store.json").exists() and (storage_dir / "names.log").exists()


def stored_names(storage_dir: Path) -> set[str] | None:
    if not store_created(storage_dir):
        return None
    with Store.open(storage_dir, writable=False) as reader:
        return set(reader.match("**"))


def bucket_stats(storage_dir: Path, name: str, bucket: int) -> dict[str, float] | None:
    """count, sum, min, max and avg of one finest bucket; None until the metric is there."""
    if not store_created(storage_dir):
        return None
    with Store.open(storage_dir, writable=False) as reader:
        if name not in reader:
            return None
        stats = {}
        for stat in ("count", "sum", "min", "max", "avg"):
            result = reader.fetch_stat(name, bucket - 1, bucket + 1, stat=stat)
            assert result is not None
            grid, values = result
            stats[stat] = float(values[list(grid.buckets()).index(bucket)])
    return stats


def stats_once_counted(storage_dir: Path, name: str, bucket: int, count: int) -> dict[str, float]:
    def probe() -> dict[str, float] | None:
        stats = bucket_stats(storage_dir, name, bucket)
        return stats if stats is not None and stats["count"] == count else None

    return wait_for(f"{count} points of {name}", probe)


def past_bucket(back: int = 3) -> int:
    now = int(time.time())
    return now - now % STEP - back * STEP


# -- carbon-cache ------------------------------------------------------------------


def test_carbon_cache_stores_plaintext_and_pickle_points(
    carbon_site: CarbonSite,
    graphite_site: Site,  # noqa: F811
):
    # The cache writes where the graphite-web site's finder reads.
    storage_dir = graphite_site.config.istat_storage_dir
    carbon_site.add_instance("a", storage_dir=storage_dir)
    cache = carbon_site.start_cache("a")
    bucket = past_bucket()
    send_plaintext(
        carbon_site.instances["a"].line_port,
        [
            f"carbontest.plain.latency 1.0 {bucket}",
            f"carbontest.plain.latency 5.0 {bucket + 3}",
            f"carbontest.plain.latency 3.0 {bucket + 7}",
            f"carbontest.plain.hits 4 {bucket + 1}",
            f"carbontest.plain.hits 6 {bucket + 2}",
        ],
    )
    send_pickle(
        carbon_site.instances["a"].pickle_port,
        [
            ("carbontest.pickled.latency", (bucket + 1, 2.0)),
            ("carbontest.pickled.latency", (bucket + 2, 8.0)),
            ("carbontest.pickled.latency;host=web1;dc=eu", (bucket + 4, 0.5)),
        ],
    )

    latency = stats_once_counted(storage_dir, "carbontest.plain.latency", bucket, 3)
    assert latency == {"count": 3, "sum": 9.0, "min": 1.0, "max": 5.0, "avg": 3.0}
    hits = stats_once_counted(storage_dir, "carbontest.plain.hits", bucket, 2)
    assert (hits["sum"], hits["max"]) == (10.0, 6.0)
    pickled = stats_once_counted(storage_dir, "carbontest.pickled.latency", bucket, 2)
    assert (pickled["min"], pickled["max"], pickled["avg"]) == (2.0, 8.0, 5.0)
    # carbon normalises a tagged name (tags sorted) before the plugin sees it.
    tagged = stats_once_counted(
        storage_dir, "carbontest.pickled.latency;dc=eu;host=web1", bucket, 1
    )
    assert tagged["sum"] == 0.5

    with Store.open(storage_dir, writable=False) as reader:
        hits_info = reader.info("carbontest.plain.hits")
    assert [(a.step, a.rows) for a in hits_info.layout.archives] == [(10, 2160), (60, 10080)]
    assert hits_info.aggregation_method == "sum"

    # And through graphite-web: /render of the metric and of its sub-counters.
    response = graphite_site.client().get(
        "/render",
        {
            "target": ["carbontest.plain.latency", "carbontest.plain.latency.max"],
            "from": str(bucket - STEP),
            "until": str(bucket + STEP - 1),
            "format": "json",
        },
    )
    assert response.status_code == 200, response.content
    rendered = {
        s["target"]: dict((t, v) for v, t in s["datapoints"]) for s in json.loads(response.content)
    }
    assert rendered["carbontest.plain.latency"][bucket] == 3.0
    assert rendered["carbontest.plain.latency.max"][bucket] == 5.0
    assert "istat: storing into" in cache.log()
    assert cache.errors() == []


def test_second_cache_on_the_same_storage_directory_stops(carbon_site: CarbonSite, tmp_path: Path):
    shared = tmp_path / "shared"
    carbon_site.add_instance("a", storage_dir=shared)
    carbon_site.add_instance("b", storage_dir=shared)
    carbon_site.start_cache("a")
    command = carbon_site.cache_command(
        "--debug", "--config", str(carbon_site.carbon_conf), "--instance", "b", "start"
    )
    second = carbon_site.spawn(command, "cache-b")
    second.process.wait(timeout=START_TIMEOUT)
    assert second.process.returncode == 1
    assert "already open for writing" in second.log()


def test_daemon_start_and_stop_through_the_pid_file(carbon_site: CarbonSite):
    instance = carbon_site.add_instance("a")
    conf = str(carbon_site.carbon_conf)
    pid_file = carbon_site.storage / "run" / "carbon-cache-a.pid"
    started = subprocess.run(
        carbon_site.cache_command("--config", conf, "start"),
        check=False,
        capture_output=True,
        timeout=60,
    )
    assert started.returncode == 0, started
    pid = wait_for("the pid file", lambda: int(pid_file.read_text()) if pid_file.exists() else None)
    try:
        wait_listening(
            instance.line_port, lambda: None if pid_alive(pid) else pytest.fail("daemon died")
        )
        bucket = past_bucket()
        send_plaintext(instance.line_port, [f"daemon.metric 2.5 {bucket}"])
        stats_once_counted(instance.storage_dir, "daemon.metric", bucket, 1)

        # `stop` constructs the plugin too: it must not need the store the daemon holds.
        stopped = subprocess.run(
            carbon_site.cache_command("--config", conf, "stop"),
            check=False,
            capture_output=True,
            timeout=60,
        )
        assert stopped.returncode == 0, stopped
        wait_for("the daemon to exit", lambda: None if pid_alive(pid) else True)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    console_log = carbon_site.storage / "log" / "carbon-cache-a" / "console.log"
    assert "istat: closed" in console_log.read_text()
    # The writer lock is free and the point is there.
    with Store.open(instance.storage_dir, writable=False) as reader:
        assert "daemon.metric" in reader
    stats = bucket_stats(instance.storage_dir, "daemon.metric", bucket)
    assert stats is not None and stats["sum"] == 2.5


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- carbon-relay ----------------------------------------------------------------------


def test_consistent_hashing_relay_spreads_metrics_over_two_caches(
    carbon_site: CarbonSite,
    graphite_site: Site,  # noqa: F811  (graphite-web configured for the finder)
):
    from carbon.hashing import ConsistentHashRing

    from graphite_istat.finder import IstatFinder

    for name in ("a", "b"):
        carbon_site.add_instance(name)
    relay_port = carbon_site.add_relay()
    caches = [carbon_site.start_cache(name) for name in ("a", "b")]
    relay = carbon_site.start_relay()

    bucket = past_bucket()
    metrics = [f"relayed.host{i:02d}.cpu" for i in range(40)]
    send_plaintext(relay_port, [f"{m} {i} {bucket + 1}" for i, m in enumerate(metrics)])

    def all_stored() -> dict[str, set[str]] | None:
        stored = {n: stored_names(i.storage_dir) or set() for n, i in carbon_site.instances.items()}
        return stored if set().union(*stored.values()) >= set(metrics) else None

    stored = wait_for("every relayed metric", all_stored)
    assert stored["a"] & stored["b"] == set()
    assert stored["a"] and stored["b"]
    # Each metric is where carbon's hash ring puts it.
    ring = ConsistentHashRing([("127.0.0.1", "a"), ("127.0.0.1", "b")])
    for metric in metrics:
        assert metric in stored[ring.get_node(metric)[1]]

    # Read back through the finder, one per storage directory.
    values: dict[str, float] = {}
    for instance in carbon_site.instances.values():
        finder = IstatFinder(instance.storage_dir)
        try:
            for series in finder.fetch(["relayed.*.cpu"], bucket - STEP, bucket + STEP):
                step_start = series["time_info"][0]
                step = series["time_info"][2]
                values[series["path"]] = series["values"][(bucket - step_start) // step]
        finally:
            finder.close()
    assert values == {m: float(i) for i, m in enumerate(metrics)}
    assert [p.errors() for p in (*caches, relay)] == [[], [], []]
