"""A graphite-web site for the finder tests: settings in tmp, IstatFinder beside StandardFinder.

Django settings are configured once per process, so the site is
session-scoped (and reused when another helper built it first with
``build_site``); tests keep apart by writing under their own metric prefixes.
Test modules load it with ``pytest_plugins = ['graphite_site']``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from graphite_istat.config import load_storage_rules
from graphite_istat.graphite.site import (
    ISTAT_FINDER,
    WHISPER_FINDER,
    GraphiteSite,
    activate_site,
    active_site,
    write_site,
)
from graphite_istat.store.batch import WriteBatch, WriteResult
from graphite_istat.store.store import Store

STEP = 10  # finest step of every test metric
SCHEMAS = """\
[default]
match-all = true
retentions = 10s:1d,1m:7d
"""
AGGREGATION = """\
[sums]
pattern = ^sums\\.
aggregationMethod = sum
xFilesFactor = 0
[lasts]
pattern = ^lasts\\.
aggregationMethod = last
xFilesFactor = 0
[maxes]
pattern = ^maxes\\.
aggregationMethod = max
xFilesFactor = 0
[default]
match-all = true
aggregationMethod = average
xFilesFactor = 0
"""


@dataclass
class Site:
    """The running site: write points, read the logs, ask graphite-web."""

    config: GraphiteSite
    now: int  # a time aligned on every archive step, a little in the past

    def write(self, points: Iterable[tuple[str, float, float]]) -> WriteResult:
        rules = load_storage_rules(self.config.istat_conf_dir)
        with Store.open(self.config.istat_storage_dir, rules, writable=True) as store:
            return store.write(WriteBatch.from_points(list(points)))

    def exception_log(self) -> str:
        path = self.config.log_dir / "exception.log"
        return path.read_text() if path.exists() else ""

    @property
    def graphite_store(self):
        from graphite.storage import STORE

        return STORE

    def istat_finder(self):
        from graphite_istat.finder import IstatFinder

        return next(f for f in self.graphite_store.finders if isinstance(f, IstatFinder))

    def client(self):
        from django.test import Client

        return Client()


def build_site(root: Path) -> GraphiteSite:
    conf = root / "conf"
    conf.mkdir(parents=True)
    (conf / "storage-schemas.conf").write_text(SCHEMAS)
    (conf / "storage-aggregation.conf").write_text(AGGREGATION)
    config = GraphiteSite(
        directory=root / "site",
        storage_dir=root / "storage",
        istat_storage_dir=root / "storage" / "istat",
        istat_conf_dir=conf,
        finders=(ISTAT_FINDER, WHISPER_FINDER),
        extra_settings={"USE_WORKER_POOL": True, "FIND_CACHE_DURATION": 0},
    )
    write_site(config)
    # The store exists before graphite-web looks at it.
    Store.open(config.istat_storage_dir, load_storage_rules(conf), writable=True).close()
    return config


@pytest.fixture(scope="session")
def graphite_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    from django.conf import settings

    if settings.configured:  # another helper of this suite built the site first
        config = active_site()
    else:
        config = build_site(tmp_path_factory.mktemp("graphite"))
        activate_site(config)
    now = int(time.time()) // 600 * 600 - 600
    return Site(config, now)
