"""`mpmctl logs`: access and error logs summarised, as aligned text for the terminal.

This module owns telling the files apart (an error log's lines start with a bracketed ctime
date), reading each with tools/accesslog.py or tools/errorlog.py, the figures of the summary
(requests and bytes per time bucket, status mix, the slowest URL paths by service time, top
clients and user agents, the error patterns with their times) and their text rendering. The
HTML report (tools/logreport.py) draws the same `Summary`. Nothing here runs a server.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from mpmd.tools.accesslog import AccessRecord, LogParser, open_log, read_access_log
from mpmd.tools.errorlog import (
    PATTERNS,
    ErrorEvent,
    looks_like_error_log,
    pattern_of,
    read_error_log,
)
from mpmd.tools.logformats import resolve_format, sample

BUCKETS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400)
MAX_BUCKETS = 120  # points in a chart
TEXT_ROWS = 30  # rows in the terminal's table
TOP = 10


@dataclass
class UrlTimes:
    """Service times of one URL path, in seconds."""

    path: str
    requests: int
    p50: float
    p95: float
    max: float


@dataclass
class AccessFile:
    """One access log as read: its format, where the format came from, the lines skipped."""

    path: str
    parser: LogParser
    lines: int
    skipped: int
    skipped_summary: str


@dataclass
class Summary:
    """Everything `mpmctl logs` reports, for the text and HTML renderings."""

    access_files: list[AccessFile] = field(default_factory=list)
    error_files: list[tuple[str, int, int]] = field(default_factory=list)  # path, events, other
    requests: int = 0
    bytes: int = 0
    first: float | None = None
    last: float | None = None
    bucket: int = 60
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # start, requests, bytes
    statuses: Counter[int] = field(default_factory=Counter)
    slowest: list[UrlTimes] = field(default_factory=list)
    clients: list[tuple[str, int]] = field(default_factory=list)
    agents: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the logs could not show, and why
    errors: list[ErrorEvent] = field(default_factory=list)
    patterns: list[tuple[str, list[ErrorEvent]]] = field(default_factory=list)
    levels: Counter[str] = field(default_factory=Counter)
    messages: list[tuple[str, int]] = field(default_factory=list)  # most frequent other lines


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def choose_bucket(span: float) -> int:
    """The smallest bucket from BUCKETS that draws `span` seconds in at most MAX_BUCKETS."""
    for bucket in BUCKETS:
        if span / bucket <= MAX_BUCKETS:
            return bucket
    return BUCKETS[-1]


def summarise(
    paths: Sequence[str],
    *,
    log_format: str | None = None,
    config: str | None = None,
    bucket: int | None = None,
) -> Summary:
    """Read every file (access or error log, told apart by content) into one Summary.

    Raises LogFormatError when an access log's format cannot be found."""
    summary = Summary()
    totals = _Totals()
    for path in paths:
        head = sample(path)
        if not any(line.strip() for line in head):
            summary.notes.append(f"{path} is empty")
            continue
        if looks_like_error_log(head):
            with open_log(path) as lines:
                events, other = read_error_log(lines)
            summary.errors.extend(events)
            summary.error_files.append((path, len(events), other))
            continue
        fmt, origin = resolve_format(log_format, config=config, access_log=path, lines=head)
        parser = LogParser(fmt, origin=origin)
        result = read_access_log(path, parser, sink=totals.add)
        summary.access_files.append(
            AccessFile(path, parser, result.lines, result.skipped, result.skipped_summary())
        )
    totals.into(summary, bucket)
    _error_figures(summary)
    return summary


