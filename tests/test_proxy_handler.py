"""The blocking proxy handler in-process, through a real Router and Exchange, against real
back-end sockets on loopback (tests/proxy_doubles.py): forwarding, pooling, streaming,
failover, bad back ends and the router's order (ProxyPass before Alias and the mounts)."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading

import pytest

from helpers import FakeErrorLog, make_config, make_exchange, make_request, make_vhost, route
from mpmd.config.model import (
    AccessRule,
    AliasMapping,
    LocationSection,
    ProxyRoute,
    ProxySettings,
    ReverseRule,
)
from mpmd.handlers.proxy.balancer import NoWorker
from mpmd.handlers.proxy.handler import ProxyHandler
from mpmd.handlers.router import Router
from proxy_doubles import Backend, RoundRobin, Seen, direct_route, member, serve_ok


class Proxy:
    """A Router whose vhost proxies `routes`; runtimes are RoundRobin doubles (or given)."""

    def __init__(self, routes, runtimes=None, **vhost_changes) -> None:
        proxy = vhost_changes.pop("proxy", {})
        vhost = make_vhost(proxy=ProxySettings(routes=tuple(routes), **proxy), **vhost_changes)
        self.config = make_config(vhost)
        self.log = FakeErrorLog()
        self.runtimes = dict(runtimes or {})

        def runtime_for(r: ProxyRoute):
            if r.path not in self.runtimes:
                self.runtimes[r.path] = RoundRobin([r.member])
            return self.runtimes[r.path]

        self.handler = ProxyHandler(self.config, self.log, runtime_for)
        self.router = Router(self.config, self.log, proxy=self.handler)

    def get(self, target="/app/x", method="GET", **kw):
        return route(self.router, method, target, **kw)

    def close(self) -> None:
        self.handler.close()


def _answer_raw(response: bytes, *, read_body: bool = True):
    """A back end that reads one request, records it, sends `response` and closes."""

    def answer(sock, reader, backend):
        method, target, headers = reader.head()
        body = b"".join(reader.body_chunks(headers)) if read_body else b""
        backend.seen.append(Seen(method, target, headers, body))
        sock.sendall(response)

    return answer


# -- forwarding ---------------------------------------------------------------------------------


def test_forwarded_request_and_pooled_connection():
    with Backend(serve_ok(b"from backend", (("X-Up", "1"),))) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port), "/base")])
        response, exchange = proxy.get("/app/x?q=1", headers=[("host", "front:8080")])
        assert (response.status, response.body) == (200, b"from backend")
        assert response.header("X-Up") == "1"
        response, _ = proxy.get("/app/y", headers=[("host", "front:8080")])
        assert response.status == 200
        assert backend.connections == 1  # the second request reused the pooled connection
        seen = backend.seen[0]
        assert (seen.method, seen.target) == ("GET", "/base/x?q=1")
        assert seen.headers[0] == ("Host", f"127.0.0.1:{backend.port}")
        assert seen.header("X-Forwarded-For") == "10.0.0.7"
        assert seen.header("X-Forwarded-Host") == "front:8080"
        assert seen.header("X-Forwarded-Server") == "localhost"
        assert exchange.notes["env:BALANCER_WORKER_NAME"] == f"http://127.0.0.1:{backend.port}"
        assert exchange.notes["handler"] == "proxy-server"
        calls = proxy.runtimes["/app"].names()
        assert calls[:3] == ["choose", "after_response", "finished"]
        proxy.close()


@pytest.mark.parametrize("chunked", [False, True])
def test_request_body_is_streamed_and_reframed(chunked):
    with Backend(serve_ok()) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))])
        request = make_request("POST", "/app/up", [("host", "h")], b"x" * 200_000, chunked=chunked)
        exchange, sink = make_exchange(request, proxy.config.main)
        proxy.router.handle(exchange)
        exchange.finish()
        assert sink.data.startswith(b"HTTP/1.1 200 OK")
        seen = backend.seen[0]
        assert seen.body == b"x" * 200_000
        if chunked:
            assert seen.header("Transfer-Encoding") == "chunked"
            assert seen.header("Content-Length") is None
        else:
            assert seen.header("Content-Length") == "200000"
        proxy.close()


def test_slow_backend_is_streamed_as_produced():
    client_has_first = threading.Event()

    def answer(sock, reader, backend):
        reader.head()
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        backend.waited = client_has_first.wait(10)
        sock.sendall(b"6\r\nsecond\r\n0\r\n\r\n")

    with Backend(answer) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))])
        received = []

        def send(data: bytes) -> None:
            received.append(data)
            if b"first" in b"".join(received):
                client_has_first.set()

        exchange, _ = make_exchange(make_request("GET", "/app/", [("host", "h")]),
                                    proxy.config.main)  # fmt: skip
        exchange._send = send
        proxy.router.handle(exchange)
        exchange.finish()
        assert backend.waited  # the client had "first" before the back end sent "second"
        data = b"".join(received)
        assert b"first" in data and b"second" in data and data.endswith(b"0\r\n\r\n")
        proxy.close()


def test_via_reverse_and_response_hop_by_hop():
    def answer(sock, reader, backend):
        reader.head()
        sock.sendall(
            f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{backend.port}/base/login\r\n"
            "Connection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )

    with Backend(answer) as backend:
        url = f"http://127.0.0.1:{backend.port}/base"
        proxy = Proxy(
            [direct_route("/app", member(backend.port), "/base")],
            proxy={"via": "On", "reverse": (ReverseRule("/app", url),)},
        )
        response, exchange = proxy.get("/app/x", headers=[("host", "front.example")])
        assert response.status == 302
        assert response.header("Location") == "http://front.example/app/login"
        assert response.header("Via") == "1.1 localhost:8080"
        assert response.header("X-Hop") is None and response.header("Keep-Alive") is None
        assert exchange.keep_alive  # the back end's Connection: close is not the client's
        proxy.close()


def test_error_override_replaces_backend_errors():
    body = b"backend's own 404 page"
    response = b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with Backend(_answer_raw(response)) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))], proxy={"error_override": True})
        got, _ = proxy.get()
        assert got.status == 404 and b"backend's own" not in got.body
        assert b"Not Found" in got.body
        proxy.close()


def test_expect_continue_waits_for_the_backend():
    def answer(sock, reader, backend):
        method, target, headers = reader.head()
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = b"".join(reader.body_chunks(headers))
        backend.seen.append(Seen(method, target, headers, body))
        sock.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")

    with Backend(answer) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))])
        request = make_request(
            "PUT", "/app/f", [("host", "h"), ("expect", "100-continue")], b"data"
        )
        request.expect_continue = True
        exchange, sink = make_exchange(request, proxy.config.main)
        proxy.router.handle(exchange)
        exchange.finish()
        assert sink.data.startswith(b"HTTP/1.1 201 Created") and sink.data.endswith(b"ok")
        assert backend.seen[0].header("Expect") == "100-Continue"
        assert backend.seen[0].body == b"data"
        proxy.close()


def test_expect_continue_refused_by_backend_leaves_the_body():
    refused = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n"
    with Backend(_answer_raw(refused, read_body=False)) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))])
        request = make_request(
            "PUT", "/app/f", [("host", "h"), ("expect", "100-continue")], b"data"
        )
        request.expect_continue = True
        exchange, sink = make_exchange(request, proxy.config.main)
        proxy.router.handle(exchange)
        exchange.finish()
        assert sink.data.startswith(b"HTTP/1.1 413")
        assert request.body.read() == b"data"  # never read: the client was not told to send it
        assert not exchange.keep_alive
        proxy.close()


# -- pooled connections -------------------------------------------------------------------------


def test_idle_connection_closed_by_backend_is_replaced():
    closed = threading.Event()

    def answer(sock, reader, backend):
        reader.head()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        reader.sock.shutdown(socket.SHUT_WR)  # the back end's keep-alive timeout, while idle
        closed.set()

    with Backend(answer) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))])
        assert proxy.get()[0].status == 200
        assert closed.wait(10)
        assert proxy.get()[0].status == 200
        assert backend.connections == 2
        assert proxy.log.lines == []
        proxy.close()


def test_reused_connection_failing_before_any_byte_is_retried_fresh():
    def answer(sock, reader, backend):
        reader.head()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        reader.head()  # the second request on this connection: closed unanswered (the race)

    with Backend(answer) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))])
        assert proxy.get()[0].status == 200
        response, _ = proxy.get()
        assert response.status == 200
        assert backend.connections == 2
        assert proxy.log.lines == []
        assert "failed" not in proxy.runtimes["/app"].names()
        proxy.close()


def test_disablereuse_closes_after_each_request():
    with Backend(serve_ok()) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port, reuse=False))])
        for _ in range(3):
            assert proxy.get()[0].status == 200
        assert backend.connections == 3
        proxy.close()


# -- failures -----------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _balanced(*members, **runtime):
    target = "balancer://test"
    r = ProxyRoute("/app", False, target, None, "test:1")
    return Proxy([r], runtimes={"/app": RoundRobin(list(members), **runtime)})


def test_connect_error_fails_over():
    with Backend(serve_ok(b"second")) as backend:
        proxy = _balanced(member(_closed_port()), member(backend.port))
        response, exchange = proxy.get()
        assert (response.status, response.body) == (200, b"second")
        calls = proxy.runtimes["/app"].calls
        assert ("failed", 0) in calls and ("finished", 1, calls[-1][2], calls[-1][3]) in calls
        assert exchange.notes["env:BALANCER_WORKER_NAME"].endswith(str(backend.port))
        assert "AH00957" in {line[2]["ah"] for line in proxy.log.lines}
        proxy.close()


def test_no_worker_is_503_with_its_line():
    proxy = _balanced(member(_closed_port()))
    response, _ = proxy.get()
    assert response.status == 503
    response, _ = proxy.get()
    assert response.status == 503
    assert any("All workers are in error state" in line[1] for line in proxy.log.lines)


class _BusyAtFirst(RoundRobin):
    """No usable member for the first `busy` choices (another child holds them)."""

    busy: int = 3

    def choose(self, path_and_query, cookie, now):
        if self.busy:
            self.busy -= 1
            raise NoWorker("AH01170", "balancer://test: All workers are in error state")
        return super().choose(path_and_query, cookie, now)


def test_balancer_timeout_waits_for_a_usable_member():
    with Backend(serve_ok(b"late")) as backend:
        r = ProxyRoute("/app", False, "balancer://test", None, "test:1")
        waiting = _BusyAtFirst([member(backend.port)], timeout=30.0)
        proxy = Proxy([r], runtimes={"/app": waiting})
        assert proxy.get()[0].body == b"late" and waiting.busy == 0
        at_once = _BusyAtFirst([member(backend.port)], timeout=0.0)
        proxy = Proxy([r], runtimes={"/app": at_once})
        assert proxy.get()[0].status == 503 and at_once.busy == 2
        proxy.close()


def test_idempotent_request_reset_before_response_is_retried_elsewhere():
    def reset(sock, reader, backend):
        reader.head()
        backend.seen.append(Seen("GET", "", [], b""))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    with Backend(reset) as dying, Backend(serve_ok(b"alive")) as alive:
        proxy = _balanced(member(dying.port), member(alive.port))
        response, _ = proxy.get()
        assert (response.status, response.body) == (200, b"alive")
        assert len(dying.seen) == 1
        assert ("failed", 0) in proxy.runtimes["/app"].calls
        proxy.close()


def test_non_idempotent_request_with_body_is_not_retried():
    def drop(sock, reader, backend):
        method, target, headers = reader.head()
        b"".join(reader.body_chunks(headers))
        backend.seen.append(Seen(method, target, headers, b""))

    with Backend(drop) as dying, Backend(serve_ok()) as alive:
        proxy = _balanced(member(dying.port), member(alive.port))
        response, _ = proxy.get(method="POST", body=b"payload")
        assert response.status == 502
        assert alive.seen == []
        assert any(f"127.0.0.1:{dying.port}" in line[1] for line in proxy.log.lines)
        proxy.close()


def test_failonstatus_moves_to_the_next_member():
    busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
    with Backend(_answer_raw(busy)) as first, Backend(serve_ok(b"two")) as second:
        proxy = _balanced(member(first.port), member(second.port), failonstatus=frozenset({503}))
        response, _ = proxy.get()
        assert (response.status, response.body) == (200, b"two")
        proxy.close()


@pytest.mark.parametrize(
    ("response", "ah"),
    [
        (b"HTTX/1.1 200 OK\r\n\r\n", "AH00898"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n", "AH10124"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "AH01110"),
    ],
)
def test_malformed_response_is_502_naming_the_member(response, ah):
    with Backend(_answer_raw(response)) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))])
        got, _ = proxy.get()
        assert got.status == 502
        lines = [line for line in proxy.log.lines if line[2]["ah"] == ah]
        assert lines and f"127.0.0.1:{backend.port}" in lines[0][1]
        proxy.close()


def test_close_mid_body_cuts_the_client_connection():
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 10
    with Backend(_answer_raw(cut)) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))])
        request = make_request("GET", "/app/x", [("host", "h")])
        exchange, sink = make_exchange(request, proxy.config.main)
        proxy.router.handle(exchange)
        exchange.finish()
        assert sink.data.endswith(b"\r\n\r\n" + b"a" * 10)  # no made-up end
        assert exchange.aborted and not exchange.keep_alive
        assert any(f"127.0.0.1:{backend.port}" in line[1] for line in proxy.log.lines)
        proxy.close()


def test_backend_timeout_is_504():
    release = threading.Event()

    def silent(sock, reader, backend):
        reader.head()
        release.wait(10)

    with Backend(silent) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port, timeout=0.3))])
        try:
            response, _ = proxy.get(method="POST", body=b"x")
        finally:
            release.set()
        assert response.status == 504
        assert any(line[2]["ah"] == "AH01102" for line in proxy.log.lines)
        assert ("after_response", 0, 504, True) in proxy.runtimes["/app"].calls
        proxy.close()


# -- the router's order -------------------------------------------------------------------------


def test_proxypass_runs_before_alias_and_mounts_and_location_overrides(tmp_path):
    (tmp_path / "f.txt").write_text("file")
    with Backend(serve_ok(b"proxied")) as backend:
        backend_member = member(backend.port)
        routes = [
            ProxyRoute("/static/own", False, None, None, "t"),
            direct_route("/static", backend_member),
            direct_route("/status", backend_member),
            direct_route("/locked", backend_member),
        ]
        proxy = Proxy(
            routes,
            aliases=(AliasMapping("/static", str(tmp_path)),),
            locations=(
                LocationSection("/status", False, "server-status", None),
                LocationSection("/locked", False, None, (AccessRule("all", ("denied",)),)),
            ),
        )
        proxy.router.extra_handlers["server-status"] = lambda x: x.respond("200 OK", [], b"st")
        assert proxy.get("/static/f.txt")[0].body == b"proxied"  # before Alias
        assert proxy.get("/static/own/../f.txt")[0].body == b"proxied"  # normalised first
        assert proxy.get("/status")[0].body == b"st"  # <Location> SetHandler wins
        assert proxy.get("/locked/x")[0].status == 403  # <Location> Require applies
        assert len(backend.seen) == 2
        proxy.close()


def test_a_bang_route_leaves_the_path_to_alias(tmp_path):
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "f.txt").write_text("file")
    with Backend(serve_ok(b"proxied")) as backend:
        routes = [ProxyRoute("/static/own", False, None, None, "t"),
                  direct_route("/static", member(backend.port))]  # fmt: skip
        proxy = Proxy(routes, aliases=(AliasMapping("/static", str(tmp_path)),))
        assert proxy.get("/static/own/f.txt")[0].body == b"file"
        assert backend.seen == []
        proxy.close()


# -- 200 MB each way ----------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class _Generated:
    """A 200 MB request body produced 64 KiB at a time, hashed as it is read."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.hash = hashlib.sha256()
        self.piece = bytes(range(256)) * 256

    def read(self, size: int = -1) -> bytes:
        take = min(self.left, len(self.piece), size if size >= 0 else len(self.piece))
        self.left -= take
        data = self.piece[:take]
        self.hash.update(data)
        return data


