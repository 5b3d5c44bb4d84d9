"""``/render?format=json`` latency through stock graphite-web 1.1.10, one finder per child process.

graphite-web's Django settings can be configured once per process, so the
side-by-side benchmark runs this module as a child for each system:
``python compare_render.py SPEC_JSON`` writes a site (StandardFinder on a
whisper directory, or IstatFinder on a graphite-istat storage directory),
sends each target through Django's test client once to warm up (unless
``warmup`` is false) and then ``reps`` times, and prints the median seconds
per target as JSON on its last line. With ``profile`` set it also prints a
short cProfile (by own time) of the last target; with ``function_plugin``
graphite-web also loads graphite_istat.functions.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

from graphite_istat.graphite.site import (
    ISTAT_FINDER,
    WHISPER_FINDER,
    GraphiteSite,
    activate_site,
    write_site,
)

TARGETS = {
    "one": "bench.host00000.cpu00.user",
    "sum1k": "sumSeries(bench.host0000*.cpu*.user)",
    "sum10k": "sumSeries(bench.host000*.cpu*.user)",
}


class RenderError(Exception):
    """graphite-web answered a render with something other than 200."""


def run(spec: dict) -> dict:
    root = Path(spec["site"])
    finder = WHISPER_FINDER if spec["finder"] == "whisper" else ISTAT_FINDER
    # graphite-web gives up on a fetch or find after 6 s by default; a slow side must be timed, not cut.
    extra: dict[str, object] = {"FETCH_TIMEOUT": 3600, "FIND_TIMEOUT": 3600}
    if spec["finder"] == "whisper":
        extra["WHISPER_DIR"] = spec["storage"]
    if spec.get("function_plugin"):
        extra["FUNCTION_PLUGINS"] = ["graphite_istat.functions"]
    site = GraphiteSite(
        directory=root / "settings",
        storage_dir=root / "web",
        istat_storage_dir=Path(spec["storage"]) if spec["finder"] == "istat" else root / "unused",
        istat_conf_dir=Path(spec["conf"]),
        finders=(finder,),
        extra_settings=extra,
    )
    setup_start = time.perf_counter()
    write_site(site)
    activate_site(site)
    from django.test import Client

    client = Client()

    def render(target: str) -> int:
        response = client.get(
            "/render",
            {"target": target, "format": "json", "from": "-1d", "until": "now", "noCache": "1"},
        )
        if response.status_code != 200:
            raise RenderError(f"{target}: HTTP {response.status_code} {response.content[:300]!r}")
        series = json.loads(response.content)
        return sum(point[0] is not None for s in series for point in s["datapoints"])

    out: dict = {
        "seconds": {},
        "non_null": {},
        "warmup": {},
        "setup": time.perf_counter() - setup_start,
    }
    for key, target in TARGETS.items():
        times = []
        if spec.get("warmup", True):
            start = time.perf_counter()
            out["non_null"][key] = render(target)  # warm-up: imports, finder caches, file opens
            out["warmup"][key] = time.perf_counter() - start
        for _ in range(spec["reps"]):
            start = time.perf_counter()
            out["non_null"][key] = render(target)
            times.append(time.perf_counter() - start)
        out["seconds"][key] = statistics.median(times)
    if spec.get("profile"):
        from django.test.utils import override_settings

        # Without the worker pool the finder's fetch runs in this thread, so the profile shows it.
        with override_settings(USE_WORKER_POOL=False):
            profiler = cProfile.Profile()
            profiler.enable()
            render(TARGETS["sum10k"])
            profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        out["profile"] = text.getvalue()
    return out


def main() -> None:
    print(json.dumps(run(json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
