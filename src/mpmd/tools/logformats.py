"""Which LogFormat an access log was written with: given, from a config file, or detected.

This module owns choosing the format string that tools/accesslog.py compiles: a nickname or a
format given on the command line (`--log-format combined`), the CustomLog of a configuration
file (mpmd's own config reader resolves its LogFormat nicknames), or, with neither, the format
among the common ones that matches the most of the log's first lines. It never reads a whole
log.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence

from mpmd.logs.logformat import COMBINED, COMMON, NICKNAMES
from mpmd.tools.accesslog import FIELDS, LogFormatError, LogParser, open_log

# Tried in order when detecting; the most matches wins, a tie goes to the earlier. A longer
# format comes before its prefix (the regex is anchored at the end of the line, so a line of
# the longer never matches the shorter), and the vhost forms first: %u may hold spaces, so
# `%h %l %u` also matches `%v %h %l %u` lines.
CANDIDATES = (
    NICKNAMES["vhost_combined"] + " %D",
    NICKNAMES["vhost_combined"],
    "%v " + COMBINED,
    "%v " + COMMON,
    COMBINED + " %D %k",
    COMBINED + " %D",
    COMBINED + " %T/%D",  # the "Apache performance" blog favourite
    COMBINED,
    COMMON + " %D",
    COMMON,
)
SAMPLE_LINES = 50


def detect_format(lines: Sequence[str], candidates: Iterable[str] = CANDIDATES) -> str | None:
    """The candidate matching the most of `lines` (blank ones ignored); None if none matches
    any. A tie goes to the earlier candidate."""
    lines = [line for line in lines if line.strip()]
    best, best_count = None, 0
    for fmt in candidates:
        match = LogParser(fmt, ()).regex.match
        count = sum(1 for line in lines if match(line))
        if count > best_count:
            best, best_count = fmt, count
    return best


def sample(path: str, count: int = SAMPLE_LINES) -> list[str]:
    """The first `count` lines of a log."""
    with open_log(path) as f:
        return list(itertools.islice(f, count))


def config_nicknames(config_file: str) -> dict[str, str]:
    """The LogFormat nicknames a configuration defines (anywhere), over Apache's own."""
    from mpmd.config import directives as reg
    from mpmd.config.syntax import ConfigError, parse_config

    names = dict(NICKNAMES)
    path = os.path.abspath(config_file)
    try:
        parsed = parse_config(
            path, server_root=os.path.dirname(path), is_directive=reg.is_directive
        )
    except ConfigError as err:
        raise LogFormatError(str(err)) from None
    stack = list(parsed.nodes)
    while stack:
        node = stack.pop()
        if node.children:
            stack.extend(node.children)
        elif node.name.lower() == "logformat" and len(node.args) == 2:
            names[node.args[1]] = node.args[0]
    return names


def format_from_config(config_file: str, access_log: str | None = None) -> str:
    """The format of the CustomLog (main server or a virtual host) writing `access_log`; without
    `access_log`, or when no CustomLog names it, the one format all CustomLogs share."""
    from mpmd.config.build import load_config
    from mpmd.config.syntax import ConfigError

    try:
        config = load_config(config_file)
    except ConfigError as err:
        raise LogFormatError(str(err)) from None
    specs = [s for vhost in (config.main, *config.vhosts) for s in vhost.access_logs]
    if not specs:
        raise LogFormatError(f"{config_file} has no CustomLog: give --log-format")
    if access_log is not None:
        wanted = os.path.realpath(access_log)
        for spec in specs:
            if os.path.realpath(spec.target) == wanted:
                return spec.format
    formats = {spec.format for spec in specs}
    if len(formats) == 1:
        return formats.pop()
    targets = ", ".join(sorted({spec.target for spec in specs}))
    raise LogFormatError(
        f"{config_file} writes access logs in {len(formats)} formats ({targets}): "
        "give --log-format or name one of these files"
    )


def resolve_format(
    log_format: str | None = None,
    *,
    config: str | None = None,
    access_log: str | None = None,
    lines: Sequence[str] | None = None,
) -> tuple[str, str]:
    """(format string, how it was found) from, in order: `log_format` (a format string, or a
    nickname the config or Apache defines), the config's CustomLog for `access_log`, or
    detection on `lines` (else the first lines of `access_log`). Raises LogFormatError."""
    if log_format:
        if "%" in log_format:
            return log_format, "given"
        names = config_nicknames(config) if config else dict(NICKNAMES)
        if log_format not in names:
            known = ", ".join(sorted(names))
            raise LogFormatError(f"unknown LogFormat nickname {log_format!r} (known: {known})")
        return names[log_format], f"nickname {log_format}"
    if config:
        return format_from_config(config, access_log), f"CustomLog in {config}"
    if lines is None:
        if access_log is None:
            raise LogFormatError("no access log to detect the LogFormat from")
        lines = sample(access_log)
    fmt = detect_format(lines)
    if fmt is None:
        where = access_log or "the log"
        raise LogFormatError(
            f"cannot tell the LogFormat of {where} from its first lines: give --log-format "
            "(a nickname such as combined, or the format string) or --config"
        )
    return fmt, "detected"


def parser_for(
    access_log: str,
    log_format: str | None = None,
    *,
    config: str | None = None,
    fields: Iterable[str] = FIELDS,
    needs: Iterable[str] = (),
) -> LogParser:
    """The parser for one access log: the format resolved as resolve_format() does, and
    LogFormatError (saying what to add) when it lacks any field of `needs`."""
    fmt, origin = resolve_format(log_format, config=config, access_log=access_log)
    parser = LogParser(fmt, fields, origin)
    parser.require(needs)
    return parser
