"""The event MPM's child: one epoll loop that owns every waiting connection, plus a thread pool.

The keep-alive problem (Apache's event.c): a connection waiting for its next request must not
hold a thread. Here the loop accepts, reads request heads (and bodies up to BODY_BUFFER_LIMIT,
answering `Expect: 100-continue` itself) and parks idle keep-alive connections; a connection
goes to a worker thread only once a request is ready. The thread runs the handler and writes
without waiting: what a slow reader cannot take yet stays queued on the connection, and the
loop finishes it (write completion). A slow or silent client therefore never holds a thread;
RequestReadTimeout and Timeout still bound it, enforced by the loop.

Every client socket is registered once, EPOLLONESHOT: an event disarms it, so a connection a
thread owns cannot wake the loop, and handing it back is one epoll_ctl(MOD). A thread returns
a keep-alive connection itself (under `_lock`); other returns go through a queue and a wake-up
pipe. Only the loop closes sockets. Each timeout class has its own queue: FIFOs for keep-alive,
write completion and the two lingering closes (one timeout per queue, so expiry is O(1) from
the head), and a heap for connections being read, whose RequestReadTimeout deadlines move
with MinRate. Stale entries are skipped by a per-connection stamp.

With `threads=0` the loop serves requests itself (`mpmd -X`: one process, one thread) and every
connection carries worker record 0. Requests refused while the loop reads them are logged
(access log, scoreboard) by the connection, as in the threads.
"""

from __future__ import annotations

import heapq
import itertools
import os
import resource
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from queue import SimpleQueue

from mpmd.http.errors import HttpError
from mpmd.http.request import Request
from mpmd.http.response import CONTINUE_100
from mpmd.http.timeouts import BODY, IDLE, REQUEST_LINE, ReadDeadline, expiry_status
from mpmd.mpm.child import load_context
from mpmd.mpm.context import ChildContext
from mpmd.mpm.event_connection import (
    CLOSED,
    IN_THREAD,
    KEEP_ALIVE,
    LINGER,
    READING,
    SHORT_LINGER,
    WRITE_COMPLETION,
    EventConnection,
)
from mpmd.mpm.event_limit import connections_above_limit, connections_over_limit, worker_factor
from mpmd.mpm.scoreboard import READY

ACCEPT_BATCH = 16  # connections accepted per listener wake-up (the limit is checked for each)
READ_SIZE = 65536
BODY_BUFFER_LIMIT = 64 * 1024  # body bytes the loop buffers before handing a request over
LINGER_SECONDS = 30.0  # MAX_SECS_TO_LINGER: normal lingering close
SHORT_LINGER_SECONDS = 2.0  # SECONDS_TO_LINGER: after a timeout or error, or while stopping
_COMPACT_SLACK = 1024  # stale queue entries tolerated before a queue is compacted
MAX_POLL_SECONDS = 1.0  # threads park keep-alive connections without waking the loop
# "All workers busy" must last this long: under the GIL a thread that has sent its response
# may wait milliseconds before it counts itself idle, and bursts shorter than that are not
# the overload Apache's rule (close idle keep-alive connections) is for.
BUSY_GRACE_SECONDS = 0.1
# A full child looks this long after it stopped accepting (and as often while full) for
# clients left waiting in the backlog, which it then takes by closing idle keep-alive
# connections; the delay leaves them first to the children that still accept.
REUSE_PROBE_SECONDS = 0.1


_ARM_READ = select.EPOLLIN | select.EPOLLONESHOT
_ARM_WRITE = select.EPOLLOUT | select.EPOLLONESHOT


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: one child may hold thousands of connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError):
            pass
    return soft


