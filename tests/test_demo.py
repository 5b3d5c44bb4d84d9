"""``python -m graphite_istat.demo``: starts, serves live graphs of this host, stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from graphite_istat.demo.host_metrics import HostSampler
from graphite_istat.demo.latency import LatencyGenerator
from graphite_istat.store.store import Store

STARTUP_TIMEOUT = 120.0


class Demo:
    """The demo as a child process, its printed lines collected by a thread."""

    def __init__(self, storage: Path, cwd: Path) -> None:
        command = [sys.executable, "-m", "graphite_istat.demo", "--storage-dir", str(storage),
                   "--http-port", "0", "--line-port", "0", "--interval", "1"]
        self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str) -> re.Match:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r}; output so far:\n{''.join(self.output)}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return response.read()


@pytest.fixture
def demo(tmp_path: Path):
    running = Demo(tmp_path / "demo-storage", tmp_path)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def test_the_demo_serves_live_sub_counters_and_stops_cleanly_on_ctrl_c(demo: Demo, tmp_path: Path):
    base = demo.wait_for(r"composer: (http://127\.0\.0\.1:\d+)/").group(1)
    envelope = demo.wait_for(r"latency envelope: +(\S+)").group(1)
    metric = re.search(r"target=alias%28color%28(demo\.[^%]+?)\.max", envelope).group(1)

    # the feeder keeps writing: wait until two buckets of latency are in
    query = urlencode({"target": [f"{metric}.count", f"{metric}.min", f"{metric}.max"], "format": "json", "from": "-1min"}, doseq=True)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        series = {s["target"]: [v for v, _ in s["datapoints"]] for s in json.loads(get(f"{base}/render?{query}"))}
        counts = [c for c in series.get(f"{metric}.count", []) if c]
        if len(counts) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(counts) >= 3, series
    # The newest bucket may still be arriving (points become readable within a
    # second, not all at once), so it alone may hold a single point so far.
    lows = [v for v in series[f"{metric}.min"] if v is not None][:-1]
    highs = [v for v in series[f"{metric}.max"] if v is not None][:-1]
    assert lows and all(lo < hi for lo, hi in zip(lows, highs, strict=True))  # many points per bucket

    assert get(envelope)[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"graphite" in get(f"{base}/dashboard/").lower()
    assert len(get(f"{base}/static/js/ext/ext-all.js")) > 100_000
    hosts = json.loads(get(f"{base}/metrics/find?{urlencode({'query': metric.rsplit('.', 2)[0] + '.host.*'})}"))
    assert {n["text"] for n in hosts} >= {"load", "memory"}

    # a second demo on the same folder cannot become a second writer
    second = subprocess.run(
        [sys.executable, "-m", "graphite_istat.demo", "--storage-dir", str(tmp_path / "demo-storage"),
         "--http-port", "0", "--line-port", "0", "--interval", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert second.returncode == 1 and "another process" in second.stderr

    assert demo.stop() == 0
    rest = "".join(demo.output) + "".join(_drain(demo.lines))
    assert "stopped;" in rest and "Traceback" not in rest

    # the storage folder stays, ready for the next run
    with Store.open(tmp_path / "demo-storage" / "istat", writable=False) as store:
        assert f"{metric}" in store
        assert store.match(metric.rsplit(".", 2)[0] + ".host.load.*")


def _drain(lines: queue.Queue[str]) -> list[str]:
    out = []
    while True:
        try:
            out.append(lines.get(timeout=2.0))
        except queue.Empty:
            return out


def test_host_sampler_reads_proc_and_turns_counters_into_rates(tmp_path: Path):
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "loadavg").write_text("0.50 0.40 0.30 1/100 42\n")
    (proc / "meminfo").write_text("MemTotal:  1000 kB\nMemAvailable:  600 kB\n")
    (proc / "diskstats").write_text("   8  0 sda 10 0 100 0 20 0 200 0 0 0 0\n   7  0 loop0 1 0 1 0 1 0 1 0 0 0 0\n")
    (proc / "net" / "dev").write_text("h1\nh2\n  eth0: 1000 1 0 0 0 0 0 0 500 1 0 0 0 0 0 0\n")
    (proc / "stat").write_text("cpu  100 0 100 800 0 0 0 0\n")
    sampler = HostSampler(proc)
    first = dict(sampler.sample(1000.0))
    assert first == {"load.1min": 0.5, "load.5min": 0.4, "load.15min": 0.3,
                     "memory.total_bytes": 1024000.0, "memory.available_bytes": 614400.0}
    (proc / "diskstats").write_text("   8  0 sda 10 0 300 0 20 0 200 0 0 0 0\n")
    (proc / "net" / "dev").write_text("h1\nh2\n  eth0: 3000 1 0 0 0 0 0 0 500 1 0 0 0 0 0 0\n")
    (proc / "stat").write_text("cpu  150 0 150 900 0 0 0 0\n")
    second = dict(sampler.sample(1010.0))
    assert second["disk.sda.read_bytes_per_second"] == 200 * 512 / 10
    assert second["disk.sda.write_bytes_per_second"] == 0.0
    assert second["net.eth0.rx_bytes_per_second"] == 200.0
    assert second["cpu.user_percent"] == 25.0 and second["cpu.idle_percent"] == 50.0
    assert not any(k.startswith("disk.loop") for k in second)


def test_latency_points_spread_over_the_interval_with_distinct_min_and_max():
    points = LatencyGenerator().points(1000.0, 10.0)
    assert len(points) > 100
    assert all(1000.0 <= t < 1010.0 for t, _ in points)
    values = [v for _, v in points]
    assert min(values) > 0 and max(values) > 1.5 * min(values)
