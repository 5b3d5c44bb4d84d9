"""``graphite-istat carbon-cache [options] start|stop|status``: stock carbon-cache with the istat plugin.

carbon only knows database plugins whose module was imported, so this
imports ``graphite_istat.carbon_plugin`` and then runs carbon's own
carbon-cache exactly as carbon's ``carbon-cache.py`` script does (carbon's
option parser, twistd, the ``carbon-cache`` twistd plugin), with the same
options; ``--config`` is the global one. With ``DATABASE = istat`` in the
``[cache]`` section of carbon.conf the cache stores into graphite-istat;
any other ``DATABASE`` works as it does under carbon-cache.py.

``GRAPHITE_ROOT`` defaults, as for carbon-cache.py, to the directory above
the one carbon's scripts are installed in.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

from .errors import EXIT_FAILURE, EXIT_OK, CommandError, UsageError

SUMMARY = "run stock carbon-cache (start, stop, status) with DATABASE = istat available"

PROGRAM = "carbon-cache"
ACTIONS = ("start", "stop", "status")
# carbon's own options (carbon.conf.get_default_parser), passed through unchanged.
FLAGS = {
    "--debug": "run in the foreground, log to stdout",
    "--nodaemon": "run in the foreground",
    "--syslog": "write logs to syslog",
}
VALUED_OPTIONS = {
    "--instance": "manage a specific carbon instance (carbon's default: a)",
    "--pidfile": "write the pid to this file",
    "--logdir": "write logs in this directory",
    "--logfile": "log to this file, - for stdout",
    "--logger": "fully-qualified name of a log observer factory",
    "--umask": "umask for files created",
    "--whitelist": "whitelist file of metric patterns to allow",
    "--blacklist": "blacklist file of metric patterns to refuse",
    "--profile": "record performance profile data to this file",
    "--profiler": "the profiler to use",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS, help="what carbon-cache should do")
    carbon = parser.add_argument_group("carbon-cache's options (see carbon-cache.py --help)")
    for flag, help_text in FLAGS.items():
        carbon.add_argument(flag, action="store_true", help=help_text)
    for option, help_text in VALUED_OPTIONS.items():
        carbon.add_argument(option, metavar="VALUE", help=help_text)


def carbon_arguments(args: argparse.Namespace) -> list[str]:
    """The command line carbon-cache.py would be given for these arguments."""
    argv: list[str] = []
    for flag in FLAGS:
        if getattr(args, _dest(flag)):
            argv.append(flag)
    for option in VALUED_OPTIONS:
        value = getattr(args, _dest(option))
        if value is not None:
            argv.extend([option, value])
    config = getattr(args, "config", None)
    if config is not None:
        argv.extend(["--config", str(config)])
    argv.append(args.action)
    return argv


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def carbon_script() -> Path:
    """Where carbon-cache.py is installed (its location decides carbon's default GRAPHITE_ROOT)."""
    return Path(sysconfig.get_path("scripts")) / f"{PROGRAM}.py"


def run(args: argparse.Namespace) -> int:
    for option in ("storage_dir", "conf_dir"):
        if getattr(args, option, None) is not None:
            raise UsageError(
                f"--{option.replace('_', '-')} does not apply to carbon-cache: it takes its "
                "directories from carbon.conf (ISTAT_STORAGE_DIR or LOCAL_DATA_DIR, and the "
                "directory of --config)"
            )
    import carbon.state
    from carbon.exceptions import CarbonConfigException
    from carbon.util import run_twistd_plugin

    import graphite_istat.carbon_plugin  # noqa: F401  (registers DATABASE = istat)

    saved_argv = sys.argv
    # carbon's runner parses sys.argv itself, as carbon-cache.py does.
    sys.argv = [f"graphite-istat {PROGRAM}", *carbon_arguments(args)]
    try:
        run_twistd_plugin(str(carbon_script()))
    except CarbonConfigException as error:
        raise CommandError(str(error)) from None
    finally:
        sys.argv = saved_argv
    startup_error = getattr(carbon.state.database, "startup_error", None)
    return EXIT_FAILURE if startup_error is not None else EXIT_OK
