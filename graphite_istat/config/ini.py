"""A small INI reader that remembers the line of every section and key.

carbon reads its files with Python's ``configparser``, which cannot say on
which line a key was. This reader accepts the same syntax so that every file
carbon reads is read the same way, and keeps line numbers for error messages:

* ``[name]`` section headers (name case-sensitive); ``key = value`` or
  ``key: value`` entries, split at the first ``=`` or ``:``, key lower-cased
  and both sides stripped;
* whole-line comments starting with ``#`` or ``;`` (indentation allowed); a
  ``#`` later in a line is part of the value, as in configparser's default, so
  regular expressions such as ``^foo#bar`` survive;
* booleans as ``getboolean`` reads them (``parse_ini_bool``);
* a line indented deeper than the key line before it continues that value
  (joined with a newline), as configparser's multi-line values do.

It is stricter than configparser where carbon's behaviour is an accident:
values are taken literally (no ``%`` interpolation), a blank line ends a
multi-line value, and an entry before the first section, a line that is not
``key = value``, an empty key, and a repeated section or key are errors
naming the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from graphite_istat.config.errors import ConfigError

_COMMENT_PREFIXES = ("#", ";")
_TRUE_WORDS = frozenset({"1", "yes", "true", "on"})
_FALSE_WORDS = frozenset({"0", "no", "false", "off"})


@dataclass(frozen=True, slots=True)
class IniEntry:
    """One ``key = value`` line (plus continuation lines)."""

    key: str
    value: str
    lineno: int


@dataclass(frozen=True, slots=True)
class IniSection:
    """A ``[name]`` section and its entries by lower-cased key, in file order."""

    name: str
    lineno: int
    entries: Mapping[str, IniEntry]


def read_ini_file(path: str | Path) -> tuple[IniSection, ...]:
    """Read and parse the INI file at ``path``; errors name ``path`` as given."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError("file not found", filename) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text ({error.reason} at byte {error.start})", filename) from None
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror or error}", filename) from None
    return parse_ini(text, filename)


def parse_ini(text: str, filename: str) -> tuple[IniSection, ...]:
    """Parse INI ``text``; ``filename`` only names the source in errors."""
    sections: list[IniSection] = []
    first_line_of_section: dict[str, int] = {}
    entries: dict[str, IniEntry] = {}
    section_name: str | None = None
    section_lineno = 0
    # The entry a deeper-indented line would continue, and the indent of its key line.
    open_entry: IniEntry | None = None
    open_indent = 0

    def close_section() -> None:
        if section_name is not None:
            sections.append(IniSection(section_name, section_lineno, MappingProxyType(entries)))

    # Only line breaks count as lines (str.splitlines would also split at form feeds).
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, raw_line in enumerate(lines, start=1):
        line = raw_line.strip()
        if not line:
            open_entry = None
            continue
        if line.startswith(_COMMENT_PREFIXES):
            continue
        indent = len(raw_line) - len(raw_line.lstrip())
        if open_entry is not None and indent > open_indent:
            open_entry = IniEntry(open_entry.key, f"{open_entry.value}\n{line}", open_entry.lineno)
            entries[open_entry.key] = open_entry
            continue
        open_entry = None

        if line.startswith("["):
            if not line.endswith("]") or not line[1:-1].strip():
                raise ConfigError(f"{line!r} is not a [section] header", filename, lineno)
            close_section()
            section_name = line[1:-1].strip()
            section_lineno = lineno
            if section_name in first_line_of_section:
                raise ConfigError(
                    f"section [{section_name}] appears twice "
                    f"(first on line {first_line_of_section[section_name]})",
                    filename,
                    lineno,
                )
            first_line_of_section[section_name] = lineno
            entries = {}
            continue

        key, value = _split_entry(line, filename, lineno)
        if section_name is None:
            raise ConfigError(f"{key!r} comes before the first [section] header", filename, lineno)
        if key in entries:
            raise ConfigError(
                f"key {key!r} appears twice in section [{section_name}] "
                f"(first on line {entries[key].lineno})",
                filename,
                lineno,
            )
        open_entry = IniEntry(key, value, lineno)
        open_indent = indent
        entries[key] = open_entry

    close_section()
    return tuple(sections)


def _split_entry(line: str, filename: str, lineno: int) -> tuple[str, str]:
    cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
    if cut < 0:
        raise ConfigError(f"{line!r} is not a 'key = value' line", filename, lineno)
    key = line[:cut].strip().lower()
    if not key:
        raise ConfigError(f"{line!r} has no key before '{line[cut]}'", filename, lineno)
    return key, line[cut + 1 :].strip()


def parse_ini_bool(text: str) -> bool:
    """A boolean the way configparser's ``getboolean`` reads it (case-insensitive)."""
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ConfigError(f"{text!r} is not a boolean (true/false, yes/no, on/off, 1/0)")
