"""The logs a real server writes after a mixed run: goaccess reads every access-log line, and
every ErrorLog line has Apache's shape.

The run mixes WSGI and static requests, 200/206/304/404/416/500, HEAD, POST, HTTP/1.0,
pipelining, quotes and control bytes in headers and URLs. The server is stopped (flushing
any buffered log) before the logs are read.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess

import pytest

from server import Server, wait_for
from test_e2e_http import Wire

MODES = {"X": ("-X",), "prefork": ("--mpm", "prefork")}
CONFIG = """\
WSGIApp /app e2eapp:probe
WSGIApp /v e2eapp:unvalidated
StartServers 2
MinSpareServers 1
MaxSpareServers 3
"""
SERVED = 80 + 8 + 3  # the access-log lines of mixed_run (the readiness probes aside)
# [Thu Nov 26 04:02:28.644944 2026] [mpm_event:notice] [pid 7024:tid 7024] AH00489: ...
ERROR_LINE = re.compile(
    r"\[(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"[ 0-9]\d \d\d:\d\d:\d\d\.\d{6} \d{4}\] "
    r"\[[a-z_0-9]*:(emerg|alert|crit|error|warn|notice|info|debug|trace[1-8])\] "
    r"\[pid \d+:tid \d+\] "
    r"(\([-0-9]+\)[^:]+: )?(\[client [0-9.]+:\d+\] )?\S"
)
# host ident user [time] "request" status bytes "referer" "agent"
COMBINED_LINE = re.compile(
    r'^\S+ \S+ \S+ \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "(?:[^"\\]|\\.)*" '
    r'\d{3} (?:\d+|-) "(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*"$'
)


@pytest.fixture(scope="module", params=list(MODES))
def finished_server(request, tmp_path_factory):
    """A server that served the mixed run below and was then stopped."""
    server = Server(tmp_path_factory.mktemp("logs"), CONFIG, args=MODES[request.param])
    root = server.tmp / "htdocs"
    (root / "index.html").write_text("<p>index</p>\n")
    (root / "data.txt").write_bytes(b"0123456789" * 100)
    try:
        server.start()
        mixed_run(server)
        # A child writes a request's line after the client has the response, and SIGTERM
        # ends a child at once (as Apache's): stop only once every line is written.
        wait_for(lambda: len(served_lines(server)) >= SERVED)
    finally:
        server.stop()
    return server


def served_lines(server: Server) -> list[str]:
    lines = server.access_log.read_bytes().decode("latin-1").splitlines()
    return [line for line in lines if "/__ready__" not in line]


def mixed_run(server: Server) -> None:
    def call(method, path, headers=None, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            resp.read()
            return resp
        finally:
            conn.close()

    agents = ['Mozilla/5.0 "quoted" (X11)', "curl/8.4.0", "tab\there", "back\\slash"]
    for n in range(40):
        headers = {"User-Agent": agents[n % 4], "Referer": f'http://ref.example/{n}?q="{n}"'}
        call("GET", f"/app/{n}?x={n}&y=%22", headers)
        call("POST", "/app/post", headers, body=b"x" * n)
    etag = call("GET", "/data.txt").getheader("ETag")
    assert call("GET", "/data.txt", {"If-None-Match": etag}).status == 304
    assert call("GET", "/data.txt", {"Range": "bytes=0-9"}).status == 206
    assert call("GET", "/data.txt", {"Range": "bytes=5000-"}).status == 416
    assert call("HEAD", "/index.html").status == 200
    assert call("GET", "/missing.html").status == 404
    assert call("GET", "/v/crash").status == 500
    assert call("GET", "/v/stream?3").status == 200
    wire = Wire.connect(server.port)
    try:  # pipelined, HTTP/1.0, odd bytes in the URL
        wire.send(
            b"GET /app/a%01b HTTP/1.1\r\nHost: x\r\nUser-Agent: \xe9t\xe9\r\n\r\n"
            b"HEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /index.html HTTP/1.0\r\n\r\n"
        )
        assert [wire.response().status, wire.response("HEAD").status] == [200, 200]
        assert wire.response().status == 200
    finally:
        wire.close()


@pytest.mark.skipif(shutil.which("goaccess") is None, reason="goaccess is not installed")
def test_goaccess_parses_every_access_log_line(finished_server: Server, tmp_path) -> None:
    lines = finished_server.access_log.read_bytes().decode("latin-1").splitlines()
    assert len(served_lines(finished_server)) == SERVED
    report = tmp_path / "report.json"
    subprocess.run(
        ["goaccess", str(finished_server.access_log), "--log-format=COMBINED",
         "--no-global-config", "-o", str(report)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    general = json.loads(report.read_text())["general"]
    assert general["total_requests"] == len(lines)
    assert general["valid_requests"] == len(lines)
    assert general["failed_requests"] == 0


def test_access_log_lines_are_combined(finished_server: Server) -> None:
    text = finished_server.access_log.read_bytes().decode("latin-1")
    for line in text.splitlines():
        assert COMBINED_LINE.match(line), line
    assert '"GET /app/a%01b HTTP/1.1" 200 ' in text
    assert '"Mozilla/5.0 \\"quoted\\" (X11)"' in text  # Apache's escaping of logged strings
    assert '"tab\\there"' in text and '"back\\\\slash"' in text
    assert '"\\xe9t\\xe9"' in text
    assert re.search(r'"GET /v/crash HTTP/1.1" 500 \d+ ', text)
    assert re.search(r'"HEAD /index.html HTTP/1.1" 200 - ', text)  # %b is - for no body
    assert '"GET /data.txt HTTP/1.1" 304 - ' in text


def test_error_log_has_apache_line_shape(finished_server: Server) -> None:
    lines = finished_server.log_text().splitlines()
    assert lines
    for line in lines:
        assert ERROR_LINE.match(line), line
    text = "\n".join(lines)
    assert "configured -- resuming normal operations" in text
    # Each Apache MPM numbers its own notices: event AH00491 (-X runs the event loop),
    # prefork AH00169 (reference 5).
    assert re.search(r"\[mpm_(event|prefork):notice\] .* AH00(491|169): caught SIGTERM", text)
    assert ("AH00169" in text) == ("[mpm_prefork:" in text)
    failed = [line for line in lines if "Exception occurred processing WSGI script" in line]
    assert len(failed) == 1 and "[wsgi:error]" in failed[0]
    assert "[client 127.0.0.1:" in failed[0]
    assert "RuntimeError: e2e crash on purpose" in text  # the traceback, line by line
