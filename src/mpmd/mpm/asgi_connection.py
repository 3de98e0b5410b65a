"""A client connection while the event child's ASGI loop owns it (mpm/event_asgi.py).

The epoll loop (event.py) accepts, reads the first request head and hands the connection over
once that request routes to an ASGIApp; from then on this object reads, parses further heads
with the same sans-I/O HttpProtocol, runs each request's app as an asyncio task and writes
through the EventConnection's non-blocking queue (plain or TLS alike). A connection stays here
across keep-alive requests, so a keep-alive client costs no hand-off per request; it goes back
to the epoll loop for a request that is not for an ASGI app, and to be closed (the epoll loop
alone closes sockets: write completion, lingering close). A WebSocket stays here until its
close. Timeouts are deadlines swept once a second by the host: KeepAliveTimeout between
requests, RequestReadTimeout and Timeout while a head or body is read, Timeout per write
progress. Never blocks: reads and writes are the loop's add_reader/add_writer callbacks.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from mpmd.handlers.asgi.http_cycle import BODY_HIGH_WATER, HttpCycle
from mpmd.handlers.asgi.scope import connection_scope, http_scope
from mpmd.handlers.asgi.websocket import handshake_refusal, wants_websocket
from mpmd.handlers.asgi.websocket_cycle import WebSocketCycle, websocket_scope
from mpmd.http.errors import HttpError
from mpmd.http.exchange import Exchange
from mpmd.http.request import Request
from mpmd.http.response import CONTINUE_100, status_line
from mpmd.http.timeouts import BODY, HEADERS, IDLE, read_timeout, read_wait, start_stage
from mpmd.mpm.event_connection import EventConnection

if TYPE_CHECKING:
    from mpmd.mpm.event_asgi import AsgiHost

WRITE_HIGH_WATER = 65536  # queued response bytes before the app's send waits (flow control)
WRITE_LOW_WATER = 16384  # ... until the queue is down to this

# what a passed deadline means
_NONE, _KEEP_ALIVE, _READ, _WRITE = range(4)


class AsgiConnection:
    """One connection on the ASGI loop: its reads, the request being served, its writes."""

    __slots__ = (
        "_drained",
        "_scope_base",
        "_scope_client",
        "_scope_mount",
        "closed",
        "conn",
        "cycle",
        "deadline",
        "fd",
        "given",
        "host",
        "loop",
        "reader",
        "reading",
        "record",
        "waiting",
        "writing",
        "ws",
    )

    def __init__(self, host: AsgiHost, conn: EventConnection) -> None:
        self.host = host
        self.conn = conn
        self.fd = conn.fd
        self.loop = host.loop
        self.cycle: HttpCycle | None = None
        self.ws: WebSocketCycle | None = None
        self.closed = False  # the client is gone (or the connection was given up)
        self.given = False  # handed back to the epoll loop: nothing here touches it any more
        self.reading = False
        self.writing = False
        self.reader = None  # RequestReadTimeout stage of a head or body being read
        self.record = None  # the scoreboard record of the request in flight
        self.deadline = 0.0  # 0: none (an app runs with the whole request, a WebSocket)
        self.waiting = _NONE
        self._drained: asyncio.Future | None = None
        # connection_scope() for the mount and client of the last request (a keep-alive
        # client's next one usually shares them)
        self._scope_base: dict | None = None
        self._scope_mount: Any = None
        self._scope_client = ""

    # -- requests ------------------------------------------------------------------------------

    def serve(self, request: Request, target: tuple) -> None:
        """The first request (routed by the epoll loop), then whatever follows."""
        self.resume_reading()
        self._start(request, target)

    def _next(self) -> None:
        """The next request already parsed, or wait for one (KeepAliveTimeout)."""
        conn = self.conn
        try:
            request = conn.session.next_request()
        except HttpError as error:
            conn.session.send_error(error)
            self.give_back(False, after_error=True)
            return
        if request is None:
            if conn.protocol.eof:
                self.give_back(False)
            elif self.host.stopping:
                self.give_back(False)  # idle while the child stops: closed now, as Apache
            else:
                self._arm_read(time.monotonic())
            return
        target = self.host.route(conn, request)
        if target is None:
            self.give_back(True, request)  # not an ASGI app's: the epoll loop serves it
            return
        self._start(request, target)

    def _start(self, request: Request, target: tuple) -> None:
        mount, path, check, vhost = target
        session = self.conn.session
        info = session.info
        self.reader = None
        self.deadline = 0.0
        self.waiting = _NONE
        record = self.record = self.host.take_record()
        exchange = session.open_exchange(request, vhost, self.write, self.sendfile, record)
        if exchange is None:  # the TLS host check refused it (answered and logged)
            self.host.release_record(record)
            self.record = None
            self.give_back(False, after_error=True)
            return
        notes = exchange.notes
        notes["handler"] = "asgi-app"
        notes["filename"] = mount.target
        if check is not None and not check.allows(info):
            self.host.router.forbid(exchange, mount.target)
            self._finished(exchange, request, False)
            return
        base = self._scope_base
        if base is None or self._scope_mount is not mount or self._scope_client != info.client_addr:
            base = self._scope_base = connection_scope(info, mount.root_path)
            self._scope_mount = mount
            self._scope_client = info.client_addr
        scope = http_scope(request, path, base, self.host.state_of(mount.app))
        if request.header("upgrade") is not None and wants_websocket(scope["headers"]):
            self._websocket(exchange, request, scope, mount)  # a bad handshake gets its 400
            return
        cycle = self.cycle = HttpCycle(self, exchange, request, self.host.error_log)
        self.loop.create_task(cycle.run(mount.app, scope))

    def cycle_done(self, cycle: HttpCycle, keep: bool) -> None:
        """The app's task is over (HttpCycle.run)."""
        self._finished(cycle.exchange, cycle.request, keep)

    def _finished(self, exchange: Exchange, request: Request, keep: bool) -> None:
        """After a response: the access log and scoreboard, then the next request or a close."""
        self.cycle = None
        conn = self.conn
        self._log(exchange)
        if keep and not self.closed:
            protocol = conn.protocol  # a body still arriving is not waited for (that blocks)
            try:
                keep = protocol.body_complete(request) and protocol.finish_request(request)
            except HttpError:
                keep = False
        if not keep or self.closed:
            self.give_back(False)
            return
        self.resume_reading()
        self._next()

    def _websocket(self, exchange: Exchange, request: Request, scope: dict, mount: Any) -> None:
        """An upgrade to a WebSocket: the handshake checked, then the app's WebSocket cycle."""
        refusal = handshake_refusal(request.method, request.version, scope["headers"])
        if refusal is None and not request.upgrade:  # valid headers, but a body follows
            refusal = 400, [], "A WebSocket handshake has no body"
        if refusal is not None:
            status, headers, reason = refusal
            exchange.keep_alive = False
            exchange.respond(status_line(status), [("Content-Type", "text/plain"), *headers],
                             reason.encode() + b"\n")  # fmt: skip
            self._finished(exchange, request, False)
            return
        held = self.conn.protocol.take_upgraded()
        ws = self.ws = WebSocketCycle(
            mount.app, websocket_scope(scope), self, self.host.ws_settings, self.host.error_log
        )
        self.host.upgraded += 1
        if held:
            ws.feed(held)
        self.loop.create_task(self._run_websocket(ws, exchange))

    async def _run_websocket(self, ws: WebSocketCycle, exchange: Exchange) -> None:
        try:
            status, sent = await ws.run()
        finally:
            self.host.upgraded -= 1
        exchange.status = status
        exchange.bytes_out = sent
        exchange.keep_alive = False
        self._log(exchange)
        self.give_back(False)

    def _log(self, exchange: Exchange) -> None:
        """The access log and the request's scoreboard record, whose slot is then free."""
        self.conn.session.log_exchange(exchange, self.record)
        self.host.release_record(self.record)
        self.record = None

    def shutdown(self) -> None:
        """Graceful stop: an idle connection closes now, a request in flight finishes (its
        response says close), a WebSocket gets its close (1001)."""
        if self.ws is not None:
            self.ws.shutdown()
        elif self.cycle is None and self.waiting == _KEEP_ALIVE:
            self.give_back(False)

    # -- reading -------------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def resume_reading(self) -> None:
        if not self.reading and not self.closed:
            self.reading = True
            self.loop.add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        conn = self.conn
        try:
            data = conn.read_now()
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if self.ws is not None:
            if not data:
                self.pause_reading()
            self.ws.feed(data)
            return
        conn.protocol.feed(data)
        cycle = self.cycle
        if cycle is not None:  # a body arriving, a pipelined head, or the client leaving
            if not data:
                self._lost()
                return
            body = cycle.request.body
            if body.buffered >= BODY_HIGH_WATER or conn.protocol.buffered():
                self.pause_reading()  # until the app takes the body / the response ends
            if self.reader is not None:
                now = time.monotonic()
                self.reader.on_bytes(len(data), now)
                self._arm_body(body, now)
            cycle.wake()
            return
        if not data:
            self.give_back(False)
            return
        self._head_progress(len(data))
        self._next()

    def _head_progress(self, count: int) -> None:
        """Bytes of a head arrived: its header stage clock runs from the first of them."""
        if self.conn.protocol.read_stage() == IDLE:
            return
        now = time.monotonic()
        if self.waiting != _READ or self.reader is None:
            self.reader = start_stage(self.host.settings, HEADERS, now)
        self.reader.on_bytes(count, now)

    def _arm_read(self, now: float) -> None:
        """Waiting for a head: KeepAliveTimeout while nothing of it arrived, else the stage."""
        settings = self.host.settings
        if self.conn.protocol.read_stage() == IDLE:
            self.reader = None
            self.waiting = _KEEP_ALIVE
            self.deadline = now + settings.keep_alive_timeout
        else:
            self.waiting = _READ
            self.deadline = now + read_wait(settings, self.reader, now)
        self.host.watch(self)

    def _arm_body(self, body: Any, now: float) -> None:
        if body.complete:
            self.reader = None
            self.deadline = 0.0
            self.waiting = _NONE
        else:
            self.waiting = _READ
            self.deadline = now + read_wait(self.host.settings, self.reader, now)
            self.host.watch(self)

    def send_continue(self) -> None:
        """The app wants a body the client holds back behind `Expect: 100-continue`."""
        cycle = self.cycle
        if cycle is None:
            return
        if self.conn.protocol.take_continue(cycle.request):
            self.write(CONTINUE_100)
        if self.reader is None:
            now = time.monotonic()
            self.reader = start_stage(self.host.settings, BODY, now)
            self._arm_body(cycle.request.body, now)

    def send_error(self, error: HttpError, exchange: Exchange) -> None:
        """The session's error page for a request body that cannot complete (HttpCycle)."""
        if not self.closed:
            self.conn.session.send_error(error, exchange)
            if self.conn.out is not None:
                self._start_writing()

    def expired(self, now: float) -> None:
        """The host's sweep found the deadline passed."""
        waiting, self.waiting, self.deadline = self.waiting, _NONE, 0.0
        conn = self.conn
        if waiting == _KEEP_ALIVE:
            self.give_back(False)
        elif waiting == _READ:
            cycle = self.cycle
            if cycle is not None:  # the body stalled: a 408, and the app sees the client leave
                self.pause_reading()
                error, _ = read_timeout(BODY, False, cycle.request.request_line)
                self.host.error_log.log("info", error.log_message, module="reqtimeout")
                cycle.body_failed(error)
            else:
                conn.session.read_timed_out(conn.protocol.read_stage())
                self.give_back(False, after_error=True)
        elif waiting == _WRITE:
            self._lost()

    def _lost(self) -> None:
        """The client is gone (or timed out): the app's receive says disconnect."""
        self.closed = True
        self.pause_reading()
        self._stop_writing()
        self.conn.discard_output()
        self._release_drain()  # a send waiting for the socket returns (and is a no-op)
        if self.ws is not None:
            self.ws.feed(b"")  # the app's disconnect (1006); its run() then gives it back
        elif self.cycle is not None:
            self.cycle.wake()
        else:
            self.give_back(False)

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write what the socket takes now and queue the rest (the writer finishes it)."""
        if self.closed:
            return
        try:
            self.conn.queue(data)
        except OSError:
            self._lost()
            return
        if self.conn.out is not None:
            self._start_writing()

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        if self.closed:
            return
        try:
            self.conn.sendfile(fd, offset, count)  # drain() keeps the queue under its limit
        except OSError:
            self._lost()
            return
        if self.conn.out is not None:
            self._start_writing()

    def _start_writing(self) -> None:
        if not self.writing:
            self.writing = True
            self.loop.add_writer(self.fd, self._on_writable)
        self.waiting = _WRITE
        self.deadline = time.monotonic() + self.host.settings.timeout
        self.host.watch(self)

    def _stop_writing(self) -> None:
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.fd)

    def _on_writable(self) -> None:
        conn = self.conn
        try:
            done = conn.flush()
        except OSError:
            self._lost()
            return
        if done:
            self._stop_writing()
            if self.waiting == _WRITE:
                self.waiting, self.deadline = _NONE, 0.0
        else:
            self.deadline = time.monotonic() + self.host.settings.timeout
        drained = self._drained
        if drained is not None and (done or conn.out_bytes <= WRITE_LOW_WATER):
            self._drained = None
            if not drained.done():
                drained.set_result(None)

    def backlogged(self) -> bool:
        """Output is queued: the app's send must wait for drain() (rare: the client reads)."""
        return self.conn.out is not None

    async def drain(self) -> None:
        """The app's send waits here while the client reads slower than it sends."""
        conn = self.conn
        while (
            not self.closed
            and conn.out is not None
            and (conn.out_bytes > WRITE_HIGH_WATER or conn.out_bytes == 0)  # 0: file slices
        ):
            drained = self._drained
            if drained is None:
                drained = self._drained = self.loop.create_future()
            await drained

    def close(self) -> None:
        """A WebSocket cycle is done with the connection (its run() then returns)."""
        self.closed = True
        self.pause_reading()

    def give_back(self, keep: bool, request: Request | None = None, *, after_error=False) -> None:
        """The connection leaves this loop: to the epoll loop's request path, or to be closed
        there (write completion first if output is queued)."""
        if self.given:
            return
        self.given = True
        self.pause_reading()
        self._stop_writing()
        self._release_drain()
        self.closed = True
        self.host.give_back(self, keep, request, after_error)

    def _release_drain(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
