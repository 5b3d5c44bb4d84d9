"""The receiver daemon: carbon's protocols on sockets, a bounded pipeline, the store behind it.

* ``settings``: the receiver's settings taken from ``CarbonConf``;
* ``counters``: thread-safe counters of what was received, stored, rejected, dropped;
* ``selfmetrics``: those counters as carbon's ``carbon.agents.<host>-<instance>.*`` points;
* ``streams``: one connection's decoder, unparsed bytes and rate-limited bad-line log;
* ``pipeline``: parser threads and the one writer thread, back-pressure, draining (no Twisted);
* ``protocols``: the Twisted protocols (plaintext TCP, pickle TCP, UDP), reading only;
* ``service``: the wiring of one daemon process: store, listeners, timers, signals, shutdown;
* ``logs``: logging to stderr and to LOG_DIR.

Only ``protocols`` and ``service`` import Twisted.
"""
