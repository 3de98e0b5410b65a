"""One client connection: read requests, run their handlers, write responses, keep alive or close.

Every MPM serves a connection through this module. Prefork and worker call `serve_blocking()`,
which owns the socket for the connection's whole keep-alive life. The event loop reads
and parses in its selector and calls `serve_buffered()` only when a whole request is waiting,
so a thread is held only while a request is processed. This module never accepts
connections and never forks; it knows the socket, the protocol engine, the router and the logs.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from mpmd.http.body import EMPTY_BODY
from mpmd.http.errors import HttpError
from mpmd.http.exchange import ConnectionInfo, Exchange
from mpmd.http.protocol import HttpProtocol
from mpmd.http.request import Request
from mpmd.http.response import CONTINUE_100, build_head, error_body
from mpmd.http.timeouts import (
    BODY,
    HEADERS,
    ReadDeadline,
    first_byte_wait,
    read_timeout,
    read_wait,
    start_stage,
)
from mpmd.mpm.context import ChildContext
from mpmd.mpm.scoreboard import CLOSING, KEEPALIVE

_TIMEVAL = struct.Struct("@ll")  # struct timeval for SO_RCVTIMEO / SO_SNDTIMEO


def _timeval(seconds: float) -> bytes:
    """A kernel socket timeout; never 0, which the kernel reads as "wait forever"."""
    micros = max(1, int(seconds * 1_000_000))
    return _TIMEVAL.pack(micros // 1_000_000, micros % 1_000_000)


LINGER_SECONDS = 2.0  # the prefork/worker lingering close: read and discard for at most 2 s
# What a handler raises when the client went away or stalled (a send timeout under
# SO_SNDTIMEO is EAGAIN): no fault of the handler's, nothing to log.
_CLIENT_GONE = (ConnectionError, TimeoutError, BlockingIOError)


class Connection:
    """A client socket and its protocol state; owned by exactly one thread or loop at a time."""

    __slots__ = (
        "_rcvtimeo",
        "blocking",
        "body_deadline",
        "client_done",
        "ctx",
        "info",
        "protocol",
        "sock",
        "worker",
    )

    def __init__(self, sock: socket.socket, peer, ctx: ChildContext, worker=None) -> None:
        self.sock = sock
        self.ctx = ctx
        self.worker = worker  # this thread's scoreboard WorkerRecord, or None
        local = sock.getsockname()
        self.info = ConnectionInfo(
            peer[0] if peer else "",
            peer[1] if peer else 0,
            local[0],
            local[1],
            multithread=ctx.multithread,
            multiprocess=ctx.multiprocess,
        )
        self.protocol = HttpProtocol(ctx.settings, self.recv, self._send_continue)
        self.body_deadline: ReadDeadline | None = None  # the current request's body stage
        self.blocking = False  # serve_blocking(): kernel timeouts instead of poll() per read
        self.client_done = False  # the client said it sends nothing more (see close())
        self._rcvtimeo = -1.0

    # -- socket I/O used by the protocol and the exchange --------------------------------------

    def recv(self) -> bytes:
        """A blocking body read bounded by Timeout and RequestReadTimeout's body stage.

        The body clock starts at the request's first body read from the socket (as
        mod_reqtimeout's body stage does); TimeoutError becomes the protocol's 408."""
        settings = self.ctx.settings
        deadline = self.body_deadline
        now = time.monotonic()
        if deadline is None:
            deadline = self.body_deadline = start_stage(settings, BODY, now)
        timeout = read_wait(settings, deadline, now)
        if timeout == 0.0:
            raise TimeoutError("request body read timeout")
        if self.blocking:
            data = self._recv_within(timeout)
        else:
            self.sock.settimeout(timeout)
            data = self.sock.recv(65536)
        deadline.on_bytes(len(data), time.monotonic())
        return data

    def _recv_within(self, seconds: float) -> bytes:
        """One recv() bounded by the kernel's SO_RCVTIMEO: a single system call per read,
        where a Python socket timeout costs a poll() and mode switches around every one."""
        if seconds != self._rcvtimeo:
            self._rcvtimeo = seconds
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
        try:
            return self.sock.recv(65536)
        except BlockingIOError:
            raise TimeoutError("timed out reading from the client") from None

    def _use_kernel_timeouts(self) -> None:
        """Blocking mode for a connection one thread owns for its whole life (prefork, worker)."""
        sock = self.sock
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.ctx.settings.timeout))
        self.blocking = True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """os.sendfile until `count` bytes are out, waiting for writability up to Timeout."""
        sock_fd = self.sock.fileno()
        timeout = self.ctx.settings.timeout
        while count > 0:
            try:
                sent = os.sendfile(sock_fd, fd, offset, count)
            except BlockingIOError:
                if not select.select([], [sock_fd], [], timeout)[1]:
                    raise TimeoutError("timed out sending a file") from None
                continue
            if sent == 0:
                raise BrokenPipeError("client closed the connection")
            offset += sent
            count -= sent

    def _send_continue(self) -> None:
        self.sock.sendall(CONTINUE_100)

    # -- serving ---------------------------------------------------------------------------------

    def serve_blocking(self) -> None:
        """Serve until the client or the keep-alive policy ends the connection (prefork, worker)."""
        protocol = self.protocol
        settings = self.ctx.settings
        worker = self.worker
        try:
            self._use_kernel_timeouts()
            while True:
                if not protocol.buffered():
                    first = self.info.requests == 0
                    if not first and worker is not None:
                        worker.set_state(KEEPALIVE)
                    if not self._read_request_head(first):
                        return
                # A response sent before the child began to stop promised keep-alive: the next
                # request is awaited and answered (with close), never cut off.
                if not self.serve_buffered() or settings.keep_alive_timeout <= 0:
                    return
        except (ConnectionError, TimeoutError, OSError):
            return
        except Exception:
            self.log_failure()
            return
        finally:
            self.close()

    def _read_request_head(self, first: bool) -> bool:
        """Block until a request head is complete, under KeepAliveTimeout and RequestReadTimeout."""
        protocol = self.protocol
        settings = self.ctx.settings
        try:
            data = self._recv_within(first_byte_wait(settings, first))
        except TimeoutError:
            return False
        if not data:
            return False
        deadline = start_stage(settings, HEADERS, time.monotonic())
        while True:
            protocol.feed(data)
            if protocol.buffered():
                return True
            now = time.monotonic()
            deadline.on_bytes(len(data), now)
            wait = read_wait(settings, deadline, now)
            if wait == 0.0:
                self.read_timed_out(protocol.read_stage())
                return False
            try:
                data = self._recv_within(wait)
            except TimeoutError:
                self.read_timed_out(protocol.read_stage())
                return False
            if not data:
                protocol.feed(b"")
                return protocol.buffered()

    def read_timed_out(self, stage: str, request_line: str | None = None) -> None:
        """RequestReadTimeout expired in `stage`: the 408 or the logged close that
        timeouts.read_timeout() names (reference 8.1, 8.2); the caller closes."""
        error, answer = read_timeout(stage, self.info.requests == 0, request_line)
        if error is None:
            return
        if answer:
            self.ctx.error_log.log("info", error.log_message, module="reqtimeout")
            self._send_error(error)
        else:
            self.log_refused(error)

    def next_request(self) -> Request | None:
        """The next parsed request, or None. The one place that decides what a refusal does:
        one that keeps the connection (417 to a request without a body) is answered here and
        the next request taken; any other is raised, for the caller to answer and close."""
        protocol = self.protocol
        while True:
            try:
                return protocol.next_request()
            except HttpError as error:
                if not error.keep_alive:
                    raise
                self._send_error(error, keep_alive=True)

    def serve_buffered(self, first: Request | None = None) -> bool:
        """Serve every complete request already buffered; False when the connection must close.

        `first`: a request the caller already took from the protocol (the event loop parses
        heads, and reads bodies up to a bound, before it hands a connection to a thread)."""
        protocol = self.protocol
        ctx = self.ctx
        router = ctx.router
        info = self.info
        worker = self.worker
        pending = first
        while True:
            try:
                request = pending or self.next_request()
            except HttpError as error:
                self._send_error(error)
                return False
            if request is None:
                return True
            pending = None
            vhost = router.select_vhost(request.header("host"), info.server_port)
            exchange = Exchange(request, info, vhost, self.send, self.sendfile, self._last_one)
            if worker is not None:
                worker.request_start(
                    request.request_line,
                    info.client_addr,
                    vhost.server_name,
                    request.version,
                    time.time_ns() // 1000,
                )
            self.body_deadline = None
            keep_alive = self._run(exchange)
            end = time.time()
            for log in ctx.logs_for(vhost):
                log.log(exchange, end)
            if worker is not None:
                worker.request_end(
                    exchange.bytes_out,
                    (time.perf_counter_ns() - exchange.start_ns) // 1000,
                    int(end * 1_000_000),
                )
            info.requests += 1
            if not keep_alive:
                self.client_done = request.body.complete and _client_closes(request)
                return False
            try:
                if not protocol.finish_request(request):
                    return False
            except HttpError:
                return False

    def _last_one(self) -> bool:
        """Asked as a response head is built: the child is stopping and no further request was
        read from this client, so this response ends the connection and says close (Apache's
        ap_set_keepalive asks is_mpm_running()). A request already read is still answered."""
        return self.ctx.stopping and not self.protocol.buffered()

    def _run(self, exchange: Exchange) -> bool:
        """Run the handler and end the response; True if the connection may stay open."""
        try:
            self.ctx.router.handle(exchange)
            exchange.finish()
        except HttpError as error:
            if not exchange.head_sent:
                exchange.keep_alive = False
                exchange.status = error.status
                self._send_error(error, exchange)
            return False
        except _CLIENT_GONE:
            exchange.aborted = True
            return False
        except Exception:
            self._handler_failed(exchange)
            return False
        return exchange.keep_alive

    def _handler_failed(self, exchange: Exchange) -> None:
        """A bug in a handler (static, status, metrics...): a logged 500, or a cut response if
        its head went out; the connection closes and the worker carries on."""
        info = self.info
        self.ctx.error_log.exception(
            f"MP00007: handler {exchange.notes.get('handler', '-')!r} failed for "
            f'"{exchange.request.request_line}"',
            client=f"{info.client_addr}:{info.client_port}",
            module="core",
        )
        exchange.keep_alive = False
        if exchange.head_sent:
            exchange.aborted = True
        else:
            exchange.status = 500
            self._send_error(HttpError(500), exchange)

    def _send_error(
        self, error: HttpError, exchange: Exchange | None = None, *, keep_alive: bool = False
    ) -> None:
        """Answer a protocol error; Connection: close unless the error keeps the stream (417).

        Without `exchange` the request was refused while it was read: it is logged here."""
        from http import HTTPStatus

        body = error_body(error.status)
        head = build_head(
            "HTTP/1.1",
            f"{error.status} {HTTPStatus(error.status).phrase}",
            [("Content-Type", "text/html; charset=iso-8859-1")],
            content_length=len(body),
            chunked=False,
            keep_alive=keep_alive,
        )
        self.write_error(head + body)
        if exchange is None:
            self.log_refused(error, len(body))
        else:
            exchange.bytes_out = len(body)

    def write_error(self, data: bytes) -> None:
        """Send an error response, waiting at most Timeout for a client that does not read."""
        try:
            self.sock.settimeout(self.ctx.settings.timeout)
            self.sock.sendall(data)
        except OSError:
            pass

    def log_refused(self, error: HttpError, bytes_out: int = 0) -> None:
        """Apache logs a request it refused while reading it (400, 408, 413, 414, 417...): one
        access-log line in the vhost of the port, `%r` as far as it was parsed, and one access
        on the scoreboard. `bytes_out`: the error document sent (0 when none was)."""
        ctx = self.ctx
        info = self.info
        vhost = ctx.router.select_vhost(None, info.server_port)
        exchange = Exchange(
            _refused_request(error.request_line), info, vhost, self.send, self.sendfile
        )
        exchange.status = error.status
        exchange.keep_alive = False
        exchange.bytes_out = bytes_out
        end = time.time()
        for log in ctx.logs_for(vhost):
            log.log(exchange, end)
        worker = self.worker
        if worker is not None:
            worker.request_end(
                bytes_out,
                (time.perf_counter_ns() - exchange.start_ns) // 1000,
                int(end * 1_000_000),
            )

    def log_failure(self) -> None:
        """A bug outside any handler (they are caught in _run) while serving this connection:
        logged with its traceback; the connection closes, the thread or process carries on."""
        info = self.info
        self.ctx.error_log.exception(
            "MP00008: serving a connection failed; it is closed",
            client=f"{info.client_addr}:{info.client_port}",
            module="core",
        )

    def nothing_more_to_read(self) -> bool:
        """The client asked to close and sent nothing after its request, so closing cannot
        turn into a reset that destroys the response it is still reading: no linger needed.
        (Apache lingers always; nginx's `lingering_close on` makes the same choice.) Only the
        blocking MPMs skip the linger, where it holds a whole process or thread: the event
        loop lingers for free and, closing second, leaves TIME_WAIT with the client."""
        if not self.client_done or self.protocol.buffered():
            return False
        try:
            # Non-blocking first: in timeout mode (an error answer sets it) Python would poll
            # for up to Timeout before even a MSG_DONTWAIT recv.
            self.sock.setblocking(False)
            return not self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return True

    def close(self) -> None:
        """Lingering close: stop sending, drain what the client still sends for up to 2 s."""
        sock = self.sock
        if self.worker is not None:
            self.worker.set_state(CLOSING)
        if self.nothing_more_to_read():
            sock.close()
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            sock.settimeout(LINGER_SECONDS)
            while sock.recv(512) and time.monotonic() < deadline:
                pass
        except OSError:
            pass
        sock.close()


def _client_closes(request: Request) -> bool:
    """The client ends the connection itself: `Connection: close`, or HTTP/1.0 without
    keep-alive."""
    connection = (request.header("connection") or "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" not in connection
    return "close" in connection


def _refused_request(request_line: str | None) -> Request:
    """The request as far as it was read; no method when its line never parsed (`%r` is -)."""
    method = target = version = ""
    if request_line:
        method, _, rest = request_line.partition(" ")
        target, _, version = rest.partition(" ")
    return Request(method, target, version, [], EMPTY_BODY, keep_alive=False)
