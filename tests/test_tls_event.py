"""TLS in the event MPM: handshakes and request heads in the child's loop, never in a thread.

A real event child serves a TLS port (certificates from trustme, tests/tls_certs.py) beside the
plain port tests/server.py starts it with. What the loop does for TLS is checked as for plain
HTTP in test_event_mpm.py: keep-alive and pipelining, large bodies both ways, write completion
through the SSLObject, clients that stall in the handshake or dribble their heads holding no
thread (the scoreboard says so) until RequestReadTimeout cuts them, the in-loop proxy.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import select
import socket
import ssl
import time
from pathlib import Path

import pytest

from mpmd.mpm.scoreboard import Scoreboard, default_path
from server import Server, free_port, wait_for
from test_event_mpm import APPS, ONE_CHILD, all_threads_idle, only_child, process_record
from tls_certs import Pki, make_pki

HELLO = b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
SLOW_HEAD = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nX-Slow: "


@pytest.fixture(autouse=True)
def _open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


class TlsServer(Server):
    """An event mpmd (or `mpmd -X`, the same loop without threads) with a TLS port
    (`tls_port`) beside its plain one."""

    def __init__(self, tmp: Path, pki: Pki, config: str = "", args: tuple[str, ...] = ()) -> None:
        self.tls_port = free_port()
        crt, key = pki.server("localhost")
        super().__init__(
            tmp,
            f"Listen 127.0.0.1:{self.tls_port}\n"
            f"<VirtualHost *:{self.tls_port}>\nServerName localhost\nSSLEngine on\n"
            f'SSLCertificateFile "{crt}"\nSSLCertificateKeyFile "{key}"\n</VirtualHost>\n' + config,
            mpm=None if args else "event",
            args=args,
        )
        self.client_context = ssl.create_default_context(cafile=str(pki.ca_file))

    def connect(self, timeout: float = 10.0) -> ssl.SSLSocket:
        sock = socket.create_connection(("127.0.0.1", self.tls_port), timeout=timeout)
        return self.client_context.wrap_socket(sock, server_hostname="localhost")


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one Content-Length response."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    body = bytearray(rest)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    assert len(body) == length, "more than the response arrived"
    return head, bytes(body)


def hello_over_tls(server: TlsServer, timeout: float = 10.0) -> bytes:
    with server.connect(timeout) as sock:
        sock.sendall(HELLO)
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    return body


def test_keep_alive_and_pipelining_over_tls(tmp_path, pki):
    with TlsServer(tmp_path, pki, ONE_CHILD + APPS) as server, server.connect() as sock:
        sock.sendall(HELLO * 3)  # pipelined: one write, likely one record
        for _ in range(3):
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200") and body == b"Hello, World!"
        for _ in range(3):  # then one at a time, the connection back in keep-alive between
            sock.sendall(HELLO)
            assert read_response(sock)[1] == b"Hello, World!"
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        head, _ = read_response(sock)
        assert b"Connection: close" in head
        assert sock.recv(100) == b""  # close_notify: a clean end, no truncation error


def test_large_post_and_large_static_file_over_tls(tmp_path, pki):
    """A 5 MB body read by the thread through the SSLObject (the loop buffers only the first
    64 KiB) and echoed back; a 20 MB file read and encrypted in chunks (no sendfile), finished
    by write completion while the client reads slowly at first."""
    (tmp_path / "htdocs").mkdir()
    data = os.urandom(20 << 20)
    (tmp_path / "htdocs" / "big.bin").write_bytes(data)
    payload = os.urandom(5 << 20)
    with TlsServer(tmp_path, pki, ONE_CHILD + APPS) as server, server.connect(30) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(payload)
            + payload
        )
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        sock.sendall(HELLO)  # the connection is intact behind them
        assert read_response(sock)[1] == b"Hello, World!"


@pytest.mark.slow
def test_write_completion_through_tls_frees_the_threads(tmp_path, pki):
    """Two TLS clients not reading a 16 MiB file and a 12 MiB in-memory body do not hold the
    child's two threads: the loop encrypts and writes the rest as each client reads."""
    config = (
        ONE_CHILD.replace("ThreadsPerChild 25", "ThreadsPerChild 2")
        .replace("MaxRequestWorkers 25", "MaxRequestWorkers 2")
        .replace("MinSpareThreads 5", "MinSpareThreads 1")
        .replace("MaxSpareThreads 50", "MaxSpareThreads 3")
    )
    (tmp_path / "htdocs").mkdir()
    file_body = os.urandom(16 << 20)
    (tmp_path / "htdocs" / "big.bin").write_bytes(file_body)
    memory_body = os.urandom(12 << 20)
    requests = [
        (b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n", file_body),
        (
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
            % len(memory_body)
            + memory_body,
            memory_body,
        ),
    ]
    with TlsServer(tmp_path, pki, config + APPS) as server:
        child = only_child(server)
        board = Scoreboard.attach(default_path(server.pid))
        stalled = []
        try:
            for request, _ in requests:
                sock = server.connect(30)
                sock.sendall(request)
                stalled.append(sock)
            wait_for(lambda: process_record(board, child, lambda p: p.write_completion == 2))
            for _ in range(5):
                assert hello_over_tls(server, timeout=5) == b"Hello, World!"
            for sock, (_, body) in zip(stalled, requests, strict=True):
                received = read_response(sock)[1]
                assert hashlib.sha256(received).digest() == hashlib.sha256(body).digest()
        finally:
            board.close()
            for sock in stalled:
                sock.close()


def test_100_continue_is_answered_through_tls_by_the_loop(tmp_path, pki):
    with TlsServer(tmp_path, pki, ONE_CHILD + APPS) as server, server.connect() as sock:
        payload = os.urandom(100_000)  # more than the loop buffers: a thread reads the rest
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(payload)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(payload)
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and body == payload


# -- slow and stalled clients --------------------------------------------------------------------


def client_hello(server: TlsServer) -> bytes:
    """The first flight of a real TLS client (a ClientHello), made without a socket."""
    obj = server.client_context.wrap_bio(
        ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(), server_hostname="localhost"
    )
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def stalled_handshakes(server: TlsServer, count: int) -> list[socket.socket]:
    """Connections that stop inside the handshake: half send nothing after connecting, half
    the first part of a ClientHello."""
    hello = client_hello(server)
    socks = []
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
        if index % 2:
            sock.sendall(hello[: len(hello) // 2])
        socks.append(sock)
    return socks


def dribbling_heads(server: TlsServer, count: int) -> list[ssl.SSLSocket]:
    """Connections whose handshake completed, then the first bytes of a request head."""
    socks = []
    for _ in range(count):
        sock = server.connect()
        sock.sendall(SLOW_HEAD)
        socks.append(sock)
    return socks


def open_count(socks: list[socket.socket]) -> int:
    """How many have received neither an answer nor a close (over TLS, the session tickets
    that follow a handshake are no answer)."""
    readable, _, _ = select.select(socks, [], [], 0)
    still = len(socks) - len(readable)
    for sock in readable:
        if isinstance(sock, ssl.SSLSocket):
            sock.setblocking(False)
            try:
                sock.recv(100)
            except ssl.SSLWantReadError:
                still += 1
            finally:
                sock.settimeout(10)
    return still


@pytest.mark.slow
def test_stalled_tls_clients_hold_no_thread_until_request_read_timeout(tmp_path, pki):
    """25 clients stalled in the handshake and 25 dribbling their head over TLS: every thread
    of the child stays idle and a normal request is answered meanwhile; RequestReadTimeout
    closes the handshakes and answers the partial heads 408 (encrypted), as over plain HTTP."""
    config = ONE_CHILD + "RequestReadTimeout handshake=1 header=1\n" + APPS
    with TlsServer(tmp_path, pki, config) as server:
        child = only_child(server)
        board = Scoreboard.attach(default_path(server.pid))
        stalled = stalled_handshakes(server, 25)
        heads = dribbling_heads(server, 25)
        try:
            wait_for(lambda: process_record(board, child, lambda p: p.connections >= 50))
            assert all_threads_idle(board, child)
            assert hello_over_tls(server) == b"Hello, World!"
            for sock in stalled:  # closed without an answer
                assert sock.recv(100) == b""
            for sock in heads:
                head = sock.recv(100)
                assert head.startswith(b"HTTP/1.1 408"), head
            wait_for(lambda: board.snapshot().tls_failures == 25)  # the timed-out handshakes
        finally:
            board.close()
            for sock in stalled + heads:
                sock.close()
    assert "[reqtimeout:info]" in server.log_text()
    assert "AH01382: Request handshake read timeout" in server.log_text()


@pytest.mark.slow
def test_slowloris_over_tls_never_keeps_a_normal_request_waiting(tmp_path, pki):
    """The acceptance test: 300 TLS slowloris clients, 150 stalled in the handshake and 150
    dribbling their heads, hold none of the child's threads: normal TLS requests are answered
    between the drips while every slow client is still held open."""
    config = ONE_CHILD + "AsyncRequestWorkerFactor 50\n" + APPS
    with TlsServer(tmp_path, pki, config) as server:
        child = only_child(server)
        board = Scoreboard.attach(default_path(server.pid))
        stalled = stalled_handshakes(server, 150)
        heads = dribbling_heads(server, 150)
        timings = []
        try:
            wait_for(lambda: process_record(board, child, lambda p: p.connections >= 300))
            for _ in range(3):  # three drips: each head gets one more byte, in its own record
                for sock in heads:
                    sock.sendall(b"a")
                for _ in range(5):
                    start = time.monotonic()
                    assert hello_over_tls(server) == b"Hello, World!"
                    timings.append(time.monotonic() - start)
                    wait_for(lambda: all_threads_idle(board, child))
            assert open_count(stalled + heads) == 300  # none answered or cut meanwhile
        finally:
            board.close()
            for sock in stalled + heads:
                sock.close()
    timings.sort()
    print(
        f"TLS request beside 300 TLS slowloris: median {timings[len(timings) // 2] * 1000:.1f} ms,"
        f" worst {timings[-1] * 1000:.1f} ms over {len(timings)}"
    )


def test_a_proxied_request_from_a_tls_client(tmp_path, pki):
    """ProxyPass served in the loop: requests (pipelined) and a 3 MB upload decrypted there,
    the back end's answers streamed back through the connection's SSLObject (queue/flush)."""
    from backends import NginxBackends

    with NginxBackends(1, tmp_path / "nginx") as nginx:
        config = ONE_CHILD + APPS + f"ProxyPass /p http://127.0.0.1:{nginx.ports[0]}\n"
        with TlsServer(tmp_path, pki, config) as server, server.connect() as sock:
            sock.sendall(b"GET /p/hello HTTP/1.1\r\nHost: localhost\r\n\r\n" * 2)
            for _ in range(2):
                head, body = read_response(sock)
                assert head.startswith(b"HTTP/1.1 200") and body == b"backend-0\n"
            sock.sendall(b"GET /p/big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head, body = read_response(sock)
            assert hashlib.sha256(body).hexdigest() == nginx.big_sha256
            upload = os.urandom(3 << 20)  # read from the client by the loop, past its 64 KiB
            sock.sendall(
                b"PUT /p/upload/up HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n"
                % len(upload)
            )
            for start in range(0, len(upload), 1 << 20):
                sock.sendall(upload[start : start + (1 << 20)])
            head, _ = read_response(sock)
            assert head.startswith(b"HTTP/1.1 201"), head
        stored = nginx.uploaded(0, "up").read_bytes()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(upload).digest()


def test_the_environ_plain_http_on_the_tls_port_and_the_handshake_counts(tmp_path, pki):
    """What the loop's handshake established reaches the application (HTTPS, SSL_*); plain
    HTTP on the TLS port gets Apache's 400 in clear, logged as `GET / HTTP/1.0`; handshakes
    and failures are counted in the scoreboard (/metrics)."""
    config = ONE_CHILD + APPS + "WSGIApp /tls tlsapp:application\nSSLOptions +StdEnvVars\n"
    with TlsServer(tmp_path, pki, config) as server:
        board = Scoreboard.attach(default_path(server.pid))
        try:
            with server.connect() as sock:
                sock.sendall(b"GET /tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
                body = read_response(sock)[1]
            env = json.loads(body)
            assert env["HTTPS"] == "on" and env["wsgi.url_scheme"] == "https"
            assert env["SSL_PROTOCOL"] == "TLSv1.3" and env["SSL_TLS_SNI"] == "localhost"
            with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            assert b"speaking plain HTTP to an SSL-enabled server port" in answer
            with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as sock:
                sock.sendall(b"\x16\x03\x01\x00\x05hello")  # not a ClientHello
                assert sock.recv(100)[:1] in (b"", b"\x15")  # an alert, or just the close
            counts = wait_for(lambda: (s := board.snapshot()).tls_failures >= 2 and s, timeout=10)
            assert counts.tls_handshakes >= 1
        finally:
            board.close()
        wait_for(lambda: '"GET / HTTP/1.0" 400' in server.access_log.read_text())
        assert "AH01996" in server.log_text()


def test_a_websocket_tunnel_from_a_tls_client(tmp_path, pki):
    """wss:// through the in-loop proxy's tunnel: frames both ways through the SSLObject, a
    1 MiB message, and both close handshakes (the back end's ends in close_notify)."""
    websockets = pytest.importorskip("websockets")
    from test_proxy_tunnel import WsBackend

    with WsBackend() as backend:
        config = ONE_CHILD + f"ProxyPass /ws/ ws://127.0.0.1:{backend.port}/\n"
        with TlsServer(tmp_path, pki, config) as server:
            uri = f"wss://localhost:{server.tls_port}/ws/chat"
            options = {"ssl": server.client_context, "open_timeout": 10, "close_timeout": 10}
            with websockets.sync.client.connect(uri, max_size=None, **options) as ws:
                ws.send("hello")
                assert ws.recv(timeout=10) == "hello"
                big = os.urandom(1 << 20)
                ws.send(big)
                assert ws.recv(timeout=10) == big
            assert ws.close_code == 1000
            with websockets.sync.client.connect(uri, **options) as ws:
                ws.send("close-me")
                with pytest.raises(websockets.exceptions.ConnectionClosed):
                    ws.recv(timeout=10)
            assert (ws.close_code, ws.close_reason) == (4000, "bye")


def test_single_process_mode_serves_tls_from_its_loop(tmp_path, pki):
    """`mpmd -X` runs the event loop without threads: the loop does the handshake, then
    serves the request itself through the same TLS session; a body is read through it too."""
    with TlsServer(tmp_path, pki, APPS, args=("-X",)) as server, server.connect() as sock:
        sock.sendall(HELLO)
        assert read_response(sock)[1] == b"Hello, World!"
        payload = os.urandom(300_000)
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(payload)
            + payload
        )
        assert read_response(sock)[1] == payload
        board = Scoreboard.attach(default_path(server.pid))
        try:
            assert board.snapshot().tls_handshakes == 1
        finally:
            board.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_refused_client_certificate_leaves_no_session_to_resume(tmp_path, pki, version):
    """A client certificate SSLVerifyDepth refuses (an intermediate CA's, over the default
    1: AH02040) leaves the client no session, so its next connection is checked again
    instead of resuming past the check; an accepted certificate resumes as before. With one
    host, OpenSSL refuses it in the handshake; where a port's hosts differ and the check
    comes after the handshake, the loop drops the tickets (test_tls_serve's resumed case)."""
    config = ONE_CHILD + APPS + f"SSLVerifyClient require\nSSLCACertificateFile {pki.ca_file}\n"

    def client(cert: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        ctx.minimum_version = ctx.maximum_version = version
        ctx.load_cert_chain(str(cert))
        return ctx

    def attempt(server: TlsServer, ctx: ssl.SSLContext, session=None):
        """(what the server answered, the client's session, whether it was resumed)"""
        raw = socket.create_connection(("127.0.0.1", server.tls_port), timeout=10)
        answer = b""
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as sock:
                sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while chunk := sock.recv(65536):
                    answer += chunk
                return answer, sock.session, sock.session_reused
        except (ssl.SSLError, ConnectionError):
            return answer, None, False

    deep = client(pki.client("deep@example.com", "Deep", intermediate=True))
    near = client(pki.client("near@example.com", "Near"))
    with TlsServer(tmp_path, pki, config) as server:
        answer, session, _ = attempt(server, deep)
        assert not answer.startswith(b"HTTP/1.1 200")
        assert session is None or not session.has_ticket
        answer, _, reused = attempt(server, deep, session)
        assert not answer.startswith(b"HTTP/1.1 200") and not reused
        wait_for(lambda: server.log_text().count("AH02040") == 2)
        answer, session, _ = attempt(server, near)
        assert answer.startswith(b"HTTP/1.1 200") and session is not None
        answer, _, reused = attempt(server, near, session)
        assert answer.startswith(b"HTTP/1.1 200") and reused
