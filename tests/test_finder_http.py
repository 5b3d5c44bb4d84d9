"""graphite-web with IstatFinder behind a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import random
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

from graphite_site import STEP, Site

from graphite_istat.demo.web import start_server, stop_server
from graphite_istat.graphite.site import wsgi_application

pytest_plugins = ["graphite_site"]  # the session's graphite-web site


def test_render_over_http_returns_the_written_values(graphite_site: Site):
    rng = random.Random(3)
    start = graphite_site.now - 29 * STEP
    values = [rng.uniform(0, 1e6) / 7 for _ in range(30)]
    graphite_site.write(("http.m", start + i * STEP, v) for i, v in enumerate(values))
    server, thread = start_server(wsgi_application(), 0)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        query = urlencode({"target": "http.m.max", "format": "json", "from": start - STEP, "until": graphite_site.now})

        def get(_: int) -> list:
            with urllib.request.urlopen(f"{base}/render?{query}", timeout=30) as response:
                assert response.status == 200
                return json.loads(response.read())

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(get, range(8)))
        with urllib.request.urlopen(f"{base}/render?{query.replace('json', 'png')}", timeout=30) as response:
            png = response.read()
    finally:
        stop_server(server, thread)
    for (series,) in answers:
        assert series["target"] == "http.m.max"
        assert [v for v, _ in series["datapoints"]] == values
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
