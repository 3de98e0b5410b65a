"""The blocking proxy handler: one proxied request, from choosing a member to the last byte.

Runs where a thread owns the request (prefork, worker, -X, and for now the event MPM's
threads). It drives backend.py's sans-I/O pieces over pool.py's sockets: choose a member
(the route's runtime: a balancer, or the single worker of a ProxyPass to a URL), send the
re-serialised head, stream the client's body in bounded reads, read the response head, then
stream the body to the client through the Exchange chunk by chunk; nothing is held whole.

Failover follows Apache (reference 7.5) and goes one step beyond it: a connect error, or a
status/timeout the balancer counts as a failure, moves the request to the next member while
`max_attempts` allows and nothing went to the client; and an idempotent request whose back
end reset, closed or timed out before any response byte is retried on another member too
(Apache answers 502 there, AH01102). A failure on a reused pooled connection before any
response byte is retried once on a fresh connection to the same member: the keep-alive race
the client must not see.

An upgrade request (Request.upgrade) whose `Upgrade` the member accepts (`upgrade=`, ws://)
asks the back end to switch too; its 101 hands both sockets to tunnel.py until the tunnel
ends, and the request is logged then (101, %B the bytes the client got through it). Failover
happens only before the 101. The back-end connection of a tunnel is never pooled again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from mpmd.config.model import BackendMember, ProxyRoute, ServerConfig
from mpmd.handlers.proxy.backend import (
    END,
    LAST_CHUNK,
    BackendError,
    Event,
    Interim,
    ResponseHead,
    ResponseParser,
    backend_target,
    chunk,
    read_failed,
    request_head,
    send_failed,
    via_value,
)
from mpmd.handlers.proxy.balancer import NoWorker
from mpmd.handlers.proxy.client_head import relay_head, switching_head, upgrade_refused
from mpmd.handlers.proxy.pool import BackendConnection, ConnectionPool, PoolTimeout
from mpmd.handlers.proxy.tunnel import relay
from mpmd.http.exchange import Exchange

# nginx's proxy_next_upstream rule for a retry on another member (issue 11, item 4)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
READ_SIZE = 65536  # one read from the client or the back end: the memory a request holds


class Runtime(Protocol):
    """A route's members at run time (balancer.py's BalancerRuntime or WorkerRuntime).

    `choose` counts the member it returns (busy, elected), or raises balancer.NoWorker (an
    exception with `status` and `message`, the log line with its AH id) when no member is
    usable; it never blocks."""

    max_attempts: int
    timeout: float

    def choose(self, path_and_query: str, cookie: str | None, now: float) -> Any: ...
    def finished(self, choice: Any, sent: int, received: int) -> None: ...
    def failed(self, choice: Any, now: float) -> None: ...
    def after_response(self, choice: Any, status: int, timed_out: bool) -> bool: ...


RuntimeFactory = Callable[[ProxyRoute], Runtime]


class _Failed(Exception):
    """One attempt failed before the client got anything: `status` is the answer if no
    other member takes the request; `failover` says another member may."""

    def __init__(self, status: int, failover: bool) -> None:
        super().__init__(status)
        self.status = status
        self.failover = failover


class _Attempt:
    """One member's try: the byte counts finished() gets, and whether the request can still
    be replayed (no byte of the client's body was consumed)."""

    __slots__ = ("body_read", "done", "received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.body_read = False
        self.done = False

    def finish(self, runtime: Runtime, choice: Any) -> None:
        """The member's part is over: busy -= 1 and the bytes, once."""
        if not self.done:
            self.done = True
            runtime.finished(choice, self.sent, self.received)


class ProxyHandler:
    """Answers requests a ProxyPass route took; one per child (the pools are the child's)."""

    def __init__(
        self,
        config: ServerConfig,
        error_log: Any,
        runtime_for: RuntimeFactory,
    ) -> None:
        self.config = config
        self.error_log = error_log
        self.runtime_for = runtime_for
        self.balancers = {b.name: b for b in config.balancers}
        self.threads = config.mpm.threads_per_child
        self._runtimes: dict[ProxyRoute, Runtime] = {}
        self._pools: dict[str, ConnectionPool] = {}
        self._lock = threading.Lock()

    # -- the request ----------------------------------------------------------------------------

    def __call__(self, exchange: Exchange, route: ProxyRoute, rest: str) -> None:
        """Proxy one request that `route` took; `rest` as match_route returned it."""
        exchange.notes["handler"] = "proxy-server"
        request = exchange.request
        runtime = self.runtime(route)
        tries = 0
        deadline = time.monotonic() + runtime.timeout
        while True:
            try:
                choice = runtime.choose(request.target, request.header("cookie"), time.time())
            except NoWorker as error:
                left = deadline - time.monotonic()
                if left > 0:  # the balancer's timeout: poll for a usable member, as Apache
                    time.sleep(min(left, 0.01))
                    continue
                self.log("error", error.message, exchange)
                exchange.send_error(error.status)
                return
            for name, value in choice.env.items():
                exchange.notes["env:" + name] = value
            tries += 1
            last = tries > runtime.max_attempts
            attempt = _Attempt()
            try:
                self._attempt(exchange, runtime, choice, route, rest, attempt, last)
            except _Failed as failure:
                if failure.failover and not last and not attempt.body_read:
                    continue
                exchange.send_error(failure.status)
            finally:
                attempt.finish(runtime, choice)
            return

    def _attempt(
        self,
        exchange: Exchange,
        runtime: Runtime,
        choice: Any,
        route: ProxyRoute,
        rest: str,
        attempt: _Attempt,
        last: bool,
    ) -> None:
        """One member's try. Returns once the client has its response; raises _Failed when
        it must get an error page or may go to another member."""
        member: BackendMember = choice.member
        request = exchange.request
        vhost = exchange.vhost
        target = backend_target(route, rest, member, request.query)
        upgrade = upgrade_protocol(exchange, member)
        head, framing, expect = request_head(
            request,
            target,
            member,
            vhost.proxy,
            client_ip=exchange.conn.client_addr,
            server_name=vhost.server_name,
            server_port=exchange.conn.server_port,
            upgrade=upgrade is not None,
        )
        pool = self._pool(member, exchange)
        conn, parser, response, early = self._request(
            exchange, runtime, choice, pool, head, framing, expect, attempt, target
        )
        if response.status == 101:  # the stream is not HTTP any more: a tunnel, or a 502
            refused = upgrade_refused(response, upgrade)
            if refused is not None or upgrade is None:  # (a None upgrade is refused too)
                pool.release(conn, reusable=False)
                self.log_backend(exchange, member, refused, target)
                raise _Failed(502, failover=False)
            try:
                self._tunnel(exchange, conn, pool, parser, response, upgrade, attempt)
            finally:
                pool.release(conn, reusable=False)
            return
        if runtime.after_response(choice, response.status, False) and not last:
            pool.release(conn, reusable=False)  # failonstatus: the next member answers
            raise _Failed(response.status, failover=True)
        if vhost.proxy.error_override and response.status >= 400:
            pool.release(conn, reusable=False)
            exchange.send_error(response.status)
            return
        self._relay(exchange, runtime, choice, conn, pool, parser, response, early, attempt, target)

    def _request(
        self,
        exchange: Exchange,
        runtime: Runtime,
        choice: Any,
        pool: ConnectionPool,
        head: bytes,
        framing: str,
        expect: bool,
        attempt: _Attempt,
        target: str,
    ) -> tuple[BackendConnection, ResponseParser, ResponseHead, list[Event]]:
        """Connect, send the request, read the final response head. A reused connection
        that fails before any response byte (and before the body was read) is replaced once."""
        member = choice.member
        http = exchange.vhost.http
        idempotent = exchange.request.method in IDEMPOTENT
        fresh = False
        while True:
            conn = self._connect(exchange, runtime, choice, pool, fresh)
            reused = conn.reused
            parser = ResponseParser(
                exchange.request.method,
                field_size=http.limit_request_field_size,
                max_fields=http.limit_request_fields or 100,
            )
            try:
                response, early = self._send_request(
                    exchange, conn, parser, head, framing, expect, attempt
                )
                return conn, parser, response, early
            except BackendError as error:
                pool.release(conn, reusable=False)
                if parser.started:
                    self.log_backend(exchange, member, error, target)
                    raise _Failed(502, failover=False) from None
                if reused and not fresh and not attempt.body_read and not error.timed_out:
                    fresh = True  # the back end closed it as we reused it: once more, new
                    continue
                self.log_backend(exchange, member, error, target)
                if error.timed_out:
                    runtime.after_response(choice, 504, True)
                    raise _Failed(504, failover=idempotent) from None
                runtime.failed(choice, time.time())
                raise _Failed(502, failover=idempotent) from None
            except BaseException:
                pool.release(conn, reusable=False)
                raise

    def _connect(
        self,
        exchange: Exchange,
        runtime: Runtime,
        choice: Any,
        pool: ConnectionPool,
        fresh: bool,
    ) -> BackendConnection:
        member = choice.member
        try:
            return pool.acquire(fresh=fresh)
        except PoolTimeout:
            self.log(
                "error",
                f"HTTP: failed to acquire connection for ({member.host}:{member.port})",
                exchange,
                ah="AH00941",
            )
            raise _Failed(503, failover=False) from None
        except OSError as error:
            self.log(
                "error",
                f"HTTP: attempt to connect to {member.host}:{member.port} "
                f"({member.host}:{member.port}) failed: {error.strerror or error}",
                exchange,
                ah="AH00957",
            )
            self.log(
                "error",
                f"HTTP: failed to make connection to backend: {member.host}",
                exchange,
                ah="AH01114",
            )
            runtime.failed(choice, time.time())
            raise _Failed(503, failover=True) from None

    def _send_request(
        self,
        exchange: Exchange,
        conn: BackendConnection,
        parser: ResponseParser,
        head: bytes,
        framing: str,
        expect: bool,
        attempt: _Attempt,
    ) -> tuple[ResponseHead, list[Event]]:
        """Send the head, then the body (after the back end's 100 when the client expects
        one); return the final head and the events that came with it."""
        _send(conn, head, attempt)
        events: list[Event] = []
        if expect:
            while not any(isinstance(e, ResponseHead) for e in events):
                got = _read(conn, parser, attempt)
                events.extend(e for e in got if not isinstance(e, Interim))
                if any(isinstance(e, Interim) and e.status == 100 for e in got):
                    break
        if any(isinstance(e, ResponseHead) for e in events):
            if framing != "none":
                exchange.keep_alive = False  # the body stays unsent: this connection ends
        elif framing != "none":
            self._send_body(exchange, conn, framing, attempt)
        while True:
            for index, event in enumerate(events):
                if isinstance(event, ResponseHead):
                    return event, events[index + 1 :]
            events.extend(e for e in _read(conn, parser, attempt) if not isinstance(e, Interim))

    @staticmethod
    def _send_body(
        exchange: Exchange, conn: BackendConnection, framing: str, attempt: _Attempt
    ) -> None:
        """The client's body in bounded reads, re-framed (HttpError from the client
        propagates: the session answers it)."""
        body = exchange.request.body
        while True:
            data = body.read(READ_SIZE)
            if not data:
                break
            attempt.body_read = True
            _send(conn, chunk(data) if framing == "chunked" else data, attempt)
        if framing == "chunked":
            _send(conn, LAST_CHUNK, attempt)

    def _relay(
        self,
        exchange: Exchange,
        runtime: Runtime,
        choice: Any,
        conn: BackendConnection,
        pool: ConnectionPool,
        parser: ResponseParser,
        response: ResponseHead,
        events: list[Event],
        attempt: _Attempt,
        target: str,
    ) -> None:
        """Start the client's response and stream the body as it arrives. Once the back
        end's response is complete, the member's counters (busy, bytes) are settled before
        the client gets the last bytes: the client's next request, in any child, is chosen
        from numbers that include this one, as Apache counts bytes as they pass."""
        member: BackendMember = choice.member
        start_relayed(exchange, response, self.balancers)
        try:
            while END not in events:
                for event in events:
                    exchange.write(event)  # type: ignore[arg-type]
                events = _read(conn, parser, attempt)
        except BackendError as error:
            pool.release(conn, reusable=False)
            self.log_backend(exchange, member, error, target)
            if exchange.head_sent:
                exchange.aborted = True  # no made-up end: the client must see the cut
                exchange.keep_alive = False
            else:
                exchange.send_error(504 if error.timed_out else 502)
            return
        except BaseException:
            pool.release(conn, reusable=False)
            raise
        pool.release(conn, reusable=parser.reusable)
        attempt.finish(runtime, choice)
        for event in events[: events.index(END)]:
            exchange.write(event)  # type: ignore[arg-type]

    def _tunnel(
        self,
        exchange: Exchange,
        conn: BackendConnection,
        pool: ConnectionPool,
        parser: ResponseParser,
        response: ResponseHead,
        protocol: str,
        attempt: _Attempt,
    ) -> None:
        """Relay the 101 (backend.switching_head), then run the tunnel until it ends; the
        client connection closes."""
        status_line, headers, head = switching_head(
            response, protocol, exchange.vhost.proxy, self.balancers,
            base=client_base(exchange), via=via_for(exchange),
        )  # fmt: skip
        assert exchange.conn.take_over is not None  # upgrade_protocol() checked it
        client, held = exchange.conn.take_over()
        exchange.status = 101
        exchange.status_line = status_line
        exchange.response_headers = headers
        exchange.head_sent = True
        exchange.head_bytes = len(head)
        exchange.keep_alive = False
        self.log("debug", f"HTTP: tunneling protocol {protocol}", exchange, ah="AH10239")
        idle = max(exchange.vhost.http.timeout, pool.timeout)
        result = relay(
            client, conn.sock, idle=idle, to_client=head + parser.tunnel_data, to_backend=held
        )
        attempt.sent += result.to_backend
        attempt.received += result.from_backend
        exchange.bytes_out = max(0, result.to_client - len(head))
        if result.to_client < len(head):
            exchange.aborted = True

    # -- per child ------------------------------------------------------------------------------

    def runtime(self, route: ProxyRoute) -> Runtime:
        runtime = self._runtimes.get(route)
        if runtime is None:
            with self._lock:
                runtime = self._runtimes.get(route)
                if runtime is None:
                    runtime = self._runtimes[route] = self.runtime_for(route)
        return runtime

    def _pool(self, member: BackendMember, exchange: Exchange) -> ConnectionPool:
        pool = self._pools.get(member.url)
        if pool is None:
            with self._lock:
                pool = self._pools.get(member.url)
                if pool is None:
                    vhost = exchange.vhost
                    timeout = vhost.proxy.timeout or vhost.http.timeout
                    pool = self._pools[member.url] = ConnectionPool(
                        member, threads=self.threads, timeout=timeout
                    )
        return pool

    def close(self) -> None:
        """Close the idle back-end connections (the child is stopping)."""
        for pool in list(self._pools.values()):
            pool.close()

    # -- logging --------------------------------------------------------------------------------

    def log(self, level: str, message: str, exchange: Exchange, ah: str | None = None) -> None:
        conn = exchange.conn
        self.error_log.log(
            level, message, module="proxy", ah=ah, client=f"{conn.client_addr}:{conn.client_port}"
        )

    def log_backend(
        self, exchange: Exchange, member: BackendMember, error: BackendError, target: str
    ) -> None:
        """Apache's line for the failure, naming the member (host:port, or its URL)."""
        if error.ah == "AH01102":
            text = f"{error.message} {member.host}:{member.port}"
        else:
            text = f"{error.message} returned by {member.url}{target}"
        self.log("warn" if error.ah == "AH10124" else "error", text, exchange, ah=error.ah)


def upgrade_protocol(exchange: Exchange, member: BackendMember) -> str | None:
    """The client's `Upgrade` when this request is tunnelled to `member`, else None (the
    request goes as plain HTTP, Upgrade stripped). Apache's ap_proxy_worker_can_upgrade: the
    member's `upgrade=` is `*` or names the protocol (case-insensitive, a comma list); a ws://
    member's default is WebSocket (config sets it). Only a request the protocol marked as an
    upgrade (Connection: upgrade, HTTP/1.1, no body) on a connection that can be handed over."""
    request = exchange.request
    if not request.upgrade or exchange.conn.take_over is None or not member.params.upgrade:
        return None
    wanted = request.header("upgrade")
    if not wanted:
        return None
    accepted = member.params.upgrade
    if accepted == "*":
        return wanted
    tokens = {t.strip().lower() for t in accepted.split(",")}
    return wanted if wanted.strip().lower() in tokens else None


def start_relayed(exchange: Exchange, head: ResponseHead, balancers) -> None:
    """Start the client's response with the back end's head as relay_head makes it (the
    reverse mapping's client base is worked out only where ProxyPassReverse applies)."""
    settings = exchange.vhost.proxy
    base = client_base(exchange) if settings.reverse else ""
    relayed = relay_head(head, settings, balancers, base=base, via=via_for(exchange))
    exchange.start_encoded(
        head.status_line, relayed.lines, relayed.kept, relayed.content_length, False,
        (relayed.date, relayed.server),
    )  # fmt: skip


def client_base(exchange: Exchange) -> str:
    """The client's scheme://host, for ProxyPassReverse (Apache's ap_construct_url: https on
    a TLS connection, the Host the client asked for)."""
    scheme = "https" if exchange.conn.tls is not None else "http"
    return f"{scheme}://{exchange.request.header('host') or exchange.vhost.server_name}"


def via_for(exchange: Exchange) -> str | None:
    """The Via value ProxyVia On/Full adds to the response, else None."""
    settings = exchange.vhost.proxy
    if settings.via not in ("On", "Full"):
        return None
    return via_value(
        exchange.request.version,
        exchange.vhost.server_name,
        exchange.conn.server_port,
        settings.via == "Full",
    )


def _send(conn: BackendConnection, data: bytes, attempt: _Attempt) -> None:
    try:
        conn.sock.sendall(data)
    except OSError as error:
        raise send_failed(_peer(conn), error) from None
    attempt.sent += len(data)


def _read(conn: BackendConnection, parser: ResponseParser, attempt: _Attempt) -> list[Event]:
    try:
        data = conn.sock.recv(READ_SIZE)
    except OSError as error:
        raise read_failed(parser.started, error) from None
    if not data:
        return parser.eof()
    attempt.received += len(data)
    return parser.feed(data)


def _peer(conn: BackendConnection) -> str:
    try:
        host, port = conn.sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "(unconnected)"
