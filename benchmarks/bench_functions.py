"""Benchmark of the function plugin: stock graphite-web functions against graphite_istat.functions.

Usage: python benchmarks/bench_functions.py [--series 10000] [--points 2160] [--repeat 2]

The series are built in memory first (floats, about 5 % None, names
``servers.hostNNN.metricMMM``, 100 hosts), as graphite-web holds them after
fetching: this measures the functions alone, not storage. Each function runs
on the same list with the stock implementation and with the plugin's, the
results are checked equal, and one table prints the best of ``--repeat``
wall-clock times. The ``to arrays`` row is the plugin's cost of reading the
Python lists into numpy, which every replaced function pays.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HOSTS = 100


def configure_graphite(root: Path) -> None:
    from graphite_istat.graphite.site import GraphiteSite, activate_site, write_site

    site = GraphiteSite(
        directory=root / "site", storage_dir=root / "storage",
        istat_storage_dir=root / "storage" / "istat", istat_conf_dir=root / "conf",
        finders=(), extra_settings={"FUNCTION_PLUGINS": []},
    )
    write_site(site)
    activate_site(site, migrate=False)


def build_series(count: int, points: int, seed: int = 1) -> list:
    from graphite.render.datalib import TimeSeries

    rng = random.Random(seed)
    now = 1_700_000_000
    start = now - points * 10
    series_list = []
    for index in range(count):
        values = [rng.uniform(0, 1000) if rng.random() > 0.05 else None for _ in range(points)]
        name = f"servers.host{index % HOSTS:03d}.metric{index // HOSTS:03d}"
        series = TimeSeries(name, start, now, 10, values)
        series.pathExpression = "servers.*.*"
        series_list.append(series)
    return series_list


def best_of(repeat: int, action: Callable[[], object]) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def same_results(expected: list, got: list) -> bool:
    return [(s.name, list(s)) for s in expected] == [(s.name, list(s)) for s in got]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=2_160)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        configure_graphite(Path(tmp))
        from graphite.render import functions as stock

        from graphite_istat.functions import SeriesFunctions as plugin
        from graphite_istat.functions.combine import as_arrays

        print(f"building {args.series} series x {args.points} points ...", file=sys.stderr)
        series_list = build_series(args.series, args.points)
        context = {"xFilesFactor": 0.0}
        cases: list[tuple[str, str, tuple]] = [
            ("sumSeries", "sumSeries", (series_list,)),
            ("averageSeries", "averageSeries", (series_list,)),
            ("maxSeries", "maxSeries", (series_list,)),
            ("percentileOfSeries 95", "percentileOfSeries", (series_list, 95)),
            ("groupByNode 1 sum (100 groups)", "groupByNode", (series_list, 1, "sum")),
        ]
        rows = []
        for label, name, call_args in cases:
            print(f"timing {label} ...", file=sys.stderr)
            stock_seconds, expected = best_of(
                args.repeat, lambda n=name, a=call_args: stock.SeriesFunctions[n](context, *a)
            )
            plugin_seconds, got = best_of(
                args.repeat, lambda n=name, a=call_args: plugin[n](context, *a)
            )
            rows.append(
                (label, f"{stock_seconds:.3f}", f"{plugin_seconds:.3f}",
                 f"{stock_seconds / plugin_seconds:.1f}x",
                 "yes" if same_results(expected, got) else "NO")
            )
        convert_seconds, _ = best_of(args.repeat, lambda: as_arrays(series_list))
        rows.append(("to arrays (part of every row)", "", f"{convert_seconds:.3f}", "", ""))

    headers = ("function", "stock s", "plugin s", "speed-up", "identical")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    print(f"{args.series} series x {args.points} points in memory, best of {args.repeat}")
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0 if all(row[4] in ("yes", "") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
