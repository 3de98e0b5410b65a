"""mod_status formats without a server: a scoreboard in a temp file, filled as workers would."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from mpmd.config.build import load_config
from mpmd.handlers import charts, status
from mpmd.handlers.status import (
    StatusFacts,
    StatusView,
    apr_g,
    format_bytes,
    format_kbytes,
    parse_query,
    render_auto,
    render_html,
    render_terminal,
    show_time,
    wrap_grid,
)
from mpmd.mpm.scoreboard import GRACEFUL, READY, HistorySample, Scoreboard

AUTO_NAMES_EVENT = [
    "ServerVersion",
    "ServerMPM",
    "Server Built",
    "CurrentTime",
    "RestartTime",
    "ParentServerConfigGeneration",
    "ParentServerMPMGeneration",
    "ServerUptimeSeconds",
    "ServerUptime",
    "Load1",
    "Load5",
    "Load15",
    "Total Accesses",
    "Total kBytes",
    "Total Duration",
    "CPUUser",
    "CPUSystem",
    "CPUChildrenUser",
    "CPUChildrenSystem",
    "Uptime",
    "ReqPerSec",
    "BytesPerSec",
    "BytesPerReq",
    "DurationPerReq",
    "BusyWorkers",
    "GracefulWorkers",
    "IdleWorkers",
    "Processes",
    "Stopping",
    "ConnsTotal",
    "ConnsAsyncWaitIO",
    "ConnsAsyncWriting",
    "ConnsAsyncKeepAlive",
    "ConnsAsyncClosing",
    "Scoreboard",
]  # fmt: skip  (reference 4.4's real capture, in order)


def _config(tmp_path: Path, mpm: str, extended: bool):
    conf = tmp_path / f"{mpm}.conf"
    conf.write_text(
        f"LoadModule status_module modules/mod_status.so\n"
        f"ExtendedStatus {'On' if extended else 'Off'}\n"
        f"Listen 127.0.0.1:8080\nServerName localhost\nPidFile {tmp_path}/pid\n"
    )
    return load_config(str(conf), mpm=mpm)


def _scoreboard(tmp_path: Path, config, processes: int = 3) -> Scoreboard:
    mpm = config.mpm
    board = Scoreboard.create(
        str(tmp_path / "sb"),
        mpm.server_limit,
        mpm.thread_limit,
        mpm.name,
        threads_per_child=mpm.threads_per_child,
        max_request_workers=mpm.max_request_workers,
    )
    for slot in range(processes):
        board.process(slot).start(4000 + slot, 0)
        for thread in range(mpm.threads_per_child):
            record = board.worker(slot, thread)
            record.reset_for_new_child(4000 + slot, 0)
            record.set_state(READY)
    return board


def _serve(board: Scoreboard, slot: int, thread: int, sizes_us: list[tuple[int, int]]) -> None:
    record = board.worker(slot, thread)
    for size, duration in sizes_us:
        now = time.time_ns() // 1000
        record.request_start("GET /x HTTP/1.1", "127.0.0.1", "localhost", "HTTP/1.1", now)
        record.request_end(size, duration, now + duration)
    record.set_state(READY)


def test_apr_g_drops_the_leading_zero_and_keeps_six_digits():
    assert apr_g(5000 / 21 / 1000) == ".238095"
    assert apr_g(10.5) == "10.5"
    assert apr_g(3072.0) == "3072"
    assert apr_g(1024 * 6 / 21) == "292.571"
    assert apr_g(0.0) == "0"
    assert apr_g(0.01) == ".01"


def test_show_time_and_byte_formats_match_mod_status():
    assert show_time(0) == ""
    assert show_time(1) == " 1 second"
    assert show_time(90061) == " 1 day 1 hour 1 minute 1 second"
    assert show_time(2 * 86400 + 120) == " 2 days 2 minutes"
    assert format_bytes(1433) == "1433 B"
    assert format_bytes(7 * 1024) == "7.0 kB"
    assert format_bytes(3 * 1048576) == "3.0 MB"
    assert format_kbytes(7) == "7 kB"
    assert format_kbytes(2048) == "2.0 MB"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", (False, False, None)),
        ("auto", (True, False, None)),
        ("refresh", (False, False, 10)),
        ("refresh=5", (False, False, 5)),
        ("refresh=0", (False, False, 10)),
        ("refresh=3x&auto", (True, False, 3)),
        ("x=notable", (False, True, None)),
        ("refresh=" + "9" * 5000, (False, False, int("9" * 18))),  # atol's range
        ("refresh=\u00b2", (False, False, 10)),
    ],
)
def test_query_options_match_as_substrings(query, expected):
    assert parse_query(query) == expected


def test_auto_event_extended_has_apaches_lines_in_order(tmp_path):
    config = _config(tmp_path, "event", True)
    board = _scoreboard(tmp_path, config)
    board.restart_time = time.time_ns() // 1000 - 2_000_000  # up 2 s, as the capture
    _serve(board, 0, 0, [(292, 238)] * 21)
    text = render_auto(StatusView(board.snapshot(), StatusFacts(config)), "127.0.0.1")
    lines = text.split("\n")
    assert lines[0] == "127.0.0.1" and text.endswith("\n")
    names = [line.split(":", 1)[0] for line in lines[1:-1]]
    # request_end stored this process's CPU times, so CPULoad follows the CPU lines, as in
    # Apache's captures taken after CPU time accrued
    assert names.index("CPULoad") == names.index("CPUChildrenSystem") + 1
    assert [name for name in names if name != "CPULoad"] == AUTO_NAMES_EVENT
    values = dict(line.split(": ", 1) for line in lines[1:-1] if ": " in line)
    assert values["Total Accesses"] == "21"
    assert values["Total kBytes"] == str(292 * 21 // 1024)
    assert values["ReqPerSec"] == "10.5"
    assert values["DurationPerReq"] == ".238"
    assert values["BusyWorkers"] == "0" and values["IdleWorkers"] == "75"
    assert values["Processes"] == "3"
    assert values["ServerVersion"].startswith("mpmd/")
    assert len(values["Scoreboard"]) == 400
    assert re.fullmatch(r"\w+, \d\d-\w{3}-\d{4} \d\d:\d\d:\d\d \S+", values["CurrentTime"])
    board.unlink()


def test_auto_prefork_without_extended_status_is_short(tmp_path):
    config = _config(tmp_path, "prefork", False)
    board = _scoreboard(tmp_path, config, processes=5)
    board.worker(1, 0).connection_start()
    text = render_auto(StatusView(board.snapshot(), StatusFacts(config)), "localhost")
    names = [line.split(":", 1)[0] for line in text.splitlines()[1:]]
    assert names[-4:] == ["BusyWorkers", "GracefulWorkers", "IdleWorkers", "Scoreboard"]
    assert "Total Accesses" not in names and "Processes" not in names
    assert text.splitlines()[-1] == "Scoreboard: _R___" + "." * 251
    board.unlink()


def test_graceful_and_quiescing_workers_are_counted_as_apache(tmp_path):
    config = _config(tmp_path, "worker", True)
    board = _scoreboard(tmp_path, config, processes=2)
    board.worker(0, 0).set_state(GRACEFUL)
    board.process(1).quiescing = 1  # a stopping process counts for nothing
    view = StatusView(board.snapshot(), StatusFacts(config))
    assert (view.busy, view.graceful, view.idle) == (0, 1, 24)
    board.unlink()


def test_html_sections_come_in_apaches_order(tmp_path):
    config = _config(tmp_path, "event", True)
    board = _scoreboard(tmp_path, config)
    board.restart_time = time.time_ns() // 1000 - 5_000_000
    _serve(board, 2, 5, [(100, 1000)])
    board.worker(1, 1).request_start("GET /<b> HTTP/1.1", "10.0.0.9", "localhost", "HTTP/1.1", 1)
    view = StatusView(board.snapshot(), StatusFacts(config))
    page = render_html(view, "localhost", "127.0.0.1", extra="<hr /><h2>History</h2>\n")
    order = [
        "<title>Apache Status</title>",
        "Apache Server Status for localhost (via 127.0.0.1)",
        "Server Version: mpmd/",
        "Server MPM: event",
        "Server Built: ",
        "Current Time: ",
        "Restart Time: ",
        "Parent Server Config. Generation: 1",
        "Parent Server MPM Generation: 0",
        "Server uptime: ",
        "Server load: ",
        "Total accesses: 1 - Total Traffic: 0 kB - Total Duration: 1",
        "CPU Usage: u",
        "requests/sec - ",
        "1 requests currently being processed, 0 workers gracefully restarting, 74 idle workers",
        '<table rules="all"',
        "<tr><td>Sum</td><td>3</td><td>0</td>",
        "<pre>",
        "Scoreboard Key:",
        "History",
        '<table border="0"><tr><th>Srv</th>',
        "<td nowrap>GET /&lt;b&gt; HTTP/1.1</td>",
        "Total megabytes transferred this slot",
        "</body></html>",
    ]
    positions = [page.find(marker) for marker in order]
    assert -1 not in positions, [m for m, p in zip(order, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    grid = page[page.index("<pre>") + 5 : page.index("</pre>")]
    assert grid.split("\n")[0] == view.scoreboard[:64] and len(grid.split("\n")) == 7
    board.unlink()


def test_notable_lists_workers_and_extended_off_prints_the_pid_key(tmp_path):
    config = _config(tmp_path, "event", True)
    board = _scoreboard(tmp_path, config)
    _serve(board, 0, 0, [(10, 5)])
    page = render_html(StatusView(board.snapshot(), StatusFacts(config)), "h", "i", notable=True)
    assert "<hr /><h2>Server Details</h2>" in page and '<table border="0">' not in page
    assert "<b>Server 0-0</b> (4000): 0|1|1 [Ready]" in page
    board.unlink()
    config = _config(tmp_path, "prefork", False)
    board = _scoreboard(tmp_path, config, processes=4)
    page = render_html(StatusView(board.snapshot(), StatusFacts(config)), "h", "i")
    assert "PID Key: <br />\n<pre>\n   4000 in state: _ ,   4001 in state: _ ,   4002" in page
    assert "you need to use the <code>ExtendedStatus On</code> directive" in page
    assert "Total accesses" not in page and "<table" not in page
    board.unlink()


def test_wrap_grid_breaks_after_full_rows_only():
    assert wrap_grid("a" * 128) == "a" * 64 + "\n" + "a" * 64 + "\n"
    assert wrap_grid("a" * 70) == "a" * 64 + "\n" + "a" * 6


def test_terminal_report_shows_busy_workers_only_unless_full(tmp_path):
    config = _config(tmp_path, "worker", True)
    board = _scoreboard(tmp_path, config, processes=2)
    _serve(board, 0, 1, [(10, 5)])
    board.worker(1, 2).request_start("GET /slow HTTP/1.1", "10.1.2.3", "localhost", "HTTP/1.1", 1)
    view = StatusView(board.snapshot(), StatusFacts(config))
    short = render_terminal(view, full=False)
    assert "1 busy, 0 graceful, 49 idle workers" in short
    assert "GET /slow" in short and "GET /x" not in short
    assert "_" * 25 + "_W" in short.replace("\n", "")
    full = render_terminal(view, full=True)
    assert "GET /x" in full and "slot   1 pid    4001" in full
    board.unlink()


def _samples(busy: list[int]) -> list[HistorySample]:
    start = 1_700_000_000_000_000
    return [
        HistorySample(start + i * 1_000_000, i * 10, i * 5000, b, 10 - b, 0, 2, 3)
        for i, b in enumerate(busy)
    ]


def test_history_charts_are_inline_svg_and_shade_a_full_pool():
    section = charts.history_section(_samples([1, 2, 10, 10, 3]), 10, True)
    assert section.count("<svg") == 6 and "<script" not in section  # 5 + memory
    assert section.count('class="full"') == 2
    assert "MaxRequestWorkers was reached during 2 of the last 4 seconds" in section
    assert "Collecting history" in charts.history_section(_samples([1]), 10, False)
    times, requests, sent = charts.per_second(_samples([0, 0, 0]))
    assert requests == [10.0, 10.0] and sent == [5000.0, 5000.0] and len(times) == 2


def test_charts_downsample_an_hour_to_the_plot_width():
    section = charts.history_section(_samples([i % 7 for i in range(3600)]), 400, False)
    points = re.findall(r'points="([^"]*)"', section)[0].split()
    assert 0 < len(points) <= charts.WIDTH
    assert charts.nice_ceiling(7) == 10 and charts.nice_ceiling(0.3) == 1
    assert charts.short_number(2_500_000) == "2.5M"


def test_status_module_helpers_are_exported():
    assert status.AUTO_TYPE == "text/plain; charset=ISO-8859-1"
    assert status.HTML_TYPE == "text/html; charset=ISO-8859-1"
