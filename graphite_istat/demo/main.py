"""The demo's wiring: storage folder, the receiver, graphite-web under a WSGI server, the feeder, Ctrl-C.

The feeder sends carbon plaintext to the receiver (``graphite-istat serve``,
a child process), which writes the store; graphite-web reads it through
IstatFinder. Everything listens on 127.0.0.1 only.

Layout of the storage folder (created on the first run, reused afterwards)::

    <storage-dir>/conf/      storage-schemas.conf, storage-aggregation.conf, carbon.conf
    <storage-dir>/istat/     the graphite-istat store
    <storage-dir>/log/       the receiver's console.log
    <storage-dir>/webapp/    graphite-web's database and logs
    <storage-dir>/site/      graphite-web's local settings for the demo
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from ..config import load_storage_rules
from ..graphite.site import (
    GraphiteSite,
    activate_site,
    graphite_content_dir,
    write_site,
    wsgi_application,
)
from ..store.lock import StoreLockedError
from ..store.store import Store
from .feeder import LATENCY_METRIC, Feeder
from .host_metrics import metric_level
from .receiver import ReceiverError, ReceiverProcess
from .sinks import CarbonPlaintextSink, Sink, StoreSink
from .web import start_server, stop_server, with_static_files

AGGREGATION = """\
# Every demo metric is averaged by default; its sub-counters (.min .max ...) stay exact anyway.
[default]
match-all = true
aggregationMethod = average
xFilesFactor = 0
"""


def schemas_for(interval: int) -> str:
    return (
        "# The feeder's interval is the finest step; coarser archives keep exact rollups.\n"
        "[default]\nmatch-all = true\n"
        f"retentions = {interval}s:6h,1m:7d,10m:1y\n"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m graphite_istat.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--storage-dir", type=Path, default=Path("demo-storage"), help="created and reused (default: ./demo-storage)")
    parser.add_argument("--http-port", type=int, default=8080, help="graphite-web's port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--interval", type=int, default=10, help="seconds between samples; must divide 60 (default: 10)")
    parser.add_argument("--line-port", type=int, default=2003,
                        help="the receiver's plaintext port on 127.0.0.1 (default: 2003; 0: any free port)")
    parser.add_argument("--carbon", metavar="PORT", type=int, default=None,
                        help="send to a receiver already running on 127.0.0.1:PORT instead of starting one")
    parser.add_argument("--direct", action="store_true",
                        help="write the store from this process instead of through a receiver")
    args = parser.parse_args(argv)
    if args.interval < 1 or 60 % args.interval:
        parser.error("--interval must divide 60 (1, 2, 5, 10, 15, 30 or 60)")
    return args


def prepare_storage(storage_dir: Path, interval: int) -> GraphiteSite:
    """Create (or reuse) the folder; the conf files are only written when absent."""
    conf = storage_dir / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    if not (conf / "storage-schemas.conf").exists():
        (conf / "storage-schemas.conf").write_text(schemas_for(interval))
    if not (conf / "storage-aggregation.conf").exists():
        (conf / "storage-aggregation.conf").write_text(AGGREGATION)
    site = GraphiteSite(
        directory=storage_dir / "site",
        storage_dir=storage_dir / "webapp",
        istat_storage_dir=storage_dir / "istat",
        istat_conf_dir=conf,
    )
    write_site(site)
    return site


def latency_render_url(base: str, prefix: str) -> str:
    """A graph of the latency's avg between its min and max lines (the envelope), last half hour."""
    metric = f"{prefix}.{LATENCY_METRIC}"
    query = [
        ("target", f"alias(color({metric}.max,'ee8866'),'max')"),
        ("target", f"alias(color(lineWidth({metric}.avg,2),'0033cc'),'avg')"),
        ("target", f"alias(color({metric}.min,'66aa66'),'min')"),
        ("from", "-30min"), ("width", "1000"), ("height", "450"), ("yMin", "0"),
        ("title", "request latency (ms): avg inside its exact min/max envelope"),
    ]
    return f"{base}/render?{urlencode(query)}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    storage_dir = args.storage_dir.resolve()
    site = prepare_storage(storage_dir, args.interval)
    prefix = f"demo.{metric_level(socket.gethostname().split('.')[0])}"

    sink: Sink
    receiver: ReceiverProcess | None = None
    busy = f"{site.istat_storage_dir} is being written by another process (another demo?)"
    if args.carbon is not None:
        sink = CarbonPlaintextSink("127.0.0.1", args.carbon)
    elif args.direct:
        try:
            rules = load_storage_rules(site.istat_conf_dir)
            store = Store.open(site.istat_storage_dir, rules, writable=True)
        except StoreLockedError:
            print(busy, file=sys.stderr)
            return 1
        sink = StoreSink(store)
    else:
        try:
            receiver = ReceiverProcess.start(
                site.istat_conf_dir, site.istat_storage_dir, storage_dir / "log", args.line_port
            )
        except ReceiverError as e:
            print(busy if "already open for writing" in str(e) else f"the receiver did not start:\n{e}", file=sys.stderr)
            return 1
        sink = CarbonPlaintextSink("127.0.0.1", receiver.line_port)
    feeder = Feeder(sink, prefix, float(args.interval))
    feeder.feed_once(time.time())  # data to show at once

    activate_site(site)
    app = with_static_files(wsgi_application(), graphite_content_dir())
    server, server_thread = start_server(app, args.http_port)
    port = server.server_address[1]

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    feeder_thread = threading.Thread(target=feeder.run, args=(stop,), name="feeder")
    feeder_thread.start()

    base = f"http://127.0.0.1:{port}"
    print(f"graphite-istat demo: storage in {storage_dir}, one sample every {args.interval}s", flush=True)
    if receiver is not None:
        print(f"  receiver (carbon plaintext): 127.0.0.1:{receiver.line_port}", flush=True)
    print(f"  graphite-web composer: {base}/", flush=True)
    print(f"  dashboard:             {base}/dashboard/", flush=True)
    print(f"  latency envelope:      {latency_render_url(base, prefix)}", flush=True)
    print(f"  metrics:               {prefix}.host.*  {prefix}.{LATENCY_METRIC}.{{avg,min,max,stddev,count}}", flush=True)
    print("Ctrl-C stops the demo.", flush=True)

    stop.wait()
    print("stopping ...", flush=True)
    feeder_thread.join()
    stop_server(server, server_thread)
    sink.close()
    status = 0
    if receiver is not None and receiver.stop() != 0:
        print("the receiver did not stop cleanly; see its console.log", file=sys.stderr)
        status = 1
    print(f"stopped; {feeder.sent} points sent", flush=True)
    return status
