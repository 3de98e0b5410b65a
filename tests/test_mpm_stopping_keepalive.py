"""A child that is going away never strands a keep-alive client (prefork, worker, event).

Every response a stopping child sends (graceful restart, MaxConnectionsPerChild ...) says
`Connection: close`, unless the client already sent another request on that connection: that
one is answered first, and the last answer says close. So a client never reuses a connection
the server is about to close, and keep-alive clients hammering the server across graceful
restarts see no failure. Real servers; the clients here are raw sockets.
"""

from __future__ import annotations

import http.client
import select
import signal
import socket
import threading
from pathlib import Path

import pytest

from helpers import Response, parse_response
from mpm_load import attach_scoreboard
from mpmd.mpm.scoreboard import READY
from server import Server, wait_for

pytestmark = pytest.mark.slow

MPMS = ["prefork", "worker", "event"]
APPS = "WSGIApp /hello testapp:hello\nWSGIApp /gate testapp:gate\n"
POOL = {
    "prefork": "StartServers 2\nMinSpareServers 1\nMaxSpareServers 4\n",
    # three threads: the two held requests leave one idle thread, whose exit shows the stop
    "worker": "StartServers 1\nServerLimit 4\nThreadsPerChild 3\nMaxRequestWorkers 12\n"
    "MinSpareThreads 1\nMaxSpareThreads 6\n",
}
POOL["event"] = POOL["worker"]


def _get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


def _read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def _first_length(raw: bytes) -> int | None:
    """The size of the first Content-Length framed response in `raw`; None if incomplete."""
    end = raw.find(b"\r\n\r\n") + 4
    if end < 4:
        return None
    length = 0
    for line in raw[:end].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return end + length if len(raw) >= end + length else None


def _split(raw: bytes) -> list[Response]:
    """The Content-Length framed responses in `raw`, in order."""
    responses = []
    while raw:
        size = _first_length(raw)
        assert size is not None, raw
        responses.append(parse_response(raw[:size]))
        raw = raw[size:]
    return responses


def _old_children_stopping(board, mpm: str) -> bool:
    """Every generation-0 child has taken in the graceful stop (its StopSignal is set)."""
    snap = board.snapshot()
    old = [p for p in snap.processes if p.pid and p.generation == 0]
    if not old or not all(p.quiescing for p in old):
        return False
    if mpm == "event":  # the loop turned its listeners off
        return all(p.not_accepting for p in old)
    if mpm == "worker":  # the idle threads saw the stop pipe and left
        return all(READY not in snap.slot_statuses(p.slot) for p in old)
    # prefork: the parent signals every old child before it forks the new generation, and a
    # child's only thread runs the handler before the held request takes its next step
    return any(p.pid and p.generation == 1 for p in snap.processes)


@pytest.mark.parametrize("mpm", MPMS)
def test_graceful_restart_answers_what_was_read_and_says_close(tmp_path, mpm):
    """A request held across SIGUSR1 is answered with close; behind a held request, a
    pipelined one already read is answered too, and only the last answer says close."""
    held, piped = tmp_path / "held", tmp_path / "piped"
    with Server(tmp_path, APPS + POOL[mpm], mpm=mpm) as server:
        board = attach_scoreboard(server.pid)
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=20) as single,
            socket.create_connection(("127.0.0.1", server.port), timeout=20) as pipelined,
        ):
            single.sendall(_get(f"/gate?path={held}"))
            pipelined.sendall(_get(f"/gate?path={piped}") + _get("/hello"))
            wait_for(lambda: Path(f"{held}.in").exists() and Path(f"{piped}.in").exists())
            server.signal(signal.SIGUSR1)
            wait_for(lambda: _old_children_stopping(board, mpm))
            held.touch()
            piped.touch()
            alone = _split(_read_to_eof(single))
            both = _split(_read_to_eof(pipelined))
        board.close()
    assert [r.status for r in alone] == [200]
    assert alone[0].header("connection") == "close"
    assert [r.status for r in both] == [200, 200]
    assert both[0].body.startswith(b"released") and both[1].body == b"Hello, World!"
    assert both[0].header("connection") is None  # the next request was already read
    assert both[1].header("connection") == "close"


@pytest.mark.parametrize("mpm", MPMS)
def test_the_last_connection_of_a_child_is_told_close(tmp_path, mpm):
    """MaxConnectionsPerChild 1: the child's only connection is answered with close."""
    config = APPS + POOL[mpm] + "MaxConnectionsPerChild 1\nKeepAliveTimeout 30\n"
    with Server(tmp_path, config, mpm=mpm) as server:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
                sock.sendall(_get("/hello"))
                responses = _split(_read_to_eof(sock))
            assert [r.status for r in responses] == [200]
            assert responses[0].header("connection") == "close"


class _KeepAliveClient(threading.Thread):
    """Requests /hello in a loop on one keep-alive connection, as requests.Session does (its
    urllib3 pool drives http.client the same way): a new connection when the last response
    said close, or when the pooled one is found closed (readable at EOF) before it is reused;
    any other failure is recorded."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.ok = 0
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        conn = self.conn
        while not self.done.is_set():
            if conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
                conn.close()  # urllib3's is_connection_dropped(): the server closed it
            try:
                conn.request("GET", "/hello")
                body = conn.getresponse().read()  # http.client closes after a close
            except (OSError, http.client.HTTPException) as error:
                body = repr(error).encode()
                conn.close()
            if body == b"Hello, World!":
                self.ok += 1
            else:
                self.failures.append(body.decode(errors="replace"))
        conn.close()


@pytest.mark.parametrize("mpm", MPMS)
def test_keep_alive_clients_lose_nothing_across_graceful_restarts(tmp_path, mpm):
    with Server(tmp_path, APPS + POOL[mpm], mpm=mpm) as server:
        board = attach_scoreboard(server.pid)
        clients = [_KeepAliveClient(server.port) for _ in range(4)]
        for client in clients:
            client.start()
        try:
            for generation in range(1, 7):
                before = sum(c.ok for c in clients)
                server.signal(signal.SIGUSR1)
                wait_for(lambda g=generation: board.snapshot().generation == g)
                # the restart happens under traffic: the clients go on across it
                wait_for(lambda n=before: sum(c.ok for c in clients) > n + 50, timeout=20)
        finally:
            for client in clients:
                client.done.set()
            for client in clients:
                client.join(30)
            board.close()
    failures = [f for c in clients for f in c.failures]
    assert failures == [], failures[:5]
    assert sum(c.ok for c in clients) > 300
