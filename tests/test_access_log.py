"""Access log: every LogFormat directive and modifier, Apache's escaping, the writer's guarantees
(one write per line, BufferedLogs, many processes appending, reopen after rename), and goaccess
reading a combined log."""

from __future__ import annotations

import calendar
import io
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

from helpers import make_vhost
from mpmd.config.model import VirtualHost
from mpmd.http.exchange import ConnectionInfo, Exchange
from mpmd.http.request import Request
from mpmd.logs import logformat
from mpmd.logs.access import PIPE_BUF, AccessLog
from mpmd.logs.logformat import COMBINED, COMMON, NICKNAMES, compile_format, escape_logitem

# 26/Nov/2026:04:03:23 UTC, plus 123456 microseconds
START = calendar.timegm((2026, 11, 26, 4, 3, 23)) + 0.123456
EXAMPLE_VHOST = make_vhost(server_name="www.example.com")


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Local time is UTC for these tests (the %t cache is keyed by second, so clear it)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    logformat._clf_cache.clear()
    yield
    monkeypatch.undo()
    time.tzset()
    logformat._clf_cache.clear()


def make_exchange(
    target: str = "/?q=1",
    *,
    method: str = "GET",
    version: str = "HTTP/1.1",
    headers: list[tuple[str, str]] | None = None,
    status: str = "200 OK",
    response_headers: list[tuple[str, str]] | None = None,
    body: bytes = b"hello\n",
    keep_alive: bool = True,
    vhost: VirtualHost | None = None,
    content_length: int | None = None,
) -> Exchange:
    """A real Exchange that has sent its response into a list (no socket)."""
    if headers is None:
        headers = [("host", "www.example.com")]
    request = Request(
        method,
        target,
        version,
        headers,
        io.BytesIO(),
        keep_alive=keep_alive,
        head_size=len(f"{method} {target} {version}\r\n\r\n")
        + sum(len(n) + len(v) + 4 for n, v in headers),
        content_length=content_length,
    )
    conn = ConnectionInfo(
        "192.0.2.7", 54321, "198.51.100.1", 8080, multithread=False, multiprocess=True
    )
    sent: list[bytes] = []
    exchange = Exchange(request, conn, vhost or EXAMPLE_VHOST, sent.append, lambda *a: None)
    exchange.start_time = START
    exchange.respond(status, response_headers or [("Content-Type", "text/plain")], body)
    exchange.finish()
    exchange.notes["_sent"] = str(sum(len(b) for b in sent))
    return exchange


def fmt(format_string: str, exchange: Exchange | None = None, end: float = START + 2.5) -> str:
    return compile_format(format_string)(exchange or make_exchange(), end)


# -- the examples verified live against Apache (reference 6.2) ----------------------------------


def test_combined_line_matches_apache():
    x = make_exchange(
        headers=[
            ("host", "localhost"),
            ("referer", "http://ref/"),
            ("user-agent", 'Mozilla "x"'),
        ]
    )
    x.conn.client_addr = "127.0.0.1"
    assert fmt(COMBINED, x) == (
        '127.0.0.1 - - [26/Nov/2026:04:03:23 +0000] "GET /?q=1 HTTP/1.1" 200 6 '
        '"http://ref/" "Mozilla \\"x\\""'
    )


def test_header_with_quote_and_backslash():
    x = make_exchange(headers=[("host", "h"), ("x-test", 'a"b\\c')])
    assert fmt('"%{X-Test}i"', x) == '"a\\"b\\\\c"'


def test_head_404_bytes():
    x = make_exchange("/missing", method="HEAD", status="404 Not Found", body=b"not here")
    assert x.bytes_out == 0
    assert fmt("%>s %b %B", x) == "404 - 0"


def test_request_line_that_never_arrived_is_dash():
    x = make_exchange(method="", status="408 Request Timeout")
    assert fmt('"%r" %>s %b', x).startswith('"-" 408 ')


