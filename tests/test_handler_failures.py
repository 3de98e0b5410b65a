"""A bug in a handler that is not a WSGI application is a logged 500; the worker lives on.

Real servers in every process model. The faults are planted by tests/apps/faulty_handlers.py,
mounted as a WSGIApp: the static handler raises for `fault.txt`, the status handler for a
`fault` query. Each request gets a 500 whose traceback is in the ErrorLog (MP00007), the same
process serves the next request, and the scoreboard counts no thread busy afterwards but the
one reading it.
"""

from __future__ import annotations

import re
import socket

import pytest

from helpers import parse_response
from server import Server, wait_for

pytestmark = pytest.mark.slow

FAULTS = {
    "static": "GET /fault.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "server-status": "GET /server-status?fault HTTP/1.1\r\nHost: localhost\r\n\r\n",
}
# One process with two threads (one for prefork): the next request must find the same pid.
MODES = {
    "X": (("-X",), ""),
    "prefork": (("--mpm", "prefork"), "StartServers 1\nServerLimit 1\nMaxRequestWorkers 1\n"),
    "worker": (("--mpm", "worker"), "StartServers 1\nServerLimit 1\nThreadsPerChild 2\n"),
    "event": (("--mpm", "event"), "StartServers 1\nServerLimit 1\nThreadsPerChild 2\n"),
}
CONFIG = """\
WSGIApp /pid testapp:info
WSGIApp /faults faulty_handlers:application
<Location /server-status>
    SetHandler server-status
</Location>
"""


def _ask(port: int, request: str) -> tuple[int, str, str | None]:
    """One request on a new connection, read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request.encode() if "Connection:" in request else _closing(request))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = parse_response(b"".join(chunks))
    return response.status, response.body.decode(), response.header("connection")


def _closing(request: str) -> bytes:
    return request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1).encode()


def _busy_workers(port: int) -> int:
    _, body, _ = _ask(port, "GET /server-status?auto HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return int(re.search(r"^BusyWorkers: (\d+)$", body, re.M).group(1))


@pytest.mark.parametrize("mode", list(MODES))
def test_a_failing_handler_is_a_logged_500_and_the_worker_lives_on(tmp_path, mode):
    args, pool = MODES[mode]
    with Server(tmp_path, CONFIG + pool, args=args) as server:
        (tmp_path / "htdocs" / "fault.txt").write_text("some text\n")
        status, body, _ = _ask(server.port, "GET /pid HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status == 200
        pid = body.split()[0]
        for handler, request in FAULTS.items():
            status, body, connection = _ask(server.port, request)
            assert (status, connection) == (500, "close"), (handler, body)
            assert "Traceback" not in body
            status, body, _ = _ask(server.port, "GET /pid HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert (status, body.split()[0]) == (200, pid)  # the same process serves on
        # only the thread answering /server-status is busy: the failed ones went back idle
        wait_for(lambda: _busy_workers(server.port) == 1)
        log = server.log_text()
    for handler in FAULTS:
        assert re.search(rf"\[core:error\] .*MP00007: handler '{handler}' failed for", log), log
    assert log.count("RuntimeError: a static handler bug on purpose") == 1
    assert log.count("RuntimeError: a status handler bug on purpose") == 1
    assert log.count("Traceback (most recent call last):") == 2
