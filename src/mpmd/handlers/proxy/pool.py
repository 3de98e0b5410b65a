"""Blocking keep-alive connections to one back end, pooled per member per child process.

Apache keeps an apr_reslist per worker per child; this is its blocking counterpart for
prefork, worker and -X (the event MPM's loop keeps its own non-blocking connections). It owns
the sockets to one member: how many may be open (`max`), how many idle ones are kept (without
`ttl` at most `smax`; with it, any unused for `ttl` is closed, keeping `min`), how long a
request waits for a free one (`acquire`), and whether one is reused at all (`disablereuse`).
A pooled connection the back end closed while it sat idle is found before it is handed out
(it polls readable: EOF or stray bytes), so a request never starts on it. Each process builds
its own pools after fork; a pool is never shared across processes.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable

from mpmd.config.model import BackendMember


class PoolTimeout(Exception):
    """No connection became free within `acquire` (Apache's AH00941, a 503)."""


class BackendConnection:
    """One socket to a back end, with what the pool needs to know about it."""

    __slots__ = ("idle_since", "sock", "uses")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.uses = 0  # requests already carried: a failure on a reused one may be a race
        self.idle_since = 0.0

    @property
    def reused(self) -> bool:
        return self.uses > 0

    def alive(self) -> bool:
        """Idle and still open: the back end sent neither EOF nor unexpected bytes."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)

    def close(self) -> None:
        self.sock.close()


class ConnectionPool:
    """The connections to `member` of one process. Thread-safe; `acquire` blocks."""

    def __init__(
        self,
        member: BackendMember,
        *,
        threads: int,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        params = member.params
        self.member = member
        self.max = params.max if params.max is not None else threads
        self.smax = min(params.smax if params.smax is not None else self.max, self.max)
        self.min = min(params.min, self.max)
        self.ttl = params.ttl
        self.acquire_timeout = params.acquire
        self.reuse = params.reuse
        self.keepalive = params.keepalive
        self.timeout, self.connect_timeout = params.timeouts(timeout)
        self._clock = clock
        self._lock = threading.Condition()
        self._idle: list[BackendConnection] = []  # most recently released last
        self._busy = 0

    # -- the request's side ---------------------------------------------------------------------

    def acquire(self, *, fresh: bool = False) -> BackendConnection:
        """A live connection: an idle one (unless `fresh`), else a new one once fewer than
        `max` are open. Raises PoolTimeout, or OSError when the connect fails."""
        deadline = None if self.acquire_timeout is None else self._clock() + self.acquire_timeout
        with self._lock:
            while True:
                self._expire()
                while self._idle and not fresh:
                    conn = self._idle.pop()
                    if conn.alive():
                        self._busy += 1
                        return conn
                    conn.close()
                if fresh and self._idle and self._busy + len(self._idle) >= self.max:
                    self._idle.pop(0).close()  # make room for the new one
                if self._busy + len(self._idle) < self.max:
                    self._busy += 1
                    break
                wait = None if deadline is None else deadline - self._clock()
                if wait is not None and wait <= 0:
                    raise PoolTimeout
                self._lock.wait(wait)
        try:
            return BackendConnection(self._connect())
        except BaseException:
            with self._lock:
                self._busy -= 1
                self._lock.notify()
            raise

    def release(self, conn: BackendConnection, *, reusable: bool) -> None:
        """Give `conn` back after a request; closed unless it may carry another one."""
        conn.uses += 1
        keep = reusable and self.reuse
        with self._lock:
            self._busy -= 1
            if keep and (self.ttl is not None or len(self._idle) < self.smax):
                conn.idle_since = self._clock()
                self._idle.append(conn)
            else:
                conn.close()
            self._lock.notify()

    def close(self) -> None:
        """Close every idle connection (the child is stopping)."""
        with self._lock:
            for conn in self._idle:
                conn.close()
            self._idle.clear()

    @property
    def idle(self) -> int:
        return len(self._idle)

    # -- internals ------------------------------------------------------------------------------

    def _expire(self) -> None:
        """Close idle connections unused for `ttl`, oldest first, keeping at least `min`."""
        if self.ttl is None:
            return
        limit = self._clock() - self.ttl
        while len(self._idle) > self.min and self._idle[0].idle_since < limit:
            self._idle.pop(0).close()

    def _connect(self) -> socket.socket:
        member = self.member
        sock = socket.create_connection((member.host, member.port), self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.settimeout(self.timeout)
        except OSError:
            sock.close()
            raise
        return sock
