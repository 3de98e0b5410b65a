"""The event loop's non-blocking connections to one back end, pooled per member per child.

pool.py's counterpart for the requests the loop proxies (event_proxy.py): the same member
parameters (`max`, `smax`, `min`, `ttl`, `acquire`, `disablereuse`, `keepalive`, `timeout`,
`connectiontimeout`), but nothing here waits. A connect is started and finishes on the loop's
EPOLLOUT; a request that finds `max` connections busy is queued and woken when one is
released or dropped. A connection stays in the epoll set, level-triggered, from its connect
to its close, and changes its mask only when what it waits for changes (BackendSocket.watch):
a request that reuses one arms nothing. Idle, it stays watched for EPOLLIN, so a back end
that closes it (or sends stray bytes) is noticed and the connection dropped before anyone
takes it. Without `max` no bound is set: a connection per request in flight, as no thread bounds
them (pool.py's default `max` is ThreadsPerChild), and every idle one is kept unless `smax`
says otherwise. Every member's address is resolved when the child starts, before the loop
serves (resolve_members): no name lookup ever runs in the loop.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import socket
import time
from collections import deque
from typing import Any, Protocol

from mpmd.config.model import BackendMember, ServerConfig
from mpmd.handlers.proxy.backend import ResponseParser

Address = tuple[int, Any]  # (address family, socket address) to connect to


def resolve_members(config: ServerConfig) -> dict[tuple[str, int], Address | OSError]:
    """Each member's (host, port) resolved once, by a blocking lookup made before the loop
    serves; a name that does not resolve keeps its error, which every connect to it reports
    (AH00957), as a refused connect would."""
    members = [m for balancer in config.balancers for m in balancer.members]
    for vhost in (config.main, *config.vhosts):
        members.extend(route.member for route in vhost.proxy.routes if route.member is not None)
    resolved: dict[tuple[str, int], Address | OSError] = {}
    for member in members:
        key = (member.host, member.port)
        if key not in resolved:
            try:
                family, _, _, _, address = socket.getaddrinfo(
                    member.host, member.port, type=socket.SOCK_STREAM
                )[0]
                resolved[key] = (family, address)
            except OSError as error:
                resolved[key] = error
    return resolved


class Waiter(Protocol):
    def retry_connect(self, now: float) -> None: ...


class BackendSocket:
    """One non-blocking socket to a back end, registered in the loop's epoll set."""

    __slots__ = (
        "_readable", "connecting", "epoll", "fd", "idle_since", "mask", "on_idle", "parser",
        "peer", "sock", "uses",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, epoll: select.epoll, peer: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.epoll = epoll
        self.peer = peer
        self.connecting = True
        self.on_idle: Any = None  # the loop's handler(mask, now) while it waits in the pool
        self._readable = select.poll()  # alive()'s look: no exception when nothing arrived
        self._readable.register(self.fd, select.POLLIN)
        self.uses = 0  # requests already carried: a failure on a reused one may be a race
        self.idle_since = 0.0
        self.mask = 0  # the events it is registered for (level-triggered)
        self.parser: ResponseParser | None = None  # kept for the next response

    @property
    def reused(self) -> bool:
        return self.uses > 0

    def watch(self, mask: int) -> None:
        """Wait for `mask` (EPOLLIN, EPOLLOUT, both, or 0 for nothing) from now on."""
        if mask != self.mask:
            self.mask = mask
            self.epoll.modify(self.fd, mask)

    def response_parser(self, method: str, field_size: int, max_fields: int) -> ResponseParser:
        """The parser for the response to the request about to go out: this connection's
        last one, if it can take another response, else a new one kept for the next."""
        parser = self.parser
        if parser is None or not parser.recycle(method, field_size, max_fields):
            parser = self.parser = ResponseParser(
                method, field_size=field_size, max_fields=max_fields, kept=True
            )
        return parser

    def connected(self) -> OSError | None:
        """After the connect's EPOLLOUT: None, or why it failed."""
        self.connecting = False
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return OSError(code, os.strerror(code)) if code else None

    def alive(self) -> bool:
        """Idle and still open: no EOF and no stray bytes waiting (a poll, then a peek if
        anything is there; never waits). The idle watch notices a close at the loop's next
        poll; this also catches one that arrived since."""
        if not self._readable.poll(0):
            return True  # (the peek would find nothing: EAGAIN, raised and caught)
        try:
            return not self.sock.recv(1, socket.MSG_PEEK)  # b"": closed; bytes: out of step
        except BlockingIOError:
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()  # also leaves the epoll set
        if self.parser is not None:
            self.parser.close()


class LoopPool:
    """The connections to `member` of one event child; loop-only."""

    def __init__(
        self,
        member: BackendMember,
        address: Address | OSError,
        epoll: select.epoll,
        fds: dict[int, Any],
        timeout: float,
    ) -> None:
        params = member.params
        self.member = member
        self.max = params.max
        self.keep = params.smax if params.smax is not None else params.max
        self.min = params.min
        self.ttl = params.ttl
        self.acquire_timeout = params.acquire
        self.reuse = params.reuse
        self.keepalive = params.keepalive
        self.timeout, self.connect_timeout = params.timeouts(timeout)
        self._address = address  # from resolve_members
        self._peer = (
            f"{member.host}:{member.port}"
            if isinstance(address, OSError)
            else f"{address[1][0]}:{address[1][1]}"
        )
        self._epoll = epoll
        self._fds = fds  # the loop's back-end fd -> handler map (idle ones: _dropped)
        self._idle: list[BackendSocket] = []  # most recently released last
        self._open = 0
        self._waiters: deque[Waiter] = deque()

    def acquire(
        self, waiter: Waiter, *, fresh: bool = False, check: bool = False
    ) -> BackendSocket | None:
        """An idle live connection (unless `fresh`), a new one (still connecting), or None:
        `waiter` is queued until one is free. Raises OSError when the connect fails at once.
        `check`: look that an idle one is still open first (alive()), for a request whose
        body could not be sent again on a new connection if the reused one turns out closed;
        without a body, the caller retries on a new connection (Proxied._backend_error)."""
        if self.ttl is not None:
            self._expire(time.monotonic())
        idle = self._idle
        while idle and not fresh:
            backend = idle.pop()
            del self._fds[backend.fd]
            if not check or backend.alive():
                return backend
            self._close(backend)
        if self.max is not None and self._open >= self.max:
            if fresh and idle:
                self._close(idle.pop(0))  # make room for the new one
            else:
                self._waiters.append(waiter)
                return None
        return self._connect()

    def release(self, backend: BackendSocket, *, reusable: bool) -> None:
        """After a request: kept idle (and watched) if it may carry another, else closed."""
        backend.uses += 1
        keep = reusable and self.reuse and (self.keep is None or len(self._idle) < self.keep)
        if keep:
            backend.idle_since = time.monotonic()
            self._idle.append(backend)
            self._fds[backend.fd] = backend.on_idle
            backend.watch(select.EPOLLIN)
        else:
            self._close(backend)
        if self._waiters:
            self._wake(time.monotonic())

    def cancel(self, waiter: Waiter) -> None:
        """A queued request gave up (acquire timeout)."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def close(self) -> None:
        for backend in self._idle:
            self._fds.pop(backend.fd, None)
            backend.close()
        self._idle.clear()

    # -- internals ------------------------------------------------------------------------------

    def _connect(self) -> BackendSocket:
        if isinstance(self._address, OSError):
            raise self._address
        family, address = self._address
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            code = sock.connect_ex(address)
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code))
            self._epoll.register(sock.fileno(), 0)
        except BaseException:
            sock.close()
            raise
        self._open += 1
        backend = BackendSocket(sock, self._epoll, self._peer)
        backend.on_idle = functools.partial(self._dropped, backend)
        return backend

    def _dropped(self, backend: BackendSocket, mask: int, now: float) -> None:
        """An idle connection woke: the back end closed it (or sent what no one asked for)."""
        self._idle.remove(backend)
        del self._fds[backend.fd]
        self._close(backend)
        self._wake(now)

    def _close(self, backend: BackendSocket) -> None:
        self._open -= 1
        backend.close()

    def _wake(self, now: float) -> None:
        """A connection is free (or there is room for one): the first queued request tries."""
        if self._waiters and (self._idle or self.max is None or self._open < self.max):
            self._waiters.popleft().retry_connect(now)

    def _expire(self, now: float) -> None:
        """Close idle connections unused for `ttl`, oldest first, keeping at least `min`."""
        assert self.ttl is not None
        limit = now - self.ttl
        idle = self._idle
        while len(idle) > self.min and idle[0].idle_since < limit:
            backend = idle.pop(0)
            del self._fds[backend.fd]
            self._close(backend)
