"""ASGI HTTP serving through the real event MPM (tests/apps/asgi_apps.py, mounted at /a).

The scope an application sees, keep-alive and pipelining, request bodies streamed with
more_body and 100-continue on the first receive, the server's duties when an application
fails (500 before the start, a cut response after it, RuntimeError for a send out of order),
http.disconnect, pathsend and zerocopysend, flow control towards a client that does not read,
a connection moving between the epoll loop (WSGI, static files, server-status) and the ASGI
loop, the access log and the scoreboard, and TLS. Lifespan, configuration and restarts are in
test_asgi_lifespan.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import time
from pathlib import Path

import pytest

from server import Server, call, wait_for
from test_e2e_http import Wire

SMALL_POOL = """\
StartServers 1
MinSpareThreads 1
MaxSpareThreads 8
ThreadsPerChild 4
"""
CONFIG = (
    SMALL_POOL
    + """\
ASGIApp /a asgi_apps:app
WSGIApp /w testapp:hello
LimitRequestBody 2000000
ExtendedStatus On
<Location /server-status>
    SetHandler server-status
</Location>
LogFormat "%h \\"%r\\" %>s %b %D" timed
CustomLog "{tmp}/timed_log" timed
"""
)
MIB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("asgi")
    srv = Server(tmp, CONFIG.format(tmp=tmp), mpm="event")
    (tmp / "htdocs" / "static.txt").write_bytes(b"static file\n")
    with srv:
        yield srv


@pytest.fixture
def scratch(tmp_path) -> Path:
    """Files the applications write for the test (readable by the server's user)."""
    tmp_path.chmod(0o777)
    return tmp_path


def request(path: str, *, method: str = "GET", extra: str = "", version: str = "1.1") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: localhost\r\n{extra}\r\n".encode()


def child_lives(server: Server) -> None:
    """A fresh connection is served: the failure before did not kill the child."""
    assert call(server, "GET", "/a/hello")[::2] == (200, b"Hello, ASGI!")


# -- the scope, keep-alive, pipelining --------------------------------------------------------


def test_hello_status_headers_and_body(server: Server) -> None:
    status, headers, body = call(server, "GET", "/a/hello")
    assert (status, body) == (200, b"Hello, ASGI!")
    assert headers["content-type"] == "text/plain"
    assert headers["x-app"] == "asgi"
    assert headers["Content-Length"] == "12"
    assert headers["Server"].startswith("mpmd/")


def test_scope_fields(server: Server) -> None:
    wire = Wire.connect(server.port)
    try:
        wire.send(
            b"GET /a/sc%6Fpe?q=a%20b&x=1 HTTP/1.1\r\nHost: localhost\r\n"
            b"X-Custom-Header: Some Value\r\n\r\n"
        )
        resp = wire.response()
        client_port = wire.sock.getsockname()[1]
    finally:
        wire.close()
    assert resp.status == 200, resp
    scope = json.loads(resp.body)
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["method"] == "GET"
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/a"
    assert scope["path"] == "/a/scope"  # decoded, and including root_path
    assert scope["raw_path"] == "/a/sc%6Fpe"  # as the client sent it
    assert scope["query_string"] == "q=a%20b&x=1"
    assert scope["client"] == ["127.0.0.1", client_port]
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["headers_are_bytes"] is True
    assert ["host", "localhost"] in scope["headers"]
    assert ["x-custom-header", "Some Value"] in scope["headers"]  # names lower case
    assert set(scope["extensions"]) >= {"http.response.pathsend", "http.response.zerocopysend"}
    wire = Wire.connect(server.port)
    try:
        wire.send(request("/a/scope", version="1.0"))
        resp = wire.response()
    finally:
        wire.close()
    assert json.loads(resp.body)["http_version"] == "1.0"


def test_keep_alive_several_requests_on_one_socket(server: Server) -> None:
    wire = Wire.connect(server.port)
    try:
        pids = set()
        for _ in range(5):
            assert wire.send(request("/a/hello"))
            resp = wire.response()
            assert (resp.status, resp.body) == (200, b"Hello, ASGI!")
            assert not resp.closes
            wire.send(request("/a/pid"))
            pids.add(wire.response().body)
        assert len(pids) == 1  # one connection, one child
    finally:
        wire.close()


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    wire = Wire.connect(server.port)
    try:
        wire.send(
            request("/a/stream?n=3&size=5")
            + request("/a/hello")
            + request("/a/echo", method="POST", extra="Content-Length: 4\r\n")
            + b"ping"
            + request("/a/hello", extra="Connection: close\r\n")
        )
        first, second, third, last = (wire.response() for _ in range(4))
        assert (first.status, first.body) == (200, b"AAAAABBBBBCCCCC")
        assert first.chunked
        assert second.body == b"Hello, ASGI!"
        assert third.body == b"ping"
        assert last.body == b"Hello, ASGI!" and last.closes
        assert wire.closed_by_server()
    finally:
        wire.close()


# -- request bodies ---------------------------------------------------------------------------


def test_content_length_body_is_streamed_to_the_app_and_echoed(server: Server) -> None:
    data = os.urandom(MIB)
    status, headers, body = call(server, "POST", "/a/echo", body=data)
    assert status == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert int(headers["x-messages"]) > 1  # several http.request messages, more_body set


def test_chunked_body_is_streamed_to_the_app_and_echoed(server: Server) -> None:
    pieces = [os.urandom(n) for n in (1, 300_000, 65_536, 700_000, 3)]
    data = b"".join(pieces)
    status, headers, body = call(server, "POST", "/a/echo", body=iter(pieces), encode_chunked=True)
    assert status == 200
    assert body == data
    assert int(headers["x-messages"]) > 1


def test_expect_100_continue_is_sent_when_the_app_first_receives(server: Server, scratch) -> None:
    seen, gate = scratch / "seen", scratch / "gate"
    wire = Wire.connect(server.port)
    try:
        wire.send(
            request(
                f"/a/gated-echo?file={seen}&gate={gate}",
                method="POST",
                extra="Content-Length: 5\r\nExpect: 100-continue\r\n",
            )
        )
        wait_for(seen.exists)  # the app has the request and has not called receive yet
        wire.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            wire.sock.recv(1)  # no 100 Continue yet
        wire.sock.setblocking(True)
        wire.sock.settimeout(5)
        gate.touch()
        head = wire._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 100 Continue\r\n"), head
        wire.send(b"hello")
        resp = wire.response()
        assert (resp.status, resp.body) == (200, b"hello")
    finally:
        wire.close()


def test_no_100_continue_when_the_app_answers_without_reading(server: Server) -> None:
    wire = Wire.connect(server.port)
    try:
        wire.send(
            request("/a/deny", method="POST", extra="Content-Length: 5\r\nExpect: 100-continue\r\n")
        )
        resp = wire.response()
        assert resp.status == 401
        assert wire.interim == []
    finally:
        wire.close()
    child_lives(server)


def test_a_body_still_arriving_after_the_response_does_not_stall_the_loop(server: Server) -> None:
    slow = Wire.connect(server.port)
    try:
        slow.send(request("/a/deny", method="POST", extra="Content-Length: 1000\r\n") + b"x" * 10)
        resp = slow.response()
        assert resp.status == 401 and resp.closes  # the rest is not waited for
        other = Wire.connect(server.port)  # while the slow client holds back 990 bytes
        try:
            other.send(request("/a/hello"))
            assert other.response().body == b"Hello, ASGI!"
        finally:
            other.close()
        assert slow.closed_by_server()
    finally:
        slow.close()


def test_limit_request_body_exceeded_is_413(server: Server) -> None:
    status, _, _ = call(server, "POST", "/a/echo", body=b"x" * 2_000_001)
    assert status == 413
    chunks = iter([b"x" * 1_000_000, b"y" * 1_000_000, b"z" * 10])
    wire = Wire.connect(server.port)
    try:
        wire.send(request("/a/echo", method="POST", extra="Transfer-Encoding: chunked\r\n"))
        for chunk in chunks:
            if not wire.send(b"%x\r\n%s\r\n" % (len(chunk), chunk)):
                break
        wire.send(b"0\r\n\r\n")
        resp = wire.response()
        assert resp.status == 413 and resp.closes
    finally:
        wire.close()
    child_lives(server)


@pytest.mark.slow
def test_a_stalled_body_is_408_and_a_disconnect_for_the_app(tmp_path) -> None:
    config = SMALL_POOL + "ASGIApp /a asgi_apps:app\nRequestReadTimeout header=20 body=1\n"
    with Server(tmp_path, config, mpm="event") as server:
        wire = Wire.connect(server.port)
        try:
            wire.send(request("/a/echo", method="POST", extra="Content-Length: 100\r\n") + b"x")
            resp = wire.response()
            assert resp.status == 408 and resp.closes
            assert wire.closed_by_server()
        finally:
            wire.close()
        wait_for(lambda: '"POST /a/echo HTTP/1.1" 408 ' in server.access_log.read_text())
        assert "[reqtimeout:info]" in server.log_text()
        assert "AH01382: Request body read timeout" in server.log_text()
        child_lives(server)


# -- an application's failures ----------------------------------------------------------------


def test_exception_before_start_is_a_logged_500(server: Server) -> None:
    child = call(server, "GET", "/a/pid")[2]
    status, headers, body = call(server, "GET", "/a/raise-before")
    assert status == 500
    assert headers.get("Connection") == "close"
    assert b"failed on purpose" not in body
    log = wait_for(lambda: "failed on purpose" in server.log_text() and server.log_text())
    assert 'MP00283: Exception in ASGI application "GET /a/raise-before HTTP/1.1"' in log
    assert "Traceback (most recent call last)" in log
    assert "ValueError: the ASGI application failed on purpose" in log
    assert call(server, "GET", "/a/pid")[2] == child  # the same child serves on


def test_exception_after_start_cuts_the_response(server: Server) -> None:
    wire = Wire.connect(server.port)
    try:
        wire.send(request("/a/raise-after"))
        with pytest.raises(EOFError, match="closed after 7 of 1000"):
            wire.response()
    finally:
        wire.close()
    wait_for(lambda: "failed after the start" in server.log_text())
    child_lives(server)


def test_return_without_start_is_500(server: Server) -> None:
    status, _, _ = call(server, "GET", "/a/no-start")
    assert status == 500
    wait_for(lambda: "MP00284" in server.log_text())
    assert '"GET /a/no-start HTTP/1.1"' in server.log_text()
    child_lives(server)


def test_body_before_start_is_500(server: Server) -> None:
    status, _, _ = call(server, "GET", "/a/body-first")
    assert status == 500
    wait_for(lambda: "Expected ASGI message 'http.response.start'" in server.log_text())
    assert "RuntimeError" in server.log_text()
    child_lives(server)


def test_send_after_the_response_completed_raises_runtime_error(server: Server, scratch) -> None:
    record = scratch / "after"
    status, _, body = call(server, "GET", f"/a/after-complete?file={record}")
    assert (status, body) == (200, b"complete")
    text = wait_for(lambda: record.exists() and record.read_text())
    assert text.startswith("RuntimeError: Unexpected ASGI message 'http.response.body'"), text


def test_a_client_that_leaves_is_an_http_disconnect(server: Server, scratch) -> None:
    record = scratch / "disconnect"
    wire = Wire.connect(server.port)
    wire.send(request(f"/a/disconnect?file={record}"))
    wire.close()
    assert wait_for(lambda: record.exists() and record.read_text()) == "http.disconnect"
    wait_for(lambda: "/a/disconnect?" in server.access_log.read_text())  # the cycle ended
    assert "/a/disconnect?" not in server.log_text()  # no MP00284: the client left
    child_lives(server)


def test_a_client_that_leaves_mid_response_is_no_app_error(server: Server, scratch) -> None:
    record, count = scratch / "progress", 500
    target = f"/a/slow-consumer?file={record}&n={count}&size=65536"
    wire = Wire.connect(server.port)
    wire.send(request(target))
    wait_for(record.exists)
    wire.close()  # the app's sends are no-ops from now on, and it completes
    wait_for(lambda: int(record.read_text()) == count)
    wait_for(lambda: target in server.access_log.read_text())
    assert "MP00285" not in server.log_text()  # no app error: the client left
    child_lives(server)


# -- files and flow control -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pathsend", "zerocopysend"])
def test_file_extensions_send_the_file_byte_exact(server: Server, scratch, kind) -> None:
    data = os.urandom(3 * MIB + 12345)
    path = scratch / "payload.bin"
    path.write_bytes(data)
    path.chmod(0o644)
    status, headers, body = call(server, "GET", f"/a/{kind}?path={path}")
    assert status == 200
    assert headers["Content-Length"] == str(len(data))
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def _stable(read, window: float = 0.5, timeout: float = 15.0) -> int:
    """The value `read` returns once it has not changed for `window` seconds (a stall)."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        value = read()
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= window:
            return value
        time.sleep(0.02)
    raise AssertionError(f"still changing after {timeout} s: {last}")


@pytest.mark.slow
def test_send_waits_while_the_client_does_not_read(server: Server, scratch) -> None:
    record, count, size = scratch / "progress", 200, 65536
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    try:
        sock.sendall(request(f"/a/slow-consumer?file={record}&n={count}&size={size}"))
        wait_for(record.exists)

        def progress() -> int:
            return int(record.read_text())

        stalled = _stable(progress)
        assert stalled < count * 3 // 4, f"the app sent {stalled} of {count} chunks unread"
        received = 0
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        received = len(rest)
        while received < count * size:
            data = sock.recv(MIB)
            assert data, f"closed after {received} bytes"
            received += len(data)
        assert received == count * size
        wait_for(lambda: progress() == count)
    finally:
        sock.close()


# -- one connection across the epoll loop and the ASGI loop -----------------------------------


def test_one_connection_alternates_asgi_wsgi_static_and_status(server: Server) -> None:
    wire = Wire.connect(server.port)
    try:
        expected = [
            ("/a/hello", b"Hello, ASGI!"),
            ("/w", b"Hello, World!"),
            ("/a/hello", b"Hello, ASGI!"),
            ("/w", b"Hello, World!"),
            ("/static.txt", b"static file\n"),
            ("/a/echo", None),
            ("/server-status?auto", None),
            ("/a/hello", b"Hello, ASGI!"),
        ]
        for path, body in expected:
            wire.send(request(path))
            resp = wire.response()
            assert resp.status == 200, (path, resp)
            assert not resp.closes, (path, resp)
            if body is not None:
                assert resp.body == body, path
            elif path.startswith("/server-status"):
                assert b"Total Accesses:" in resp.body
        wire.send(request("/w") + request("/a/hello") + request("/w"))  # pipelined across
        assert [wire.response().body for _ in range(3)] == [
            b"Hello, World!",
            b"Hello, ASGI!",
            b"Hello, World!",
        ]
    finally:
        wire.close()


def _auto(server: Server) -> dict[str, str]:
    _, _, body = call(server, "GET", "/server-status?auto")
    return dict(line.split(": ", 1) for line in body.decode().splitlines() if ": " in line)


def test_access_log_and_scoreboard_count_asgi_requests(server: Server) -> None:
    timed_log = server.tmp / "timed_log"
    before = int(_auto(server)["Total Accesses"])
    for _ in range(5):
        assert call(server, "GET", "/a/hello?log=1")[0] == 200
    status, _, _ = call(server, "POST", "/a/echo?log=2", body=b"x" * 1000)
    assert status == 200

    def lines() -> list[str]:
        text = timed_log.read_text() if timed_log.exists() else ""
        return [x for x in text.splitlines() if "log=" in x]

    found = wait_for(lambda: len(lines()) == 6 and lines())
    for line in found[:5]:
        match = re.fullmatch(r'127\.0\.0\.1 "GET /a/hello\?log=1 HTTP/1\.1" 200 12 (\d+)', line)
        assert match, line
        assert int(match[1]) > 0  # %D: microseconds
    assert re.fullmatch(r'127\.0\.0\.1 "POST /a/echo\?log=2 HTTP/1\.1" 200 1000 \d+', found[5])
    # the ?auto request itself is counted once it is logged, so at least 6 more, at most 7
    after = wait_for(lambda: (n := int(_auto(server)["Total Accesses"])) >= before + 7 and n)
    assert after >= before + 7


def test_app_headers_reach_the_head_and_the_log_as_sent(tmp_path) -> None:
    config = (
        SMALL_POOL + "ASGIApp /a asgi_apps:app\n"
        'LogFormat "%>s [%{X-Case}o] [%{Content-Type}o] [%{Transfer-Encoding}o]" hdrs\n'
        f'CustomLog "{tmp_path}/hdr_log" hdrs\n'
    )
    with Server(tmp_path, config, mpm="event") as server:
        status, headers, body = call(server, "GET", "/a/headers")
        assert (status, body) == (200, b"ok")
        assert headers["X-Case"] == "Mixed Case"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert headers["Content-Length"] == "2"
        assert headers["Connection"] == "close"  # the app asked for it
        assert "Transfer-Encoding" not in headers  # the server frames the body
        log = tmp_path / "hdr_log"
        wait_for(lambda: log.exists() and "Mixed" in log.read_text())
        assert "200 [Mixed Case] [text/plain] [-]" in log.read_text().splitlines()
        for what, reason in (("name", "Invalid HTTP header name."),
                             ("value", "Invalid HTTP header value.")):  # fmt: skip
            status, _, _ = call(server, "GET", f"/a/bad-header?what={what}")
            assert status == 500
            wait_for(lambda reason=reason: f"RuntimeError: {reason}" in server.log_text())


# -- TLS --------------------------------------------------------------------------------------


def test_an_asgi_app_in_a_tls_vhost_sees_https(tmp_path) -> None:
    from tls_certs import make_pki

    pki = make_pki(tmp_path / "pki")
    crt, key = pki.server("a.test")
    config = (
        SMALL_POOL
        + f"""
        <VirtualHost *>
          ServerName a.test
          SSLEngine on
          SSLCertificateFile {crt}
          SSLCertificateKeyFile {key}
          SSLVerifyClient optional
          SSLCACertificateFile {pki.ca_file}
          ASGIApp /a asgi_apps:app
        </VirtualHost>
        """
    )
    with Server(tmp_path, config, mpm="event") as server:
        ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock = ctx.wrap_socket(raw, server_hostname="a.test")
        wire = Wire(sock)
        try:
            for _ in range(2):  # keep-alive over TLS on the ASGI loop
                wire.send(b"GET /a/scope HTTP/1.1\r\nHost: a.test\r\n\r\n")
                resp = wire.response()
                assert resp.status == 200, resp
                scope = json.loads(resp.body)
                assert scope["scheme"] == "https"
                assert scope["root_path"] == "/a"
                tls = scope["tls"]  # ASGI's tls extension
                assert tls["server_cert"] == ssl.DER_cert_to_PEM_cert(sock.getpeercert(True))
                assert (tls["client_cert_chain"], tls["client_cert_name"]) == ([], None)
                assert tls["client_cert_error"] is None
                assert tls["tls_version"] == {"TLSv1.3": 0x0304, "TLSv1.2": 0x0303}[sock.version()]
                suite = {c["name"]: c["id"] & 0xFFFF for c in ctx.get_ciphers()}[sock.cipher()[0]]
                assert tls["cipher_suite"] == suite
        finally:
            wire.close()
        cert = pki.client("one@example.com", "Client One")  # mTLS: the client's certificate
        ctx.load_cert_chain(str(cert))
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        wire = Wire(ctx.wrap_socket(raw, server_hostname="a.test"))
        try:
            wire.send(b"GET /a/scope HTTP/1.1\r\nHost: a.test\r\n\r\n")
            tls = json.loads(wire.response().body)["tls"]
        finally:
            wire.close()
        assert tls["client_cert_name"].startswith("CN=Client One,")
        begin = Path(cert).read_text().index("-----BEGIN CERTIFICATE-----")
        leaf = ssl.PEM_cert_to_DER_cert(Path(cert).read_text()[begin:])  # (its first block)
        assert [ssl.PEM_cert_to_DER_cert(pem) for pem in tls["client_cert_chain"]] == [leaf]
        assert tls["client_cert_error"] is None
