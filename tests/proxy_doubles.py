"""What the proxy tests share: a scripted threaded back end on loopback, a balancer runtime
double with balancer.py's interface, and builders for members and routes.

The runtime double stands in for handlers/proxy/balancer.py (another part of issue 11): it
round-robins over its members, takes a member out on failed(), and records every call so a
test can assert the sequence. The back end is real sockets: each test gives it a function
that answers one connection however the case needs (well, slowly, or badly).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpmd.config.model import BackendMember, ProxyRoute, WorkerParams
from mpmd.handlers.proxy.balancer import NoWorker

# -- members and routes -------------------------------------------------------------------------


def member(port: int, path: str = "", **params: Any) -> BackendMember:
    return BackendMember(
        url=f"http://127.0.0.1:{port}{path}",
        scheme="http",
        host="127.0.0.1",
        port=port,
        path=path,
        params=WorkerParams(**params),
        source="test:1",
    )


def direct_route(prefix: str, backend: BackendMember, target_path: str = "") -> ProxyRoute:
    """`ProxyPass prefix http://127.0.0.1:port/target_path`."""
    return ProxyRoute(prefix, False, backend.url + target_path, backend, "test:1")


# -- the runtime double -------------------------------------------------------------------------


@dataclass
class Choice:
    member: BackendMember
    slot: int
    env: dict[str, str]
    sticky_route: str | None = None


@dataclass
class RoundRobin:
    """balancer.py's runtime interface over `members`, in turn, skipping those in error."""

    members: list[BackendMember]
    name: str = "balancer://test"
    max_attempts: int = -1  # -1: members - 1, as Apache's default
    timeout: float = 0.0
    failonstatus: frozenset[int] = frozenset()
    failontimeout: bool = False
    calls: list[tuple] = field(default_factory=list)
    in_error: set[int] = field(default_factory=set)
    _next: int = 0

    def __post_init__(self) -> None:
        if self.max_attempts < 0:
            self.max_attempts = max(len(self.members) - 1, 0)
        self._lock = threading.Lock()

    def choose(self, path_and_query: str, cookie: str | None, now: float) -> Choice:
        with self._lock:
            for _ in range(len(self.members)):
                slot = self._next % len(self.members)
                self._next += 1
                if slot not in self.in_error:
                    chosen = self.members[slot]
                    self.calls.append(("choose", slot, path_and_query))
                    env = {"BALANCER_NAME": self.name, "BALANCER_WORKER_NAME": chosen.url}
                    return Choice(chosen, slot, env)
        self.calls.append(("no-worker",))
        raise NoWorker("AH01170", f"{self.name}: All workers are in error state")

    def finished(self, choice: Choice, sent: int, received: int) -> None:
        self.calls.append(("finished", choice.slot, sent, received))

    def failed(self, choice: Choice, now: float) -> None:
        with self._lock:
            self.in_error.add(choice.slot)
        self.calls.append(("failed", choice.slot))

    def after_response(self, choice: Choice, status: int, timed_out: bool) -> bool:
        failure = status in self.failonstatus or (timed_out and self.failontimeout)
        self.calls.append(("after_response", choice.slot, status, timed_out))
        return failure

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]


# -- the back end -------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the back end read it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None


class Reader:
    """Buffered reads from one back-end connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def line(self) -> bytes | None:
        while b"\r\n" not in self.buf:
            if not self._fill():
                return None
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exactly(self, count: int) -> bytes:
        while len(self.buf) < count:
            if not self._fill():
                raise ConnectionError("short body")
        data, self.buf = self.buf[:count], self.buf[count:]
        return data

    def head(self) -> tuple[str, str, list[tuple[str, str]]] | None:
        first = self.line()
        if not first:
            return None
        method, target, _ = first.decode("latin-1").split(" ", 2)
        headers = []
        while True:
            line = self.line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        return method, target, headers

    def body_chunks(self, headers: list[tuple[str, str]]):
        """The body in the pieces it arrives in (Content-Length or chunked)."""
        names = {k.lower(): v for k, v in headers}
        if "content-length" in names:
            left = int(names["content-length"])
            while left:
                if not self.buf and not self._fill():
                    raise ConnectionError("short body")
                piece, self.buf = self.buf[:left], self.buf[left:]
                left -= len(piece)
                yield piece
        elif names.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = self.line()
                if line is None:
                    raise ConnectionError("short body")
                size = int(line, 16)
                if size == 0:
                    self.line()
                    return
                yield self.exactly(size)
                self.exactly(2)


Answer = Callable[[socket.socket, Reader, "Backend"], None]


def serve_ok(body: bytes = b"hello", headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    """A keep-alive back end answering every request with 200 and `body`."""

    def answer(sock: socket.socket, reader: Reader, backend: Backend) -> None:
        while True:
            head = reader.head()
            if head is None:
                return
            method, target, req_headers = head
            data = b"".join(reader.body_chunks(req_headers))
            backend.seen.append(Seen(method, target, req_headers, data))
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
            sock.sendall(
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
                + (b"" if method == "HEAD" else body)
            )

    return answer


class Backend:
    """A threaded loopback server; `answer` handles each connection it accepts."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.seen: list[Seen] = []
        self.connections = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Backend:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for sock in list(self._socks):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            try:
                self.answer(sock, Reader(sock), self)
            except (OSError, ValueError):
                pass
