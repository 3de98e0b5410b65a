"""Access logs read back: one LogFormat becomes one compiled regex and one generated converter.

This module owns reading CustomLog lines into `AccessRecord`s for the capacity planner and
`mpmctl logs`: the format's items (parsed by logs/logformat.py, the server's own tokenizer, so
the two never disagree), the regex each item matches, which item feeds which field, and the
accounting of lines that do not parse (counted and reported with their line numbers, never a
traceback). Where the format comes from (a nickname, a config file, the lines themselves) is
tools/logformats.py's. It never writes a log and never imports the server.

The one idea: as `compile_format` turns a format into the source of one function, `LogParser`
turns it into one regex (a capture group only for the items a wanted field needs) plus the
source of one loop that matches, converts and appends; nothing is dispatched per item at run
time. Times repeat for a whole second and request lines repeat for a whole site, so both
conversions are remembered.
"""

from __future__ import annotations

import calendar
import gzip
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from mpmd.logs.logformat import Item, split_format


class AccessRecord(NamedTuple):
    """One request. A field the format does not log (or the caller did not ask for) is None."""

    time: float | None  # arrival: the request's start (Apache's %t), epoch seconds
    service: float | None  # seconds from the request's start to its log line (%D, %T)
    status: int | None  # final status (%>s)
    bytes: int | None  # response body bytes (%b, %B), else all bytes sent (%O)
    client: str | None  # %a, else %h
    keepalive: int | None  # %k: requests on this connection before this one
    path: str | None  # URL path without the query (%U, else from %r)
    user_agent: str | None  # %{User-Agent}i as logged (escaped)
    queued: float | None = None  # seconds waited on its socket before it started (mpmd's note)


FIELDS = AccessRecord._fields


class LogFormatError(ValueError):
    """The LogFormat cannot be read, or lacks what the caller needs (the message says what)."""


# What to add when a field is missing: the planner's and `mpmctl logs`' advice.
ADVICE = {
    "time": "the LogFormat has no request time: add %t (or %{usec}t for exact arrival times)",
    "service": "the LogFormat has no service time: add %D",
    "status": "the LogFormat has no status: add %>s",
    "bytes": "the LogFormat has no response size: add %b",
    "client": "the LogFormat has no client address: add %a",
    "keepalive": "the LogFormat has no keep-alive count: add %k",
    "path": 'the LogFormat has no URL: add "%r" or %U',
    "user_agent": 'the LogFormat has no user agent: add "%{User-Agent}i"',
    "queued": "the LogFormat has no wait before the start: add %{mpmd-queued-ms}n",
}

# -- times -------------------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
                                       "Sep", "Oct", "Nov", "Dec"), 1)}  # fmt: skip
_clf_times: dict[str, float] = {}


def clf_epoch(text: str) -> float:
    """`26/Nov/2026:04:03:23 +0100` -> epoch seconds (remembered: a second has many lines)."""
    when = _clf_times.get(text)
    if when is None:
        wall = calendar.timegm((int(text[7:11]), _MONTHS[text[3:6]], int(text[0:2]),
                                int(text[12:14]), int(text[15:17]), int(text[18:20])))  # fmt: skip
        offset = int(text[22:24]) * 3600 + int(text[24:26]) * 60
        when = float(wall - offset if text[21] == "+" else wall + offset)
        if len(_clf_times) >= 4096:
            _clf_times.clear()
        _clf_times[text] = when
    return when


# strftime conversions -> (regex, strptime form); %T %F %D %R are expanded first
_STRFTIME = {
    "d": r"\d\d", "m": r"\d\d", "Y": r"\d{4}", "y": r"\d\d", "H": r"\d\d", "I": r"\d\d",
    "M": r"\d\d", "S": r"\d\d", "j": r"\d{3}", "b": "[A-Za-z]{3}", "h": "[A-Za-z]{3}",
    "B": "[A-Za-z]+", "a": "[A-Za-z]{3}", "A": "[A-Za-z]+", "p": "[AP]M", "z": r"[+-]\d{4}",
    "Z": "[A-Za-z]+", "%": "%",
}  # fmt: skip
_EXPAND = {"T": "%H:%M:%S", "F": "%Y-%m-%d", "D": "%m/%d/%y", "R": "%H:%M"}


