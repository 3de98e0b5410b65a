"""The event MPM's child: one epoll loop that owns every waiting connection, plus a thread pool.

The keep-alive problem (Apache's event.c): a connection waiting for its next request must not
hold a thread. Here the loop accepts, reads request heads (and bodies up to BODY_BUFFER_LIMIT,
answering `Expect: 100-continue` itself) and parks idle keep-alive connections; a connection
goes to a worker thread only once a request is ready. The thread runs the handler and writes
without waiting: what a slow reader cannot take yet stays queued on the connection, and the
loop finishes it (write completion). A slow or silent client therefore never holds a thread;
RequestReadTimeout and Timeout still bound it, enforced by the loop.

Every client socket is registered once, EPOLLONESHOT: an event disarms it, so a connection a
thread owns cannot wake the loop. Threads never touch the loop's state: they hand every
connection back through the pool (event_pool.py), and the loop re-arms or closes it. Only
the loop closes sockets. A parked connection sits in the timeout queue of its state
(timeout_queue.py, Apache's `struct timeout_queue`): keep-alive, write completion and the two
lingering closes, one timeout each, plus the deadlines of connections being read; their
lengths are the counts mod_status shows and the connection limit uses. When the child
accepts, and how it makes room when full, is the acceptor's (event_accept.py). A request
that goes straight to a ProxyPass route takes no thread at all: the loop proxies it
(event_proxy.py), and the connection comes back as from a thread.

With `threads=0` the loop serves requests itself (`mpmd -X`: one process, one thread) and every
connection carries worker record 0. Requests refused while the loop reads them are logged
(access log, scoreboard) by the connection, as in the threads.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable, Mapping, Sequence

from mpmd.http.errors import HttpError
from mpmd.http.request import Request
from mpmd.http.response import CONTINUE_100
from mpmd.http.timeouts import BODY, HEADERS, IDLE, first_byte_wait, read_wait, start_stage
from mpmd.mpm.context import ChildContext
from mpmd.mpm.event_accept import Acceptor, raise_open_files_limit
from mpmd.mpm.event_asgi import AsgiHost
from mpmd.mpm.event_connection import (
    CLOSED,
    HANDSHAKE,
    IN_ASGI,
    IN_PROXY,
    IN_THREAD,
    KEEP_ALIVE,
    LINGER,
    READING,
    SHORT_LINGER,
    WRITE_COMPLETION,
    EventConnection,
)
from mpmd.mpm.event_pool import WorkerPool, run_request
from mpmd.mpm.event_proxy import LoopProxy
from mpmd.mpm.event_tls import DONE, WAITING, Handshakes
from mpmd.mpm.event_upkeep import LINGER_SECONDS, SHORT_LINGER_SECONDS, QueueUpkeep
from mpmd.mpm.scoreboard import READY
from mpmd.mpm.timeout_queue import DeadlineQueue, TimeoutQueue

READ_SIZE = 65536
BODY_BUFFER_LIMIT = 64 * 1024  # body bytes the loop buffers before handing a request over


_ARM_READ = select.EPOLLIN | select.EPOLLONESHOT
_ARM_WRITE = select.EPOLLOUT | select.EPOLLONESHOT
# Polls without waiting a round may add before the proxy's put-off writes go out: bigger
# rounds, fewer cross-CPU wake-ups of the peers (docs/architecture.md); 3 measured best of 1-8.
GATHER_POLLS = 3


class EventLoop(QueueUpkeep):
    """Accept, read, park, dispatch and finish writes for one child process."""

    def __init__(
        self,
        ctx: ChildContext,
        listeners: Sequence[socket.socket],
        *,
        threads: int,
        worker_record: Callable[[int], object] | None = None,
        process_record=None,
        loop_record=None,
        max_connections: int = 0,
        wake_fd: int | None = None,
        asgi_records: Sequence[object] = (),
        siblings: Mapping[int, object] = {},
        generation: int = 0,
        slot: int = 0,
    ) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.worker_record = worker_record  # thread index -> its scoreboard record
        self._inline_record = None  # threads=0: record 0, lent to every connection
        self.loop_record = loop_record  # counts the requests the loop proxies (threads > 0)
        self.process_record = process_record  # the scoreboard's counters for mod_status
        self.open_files = raise_open_files_limit()
        self.stopping = False
        self._settings = settings
        self.epoll = select.epoll()
        self._stop_fd = wake_fd  # readable once the parent asked this child to stop
        self._parent = os.getppid()
        self._conns: dict[int, EventConnection] = {}
        self._pool = WorkerPool(threads, worker_record) if threads else None
        self._reading = DeadlineQueue()
        self._keep_alive_q = TimeoutQueue(settings.keep_alive_timeout)
        self._write_q = TimeoutQueue(settings.timeout)  # Timeout per write progress
        self._linger_q = TimeoutQueue(LINGER_SECONDS)
        self._short_linger_q = TimeoutQueue(SHORT_LINGER_SECONDS)
        self._queue_of = {
            READING: self._reading,
            KEEP_ALIVE: self._keep_alive_q,
            WRITE_COMPLETION: self._write_q,
            LINGER: self._linger_q,
            SHORT_LINGER: self._short_linger_q,
        }
        self._proxy = LoopProxy.for_loop(self)  # ProxyPass requests served here, no thread
        shared_record = loop_record or (worker_record and worker_record(0))
        self._asgi = AsgiHost.for_loop(self, shared_record, asgi_records)
        if self._proxy is not None:
            self._queue_of[IN_PROXY] = self._proxy.deadlines
        self._tls = Handshakes.for_listeners(ctx, listeners, self.epoll, self._reading)
        if self._tls is not None:
            self._queue_of[HANDSHAKE] = self._reading
        self._next_publish = 0.0
        self._due = 0.0  # the earliest queue expiry, as of the last poll
        self.acceptor = Acceptor(
            self,
            listeners,
            threads=threads,
            factor=ctx.config.mpm.async_request_worker_factor,
            max_connections=max_connections,
            process_record=process_record,
            siblings=siblings,  # the other children's process records, this child's
            generation=generation,  # generation and slot: it shares new connections with them
            slot=slot,
            gather=self._gather(),
        )

    def _gather(self) -> int:
        """The CPUs this child may run on: its siblings and it gather the connections in that
        many children (event_accept.py); 0, every child shares them, with an ASGI
        application (its connections stay in the ASGI loop that took them)."""
        if self.ctx.asgi:
            return 0
        return len(os.sched_getaffinity(0))

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        pool = self._pool
        if pool is None and self.worker_record is not None:
            self._inline_record = self.worker_record(0)
        epoll = self.epoll
        wake_fd = -1
        if pool is not None:
            pool.start()
            wake_fd = pool.wake_fd
            epoll.register(wake_fd, select.EPOLLIN)
        if self._stop_fd is not None:
            epoll.register(self._stop_fd, select.EPOLLIN)
        asgi = self._asgi
        if asgi is not None:
            asgi.start()  # lifespan startup, before the first accept
            epoll.register(asgi.wake_fd, select.EPOLLIN)
        acceptor = self.acceptor
        acceptor.set_accepting(True, time.monotonic())
        acceptor.maintain(time.monotonic())  # a child surplus from the start never accepts
        conns = self._conns
        listeners = acceptor.listeners
        proxy = self._proxy
        backends = proxy.fds if proxy is not None else {}
        now = time.monotonic()
        try:
            while not (self.stopping and not conns):
                if should_stop():
                    self.begin_graceful_stop()
                timeout = self._poll_timeout(now)
                if pool is not None:
                    if pool.held:
                        pool.hand_over()  # this round's requests, before the loop sleeps
                    pool.sleeping = True  # a thread handing back from now on wakes us
                    if pool.returned:
                        timeout = 0.0
                if (proxy is not None and proxy.done) or (asgi is not None and asgi.returned):
                    timeout = 0.0
                events = epoll.poll(timeout)
                now = time.monotonic()
                acceptor.busy = False
                if pool is not None:
                    pool.sleeping = False
                    for conn, keep in pool.take_returned():
                        self._take_back(conn, keep, now)
                if proxy is not None and proxy.done:
                    for conn, keep in proxy.take_done():
                        self._take_back(conn, keep, now)
                if asgi is not None and asgi.returned:
                    for conn, keep, request, after_error in asgi.take_returned():
                        self._from_asgi(conn, keep, request, after_error, now)
                ready_listeners = None
                gathers = GATHER_POLLS if proxy is not None else 0
                while True:
                    for fd, mask in events:
                        conn = conns.get(fd)
                        if conn is not None:
                            kind = conn.kind
                            if kind in (KEEP_ALIVE, READING):
                                self._on_readable(conn, now)
                            elif kind == WRITE_COMPLETION:
                                self._on_writable(conn, now)
                            elif kind in (LINGER, SHORT_LINGER):
                                self._on_linger(conn)
                            elif kind == IN_PROXY:
                                proxy.on_client(conn, now)  # type: ignore[union-attr]
                            elif kind == HANDSHAKE:
                                self._on_handshake(conn, now)
                        elif fd in backends:
                            backends[fd](mask, now)
                        elif fd == wake_fd:
                            pool.clear_wake()  # type: ignore[union-attr]
                        elif asgi is not None and fd == asgi.wake_fd:
                            asgi.clear_wake()
                        elif fd in listeners:
                            ready_listeners = ready_listeners or []
                            if listeners[fd] not in ready_listeners:  # (a second poll's)
                                ready_listeners.append(listeners[fd])
                        elif fd == self._stop_fd:
                            epoll.unregister(fd)
                            self._stop_fd = None
                            self.begin_graceful_stop()
                    # The proxy's writes wait for the round's end (LoopProxy.flush_writes):
                    # what arrived meanwhile joins the round, and its writes leave with them.
                    if not gathers or not proxy.has_writes():  # type: ignore[union-attr]
                        break
                    gathers -= 1
                    events = epoll.poll(0)
                    if not events:
                        break
                    now = time.monotonic()
                if pool is not None:
                    if pool.held:  # before the accepts: a TLS handshake's first step is long
                        pool.hand_over()
                    acceptor.update_busy(now)
                if ready_listeners:
                    for sock in ready_listeners:
                        acceptor.on_listener(sock, now)
                self._maintain(now)
                if proxy is not None:
                    proxy.flush_writes(now)  # last: whatever this round's steps put off
        finally:
            if pool is not None:
                pool.stop()
            if proxy is not None:
                proxy.close()
            if asgi is not None:
                asgi.close()  # lifespan shutdown, once every connection is done
            epoll.close()

    def begin_graceful_stop(self) -> None:
        """Stop accepting; busy connections finish, and from now on every response says close
        (see _maintain for the keep-alive ones)."""
        if self.stopping:
            return
        self.stopping = True
        if self.ctx.stop is not None:  # MaxConnectionsPerChild, orphaned: responses say close
            self.ctx.stop.request()
        self.acceptor.set_accepting(False, time.monotonic())
        if self._asgi is not None:
            self._asgi.begin_stop()

    # -- what the acceptor asks (event_accept.py) ----------------------------------------------

    def idle_threads(self) -> int:
        return self._pool.idle if self._pool is not None else 0

    def connection_count(self) -> int:
        """Connections that may need a thread (not those the ASGI loop holds)."""
        return len(self._conns) - (self._asgi.held if self._asgi is not None else 0)

    def open_connections(self) -> int:
        """Every connection this child holds: the count mod_status shows, and what the
        acceptor compares with its siblings' (event_accept.py)."""
        return len(self._conns)

    def lingering(self) -> int:
        return len(self._linger_q) + len(self._short_linger_q)

    def keep_alive_count(self) -> int:
        return len(self._keep_alive_q)

    def close_oldest_keep_alive(self, count: int) -> None:
        """Lingering close for the `count` connections parked in keep-alive the longest."""
        if count > 0:
            for conn in self._keep_alive_q.pop_oldest(count):
                self._linger(conn, short=False)

    def add_connection(self, sock: socket.socket, peer, now: float, listener=None) -> None:
        tls = self._tls
        try:
            sock.settimeout(self._settings.timeout)  # O_NONBLOCK for the loop, Timeout for threads
            if sock.family != socket.AF_UNIX:  # Listen unix: has no Nagle to turn off
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = None if tls is None else tls.connection(sock, peer, listener)
            if conn is None:
                conn = EventConnection(sock, peer, self.ctx)
        except OSError:
            sock.close()
            return
        conn.session.worker = self._inline_record
        self._conns[conn.fd] = conn
        if conn.tls:
            tls.start(conn, now)  # type: ignore[union-attr]
            self.epoll.register(conn.fd, 0)
            self._on_handshake(conn, now)  # its ClientHello is usually here already
            return
        conn.kind = READING  # the header clock starts with the first bytes (_read_head)
        self._reading.set(conn, now + first_byte_wait(self._settings, first_request=True))
        self.epoll.register(conn.fd, _ARM_READ)

    def _on_handshake(self, conn: EventConnection, now: float) -> None:
        """A step of a TLS handshake (event_tls.py); once it is done, the first request is
        read as over plain HTTP."""
        outcome = self._tls.step(conn, now)  # type: ignore[union-attr, arg-type]
        if outcome == DONE:  # the request may have come with the handshake's end
            self._on_readable(conn, now)
        elif outcome != WAITING:  # FAILED: what was written is not lost to a reset
            self._close_after_error(conn, now)

    # -- reading, by stage: the first bytes, the head, the body ----------------------------------

    def _on_readable(self, conn: EventConnection, now: float) -> None:
        """Read what arrived and pass it to the stage the connection is in."""
        try:
            data = conn.read_now() if conn.tls else os.read(conn.fd, READ_SIZE)
        except BlockingIOError:
            self.epoll.modify(conn.fd, _ARM_READ)
            return
        except OSError:
            self._close(conn)
            return
        if conn.kind == KEEP_ALIVE:  # the next request begins: its header clock starts
            self._keep_alive_q.remove(conn)
            conn.kind = READING
        if conn.session.proxy_header is not None:  # RemoteIPProxyProtocol: its header first
            data = self._proxy_header(conn, data, now)
            if not data:
                return
        conn.protocol.feed(data)  # b"" tells it the client closed
        request = conn.request
        if request is None:
            self._read_head(conn, data, now)
        else:
            self._read_body(conn, request, len(data), now)

    def _read_head(self, conn: EventConnection, data: bytes, now: float) -> None:
        """Request line and headers, under the header stage from their first byte."""
        if conn.protocol.buffered():
            conn.reader = None
            self._next_request(conn, now)
            return
        if not data:
            self._close(conn)  # gone between requests, or mid request line
            return
        reader = conn.reader
        if reader is None:
            reader = conn.reader = start_stage(self._settings, HEADERS, now)
        reader.on_bytes(len(data), now)
        self._wait_read(conn, now)

    def _proxy_header(self, conn: EventConnection, data: bytes, now: float) -> bytes:
        """The PROXY header, before any HTTP (mpm/proxy_header.py): the bytes after it; b""
        while it is incomplete (waiting under the header stage) or once it failed (closed)."""
        try:
            rest = conn.session.take_proxy_header(data)
        except ConnectionAbortedError:
            self._close(conn)
            return b""
        if not rest:
            reader = conn.reader or start_stage(self._settings, HEADERS, now)
            conn.reader = reader
            reader.on_bytes(len(data), now)
            self._wait_read(conn, now)
            return b""
        return rest

    def _read_body(self, conn: EventConnection, request: Request, count: int, now: float) -> None:
        """A body the loop buffers, up to BODY_BUFFER_LIMIT, before the request is handed over."""
        conn.reader.on_bytes(count, now)  # type: ignore[union-attr]
        if self._body_wanted(conn, request):
            self._wait_read(conn, now)
            return
        reader = conn.reader
        conn.request = conn.reader = None
        self._dispatch(conn, request, reader)

    def _next_request(self, conn: EventConnection, now: float) -> None:
        """Take the next parsed request: read its body here first, or hand it over now; with
        none parsed, wait for the next one. A refusal closes (reference 8.1)."""
        try:
            request = conn.session.next_request()
        except HttpError as error:
            conn.session.send_error(error)
            self._close_after_error(conn, now)
            return
        if request is None:
            self._take_back(conn, True, now)
        else:
            self._serve_request(conn, request, now)

    def _serve_request(self, conn: EventConnection, request: Request, now: float) -> None:
        """An ASGI application's request goes to the ASGI loop with its connection; any
        other reads its body here first, or goes to a thread (or the proxy) now."""
        if self._asgi is not None and self._asgi.take(conn, request):
            self._leave(conn)
            conn.kind = IN_ASGI
        elif self._body_wanted(conn, request):
            if conn.protocol.take_continue(request) and not conn.write_now(CONTINUE_100):
                self._close(conn)
                return
            conn.kind = READING  # after write completion it was between places
            conn.request = request
            conn.reader = start_stage(self._settings, BODY, now)
            self._wait_read(conn, now)
        else:
            self._dispatch(conn, request)

    @staticmethod
    def _body_wanted(conn: EventConnection, request: Request) -> bool:
        """The body is still arriving, the client is there, and the loop has room for it."""
        body = request.body
        return not (
            body.complete
            or body.error is not None
            or conn.protocol.eof
            or body.buffered >= BODY_BUFFER_LIMIT
        )

    def _wait_read(self, conn: EventConnection, now: float) -> None:
        """Wait for more of a head or body: RequestReadTimeout's deadline, and Timeout per read."""
        self._reading.set(conn, now + read_wait(self._settings, conn.reader, now))
        self.epoll.modify(conn.fd, _ARM_READ)

    def _read_timeout(self, conn: EventConnection, now: float) -> None:
        """mod_reqtimeout: a 408, or a (logged) close, then the short lingering close."""
        request = conn.request  # a body timeout: its head is known, as for %r in a thread
        if conn.kind == HANDSHAKE:
            self._tls.timed_out(conn)  # type: ignore[union-attr, arg-type]
        elif request is not None:
            conn.session.read_timed_out(BODY, request.request_line)
        else:
            conn.session.read_timed_out(conn.protocol.read_stage())
        self._close_after_error(conn, now)

    def _close_after_error(self, conn: EventConnection, now: float) -> None:
        """The short lingering close, once the error response is out: what the socket did not
        take is finished by write completion (under Timeout), never waited for here."""
        if conn.out is None:
            self._linger(conn, short=True)
            return
        conn.keep = False
        conn.after_error = True
        self._park_writing(conn, now)

    # -- threads ---------------------------------------------------------------------------------

    def _dispatch(self, conn: EventConnection, request: Request, reader=None) -> None:
        self._leave(conn)
        if self._proxy is not None and self._proxy.take(conn, request, reader):
            return
        conn.kind = IN_THREAD
        if self._pool is not None:
            # With no idle thread Apache closes a readable keep-alive connection; here its
            # request is already read, so it waits for the next thread (see Acceptor.update_busy).
            self._pool.submit(conn, request)
            return
        keep = run_request(conn, request)  # threads=0: the loop serves it
        if conn.session.worker is not None:
            conn.session.worker.set_state(READY)
        self._take_back(conn, keep, time.monotonic())

    def _from_asgi(self, conn: EventConnection, keep: bool, request, after_error, now) -> None:
        """The ASGI loop gives a connection back: to serve `request`, or to close."""
        conn.kind = IN_THREAD  # between places for a moment
        if request is not None:
            self._serve_request(conn, request, now)
        elif after_error:
            self._close_after_error(conn, now)
        else:
            self._take_back(conn, keep, now)

    def _take_back(self, conn: EventConnection, keep: bool, now: float) -> None:
        """The loop resumes a connection a thread is done with: write completion, keep-alive,
        a partial next head, or a close."""
        self._leave(conn)
        asgi_request = conn.session.asgi_request
        if asgi_request is not None and conn.out is None:  # pipelined behind a thread's
            conn.session.asgi_request = None
            self._serve_request(conn, asgi_request, now)
        elif conn.out is not None:
            conn.keep = keep
            self._park_writing(conn, now)
        elif not keep or conn.protocol.eof:  # a keep-alive promise is kept while stopping
            self._linger(conn, short=False)
        elif conn.protocol.buffered():  # pipelined behind a request the loop proxied
            self._next_request(conn, now)
        elif conn.protocol.read_stage() != IDLE:  # part of a pipelined head is already here
            conn.kind = READING
            conn.reader = start_stage(self._settings, HEADERS, now)
            self._wait_read(conn, now)
        else:
            conn.kind = KEEP_ALIVE
            self._keep_alive_q.add(conn, now)
            self.epoll.modify(conn.fd, _ARM_READ)

    # -- write completion and lingering close ----------------------------------------------------

    def _park_writing(self, conn: EventConnection, now: float) -> None:
        if conn.kind != WRITE_COMPLETION:
            self._leave(conn)
            conn.kind = WRITE_COMPLETION
        self._write_q.add(conn, now)  # Timeout per progress
        self.epoll.modify(conn.fd, _ARM_WRITE)

    def _on_writable(self, conn: EventConnection, now: float) -> None:
        try:
            done = conn.flush()
        except OSError:
            self._close(conn)
            return
        if not done:
            self._park_writing(conn, now)
            return
        self._write_q.remove(conn)
        conn.kind = IN_THREAD  # between places for a moment
        if not conn.keep:
            self._linger(conn, short=conn.after_error)
        elif conn.protocol.buffered():  # it arrived while the response was being written
            self._next_request(conn, now)
        else:
            self._take_back(conn, True, now)

    def _linger(self, conn: EventConnection, short: bool) -> None:
        """Lingering close in the loop: stop sending, drain the client for 30 s (2 s short)."""
        conn.discard_output()
        try:
            conn.end_output()
        except OSError:
            self._close(conn)
            return
        self._leave(conn)
        short = short or self.stopping
        conn.kind = SHORT_LINGER if short else LINGER
        queue = self._short_linger_q if short else self._linger_q
        queue.add(conn, time.monotonic())
        self.epoll.modify(conn.fd, _ARM_READ)

    def _on_linger(self, conn: EventConnection) -> None:
        fd = conn.fd
        try:
            while os.read(fd, 32768):
                pass
        except BlockingIOError:
            self.epoll.modify(fd, _ARM_READ)
            return
        except OSError:
            pass
        self._close(conn)  # the client closed (or failed): done

    def _leave(self, conn: EventConnection) -> None:
        """Take `conn` out of the queue of the place it is leaving."""
        queue = self._queue_of.get(conn.kind)
        if queue is not None:
            queue.remove(conn)

    def _close(self, conn: EventConnection) -> None:
        if conn.kind == CLOSED:
            return
        self._leave(conn)
        conn.kind = CLOSED
        conn.request = None
        self._conns.pop(conn.fd, None)
        conn.discard_output()
        if conn.tls:
            conn.drop_tls()  # type: ignore[attr-defined]
        try:
            conn.sock.close()  # also removes it from the epoll set
        except OSError:
            pass
