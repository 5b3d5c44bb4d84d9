"""Configuration: carbon.conf and the two storage-*.conf files, parsed into immutable objects.

Everything is parsed once, by the process's wiring, and passed in explicitly;
nothing here holds settings at module level or reads a file on import.

* ``retention``: ``Retention`` and the ``10s:6h`` / ``60:1440`` syntax, whisper's rules;
* ``storage_rules``: storage-schemas.conf and storage-aggregation.conf, first match wins;
* ``carbon_conf``: the ``[cache]`` and ``[istat]`` settings of carbon.conf;
* ``ini``: the line-numbering INI reader under both;
* ``errors``: ``ConfigError``, which says file, line and problem.
"""

from graphite_istat.config.carbon_conf import CarbonConf, load_carbon_conf
from graphite_istat.config.errors import ConfigError
from graphite_istat.config.retention import (
    Retention,
    format_retention,
    parse_retention,
    parse_retentions,
    validate_retentions,
)
from graphite_istat.config.storage_rules import (
    AGGREGATION_METHODS,
    DEFAULT_AGGREGATION,
    DEFAULT_SCHEMA,
    FINEST_BUCKET_MODES,
    Aggregation,
    Schema,
    StorageRules,
    load_storage_rules,
    parse_storage_aggregation,
    parse_storage_schemas,
)

__all__ = [
    "AGGREGATION_METHODS",
    "DEFAULT_AGGREGATION",
    "DEFAULT_SCHEMA",
    "FINEST_BUCKET_MODES",
    "Aggregation",
    "CarbonConf",
    "ConfigError",
    "Retention",
    "Schema",
    "StorageRules",
    "format_retention",
    "load_carbon_conf",
    "load_storage_rules",
    "parse_retention",
    "parse_retentions",
    "parse_storage_aggregation",
    "parse_storage_schemas",
    "validate_retentions",
]