def strftime_reader(fmt: str) -> tuple[str, Callable[[str], float]]:
    """A `%{fmt}t` item: (regex for its text, text -> epoch seconds in local time unless %z)."""
    fmt = re.sub(r"%([TFDR])", lambda m: _EXPAND[m[1]], fmt)
    pattern = []
    for literal, conv in re.findall(r"([^%]*)(?:%(.)|$)", fmt):
        pattern.append(re.escape(literal))
        if conv:
            if conv not in _STRFTIME:
                raise LogFormatError(f"cannot read times logged as %{{{fmt}}}t (%{conv})")
            pattern.append(_STRFTIME[conv])
    seen: dict[str, float] = {}

    def epoch(text: str) -> float:
        when = seen.get(text)
        if when is None:
            parsed = datetime.strptime(text, fmt)
            when = parsed.timestamp() if parsed.tzinfo else time.mktime(parsed.timetuple())
            if len(seen) >= 4096:
                seen.clear()
            seen[text] = when
        return when

    return "".join(pattern), epoch


# -- request lines -----------------------------------------------------------------------------

_paths: dict[str, str | None] = {}


def request_path(request_line: str) -> str | None:
    """`GET /a/b?q=1 HTTP/1.1` -> `/a/b` (an absolute-form target's path too); None for a line
    that is not a request (`-`, a TLS handshake on a plain port)."""
    path = _paths.get(request_line, "")
    if path != "":
        return path
    words = request_line.split(" ")
    path = None
    if len(words) >= 2 and words[0].isalpha():
        path = words[1].partition("?")[0]
        if path[:1] != "/" and "://" in path:
            path = "/" + path.split("://", 1)[1].partition("/")[2]
    if len(_paths) >= 65536:
        _paths.clear()
    _paths[request_line] = path
    return path


# -- items -------------------------------------------------------------------------------------

# an item between double quotes (Apache escapes `"` and `\`), as an unrolled loop: 4x faster
# than ((?:[^"\\]|\\.)*), which tries an alternation per character
_QUOTED = r'([^"\\]*(?:\\.[^"\\]*)*)'
_ANY = "(.*?)"  # an item that may hold spaces, up to the next literal
_NUMBER = r"(\d+)"
_NUMBER_OR_DASH = r"(-|\d+)"
_NO_SPACE = r"(\S+)"
_PATTERNS = {
    "h": _NO_SPACE, "a": _NO_SPACE, "A": _NO_SPACE, "l": _NO_SPACE, "s": _NUMBER_OR_DASH,
    "b": _NUMBER_OR_DASH, "B": _NUMBER, "D": _NUMBER, "k": _NUMBER, "I": _NUMBER, "O": _NUMBER,
    "S": _NUMBER, "X": "([-+X])", "p": _NO_SPACE, "P": _NO_SPACE, "v": r"(\S*)", "V": r"(\S*)",
    "H": r"(\S*)", "m": r"(\S*)", "q": r"(\S*)", "^FB": _NUMBER_OR_DASH, "T": _NUMBER,
}  # fmt: skip
_CLF = r"\[(\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\]"
# %{..}t forms that are exact or a fraction: (regex, scale to seconds)
_ABSOLUTE = {"sec": 1, "msec": 1e-3, "usec": 1e-6}
_FRACTION = {"msec_frac": (r"(\d{3})", 1e-3), "usec_frac": (r"(\d{6})", 1e-6)}
_T_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


def item_label(item: Item) -> str:
    """The item as written (without `<`/`>`), for messages: `%D`, `%{User-Agent}i`."""
    cond = ("!" if item.negate else "") + ",".join(map(str, item.statuses))
    return f"%{cond}{{{item.arg}}}{item.code}" if item.arg else f"%{cond}{item.code}"


def _time_item(arg: str) -> tuple[str, bool]:
    """%{...}t's argument without its begin:/end: prefix, and whether it is the end time."""
    if arg.startswith("begin") and (len(arg) == 5 or arg[5] == ":"):
        return arg[6:], False
    if arg.startswith("end") and (len(arg) == 3 or arg[3] == ":"):
        return arg[4:], True
    return arg, False


