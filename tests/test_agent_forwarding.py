"""The agent as a user runs it: every input protocol, several servers by carbon_ch, plaintext to
a carbon-style listener, its self-metrics, and its command line."""

from __future__ import annotations

import pickle
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from carbon.hashing import ConsistentHashRing
from test_agent_processes import (
    METRICS,
    Agent,
    Server,
    expected,
    lines,
    send,
    stored,
    stored_total,
)
from test_receiver_daemon import wait_until

from graphite_istat.store.store import Store


def stamp_now() -> int:
    return int(time.time()) // 10 * 10 - 20


def test_pickle_udp_and_bad_lines_go_through_the_receivers_parsers(tmp_path: Path) -> None:
    stamp = stamp_now()
    server = Server(tmp_path / "server")
    agent = Agent(tmp_path / "agent", f"127.0.0.1:{server.ack_port}")
    try:
        send(agent.ports[("line", "tcp")], lines(0, 1000, stamp) + b"not a line\nx y z\n")
        payload = pickle.dumps(
            [(f"agent.m{i % METRICS}", (stamp, float(i))) for i in range(1000, 2000)], protocol=2
        )
        send(agent.ports[("pickle", "tcp")], struct.pack("!L", len(payload)) + payload)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for first in range(2000, 3000, 100):
                udp.sendto(lines(first, 100, stamp), ("127.0.0.1", agent.ports[("line", "udp")]))
        wait_until(lambda: stored_total(server.storage, stamp) >= 3000)
        assert stored(server.storage, stamp) == expected(range(3000))
        totals = agent.stop()
        assert totals["metricsReceived"] == totals["acknowledged"] == 3000
        assert sum(totals["badLines"].values()) == 2
        assert "bad input from" in agent.log()
    finally:
        agent.kill()
        server.kill()


def test_several_servers_get_the_metrics_carbon_relay_would_send_them(tmp_path: Path) -> None:
    stamp = stamp_now()
    servers = [Server(tmp_path / f"server{i}") for i in range(3)]
    destinations = ", ".join(
        f"127.0.0.1:{s.ack_port}:{name}" for s, name in zip(servers, "abc", strict=True)
    )
    agent = Agent(tmp_path / "agent", destinations)
    total = 30_000
    try:
        send(agent.ports[("line", "tcp")], lines(0, total, stamp))
        wait_until(lambda: sum(stored_total(s.storage, stamp) for s in servers) >= total)
        ring = ConsistentHashRing([("127.0.0.1", name) for name in "abc"], hash_type="carbon_ch")
        everything = expected(range(total))
        for server, name in zip(servers, "abc", strict=True):
            mine = {
                metric: value
                for metric, value in everything.items()
                if ring.get_node(metric) == ("127.0.0.1", name)
            }
            assert mine, "each server has a share"
            assert stored(server.storage, stamp) == mine
        assert agent.stop()["acknowledged"] == total
    finally:
        agent.kill()
        for server in servers:
            server.kill()


def test_plaintext_forwarding_to_a_carbon_line_receiver(tmp_path: Path) -> None:
    stamp = stamp_now()
    server = Server(tmp_path / "server")
    listening = server.daemon.log().split("listening: line tcp ", 1)[1]
    line_port = int(listening.split()[0].rsplit(":", 1)[1])
    agent = Agent(
        tmp_path / "agent", f"127.0.0.1:{line_port}", "DESTINATION_PROTOCOL = plaintext\n"
    )
    try:
        send(agent.ports[("line", "tcp")], lines(0, 20_000, stamp))
        wait_until(lambda: stored_total(server.storage, stamp) >= 20_000)
        assert stored(server.storage, stamp) == expected(range(20_000))
        totals = agent.stop()
        assert totals["acknowledged"] == totals["forwarded"] == 20_000
        assert not any((agent.spool_dir).glob("*/*.seg")), "delivered batches leave the spool"
    finally:
        agent.kill()
        server.kill()


def test_self_metrics_arrive_under_carbon_agents(tmp_path: Path) -> None:
    stamp = stamp_now()
    server = Server(tmp_path / "server")
    agent = Agent(
        tmp_path / "agent", f"127.0.0.1:{server.ack_port}", "CARBON_METRIC_INTERVAL = 1\n"
    )
    try:
        send(agent.ports[("line", "tcp")], lines(0, 500, stamp) + b"bad\n")
        prefix = "carbon.agents.test-agent."
        wanted = [
            prefix + name
            for name in (
                "metricsReceived",
                "spooled",
                "acknowledged",
                "forwarded",
                "spoolBytes",
                "badLines.missing_fields",
            )
        ]

        def reported() -> dict[str, float]:
            reader = Store.open(server.storage, writable=False)
            try:
                now = int(time.time())
                found = {}
                result = reader.fetch(
                    [n for n in wanted if n in reader], now - 300, now, fields=("sum",)
                )
                for name, _grid, series, row in result.series():
                    found[name] = float(np.nansum(series.counters["sum"][row]))
                return found
            finally:
                reader.close()

        wait_until(
            lambda: len(reported()) == len(wanted) and reported()[prefix + "acknowledged"] >= 500,
            timeout=60,
        )
        found = reported()
        assert found[prefix + "metricsReceived"] >= 500
        assert found[prefix + "badLines.missing_fields"] == 1
    finally:
        agent.kill()
        server.kill()


def test_the_command_needs_a_configuration(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "graphite_istat.cli", "agent"]
    missing = subprocess.run(run, capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "needs --config" in missing.stderr
    conf = tmp_path / "agent.conf"
    conf.write_text("[agent]\nSPOOL_DIR = spool\n")
    broken = subprocess.run(
        [*run, "--config", str(conf)], capture_output=True, text=True, check=False
    )
    assert broken.returncode == 2 and "DESTINATIONS" in broken.stderr
    conf.write_text("[agent]\nSPOOL_DIR = spool\nDESTINATIONS = 127.0.0.1:99999\n")
    bad_port = subprocess.run(
        [*run, "--config", str(conf)], capture_output=True, text=True, check=False
    )
    assert bad_port.returncode == 2 and ":3: DESTINATIONS" in bad_port.stderr
