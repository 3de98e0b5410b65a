"""Error logs read back: Apache's line shape into events, and the events that matter for tuning.

This module owns parsing ErrorLog lines (logs/error.py writes them, reference 2.5:
`[Www Mmm dd hh:mm:ss.uuuuuu yyyy] [module:level] [pid P:tid T] (errno)Text: [client ip:port]
AHnnnnn: message`, and Apache 2.2's `[date] [level] [client ip] message`) and sorting them
into the patterns an administrator looks for: MaxRequestWorkers reached, hung requests, child
crashes, proxy members failing. It never reads the server's state: only the lines given.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from mpmd.mpm.maintenance import _IDS as POOL_IDS  # the ids the pool policy logs, per MPM

_LINE = re.compile(
    r"\[(?P<date>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)? \d{4})\] "
    r"\[(?:(?P<module>[^:\]]*):)?(?P<level>[a-z]+\d?)\] "
    r"(?:\[pid (?P<pid>\d+)(?::tid \d+)?\] )?"
    r"(?:\(\d+\)[^:]*: )?"
    r"(?:\[client (?P<client>[^\]]*)\] )?"
    r"(?:(?P<id>(?:AH|MP)\d{5}): )?"
    r"(?P<message>.*?)\r?$"
)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """One error-log line."""

    time: float  # epoch seconds (the log's local time)
    level: str
    module: str
    pid: int | None
    client: str | None
    id: str | None  # AHnnnnn / MPnnnnn
    message: str


# an application's failures: WSGI import and handlers; ASGI apps, lifespan and WebSockets
APPLICATION_ERRORS = frozenset({"MP00001", "MP00007", "MP00008", "MP00283", "MP00284", "MP00285",
                                "MP00287", "MP00289", "MP00300", "MP00301", "MP00302", "MP00303"})  # fmt: skip
# (pattern name, ids) in the order reports show them; a line belongs to the first that has its id
_BY_WHAT: dict[str, list[str]] = {}
for (_mpm, _what), _ah in POOL_IDS.items():
    _BY_WHAT.setdefault(_what, []).append(_ah)
PATTERNS: tuple[tuple[str, frozenset[str]], ...] = (
    ("MaxRequestWorkers reached", frozenset(_BY_WHAT["max"])),
    ("near MaxRequestWorkers", frozenset(_BY_WHAT["near"])),
    ("scoreboard full (raise ServerLimit)", frozenset(_BY_WHAT["full"])),
    ("spawning capped at the active daemons limit", frozenset(_BY_WHAT["capped"])),
    ("server seems busy (spawn rate high)", frozenset(_BY_WHAT["busy"])),
    ("hung requests (Timeout exceeded)", frozenset({"MP00003"})),
    ("child crashes", frozenset({"AH00052", "AH10392"})),
    ("child over MaxMemoryPerChild", frozenset({"MP00004"})),
    ("proxy member failures", frozenset({"AH00959", "AH03303"})),
    ("application errors", APPLICATION_ERRORS),
)
del _mpm, _what, _ah
_PATTERN_OF = {ah: name for name, ids in PATTERNS for ah in ids}
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"), 1)}  # fmt: skip
_seconds: dict[str, float] = {}


def _epoch(date: str) -> float:
    """`Thu Nov 26 04:02:28.644944 2026` (local time) -> epoch seconds."""
    key = date[:19] + date[-5:]  # the second, without its fraction
    when = _seconds.get(key)
    if when is None:
        tm = (int(date[-4:]), _MONTHS[date[4:7]], int(date[8:10]), int(date[11:13]),
              int(date[14:16]), int(date[17:19]), 0, 0, -1)  # fmt: skip
        when = time.mktime(tm)
        if len(_seconds) >= 4096:
            _seconds.clear()
        _seconds[key] = when
    fraction = date[20:-5]
    return when + int(fraction) / 10 ** len(fraction) if fraction else when


def parse_error_line(line: str) -> ErrorEvent | None:
    """One event, or None for a line that is not an error-log line (a continuation, syslog)."""
    m = _LINE.match(line)
    if m is None:
        return None
    try:
        when = _epoch(m["date"])
    except (KeyError, ValueError, OverflowError):
        return None
    pid = m["pid"]
    return ErrorEvent(when, m["level"], m["module"] or "core", int(pid) if pid else None,
                      m["client"], m["id"] or _leading_id(m["message"]), m["message"])  # fmt: skip


def _leading_id(message: str) -> str | None:
    """An id written into the message itself (`MP00131: health check of …`)."""
    if len(message) > 8 and message[7] == ":" and message[:2] in ("AH", "MP"):
        return message[:7] if message[2:7].isdigit() else None
    return None


def pattern_of(event: ErrorEvent) -> str | None:
    """The tuning pattern this event is an instance of, if any."""
    if event.id is not None:
        return _PATTERN_OF.get(event.id)
    return None


def looks_like_error_log(lines: Iterable[str]) -> bool:
    """True when most non-blank lines of a sample are error-log lines (an access log's never
    start with a bracketed ctime date)."""
    sample = [line for line in lines if line.strip()]
    if not sample:
        return False
    hits = sum(1 for line in sample if _LINE.match(line))
    return hits * 2 > len(sample)


def read_error_log(lines: Iterable[str]) -> tuple[list[ErrorEvent], int]:
    """(events, lines that were not error-log lines), e.g. a traceback's bare continuation."""
    events: list[ErrorEvent] = []
    other = 0
    for line in lines:
        event = parse_error_line(line)
        if event is not None:
            events.append(event)
        elif line.strip():
            other += 1
    return events, other
