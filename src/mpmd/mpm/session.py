"""One connection's HTTP session: its protocol engine, and serving the requests it carries.

Every MPM serves requests through this module: it takes each request from the protocol (the
one place that decides what a refusal does), routes it, runs the handler, logs it (access
log, scoreboard) and answers errors and read timeouts. It owns no socket: it writes through
the transport that owns it, the blocking Connection of prefork and worker (connection.py)
or the event loop's EventConnection (event_connection.py), whose writes never wait in the
loop. This module never accepts, never forks and never decides how long a socket waits.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from mpmd.http.body import EMPTY_BODY
from mpmd.http.errors import HttpError
from mpmd.http.exchange import ConnectionInfo, Exchange
from mpmd.http.protocol import HttpProtocol
from mpmd.http.remoteip import header_value, proxy_header_required, rewrite_headers, walk
from mpmd.http.request import Request
from mpmd.http.response import build_head, error_body, status_line
from mpmd.http.timeouts import BODY, ReadDeadline, read_timeout, read_wait, start_stage
from mpmd.http.tls import sni_refusal
from mpmd.mpm.context import QUEUED_NOTE, ChildContext
from mpmd.mpm.listeners import connection_addresses
from mpmd.mpm.proxy_header import ProxyHeaderReader

if TYPE_CHECKING:
    from mpmd.config.model import VirtualHost
    from mpmd.mpm.scoreboard import WorkerRecord

# What a handler raises when the client went away or stalled (a send timeout under
# SO_SNDTIMEO is EAGAIN): no fault of the handler's, nothing to log.
_CLIENT_GONE = (ConnectionError, TimeoutError, BlockingIOError)

_LAST_DATA_RECV = 52  # offset of tcpi_last_data_recv (ms) in Linux's struct tcp_info


def queued_ms(sock: socket.socket) -> str | None:
    """Milliseconds since the request's last bytes reached the socket (TCP_INFO, in the
    kernel's jiffy steps, 4 ms at HZ=250); None where the socket has no TCP_INFO."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 64)
    except (OSError, AttributeError):
        return None
    if len(info) < _LAST_DATA_RECV + 4:
        return None
    return str(int.from_bytes(info[_LAST_DATA_RECV : _LAST_DATA_RECV + 4], "little"))


class Transport(Protocol):
    """What a session needs from the connection that owns the socket."""

    sock: socket.socket
    can_hand_over: bool  # a tunnel may take the client's byte stream (`for_tunnel()`)

    def send(self, data: bytes) -> None: ...

    def sendfile(self, fd: int, offset: int, count: int) -> None: ...

    def write_error(self, data: bytes) -> None:
        """An error response: never waits longer than Timeout (in the event loop, not at all)."""

    def recv_within(self, seconds: float) -> bytes:
        """One read waiting at most `seconds`; raises TimeoutError."""

    def send_continue(self) -> None: ...

    def flush_blocking(self) -> None:
        """Wait (Timeout per step) until the queued output is written: a tunnel takes over."""

    def for_tunnel(self) -> socket.socket:
        """What a tunnel reads and writes: the socket, or a TLS client's TlsStream."""


