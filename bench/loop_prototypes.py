"""Loop prototypes for the event child (issue 10 item 5): stay on epoll, or move to asyncio?

Serves one WSGI hello world ("Hello, World!", text/plain, Content-Length) on 127.0.0.1 with
mpmd's own sans-I/O parser (HttpProtocol, fed as src/mpmd/mpm/event.py feeds it), one process
per server, in each loop design below, and measures them with wrk: req/s, and the server's CPU
time per request (utime+stime of its process tree from /proc around each wrk run, divided by
the requests wrk completed), which stays meaningful when other work shares the machine.

The designs are minimal but correct for keep-alive, pipelined requests and small bodies (a
request is served once its body is in). None has timeouts, logging or a scoreboard: those cost
the same in either design. Figures and the decision: docs/architecture.md.

    python -m bench.loop_prototypes epoll-threads --port 8080     # serve one variant
    python -m bench.loop_measure [--variants a,b,r2] [--runs 3]   # measure them (see there)

Variants: a epoll-inline, b epoll-threads, c asyncio-inline, d uvloop-inline, e1/e2
asyncio-/uvloop-executor (run_in_executor), e3/e4 asyncio-/uvloop-queue (a lean hand-off),
e5/e6 asyncio-/uvloop-direct (event.py's hand-off: the thread writes and parks; accepting
in our own reader),
f1 epoll-tls-inline, f2/f3 asyncio-/uvloop-tls-inline. uvloop and trustme (TLS) come from
pip; they are not project dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable
from queue import SimpleQueue

from bench.loop_handoff import (
    DirectProtocol,
    QueueHandOff,
    ThreadedProtocol,
    direct_workers,
    executor_hand_off,
)
from bench.loop_session import (
    READ_SIZE,
    Responder,
    Session,
    TlsBio,
    error_response,
    hello_app,
)
from mpmd.http.errors import HttpError
from mpmd.http.request import Request

THREADS = 25  # ThreadsPerChild's default
_IN = select.EPOLLIN
_ARM_READ = select.EPOLLIN | select.EPOLLONESHOT
_ARM_WRITE = select.EPOLLOUT | select.EPOLLONESHOT

# -- (a) and (f): epoll, requests served in the loop thread ------------------------------------


def _listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class EpollConn:
    __slots__ = ("fd", "keep", "out", "pending", "session", "sock", "tls")

    def __init__(self, sock: socket.socket, session: Session, tls: TlsBio | None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.tls = tls
        self.out = b""  # what the socket did not take yet (write completion)
        self.keep = True
        self.pending: Request | None = None  # epoll-threads: a head whose body is arriving


class EpollInline:
    """Level-triggered epoll, no re-arming: the cheapest shape the selectors design has."""

    def __init__(self, port: int, respond: Responder, tls: ssl.SSLContext | None) -> None:
        self.listener = _listen(port)
        self.respond = respond
        self.tls = tls
        self.epoll = select.epoll()
        self.conns: dict[int, EpollConn] = {}

    def run(self) -> None:
        lfd = self.listener.fileno()
        self.epoll.register(lfd, _IN)
        conns = self.conns
        while True:
            for fd, _ in self.epoll.poll():
                if fd == lfd:
                    self._accept()
                elif (conn := conns.get(fd)) is not None:
                    if conn.out:
                        self._write(conn, b"")
                    else:
                        self._on_readable(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = TlsBio(self.tls) if self.tls is not None else None
            conn = EpollConn(sock, Session(self.respond), tls)
            self.conns[conn.fd] = conn
            self.epoll.register(conn.fd, _IN)

    def _on_readable(self, conn: EpollConn) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        tls = conn.tls
        if tls is None:
            out, keep = conn.session.receive(data)
        else:
            plaintext = tls.receive(data)
            if plaintext is None:
                self._close(conn)
                return
            out, keep = conn.session.receive(plaintext) if plaintext else (b"", True)
            out = tls.send(out)
        self._write(conn, out, keep)

    def _write(self, conn: EpollConn, data: bytes, keep: bool | None = None) -> None:
        if keep is not None:
            conn.keep = keep
        data = conn.out + data if conn.out else data
        try:
            sent = conn.sock.send(data) if data else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(conn)
            return
        was_waiting = bool(conn.out)
        conn.out = data[sent:]
        if conn.out:
            if not was_waiting:
                self.epoll.modify(conn.fd, select.EPOLLOUT)
        elif not conn.keep:
            self._close(conn)
        elif was_waiting:
            self.epoll.modify(conn.fd, _IN)

    def _close(self, conn: EpollConn) -> None:
        self.conns.pop(conn.fd, None)
        self.epoll.unregister(conn.fd)
        conn.sock.close()


# -- (b): epoll + thread pool, as src/mpmd/mpm/event.py ---------------------------------------


class EpollThreads:
    """EPOLLONESHOT: the loop parses heads and queues ready requests; a thread runs the app,
    writes without waiting and re-arms the socket itself (no wake-up on the hot path). What
    the socket does not take, and every close, go back to the loop through a wake-up pipe."""

    def __init__(self, port: int, respond: Responder, threads: int) -> None:
        self.listener = _listen(port)
        self.respond = respond
        self.threads = threads
        self.epoll = select.epoll()
        self.conns: dict[int, EpollConn] = {}
        self.work: SimpleQueue[tuple[EpollConn, Request]] = SimpleQueue()
        self.returned: SimpleQueue[EpollConn] = SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)

    def run(self) -> None:
        for _ in range(self.threads):
            threading.Thread(target=self._worker, daemon=True).start()
        lfd = self.listener.fileno()
        self.epoll.register(lfd, _IN)
        self.epoll.register(self.wake_r, _IN)
        conns = self.conns
        while True:
            for fd, _ in self.epoll.poll():
                if fd == lfd:
                    self._accept()
                elif fd == self.wake_r:
                    self._drain_returned()
                elif (conn := conns.get(fd)) is not None:
                    if conn.out:
                        self._flush(conn)
                    else:
                        self._on_readable(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = EpollConn(sock, Session(self.respond), None)
            self.conns[conn.fd] = conn
            self.epoll.register(conn.fd, _ARM_READ)

    def _on_readable(self, conn: EpollConn) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except BlockingIOError:
            self.epoll.modify(conn.fd, _ARM_READ)
            return
        except OSError:
            self._close(conn)
            return
        conn.session.protocol.feed(data)
        self._next(conn)

    def _next(self, conn: EpollConn) -> None:
        """Hand the next complete request to a thread, or wait for more bytes."""
        protocol = conn.session.protocol
        request = conn.pending
        if request is None:
            try:
                request = protocol.next_request()
            except HttpError as error:
                conn.keep = False
                self._flush(conn, error_response(error))
                return
            if request is None:
                if protocol.eof:
                    self._close(conn)
                else:
                    self.epoll.modify(conn.fd, _ARM_READ)
                return
        if not protocol.body_complete(request):
            conn.pending = request
            self.epoll.modify(conn.fd, _ARM_READ)
            return
        conn.pending = None
        self.work.put((conn, request))

    def _worker(self) -> None:
        work, respond, epoll = self.work, self.respond, self.epoll
        while True:
            conn, request = work.get()
            protocol = conn.session.protocol
            while True:
                try:
                    out = respond(request)
                except Exception:
                    out, conn.keep = error_response(HttpError(500)), False
                else:
                    conn.keep = protocol.finish_request(request)
                try:
                    sent = conn.sock.send(out)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    sent, conn.keep = len(out), False
                if sent < len(out):
                    conn.out = out[sent:]
                    self._give_back(conn)
                elif not conn.keep:
                    self._give_back(conn)
                elif protocol.buffered():  # pipelined: the next one is already parsed
                    try:
                        request = protocol.next_request()  # type: ignore[assignment]
                    except HttpError as error:
                        conn.out, conn.keep = error_response(error), False
                        self._give_back(conn)
                        break
                    if request is not None and protocol.body_complete(request):
                        continue
                    conn.pending = request
                    epoll.modify(conn.fd, _ARM_READ)
                else:
                    epoll.modify(conn.fd, _ARM_READ)  # keep-alive: parked without the loop
                break

    def _give_back(self, conn: EpollConn) -> None:
        self.returned.put(conn)
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass

    def _drain_returned(self) -> None:
        try:
            os.read(self.wake_r, 4096)
        except BlockingIOError:
            pass
        while not self.returned.empty():
            self._flush(self.returned.get())

    def _flush(self, conn: EpollConn, data: bytes = b"") -> None:
        """Write completion in the loop; then close, or go on with the connection."""
        data = conn.out + data
        try:
            sent = conn.sock.send(data) if data else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(conn)
            return
        conn.out = data[sent:]
        if conn.out:
            self.epoll.modify(conn.fd, _ARM_WRITE)
        elif not conn.keep:
            self._close(conn)
        else:
            self._next(conn)

    def _close(self, conn: EpollConn) -> None:
        self.conns.pop(conn.fd, None)
        conn.sock.close()  # also leaves the epoll set


# -- (c), (d), (f): asyncio protocols and transports, served inline ---------------------------


class InlineProtocol(asyncio.Protocol):
    def __init__(self, respond: Responder) -> None:
        self.session = Session(respond)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        out, keep = self.session.receive(data)
        self._send(out, keep)

    def eof_received(self) -> bool:
        out, keep = self.session.receive(b"")
        self._send(out, keep)
        return False

    def _send(self, out: bytes, keep: bool) -> None:
        transport = self.transport
        if out:
            transport.write(out)  # type: ignore[union-attr]
        if not keep:
            transport.close()  # type: ignore[union-attr]


# -- variants ----------------------------------------------------------------------------------

VARIANTS = {
    "a": "epoll-inline",
    "b": "epoll-threads",
    "c": "asyncio-inline",
    "d": "uvloop-inline",
    "e1": "asyncio-executor",
    "e2": "uvloop-executor",
    "e3": "asyncio-queue",
    "e4": "uvloop-queue",
    "e5": "asyncio-direct",
    "e6": "uvloop-direct",
    "f1": "epoll-tls-inline",
    "f2": "asyncio-tls-inline",
    "f3": "uvloop-tls-inline",
}


def tls_context() -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 from a throw-away CA."""
    import trustme

    cert = trustme.CA().issue_cert("127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    return context


def serve(variant: str, port: int, threads: int) -> None:
    tls = tls_context() if "-tls-" in variant else None
    respond = Responder(hello_app, port, "https" if tls else "http")
    if variant == "epoll-threads":
        EpollThreads(port, respond, threads).run()
    elif variant.startswith("epoll-"):
        EpollInline(port, respond, tls).run()
    else:
        if variant.startswith("uvloop"):
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        if "-direct" in variant:
            work = direct_workers(respond, threads)
            factory: Callable[[], asyncio.Protocol] = lambda: DirectProtocol(work, loop)  # noqa: E731
        elif "-executor" in variant or "-queue" in variant:
            hand_off = (
                executor_hand_off(respond, threads)
                if "-executor" in variant
                else QueueHandOff(loop, respond, threads)
            )
            factory = lambda: ThreadedProtocol(hand_off)  # noqa: E731
        else:
            factory = lambda: InlineProtocol(respond)  # noqa: E731
        if "-direct" in variant:
            accept_into(loop, _listen(port), factory)
        else:
            loop.run_until_complete(
                loop.create_server(factory, "127.0.0.1", port, backlog=1024, ssl=tls)
            )
        loop.run_forever()


def accept_into(
    loop: asyncio.AbstractEventLoop,
    listener: socket.socket,
    factory: Callable[[], asyncio.Protocol],
) -> None:
    """Accept in our own reader and wrap each socket in a transport (connect_accepted_socket):
    the shape Apache's accept policy needs (a listener the child can stop watching, one
    connection at a time against the limit), which create_server's accept loop does not give."""

    def on_readable() -> None:
        for _ in range(16):  # event.py's ACCEPT_BATCH
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            loop.create_task(loop.connect_accepted_socket(factory, sock))

    loop.add_reader(listener.fileno(), on_readable)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=sorted(VARIANTS.values()))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    serve(args.variant, args.port, args.threads)


if __name__ == "__main__":
    main()
