"""graphite-web function plugin: numpy aggregations equal to stock, and exact pooling of sub-counters.

Enable it in graphite-web's local_settings.py::

    FUNCTION_PLUGINS = ['graphite_istat.functions']

graphite-web imports the module and adds every entry of ``SeriesFunctions``
to its function registry; an entry named like a built-in replaces it. This
package's entries:

* ``combine``: ``sumSeries``, ``averageSeries``, ``minSeries``, ``maxSeries``,
  ``multiplySeries``, ``diffSeries``, ``rangeOfSeries``, ``countSeries``,
  ``stddevSeries``, ``percentileOfSeries``, ``aggregate``, ``groupByNode``,
  ``groupByNodes``, ``groupByTags``, ``aggregateWithWildcards``,
  ``sumSeriesWithWildcards``, ``averageSeriesWithWildcards``,
  ``multiplySeriesWithWildcards`` (and the aliases ``sum``, ``avg``):
  results equal to stock graphite-web 1.1.10's, computed with numpy;
* ``pooled``: ``istatPooled`` and ``istatBand``, which combine the
  sub-counters of many graphite-istat metrics exactly.

The replacements repeat Python's left-to-right float ``sum()``. CPython 3.12
made ``sum()`` of floats compensated, so there the built-ins are left alone
and only the two new functions are registered.
"""

from __future__ import annotations

import sys

from .combine import REPLACEMENTS
from .pooled import istatBand, istatPooled

REPEATS_BUILTIN_SUM = sys.version_info < (3, 12)


def series_functions() -> dict:
    """The entries this plugin gives graphite-web."""
    functions = dict(REPLACEMENTS) if REPEATS_BUILTIN_SUM else {}
    functions["istatPooled"] = istatPooled
    functions["istatBand"] = istatBand
    return functions


SeriesFunctions = series_functions()
