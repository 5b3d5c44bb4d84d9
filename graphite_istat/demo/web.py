"""A threaded WSGI server on 127.0.0.1 for graphite-web, and its static files.

The standard library's ``wsgiref`` server with a thread per request: enough
for a demo and for tests, no extra package. graphite-web's JavaScript and CSS
(installed by pip under ``<prefix>/webapp/content``) are served under
``/static/`` because graphite-web itself serves no static files.
"""

from __future__ import annotations

import mimetypes
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
LOOPBACK = "127.0.0.1"


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietRequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def with_static_files(app: WSGIApp, content_dir: Path | None, prefix: str = "/static/") -> WSGIApp:
    """``app``, with files under ``content_dir`` answered at ``prefix``."""
    if content_dir is None:
        return app
    root = content_dir.resolve()

    def serve(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith(prefix):
            return app(environ, start_response)
        target = (root / path[len(prefix):]).resolve()
        if root not in target.parents or not target.is_file():
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        body = target.read_bytes()
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return serve


def start_server(app: WSGIApp, port: int = 0) -> tuple[ThreadingWSGIServer, threading.Thread]:
    """Serve ``app`` on 127.0.0.1:``port`` (0: any free port) from a new thread."""
    server = make_server(LOOPBACK, port, app, server_class=ThreadingWSGIServer, handler_class=QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="graphite-web", daemon=True)
    thread.start()
    return server, thread


def stop_server(server: ThreadingWSGIServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    thread.join()
