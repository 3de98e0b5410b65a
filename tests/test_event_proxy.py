"""ProxyPass in the event MPM's loop (mpm/event_proxy.py): a real event child in front of real
back ends on loopback, configured with ProxyPass and <Proxy balancer://…> as a user would.

The proof that no thread is held: requests the back end holds are all in flight at once while
every worker thread of the (two-thread) child is idle on the scoreboard.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import weakref
from pathlib import Path

import pytest

from backends import NginxBackends
from mpmd.mpm.scoreboard import Scoreboard, default_path
from proxy_doubles import Backend, Reader
from server import Server, children_of, free_port, wait_for

TWO_THREADS = """\
StartServers 1
ServerLimit 1
ThreadsPerChild 2
MaxRequestWorkers 2
MinSpareThreads 1
MaxSpareThreads 2
AsyncRequestWorkerFactor 50
LogFormat "%>s %B %{BALANCER_WORKER_NAME}e %r" proxied
"""


def proxy_config(routes: list, member: str = "") -> str:
    """ProxyPass lines for `routes` ([prefix, [port, ...]], ...): each prefix to a balancer of
    its ports (`balancer://test`, then test1 ...), every member with the parameters `member`."""
    lines = []
    for index, (prefix, ports) in enumerate(routes):
        name = "balancer://test" + (str(index) if index else "")
        members = "".join(f"    BalancerMember http://127.0.0.1:{p} {member}\n" for p in ports)
        lines.append(f"<Proxy {name}>\n{members}</Proxy>\nProxyPass {prefix} {name}\n")
    return "".join(lines)


def front(tmp_path: Path, routes: list, config: str = "", member: str = "") -> Server:
    """An event child with two threads proxying `routes` ([prefix, [port, ...]], ...)."""
    log = tmp_path / "proxied_log"
    config = TWO_THREADS + f'CustomLog "{log}" proxied\n' + proxy_config(routes, member) + config
    return Server(tmp_path, config, mpm="event")


def the_child(server: Server) -> int:
    kids = wait_for(lambda: children_of(server.pid), timeout=10)
    assert len(kids) == 1, kids
    return kids[0]


def threads_idle(board: Scoreboard, pid: int) -> bool:
    """Every worker thread of `pid` READY. Waited for (bounded), not asserted at once: the
    thread that answered the readiness probe marks itself READY just after its response."""
    from mpmd.mpm.scoreboard import READY

    threads = [w for w in board.snapshot().workers() if w.pid == pid]
    return bool(threads) and all(w.status == READY for w in threads)


class _KeptReader:
    """A socket's one buffered reader, lent to each HTTPResponse read from it: responses that
    arrive together (pipelined) stay buffered for the next one, where a reader per response
    would swallow them."""

    def __init__(self, sock: socket.socket) -> None:
        self._file = sock.makefile("rb")

    def makefile(self, *args) -> _KeptReader:
        return self

    def close(self) -> None:  # HTTPResponse closes its reader after each body
        pass

    def __getattr__(self, name: str):
        return getattr(self._file, name)


_READERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket) -> http.client.HTTPResponse:
    reader = _READERS.get(sock)
    if reader is None:
        reader = _READERS[sock] = _KeptReader(sock)
    response = http.client.HTTPResponse(reader)  # type: ignore[arg-type]
    response.begin()
    return response


def held_backend(gate: threading.Event, arrived: list) -> Backend:
    """Answers each request once `gate` is set; `arrived` counts the requests waiting."""

    def answer(sock: socket.socket, reader: Reader, backend: Backend) -> None:
        while (head := reader.head()) is not None:
            arrived.append(head[1])
            gate.wait(30)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld")

    return Backend(answer)


def test_held_requests_hold_no_thread(tmp_path):
    """20 requests in flight at the back end, 2 worker threads, both idle meanwhile."""
    gate = threading.Event()
    arrived: list[str] = []
    with held_backend(gate, arrived) as backend:
        server = front(tmp_path, [["/app", [backend.port]]])
        with server:
            child = the_child(server)
            board = Scoreboard.attach(default_path(server.pid))
            clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
            try:
                for index, sock in enumerate(clients):
                    sock.sendall(f"GET /app/{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                wait_for(lambda: len(arrived) == 20)
                wait_for(lambda: threads_idle(board, child), timeout=5)
                gate.set()
                for sock in clients:
                    response = read_response(sock)
                    assert (response.status, response.read()) == (200, b"held")
            finally:
                gate.set()
                board.close()
                for sock in clients:
                    sock.close()
        assert sorted(arrived) == sorted(f"/{i}" for i in range(20))
        assert backend.connections == 20


def test_keep_alive_and_pipelining_through_the_loop(tmp_path):
    with (
        NginxBackends(1, tmp_path / "nginx") as nginx,
        front(tmp_path, [["/p", nginx.ports]]) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.sendall(b"GET /p/hello HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        for _ in range(3):
            response = read_response(sock)
            assert (response.status, response.read()) == (200, b"backend-0\n")
        sock.sendall(b"GET /p/a HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection
        response = read_response(sock)
        assert (response.status, response.read()) == (200, b"backend-0\n")
        sock.sendall(b"HEAD /p/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = read_response(sock)
        assert response.status == 200 and response.getheader("Connection") == "close"
    lines = (tmp_path / "proxied_log").read_text().splitlines()[1:]  # after the ready probe
    assert lines[0] == f"200 10 http://127.0.0.1:{nginx.ports[0]} GET /p/hello HTTP/1.1"
    assert len(lines) == 5


def _child_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_big_download_with_a_slow_reader_is_intact_and_bounded(tmp_path):
    """50 MB through the loop to a client reading 16 KiB at a time: the loop stops reading
    the back end while the client lags, so the child's memory stays far below the body."""
    size = 50 << 20
    with (
        NginxBackends(1, tmp_path / "nginx", big_size=size) as nginx,
        front(tmp_path, [["/p", nginx.ports]]) as server,
    ):
        child = the_child(server)
        base = _child_rss_kib(child)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/p/big")
        response = conn.getresponse()
        digest = hashlib.sha256()
        peak = 0
        while block := response.read(16384):
            digest.update(block)
            peak = max(peak, _child_rss_kib(child))
        conn.close()
        assert digest.hexdigest() == nginx.big_sha256
        assert peak - base < 16 << 10  # KiB: well under the 50 MB that passed through