@pytest.mark.slow
def test_200_mb_each_way_streams_in_bounded_memory():
    size = 200 * 1024 * 1024
    piece = bytes(range(256)) * 256

    def answer(sock, reader, backend):
        while True:
            head = reader.head()
            if head is None:
                return
            method, _, headers = head
            digest = hashlib.sha256()
            for data in reader.body_chunks(headers):
                digest.update(data)
            if method == "PUT":
                text = digest.hexdigest().encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + text)
                continue
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // len(piece)):
                sock.sendall(piece)

    with Backend(answer) as backend:
        proxy = Proxy([direct_route("/app", member(backend.port))])
        before = _rss()
        body = _Generated(size)
        request = make_request("PUT", "/app/up", [("host", "h"), ("content-length", str(size))])
        request.body, request.content_length = body, size
        exchange, sink = make_exchange(request, proxy.config.main)
        proxy.router.handle(exchange)
        exchange.finish()
        assert sink.data.endswith(body.hash.hexdigest().encode())
        digest = hashlib.sha256()
        length = 0
        head = []

        def send(data: bytes) -> None:
            nonlocal length
            if not head:
                head.append(data.partition(b"\r\n\r\n")[0])
                data = data.partition(b"\r\n\r\n")[2]
            length += len(data)
            digest.update(data)

        exchange, _ = make_exchange(make_request("GET", "/app/down", [("host", "h")]),
                                    proxy.config.main)  # fmt: skip
        exchange._send = send
        proxy.router.handle(exchange)
        exchange.finish()
        expected = hashlib.sha256()
        for _ in range(size // len(piece)):
            expected.update(piece)
        assert (length, digest.hexdigest()) == (size, expected.hexdigest())
        assert _rss() - before < 50 * 1024 * 1024
        proxy.close()


def test_config_from_builder_can_carry_proxy_settings():
    """The shape the directives will fill: a ServerConfig replaced with ProxySettings."""
    config = make_config()
    settings = ProxySettings(routes=(direct_route("/app", member(1)),))
    main = dataclasses.replace(config.main, proxy=settings)
    assert dataclasses.replace(config, main=main).main.proxy.routes[0].path == "/app"
    assert NoWorker("AH01170", "x").status == 503
