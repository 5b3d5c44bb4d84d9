"""``make demo``: graphite-web over a live graphite-istat store, fed with this host's metrics.

* ``host_metrics``: load, CPU, memory, disk and network figures from /proc;
* ``latency``: a synthetic request-latency metric, many points per bucket;
* ``sinks``: where the feeder's points go (the store directly, or a carbon
  plaintext port once a receiver runs);
* ``feeder``: the loop that samples and sends every interval;
* ``web``: a threaded WSGI server on 127.0.0.1 and graphite-web's static files;
* ``main``: the wiring, the printed URLs and a clean Ctrl-C.
"""
