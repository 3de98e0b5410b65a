"""The proxy in the real server (prefork, worker, event, -X) against loopback back ends."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import pytest

from proxy_doubles import Backend, Seen, serve_ok
from server import Server, call, children_of, wait_for
from test_protocol import CASES, load_case

LOG_FORMAT = 'CustomLog "{log}" "%>s %{{BALANCER_WORKER_NAME}}e %{{BALANCER_NAME}}e"\n'


class FrontServer(Server):
    """mpmd in front of `routes` ({prefix: [port, ...]}): each prefix proxies to a balancer
    `balancer://test<n>` (the first one `balancer://test`) of the loopback ports."""

    def __init__(self, tmp: Path, config: str = "", *, routes, mpm=None, args=()):
        log = tmp / "proxy_log"
        lines = []
        for index, (prefix, ports) in enumerate(routes.items()):
            name = "balancer://test" + (str(index) if index else "")
            members = "".join(f"    BalancerMember http://127.0.0.1:{port}\n" for port in ports)
            lines.append(f"<Proxy {name}>\n{members}</Proxy>\nProxyPass {prefix} {name}\n")
        proxy = "".join(lines)
        super().__init__(tmp, config + proxy + LOG_FORMAT.format(log=log), mpm=mpm, args=args)
        self.proxy_log = log


def _raw(port: int, data: bytes) -> bytes:
    """Send `data`, end the sending side, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                return out
            if not got:
                return out
            out += got


def _smuggling_cases():
    for path in sorted((CASES / "invalid").glob("*.http")):
        expected, data = load_case(path)
        if "settings" not in expected:
            yield path.stem, expected, data


def test_smuggling_cases_never_reach_a_backend(tmp_path):
    """Every invalid request stream of the HTTP engine: the back end gets only the requests
    the front end accepted whole, re-serialised, and nothing of what it refused."""
    with Backend(serve_ok()) as backend:
        front = FrontServer(tmp_path, routes={"/": [backend.port]})
        with front:
            for name, expected, data in _smuggling_cases():
                before = len(backend.seen)
                _raw(front.port, data)
                accepted = [
                    e["request"]
                    for e in expected["events"]
                    if "request" in e and "body_error" not in e
                ]
                got = [f"{s.method} {s.target}" for s in backend.seen[before:]]
                assert len(got) <= len(accepted), (name, got, accepted)
                for line, seen in zip(accepted, got, strict=False):
                    method = line.split(" ")[0]
                    assert seen.split(" ")[0] == method, name


@pytest.mark.parametrize(
    ("mpm", "args"), [("prefork", ()), ("worker", ()), ("event", ()), ("event", ("-X",))]
)
def test_streams_as_produced_and_logs_the_member(tmp_path, mpm, args):
    client_has_first = threading.Event()
    waited = []

    def answer(sock, reader, backend):
        while True:
            head = reader.head()
            if head is None:
                return
            method, target, headers = head
            backend.seen.append(Seen(method, target, headers, b""))
            if target != "/slow":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            waited.append(client_has_first.wait(10))
            sock.sendall(b"6\r\nsecond\r\n0\r\n\r\n")

    with Backend(answer) as backend:
        front = FrontServer(tmp_path, routes={"/app": [backend.port]}, mpm=mpm, args=args)
        with front:
            with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
                sock.sendall(b"GET /app/slow HTTP/1.1\r\nHost: front\r\n\r\n")
                data = b""
                while b"first" not in data:
                    data += sock.recv(65536)
                client_has_first.set()
                while not data.endswith(b"0\r\n\r\n"):
                    data += sock.recv(65536)
            assert waited == [True]
            assert data.startswith(b"HTTP/1.1 200 OK") and b"second" in data
            status, _, body = call(front, "GET", "/app/x", headers={"Host": "front"})
            assert (status, body) == (200, b"ok")
            seen = backend.seen[-1]
            assert seen.target == "/x" and seen.header("X-Forwarded-For") == "127.0.0.1"
            line = f"200 http://127.0.0.1:{backend.port} balancer://test"
            wait_for(lambda: line in front.proxy_log.read_text())


