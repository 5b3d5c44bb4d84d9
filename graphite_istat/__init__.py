"""graphite-istat: a Graphite storage backend keeping five exact sub-counters per bucket.

The package is layered. The core (``protocol``, ``store``, ``config``) is plain
Python and numpy; the adapters (receiver, finder, carbon plugin, cli) depend on
the core and never the other way round.
"""

__version__ = "0.1.0"
