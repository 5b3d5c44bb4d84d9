"""The one exception configuration parsing raises: ``ConfigError``.

It carries where the problem is (file and line, when known) separately from
what the problem is, so callers can log it, show it, or re-locate it: parsers
of single values (a retention, a boolean) raise it without a location, and the
file readers re-raise it with the file name and line of the offending key.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file or value that graphite-istat refuses to run with.

    ``str()`` reads like ``storage-schemas.conf:12: retentions: '10s:abc' is not a
    valid retention``; the file and line parts are left out when unknown.
    """

    def __init__(self, message: str, filename: str | None = None, lineno: int | None = None):
        self.message = message
        self.filename = filename
        self.lineno = lineno
        super().__init__(message, filename, lineno)

    def __str__(self) -> str:
        location = ""
        if self.filename is not None:
            location = self.filename
            if self.lineno is not None:
                location += f":{self.lineno}"
            location += ": "
        return location + self.message

    def located(self, filename: str, lineno: int | None, key: str | None = None) -> ConfigError:
        """A copy of this error placed at ``filename:lineno``, its message prefixed by ``key: ``.

        A location already set is kept: the innermost reader knew best.
        """
        if self.filename is not None:
            return self
        message = f"{key}: {self.message}" if key else self.message
        return ConfigError(message, filename, lineno)