def test_nicknames():
    assert COMMON == '%h %l %u %t "%r" %>s %b'
    assert COMBINED == COMMON + ' "%{Referer}i" "%{User-Agent}i"'
    assert NICKNAMES["combined"] == COMBINED and NICKNAMES["CLF"] == COMMON


# -- directives --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directive", "expected"),
    [
        ("%h", "192.0.2.7"),
        ("%a", "192.0.2.7"),
        ("%{c}a", "192.0.2.7"),
        ("%A", "198.51.100.1"),
        ("%l", "-"),
        ("%u", "-"),
        ("%r", "GET /?q=1 HTTP/1.1"),
        ("%s", "200"),
        ("%>s", "200"),
        ("%<s", "200"),
        ("%b", "6"),
        ("%B", "6"),
        ("%D", "2500000"),
        ("%T", "2"),
        ("%{s}T", "2"),
        ("%{ms}T", "2500"),
        ("%{us}T", "2500000"),
        ("%{bogus}T", "bogus"),
        ("%U", "/"),
        ("%q", "?q=1"),
        ("%H", "HTTP/1.1"),
        ("%m", "GET"),
        ("%v", "www.example.com"),
        ("%V", "www.example.com"),
        ("%X", "+"),
        ("%k", "0"),
        ("%L", "-"),
        ("%R", "-"),
        ("%f", "-"),
        ("%p", "80"),
        ("%{canonical}p", "80"),
        ("%{local}p", "8080"),
        ("%{remote}p", "54321"),
        ("%{nonsense}p", "nonsense"),
        ("%{nonsense}P", "nonsense"),
        ("%{Missing}i", "-"),
        ("%{Missing}o", "-"),
        ("%{Missing}e", "-"),
        ("%{Missing}n", "-"),
        ("%{Missing}C", "-"),
        ("%{Content-Type}o", "text/plain"),
        ("%^ti", "-"),
        ("%{X}^to", "-"),
        ("%^FB", "-"),
        ("%%", "%"),
        ("100%%", "100%"),
        ("", ""),
        ("plain text", "plain text"),
    ],
)
def test_directive(directive, expected):
    assert fmt(directive) == expected