class _Totals:
    """What the access summary needs, gathered record by record (a log is never held whole):
    per-second counts, so the bucket can be chosen once the span is known."""

    def __init__(self) -> None:
        self.requests = 0
        self.per_second: Counter[int] = Counter()
        self.sent_per_second: Counter[int] = Counter()
        self.untimed_bytes = 0
        self.statuses: Counter[int] = Counter()
        self.services: defaultdict[str, list[float]] = defaultdict(list)
        self.clients: Counter[str] = Counter()
        self.agents: Counter[str] = Counter()

    def add(self, r: AccessRecord) -> None:
        self.requests += 1
        size = r.bytes or 0
        if r.time is not None:
            second = int(r.time)
            self.per_second[second] += 1
            self.sent_per_second[second] += size
        else:
            self.untimed_bytes += size
        if r.status is not None:
            self.statuses[r.status] += 1
        if r.service is not None and r.path is not None:
            self.services[r.path].append(r.service)
        if r.client:
            self.clients[r.client] += 1
        if r.user_agent:
            self.agents[r.user_agent] += 1

    def into(self, summary: Summary, bucket: int | None) -> None:
        summary.requests = self.requests
        summary.bytes = self.untimed_bytes + sum(self.sent_per_second.values())
        available = set().union(*(f.parser.available for f in summary.access_files))
        for name in ("time", "service", "status", "client", "path", "user_agent"):
            if summary.access_files and name not in available:
                summary.notes.append(summary.access_files[0].parser.missing([name])[0])
        if self.per_second:
            first, last = min(self.per_second), max(self.per_second)
            summary.first, summary.last = float(first), float(last)
            size = summary.bucket = bucket or choose_bucket(last - first)
            counts: Counter[int] = Counter()
            sent: Counter[int] = Counter()
            for second, n in self.per_second.items():
                counts[second // size] += n
                sent[second // size] += self.sent_per_second[second]
            keys = range(first // size, last // size + 1)
            summary.timeline = [(k * size, counts[k], sent[k]) for k in keys]
        summary.statuses = self.statuses
        slowest = []
        for path, values in self.services.items():
            values.sort()
            slowest.append(UrlTimes(path, len(values), percentile(values, 50),
                                    percentile(values, 95), values[-1]))  # fmt: skip
        slowest.sort(key=lambda u: (-u.p95, -u.max, u.path))
        summary.slowest = slowest[:TOP]
        summary.clients = self.clients.most_common(TOP)
        summary.agents = self.agents.most_common(TOP)


def _error_figures(summary: Summary) -> None:
    events = sorted(summary.errors, key=lambda e: e.time)
    summary.errors = events
    grouped: dict[str, list[ErrorEvent]] = {name: [] for name, _ in PATTERNS}
    other: Counter[str] = Counter()
    for event in events:
        summary.levels[event.level] += 1
        name = pattern_of(event)
        if name is not None:
            grouped[name].append(event)
        elif event.level in ("emerg", "alert", "crit", "error", "warn"):
            other[f"{event.id}: {event.message[:80]}" if event.id else event.message[:80]] += 1
    summary.patterns = [(name, found) for name, found in grouped.items() if found]
    summary.messages = other.most_common(TOP)


# -- text ------------------------------------------------------------------------------------


def stamp(when: float, *, seconds: bool = True) -> str:
    """Local date and time, as the logs themselves show it."""
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", time.localtime(when))


def size_text(count: float) -> str:
    """Bytes as `12.3 MB`."""
    for limit, unit in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "kB")):
        if count >= limit:
            return f"{count / limit:.1f} {unit}"
    return f"{int(count)} B"


def bucket_text(bucket: int) -> str:
    if bucket % 3600 == 0:
        return f"{bucket // 3600} h" if bucket > 3600 else "hour"
    if bucket % 60 == 0:
        return f"{bucket // 60} min" if bucket > 60 else "minute"
    return f"{bucket} s" if bucket > 1 else "second"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  "
) -> list[str]:
    """Aligned columns: the first left-aligned, the others right-aligned."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append((indent + "  ".join(parts)).rstrip())
    return lines


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def status_rows(statuses: Counter[int]) -> list[tuple[str, int, str]]:
    """(status or class, count, share) rows: each class, then its codes."""
    total = sum(statuses.values()) or 1
    rows = []
    for cls in sorted({code // 100 for code in statuses}):
        codes = {c: n for c, n in statuses.items() if c // 100 == cls}
        count = sum(codes.values())
        rows.append((f"{cls}xx", count, f"{100 * count / total:.1f}%"))
        for code, n in sorted(codes.items()):
            rows.append((f"  {code}", n, f"{100 * n / total:.1f}%"))
    return rows


def coarsen(
    timeline: list[tuple[float, int, int]], bucket: int, rows: int
) -> tuple[int, list[tuple[float, int, int]]]:
    """The timeline in the smallest multiple of `bucket` from BUCKETS that fits `rows` rows
    (a terminal wants fewer rows than a chart has points)."""
    span = len(timeline) * bucket
    wider = next(
        (b for b in BUCKETS if b >= bucket and b % bucket == 0 and span / b <= rows), bucket
    )
    if wider == bucket:
        return bucket, timeline
    merged: dict[int, list[int]] = {}
    for start, count, sent in timeline:
        totals = merged.setdefault(int(start // wider), [0, 0])
        totals[0] += count
        totals[1] += sent
    return wider, [(k * wider, n, b) for k, (n, b) in sorted(merged.items())]


def render_text(summary: Summary) -> str:
    out: list[str] = []
    for f in summary.access_files:
        out.append(f"Access log {f.path}: {f.lines} lines, LogFormat ({f.parser.origin}) "
                   f"{f.parser.format}")  # fmt: skip
        if f.skipped_summary:
            out.append("  " + f.skipped_summary)
    if summary.access_files:
        out.append("")
        if summary.first is not None and summary.last is not None:
            span = summary.last - summary.first
            rate = summary.requests / span if span > 0 else float(summary.requests)
            out.append(f"{summary.requests} requests, {size_text(summary.bytes)}, "
                       f"{stamp(summary.first)} to {stamp(summary.last)} "
                       f"({span:.0f} s, {rate:.2f} requests/s)")  # fmt: skip
        else:
            out.append(f"{summary.requests} requests, {size_text(summary.bytes)}")
        out += ["  " + note for note in summary.notes]
        if summary.timeline:
            bucket, timeline = coarsen(summary.timeline, summary.bucket, TEXT_ROWS)
            out += ["", f"Requests over time (per {bucket_text(bucket)})"]
            rows = [(stamp(t), n, size_text(b)) for t, n, b in timeline]
            out += table(("time", "requests", "bytes"), rows)
        if summary.statuses:
            out += ["", "Status"]
            out += table(("status", "requests", "share"), status_rows(summary.statuses))
        if summary.slowest:
            out += ["", "Slowest URLs (service time, ms)"]
            rows = [(u.path, u.requests, ms(u.p50), ms(u.p95), ms(u.max)) for u in summary.slowest]
            out += table(("path", "requests", "p50", "p95", "max"), rows)
        for title, what, ranked in (
            ("Top clients", "client", summary.clients),
            ("Top user agents", "user agent", summary.agents),
        ):
            if ranked:
                out += ["", title]
                out += table((what, "requests"), [(name[:70], n) for name, n in ranked])
    for path, events, other in summary.error_files:
        out += ["", f"Error log {path}: {events} entries" + (
            f", {other} other lines (continuations)" if other else "")]  # fmt: skip
    if summary.error_files:
        if summary.levels:
            out.append(
                "  levels: " + ", ".join(f"{n} {lv}" for lv, n in summary.levels.most_common())
            )
        out += ["", "Error-log patterns"]
        if not summary.patterns:
            out.append("  none of: " + ", ".join(name for name, _ in PATTERNS))
        rows = [(name, len(found), stamp(found[0].time), stamp(found[-1].time))
                for name, found in summary.patterns]  # fmt: skip
        if rows:
            out += table(("pattern", "count", "first", "last"), rows)
        for name, found in summary.patterns:
            shown = ", ".join(time.strftime("%H:%M:%S", time.localtime(e.time)) for e in found[:12])
            more = f" (+{len(found) - 12} more)" if len(found) > 12 else ""
            out.append(f"  {name} at: {shown}{more}")
        if summary.messages:
            out += ["", "Other warnings and errors"]
            out += table(("message", "count"), summary.messages)
    return "\n".join(out) + "\n"
