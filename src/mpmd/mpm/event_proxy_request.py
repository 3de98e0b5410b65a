"""One request the event loop proxies, from choosing a member to the last byte queued.

The back-end state machine of event_proxy.py (whose docstring says which requests take it),
kept apart from the loop's own code so that it can move to another loop as it is: it sees
the loop only through LoopProxy (the epoll set, the back-end fd map, the deadline queue, the
pools) and the client's EventConnection (non-blocking queue() and flush()). Every step is
handler.py's, in the same order with the same statuses and log lines; where handler.py
blocks this one arms an fd or sets a deadline: waiting for a usable member (the balancer's
`timeout`, looked for every 10 ms), for a pooled connection (`acquire`),
the connect (connectiontimeout), the back end (its timeout / ProxyTimeout / Timeout), the
client taking the response (Timeout), and the client sending more body (RequestReadTimeout).
"""

from __future__ import annotations

import os
import select
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from mpmd.config.model import ProxyRoute, VirtualHost
from mpmd.handlers.proxy.backend import (
    END,
    LAST_CHUNK,
    BackendError,
    Interim,
    ResponseHead,
    ResponseParser,
    backend_target,
    chunk,
    read_failed,
    request_head,
    send_failed,
)
from mpmd.handlers.proxy.balancer import Choice, NoWorker
from mpmd.handlers.proxy.client_head import upgrade_refused
from mpmd.handlers.proxy.handler import (
    IDEMPOTENT,
    READ_SIZE,
    start_relayed,
    upgrade_protocol,
)
from mpmd.http.errors import HttpError
from mpmd.http.exchange import Exchange
from mpmd.http.request import Request
from mpmd.http.timeouts import BODY, ReadDeadline, read_wait, start_stage
from mpmd.mpm.event_connection import EventConnection
from mpmd.mpm.event_proxy_tunnel import Tunnel
from mpmd.mpm.loop_pool import BackendSocket, LoopPool

if TYPE_CHECKING:
    from mpmd.mpm.event_proxy import LoopProxy

CLIENT_OUT_LIMIT = 256 * 1024  # queued client bytes above which the back end is not read
_ARM_READ = select.EPOLLIN | select.EPOLLONESHOT  # the client's fd (the loop's mode)
_ARM_WRITE = select.EPOLLOUT | select.EPOLLONESHOT
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT  # a back end's (level-triggered, loop_pool.py)

# What a proxied request waits for (its deadline says how long).
_MEMBER, _POOL, _CONNECT, _BACKEND, _CLIENT, _CLIENT_BODY, _TUNNEL = range(7)


class _Failed(Exception):
    """handler.py's _Failed: the answer if no other member takes the request."""

    def __init__(self, status: int, failover: bool) -> None:
        super().__init__(status)
        self.status = status
        self.failover = failover


