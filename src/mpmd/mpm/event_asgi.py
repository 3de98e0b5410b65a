"""The event child's ASGI loop: an asyncio loop (uvloop when installed) in its own thread.

An ASGI application must run on an asyncio loop, and the event child's own loop is epoll
(event.py). So a child with an ASGIApp mount runs both: the epoll loop accepts, finishes TLS
handshakes and PROXY headers, reads a connection's first request head and, when the request
routes to an ASGI mount, hands the connection over (`take`, one wake-up of this loop per
connection, not per request). Here it stays, served by mpm/asgi_connection.py, until it must
close or carries a request for something else; it then goes back (`give_back`: a deque and
an eventfd the epoll loop polls). A connection held here holds no thread, so it does not
count against the child's connection limit (AsyncRequestWorkerFactor bounds what threads
serve); the status page counts it among the connections, a WebSocket also as upgraded.

Lifespan: `start()` runs each application's startup before the child accepts (a failure
ends the child with CHILD_FATAL, as a broken import), `close()` its shutdown once the epoll
loop has seen every connection finish.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mpmd.handlers.asgi.lifespan import Lifespan
from mpmd.handlers.asgi.websocket import WebSocketSettings
from mpmd.http.request import Request
from mpmd.mpm.asgi_connection import AsgiConnection
from mpmd.mpm.child import CHILD_FATAL

if TYPE_CHECKING:
    from mpmd.mpm.event import EventLoop
    from mpmd.mpm.event_connection import EventConnection

SWEEP_SECONDS = 1.0  # how often deadlines are checked (Apache's queues: about as coarse)
ROUTE_CACHE = 4096  # (Host, port, path) -> route decisions remembered, per child


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (the `asgi` extra), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class AsgiHost:
    """The ASGI loop of one event child; `take` and the counters are the epoll loop's side."""

    def __init__(self, owner: EventLoop, record: Any, records: Sequence[Any]) -> None:
        ctx = owner.ctx
        self.ctx = ctx
        self.router = ctx.router
        self.error_log = ctx.error_log
        self.settings = ctx.settings
        asgi = ctx.config.asgi
        self.ws_settings = WebSocketSettings(
            ping_interval=asgi.ping_interval,
            ping_timeout=asgi.ping_timeout,
            max_message_size=asgi.max_message_size,
            per_message_deflate=asgi.per_message_deflate,
            close_timeout=asgi.close_timeout,
        )
        self.record = record  # where a request is counted once `records` are all in use
        self._free_records = list(records)  # one per in-flight request: the status page's W
        self.loop = new_loop()
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.returned: deque[tuple[EventConnection, bool, Request | None, bool]] = deque()
        self.held = 0  # connections here (the epoll loop's count: it alone changes it)
        self.upgraded = 0  # WebSockets open (this loop's count)
        self.stopping = False
        self._connections: set[AsgiConnection] = set()
        self._watched: set[AsgiConnection] = set()
        self._routes: dict[tuple, tuple | None] = {}  # route()'s decisions (both threads)
        self._lifespans: dict[int, Lifespan] = {}
        apps = {id(m.app): m for m in ctx.router.asgi_mounts()}
        for key, mount in apps.items():
            self._lifespans[key] = Lifespan(mount.app, asgi.lifespan, self.error_log, mount.target)
        self._thread = threading.Thread(target=self._run, name="mpmd-asgi", daemon=True)

    @classmethod
    def for_loop(cls, owner: EventLoop, record: Any, records: Sequence[Any]) -> AsgiHost | None:
        """A host when some virtual host mounts an ASGI application, else None."""
        if not owner.ctx.asgi:
            return None
        return cls(owner, record, records)

    # -- the epoll loop's side -----------------------------------------------------------------

    def start(self) -> None:
        """Start the thread and run every lifespan startup; a failure ends the child."""
        self._thread.start()
        for lifespan in self._lifespans.values():
            failure = asyncio.run_coroutine_threadsafe(lifespan.startup(), self.loop).result()
            if failure is not None:
                self.error_log.log(
                    "emerg",
                    f"MP00289: Application startup failed ({lifespan.name}): {failure}. Exiting.",
                    module="asgi",
                )
                self.close()
                raise SystemExit(CHILD_FATAL)
        self.loop.call_soon_threadsafe(self._sweep)

    def route(self, conn: EventConnection, request: Request) -> tuple | None:
        """(mount, path, Require check, vhost) when `request` is for an ASGI application;
        remembered per (Host, port, path): a client asks for the same URLs again and again."""
        host = request.header("host")
        port = conn.session.info.server_port
        key = (host, port, request.path)
        routes = self._routes
        if key in routes:
            return routes[key]
        vhost = self.router.select_vhost(host, port)
        found = self.router.asgi_target(vhost, request.path)
        target = None if found is None else (*found, vhost)
        if len(routes) >= ROUTE_CACHE:
            routes.clear()
        routes[key] = target
        return target

    def take(self, conn: EventConnection, request: Request) -> bool:
        """The epoll loop offers a request it read: True if this loop took the connection."""
        target = self.route(conn, request)
        if target is None:
            return False
        self.held += 1
        self.loop.call_soon_threadsafe(self._adopt, conn, request, target)
        return True

    def take_returned(self) -> list[tuple[EventConnection, bool, Request | None, bool]]:
        returned = self.returned
        items = []
        while returned:
            items.append(returned.popleft())
        self.held -= len(items)
        return items

    def clear_wake(self) -> None:
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            pass

    def begin_stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop_connections)

    def close(self) -> None:
        """After the last connection: each lifespan shutdown, then the loop and its thread."""
        if self._thread.is_alive():
            timeout = self.ctx.config.mpm.graceful_shutdown_timeout or 30.0
            for lifespan in self._lifespans.values():
                future = asyncio.run_coroutine_threadsafe(lifespan.shutdown(timeout), self.loop)
                failure = future.result()
                if failure is not None:
                    self.error_log.log("error", f"MP00290: {failure}", module="asgi")
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        self.loop.close()
        os.close(self.wake_fd)

    # -- this loop's side ----------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def take_record(self) -> Any:
        """A scoreboard record for a request starting now (the shared one if none is free)."""
        free = self._free_records
        return free.pop() if free else self.record

    def release_record(self, record: Any) -> None:
        """The request ended: its own record shows `.` again (never an idle thread)."""
        if record is not self.record and record is not None:
            record.park()
            self._free_records.append(record)

    def state_of(self, app: Any) -> dict | None:
        lifespan = self._lifespans.get(id(app))
        return lifespan.state if lifespan is not None and lifespan.supported else None

    def _adopt(self, conn: EventConnection, request: Request, target: tuple) -> None:
        connection = AsgiConnection(self, conn)
        self._connections.add(connection)
        connection.serve(request, target)

    def give_back(self, connection: AsgiConnection, keep: bool, request, after_error) -> None:
        self._connections.discard(connection)
        self._watched.discard(connection)
        self.returned.append((connection.conn, keep, request, after_error))
        os.eventfd_write(self.wake_fd, 1)

    def watch(self, connection: AsgiConnection) -> None:
        """`connection` has a deadline the sweep must check."""
        self._watched.add(connection)

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in list(self._watched):
            deadline = connection.deadline
            if not deadline:
                self._watched.discard(connection)
            elif deadline <= now:
                self._watched.discard(connection)
                connection.expired(now)
        self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def _stop_connections(self) -> None:
        self.stopping = True
        for connection in list(self._connections):
            connection.shutdown()
