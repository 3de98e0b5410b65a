"""ProxyPass in the event MPM's loop: a proxied request holds no thread while its back end works.

The loop offers each complete request head to LoopProxy.take() before it would hand it to a
thread. When the router says the request goes straight to a ProxyPass route (Router.proxied:
no <Location> handler or Require applies), the whole exchange runs in the loop
(event_proxy_request.py): choose the member (the route's runtime), connect without waiting,
write the re-serialised head and the body (what the loop buffered, then the rest as the client
sends it, read only while the back end takes what it has), parse the response (backend.py,
the sans-I/O code handler.py uses too) and stream it through an Exchange whose send is the
connection's non-blocking queue(): the back end is not read while more than
CLIENT_OUT_LIMIT bytes wait for the client. Then the connection goes back to the loop (keep-alive, a pipelined
head, or a close) as after a thread; after a 101 to `Upgrade: websocket`, a tunnel
(event_proxy_tunnel.py). Anything the router must run itself goes to a thread.

Owns what is the child's: the requests in flight, the back-end pools (loop_pool.py), the map
from back-end fds to their handlers, and the deadlines (one per request, keyed by its client
connection, in the loop's queue map under IN_PROXY). Loop-only: no thread touches any of it.
"""

from __future__ import annotations

import select
from collections import deque
from typing import Any

from mpmd.config.model import ProxyRoute, VirtualHost
from mpmd.handlers.proxy.balancer import settle_all
from mpmd.handlers.proxy.handler import ProxyHandler, Runtime
from mpmd.http.request import Request
from mpmd.http.timeouts import ReadDeadline
from mpmd.http.tls import sni_refusal
from mpmd.mpm.event_connection import IN_PROXY, EventConnection
from mpmd.mpm.event_proxy_request import Proxied
from mpmd.mpm.loop_pool import LoopPool, resolve_members
from mpmd.mpm.timeout_queue import DeadlineQueue