class Session:
    """The requests of one connection; owned by exactly one thread or loop at a time."""

    __slots__ = (
        "asgi_request",
        "body_deadline",
        "client_done",
        "ctx",
        "info",
        "protocol",
        "proxied",
        "proxy_header",
        "remoteip",
        "sni_allowed",
        "transport",
        "worker",
    )

    def __init__(
        self, transport: Transport, sock: socket.socket, peer, ctx: ChildContext, worker=None
    ) -> None:
        self.transport = transport
        self.ctx = ctx
        self.worker = worker  # the serving thread's scoreboard WorkerRecord, or None
        self.info = ConnectionInfo(
            *connection_addresses(sock, peer),
            multithread=ctx.multithread,
            multiprocess=ctx.multiprocess,
        )
        self.protocol = HttpProtocol(ctx.settings, self.recv, transport.send_continue)
        self.body_deadline: ReadDeadline | None = None  # the current request's body stage
        self.client_done = False  # the client said it sends nothing more (Connection.close)
        self.remoteip = ctx.config.remoteip_headers  # some host walks a RemoteIPHeader
        local = (self.info.server_addr, self.info.server_port)
        required = proxy_header_required(ctx.config.proxy_protocol, local, self.info.peer_addr)
        # RemoteIPProxyProtocol: the header the transport reads before any HTTP, until it is in
        self.proxy_header = ProxyHeaderReader(self.info, ctx.error_log) if required else None
        self.proxied = False  # a PROXY header was read: RemoteIPHeader is ignored (2.2 step 1)
        # a request for an ASGIApp read behind this thread's ones: the event loop's to hand to
        # its ASGI loop (threads never run ASGI applications)
        self.asgi_request: Request | None = None
        # (Host header, virtual host) the TLS host check last let through: a keep-alive
        # connection's next requests for the same host are not checked again
        self.sni_allowed: tuple[str | None, VirtualHost] | None = None

    def take_proxy_header(self, data: bytes) -> bytes | None:
        """ProxyHeaderReader.feed: None until the PROXY header is in, then HTTP's bytes."""
        rest = self.proxy_header.feed(data)  # type: ignore[union-attr]
        if rest is not None:
            self.proxy_header = None
            self.proxied = True
        return rest

    def remote_client(self, request: Request, vhost: VirtualHost) -> str | None:
        """mod_remoteip's post_read_request for `vhost`: the request's client address (from
        the PROXY header, else the RemoteIPHeader walk, else the peer), the header rewritten;
        returns the external proxies consumed (the `remoteip-proxy-ip-list` note) or None."""
        info = self.info
        info.client_addr = info.conn_addr
        settings = vhost.remoteip
        if settings is None or self.proxied:
            return None
        value = header_value(request.headers, settings.header)
        result = walk(info.peer_addr, value, settings) if value is not None else None
        if result is None:
            return None
        rewrite_headers(request.headers, settings, result)
        info.client_addr = result.client
        return result.proxies

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
        data = self.transport.recv_within(timeout)
        deadline.on_bytes(len(data), time.monotonic())
        return data

    def take_over(self) -> tuple[socket.socket, bytes]:
        """ConnectionInfo.take_over: the socket for a tunnel, and the bytes held after the
        upgrade request's head. The connection carries no more HTTP; its owner closes it."""
        self.transport.flush_blocking()
        return self.transport.for_tunnel(), self.protocol.take_upgraded()

    def read_timed_out(self, stage: str, request_line: str | None = None) -> None:
        """RequestReadTimeout expired in `stage`: the 408 or the logged close that
        timeouts.read_timeout() names (reference 8.1, 8.2); the caller closes."""
        if self.proxy_header is not None:
            self.proxy_header.timed_out()
            return
        error, answer = read_timeout(stage, self.info.requests == 0, request_line)
        if error is None:
            return
        if answer:
            self.ctx.error_log.log("info", error.log_message, module="reqtimeout")
            self.send_error(error)
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
                self.send_error(error, keep_alive=True)

    def serve_buffered(self, first: Request | None = None) -> bool:
        """Serve every complete request already buffered; False when the connection must close.

        `first`: a request the caller already took from the protocol (the event loop parses
        heads, and reads bodies up to a bound, before it hands a connection to a thread)."""
        protocol = self.protocol
        ctx = self.ctx
        router = ctx.router
        info = self.info
        worker = self.worker
        transport = self.transport
        pending = first
        while True:
            try:
                request = pending or self.next_request()
            except HttpError as error:
                self.send_error(error)
                return False
            if request is None:
                return True
            pending = None
            vhost = router.select_vhost(request.header("host"), info.server_port)
            if ctx.asgi and router.asgi_target(vhost, request.path) is not None:
                self.asgi_request = request  # event.py's _take_back hands it over
                return True
            exchange = self.open_exchange(
                request, vhost, transport.send, transport.sendfile, worker
            )
            if exchange is None:
                return False
            self.body_deadline = None
            # a handler may tunnel it (the bound method: a cycle, cut below)
            if request.upgrade and transport.can_hand_over:
                info.take_over = self.take_over
            keep_alive = self._run(exchange)
            info.take_over = None
            self.log_exchange(exchange)
            if not keep_alive:
                self.client_done = request.body.complete and not request.client_keep_alive
                return False
            try:
                if not protocol.finish_request(request):
                    return False
            except HttpError:
                return False

    def open_exchange(
        self,
        request: Request,
        vhost: VirtualHost,
        send: Callable[[bytes], None],
        sendfile: Callable[[int, int, int], None],
        worker: WorkerRecord | None,
    ) -> Exchange | None:
        """A request's prologue, whoever serves it (a thread here, the event child's ASGI loop):
        mod_remoteip, the TLS host check (None: refused, answered and logged), the Exchange
        writing through `send`/`sendfile` with its notes, the scoreboard's W on `worker`."""
        info = self.info
        proxies = self.remote_client(request, vhost) if self.remoteip else None
        if info.tls is not None and not self._tls_allows(request, vhost):
            return None
        exchange = Exchange(request, info, vhost, send, sendfile, self.last_one)
        if proxies is not None:
            exchange.notes["remoteip-proxy-ip-list"] = proxies
        if self.ctx.log_queued:
            queued = queued_ms(self.transport.sock)
            if queued is not None:
                exchange.notes[QUEUED_NOTE] = queued
        if worker is not None:
            worker.request_start(
                request.request_line,
                info.client_addr or "-",  # "": a Unix socket's client, as %h logs it
                vhost.server_name,
                request.version,
                int(exchange.start_time * 1_000_000),
            )
        return exchange

    def _tls_allows(self, request: Request, vhost) -> bool:
        """Refuse (and log) a request whose host the TLS handshake did not agree to."""
        host = request.header("host")
        allowed = self.sni_allowed
        if allowed is not None and allowed[0] == host and allowed[1] is vhost:
            return True
        refusal = sni_refusal(self.info.tls, host, vhost, request.request_line)
        if refusal is None:
            self.sni_allowed = (host, vhost)
            return True
        level, error = refusal
        client = f"{self.info.client_addr}:{self.info.client_port}"
        self.ctx.error_log.log(level, error.log_message, module="ssl", client=client)
        self.send_error(error)
        return False

    def log_exchange(self, exchange: Exchange, worker: WorkerRecord | None = None) -> None:
        """After a response: the access log, the scoreboard, and the connection's count (%k).
        The event loop calls it for the requests it proxies itself, with its own record."""
        end = time.time()
        logs = self.ctx.access_logs.get(id(exchange.vhost))
        if logs:
            for log in logs:
                log.log(exchange, end)
        worker = worker or self.worker
        if worker is not None:  # the request's time by the wall clock, as %D gives it
            now_us = int(end * 1_000_000)
            took = now_us - int(exchange.start_time * 1_000_000)
            worker.request_end(exchange.bytes_out, took if took > 0 else 0, now_us)
        self.info.requests += 1

    def last_one(self) -> bool:
        """Asked as a response head is built: the child is stopping (or is a surplus event
        child, or a gathering one whose requests wait for a thread: event_accept.py) and no
        further request was read from this client, so this response ends the connection and
        says close (Apache's ap_set_keepalive asks is_mpm_running()). A request already read
        (or held behind a refused upgrade) is still answered."""
        ctx = self.ctx
        return (ctx.stopping or ctx.surplus or ctx.queued) and not self.protocol.sent_more()

    def _run(self, exchange: Exchange) -> bool:
        """Run the handler and end the response; True if the connection may stay open."""
        try:
            self.ctx.router.handle(exchange)
            exchange.finish()
        except HttpError as error:
            if not exchange.head_sent:
                exchange.keep_alive = False
                exchange.status = error.status
                self.send_error(error, exchange)
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
            self.send_error(HttpError(500), exchange)

    def send_error(
        self, error: HttpError, exchange: Exchange | None = None, *, keep_alive: bool = False
    ) -> None:
        """Answer a protocol error; Connection: close unless the error keeps the stream (417).

        Without `exchange` the request was refused while it was read: it is logged here."""
        body = error_body(error.status, error.detail)
        head = build_head(
            "HTTP/1.1",
            status_line(error.status),
            [("Content-Type", "text/html; charset=iso-8859-1")],
            content_length=len(body),
            chunked=False,
            keep_alive=keep_alive,
        )
        self.transport.write_error(head + body)
        if exchange is None:
            self.log_refused(error, len(body))
        else:
            exchange.bytes_out = len(body)

    def log_refused(self, error: HttpError, bytes_out: int = 0) -> None:
        """Apache logs a request it refused while reading it (400, 408, 413, 414, 417...): one
        access-log line in the vhost of the port, `%r` as far as it was parsed, and one access
        on the scoreboard. `bytes_out`: the error document sent (0 when none was)."""
        ctx = self.ctx
        info = self.info
        info.client_addr = info.conn_addr  # mod_remoteip never saw this request
        vhost = ctx.router.select_vhost(None, info.server_port)
        exchange = Exchange(
            _refused_request(error.request_line),
            info,
            vhost,
            self.transport.send,
            self.transport.sendfile,
        )
        exchange.status = error.status
        exchange.keep_alive = False
        exchange.bytes_out = bytes_out
        self.log_exchange(exchange)  # (its count for %k no longer matters: the connection closes)

    def log_failure(self) -> None:
        """A bug outside any handler (they are caught in _run) while serving this connection:
        logged with its traceback; the connection closes, the thread or process carries on."""
        info = self.info
        self.ctx.error_log.exception(
            "MP00008: serving a connection failed; it is closed",
            client=f"{info.client_addr}:{info.client_port}",
            module="core",
        )


def _refused_request(request_line: str | None) -> Request:
    """The request as far as it was read; no method when its line never parsed (`%r` is -)."""
    method = target = version = ""
    if request_line:
        method, _, rest = request_line.partition(" ")
        target, _, version = rest.partition(" ")
    return Request(method, target, version, [], EMPTY_BODY, keep_alive=False)
