"""Include/IncludeOptional expansion: which files one Include line names, in Apache's order.

This module owns Apache's rules for an Include argument (ap_process_fnmatch_configs): a plain
path is a file or a directory read recursively in sorted order; wildcards may appear in any
path component and match per directory, sorted, never a leading dot unless written; a
wildcard that matches nothing fails Include but not IncludeOptional; and the two depth limits
(nested Includes, directory recursion inside one Include).

It never reads or parses a configuration file and never knows FILE:LINE: config/syntax.py
reads the files this module names and turns an IncludeError into a ConfigError at the Include
line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from fnmatch import fnmatchcase

# Apache's limit on nested Include directives (AP_MAX_INCLUDE_DEPTH) and on directory
# recursion inside one Include (AP_MAX_INCLUDE_DIR_DEPTH).
MAX_INCLUDE_DEPTH = 128
MAX_INCLUDE_DIR_DEPTH = 128

_WILDCARD = re.compile(r"[*?\[]")


class IncludeError(Exception):
    """An Include that cannot be expanded; the message is Apache's, without FILE:LINE."""


def check_include_depth(depth: int) -> None:
    """Refuse one more Include when `depth` Includes are already being read (a recursion)."""
    if depth >= MAX_INCLUDE_DEPTH:
        raise IncludeError(
            f"Exceeded maximum include depth of {MAX_INCLUDE_DEPTH}, "
            "There appears to be a recursion."
        )


def included_files(path: str, optional: bool) -> Iterator[str]:
    """The files an Include of absolute `path` names, in Apache's order (lazily, as read).

    Mirrors ap_dir_fnmatch / ap_dir_nofnmatch; raises IncludeError when Include must fail.
    """
    if not _WILDCARD.search(path):
        yield from _plain_files(path, optional, 0)
        return
    yield from _wildcard_files("/", path.lstrip("/"), optional)


def _plain_files(path: str, optional: bool, depth: int) -> Iterator[str]:
    if os.path.isdir(path):
        depth += 1
        if depth > MAX_INCLUDE_DIR_DEPTH:
            raise IncludeError(
                f"Include/IncludeOptional: Directory {path} exceeds the maximum include "
                f"directory nesting level of {MAX_INCLUDE_DIR_DEPTH}. You have probably "
                "a recursion somewhere."
            )
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            raise IncludeError(
                f"Include/IncludeOptional: Could not open directory {path}: "
                f"{os.strerror(exc.errno or 0)}"
            ) from None
        for name in names:
            yield from _plain_files(os.path.join(path, name), optional, depth)
        return
    if optional and not os.path.exists(path):
        return
    yield path


def _wildcard_files(base: str, rest: str, optional: bool) -> Iterator[str]:
    first, slash, remainder = rest.partition("/")
    more = remainder if slash else None
    if not _WILDCARD.search(first):
        path = os.path.join(base, first)
        if more is None:
            yield from _plain_files(path, optional, 0)
        else:
            yield from _wildcard_files(path, more, optional)
        return
    try:
        entries = os.listdir(base)
    except OSError as exc:
        if optional and isinstance(exc, FileNotFoundError):
            return
        raise IncludeError(
            f"Include/IncludeOptional: Could not open directory {base}: "
            f"{os.strerror(exc.errno or 0)}"
        ) from None
    matches = sorted(
        name
        for name in entries
        if _fnmatch_period(first, name)
        and (more is None or os.path.isdir(os.path.join(base, name)))
    )
    if not matches:
        if not optional:
            raise IncludeError(
                f"Include/IncludeOptional: No matches for the wildcard '{first}' in "
                f"'{base}', failing"
            )
        return
    for name in matches:
        path = os.path.join(base, name)
        if more is None:
            yield from _plain_files(path, optional, 0)
        else:
            yield from _wildcard_files(path, more, optional)


def _fnmatch_period(pattern: str, name: str) -> bool:
    """fnmatch with APR_FNM_PERIOD: a leading dot must be matched by a literal dot."""
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatchcase(name, pattern)
