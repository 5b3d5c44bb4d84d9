"""A graphite-web site in a directory: its local_settings module, log folder and database.

graphite-web reads its settings from the module named by the
``GRAPHITE_SETTINGS_MODULE`` environment variable (default
``graphite.local_settings``) and needs its database tables before the first
request. ``write_site`` writes such a module into a directory of its own;
``activate_site`` points this process's Django at it (once per process: Django
settings cannot be swapped later) and creates the tables.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ISTAT_FINDER = "graphite_istat.finder.IstatFinder"
WHISPER_FINDER = "graphite.finders.standard.StandardFinder"
SETTINGS_MODULE = "graphite_istat_site_settings"


class SiteError(Exception):
    """A site that cannot be activated in this process."""


@dataclass(frozen=True, slots=True)
class GraphiteSite:
    """Where a graphite-web site keeps its things."""

    directory: Path  # holds the settings module
    storage_dir: Path  # graphite-web's STORAGE_DIR: database, logs, whisper/
    istat_storage_dir: Path
    istat_conf_dir: Path
    finders: tuple[str, ...] = (ISTAT_FINDER,)
    extra_settings: Mapping[str, object] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.storage_dir / "log" / "webapp"

    @property
    def whisper_dir(self) -> Path:
        return self.storage_dir / "whisper"

    @property
    def settings_path(self) -> Path:
        return self.directory / f"{SETTINGS_MODULE}.py"


def write_site(site: GraphiteSite) -> None:
    """Create the site's folders and write its settings module."""
    for folder in (site.directory, site.storage_dir, site.log_dir, site.istat_storage_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if WHISPER_FINDER in site.finders:
        site.whisper_dir.mkdir(parents=True, exist_ok=True)  # graphite-web only reads it if it exists
    values: dict[str, object] = {
        "SECRET_KEY": os.urandom(16).hex(),
        "STORAGE_DIR": str(site.storage_dir),
        "LOG_DIR": str(site.log_dir),
        "STORAGE_FINDERS": list(site.finders),
        "ISTAT_STORAGE_DIR": str(site.istat_storage_dir),
        "ISTAT_CONF_DIR": str(site.istat_conf_dir),
        "TIME_ZONE": "UTC",
        "LOG_ROTATION": False,
        **site.extra_settings,
    }
    lines = ['"""graphite-web local settings written by graphite_istat.graphite.site."""', ""]
    lines += [f"{key} = {value!r}" for key, value in values.items()]
    site.settings_path.write_text("\n".join(lines) + "\n")


def activate_site(site: GraphiteSite, *, migrate: bool = True) -> None:
    """Point this process's graphite-web at ``site`` and create its database tables."""
    import django
    from django.conf import settings

    if settings.configured:
        raise SiteError("graphite-web is already configured in this process; a site is activated once")
    if str(site.directory) not in sys.path:
        sys.path.insert(0, str(site.directory))
    wanted = {"GRAPHITE_SETTINGS_MODULE": SETTINGS_MODULE, "DJANGO_SETTINGS_MODULE": "graphite.settings"}
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        django.setup()  # reads both variables, once
    finally:
        # Child processes (carbon, other tools) must not inherit this site's settings.
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if migrate:
        from django.core.management import call_command

        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)


def active_site() -> GraphiteSite:
    """The site this process's graphite-web was activated with (read back from its settings)."""
    from django.conf import settings

    module = sys.modules.get(SETTINGS_MODULE)
    if not settings.configured or module is None or not getattr(settings, "ISTAT_STORAGE_DIR", ""):
        raise SiteError("graphite-web was not configured by activate_site in this process")
    return GraphiteSite(
        directory=Path(module.__file__).parent,
        storage_dir=Path(settings.STORAGE_DIR),
        istat_storage_dir=Path(settings.ISTAT_STORAGE_DIR),
        istat_conf_dir=Path(settings.ISTAT_CONF_DIR),
        finders=tuple(settings.STORAGE_FINDERS),
    )


def wsgi_application():
    """graphite-web's WSGI application (after ``activate_site``)."""
    from graphite.wsgi import application

    return application


def graphite_content_dir(prefixes: Sequence[str] = (sys.prefix,)) -> Path | None:
    """Where pip put graphite-web's static files (``<prefix>/webapp/content``), if anywhere."""
    for prefix in prefixes:
        candidate = Path(prefix) / "webapp" / "content"
        if candidate.is_dir():
            return candidate
    return None
