"""Helpers of the graphite-web adapter (``graphite_istat.finder``).

* ``namespace``: Graphite patterns mapped onto stored metrics and their
  sub-counter leaves (``a.b.c.max``), without graphite-web or Django;
* ``series``: reading those leaves in one bulk store read, with exact
  maxDataPoints consolidation (``consolidation``);
* ``site``: a graphite-web site (local_settings module, database) built in a
  directory, for the demo and the tests.
"""
