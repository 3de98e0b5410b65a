"""The event MPM's child: one selector loop that owns every idle connection, plus a thread pool.

The keep-alive problem (Apache's event.c): a connection waiting for its next request must not
hold a thread. Here the loop accepts, reads and parses request heads without blocking, and
parks idle keep-alive connections; a connection goes to a worker thread only once a whole
request (head, and a body up to BODY_BUFFER_LIMIT) is buffered. The thread serves what is
buffered and hands the connection back through a queue and a wake-up pipe. Each timeout class
(new connections reading a head, keep-alive) has its own FIFO, so expiry is O(1) from the head.

With `threads=0` the loop serves requests itself (`mpmd -X`: one process, one thread).
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from queue import SimpleQueue

from mpmd.mpm.connection import ChildContext, Connection
from mpmd.mpm.scoreboard import READY

ACCEPT_BATCH = 16


LINGER_SECONDS = 2.0  # lingering close: drain what the client still sends, then close
HEAD, KEEP_ALIVE, LINGER = 0, 1, 2  # the timeout classes, one FIFO each


class _Parked:
    """A connection the loop owns, with the deadline of the timeout class it is waiting in."""

    __slots__ = ("conn", "deadline", "kind", "stamp")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.deadline = 0.0
        self.stamp = 0  # bumped on every re-park, so stale queue entries are skipped
        self.kind = HEAD  # which timeout queue it waits in


class EventLoop:
    """Accept, read, park and dispatch for one child process."""

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
        self.listeners = list(listeners)
        self.selector = selectors.DefaultSelector()
        self.threads = threads
        self.worker_record = worker_record
        self.process_record = process_record  # the scoreboard's counters for mod_status
        self.factor = ctx.config.mpm.async_request_worker_factor
        self.max_connections = max_connections  # MaxConnectionsPerChild, 0 = unlimited
        self.accepted = 0
        self.stopping = False
        self.accepting = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._returned: SimpleQueue[tuple[Connection, bool]] = SimpleQueue()
        self._work: SimpleQueue[Connection | None] = SimpleQueue()
        self._idle_threads = threads
        self._idle_lock = threading.Lock()
        self._pool: list[threading.Thread] = []
        self._queues: tuple[deque[tuple[float, int, _Parked]], ...] = (deque(), deque(), deque())
        self._lingering = 0
        self._keep_alive = 0
        self._in_threads = 0  # connections a worker thread owns right now
        self._next_counts = 0.0
        self._parked: dict[int, _Parked] = {}
        self._stop_fd = wake_fd  # readable once the parent asked this child to stop

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        for index in range(self.threads):
            thread = threading.Thread(target=self._worker_main, args=(index,), daemon=True)
            thread.start()
            self._pool.append(thread)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        if self._stop_fd is not None:
            self.selector.register(self._stop_fd, selectors.EVENT_READ, "stop")
        self._set_accepting(True)
        settings = self.ctx.settings
        try:
            while not (self.stopping and not self._parked and self._busy() == 0):
                if should_stop():
                    self.begin_graceful_stop()
                timeout = self._next_timeout()
                for key, _ in self.selector.select(timeout):
                    data = key.data
                    if data is None:
                        self._drain_wakeups()
                    elif data == "stop":
                        self.selector.unregister(self._stop_fd)
                        self._stop_fd = None
                        self.begin_graceful_stop()
                    elif isinstance(data, socket.socket):
                        self._accept(data, settings)
                    else:
                        self._readable(data)
                now = time.monotonic()
                self._expire(now)
                if self.threads:
                    self._set_accepting(not self.stopping and not self._above_limit())
                if now >= self._next_counts:
                    self._publish_counts(now)
        finally:
            self._shutdown_pool()

    def begin_graceful_stop(self) -> None:
        """Stop accepting, close idle keep-alive connections, let busy ones finish."""
        if self.stopping:
            return
        self.stopping = True
        self._set_accepting(False)
        for _, stamp, parked in list(self._queues[KEEP_ALIVE]):
            if parked.stamp == stamp and parked.kind == KEEP_ALIVE:
                self._close(parked)

    def _above_limit(self) -> bool:
        """AsyncRequestWorkerFactor (reference 1.4): stop accepting while over the limit."""
        with self._idle_lock:
            idle = self._idle_threads
        if idle == 0:
            return True
        connections = len(self._parked) + self._in_threads - self._lingering
        disabled = 0 if self.accepting else 1
        return connections >= self.threads + (idle - disabled) * self.factor

    def _publish_counts(self, now: float) -> None:
        self._next_counts = now + 1.0
        record = self.process_record
        if record is not None:
            record.not_accepting = 0 if self.accepting else 1
            record.set_connection_counts(
                len(self._parked) + self._in_threads, 0, self._keep_alive, self._lingering
            )

    def _busy(self) -> int:
        with self._idle_lock:
            return self.threads - self._idle_threads

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting or not self.listeners:
            return
        self.accepting = on
        for sock in self.listeners:
            if on:
                self.selector.register(sock, selectors.EVENT_READ, sock)
            else:
                self.selector.unregister(sock)

    # -- loop steps ------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, settings) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, peer, self.ctx)
            parked = _Parked(conn)
            self._parked[sock.fileno()] = parked
            self.selector.register(sock, selectors.EVENT_READ, parked)
            first = settings.header_read_timeout.timeout or settings.timeout
            self._park(parked, HEAD, first)
            self.accepted += 1
            if self.max_connections and self.accepted >= self.max_connections:
                self.begin_graceful_stop()
                return

    def _readable(self, parked: _Parked) -> None:
        conn = parked.conn
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if parked.kind == LINGER:
            if not data:
                self._close(parked)
            return
        if not data:
            self._close(parked)
            return
        conn.protocol.feed(data)
        if conn.protocol.buffered():
            self._dispatch(parked)
        else:
            self._park(parked, HEAD, self.ctx.settings.timeout)

    def _dispatch(self, parked: _Parked) -> None:
        self._unpark(parked)
        conn = parked.conn
        conn.sock.setblocking(True)
        if self.threads == 0:
            self._serve(conn)
            return
        with self._idle_lock:
            self._idle_threads -= 1
        self._in_threads += 1
        self._work.put(conn)

    def _serve(self, conn: Connection) -> None:
        try:
            keep = conn.serve_buffered()
        except OSError:
            keep = False
        self._resume(conn, keep)

    def _resume(self, conn: Connection, keep: bool) -> None:
        if not keep or self.stopping:
            self._linger(conn)
            return
        conn.sock.setblocking(False)
        parked = _Parked(conn)
        fd = conn.sock.fileno()
        self._parked[fd] = parked
        self.selector.register(conn.sock, selectors.EVENT_READ, parked)
        if conn.protocol.buffered():
            self._readable_buffered(parked)
        else:
            self._park(parked, KEEP_ALIVE, self.ctx.settings.keep_alive_timeout)

    def _linger(self, conn: Connection) -> None:
        """Lingering close in the loop: stop sending, drain the client for up to 2 s."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            conn.sock.close()
            return
        parked = _Parked(conn)
        self._parked[conn.sock.fileno()] = parked
        self.selector.register(conn.sock, selectors.EVENT_READ, parked)
        self._park(parked, LINGER, LINGER_SECONDS)

    def _readable_buffered(self, parked: _Parked) -> None:
        """A pipelined request is already buffered: dispatch it without waiting for the socket."""
        if parked.conn.protocol.buffered():
            self._dispatch(parked)
        else:
            self._park(parked, HEAD, self.ctx.settings.timeout)

    def _drain_wakeups(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        returned = self._returned
        while not returned.empty():
            conn, keep = returned.get()
            self._in_threads -= 1
            self._resume(conn, keep)

    # -- timeouts ------------------------------------------------------------------------------

    def _park(self, parked: _Parked, kind: int, seconds: float) -> None:
        self._count(parked.kind, -1 if parked.stamp and parked.kind != HEAD else 0)
        parked.kind = kind
        parked.stamp += 1
        parked.deadline = time.monotonic() + seconds
        self._count(kind, 1)
        self._queues[kind].append((parked.deadline, parked.stamp, parked))

    def _count(self, kind: int, delta: int) -> None:
        if kind == KEEP_ALIVE:
            self._keep_alive += delta
        elif kind == LINGER:
            self._lingering += delta

    def _unpark(self, parked: _Parked) -> None:
        self._count(parked.kind, -1)
        parked.kind = HEAD
        parked.stamp += 1
        sock = parked.conn.sock
        self._parked.pop(sock.fileno(), None)
        self.selector.unregister(sock)

    def _next_timeout(self) -> float:
        heads = [q[0][0] for q in self._queues if q]
        if not heads:
            return 1.0
        return max(0.0, min(min(heads) - time.monotonic(), 1.0))

    def _expire(self, now: float) -> None:
        workers_busy = self.threads and self._idle_threads == 0
        for kind, queue in enumerate(self._queues):
            while queue and queue[0][0] <= now:
                _, stamp, parked = queue.popleft()
                if parked.stamp != stamp or parked.conn.sock.fileno() not in self._parked:
                    continue
                if kind == HEAD:
                    self._unpark(parked)
                    parked.conn.sock.setblocking(True)
                    parked.conn._header_timeout()
                    self._linger(parked.conn)
                else:
                    self._close(parked)
        if workers_busy and self._keep_alive:
            # Apache's "kill'em all": with every worker busy, idle keep-alive connections go.
            for _, stamp, parked in list(self._queues[KEEP_ALIVE]):
                if parked.stamp == stamp and parked.kind == KEEP_ALIVE:
                    self._close(parked)

    def _close(self, parked: _Parked) -> None:
        self._unpark(parked)
        try:
            parked.conn.sock.close()
        except OSError:
            pass

    # -- worker threads ---------------------------------------------------------------------

    def _worker_main(self, index: int) -> None:
        record = self.worker_record(index) if self.worker_record else None
        work = self._work
        while True:
            conn = work.get()
            if conn is None:
                return
            conn.worker = record
            try:
                keep = conn.serve_buffered()
            except OSError:
                keep = False
            conn.worker = None
            if record is not None:
                record.set_state(READY)  # back to `_`: the pool counts this thread idle again
            with self._idle_lock:
                self._idle_threads += 1
            self._returned.put((conn, keep))
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass

    def _shutdown_pool(self) -> None:
        for _ in self._pool:
            self._work.put(None)
        for thread in self._pool:
            thread.join(timeout=5)


def serve_event(spec, stop) -> None:
    """The event child: the loop in the main thread, ThreadsPerChild workers beside it."""
    from mpmd.mpm.child import load_context

    ctx = load_context(spec, stop, multithread=True)
    for sock in spec.listeners:
        sock.setblocking(False)
    loop = EventLoop(
        ctx,
        spec.listeners,
        threads=spec.config.mpm.threads_per_child,
        worker_record=lambda index: _ready_record(spec, index),
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
