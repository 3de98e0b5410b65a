"""Event children gather their connections in as many children as the server has CPUs
(event_accept.py, docs/extensions.md), and share them again once a child's threads were all
busy: the real server, three children, started on one CPU (`taskset -c 0`), and bursts of
keep-alive clients that follow Connection: close.

The rule's sibling states are unit-tested in test_event_accept.py.
"""

from __future__ import annotations

import http.client
import shutil
import threading

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
def test_children_on_one_cpu_gather_their_connections_in_one(tmp_path, wsgi) -> None:
    """Proxying, or with a WSGIApp configured: every request of the last round is served by
    one child, the first, though three accept."""
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
    assert len(set(pids[60:])) == 1, pids


def test_a_child_surplus_from_its_start_never_accepts(tmp_path) -> None:
    """The two children that are surplus on one CPU step back before their first poll: the
    first connections of a new server all go to the child that gathers and are kept alive
    (one that a surplus child took would be answered with close)."""
    server = Server(tmp_path, THREE_EVENT_CHILDREN + "WSGIApp /info testapp:info\n",
                    mpm="event", launcher=(TASKSET, "-c", "0"))  # fmt: skip
    with server:
        wait_for(lambda: len(children_of(server.pid)) == 3, timeout=20)
        conns = [
            http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(10)
        ]
        answers = []
        try:
            for conn in conns:
                conn.connect()
            for conn in conns:
                conn.request("GET", "/info")
                response = conn.getresponse()
                answers.append((response.will_close, response.read().split()[0]))
        finally:
            for conn in conns:
                conn.close()
    assert not any(close for close, _ in answers), answers
    assert len({pid for _, pid in answers}) == 1, answers


SLEEPY = """\
LogFormat "%P %>s" pids
CustomLog "{log}" pids
WSGIApp /sleepy testapp:sleepy
"""


def _concurrent_round(conns: list[http.client.HTTPConnection]) -> int:
    """One request on every connection at once (each from its own thread); the responses
    that said close (the client reconnects for the next, as http.client does)."""
    closes = []

    def one(conn: http.client.HTTPConnection) -> None:
        try:
            conn.request("GET", "/sleepy?seconds=0.3")
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            # a full child closed this idle keep-alive connection to take a waiting client:
            # a browser retries on a new one, as here
            conn.close()
            conn.request("GET", "/sleepy?seconds=0.3")
            response = conn.getresponse()
        assert response.status == 200 and response.read().startswith(b"slept")
        closes.append(response.will_close)

    threads = [threading.Thread(target=one, args=(conn,)) for conn in conns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(closes) == len(conns)
    return sum(closes)


def test_a_child_whose_threads_are_all_busy_has_the_children_share_again(tmp_path) -> None:
    """An application that waits (not on the CPU): 15 keep-alive clients gathered in the
    first child outnumber its 10 threads (not its connection limit), so its requests wait
    for them; once every thread has been busy for the grace, the child is saturated, the
    responses of requests that waited say close, and the clients that reconnect are shared
    among the children (without it, all three rounds are the first child's)."""
    log = tmp_path / "pids_log"
    config = THREE_EVENT_CHILDREN + SLEEPY.format(log=log)
    server = Server(tmp_path, config, mpm="event", launcher=(TASKSET, "-c", "0"))
    with server:
        wait_for(lambda: len(children_of(server.pid)) == 3, timeout=20)
        wait_for(lambda: _served_by(log), timeout=10)  # (the readiness probe's request)
        probes = len(_served_by(log))
        conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                 for _ in range(15)]  # fmt: skip
        try:
            for conn in conns:
                conn.connect()
            closes = sum(_concurrent_round(conns) for _ in range(3))
        finally:
            for conn in conns:
                conn.close()
        wait_for(lambda: len(_served_by(log)) == probes + 45, timeout=10)
        pids = _served_by(log)[probes:]
    assert closes > 0
    assert len(set(pids[30:])) > 1, pids