def test_time_formats():
    end = START + 2.5
    x = make_exchange()
    assert fmt("%t", x, end) == "[26/Nov/2026:04:03:23 +0000]"
    assert fmt("%{begin}t", x, end) == "[26/Nov/2026:04:03:23 +0000]"
    assert fmt("%{end}t", x, end) == "[26/Nov/2026:04:03:25 +0000]"
    assert fmt("%{%Y-%m-%d %H:%M:%S}t", x, end) == "2026-11-26 04:03:23"
    assert fmt("%{begin:%H:%M:%S}t", x, end) == "04:03:23"
    assert fmt("%{end:%H:%M:%S}t", x, end) == "04:03:25"
    start_us = int(START * 1_000_000)
    assert fmt("%{sec}t", x, end) == str(start_us // 1_000_000)
    assert fmt("%{msec}t", x, end) == str(start_us // 1000)
    assert fmt("%{usec}t", x, end) == str(start_us)
    assert fmt("%{msec_frac}t", x, end) == "123"
    assert fmt("%{usec_frac}t", x, end) == "123456"
    assert fmt("%{end:sec}t", x, end) == str(int(end))
    assert fmt("%{end:msec_frac}t", x, end) == "623"


def test_time_zone_offset(monkeypatch):
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    logformat._clf_cache.clear()
    assert fmt("%t") == "[25/Nov/2026:23:03:23 -0500]"


def test_durations_round_down():
    x = make_exchange()
    assert fmt("%D %T %{ms}T", x, START + 0.0009994) == "999 0 0"
    assert fmt("%D", x, START - 1) == "0"  # a clock step back never logs a negative time


def test_process_and_thread_ids():
    assert fmt("%P") == str(os.getpid())
    assert fmt("%{pid}P") == str(os.getpid())
    assert fmt("%{tid}P") == str(threading.get_native_id())
    assert fmt("%{hextid}P") == format(threading.get_native_id(), "x")


def test_pid_is_the_child_pid_after_fork(tmp_path):
    formatter = compile_format("%P")  # compiled in the parent, used in the child
    out = tmp_path / "pid"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            out.write_text(formatter(make_exchange(), START) + " " + str(os.getpid()))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    logged, actual = out.read_text().split()
    assert logged == actual == str(pid)


def test_remote_user():
    x = make_exchange()
    assert fmt("%u", x) == "-"
    x.notes["remote_user"] = ""
    assert fmt("%u", x) == '""'
    x.notes["remote_user"] = 'bob "b"'
    assert fmt("%u", x) == 'bob \\"b\\"'


def test_request_line_hides_password():
    x = make_exchange("http://alice:secret@example.com/p?x=1")
    assert fmt("%r", x) == "GET http://alice:XXXXXXXX@example.com/p?x=1 HTTP/1.1"


def test_request_line_remembered_per_target_keeps_method_and_version():
    """%r is remembered by target: another method or version on the same target is its own."""
    assert fmt("%r", make_exchange("/same")) == "GET /same HTTP/1.1"
    assert fmt("%r", make_exchange("/same", method="HEAD")) == "HEAD /same HTTP/1.1"
    assert fmt("%r", make_exchange("/same", version="HTTP/1.0")) == "GET /same HTTP/1.0"
    assert fmt("%r", make_exchange("/same")) == "GET /same HTTP/1.1"
    for _ in range(2):  # a remembered escaped value is the escaped value
        assert fmt("%r", make_exchange('/q"\\')) == 'GET /q\\"\\\\ HTTP/1.1'


def test_url_path_and_query():
    x = make_exchange("/a%20b/%C3%A9?x=%20&y")
    assert fmt("%U", x) == "/a b/\\xc3\\xa9"
    assert fmt("%q", x) == "?x=%20&y"
    assert fmt("[%q]", make_exchange("/plain")) == "[]"
    assert fmt("[%q]", make_exchange("/plain?")) == "[?]"
    assert fmt("%U", make_exchange("http://h:1/abs/path?z")) == "/abs/path"


def test_server_name_from_host_header():
    assert fmt("%V", make_exchange(headers=[("host", "WWW.Other.ORG.:8080")])) == "www.other.org"
    assert fmt("%V", make_exchange(headers=[("host", "[::1]:8080")])) == "[::1]"
    assert fmt("%V", make_exchange(version="HTTP/1.0", headers=[])) == "www.example.com"


def test_canonical_port_falls_back_to_80():
    assert fmt("%p", make_exchange(vhost=make_vhost(port=0))) == "80"
    assert fmt("%p", make_exchange(vhost=make_vhost(port=8443))) == "8443"


def test_connection_status():
    x = make_exchange()
    assert fmt("%X", x) == "+"
    x.keep_alive = False
    assert fmt("%X", x) == "-"
    x.aborted = True
    assert fmt("%X", x) == "X"


def test_keepalive_count():
    x = make_exchange()
    x.conn.requests = 3
    assert fmt("%k", x) == "3"


def test_logio_byte_counts():
    x = make_exchange(method="POST", content_length=11, body=b"0123456789")
    head = x.head_bytes
    assert head + 10 == int(x.notes["_sent"])  # what really went out
    assert fmt("%O", x) == str(head + 10)
    assert fmt("%I", x) == str(x.request.head_size + 11)
    assert fmt("%S", x) == str(x.request.head_size + 11 + head + 10)
    x.notes["bytes_in"] = "500"  # the I/O layer's own count wins
    assert fmt("%I %S", x) == f"500 {500 + head + 10}"


def test_response_headers():
    x = make_exchange(
        response_headers=[
            ("Content-Type", "text/html ; charset=utf-8"),
            ("Set-Cookie", "a=1"),
            ("X-One", "first"),
            ("set-cookie", "b=2; Path=/"),
            ("X-One", "second"),
        ]
    )
    assert fmt("%{content-type}o", x) == "text/html"
    assert fmt("%{Set-Cookie}o", x) == "a=1, b=2; Path=/"
    assert fmt("%{x-one}o", x) == "first"


def test_request_headers_case_insensitive_first_value_and_empty():
    x = make_exchange(headers=[("host", "h"), ("x-a", "1"), ("x-a", "2"), ("x-empty", "")])
    assert fmt("%{X-A}i", x) == "1"
    assert fmt("[%{X-Empty}i]", x) == "[]"  # present but empty: Apache logs nothing, not "-"


def test_env_notes_handler_filename_logid():
    x = make_exchange()
    x.notes.update(
        {
            "env:HTTPS": "on",
            "cache": 'HIT "x"',
            "handler": "wsgi-script",
            "filename": "/srv/app.wsgi",
            "log_id": "abc123",
            "ttfb_us": "2500",
        }
    )
    assert (
        fmt("%{HTTPS}e %{cache}n %R %f %L", x) == 'on HIT \\"x\\" wsgi-script /srv/app.wsgi abc123'
    )
    assert fmt("%^FB %{ms}^FB %{s}^FB", x) == "2500 2 0"


def test_cookie():
    x = make_exchange(
        headers=[("host", "h"), ("cookie", "=junk; Session = abc\t ;theme=dark;novalue;x=")]
    )
    assert fmt("%{session}C", x) == "abc"
    assert fmt("%{theme}C", x) == "dark"
    assert fmt("%{novalue}C %{x}C %{absent}C", x) == "- - -"


# -- modifiers ---------------------------------------------------------------------------------


def test_status_condition_lists():
    ok = make_exchange(headers=[("host", "h"), ("user-agent", "UA")])
    bad = make_exchange(headers=[("host", "h"), ("user-agent", "UA")], status="400 Bad Request")
    assert fmt("%400,501{User-agent}i", ok) == "-"
    assert fmt("%400,501{User-agent}i", bad) == "UA"
    assert fmt("%!400,501{User-agent}i", ok) == "UA"
    assert fmt("%!400,501{User-agent}i", bad) == "-"
    assert fmt("%!200>s|%200>s|%<s|%>s", ok) == "-|200|200|200"
    assert fmt("%!{User-agent}i", ok) == "UA"  # `!` without a list has nothing to negate


def test_format_backslash_escapes():
    assert fmt("a\\tb\\nc\\rd\\\\e\\qf") == "a\tb\nc\rd\\e\\qf"


def test_unknown_directive():
    with pytest.raises(ValueError, match=r"^Unrecognized LogFormat directive %Z$"):
        compile_format("%h %Z")
    with pytest.raises(ValueError, match="Ran off end of LogFormat"):
        compile_format("%{Referer")
    with pytest.raises(ValueError, match="Ran off end of LogFormat"):
        compile_format("trailing %")


# -- escaping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        ("plain", "plain"),
        ("", ""),
        ('a"b\\c', 'a\\"b\\\\c'),
        ("\b\n\r\t\v", "\\b\\n\\r\\t\\v"),
        ("\x00\x1b\x7f", "\\x00\\x1b\\x7f"),
        ("caf\xe9", "caf\\xe9"),  # latin-1 decoded byte 0xe9
        ("\u20ac", "\\xe2\\x82\\xac"),  # beyond latin-1: its UTF-8 bytes
    ],
)
def test_escape_logitem(raw, logged):
    assert escape_logitem(raw) == logged


