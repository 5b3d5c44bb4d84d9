"""Metric names and whisper tree paths, both ways, without ever leaving the tree.

A whisper tree keeps ``a.b.c`` in ``a/b/c.wsp``. Going from a name to a path
is where a name can do harm: the store allows ``/`` inside a level (carbon
does too), which as a path would name other directories. So a level's ``/``
is written ``%2F`` in file and directory names, and read back as ``/``
(the only name that does not round-trip is one that already contained the
text ``%2F``). Levels that are empty, ``.`` or ``..`` or hold NUL are
refused (the store never holds them), and every path is checked, after
resolving symbolic links, to lie inside the target directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..store.names import InvalidNameError, encode_name

SUFFIX = ".wsp"
SLASH_ESCAPE = "%2F"


class UnsafeNameError(ValueError):
    """A metric name that cannot be a path inside the target directory."""


def name_for_path(relative: Path) -> str:
    """``a/b/c.wsp`` -> ``a.b.c``; raises ``InvalidNameError`` when that is not a valid name."""
    parts = list(relative.parts)
    parts[-1] = parts[-1][: -len(SUFFIX)] if parts[-1].endswith(SUFFIX) else parts[-1]
    name = ".".join(part.replace(SLASH_ESCAPE, "/") for part in parts)
    encode_name(name)
    return name


def path_for_name(target: Path, name: str) -> Path:
    """Where ``name`` goes under ``target`` (``a.b.c`` -> ``target/a/b/c.wsp``), checked to stay inside."""
    try:
        encode_name(name)
    except InvalidNameError as e:
        raise UnsafeNameError(str(e)) from None
    levels = [level.replace("/", SLASH_ESCAPE) for level in name.split(".")]
    for level in levels:
        if level in ("", ".", "..") or "\x00" in level or os.sep in level:
            raise UnsafeNameError(f"metric name {name!r} has a level that cannot be a file name")
    path = target.joinpath(*levels[:-1], levels[-1] + SUFFIX)
    root = target.resolve()
    resolved = path.parent.resolve() / path.name
    if root != resolved.parent and root not in resolved.parents:
        raise UnsafeNameError(f"metric name {name!r} would be written outside {target}")
    return path


def walk_whisper_tree(root: Path) -> Iterator[Path]:
    """Every ``*.wsp`` under ``root`` (relative paths, sorted; directory links are not followed)."""
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        here = Path(directory).relative_to(root)
        for file_name in sorted(files):
            if file_name.endswith(SUFFIX) and len(file_name) > len(SUFFIX):
                yield here / file_name