class EventLoop:
    """Accept, read, park, dispatch and finish writes for one child process."""

    def __init__(
        self,
        ctx: ChildContext,
        listeners: Sequence[socket.socket],
        *,
        threads: int,
        worker_record: Callable[[int], object] | None = None,
        process_record=None,
        max_connections: int = 0,
        wake_fd: int | None = None,
    ) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.listeners = {sock.fileno(): sock for sock in listeners}
        for sock in listeners:
            sock.setblocking(False)
        self.threads = threads
        self.worker_record = worker_record  # thread index -> its scoreboard record
        self._inline_record = None  # threads=0: record 0, lent to every connection
        self.process_record = process_record  # the scoreboard's counters for mod_status
        self.factor = worker_factor(ctx.config.mpm.async_request_worker_factor)
        self.max_connections = max_connections  # MaxConnectionsPerChild, 0 = unlimited
        self.open_files = raise_open_files_limit()
        self.accepted = 0
        self.stopping = False
        self.accepting = False
        self._timeout = settings.timeout
        self._keep_alive_timeout = settings.keep_alive_timeout
        self._header_stage = settings.header_read_timeout
        self._body_stage = settings.body_read_timeout
        self._first_wait = settings.header_read_timeout.timeout or settings.timeout
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop_fd = wake_fd  # readable once the parent asked this child to stop
        self._parent = os.getppid()
        self._conns: dict[int, EventConnection] = {}
        self._work: SimpleQueue[tuple[EventConnection, Request] | None] = SimpleQueue()
        self._returned: SimpleQueue[tuple[EventConnection, bool]] = SimpleQueue()
        self._pool: list[threading.Thread] = []
        # Thread hand-backs are counted under _lock; the loop's own counters are loop-only.
        self._lock = threading.Lock()
        self._dispatched = 0  # loop: requests handed to threads
        self._finished = 0  # threads, under _lock: hand-backs
        self._ka_in = 0  # under _lock: parked keep-alive
        self._ka_out = 0  # loop: left the keep-alive queue
        self._writing = 0  # loop: in write completion
        self._lingering = 0  # loop: in a lingering close
        self._busy = False  # Apache's workers_were_busy, reset every loop iteration
        self._saturated_since: float | None = None  # every thread has had a request since
        self._seq = itertools.count()
        self._reading: list[tuple[float, int, int, EventConnection]] = []  # heap
        self._keep_alive_q: deque[tuple[float, int, EventConnection]] = deque()
        self._write_q: deque[tuple[float, int, EventConnection]] = deque()
        self._linger_q: deque[tuple[float, int, EventConnection]] = deque()
        self._short_linger_q: deque[tuple[float, int, EventConnection]] = deque()
        self._next_publish = 0.0
        self._next_probe = 0.0  # full: when to look for clients waiting in the backlog

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        if not self.threads and self.worker_record is not None:
            self._inline_record = self.worker_record(0)
        for index in range(self.threads):
            thread = threading.Thread(target=self._worker_main, args=(index,), daemon=True)
            thread.start()
            self._pool.append(thread)
        epoll = self._epoll
        epoll.register(self._wake_r, select.EPOLLIN)
        if self._stop_fd is not None:
            epoll.register(self._stop_fd, select.EPOLLIN)
        self._set_accepting(True)
        conns = self._conns
        listeners = self.listeners
        now = time.monotonic()
        try:
            while not (self.stopping and not conns):
                if should_stop():
                    self.begin_graceful_stop()
                events = epoll.poll(self._poll_timeout(now))
                now = time.monotonic()
                self._busy = False
                ready_listeners = None
                for fd, _ in events:
                    conn = conns.get(fd)
                    if conn is not None:
                        kind = conn.kind
                        if kind in (READING, KEEP_ALIVE):
                            self._on_readable(conn, now)
                        elif kind == WRITE_COMPLETION:
                            self._on_writable(conn, now)
                        elif kind in (LINGER, SHORT_LINGER):
                            self._on_linger(conn)
                    elif fd == self._wake_r:
                        self._drain_returned(now)
                    elif fd in listeners:
                        ready_listeners = ready_listeners or []
                        ready_listeners.append(listeners[fd])
                    elif fd == self._stop_fd:
                        epoll.unregister(fd)
                        self._stop_fd = None
                        self.begin_graceful_stop()
                if self.threads:
                    self._busy = self._workers_busy(now)
                if ready_listeners:
                    for sock in ready_listeners:
                        self._on_listener(sock, now)
                self._maintain(now)
        finally:
            self._shutdown_pool()
            epoll.close()

    def begin_graceful_stop(self) -> None:
        """Stop accepting; busy connections finish, and from now on every response says close
        (see _maintain for the keep-alive ones)."""
        if self.stopping:
            return
        self.stopping = True
        if self.ctx.stop is not None:  # MaxConnectionsPerChild, orphaned: responses say close
            self.ctx.stop.request()
        self._set_accepting(False)

    def _shutdown_pool(self) -> None:
        for _ in self._pool:
            self._work.put(None)
        for thread in self._pool:
            thread.join(timeout=5)

    # -- accepting -------------------------------------------------------------------------------

    def _idle_threads(self) -> int:
        return self.threads - (self._dispatched - self._finished)

    def _workers_busy(self, now: float) -> bool:
        """Every thread has a request, and has had one for BUSY_GRACE_SECONDS."""
        if self._dispatched - self._finished < self.threads:
            self._saturated_since = None
            return False
        if self._saturated_since is None:
            self._saturated_since = now
        return now - self._saturated_since >= BUSY_GRACE_SECONDS

    def _above_limit(self) -> bool:
        """Apache's connections_above_limit(): AsyncRequestWorkerFactor (reference 1.4)."""
        return connections_above_limit(
            len(self._conns),
            self._lingering,
            self._idle_threads(),
            self.threads,
            self.factor,
            disabled=not self.accepting,
        )

    def _on_listener(self, listener: socket.socket, now: float) -> None:
        if self.stopping:
            return
        if self.threads:
            if self._busy:
                self._set_accepting(False)
                return
            if self._above_limit():
                self._set_accepting(False)
                return
        self._accept(listener, now, reuse=False)

    def _accept(self, listener: socket.socket, now: float, reuse: bool) -> None:
        """Accept a batch; with `reuse` (the child is full), each new connection closes the
        oldest idle keep-alive one, and the batch ends when none is left."""
        for _ in range(ACCEPT_BATCH):
            if reuse and self._ka_in == self._ka_out:
                return
            try:
                sock, peer = listener.accept()
            except OSError:  # EAGAIN, or EMFILE and friends: try again on the next wake-up
                return
            self._add_connection(sock, peer, now)
            self.accepted += 1
            if reuse:
                self._close_oldest_keep_alive(
                    connections_over_limit(
                        len(self._conns),
                        self._lingering,
                        self._idle_threads(),
                        self.threads,
                        self.factor,
                    )
                )
            if self.max_connections and self.accepted >= self.max_connections:
                self.begin_graceful_stop()  # MaxConnectionsPerChild counts connections
                return
            if self.threads and not reuse and self._above_limit():
                return

    def _reuse_keep_alive(self, now: float) -> None:
        """An idle keep-alive connection never keeps a new client waiting (mpmd goes beyond
        Apache here, as nginx reuses connections): a child that stopped accepting because it
        is full, with a thread idle and keep-alive connections parked, takes the clients still
        waiting in the backlog and closes its oldest keep-alive connections to make room."""
        if now < self._next_probe:
            return
        self._next_probe = now + REUSE_PROBE_SECONDS
        if self._idle_threads() <= 0:
            return  # every thread busy: the listeners come back, or kill'em all, when it lasts
        for listener in self.listeners.values():
            if self.stopping:
                return
            self._accept(listener, now, reuse=True)

    def _close_oldest_keep_alive(self, count: int) -> None:
        """Lingering close for the `count` connections parked in keep-alive the longest."""
        if count <= 0:
            return
        queue = self._keep_alive_q
        with self._lock:  # threads append and re-arm under it
            while queue and count > 0:
                _, stamp, conn = queue.popleft()
                if conn.stamp == stamp and conn.kind == KEEP_ALIVE:
                    self._linger(conn, short=False)
                    count -= 1

    def _add_connection(self, sock: socket.socket, peer, now: float) -> None:
        try:
            sock.settimeout(self._timeout)  # O_NONBLOCK for the loop, Timeout for threads
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = EventConnection(sock, peer, self.ctx)
        except OSError:
            sock.close()
            return
        conn.worker = self._inline_record
        self._conns[conn.fd] = conn
        # The header clock starts with the first bytes (as behind TCP_DEFER_ACCEPT); until
        # then the connection waits for the header stage's timeout, or Timeout.
        self._park_reading(conn, now + self._first_wait)
        self._epoll.register(conn.fd, _ARM_READ)

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting or not self.listeners:
            return
        self.accepting = on
        if not on:
            self._next_probe = time.monotonic() + REUSE_PROBE_SECONDS
        for fd in self.listeners:
            if on:
                self._epoll.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            else:
                self._epoll.unregister(fd)
        if self.process_record is not None:
            self.process_record.not_accepting = 0 if on else 1

    # -- reading ---------------------------------------------------------------------------------

    def _on_readable(self, conn: EventConnection, now: float) -> None:
        """Read what arrived; hand the request over once its head (and body, bounded) is in."""
        try:
            data = os.read(conn.fd, READ_SIZE)
        except BlockingIOError:
            self._epoll.modify(conn.fd, _ARM_READ)
            return
        except OSError:
            self._close(conn)
            return
        if conn.kind == KEEP_ALIVE:  # its queue entry goes stale; the header clock starts
            self._ka_out += 1
            conn.kind = READING
            conn.stamp += 1
        protocol = conn.protocol
        request = conn.request
        protocol.feed(data)  # b"" tells it the client closed
        if request is None:
            if not protocol.buffered():
                if not data:
                    self._close(conn)  # gone between requests, or mid request line
                    return
                reader = conn.reader
                restart = reader is None
                if restart:  # the first bytes of a head start the header clock
                    reader = conn.reader = ReadDeadline(self._header_stage)
                    reader.start(now)
                reader.on_bytes(len(data), now)
                self._wait_read(conn, now, restart)
                return
            try:
                request = protocol.next_request()
            except HttpError as error:
                if not error.keep_alive:
                    self._fail(conn, error, now)
                    return
                conn._send_error(error, keep_alive=True)  # 417: the connection carries on
                conn.reader = None
                self._dispatch_buffered(conn, now)
                return
            if request is None:  # cannot happen: buffered() said a request is waiting
                self._close(conn)
                return
            if not (protocol.body_complete(request) or self._body_enough(request) or not data):
                if protocol.take_continue(request) and not self._write_small(conn, CONTINUE_100):
                    self._close(conn)
                    return
                conn.request = request
                reader = conn.reader = ReadDeadline(self._body_stage)
                reader.start(now)
                self._wait_read(conn, now, restart=True)
                return
        else:
            if conn.reader is not None:
                conn.reader.on_bytes(len(data), now)
            if not (protocol.body_complete(request) or self._body_enough(request) or not data):
                self._wait_read(conn, now)
                return
            conn.request = None
        conn.reader = None
        self._dispatch(conn, request)

    @staticmethod
    def _body_enough(request: Request) -> bool:
        return request.body.buffered >= BODY_BUFFER_LIMIT

    def _write_small(self, conn: EventConnection, data: bytes) -> bool:
        """A few bytes from the loop (100 Continue); False if the socket would not take them."""
        try:
            return os.write(conn.fd, data) == len(data)
        except OSError:
            return False

    def _wait_read(self, conn: EventConnection, now: float, restart: bool = False) -> None:
        """Wait for more of a head or body: RequestReadTimeout's deadline, and Timeout per read."""
        deadline = now + self._timeout
        reader = conn.reader
        if reader is not None and reader.deadline is not None and reader.deadline < deadline:
            deadline = reader.deadline
        if restart or deadline < conn.deadline:
            self._park_reading(conn, deadline)
        else:
            conn.deadline = deadline  # later than its heap entry: re-queued when that expires
        self._epoll.modify(conn.fd, _ARM_READ)

    def _park_reading(self, conn: EventConnection, deadline: float) -> None:
        conn.kind = READING
        conn.stamp += 1
        conn.deadline = deadline
        heapq.heappush(self._reading, (deadline, next(self._seq), conn.stamp, conn))

    def _read_timeout(self, conn: EventConnection, now: float) -> None:
        """mod_reqtimeout: 408 to partial headers or body, a close without a response otherwise
        (8.2); a partial first request line is still logged as `"-" 408 -` (8.1)."""
        stage = BODY if conn.request is not None else conn.protocol.read_stage()
        if expiry_status(stage) == 408:
            what = "body" if stage == BODY else "header"
            self.ctx.error_log.log(
                "info", f"Request {what} read timeout", module="reqtimeout", ah="AH01382"
            )
            request = conn.request  # a body timeout: its head is known, as for %r in a thread
            line = request.request_line if request is not None else None
            conn._send_error(
                HttpError(408, f"AH01382: Request {what} read timeout", request_line=line)
            )
        elif stage == REQUEST_LINE and conn.info.requests == 0:
            conn.log_refused(HttpError(408, "AH01382: Request header read timeout"))
        self._close_after_error(conn, now)

    def _fail(self, conn: EventConnection, error: HttpError, now: float) -> None:
        """A request the protocol refused: its error response, then close (reference 8.1)."""
        conn._send_error(error)
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

    def _dispatch(self, conn: EventConnection, request: Request) -> None:
        conn.kind = IN_THREAD
        conn.stamp += 1
        if not self.threads:
            conn.request = request
            self._serve(conn)
            return
        # With no idle thread Apache closes a readable keep-alive connection; here its request
        # is already read, so it waits for the next thread (see _workers_busy for the rest).
        self._dispatched += 1
        self._work.put((conn, request))

    def _serve(self, conn: EventConnection) -> None:
        """threads=0: serve the request the loop parked on `conn`, then take it back."""
        request = conn.request
        conn.request = None
        keep = self._run_request(conn, request)
        record = conn.worker
        if record is not None:
            record.set_state(READY)
        self._hand_back(conn, keep, counted=False)

    @staticmethod
    def _run_request(conn: EventConnection, request: Request | None) -> bool:
        try:
            return conn.serve_buffered(request)
        except OSError:
            return False
        except Exception:  # never leak the connection or the thread's busy count
            conn.log_failure()
            return False

    def _worker_main(self, index: int) -> None:
        record = self.worker_record(index) if self.worker_record else None
        work = self._work
        run_request = self._run_request
        hand_back = self._hand_back
        while True:
            item = work.get()
            if item is None:
                return
            conn, request = item
            conn.worker = record
            keep = run_request(conn, request)
            conn.worker = None
            if record is not None:
                record.set_state(READY)  # back to `_`: the pool counts this thread idle again
            hand_back(conn, keep)

    def _hand_back(self, conn: EventConnection, keep: bool, counted: bool = True) -> None:
        """A thread is done with `conn`: park it for keep-alive itself, or return it to the loop.

        Parking is the hot path, so a thread does it without waking the loop: it queues the
        entry and re-arms the socket under _lock, which the loop holds to close keep-alive
        connections, so no connection is closed between the two."""
        if keep and conn.out is None and not self.stopping and conn.protocol.read_stage() == IDLE:
            with self._lock:
                if counted:
                    self._finished += 1
                self._park_keep_alive(conn)
            if not self.accepting and self.threads:
                self._wake()  # the listeners may come back now a thread is idle
            return
        if counted:
            with self._lock:
                self._finished += 1
        if self.threads:
            self._returned.put((conn, keep))
            self._wake()
        else:
            self._take_back(conn, keep, time.monotonic())

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake anyway

    def _park_keep_alive(self, conn: EventConnection) -> None:
        """Caller holds _lock."""
        conn.kind = KEEP_ALIVE
        conn.stamp += 1
        self._ka_in += 1
        self._keep_alive_q.append((time.monotonic() + self._keep_alive_timeout, conn.stamp, conn))
        self._epoll.modify(conn.fd, _ARM_READ)

    def _drain_returned(self, now: float) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        returned = self._returned
        while not returned.empty():
            conn, keep = returned.get()
            self._take_back(conn, keep, now)

    def _take_back(self, conn: EventConnection, keep: bool, now: float) -> None:
        """The loop resumes a connection a thread could not park: write completion, a partial
        next head, or a close."""
        if conn.out is not None:
            conn.keep = keep
            self._park_writing(conn, now)
        elif not keep or conn.protocol.eof:  # a keep-alive promise is kept while stopping
            self._linger(conn, short=False)
        elif conn.protocol.read_stage() != IDLE:  # part of a pipelined head is already here
            conn.reader = ReadDeadline(self._header_stage)
            conn.reader.start(now)
            self._wait_read(conn, now, restart=True)
        else:
            with self._lock:
                self._park_keep_alive(conn)

    # -- write completion and lingering close ----------------------------------------------------

    def _park_writing(self, conn: EventConnection, now: float) -> None:
        if conn.kind != WRITE_COMPLETION:
            self._writing += 1
        conn.kind = WRITE_COMPLETION
        conn.stamp += 1
        self._write_q.append((now + self._timeout, conn.stamp, conn))  # Timeout per progress
        self._epoll.modify(conn.fd, _ARM_WRITE)

    def _on_writable(self, conn: EventConnection, now: float) -> None:
        try:
            done = conn.flush()
        except OSError:
            self._close(conn)
            return
        if not done:
            self._park_writing(conn, now)
            return
        self._writing -= 1
        conn.kind = IN_THREAD  # between places for a moment
        if not conn.keep:
            self._linger(conn, short=conn.after_error)
        elif conn.protocol.buffered():
            self._dispatch_buffered(conn, now)
        else:
            self._take_back(conn, True, now)

    def _dispatch_buffered(self, conn: EventConnection, now: float) -> None:
        """Hand over a request that is already parsed (it arrived while the previous response
        was being written, or behind a 417), or wait for the next one."""
        protocol = conn.protocol
        while True:
            try:
                request = protocol.next_request()
            except HttpError as error:
                if not error.keep_alive:
                    self._fail(conn, error, now)
                    return
                conn._send_error(error, keep_alive=True)
                continue
            if request is None:
                self._take_back(conn, True, now)
            else:  # a body still arriving beyond what is buffered is read by the thread
                self._dispatch(conn, request)
            return

    def _linger(self, conn: EventConnection, short: bool) -> None:
        """Lingering close in the loop: stop sending, drain the client for 30 s (2 s short)."""
        conn.discard_output()
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self._leave(conn)
        short = short or self.stopping
        conn.kind = SHORT_LINGER if short else LINGER
        conn.stamp += 1
        self._lingering += 1
        queue, seconds = (
            (self._short_linger_q, SHORT_LINGER_SECONDS)
            if short
            else (self._linger_q, LINGER_SECONDS)
        )
        queue.append((time.monotonic() + seconds, conn.stamp, conn))
        self._epoll.modify(conn.fd, _ARM_READ)

    def _on_linger(self, conn: EventConnection) -> None:
        fd = conn.fd
        try:
            while os.read(fd, 32768):
                pass
        except BlockingIOError:
            self._epoll.modify(fd, _ARM_READ)
            return
        except OSError:
            pass
        self._close(conn)  # the client closed (or failed): done

    def _leave(self, conn: EventConnection) -> None:
        """Take `conn` out of the counters of the place it is leaving."""
        kind = conn.kind
        if kind == KEEP_ALIVE:
            self._ka_out += 1
        elif kind == WRITE_COMPLETION:
            self._writing -= 1
        elif kind in (LINGER, SHORT_LINGER):
            self._lingering -= 1

    def _close(self, conn: EventConnection) -> None:
        if conn.kind == CLOSED:
            return
        self._leave(conn)
        conn.kind = CLOSED
        conn.stamp += 1
        conn.request = None
        self._conns.pop(conn.fd, None)
        conn.discard_output()
        try:
            conn.sock.close()  # also removes it from the epoll set
        except OSError:
            pass

    # -- timeouts --------------------------------------------------------------------------------

    def _poll_timeout(self, now: float) -> float:
        first = now + MAX_POLL_SECONDS
        if self._reading and self._reading[0][0] < first:
            first = self._reading[0][0]
        for queue in (self._keep_alive_q, self._write_q, self._short_linger_q, self._linger_q):
            if queue and queue[0][0] < first:
                first = queue[0][0]
        if self._full_with_keep_alive() and self._next_probe < first:
            first = self._next_probe
        return max(0.0, first - now)

    def _full_with_keep_alive(self) -> bool:
        """Not accepting only because of the connection limit, with keep-alive parked."""
        return (
            self.threads > 0
            and not (self.accepting or self.stopping or self._busy)
            and self._ka_in != self._ka_out
        )

    def _maintain(self, now: float) -> None:
        """Expire each queue from its head; kill'em all when workers were busy.

        A dying child (Apache kills its keep-alive connections at once) keeps them to their
        KeepAliveTimeout instead: a client may be sending on one right now, and its request
        is answered (with close) rather than lost to the race. `mpmd -X` (no StopSignal) has
        no next generation to send its clients to and closes them at once."""
        expired = False
        reading = self._reading
        while reading and reading[0][0] <= now:
            _, _, stamp, conn = heapq.heappop(reading)
            if conn.stamp != stamp or conn.kind != READING:
                continue
            if conn.deadline > now:  # reads moved it: back in at its real deadline
                heapq.heappush(reading, (conn.deadline, next(self._seq), stamp, conn))
                continue
            expired = True
            self._read_timeout(conn, now)
        dying = self.stopping and self.ctx.stop is None
        kill = (self._busy or dying) and self._ka_in != self._ka_out
        queue = self._keep_alive_q
        if queue and (kill or queue[0][0] <= now):
            ending = []
            with self._lock:  # threads append and re-arm under it
                while queue and (kill or queue[0][0] <= now):
                    _, stamp, conn = queue.popleft()
                    if conn.stamp == stamp and conn.kind == KEEP_ALIVE:
                        ending.append(conn)
            for conn in ending:
                expired = True
                self._on_readable(conn, now)  # a request that arrived meanwhile is served
                if conn.kind == KEEP_ALIVE:  # nothing had arrived: close
                    self._linger(conn, short=False)
        self._compact_queues()
        # While stopping, a normal lingering close is cut to the short one.
        cut = LINGER_SECONDS - SHORT_LINGER_SECONDS if self.stopping else 0.0
        for queue, limit in (
            (self._write_q, now),
            (self._linger_q, now + cut),
            (self._short_linger_q, now),
        ):
            while queue and queue[0][0] <= limit:
                _, stamp, conn = queue.popleft()
                if conn.stamp != stamp:
                    continue
                expired = True
                if conn.kind == WRITE_COMPLETION:
                    self._linger(conn, short=True)
                else:
                    self._close(conn)
        idle_again = not (self.stopping or self.accepting or self._busy)
        if self.threads and idle_again and not self._above_limit():
            self._set_accepting(True)
        if self._full_with_keep_alive():
            self._reuse_keep_alive(now)
        if expired or now >= self._next_publish:
            self._publish_counts(now)

    def _compact_queues(self) -> None:
        """Drop stale entries (connections that moved or closed) once they outnumber the live
        ones: every re-park appends, so without this a FIFO holds every closed connection of
        the last 30 s (about 2 KiB each) and every keep-alive request of the last
        KeepAliveTimeout. Amortised O(1) per append."""
        for queue, live, lock in (
            (self._keep_alive_q, self._ka_in - self._ka_out, self._lock),
            (self._write_q, self._writing, None),
            (self._linger_q, self._lingering, None),
            (self._short_linger_q, self._lingering, None),
        ):
            if len(queue) <= 2 * live + _COMPACT_SLACK:
                continue
            if lock is not None:
                with lock:
                    _keep_current(queue)
            else:
                _keep_current(queue)
        reading = self._reading
        if len(reading) > 2 * len(self._conns) + _COMPACT_SLACK:
            reading[:] = [e for e in reading if e[-1].stamp == e[-2] and e[-1].kind == READING]
            heapq.heapify(reading)

    def _publish_counts(self, now: float) -> None:
        """The process record's async counters mod_status prints (Apache: at queue upkeep)."""
        self._next_publish = now + 1.0
        if self._stop_fd is not None and os.getppid() != self._parent:
            self.begin_graceful_stop()  # the parent is gone
        record = self.process_record
        if record is not None:
            record.set_connection_counts(
                len(self._conns), self._writing, self._ka_in - self._ka_out, self._lingering
            )


def serve_event(spec, stop) -> None:
    """The event child: the loop in the main thread, ThreadsPerChild workers beside it."""
    ctx = load_context(spec, stop, multithread=True)
    loop = EventLoop(
        ctx,
        spec.listeners,
        threads=spec.config.mpm.threads_per_child,
        worker_record=lambda index: _ready_record(spec, index),
        process_record=spec.scoreboard.process(spec.slot),
        max_connections=spec.config.mpm.max_connections_per_child,
        wake_fd=stop.read_fd,
    )
    loop.run(should_stop=lambda: stop.requested)
    ctx.close()


def _ready_record(spec, index: int):
    record = spec.scoreboard.worker(spec.slot, index)
    record.reset_for_new_child(os.getpid(), spec.generation)
    record.set_state(READY)
    return record


def _keep_current(queue: deque) -> None:
    """Keep only the entries whose connection is still in the place the entry records."""
    current = [entry for entry in queue if entry[-1].stamp == entry[-2]]
    queue.clear()
    queue.extend(current)