class Proxied:
    """One proxied request in the loop, from choosing a member to the last byte queued."""

    # What a request starts with, as class attributes: an instance stores only what it changes
    choose_by: float | None = None  # a member usable by then (set at the first miss)
    tries = 0
    choice: Any = None
    last = False
    sent = received = 0
    body_read = False
    fresh = False
    pool: LoopPool | None = None
    backend: BackendSocket | None = None
    parser: ResponseParser | None = None
    head = b""
    target = ""
    responding = False  # the final head was taken: bytes go to the client
    paused = False  # the client's queue is full: the back end is not read
    cut = False  # the back end answered before it had the body: never reused
    body_sent = False  # all of the client's body is queued for the back end
    reading = False  # the client's fd is armed for more body
    upgrade: str | None = None  # the protocol this member's try asks to switch to
    tunnel: Tunnel | None = None
    waiting = _POOL

    def __init__(
        self,
        proxy: LoopProxy,
        conn: EventConnection,
        request: Request,
        vhost: VirtualHost,
        route: ProxyRoute,
        rest: str,
        body: bytes,
        reader: ReadDeadline | None,
    ) -> None:
        self.proxy = proxy
        self.handler = proxy.handler
        self.conn = conn
        self.request = request
        self.route = route
        self.rest = rest
        self.body = body
        session = conn.session
        self.exchange = exchange = Exchange(
            request, session.info, vhost, proxy.queue_client(conn), conn.sendfile, session.last_one
        )
        exchange.notes["handler"] = "proxy-server"
        if request.upgrade:  # a tunnel may take the connection (the socket stays the loop's)
            session.info.take_over = lambda: (conn.sock, conn.protocol.take_upgraded())
        self.runtime = proxy.runtime(route)
        self.started = time.monotonic()
        self.out: deque[memoryview] = deque()  # bytes for the back end not yet written
        self.reader = reader  # RequestReadTimeout's body stage, from the loop

    # -- choosing and connecting ----------------------------------------------------------------

    def next_member(self, now: float) -> None:
        """handler.py's __call__ loop, one iteration: choose (which counts), connect."""
        self.try_member(self.choose(), now)

    def choose(self) -> Choice | NoWorker:
        """The member for this try, counted, or why there is none. LoopProxy calls it for a
        new request inside its round's locked section (the runtime's lock is re-entrant)."""
        request = self.request
        try:
            return self.runtime.choose(request.target, request.header("cookie"), time.time())
        except NoWorker as error:
            return error

    def try_member(self, choice: Choice | NoWorker, now: float) -> None:
        """Connect to the chosen member, or wait for one (the balancer's `timeout`)."""
        request = self.request
        exchange = self.exchange
        if isinstance(choice, NoWorker):
            if self.choose_by is None:  # the balancer's timeout, from when the request came
                self.choose_by = self.started + self.runtime.timeout
            if now < self.choose_by:  # look again in 10 ms, as handler.py
                self._wait(_MEMBER, min(self.choose_by - now, 0.01), now)
                return
            self.handler.log("error", choice.message, exchange)
            self._answer_error(choice.status)
            return
        for name, value in choice.env.items():
            exchange.notes["env:" + name] = value
        self.tries += 1
        self.last = self.tries > choice.max_attempts
        self.sent = self.received = 0
        self.body_read = False
        self.fresh = False
        self.choice = choice
        member = choice.member
        vhost = exchange.vhost
        self.upgrade = upgrade_protocol(exchange, member) if request.upgrade else None
        self.target = backend_target(self.route, self.rest, member, request.query)
        self.head, framing, _ = request_head(
            request,
            self.target,
            member,
            vhost.proxy,
            client_ip=exchange.conn.client_addr,
            server_name=vhost.server_name,
            server_port=exchange.conn.server_port,
            upgrade=self.upgrade is not None,
        )
        self.framing = framing
        self.pool = self.proxy.pool(member, vhost)
        self._connect(now)

    def _connect(self, now: float) -> None:
        """An idle connection, a new one, or a wait for one (the pool's `max`)."""
        pool = self.pool
        try:
            backend = pool.acquire(self, fresh=self.fresh, check=self.framing != "none")
        except OSError as error:
            self._connect_failed(error, now)
            return
        if backend is None:  # queued: the pool calls retry_connect() when one is free
            self._wait(_POOL, pool.acquire_timeout, now)
            return
        self._attach(backend, now)

    def retry_connect(self, now: float) -> None:
        """The pool has a connection free (or room for one) for this queued request."""
        self._connect(now)

    def _attach(self, backend: BackendSocket, now: float) -> None:
        self.backend = backend
        self.proxy.fds[backend.fd] = self.on_backend
        if backend.connecting:
            self._wait(_CONNECT, self.pool.connect_timeout, now)
            backend.watch(_OUT)
            return
        self._send_request(now)

    def _connect_failed(self, error: OSError, now: float) -> None:
        member = self.choice.member
        log = self.handler.log
        exchange = self.exchange
        log(
            "error",
            f"HTTP: attempt to connect to {member.host}:{member.port} "
            f"({member.host}:{member.port}) failed: {error.strerror or error}",
            exchange,
            ah="AH00957",
        )
        log("error", f"HTTP: failed to make connection to backend: {member.host}", exchange,
            ah="AH01114")  # fmt: skip
        self.runtime.failed(self.choice, time.time())
        self._fail(_Failed(503, failover=True), now)

    # -- the request ----------------------------------------------------------------------------

    def _send_request(self, now: float) -> None:
        http = self.exchange.vhost.http
        self.parser = self.backend.response_parser(  # type: ignore[union-attr]
            self.request.method, http.limit_request_field_size, http.limit_request_fields or 100
        )
        self.responding = False
        self.cut = False
        out = self.out
        out.clear()
        out.append(memoryview(self.head))
        self.body_sent = self.framing == "none"
        if not self.body_sent:
            self._queue_body(self.body)
        self._wait(_BACKEND, self.pool.timeout, now)
        self.proxy.write_later(self)

    def _queue_body(self, data: bytes) -> None:
        """Client body bytes for the back end, re-framed; the last chunk once it is whole."""
        if data:
            self.body_read = True
            self.out.append(memoryview(chunk(data) if self.framing == "chunked" else data))
        if self.request.body.complete:
            self.body_sent = True
            if self.framing == "chunked":
                self.out.append(memoryview(LAST_CHUNK))

    def write_now(self, now: float) -> None:
        """LoopProxy.flush_writes: what write_later put off, unless the try ended since."""
        if self.backend is not None and self.out and not self.backend.connecting:
            self._write_backend(now)

    def _write_backend(self, now: float) -> None:
        out = self.out
        fd = self.backend.fd
        try:
            while out:
                sent = os.write(fd, out[0])
                self.sent += sent
                if sent < len(out[0]):
                    out[0] = out[0][sent:]
                    break
                out.popleft()
        except BlockingIOError:
            pass
        except OSError as error:
            self._backend_error(send_failed(self.backend.peer, error), now)
            return
        self.backend.watch(_IN | _OUT if out else _IN)
        if not out and not self.body_sent and not self.responding:
            self._read_client(now)  # the back end took it all: the client may send more

    # -- a body still arriving (backpressure: the client is read only once out is empty) ------

    def _read_client(self, now: float) -> None:
        self.reading = True
        reader = self.reader
        if reader is None:
            reader = self.reader = start_stage(self.proxy.settings, BODY, now)
        self._wait(_CLIENT_BODY, read_wait(self.proxy.settings, reader, now), now)
        self.proxy.epoll.modify(self.conn.fd, _ARM_READ)

    def _on_client_readable(self, now: float) -> None:
        conn = self.conn
        self.reading = False
        try:
            data = conn.read_now()
        except BlockingIOError:
            self._read_client(now)
            return
        except OSError:
            data = b""
        self.reader.on_bytes(len(data), now)
        conn.protocol.feed(data)  # b"": the client closed, the body fails
        body = self.request.body
        if body.error is not None:
            self._client_body_failed(body.error)
            return
        self._queue_body(body.read(body.buffered))
        self._wait(_BACKEND, self.pool.timeout, now)
        self.proxy.write_later(self)

    def _client_body_failed(self, error: HttpError) -> None:
        """The session's answer to a body that cannot complete (400, 408, 413): the error
        page if nothing went out, then the connection closes."""
        exchange = self.exchange
        self._release(False)
        exchange.keep_alive = False
        if exchange.head_sent:
            exchange.aborted = True
        else:
            exchange.status = error.status
            self.conn.session.send_error(error, exchange)
        self._log_and_hand_back(False)

    # -- back-end events ------------------------------------------------------------------------

    def on_backend(self, mask: int, now: float) -> None:
        backend = self.backend
        if backend.connecting:
            error = backend.connected()
            if error is not None:
                self._release(False)
                self._connect_failed(error, now)
                return
            self._send_request(now)
            return
        if self.out and mask & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
            self._write_backend(now)  # it re-arms
            if self.backend is None or not mask & (select.EPOLLIN | select.EPOLLHUP):
                return
        self._read_backend(now)

    def _read_backend(self, now: float) -> None:
        """Read and relay while the client takes it; stop when paused or done."""
        parser = self.parser
        fd = self.backend.fd
        for _ in range(4):
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as error:
                self._backend_error(read_failed(parser.started, error), now)
                return
            try:
                if data:
                    self.received += len(data)
                    events = parser.feed(data)
                else:
                    events = parser.eof()
            except BackendError as error:
                self._backend_error(error, now)
                return
            if not self._relay(events, now) or not data or self.paused:
                return
        self._wait(_BACKEND, self.pool.timeout, now)
        self.backend.watch(_IN | _OUT if self.out else _IN)

    def _relay(self, events: list, now: float) -> bool:
        """Take the parser's events; False once this request no longer reads the back end."""
        exchange = self.exchange
        complete = self.parser.complete  # (set with END, which ends these events)
        try:
            for event in events:
                if event is END:
                    self._complete(now)
                    return False
                if type(event) is bytes:
                    if complete:
                        self._settle()
                    if self.responding:
                        exchange.write(event)
                elif isinstance(event, ResponseHead):
                    if not self._on_head(event, now):
                        return False
                elif not isinstance(event, Interim):
                    raise AssertionError(event)
        except OSError:
            self._client_gone()
            return False
        if self.conn.out_bytes > CLIENT_OUT_LIMIT:
            self._pause(now)
        return True

    def _on_head(self, head: ResponseHead, now: float) -> bool:
        """handler.py's _attempt after _request: 101, failonstatus, ProxyErrorOverride."""
        exchange = self.exchange
        if head.status == 101:  # the stream is not HTTP any more: a tunnel, or a 502
            refused = upgrade_refused(head, self.upgrade)
            if refused is not None or self.upgrade is None:  # (a None upgrade is refused too)
                self._release(False)
                self.handler.log_backend(exchange, self.choice.member, refused, self.target)
                self._fail(_Failed(502, failover=False), now)
            else:
                Tunnel.start(self, head, self.upgrade, CLIENT_OUT_LIMIT, now)
            return False
        if self.runtime.after_response(self.choice, head.status, False) and not self.last:
            self._release(False)  # failonstatus: the next member answers
            self._fail(_Failed(head.status, failover=True), now)
            return False
        settings = exchange.vhost.proxy
        if settings.error_override and head.status >= 400:
            self._release(False)
            self._answer_error(head.status)
            return False
        if self.out or not self.body_sent:  # answered before it had the body: no more of it
            self.out.clear()
            self.cut = True
            if self.reading:
                self.reading = False
                self.proxy.epoll.modify(self.conn.fd, 0)
        start_relayed(exchange, head, self.handler.balancers)
        self.responding = True
        return True

    def _backend_error(self, error: BackendError, now: float) -> None:
        """handler.py's _request and _relay error paths."""
        member = self.choice.member
        log_backend = self.handler.log_backend
        exchange = self.exchange
        backend = self.backend
        reused = backend.reused
        self._release(False)
        if self.responding:
            log_backend(exchange, member, error, self.target)
            if exchange.head_sent:
                exchange.aborted = True  # no made-up end: the client must see the cut
                exchange.keep_alive = False
                self._end(now)
            else:
                self._answer_error(504 if error.timed_out else 502)
            return
        if self.parser.started:
            log_backend(exchange, member, error, self.target)
            self._fail(_Failed(502, failover=False), now)
            return
        if reused and not self.fresh and not self.body_read and not error.timed_out:
            self.fresh = True  # the back end closed it as we reused it: once more, new
            self._connect(now)
            return
        log_backend(exchange, member, error, self.target)
        idempotent = self.request.method in IDEMPOTENT
        if error.timed_out:
            self.runtime.after_response(self.choice, 504, True)
            self._fail(_Failed(504, failover=idempotent), now)
        else:
            self.runtime.failed(self.choice, time.time())
            self._fail(_Failed(502, failover=idempotent), now)

    # -- the client -----------------------------------------------------------------------------

    def _pause(self, now: float) -> None:
        """The client's queue is full: wait for it (Timeout per progress), not the back end."""
        self.paused = True
        self._wait(_CLIENT, self.proxy.client_timeout, now)
        self.backend.watch(_OUT if self.out else 0)  # (level-triggered: it would wake us)
        self.proxy.epoll.modify(self.conn.fd, _ARM_WRITE)

    def on_client(self, now: float) -> None:
        if self.tunnel is not None:
            self.tunnel.on_client(now)
        elif self.reading:
            self._on_client_readable(now)
        else:
            self._on_client_writable(now)

    def _on_client_writable(self, now: float) -> None:
        conn = self.conn
        try:
            done = conn.flush()
        except OSError:
            self._client_gone()
            return
        if not done and conn.out_bytes > CLIENT_OUT_LIMIT // 2:
            self._wait(_CLIENT, self.proxy.client_timeout, now)
            self.proxy.epoll.modify(conn.fd, _ARM_WRITE)
            return
        self.paused = False
        self._read_backend(now)  # what the back end sent meanwhile, then wait for it again

    def _client_gone(self) -> None:
        """A client write failed: the response is cut, the connection closes."""
        self.exchange.aborted = True
        self.exchange.keep_alive = False
        self._release(False)
        self._log_and_hand_back(False)

    # -- a WebSocket tunnel (event_proxy_tunnel.py) --------------------------------------------

    def tunnel_wait(self, seconds: float, now: float) -> None:
        self._wait(_TUNNEL, seconds, now)

    def tunnel_closed(self) -> None:
        """Either side closed, or the tunnel idled out: the connection ends."""
        exchange = self.exchange
        exchange.keep_alive = False
        self._release(False)
        self._log_and_hand_back(False)

    # -- the end --------------------------------------------------------------------------------

    def on_timeout(self, now: float) -> None:
        waiting = self.waiting
        if waiting == _MEMBER:
            self.next_member(now)
        elif waiting == _TUNNEL:
            self.tunnel.on_timeout()  # type: ignore[union-attr]
        elif waiting == _CLIENT_BODY:
            self._client_body_failed(HttpError(408, "AH01382: Request body read timeout"))
        elif waiting == _CLIENT:
            self._client_gone()
        elif waiting == _POOL:
            self.pool.cancel(self)
            member = self.choice.member
            self.handler.log("error", f"HTTP: failed to acquire connection for ({member.host}:"
                             f"{member.port})", self.exchange, ah="AH00941")  # fmt: skip
            self._fail(_Failed(503, failover=False), now)
        elif waiting == _CONNECT:
            self._release(False)
            self._connect_failed(TimeoutError("timed out"), now)
        elif self.out:
            self._backend_error(send_failed(self.backend.peer, TimeoutError("timed out")), now)
        else:
            self._backend_error(read_failed(self.parser.started, TimeoutError("timed out")), now)

    def _fail(self, failure: _Failed, now: float) -> None:
        """handler.py: the member's try is over; the next member, or the error page."""
        self._settle()
        if failure.failover and not self.last and not self.body_read:
            self.next_member(now)
        else:
            self._answer_error(failure.status)

    def _answer_error(self, status: int) -> None:
        """mpmd's error page through the exchange (Apache's), then the end."""
        exchange = self.exchange
        try:
            exchange.send_error(status)
        except OSError:
            self._client_gone()
            return
        self._end(time.monotonic())

    def _complete(self, now: float) -> None:
        self._release(self.parser.reusable and not self.cut)
        self._settle()
        self._end(now)

    def _settle(self) -> None:
        """The member's counters (busy, bytes to and from it) once its part is over, counted
        at the end of the loop's round before the client gets the last bytes (flush_writes):
        the client's next request, in any child, is then chosen from numbers that include
        this one (as handler.py does)."""
        if self.choice is not None:
            self.proxy.settle_later(self.runtime, self.choice, self.sent, self.received)
            self.choice = None

    def _end(self, now: float) -> None:
        exchange = self.exchange
        try:
            exchange.finish()
        except OSError:
            self._client_gone()
            return
        keep = exchange.keep_alive and not exchange.aborted and self.request.body.complete
        if keep:
            keep = self.conn.protocol.finish_request(self.request)
        self._log_and_hand_back(keep)

    def _log_and_hand_back(self, keep: bool) -> None:
        self._settle()
        session = self.conn.session
        session.info.take_over = None
        session.log_exchange(self.exchange, self.proxy.record)
        self.proxy.finish(self, keep)

    # -- helpers --------------------------------------------------------------------------------

    def _wait(self, waiting: int, seconds: float | None, now: float) -> None:
        self.waiting = waiting
        if seconds is None:
            self.proxy.deadlines.remove(self.conn)
        else:
            self.proxy.deadlines.set(self.conn, now + seconds)

    def _release(self, reusable: bool) -> None:
        backend = self.backend
        if backend is not None:
            self.backend = None
            self.proxy.fds.pop(backend.fd, None)
            self.pool.release(backend, reusable=reusable)