class LoopProxy:
    """The child's in-loop proxy: the requests in flight, the back-end pools, their fds."""

    def __init__(self, epoll: select.epoll, handler: ProxyHandler, settings) -> None:
        self.epoll = epoll
        self.handler = handler
        self.router = None  # set by for_loop
        self.record: RoundTally | None = None  # counts the loop's requests (for_loop)
        self.settings = settings
        self.client_timeout = settings.timeout
        self.fds: dict[int, Any] = {}  # back-end fd -> its handler(mask, now)
        self.deadlines = DeadlineQueue()  # client connection -> its request's next deadline
        self.done: deque[tuple[EventConnection, bool]] = deque()  # for the loop's _take_back
        self._writes: deque[Proxied] = deque()  # back-end writes put off to flush_writes
        self._corked: list[EventConnection] = []  # clients whose queued bytes wait for it
        self._settles: list[tuple[Runtime, Any, int, int]] = []  # Runtime.finished's, put off
        self._choosing: list[Proxied] = []  # new requests whose member the round's end chooses
        self._active: dict[EventConnection, Proxied] = {}
        self._pools: dict[str, LoopPool] = {}
        self._runtimes: dict[int, tuple[ProxyRoute, Runtime]] = {}
        self._addresses = resolve_members(handler.config)  # before the loop serves

    @classmethod
    def for_loop(cls, loop) -> LoopProxy | None:
        """The loop's proxy when the router has a ProxyPass handler, else None."""
        handler = loop.ctx.router.proxy
        if not isinstance(handler, ProxyHandler):
            return None
        proxy = cls(loop.epoll, handler, loop.ctx.settings)
        proxy.router = loop.ctx.router
        if loop.loop_record is not None:
            proxy.record = RoundTally(loop.loop_record)
        return proxy

    # -- what the loop calls ----------------------------------------------------------------

    def take(self, conn: EventConnection, request: Request, reader: ReadDeadline | None) -> bool:
        """Serve `request` here if it goes straight to a ProxyPass route; else False (the loop
        hands it to a thread). `reader`: the body's RequestReadTimeout stage, if it began."""
        body = request.body
        if body.error is not None:
            return False
        session = conn.session
        vhost = self.router.select_vhost(request.header("host"), session.info.server_port)
        found = self.router.proxied(vhost, request.path)
        if found is None:
            return False
        tls = session.info.tls
        if tls is not None and sni_refusal(tls, request.header("host"), vhost, ""):
            return False  # a thread's session answers it (mod_ssl's Host-versus-SNI rules)
        if session.remoteip:  # a thread's session would do it for a request it takes
            session.remote_client(request, vhost)
        conn.kind = IN_PROXY
        proxied = Proxied(self, conn, request, vhost, *found, body.read(body.buffered), reader)
        self._active[conn] = proxied
        self._choosing.append(proxied)
        return True

    def on_client(self, conn: EventConnection, now: float) -> None:
        """The client of a paused response can take more."""
        proxied = self._active.get(conn)
        if proxied is not None:
            proxied.on_client(now)

    def expire(self, now: float) -> None:
        for conn in self.deadlines.expire(now):
            proxied = self._active.get(conn)
            if proxied is not None:
                proxied.on_timeout(now)

    def queue_client(self, conn: EventConnection):
        """The send of a proxied exchange: bytes for the client wait in its queue for
        flush_writes, at the end of the loop's round."""
        corked = self._corked

        def send(data: bytes) -> None:
            if conn.out is None:
                conn.out = deque()
                corked.append(conn)
            conn.out.append(data)
            conn.out_bytes += len(data)

        return send

    def has_writes(self) -> bool:
        return bool(self._writes or self._corked or self._choosing)

    def write_later(self, proxied: Proxied) -> None:
        self._writes.append(proxied)

    def settle_later(self, runtime: Runtime, choice: Any, sent: int, received: int) -> None:
        self._settles.append((runtime, choice, sent, received))

    def flush_writes(self, now: float) -> None:
        """The round's end. One locked section of the shared state for the whole round: the
        members' counters of the requests it finished, then the members of the new requests
        it read (each choice sees the others'). Then those requests connect, the round's
        finished requests are counted in the scoreboard (one store: RoundTally), and the
        round's writes go out back to back: a peer woken by the first finds the others
        waiting, instead of one cross-CPU wake-up per write."""
        settles, choosing = self._settles, self._choosing
        if settles or choosing:
            self._settles, self._choosing = [], []
            runtime = settles[0][0] if settles else choosing[0].runtime
            with runtime.state.lock():  # (the child's runtimes share its one state)
                if settles:
                    settle_all(settles)
                choices = [proxied.choose() for proxied in choosing]
            for proxied, choice in zip(choosing, choices, strict=True):
                proxied.try_member(choice, now)
        writes = self._writes
        while writes:
            writes.popleft().write_now(now)
        if self.record is not None and self.record.ended:
            self.record.store()  # (before the clients get the responses it counts)
        corked = self._corked
        if corked:
            self._corked = []
            for conn in corked:
                try:
                    conn.flush()
                except OSError:
                    pass  # the next flush (write completion, or the paused relay) ends it

    def take_done(self) -> list[tuple[EventConnection, bool]]:
        done = list(self.done)
        self.done.clear()
        return done

    def close(self) -> None:
        """The child ends: close the idle back-end connections."""
        for pool in self._pools.values():
            pool.close()
        if self.record is not None and self.record.ended:
            self.record.store()

    # -- for Proxied ---------------------------------------------------------------------------

    def pool(self, member, vhost: VirtualHost) -> LoopPool:
        pool = self._pools.get(member.url)
        if pool is None:
            timeout = vhost.proxy.timeout or vhost.http.timeout
            address = self._addresses[(member.host, member.port)]
            pool = LoopPool(member, address, self.epoll, self.fds, timeout)
            self._pools[member.url] = pool
        return pool

    def runtime(self, route: ProxyRoute) -> Runtime:
        """The route's runtime, by the route's identity (hashing a route costs more)."""
        found = self._runtimes.get(id(route))
        if found is None:  # (the route is kept with it: its id stays its own)
            found = self._runtimes[id(route)] = (route, self.handler.runtime(route))
        return found[1]

    def finish(self, proxied: Proxied, keep: bool) -> None:
        conn = proxied.conn
        del self._active[conn]
        self.deadlines.remove(conn)
        self.done.append((conn, keep))


class RoundTally:
    """The loop's scoreboard record as Session.log_exchange uses it (request_end), kept for
    the round: LoopProxy.flush_writes stores the round's requests at once (requests_end)."""

    __slots__ = ("ended", "now_us", "record")

    def __init__(self, record) -> None:
        self.record = record
        self.ended: list[tuple[int, int]] = []  # (bytes sent, duration in µs) of each request
        self.now_us = 0

    def request_end(self, bytes_sent: int, duration_us: int, now_us: int) -> None:
        self.ended.append((bytes_sent, duration_us))
        self.now_us = now_us

    def store(self) -> None:
        ended, self.ended = self.ended, []
        self.record.requests_end(ended, self.now_us)
