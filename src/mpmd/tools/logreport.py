"""`mpmctl logs --html`: the log summary as one self-contained HTML page.

This module owns rendering a tools/logsummary.py `Summary` as HTML: inline SVG charts (the
status page's line charts from handlers/charts.py, and horizontal bars here), inline CSS, no
script and no external asset, so the file can be mailed or attached to a ticket as it is. Every
text that came from a log is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from html import escape

from mpmd import SERVER_SOFTWARE
from mpmd.handlers.charts import LINE_COLOUR, line_chart
from mpmd.tools.logsummary import (
    Summary,
    bucket_text,
    ms,
    size_text,
    stamp,
    status_rows,
)

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.4em 0; }
th, td { padding: 0.15em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
code { background: #f3f3f3; padding: 0 0.2em; }
.note { color: #8a5a00; }
"""
_STATUS_COLOURS = {1: "#7f8c8d", 2: "#27ae60", 3: "#2c6fbb", 4: "#e67e22", 5: "#c0392b"}
_PATTERN_COLOURS = ("#c0392b", "#e67e22", "#8e44ad", "#2c6fbb", "#16a085", "#7f8c8d")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>\n" for row in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def bar_chart(title: str, bars: Sequence[tuple[str, float, str]], width: int = 560) -> str:
    """Horizontal bars (label, value, colour), longest = full width; an inline SVG."""
    row, left = 20, 150
    height = 26 + row * len(bars)
    top = max((v for _, v, _ in bars), default=0) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="0" y="14" font-weight="bold">{escape(title)}</text>',
    ]
    for n, (label, value, colour) in enumerate(bars):
        y = 22 + n * row
        w = (width - left - 60) * value / top
        out.append(
            f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(label[:24])}</text>'
        )
        out.append(
            f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="{colour}"/>'
        )
        out.append(f'<text x="{left + w + 4:.1f}" y="{y + 12}">{value:g}</text>')
    out.append("</svg>")
    return "".join(out)


def _span_labels(summary: Summary) -> tuple[str, str]:
    assert summary.first is not None and summary.last is not None
    return stamp(summary.first), stamp(summary.last)


def _overview(summary: Summary) -> list[str]:
    out = ['<section id="overview"><h2>Overview</h2>', "<ul>"]
    for f in summary.access_files:
        out.append(f"<li>Access log <code>{escape(f.path)}</code>: {f.lines} lines, LogFormat "
                   f"({escape(f.parser.origin)}) <code>{escape(f.parser.format)}</code></li>")  # fmt: skip
        if f.skipped_summary:
            out.append(f'<li class="note">{escape(f.skipped_summary)}</li>')
    for path, events, other in summary.error_files:
        out.append(f"<li>Error log <code>{escape(path)}</code>: {events} entries"
                   + (f", {other} other lines" if other else "") + "</li>")  # fmt: skip
    out.append("</ul>")
    if summary.access_files:
        text = f"{summary.requests} requests, {size_text(summary.bytes)}"
        if summary.first is not None and summary.last is not None:
            text += f", {stamp(summary.first)} to {stamp(summary.last)}"
        out.append(f"<p>{escape(text)}</p>")
    out += [f'<p class="note">{escape(note)}</p>' for note in summary.notes]
    out.append("</section>")
    return out


def _timeline(summary: Summary) -> list[str]:
    out = [
        '<section id="timeline">',
        f"<h2>Requests over time (per {bucket_text(summary.bucket)})</h2>",
    ]
    if not summary.timeline:
        return [*out, "<p>No request times in the log.</p>", "</section>"]
    times = [t + summary.bucket / 2 for t, _, _ in summary.timeline]
    labels = _span_labels(summary)
    requests = [float(n) for _, n, _ in summary.timeline]
    sent = [float(b) for _, _, b in summary.timeline]
    out.append(
        line_chart("Requests", times, [("requests", LINE_COLOUR, requests)], span_labels=labels)
    )
    out.append(
        line_chart(
            "Bytes", times, [("sent", LINE_COLOUR, sent)], bytes_axis=True, span_labels=labels
        )
    )
    out.append("</section>")
    return out


