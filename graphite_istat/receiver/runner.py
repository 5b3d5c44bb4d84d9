"""Running a daemon's service under the Twisted reactor until a signal stops it.

Shared by ``graphite-istat serve`` and ``graphite-istat agent``: start the
service once the reactor runs (stopping at once if it cannot listen), stop it
and collect the failures of its shutdown steps before the reactor exits.
SIGTERM and SIGINT stop the reactor once (a repeated signal is ignored);
other signals run the actions given, on the reactor thread. The handlers are
installed once the reactor runs, over Twisted's own SIGTERM/SIGINT handlers
(which would stop the reactor a second time), and put back afterwards.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred


class Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> Deferred: ...


def install_signal_handlers(reactor: Any, actions: Mapping[int, Callable[[], None]]) -> None:
    stopping: list[bool] = []

    def stop_once() -> None:
        if not stopping and reactor.running:
            stopping.append(True)
            reactor.stop()

    def hop(action: Callable[[], None]) -> Callable[[int, Any], None]:
        return lambda signum, frame: reactor.callFromThread(action)

    for signum, action in {signal.SIGTERM: stop_once, signal.SIGINT: stop_once, **actions}.items():
        signal.signal(signum, hop(action))


def run_service(
    reactor: Any,
    service: Service,
    logger: logging.Logger,
    *,
    signal_actions: Mapping[int, Callable[[], None]],
    thread_pool_size: int,
    on_ready: Callable[[Any], None] | None = None,
) -> int:
    """Run until the reactor stops; the exit status (1 if starting or a shutdown step failed)."""
    failures: list[str] = []

    def stop() -> Deferred:
        deferred = service.stop()

        def check(results: Any) -> None:
            for ok, value in _flatten(results):
                if not ok:
                    failures.append(str(value))
                    logger.error("shutdown step failed: %s", value)

        deferred.addCallback(check)
        return deferred

    def start() -> None:
        try:
            service.start()
        except Exception as error:
            # Most likely a port in use: nothing was received yet, stop at once.
            failures.append(str(error))
            logger.error("cannot start: %s", error)
            reactor.stop()
            return
        install_signal_handlers(reactor, signal_actions)
        logger.info("ready")
        if on_ready is not None:
            on_ready(service)

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.callWhenRunning(start)
    reactor.suggestThreadPoolSize(thread_pool_size)
    reactor.run()
    for signum in (signal.SIGTERM, signal.SIGINT, *signal_actions):
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
    return 1 if failures else 0


def _flatten(results: Any) -> list[tuple[bool, Any]]:
    flat: list[tuple[bool, Any]] = []
    for ok, value in results:
        if ok and isinstance(value, list):
            flat.extend(_flatten(value))
        else:
            flat.append((ok, value))
    return flat
