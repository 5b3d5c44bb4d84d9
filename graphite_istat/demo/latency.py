"""A synthetic request-latency metric: many requests per bucket, mostly fast, a few slow.

Each interval brings a few hundred "requests" spread over it, log-normally
distributed around a slowly drifting median, with rare spikes ten to fifty
times slower: the avg, min, max and stddev sub-counters then tell visibly
different stories, which is what graphite-istat keeps and whisper loses.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass
class LatencyGenerator:
    """Points ``(timestamp, milliseconds)`` for one interval of synthetic traffic."""

    requests_per_interval: int = 300
    spike_probability: float = 0.004
    rng: random.Random = field(default_factory=random.Random)

    def points(self, start: float, interval: float) -> list[tuple[float, float]]:
        # Traffic and median latency follow a ten-minute wave.
        phase = math.sin(2 * math.pi * (start % 600) / 600)
        median_ms = 20.0 * (1.0 + 0.3 * phase)
        n = max(1, int(self.requests_per_interval * (1.0 + 0.5 * phase)))
        out = []
        for _ in range(n):
            latency = self.rng.lognormvariate(math.log(median_ms), 0.35)
            if self.rng.random() < self.spike_probability:
                latency *= self.rng.uniform(10.0, 50.0)
            out.append((start + self.rng.uniform(0.0, interval), latency))
        return out
