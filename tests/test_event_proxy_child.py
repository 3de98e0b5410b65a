"""What the event child's in-loop proxy owns beyond one exchange: the scoreboard record its
requests are counted in, member names resolved before the loop serves, and the balancer's
`timeout` waited out with the loop's timers (mpm/event_proxy.py, loop_pool.py)."""

from __future__ import annotations

import dataclasses
import http.client
import select
import socket
from types import SimpleNamespace

import pytest

from mpmd.handlers.proxy.state import ProxyState
from mpmd.mpm import loop_pool
from mpmd.mpm.loop_pool import LoopPool, resolve_members
from mpmd.mpm.scoreboard import default_path
from proxy_doubles import Backend, member, serve_ok
from server import Server, wait_for

STATUS = """\
StartServers 1
ServerLimit 1
ThreadsPerChild 2
MaxRequestWorkers 2
ExtendedStatus On
<Location /server-status>
    SetHandler server-status
</Location>
"""


def _auto(server: Server) -> dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/server-status?auto")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_requests_the_loop_proxies_are_counted_on_the_scoreboard(tmp_path):
    """Total Accesses counts every request logged, the 25 the loop proxied (in its own record)
    included, and Total kBytes their bytes; the worker grid still shows the two threads only."""
    body = b"x" * 4000
    with Backend(serve_ok(body)) as backend:
        config = STATUS + f"ProxyPass /app/ http://127.0.0.1:{backend.port}/\n"
        with Server(tmp_path, config, mpm="event") as front:
            conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
            try:
                for _ in range(25):
                    conn.request("GET", "/app/x")
                    response = conn.getresponse()
                    assert (response.status, response.read()) == (200, body)
            finally:
                conn.close()

            def counted():
                logged = front.access_log.read_text().count("\n")  # this ?auto not yet
                auto = _auto(front)
                return int(auto["Total Accesses"]) == logged and auto

            auto = wait_for(counted)  # (a thread counts a request just after logging it)
    assert front.access_log.read_text().count('"GET /app/x HTTP/1.1" 200 ') == 25
    assert int(auto["Total kBytes"]) >= 25 * len(body) // 1024
    assert len(auto["Scoreboard"].replace(".", "")) == 2  # two threads, no third column


def test_member_names_are_resolved_once_before_the_loop_serves(monkeypatch):
    """resolve_members looks each (host, port) up once and keeps a failure to report later;
    a LoopPool never looks a name up (the loop must not block)."""
    calls = []

    def lookup(host, port, **kw):
        calls.append((host, port))
        if host == "nowhere.invalid":
            raise socket.gaierror(-2, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.7", port))]

    monkeypatch.setattr(loop_pool.socket, "getaddrinfo", lookup)
    members = (member(8080), member(8080), member(9090))
    nowhere = dataclasses.replace(member(80), host="nowhere.invalid")
    host = SimpleNamespace(proxy=SimpleNamespace(routes=[SimpleNamespace(member=nowhere)]))
    config = SimpleNamespace(balancers=[SimpleNamespace(members=members)], main=host, vhosts=())
    resolved = resolve_members(config)  # type: ignore[arg-type]
    assert sorted(calls) == [("127.0.0.1", 8080), ("127.0.0.1", 9090), ("nowhere.invalid", 80)]
    assert resolved[("127.0.0.1", 8080)] == (socket.AF_INET, ("127.0.0.7", 8080))
    assert isinstance(resolved[("nowhere.invalid", 80)], OSError)

    def refuse(*args, **kw):
        raise AssertionError("a name lookup in the loop")

    monkeypatch.setattr(loop_pool.socket, "getaddrinfo", refuse)
    pool = LoopPool(nowhere, resolved[("nowhere.invalid", 80)], None, {}, 5.0)  # type: ignore[arg-type]
    with pytest.raises(OSError):
        pool.acquire(SimpleNamespace())  # type: ignore[arg-type]


def test_a_member_named_by_host_name_is_proxied_in_the_loop(tmp_path):
    with Backend(serve_ok(b"by name")) as backend:
        config = STATUS + f"ProxyPass /app/ http://localhost:{backend.port}/\n"
        with Server(tmp_path, config, mpm="event") as front:
            conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
            conn.request("GET", "/app/x")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"by name")
            conn.close()
            wait_for(lambda: '"GET /app/x HTTP/1.1" 200 ' in front.access_log.read_text())


def test_the_balancer_timeout_waits_in_the_loop_for_a_usable_member(tmp_path):
    """timeout=3 and the only member disabled: the request waits (no 503 at once, as handler.py
    polls every 10 ms) and is answered once the member is enabled through the shared state."""
    with Backend(serve_ok(b"came back")) as backend:
        url = f"http://127.0.0.1:{backend.port}"
        config = STATUS + (
            f"<Proxy balancer://slow>\n    BalancerMember {url} status=D\n</Proxy>\n"
            "ProxyPass /app/ balancer://slow/ timeout=3\n"
        )
        with Server(tmp_path, config, mpm="event") as front:
            state = ProxyState.attach(default_path(front.pid) + ".proxy", readonly=False)
            try:
                with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
                    sock.sendall(b"GET /app/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    assert select.select([sock], [], [], 0.2)[0] == []  # waiting, not refused
                    state.worker("balancer://slow", url).set_flag("D", False)
                    data = b""
                    while chunk := sock.recv(65536):
                        data += chunk
            finally:
                state.close()
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"came back")
