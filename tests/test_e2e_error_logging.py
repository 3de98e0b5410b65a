"""Requests refused while they are read still get their access-log line, as in Apache.

A real server (-X, whose event loop finds the errors itself, and prefork, whose blocking
connection does) answers a 400, a 414, a 413 and a 408, and each leaves exactly one
combined-format line with that status and the size of the error document. A request line
cut short by RequestReadTimeout gets no response but is logged as `"-" 408 -`; a connection
that never sends a byte leaves no line at all. The scoreboard counts the refused requests.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from mpm_load import attach_scoreboard
from mpmd.http.response import error_body
from server import Server, wait_for

MODES = {"X": ("-X",), "prefork": ("--mpm", "prefork")}
CONFIG = """\
WSGIApp / testapp:hello
LimitRequestLine 200
LimitRequestBody 10
RequestReadTimeout header=1 body=1
StartServers 1
MinSpareServers 1
MaxSpareServers 2
"""
# host ident user [time] "request" status bytes "referer" "agent"
COMBINED_LINE = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "(?P<request>(?:[^"\\]|\\.)*)" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-) "-" "-"$'
)
READ_TIMEOUT = 10.0


@pytest.fixture(scope="module", params=list(MODES))
def server(request, tmp_path_factory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("errlog"), CONFIG, args=MODES[request.param])
    with running:
        yield running


def _lines(server: Server) -> list[str]:
    """Access-log lines, without the readiness probes the test harness sends."""
    if not server.access_log.exists():
        return []
    return [x for x in server.access_log.read_text().splitlines() if "/__ready__" not in x]


def _exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _accesses(server: Server) -> int:
    board = attach_scoreboard(server.pid)
    try:
        return board.snapshot().totals().accesses
    finally:
        board.close()


def _one_new_line(server: Server, before: int) -> re.Match:
    """Wait for the next access-log line, check it is the only one, and parse it."""
    wait_for(lambda: len(_lines(server)) > before, timeout=5)
    new = _lines(server)[before:]
    assert len(new) == 1, new
    match = COMBINED_LINE.match(new[0])
    assert match, new[0]
    return match


CASES = {
    "400 no Host": (b"GET /nohost HTTP/1.1\r\n\r\n", 400, "GET /nohost HTTP/1.1"),
    "414 long line": (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "-"),
    "413 declared body": (
        b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
        413,
        "POST /big HTTP/1.1",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_request_is_logged_once_with_its_status(server, case):
    data, status, request_line = CASES[case]
    before = len(_lines(server))
    counted = _accesses(server)
    raw = _exchange(server.port, data)
    assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:80]
    match = _one_new_line(server, before)
    assert match["status"] == str(status)
    assert match["request"] == request_line
    assert match["bytes"] == str(len(error_body(status)))
    wait_for(lambda: _accesses(server) > counted, timeout=5)


@pytest.mark.slow
def test_partial_headers_timing_out_are_logged_as_408(server):
    before = len(_lines(server))
    raw = _exchange(server.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n")
    assert raw.startswith(b"HTTP/1.1 408 "), raw[:80]
    match = _one_new_line(server, before)
    assert match["status"] == "408"
    assert match["bytes"] == str(len(error_body(408)))


@pytest.mark.slow
def test_a_partial_request_line_timing_out_is_logged_without_a_response(server):
    before = len(_lines(server))
    raw = _exchange(server.port, b"GET /sl")
    assert raw == b""  # Apache closes without answering
    match = _one_new_line(server, before)
    assert (match["request"], match["status"], match["bytes"]) == ("-", "408", "-")


@pytest.mark.slow
def test_a_connection_that_sends_nothing_leaves_no_line(server):
    before = _lines(server)
    # The server closes it once the header stage (1 s) runs out; any line would come first.
    assert _exchange(server.port, b"") == b""
    assert _lines(server) == before
