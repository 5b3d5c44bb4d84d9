"""graphite-web for the function plugin tests: one configured site, switchable plugins and finders.

Django settings are configured once per process. When another test module
already configured graphite-web (``graphite_site``), that configuration is
reused; otherwise a site is built in a temporary directory the same way.
Each test then chooses its own finders (``serving``) and whether
``FUNCTION_PLUGINS`` holds this plugin (``plugin_enabled``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest

PLUGIN = "graphite_istat.functions"


@pytest.fixture(scope="session")
def graphite_web(tmp_path_factory: pytest.TempPathFactory):
    """graphite-web's settings, configured (and its database created) once per session."""
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        from graphite_site import build_site

        from graphite_istat.graphite.site import activate_site

        activate_site(build_site(tmp_path_factory.mktemp("functions-site")))
    return settings


@contextmanager
def plugin_enabled(enabled: bool) -> Iterator[None]:
    """graphite-web's function registry with (or without) this plugin, rebuilt and restored."""
    from django.test import override_settings
    from graphite.functions import loadFunctions

    try:
        with override_settings(FUNCTION_PLUGINS=[PLUGIN] if enabled else []):
            loadFunctions(force=True)
            yield
    finally:
        loadFunctions(force=True)


@contextmanager
def serving(finders: Sequence[object]) -> Iterator[None]:
    """graphite-web's STORE reading only ``finders`` for the duration."""
    from graphite.storage import STORE

    saved = STORE.finders
    STORE.finders = list(finders)
    try:
        yield
    finally:
        STORE.finders = saved