@pytest.mark.slow
def test_big_upload_is_intact(tmp_path):
    """50 MB PUT: the loop streams the body to the back end as it arrives, reading the client
    only while the back end takes what it has."""
    size = 50 << 20
    block = bytes(range(256)) * 4096
    with (
        NginxBackends(1, tmp_path / "nginx") as nginx,
        front(tmp_path, [["/p", nginx.ports]]) as server,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("PUT", "/p/upload/big", body=iter([block] * (size // len(block))),
                     headers={"Content-Length": str(size)})  # fmt: skip
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 201
    stored = nginx.uploaded(0, "big").read_bytes()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(block * (size // len(block))).digest()


def test_refused_member_fails_over_to_the_next(tmp_path):
    dead = free_port()  # nothing listens there
    with (
        NginxBackends(1, tmp_path / "nginx") as nginx,
        front(tmp_path, [["/", [dead, nginx.ports[0]]]]) as server,
    ):
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/hello")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"backend-0\n")
            conn.close()
        log = server.log_text()
    assert f"AH00957: HTTP: attempt to connect to 127.0.0.1:{dead}" in log
    assert "Connection refused" in log and "AH01114" in log


def test_a_pooled_connection_the_back_end_closed_is_not_used(tmp_path):
    """The back end closes each connection after its response (without saying so): the next
    request through the proxy still gets a 200."""
    closed = threading.Event()

    def answer(sock: socket.socket, reader: Reader, backend: Backend) -> None:
        if reader.head() is not None:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            sock.shutdown(socket.SHUT_RDWR)
            closed.set()

    with (
        Backend(answer) as backend,
        front(tmp_path, [["/p", [backend.port]]]) as server,
    ):
        for _ in range(3):
            closed.clear()
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/p/x")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
            conn.close()
            closed.wait(10)
        assert backend.connections == 3


def test_refused_everywhere_is_a_503_with_apaches_lines(tmp_path):
    dead = free_port()
    with front(tmp_path, [["/", [dead]]]) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/x")
        response = conn.getresponse()
        assert response.status == 503
        conn.close()
        log = server.log_text()
    assert "AH00957" in log and "AH01114" in log
    assert (tmp_path / "proxied_log").read_text().splitlines()[-1].startswith("503 ")


def test_a_streamed_upload_holds_no_thread(tmp_path):
    """A 16 MB POST to a back end that reads only its head until released: the loop has sent
    what the sockets hold and stopped reading the client, and no worker thread is busy."""
    gate = threading.Event()
    arrived = threading.Event()
    digests: list[str] = []

    def answer(sock: socket.socket, reader: Reader, backend: Backend) -> None:
        head = reader.head()
        arrived.set()
        gate.wait(30)
        digests.append(hashlib.sha256(b"".join(reader.body_chunks(head[2]))).hexdigest())
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    body = bytes(range(256)) * (16 << 12)
    with (
        Backend(answer) as backend,
        front(tmp_path, [["/p", [backend.port]]]) as server,
    ):
        child = the_child(server)
        board = Scoreboard.attach(default_path(server.pid))
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            sock.sendall(
                b"POST /p/up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            sock.setblocking(False)
            view = memoryview(body)
            while view:  # until the client cannot send more: the proxy stopped reading it
                try:
                    view = view[sock.send(view) :]
                except BlockingIOError:
                    break
            arrived.wait(10)
            assert view  # the proxy stopped reading the client
            wait_for(lambda: threads_idle(board, child), timeout=5)  # (the probe's thread)
            gate.set()
            sock.setblocking(True)
            sock.sendall(view)
            response = read_response(sock)
            assert (response.status, response.read()) == (200, b"ok")
        finally:
            gate.set()
            board.close()
            sock.close()
    assert digests == [hashlib.sha256(body).hexdigest()]


def echo_upgrade(sock: socket.socket, reader: Reader, backend: Backend) -> None:
    """Switches to a raw echo on `Upgrade: websocket` (the tunnel carries bytes, not frames)."""
    headers = reader.head()[2]
    backend.seen.append(dict((k.lower(), v) for k, v in headers))
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: x\r\n\r\nhello"
    )
    data = reader.buf
    while True:
        sock.sendall(data)
        data = sock.recv(65536)
        if not data:
            return


def test_websocket_tunnel_in_the_loop(tmp_path):
    """Upgrade: websocket to an upgrade=websocket member: the 101, then 8 MB echoed both ways
    (the client writes all before it reads: backpressure both ways), with no thread held."""
    with Backend(echo_upgrade) as backend:
        log = tmp_path / "proxied_log"
        with front(tmp_path, [["/ws", [backend.port]]], member="upgrade=websocket") as server:
            child = the_child(server)
            board = Scoreboard.attach(default_path(server.pid))
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            try:
                sock.sendall(
                    b"GET /ws/chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n"
                )
                head = b""
                while b"\r\n\r\n" not in head:
                    head += sock.recv(1)
                assert head.startswith(b"HTTP/1.1 101 ")
                assert b"Upgrade: websocket" in head and b"Connection: Upgrade" in head
                got = b""
                while len(got) < 5:
                    got += sock.recv(5 - len(got))
                assert got == b"hello"
                wait_for(lambda: threads_idle(board, child), timeout=5)
                payload = os.urandom(1 << 20) * 8
                sender = threading.Thread(target=sock.sendall, args=(payload,))
                sender.start()
                echoed = bytearray()
                while len(echoed) < len(payload):
                    data = sock.recv(65536)
                    assert data, "the tunnel closed"
                    echoed += data
                sender.join()
                assert echoed == payload
                wait_for(lambda: threads_idle(board, child), timeout=5)
            finally:
                board.close()
                sock.close()
            # once both sides closed; %B: what the client got through the tunnel, as tunnel.py
            wait_for(lambda: f"\n101 {5 + len(payload)} http://" in log.read_text())
    assert backend.seen[0]["upgrade"] == "websocket"
    assert backend.seen[0]["connection"].lower() == "upgrade"


def test_member_max_queues_requests_for_a_free_connection(tmp_path):
    """max=1: the second request waits in the loop for the first one's connection."""
    gate = threading.Event()
    arrived: list[str] = []
    with held_backend(gate, arrived) as backend:
        with front(tmp_path, [["/p", [backend.port]]], member="max=1") as server:
            clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
            try:
                for index, sock in enumerate(clients):
                    sock.sendall(f"GET /p/{index} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                wait_for(lambda: len(arrived) == 1)
                gate.set()
                for sock in clients:
                    response = read_response(sock)
                    assert (response.status, response.read()) == (200, b"held")
            finally:
                gate.set()
                for sock in clients:
                    sock.close()
        assert backend.connections == 1 and len(arrived) == 2


@pytest.mark.slow
def test_a_silent_back_end_is_a_504_after_its_timeout(tmp_path):
    gate = threading.Event()
    with (
        held_backend(gate, []) as backend,
        front(tmp_path, [["/p", [backend.port]]], member="timeout=1") as server,
    ):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/p/x")
            assert conn.getresponse().status == 504
            conn.close()
        finally:
            gate.set()
        log = server.log_text()
    assert "AH01102: error reading status line from remote server 127.0.0.1:" in log
