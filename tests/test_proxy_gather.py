"""Event children that only proxy gather their connections in as many children as the server
has CPUs (event_accept.py, docs/extensions.md): the real server, three children, started on
one CPU (`taskset -c 0`), and a burst of keep-alive clients that follow Connection: close.

The rule's sibling states are unit-tested in test_event_accept.py.
"""

from __future__ import annotations

import http.client
import shutil

import pytest

from proxy_doubles import Backend, serve_ok
from server import THREE_EVENT_CHILDREN, Server, children_of, wait_for

TASKSET = shutil.which("taskset")

pytestmark = pytest.mark.skipif(TASKSET is None, reason="taskset (util-linux) is not installed")

PROXY = """\
LogFormat "%P %>s" pids
CustomLog "{log}" pids
ProxyPass / http://127.0.0.1:{port}/
"""


def _served_by(log) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def _burst(port: int, clients: int, rounds: int) -> int:
    """`clients` keep-alive connections opened at once, `rounds` requests on each (a client
    told to close reconnects, as http.client does); the responses that said close."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(clients)]
    closes = 0
    try:
        for conn in conns:
            conn.connect()
        for _ in range(rounds):
            for conn in conns:
                conn.request("GET", "/")
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, b"hello")
                closes += response.will_close
    finally:
        for conn in conns:
            conn.close()
    return closes


@pytest.mark.parametrize("wsgi", [False, True])
def test_proxying_children_on_one_cpu_gather_their_connections_in_one(tmp_path, wsgi) -> None:
    """Only proxying (no Python application): every request is served by one child, the
    first, though three accept. With a WSGIApp configured the children share the burst as
    before: gathering is for children whose work is all in their loops."""
    log = tmp_path / "pids_log"
    with Backend(serve_ok()) as backend:
        config = THREE_EVENT_CHILDREN + PROXY.format(log=log, port=backend.port)
        if wsgi:
            config += "WSGIApp /info testapp:info\n"
        server = Server(tmp_path, config, mpm="event", launcher=(TASKSET, "-c", "0"))
        with server:
            wait_for(lambda: len(children_of(server.pid)) == 3, timeout=20)
            wait_for(lambda: _served_by(log), timeout=10)  # (the readiness probe's request)
            probes = len(_served_by(log))
            _burst(server.port, clients=30, rounds=3)
            wait_for(lambda: len(_served_by(log)) == probes + 90, timeout=10)
            pids = _served_by(log)[probes:]
    last_round = set(pids[60:])
    if wsgi:
        assert len(set(pids)) > 1, pids  # shared, as test_event_mpm shows in detail
    else:
        assert len(last_round) == 1, pids