def _item_pattern(item: Item, quoted: bool) -> tuple[str, Callable[[str], float] | None]:
    """The regex for one item (its first `(` is its one capture group) and, for a strftime
    time, the reader of its text."""
    code, reader = item.code, None
    if code == "t":
        arg = _time_item(item.arg)[0]
        if not arg:
            pattern = _CLF
        elif arg in _ABSOLUTE:
            pattern = _NUMBER
        elif arg in _FRACTION:
            pattern = _FRACTION[arg][0]
        else:
            regex, reader = strftime_reader(arg)
            pattern = f"({regex})"
    elif code == "T":
        pattern = _NUMBER if item.arg.lower() in _T_UNITS else _ANY
    elif code in _PATTERNS:
        pattern = _PATTERNS[code]
    elif code == "U" and not quoted:  # often right before %q: the path stops at `?` or a space
        pattern = r"([^?\s]*)"
    else:
        pattern = _QUOTED if quoted else _ANY
    if item.statuses and not pattern.startswith("(-|"):
        pattern = f"(-|{pattern[1:-1]})"  # a status condition logs `-` for other statuses
    return pattern, reader


@dataclass
class _Source:
    """The item that feeds a field: its group, the expression converting it, how good it is."""

    group: int
    expr: str
    rank: float
    unit: float = 1.0  # service time: seconds per logged unit
    extra: tuple[int, ...] = ()  # more groups the expression reads (a time's fraction)


def _sources(parts: Sequence[str | Item]) -> tuple[dict[str, _Source], bool]:
    """The best item for each record field, and whether the time logged is the end time."""
    found: dict[str, _Source] = {}
    end_time = False
    fraction: tuple[int, float] | None = None

    def offer(name: str, source: _Source) -> bool:
        if item.statuses:  # logged for some statuses only: any other item is better
            source.rank -= 0.5
        if name in found and found[name].rank >= source.rank:
            return False
        found[name] = source
        return True

    for n, item in enumerate(parts):
        if not isinstance(item, Item):
            continue
        g, code, larg = f"g{n}", item.code, item.arg.lower()
        number = f"(None if {g} == '-' else int({g}))" if item.statuses else f"int({g})"
        if code == "t":
            arg, is_end = _time_item(item.arg)
            if arg in _FRACTION:
                fraction = (n, _FRACTION[arg][1])
            elif arg in _ABSOLUTE:
                scale = _ABSOLUTE[arg]
                exact = scale != 1
                expr = f"int({g}) / {round(1 / scale)}" if exact else f"float({g})"
                if offer("time", _Source(n, expr, 3 if exact else 1)):
                    end_time = is_end
            else:
                expr = f"(_clf_get({g}) or _clf({g}))" if not arg else f"_strf{n}({g})"
                if offer("time", _Source(n, expr, 1)):
                    end_time = is_end
        elif code == "D" or (code == "T" and larg in _T_UNITS):
            unit = 1e-6 if code == "D" else _T_UNITS[larg]
            expr = f"int({g}) / {round(1 / unit)}" if unit < 1 else f"float({g})"
            if item.statuses:
                expr = f"(None if {g} == '-' else {expr})"
            offer("service", _Source(n, expr, int(1 / unit), unit))
        elif code == "s":
            offer("status", _Source(n, f"(None if {g} == '-' else int({g}))", 1))
        elif code in ("b", "B", "O"):
            offer("bytes", _Source(n, f"(0 if {g} == '-' else int({g}))", 1 if code == "O" else 2))
        elif code in ("a", "h"):
            offer("client", _Source(n, g, 2 if code == "a" else 1))
        elif code == "k":
            offer("keepalive", _Source(n, number, 1))
        elif code == "U":
            offer("path", _Source(n, f"(None if {g} == '-' else {g})", 2))
        elif code == "r":
            offer("path", _Source(n, f"_rpath({g})", 1))
        elif code == "n" and larg == "mpmd-queued-ms":
            offer("queued", _Source(n, f"(None if {g} == '-' else int({g}) / 1000)", 1))
        elif code == "i" and larg == "user-agent":
            offer("user_agent", _Source(n, f"(None if {g} == '-' else {g})", 1))
    time_source = found.get("time")
    if fraction is not None and time_source is not None and time_source.rank < 2:
        index, scale = fraction
        found["time"] = _Source(time_source.group, f"({time_source.expr} + int(g{index}) / "
                                f"{round(1 / scale)})", 2, extra=(index,))  # fmt: skip
    return found, end_time


