"""The demo's feeder: every interval, this host's figures and a burst of synthetic latencies."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from .host_metrics import HostSampler
from .latency import LatencyGenerator
from .sinks import Sink, SinkError

LATENCY_METRIC = "app.request_latency_ms"
logger = logging.getLogger(__name__)


@dataclass
class Feeder:
    """Samples and sends every ``interval`` seconds until ``stop`` is set (run it in a thread)."""

    sink: Sink
    prefix: str
    interval: float
    sampler: HostSampler = field(default_factory=HostSampler)
    latency: LatencyGenerator = field(default_factory=LatencyGenerator)
    sent: int = 0
    failed_sends: int = 0

    def feed_once(self, now: float) -> None:
        points = [(f"{self.prefix}.host.{name}", now, value) for name, value in self.sampler.sample(now)]
        name = f"{self.prefix}.{LATENCY_METRIC}"
        points += [(name, t, ms) for t, ms in self.latency.points(now - self.interval, self.interval)]
        try:
            self.sink.send(points)
            self.sent += len(points)
        except SinkError as e:
            self.failed_sends += 1
            logger.warning("feeder: %s", e)

    def run(self, stop: threading.Event) -> None:
        next_time = time.time()
        while not stop.is_set():
            self.feed_once(time.time())
            next_time += self.interval
            stop.wait(max(0.0, next_time - time.time()))
