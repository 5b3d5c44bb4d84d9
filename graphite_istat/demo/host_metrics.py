"""This host's load, CPU, memory, disk and network figures, read from /proc.

Counters that only grow (CPU jiffies, bytes read, bytes sent) become rates:
the sampler keeps the previous reading, so the first sample has no rates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SECTOR_BYTES = 512
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_MEMORY_FIELDS = {"MemTotal": "total", "MemFree": "free", "MemAvailable": "available", "Cached": "cached",
                  "Buffers": "buffers", "SwapFree": "swap_free"}


def metric_level(text: str) -> str:
    """``text`` made safe as one level of a Graphite path."""
    return _NAME_UNSAFE.sub("_", text) or "_"


@dataclass
class HostSampler:
    """Samples /proc (``proc`` is the mount point, for tests) into (name suffix, value) pairs."""

    proc: Path = Path("/proc")
    _previous: dict[str, float] = field(default_factory=dict)
    _previous_time: float | None = None

    def sample(self, now: float) -> list[tuple[str, float]]:
        gauges = self._load() + self._memory()
        counters = self._cpu() + self._disks() + self._network()
        rates = self._rates(counters, now)
        return gauges + rates

    def _rates(self, counters: list[tuple[str, float]], now: float) -> list[tuple[str, float]]:
        rates = []
        elapsed = None if self._previous_time is None else now - self._previous_time
        current = dict(counters)
        if elapsed and elapsed > 0:
            cpu_total = sum(current.get(f"cpu.{f}", 0.0) - self._previous.get(f"cpu.{f}", 0.0) for f in _CPU_FIELDS)
            for name, value in counters:
                before = self._previous.get(name)
                if before is None or value < before:  # new, or a counter reset
                    continue
                if name.startswith("cpu."):
                    if cpu_total > 0:
                        rates.append((f"{name}_percent", 100.0 * (value - before) / cpu_total))
                else:
                    rates.append((f"{name}_per_second", (value - before) / elapsed))
        self._previous, self._previous_time = current, now
        return rates

    def _read(self, name: str) -> str:
        try:
            return (self.proc / name).read_text()
        except OSError:
            return ""

    def _load(self) -> list[tuple[str, float]]:
        parts = self._read("loadavg").split()
        if len(parts) < 3:
            return []
        return [("load.1min", float(parts[0])), ("load.5min", float(parts[1])), ("load.15min", float(parts[2]))]

    def _memory(self) -> list[tuple[str, float]]:
        out = []
        for line in self._read("meminfo").splitlines():
            key, _, rest = line.partition(":")
            if key in _MEMORY_FIELDS and rest.split():
                out.append((f"memory.{_MEMORY_FIELDS[key]}_bytes", float(rest.split()[0]) * 1024))
        return out

    def _cpu(self) -> list[tuple[str, float]]:
        for line in self._read("stat").splitlines():
            parts = line.split()
            if parts and parts[0] == "cpu":
                return [(f"cpu.{f}", float(v)) for f, v in zip(_CPU_FIELDS, parts[1:], strict=False)]
        return []

    def _disks(self) -> list[tuple[str, float]]:
        out = []
        for line in self._read("diskstats").splitlines():
            parts = line.split()
            if len(parts) < 10 or parts[2].startswith(("loop", "ram")):
                continue
            device = metric_level(parts[2])
            out.append((f"disk.{device}.read_bytes", float(parts[5]) * SECTOR_BYTES))
            out.append((f"disk.{device}.write_bytes", float(parts[9]) * SECTOR_BYTES))
        return out

    def _network(self) -> list[tuple[str, float]]:
        out = []
        for line in self._read("net/dev").splitlines()[2:]:
            interface, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) < 9:
                continue
            name = metric_level(interface.strip())
            out.append((f"net.{name}.rx_bytes", float(parts[0])))
            out.append((f"net.{name}.tx_bytes", float(parts[8])))
        return out
