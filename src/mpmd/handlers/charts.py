"""The status page's history charts: small line charts as inline SVG, no script, no assets.

It owns turning the scoreboard's once-a-second history ring (the last hour) into SVG markup:
requests/s and bytes/s from the cumulative counters, busy and idle workers against
MaxRequestWorkers (the seconds the pool was full are shaded), processes, the PSS and USS of
the whole process tree, and for the event MPM its connections. It never reads shared memory or the clock: it draws the samples given.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from mpmd.mpm.scoreboard import HistorySample

WIDTH = 560
HEIGHT = 150
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 10, 26, 20
_PLOT_W = WIDTH - _LEFT - _RIGHT
_PLOT_H = HEIGHT - _TOP - _BOTTOM
BUSY_COLOUR = "#c0392b"
IDLE_COLOUR = "#27ae60"
LINE_COLOUR = "#2c6fbb"
FULL_COLOUR = "#f5b7b1"


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at or above `value` (at least 1): the y-axis top."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def short_number(value: float) -> str:
    """1500 -> `1.5k`, 2_000_000 -> `2M`: axis labels that fit in 50 pixels."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def per_second(samples: Sequence[HistorySample]) -> tuple[list[float], list[float], list[float]]:
    """(times, requests/s, bytes/s) between consecutive samples; a counter reset counts as 0."""
    times: list[float] = []
    requests: list[float] = []
    sent: list[float] = []
    for before, after in itertools.pairwise(samples):
        elapsed = (after.time_us - before.time_us) / 1_000_000
        if elapsed <= 0:
            continue
        times.append(after.time_us / 1_000_000)
        requests.append(max(0, after.accesses - before.accesses) / elapsed)
        sent.append(max(0, after.bytes - before.bytes) / elapsed)
    return times, requests, sent


def _downsample(times: Sequence[float], values: Sequence[float]) -> list[tuple[float, float]]:
    """At most one point per pixel column, keeping each column's maximum (spikes stay)."""
    if len(values) <= _PLOT_W:
        return list(zip(times, values, strict=True))
    step = math.ceil(len(values) / _PLOT_W)
    return [
        (times[i], max(values[i : i + step]))
        for i in range(0, len(values), step)  # the column's first time, its highest value
    ]


def line_chart(
    title: str,
    times: Sequence[float],
    series: Sequence[tuple[str, str, Sequence[float]]],
    *,
    limit: tuple[str, float] | None = None,
    shade: Sequence[bool] = (),
    bytes_axis: bool = False,
    span_labels: tuple[str, str] | None = None,
) -> str:
    """One chart: `series` is (label, colour, values) over `times`; `limit` a dashed line;
    `span_labels` names the x axis's ends (default: how long ago, and now)."""
    start, end = times[0], times[-1]
    span = max(end - start, 1.0)
    top = max((max(values) for _, _, values in series if values), default=0.0)
    if limit is not None:
        top = max(top, limit[1])
    top = nice_ceiling(top * 1.05)

    def x(t: float) -> float:
        return _LEFT + (t - start) / span * _PLOT_W

    def y(v: float) -> float:
        return _TOP + _PLOT_H - v / top * _PLOT_H

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="mpmd-chart" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{title}</title>",
        f'<rect x="{_LEFT}" y="{_TOP}" width="{_PLOT_W}" height="{_PLOT_H}" fill="#fafafa" '
        'stroke="#999"/>',
    ]
    column = _PLOT_W / max(len(times) - 1, 1)
    for t, full in zip(times, shade, strict=False):
        if full:
            out.append(
                f'<rect class="full" x="{x(t) - column / 2:.1f}" y="{_TOP}" '
                f'width="{max(column, 1.0):.1f}" height="{_PLOT_H}" fill="{FULL_COLOUR}"/>'
            )
    for fraction in (0.25, 0.5, 0.75):
        gy = _TOP + _PLOT_H * fraction
        out.append(
            f'<line x1="{_LEFT}" y1="{gy:.1f}" x2="{_LEFT + _PLOT_W}" y2="{gy:.1f}" stroke="#e3e3e3"/>'
        )
    if limit is not None:
        ly = y(limit[1])
        out.append(
            f'<line class="limit" x1="{_LEFT}" y1="{ly:.1f}" x2="{_LEFT + _PLOT_W}" '
            f'y2="{ly:.1f}" stroke="#555" stroke-dasharray="4 3"/>'
        )
        out.append(
            f'<text x="{_LEFT + _PLOT_W - 2}" y="{ly - 3:.1f}" text-anchor="end" fill="#555">'
            f"{limit[0]} {limit[1]:g}</text>"
        )
    legend_x = _LEFT + 8 + len(title) * 6.5
    for label, colour, values in series:
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in _downsample(times, values))
        out.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}">'
            f"<title>{label}</title></polyline>"
        )
        out.append(f'<text x="{legend_x:.0f}" y="16" fill="{colour}">&#9632; {label}</text>')
        legend_x += 22 + len(label) * 6.5
    label = short_number(top) + ("B" if bytes_axis else "")
    minutes = span / 60
    ago = f"-{minutes:.0f} min" if minutes >= 1 else f"-{span:.0f} s"
    ago, now = span_labels or (ago, "now")
    out += [
        f'<text x="{_LEFT}" y="16" font-weight="bold">{title}</text>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 9}" text-anchor="end">{label}</text>',
        f'<text x="{_LEFT - 4}" y="{_TOP + _PLOT_H}" text-anchor="end">0</text>',
        f'<text x="{_LEFT}" y="{HEIGHT - 5}">{ago}</text>',
        f'<text x="{_LEFT + _PLOT_W}" y="{HEIGHT - 5}" text-anchor="end">{now}</text>',
        "</svg>",
    ]
    return "".join(out)


def history_section(
    samples: Sequence[HistorySample], max_request_workers: int, show_connections: bool
) -> str:
    """The page's History section: one chart per measure, or a note while samples gather."""
    head = "<hr /><h2>History</h2>\n"
    if len(samples) < 3:
        return head + "<p>Collecting history: the parent samples the scoreboard every second.</p>\n"
    times, requests, sent = per_second(samples)
    later = samples[1:]
    busy = [float(s.busy) for s in later]
    idle = [float(s.idle) for s in later]
    full = [s.busy >= max_request_workers for s in later]
    charts = [
        line_chart("Requests/s", times, [("requests", LINE_COLOUR, requests)]),
        line_chart("Bytes/s", times, [("sent", LINE_COLOUR, sent)], bytes_axis=True),
        line_chart(
            "Workers",
            times,
            [("busy", BUSY_COLOUR, busy), ("idle", IDLE_COLOUR, idle)],
            limit=("MaxRequestWorkers", float(max_request_workers)),
            shade=full,
        ),
        line_chart("Processes", times, [("processes", LINE_COLOUR, [s.processes for s in later])]),
        line_chart(
            "Memory",
            times,
            [
                ("PSS", LINE_COLOUR, [s.pss_kib * 1024.0 for s in later]),
                ("USS", BUSY_COLOUR, [s.uss_kib * 1024.0 for s in later]),
            ],
            bytes_axis=True,
        ),
    ]
    if show_connections:
        values = [float(s.async_connections) for s in later]
        charts.append(line_chart("Connections", times, [("open", LINE_COLOUR, values)]))
    note = ""
    if any(full):
        seconds = sum(full)
        note = (
            f"<p>MaxRequestWorkers was reached during {seconds} of the last "
            f"{len(full)} seconds (shaded).</p>\n"
        )
    return head + '<div class="mpmd-history">\n' + "\n".join(charts) + "\n</div>\n" + note