def _requests(summary: Summary) -> list[str]:
    out = ['<section id="status"><h2>Status</h2>']
    if summary.statuses:
        classes: dict[int, int] = {}
        for code, n in summary.statuses.items():
            classes[code // 100] = classes.get(code // 100, 0) + n
        bars = [
            (f"{c}xx", float(n), _STATUS_COLOURS.get(c, "#555")) for c, n in sorted(classes.items())
        ]
        out.append(bar_chart("Requests by status class", bars))
        out.append(_table(("status", "requests", "share"), status_rows(summary.statuses)))
    else:
        out.append("<p>The log has no status.</p>")
    out.append('</section>\n<section id="slowest"><h2>Slowest URLs (service time, ms)</h2>')
    if summary.slowest:
        rows = [(u.path, u.requests, ms(u.p50), ms(u.p95), ms(u.max)) for u in summary.slowest]
        out.append(_table(("path", "requests", "p50", "p95", "max"), rows))
    else:
        out.append("<p>The log has no service times (add <code>%D</code> to the LogFormat).</p>")
    out.append("</section>")
    for key, title, what, ranked in (
        ("clients", "Top clients", "client", summary.clients),
        ("agents", "Top user agents", "user agent", summary.agents),
    ):
        out.append(f'<section id="{key}"><h2>{title}</h2>')
        out.append(_table((what, "requests"), ranked) if ranked else "<p>Not in the log.</p>")
        out.append("</section>")
    return out


def _errors(summary: Summary) -> list[str]:
    out = ['<section id="errors"><h2>Error-log patterns</h2>']
    if not summary.patterns:
        out.append("<p>None of the tuning patterns (MaxRequestWorkers reached, hung requests, "
                   "child crashes, proxy member failures) occur.</p>")  # fmt: skip
    else:
        rows = [(name, len(found), stamp(found[0].time), stamp(found[-1].time))
                for name, found in summary.patterns]  # fmt: skip
        out.append(_table(("pattern", "count", "first", "last"), rows))
        events = summary.errors
        start = events[0].time
        end = max(events[-1].time, start + 1)
        if summary.first is not None and summary.last is not None:
            start, end = min(start, summary.first), max(end, summary.last)
        bucket = max(1, int((end - start) // 60) or 1)
        count = int((end - start) // bucket) + 1
        times = [start + (k + 0.5) * bucket for k in range(max(count, 2))]
        series = []
        for n, (name, found) in enumerate(summary.patterns):
            values = [0.0] * len(times)
            for e in found:
                values[min(int((e.time - start) // bucket), len(times) - 1)] += 1
            series.append((escape(name), _PATTERN_COLOURS[n % len(_PATTERN_COLOURS)], values))
        out.append(line_chart(f"Events per {bucket_text(bucket)}", times, series,
                              span_labels=(stamp(start), stamp(end))))  # fmt: skip
        for name, found in summary.patterns:
            when = ", ".join(time.strftime("%H:%M:%S", time.localtime(e.time)) for e in found[:50])
            out.append(f"<p><b>{escape(name)}</b> at {when}</p>")
    if summary.messages:
        out.append("<h3>Other warnings and errors</h3>")
        out.append(_table(("message", "count"), summary.messages))
    out.append("</section>")
    return out


def render_html(summary: Summary) -> str:
    """The whole page."""
    body = _overview(summary)
    if summary.access_files:
        body += _timeline(summary) + _requests(summary)
    if summary.error_files:
        body += _errors(summary)
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Log report</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>Log report</h1>\n<p>{escape(SERVER_SOFTWARE)} <code>mpmctl logs</code>, {generated}</p>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
