"""`mpmctl logs`: error-log lines as mpmd's ErrorLog writes them sorted into the tuning patterns,
the summary's figures on known logs, the text and the self-contained HTML report, and a real
server's access and error logs read by `mpmctl logs` run as a command."""

from __future__ import annotations

import calendar
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser

import pytest

from mpmd.logs.error import ErrorLog
from mpmd.tools.errorlog import looks_like_error_log, parse_error_line, pattern_of
from mpmd.tools.logreport import render_html
from mpmd.tools.logsummary import choose_bucket, coarsen, render_text, summarise
from server import Server, call, children_of, wait_for

T0 = calendar.timegm((2026, 11, 26, 4, 0, 0))
TIMED = '%h %l %u %t "%r" %>s %b %D'
TIMED_CONF = TIMED.replace('"', '\\"')  # as written inside the LogFormat directive's quotes


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def mpmctl(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from mpmd.cli import mpmctl_main; sys.exit(mpmctl_main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


# -- error logs --------------------------------------------------------------------------------

PATTERN_LINES = [
    ("mpm_prefork", "error", "AH00161", "server reached MaxRequestWorkers setting, consider "
     "raising the MaxRequestWorkers setting", "MaxRequestWorkers reached"),
    ("mpm_worker", "error", "AH00286", "server reached MaxRequestWorkers setting, consider "
     "raising the MaxRequestWorkers setting", "MaxRequestWorkers reached"),
    ("mpm_event", "error", "AH00484", "server reached MaxRequestWorkers setting, consider "
     "raising the MaxRequestWorkers setting", "MaxRequestWorkers reached"),
    ("mpm_event", "error", "AH03490", "scoreboard is full, not at MaxRequestWorkers.Increase "
     "ServerLimit.", "scoreboard full (raise ServerLimit)"),
    ("mpm_prefork", "error", "MP00003", 'request exceeded Timeout (60 s): "GET /slow HTTP/1.1" '
     "from 10.0.0.1, child pid 4242; replacing the child now", "hung requests (Timeout exceeded)"),
    ("core", "notice", "AH00052", "child pid 4242 exit signal SIGSEGV (11)", "child crashes"),
    ("proxy", "error", "AH00959", "ap_proxy_connect_backend disabling worker for "
     "(127.0.0.1:9001) for 60s", "proxy member failures"),
    ("proxy_hcheck", "info", "AH03303", "Health check DISABLING http://127.0.0.1:9001",
     "proxy member failures"),
    ("core", "notice", "AH00489", "mpmd configured -- resuming normal operations", None),
]  # fmt: skip


def error_lines(tmp_path) -> list[str]:
    log = ErrorLog(str(tmp_path / "writer_error_log"), "debug")
    lines = [log.format_line(level, message, module=module, ah=ah, now=T0 + 60 * n + 0.25)
             for n, (module, level, ah, message, _) in enumerate(PATTERN_LINES)]  # fmt: skip
    log.close()
    return lines


def test_error_lines_written_by_mpmd_fall_into_their_patterns(tmp_path):
    for n, line in enumerate(error_lines(tmp_path)):
        module, level, ah, message, pattern = PATTERN_LINES[n]
        event = parse_error_line(line)
        assert (event.module, event.level, event.id, event.message) == (module, level, ah, message)
        assert event.time == T0 + 60 * n + 0.25
        assert event.pid == os.getpid()
        assert pattern_of(event) == pattern


def test_client_errno_and_apache_22_lines():
    event = parse_error_line("[Thu Nov 26 04:00:00.5 2026] [wsgi:error] [pid 7:tid 8] (32)Broken "
                             "pipe: [client 10.0.0.1:5000] AH01093: write failed\n")  # fmt: skip
    assert (event.client, event.id, event.message, event.time) == (
        "10.0.0.1:5000",
        "AH01093",
        "write failed",
        T0 + 0.5,
    )
    old = parse_error_line(
        "[Thu Nov 26 04:00:00 2026] [error] [client 1.2.3.4] File does not exist"
    )
    assert (old.level, old.module, old.client, old.id) == ("error", "core", "1.2.3.4", None)
    assert parse_error_line('  File "app.py", line 3, in app') is None


def test_access_and_error_logs_are_told_apart(tmp_path):
    assert looks_like_error_log(error_lines(tmp_path))
    assert not looks_like_error_log(['1.2.3.4 - - [26/Nov/2026:04:00:00 +0000] "GET / HTTP/1.1" '
                                     "200 5 12\n"])  # fmt: skip


# -- the summary -------------------------------------------------------------------------------


def write_access_log(path, count: int = 400) -> None:
    """`count` requests over 20 minutes: /fast takes 1-2 ms, /slow 100-200 ms, one client in
    four is 10.0.0.1; statuses 200, 404 and 500; and one garbled line."""
    lines = []
    for n in range(count):
        when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(T0 + n * 3))
        slow = n % 4 == 0
        path_ = "/slow?x=1" if slow else "/fast"
        micros = (100_000 if slow else 1000) * (100 + (n // 4) % 100) // 100
        status = 500 if n % 40 == 0 else 404 if n % 10 == 3 else 200
        client = "10.0.0.1" if n % 4 == 1 else f"10.0.1.{n % 50}"
        agent = "<script>alert(1)</script>" if n == 7 else f"agent/{n % 3}"
        lines.append(f'{client} - - [{when}] "GET {path_} HTTP/1.1" {status} 1000 "-" '
                     f'"{agent}" {micros}\n')  # fmt: skip
    lines.insert(100, "garbled\n")
    path.write_text("".join(lines))


def test_summary_figures(tmp_path):
    access = tmp_path / "access_log"
    write_access_log(access)
    errors = tmp_path / "error_log"
    errors.write_text("".join(error_lines(tmp_path)) + "  a traceback's continuation\n")
    summary = summarise([str(errors), str(access)])
    assert [f.path for f in summary.access_files] == [str(access)]
    assert summary.error_files == [(str(errors), len(PATTERN_LINES), 1)]
    assert summary.access_files[0].skipped_summary.startswith("1 line skipped: line 101 (")
    assert (summary.requests, summary.bytes) == (400, 400_000)
    assert summary.bucket == choose_bucket(399 * 3) == 10
    assert sum(n for _, n, _ in summary.timeline) == 400
    assert summary.statuses == {200: 350, 404: 40, 500: 10}
    slow, fast = summary.slowest
    assert (slow.path, slow.requests, fast.path, fast.requests) == ("/slow", 100, "/fast", 300)
    assert slow.p50 == pytest.approx(0.149) and slow.p95 == pytest.approx(0.194)
    assert slow.max == pytest.approx(0.199) and fast.max == pytest.approx(0.00199)
    assert summary.clients[0] == ("10.0.0.1", 100)
    assert {name for name, _ in summary.patterns} == {p for *_, p in PATTERN_LINES if p}
    reached = dict(summary.patterns)["MaxRequestWorkers reached"]
    assert [e.id for e in reached] == ["AH00161", "AH00286", "AH00484"]


def test_text_report(tmp_path):
    access = tmp_path / "access_log"
    write_access_log(access)
    text = render_text(summarise([str(access)], bucket=60))
    for heading in ("Requests over time (per minute)", "Status", "Slowest URLs (service time, ms)",
                    "Top clients", "Top user agents"):  # fmt: skip
        assert f"\n{heading}\n" in text
    assert (
        "\n  path   requests    p50    p95    max\n  /slow       100  149.0  194.0  199.0\n" in text
    )
    assert "\n  2xx          350  87.5%\n    200        350  87.5%\n" in text
    assert "1 line skipped: line 101 (" in text


def test_timeline_coarsened_for_the_terminal():
    timeline = [(T0 + 10 * k, 1, 100) for k in range(120)]
    bucket, rows = coarsen(timeline, 10, 30)
    assert (bucket, len(rows), rows[0]) == (60, 20, (T0, 6, 600))


class _Checker(HTMLParser):
    """Checks that tags nest and close, and collects ids and tag names."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        self.ids += [value for name, value in attrs if name == "id"]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_html_report_is_well_formed_self_contained_and_escaped(tmp_path):
    access = tmp_path / "access_log"
    write_access_log(access)
    errors = tmp_path / "error_log"
    errors.write_text("".join(error_lines(tmp_path)))
    page = render_html(summarise([str(access), str(errors)]))
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == []
    assert checker.ids == [
        "overview",
        "timeline",
        "status",
        "slowest",
        "clients",
        "agents",
        "errors",
    ]
    assert "svg" in checker.tags and page.count("<svg") >= 4  # requests, bytes, status, errors
    assert not {"script", "link", "img", "iframe"} & checker.tags
    assert not {"src", "href"} & checker.attributes
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page


# -- the command against a real server -----------------------------------------------------------


@pytest.mark.slow
def test_mpmctl_logs_reads_a_real_servers_logs(tmp_path):
    access = tmp_path / "timed_log"
    config = f"""\
        StartServers 2
        WSGIApp /sleep testapp:sleepy
        WSGIApp /hello testapp:hello
        LogFormat "{TIMED_CONF}" timed
        CustomLog "{access}" timed
        """
    with Server(tmp_path, config, mpm="prefork") as server:
        for _ in range(5):
            assert call(server, "GET", "/hello")[0] == 200
        for _ in range(3):
            assert call(server, "GET", "/sleep?seconds=0.05")[0] == 200
        assert call(server, "GET", "/missing")[0] == 404
        wait_for(lambda: len(children_of(server.pid)) >= 1)
        victim = children_of(server.pid)[0]
        os.kill(victim, signal.SIGSEGV)
        wait_for(lambda: f"child pid {victim} exit signal" in server.log_text())
    report = tmp_path / "report.html"
    result = mpmctl("logs", str(access), str(server.error_log), "--html", str(report))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    count = len(access.read_text().splitlines())  # ours, and the Server's readiness probe
    assert count >= 9
    assert f"Access log {access}: {count} lines, LogFormat (detected) {TIMED}" in out
    assert f"{count} requests" in out
    assert re.search(rf"^ +404 +{count - 8} ", out, re.M), out
    slow_row = next(line for line in out.splitlines() if line.startswith("  /sleep "))
    p50_ms = float(slow_row.split()[2])
    assert p50_ms >= 50.0  # %D covers the application's sleep
    assert "child crashes" in out and f"Error log {server.error_log}" in out
    assert report.exists() and "<svg" in report.read_text()
    # the config names the format: the same figures without detection
    by_config = mpmctl("logs", "--config", str(server.conf), str(access))
    assert by_config.returncode == 0, by_config.stderr
    assert f"LogFormat (CustomLog in {server.conf}) {TIMED}" in by_config.stdout


def test_mpmctl_logs_errors_are_messages_not_tracebacks(tmp_path):
    access = tmp_path / "access_log"
    access.write_text('1.2.3.4 - - [26/Nov/2026:04:00:00 +0000] "GET / HTTP/1.1" 200 5\n')
    missing = mpmctl("logs", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "No such file or directory" in missing.stderr
    unknown = mpmctl("logs", str(access), "--log-format", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("mpmctl logs: unknown LogFormat nickname 'nope'")
    assert "Traceback" not in missing.stderr + unknown.stderr