def test_escaping_applies_to_request_line_but_not_addresses():
    x = make_exchange("/p\x01q")
    x.conn.client_addr = "fe80::1%eth0"
    assert fmt("%a %r", x) == "fe80::1%eth0 GET /p\\x01q HTTP/1.1"


# -- the writer --------------------------------------------------------------------------------


def test_unbuffered_writes_one_line_per_write(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%>s %U", buffered=False)
    writes: list[bytes] = []
    real_write = log._sink.write
    log._sink.write = lambda data: (writes.append(data), real_write(data))[1]
    for target in ("/a", "/b", "/c"):
        log.log(make_exchange(target), START)
    log.close()
    assert writes == [b"200 /a\n", b"200 /b\n", b"200 /c\n"]
    assert path.read_bytes() == b"".join(writes)


def test_file_created_with_default_mode(tmp_path):
    path = tmp_path / "new.log"
    old_umask = os.umask(0o022)
    try:
        AccessLog(str(path), COMMON, buffered=False).close()
    finally:
        os.umask(old_umask)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_buffered_logs_batch_whole_lines_up_to_pipe_buf(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%U", buffered=True)
    writes: list[bytes] = []
    real_write = log._sink.write
    log._sink.write = lambda data: (writes.append(data), real_write(data))[1]
    lines = [f"/{n:04d}" + "x" * (n % 97) for n in range(500)]
    for target in lines:
        log.log(make_exchange(target), START)
    assert writes  # the buffer filled up more than once
    assert all(len(chunk) <= PIPE_BUF and chunk.endswith(b"\n") for chunk in writes)
    log.flush()
    assert path.read_text().splitlines() == lines
    assert all(len(chunk) <= PIPE_BUF and chunk.endswith(b"\n") for chunk in writes)
    log.close()


def test_buffered_long_line_goes_out_alone(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%U", buffered=True)
    log.log(make_exchange("/short"), START)
    long_target = "/" + "y" * (PIPE_BUF + 10)
    log.log(make_exchange(long_target), START)
    assert path.read_text().splitlines() == ["/short", long_target]
    log.close()


def test_flush_if_due_and_close_flush(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%U", buffered=True)
    log.log(make_exchange("/one"), START)
    now = time.monotonic()
    log.flush_if_due(now - 10)  # not yet a second since the last flush
    assert path.read_text() == ""
    log.flush_if_due(now + 1.5)
    assert path.read_text() == "/one\n"
    log.log(make_exchange("/two"), START)
    log.close()
    assert path.read_text() == "/one\n/two\n"


def test_condition_env(tmp_path):
    path = tmp_path / "access.log"
    only = AccessLog(str(path), "only %U", buffered=False, condition="env=DEBUG")
    never = AccessLog(str(path), "not %U", buffered=False, condition="env=!DEBUG")
    plain, flagged = make_exchange("/plain"), make_exchange("/flagged")
    flagged.notes["env:DEBUG"] = ""
    for log in (only, never):
        log.log(plain, START)
        log.log(flagged, START)
        log.close()
    assert path.read_text() == "only /flagged\nnot /plain\n"
    with pytest.raises(ValueError, match="error in condition clause"):
        AccessLog(str(path), "%h", buffered=False, condition="expr=%{REMOTE_ADDR} == '1'")


def test_reopen_after_rename(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%U", buffered=False)
    log.log(make_exchange("/before"), START)
    os.rename(path, tmp_path / "access.log.1")
    log.log(make_exchange("/still-old"), START)  # until reopened, the old file gets lines
    log.reopen()
    log.log(make_exchange("/after"), START)
    log.close()
    assert (tmp_path / "access.log.1").read_text() == "/before\n/still-old\n"
    assert path.read_text() == "/after\n"


def test_write_error_is_reported_not_raised(tmp_path, capfd):
    log = AccessLog("/dev/full", "%U", buffered=False)
    log.log(make_exchange("/x"), START)  # ENOSPC: the request must not fail because of it
    log.close()
    assert "AH00646: Error writing to /dev/full" in capfd.readouterr().err


def _run_children(log: AccessLog, children: int, lines_each: int) -> None:
    pids = []
    for child in range(children):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 0
            try:
                for seq in range(lines_each):
                    pad = "p" * ((seq * 37 + child * 11) % 300)
                    log.log(make_exchange(f"/c{child}/s{seq}/{pad}/end"), START)
                log.flush()
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("buffered", [False, True])
def test_many_processes_append_without_interleaving(tmp_path, buffered):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%h %U %>s", buffered=buffered)
    children, lines_each = 4, 3000
    _run_children(log, children, lines_each)
    log.close()
    seen = set()
    for line in path.read_text().split("\n")[:-1]:
        ip, target, status = line.split(" ")
        _, child, seq, pad, end = target.split("/")
        assert (ip, status, end) == ("192.0.2.7", "200", "end")
        assert set(pad) <= {"p"}
        seen.add((child, seq))
    assert len(seen) == children * lines_each


def test_piped_log_through_shell(tmp_path):
    out = tmp_path / "piped.log"
    log = AccessLog(f"|$cat >> {out}", "%U", buffered=False)
    log.log(make_exchange("/one"), START)
    log.log(make_exchange("/two"), START)
    log.close()  # EOF to the program, then wait for it
    assert out.read_text() == "/one\n/two\n"


def test_piped_log_direct_program_restarted_by_reopen(tmp_path):
    out = tmp_path / "piped.log"
    log = AccessLog(
        f"|/usr/bin/dd of={out} oflag=append conv=notrunc status=none", "%U", buffered=True
    )
    log.log(make_exchange("/one"), START)
    log.reopen()  # flushes, stops the program and starts it again
    log.log(make_exchange("/two"), START)
    log.close()
    assert out.read_text() == "/one\n/two\n"


# -- goaccess ----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("goaccess") is None, reason="goaccess is not installed")
def test_goaccess_parses_every_combined_line(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), NICKNAMES["combined"], buffered=True)
    agents = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        'curl/8.4.0 "quoted"',
        "Weird\\Agent\twith\ttabs",
        "Bot\x01\xe9",
    ]
    referers = [None, "http://ref.example/", 'http://q.example/?a="b"', "-"]
    methods = ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]
    statuses = ["200 OK", "404 Not Found", "304 Not Modified", "500 Internal Server Error"]
    for n in range(200):
        headers = [("host", "h"), ("user-agent", agents[n % len(agents)])]
        referer = referers[n % len(referers)]
        if referer is not None:
            headers.append(("referer", referer))
        x = make_exchange(
            f"/path/{n}/caf%C3%A9?q={n}&s=%22x%22" if n % 3 else f"/static/{n}.css",
            method=methods[n % len(methods)],
            headers=headers,
            status=statuses[n % len(statuses)],
            body=b"x" * (n * 7),
        )
        x.conn.client_addr = f"10.0.{n % 5}.{n % 200 + 1}"
        x.start_time = START + n * 61
        log.log(x, x.start_time + 0.01)
    log.close()
    report = tmp_path / "report.json"
    subprocess.run(
        ["goaccess", str(path), "--log-format=COMBINED", "--no-global-config", "-o", str(report)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    general = json.loads(report.read_text())["general"]
    assert general["total_requests"] == 200
    assert general["valid_requests"] == 200
    assert general["failed_requests"] == 0


def test_piped_program_restarted_when_it_died(tmp_path):
    out = tmp_path / "piped.log"
    log = AccessLog(f"|$exec cat >> {out}", "%U", buffered=False)
    log.log(make_exchange("/one"), START)
    first = log._sink._proc
    first.kill()  # the pipe's reader is gone: the next write gets EPIPE
    first.wait(timeout=10)
    log.log(make_exchange("/two"), START)  # a new program is started and gets the line
    assert log._sink._proc is not first
    log.close()
    assert out.read_text().splitlines()[-1] == "/two"