class LogParser:
    """A LogFormat compiled for reading lines back into AccessRecords.

    `fields` limits conversion to those record fields (the others stay None): a planner's
    pass over millions of lines converts only times and durations. What the format logs:
    `available` (the fields it can fill), `time_resolution` ("exact" with %{usec}t, %{msec}t
    or a %{msec_frac}t / %{usec_frac}t beside %t; "second" otherwise; None without a time),
    `service_unit` (seconds per logged unit: 1e-6 for %D, 1.0 for %T; None without one).
    """

    def __init__(self, fmt: str, fields: Iterable[str] = FIELDS, origin: str = "given") -> None:
        self.format = fmt
        self.origin = origin  # where the format came from, for reports ("detected", …)
        try:
            self.parts = split_format(fmt)
        except ValueError as err:
            raise LogFormatError(f"LogFormat {fmt!r}: {err}") from None
        wanted = set(fields)
        if not wanted <= set(FIELDS):
            raise ValueError(f"no such record field: {', '.join(sorted(wanted - set(FIELDS)))}")
        self.fields = tuple(name for name in FIELDS if name in wanted)
        sources, end_time = _sources(self.parts)
        self.available = frozenset(sources)
        time_source = sources.get("time")
        self.time_resolution = None if time_source is None else (
            "exact" if time_source.rank >= 2 else "second")  # fmt: skip
        self.service_unit = sources["service"].unit if "service" in sources else None
        used = {name: sources[name] for name in self.fields if name in sources}
        if end_time and "time" in used and "service" in sources:
            # %{end:...}t: the request started its duration before
            service = sources["service"]
            t = used["time"]
            used["time"] = _Source(t.group, f"({t.expr} - ({service.expr}))", t.rank,
                                   extra=(*t.extra, service.group))  # fmt: skip
        groups = {g for s in used.values() for g in (s.group, *s.extra)}
        self._pieces: list[tuple[str, str]] = []  # (regex, label) per part, every group captured
        namespace: dict[str, object] = {"_Rec": AccessRecord, "_clf": clf_epoch,
                                         "_clf_get": _clf_times.get, "_rpath": request_path}  # fmt: skip
        regex = []
        for n, part in enumerate(self.parts):
            if isinstance(part, str):
                self._pieces.append((re.escape(part), repr(part)))
                regex.append(re.escape(part))
                continue
            before = self.parts[n - 1] if n else ""
            after = self.parts[n + 1] if n + 1 < len(self.parts) else ""
            quoted = isinstance(before, str) and before.endswith('"') and (
                isinstance(after, str) and after.startswith('"'))  # fmt: skip
            pattern, reader = _item_pattern(part, quoted)
            if reader is not None:
                namespace[f"_strf{n}"] = reader
            self._pieces.append((pattern, item_label(part)))
            regex.append(pattern if n in groups else pattern.replace("(", "(?:", 1))
        self.regex = re.compile("".join(regex) + r"\r?$")
        namespace["_match"] = self.regex.match
        self.source = _generate(used, sorted(groups))
        exec(compile(self.source, f"<LogFormat reader {fmt!r}>", "exec"), namespace)
        self.parse_line: Callable[[str], AccessRecord | None] = namespace["_parse_line"]  # type: ignore[assignment]
        self._parse_all: Callable[..., int] = namespace["_parse_all"]  # type: ignore[assignment]
        self._prefixes: dict[int, re.Pattern[str]] = {}

    def missing(self, needs: Iterable[str]) -> list[str]:
        """What the format lacks of `needs` (record field names), as advice to the user."""
        return [ADVICE[name] for name in needs if name not in self.available]

    def require(self, needs: Iterable[str]) -> None:
        """Raise LogFormatError saying exactly what to add when a needed field is missing."""
        missing = self.missing(needs)
        if missing:
            raise LogFormatError(f"LogFormat {self.format!r}: " + "; ".join(missing))

    def why(self, line: str) -> str:
        """Why `line` does not parse: how far it matched and what was expected there."""
        cut = "" if line.endswith("\n") else ", no newline at the end"  # a write cut short
        line = line.rstrip("\r\n")
        matched, failed, last = 0, len(self._pieces), "the start"
        for k, (_, label) in enumerate(self._pieces):
            prefix = self._prefixes.get(k)
            if prefix is None:
                prefix = re.compile("".join(p for p, _ in self._pieces[: k + 1]))
                self._prefixes[k] = prefix
            m = prefix.match(line)
            if m is None:
                failed = k
                break
            matched = m.end()
            if label.startswith("%"):
                last = label
        if failed == len(self._pieces) and self.regex.match(line):
            return "a value out of range" + cut
        if matched >= len(line):
            return f"truncated after {last}{cut}"
        label = self._pieces[failed][1] if failed < len(self._pieces) else "the end of the line"
        what = label if label[0] in "%t" else f"{label} after {last}"
        return f"expected {what} at column {matched + 1}: {line[matched : matched + 24]!r}{cut}"

    def parse_lines(
        self,
        lines: Iterable[str],
        first_line: int = 1,
        sink: Callable[[AccessRecord], object] | None = None,
    ) -> ParseResult:
        """Parse an iterable of lines (newlines kept or not) into `result.records`, or into
        `sink(record)` one by one (records then are not kept: a summary of a huge log needs no
        list of it). Bad lines are counted, kept with their line numbers (the first
        MAX_REPORTED) and skipped."""
        result = ParseResult(self)
        append = result.records.append if sink is None else sink
        result.lines = self._parse_all(lines, first_line, append, result._bad)
        return result