def _rss_of(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


ONE_CHILD = {
    "prefork": "StartServers 1\nMinSpareServers 1\nMaxSpareServers 1\n",
    "event": "StartServers 1\nServerLimit 1\nThreadsPerChild 4\nMaxRequestWorkers 4\n"
    "MinSpareThreads 1\nMaxSpareThreads 4\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("mpm", ["prefork", "event"])  # a blocking child; the event loop
def test_200_mb_each_way_through_the_server(tmp_path, mpm):
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
        front = FrontServer(tmp_path, ONE_CHILD[mpm], routes={"/app": [backend.port]}, mpm=mpm)
        with front:
            call(front, "GET", "/app/warm")  # the child has imported what a request needs
            children = children_of(front.pid)
            before = _rss_of(children)
            sent = hashlib.sha256()
            with socket.create_connection(("127.0.0.1", front.port), timeout=30) as sock:
                sock.sendall(
                    b"PUT /app/up HTTP/1.1\r\nHost: f\r\nContent-Length: %d\r\n\r\n" % size
                )
                for _ in range(size // len(piece)):
                    sent.update(piece)
                    sock.sendall(piece)
                reply = b""
                while not reply.endswith(sent.hexdigest().encode()):
                    got = sock.recv(65536)
                    assert got, reply
                    reply += got
                sock.sendall(b"GET /app/down HTTP/1.1\r\nHost: f\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    head += sock.recv(65536)
                head, _, body = head.partition(b"\r\n\r\n")
                assert b"Content-Length: %d" % size in head
                received = hashlib.sha256(body)
                length = len(body)
                peak = 0
                while length < size:
                    got = sock.recv(1 << 20)
                    assert got
                    received.update(got)
                    length += len(got)
                    if length % (32 << 20) < len(got):
                        peak = max(peak, _rss_of(children))
            assert received.hexdigest() == sent.hexdigest()
            assert max(peak, _rss_of(children)) - before < 50 * 1024 * 1024


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_proxypass_directive_forwards(tmp_path, mpm):
    with Backend(serve_ok(b"via directive")) as backend:
        config = (
            f"ProxyPass /app http://127.0.0.1:{backend.port}/\n"
            f"ProxyPassReverse /app http://127.0.0.1:{backend.port}/\n"
            "ProxyVia On\n"
        )
        with Server(tmp_path, config, mpm=mpm) as front:
            status, headers, body = call(front, "GET", "/app/x", headers={"Host": "front"})
            assert (status, body) == (200, b"via directive")
            assert headers.get("Via", "").startswith("1.1 ")
            seen = backend.seen[-1]
            assert seen.target == "//x"  # Apache's own mapping: /app + /x onto http://…/
            assert seen.header("X-Forwarded-Host") == "front"


def test_proxypass_directive_smuggling_cases(tmp_path):
    with Backend(serve_ok()) as backend:
        front = Server(tmp_path, f"ProxyPass / http://127.0.0.1:{backend.port}/\n")
        with front:
            for name, expected, data in _smuggling_cases():
                before = len(backend.seen)
                _raw(front.port, data)
                accepted = [
                    e for e in expected["events"] if "request" in e and "body_error" not in e
                ]
                assert len(backend.seen) - before <= len(accepted), name


ORIGIN_DATE = "Tue, 01 Dec 2026 10:00:00 GMT"


@pytest.mark.parametrize("mpm", ["prefork", "event"])  # the blocking handler; the loop's
def test_the_back_ends_date_and_server_reach_the_client_once(tmp_path, mpm):
    """Apache's head for a proxied response carries the back end's Date and Server, and its
    own only where the back end sent none: never two of either."""
    origin = (("Server", "origin/1.0"), ("Date", ORIGIN_DATE))
    with Backend(serve_ok(b"a", origin)) as named, Backend(serve_ok(b"b")) as bare:
        config = (
            f"ProxyPass /named http://127.0.0.1:{named.port}/\n"
            f"ProxyPass /bare http://127.0.0.1:{bare.port}/\n"
        )
        with Server(tmp_path, config, mpm=mpm) as front:
            for path, date, server in (
                ("/named", ORIGIN_DATE, "origin/1.0"),
                ("/bare", None, "mpmd/"),
            ):
                data = _raw(front.port, f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
                head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
                dates = [line[6:] for line in head if line.lower().startswith("date: ")]
                servers = [line[8:] for line in head if line.lower().startswith("server: ")]
                assert head[0] == "HTTP/1.1 200 OK", path
                assert len(dates) == 1 and (date is None or dates[0] == date), head
                assert len(servers) == 1 and servers[0].startswith(server), head
