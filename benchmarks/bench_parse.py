"""Throughput of the wire-protocol decoders: plaintext lines/s and pickle points/s.

Run with ``python benchmarks/bench_parse.py [--lines N]``; prints one table.
Each figure is the best of a few runs on one core's worth of work.
"""

from __future__ import annotations

import argparse
import pickle
import random
import time
from collections.abc import Callable

from graphite_istat.protocol.pickle_frames import PickleDecoder
from graphite_istat.protocol.plaintext import PlaintextDecoder, parse_lines, parse_lines_slowly

NOW = 1_700_000_000
MALFORMED = [
    b"only.two 1",
    b"too.many 1 2 3",
    b"bad.value abc 1700000000",
    b"bad.timestamp 1 yesterday",
    b"\xffbad.name 1 1700000000",
    b"bad.tags;=x 1 1700000000",
    b"double.space  1 1700000000",
    b"tab.separated\t1\t1700000000",
]


def metric_names(distinct: int) -> list[bytes]:
    return [f"servers.host{i // 20:05d}.cpu.core{i % 20}.user".encode() for i in range(distinct)]


def plaintext(lines: int, distinct: int, malformed_share: float, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    names = metric_names(distinct)
    out = []
    for i in range(lines):
        if malformed_share and rng.random() < malformed_share:
            out.append(rng.choice(MALFORMED))
            continue
        kind = i % 3
        value = str(rng.randint(0, 100000)) if kind == 0 else f"{rng.random() * 1000:.{kind * 3}f}"
        out.append(b"%s %s %d" % (names[rng.randrange(distinct)], value.encode(), NOW + i // 1000))
    return b"\n".join(out) + b"\n"


def pickle_frames(points: int, distinct: int, per_frame: int = 500, protocol: int = 2) -> bytes:
    rng = random.Random(2)
    names = [n.decode() for n in metric_names(distinct)]
    frames = []
    for first in range(0, points, per_frame):
        batch = [
            (names[rng.randrange(distinct)], (NOW + i // 1000, rng.random() * 1000))
            for i in range(first, min(points, first + per_frame))
        ]
        payload = pickle.dumps(batch, protocol=protocol)
        frames.append(len(payload).to_bytes(4, "big") + payload)
    return b"".join(frames)


def best_seconds(run: Callable[[], int], repeat: int) -> tuple[float, float, int]:
    """Best wall-clock and best CPU seconds (all threads) of ``repeat`` runs, and the points made."""
    best_wall, best_cpu, count = float("inf"), float("inf"), 0
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        count = run()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_wall, best_cpu, count


def fed_in_chunks(data: bytes, chunk_size: int) -> Callable[[], int]:
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]

    def run() -> int:
        decoder = PlaintextDecoder()
        points = sum(len(decoder.feed(chunk, NOW).batch) for chunk in chunks)
        return points + len(decoder.finish(NOW).batch)

    return run


def pickle_in_chunks(data: bytes, chunk_size: int) -> Callable[[], int]:
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]

    def run() -> int:
        decoder = PickleDecoder()
        return sum(len(decoder.feed(chunk, NOW).batch) for chunk in chunks)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.lines
    clean_10k = plaintext(n, 10_000, 0.0)
    clean_100k = plaintext(n, 100_000, 0.0)
    dirty_10k = plaintext(n, 10_000, 0.01)
    pickled = pickle_frames(n, 10_000)
    tenth = clean_10k[: clean_10k.rfind(b"\n", 0, len(clean_10k) // 10) + 1]
    cases: list[tuple[str, int, Callable[[], int]]] = [
        ("plaintext, 10k names, one buffer", n, lambda: len(parse_lines(clean_10k, NOW).batch)),
        ("plaintext, 100k names, one buffer", n, lambda: len(parse_lines(clean_100k, NOW).batch)),
        ("plaintext, 10k names, 1% malformed", n, lambda: len(parse_lines(dirty_10k, NOW).batch)),
        ("plaintext, 10k names, 1 MiB feeds", n, fed_in_chunks(clean_10k, 1 << 20)),
        ("plaintext, 10k names, 256 KiB feeds", n, fed_in_chunks(clean_10k, 1 << 18)),
        ("plaintext, 10k names, 64 KiB feeds", n, fed_in_chunks(clean_10k, 1 << 16)),
        ("plaintext, 1% malformed, 256 KiB feeds", n, fed_in_chunks(dirty_10k, 1 << 18)),
        (
            "plaintext, line-by-line reference",
            n // 10,
            lambda: len(parse_lines_slowly(tenth, NOW).batch),
        ),
        ("pickle, 500 points/frame, 256 KiB feeds", n, pickle_in_chunks(pickled, 1 << 18)),
    ]
    print(
        f"{'case':42} {'input':>10} {'points':>10} {'wall s':>7} {'cpu s':>7}"
        f" {'per wall s':>12} {'per cpu s':>12}"
    )
    for label, size, run in cases:
        wall, cpu, points = best_seconds(run, args.repeat)
        print(
            f"{label:42} {size:>10,} {points:>10,} {wall:>7.3f} {cpu:>7.3f}"
            f" {size / wall:>12,.0f} {size / cpu:>12,.0f}"
        )


if __name__ == "__main__":
    main()