def _generate(used: dict[str, _Source], groups: list[int]) -> str:
    """The source of `_parse_line(line)` and `_parse_all(lines, first, append, bad)`."""
    names = [f"g{g}" for g in groups]
    if len(names) == 1:
        unpack = f"{names[0]} = m.group(1)"
    else:
        unpack = f"{', '.join(names)} = m.groups()" if names else "pass"
    values = ", ".join(used[name].expr if name in used else "None" for name in FIELDS)
    return f"""\
def _parse_line(line):
    m = _match(line)
    if m is None:
        return None
    {unpack}
    return _Rec({values})


def _parse_all(lines, first, append, bad):
    match = _match
    number = first - 1
    for number, line in enumerate(lines, first):
        m = match(line)
        if m is None:
            bad(number, line)
            continue
        {unpack}
        try:
            append(_Rec({values}))
        except (ValueError, KeyError, OverflowError):
            bad(number, line)
    return number - first + 1
"""


MAX_REPORTED = 100  # skipped lines kept with their reasons; all are counted


@dataclass
class ParseResult:
    """The records of a log, and the lines that were not requests."""

    parser: LogParser
    records: list[AccessRecord] = field(default_factory=list)
    lines: int = 0  # lines read
    skipped: int = 0  # lines that did not parse (blank lines are not counted)
    skipped_lines: list[tuple[int, str]] = field(default_factory=list)  # (number, reason)

    def _bad(self, number: int, line: str) -> None:
        if not line.strip():
            return
        self.skipped += 1
        if len(self.skipped_lines) < MAX_REPORTED:
            self.skipped_lines.append((number, self.parser.why(line)))

    def skipped_summary(self, shown: int = 10) -> str:
        """`3 lines skipped: line 12 (truncated: ends before %>s), …`; empty if none."""
        if not self.skipped:
            return ""
        noun = "line" if self.skipped == 1 else "lines"
        listed = ", ".join(f"line {n} ({why})" for n, why in self.skipped_lines[:shown])
        more = ", …" if self.skipped > min(shown, len(self.skipped_lines)) else ""
        return f"{self.skipped} {noun} skipped: {listed}{more}"


def open_log(path: str):
    """A log file for reading as text (gzip'ed rotations too). Apache escapes every byte
    outside printable ASCII, so latin-1 reads any line, even a garbled one, without failing."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="latin-1", newline="")
    return open(path, encoding="latin-1", newline="")


def read_access_log(
    path: str, parser: LogParser, sink: Callable[[AccessRecord], object] | None = None
) -> ParseResult:
    """Parse a whole access log file with `parser` (tools/logformats.py chooses one); see
    LogParser.parse_lines for `sink`."""
    with open_log(path) as lines:
        return parser.parse_lines(lines, sink=sink)
