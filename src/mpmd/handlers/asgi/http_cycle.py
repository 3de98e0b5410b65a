"""One HTTP request through an ASGI application: the `receive` and `send` of ASGI 3.0's http
scope, over the Exchange that frames the response and keeps the access log's figures.

Sans-I/O towards the socket: the connection (mpm/asgi_connection.py) feeds request bytes to
the parser and wakes this cycle (`wake()`); the cycle writes through `io.write` (never waits)
and awaits `io.drain()` when the client reads slower than the app sends, so `send` returns
only once the socket can take more (flow control). A request body is delivered as it arrives,
as `http.request` messages with `more_body`; the connection stops reading while the app does
not take what is buffered. Server duties (reference 4.5): an exception or a return before
`http.response.start` is a logged 500; after it the connection is closed; `http.disconnect`
is delivered on `receive` once the client is gone or the response is complete.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol

from mpmd.handlers.asgi.headers import encode_headers
from mpmd.handlers.asgi.websocket_cycle import ClientDisconnected
from mpmd.http.errors import HttpError
from mpmd.http.exchange import Exchange
from mpmd.http.request import Request
from mpmd.http.response import status_line

BODY_HIGH_WATER = 65536  # request body bytes buffered before the connection stops reading
_DISCONNECT = {"type": "http.disconnect"}


class CycleIO(Protocol):
    """What the cycle needs of its connection."""

    closed: bool  # the client is gone

    def write(self, data: bytes) -> None: ...
    def sendfile(self, fd: int, offset: int, count: int) -> None: ...
    def backlogged(self) -> bool: ...
    async def drain(self) -> None: ...
    def resume_reading(self) -> None: ...
    def send_continue(self) -> None: ...
    def send_error(self, error: HttpError, exchange: Exchange) -> None: ...
    def cycle_done(self, cycle: HttpCycle, keep: bool) -> None: ...


class HttpCycle:
    """receive/send for one request; `run` returns whether the connection may stay open."""

    __slots__ = (
        "_event",
        "_start",
        "body_done",
        "complete",
        "error_log",
        "exchange",
        "io",
        "refused",
        "request",
        "started",
    )

    def __init__(self, io: CycleIO, exchange: Exchange, request: Request, error_log: Any) -> None:
        self.io = io
        self.exchange = exchange
        self.request = request
        self.error_log = error_log
        self.started = False  # http.response.start was sent by the app
        self.complete = False  # the last body went out
        self.body_done = False  # the app has the whole request body
        self.refused = False  # the server answered the request itself (a body it refused)
        self._start: dict | None = None
        self._event: asyncio.Event | None = None  # receive() waiting for bytes or a close

    def wake(self) -> None:
        """The connection read more of the body, or the client went away."""
        event = self._event
        if event is not None:
            event.set()

    async def run(self, app: Any, scope: dict) -> None:
        """The app answers the request; then the connection carries on (`io.cycle_done`), told
        whether it may serve another request. (The task's only coroutine besides the app's.)"""
        try:
            await app(scope, self.receive, self.send)
        except ClientDisconnected:
            self.exchange.aborted = True
            keep = False
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            self._failed("MP00283: Exception in ASGI application", traceback=True)
            keep = False
        else:
            keep = self._outcome()
        self.io.cycle_done(self, keep)

    def _outcome(self) -> bool:
        """After the app returned: whether the connection may carry another request (the
        server duties of reference 4.5 for a response the app left unstarted or unfinished)."""
        exchange = self.exchange
        if self.refused:
            return False
        if self.io.closed and not self.complete:  # the client left: no app error (uvicorn)
            exchange.aborted = True
            return False
        if not self.started:
            self._failed("MP00284: ASGI callable returned without starting response.")
            return False
        if not self.complete:
            self.error_log.log(
                "error", "MP00285: ASGI callable returned without completing response.",
                module="asgi",
            )  # fmt: skip
            exchange.aborted = True
            return False
        return exchange.keep_alive and not self.io.closed

    def _failed(self, message: str, *, traceback: bool = False) -> None:
        """A 500 if nothing was sent yet (Apache's error document), else a cut response."""
        line = f'{message} "{self.request.request_line}"'
        if traceback:
            self.error_log.exception(line, module="asgi")
        else:
            self.error_log.log("error", line, module="asgi")
        exchange = self.exchange
        exchange.keep_alive = False
        if self.refused:
            return
        if exchange.head_sent or self.io.closed:
            exchange.aborted = True
            return
        exchange.send_error(500)
        self.complete = True

    # -- receive -------------------------------------------------------------------------------

    async def receive(self) -> dict:
        """The body as it arrives; once it is all delivered, waits for the client to go away
        or the response to complete (Starlette's disconnect watch relies on this)."""
        body = self.request.body
        io = self.io
        while True:
            if io.closed or self.complete or self.refused:
                return _DISCONNECT
            if not self.body_done:
                if body.error is not None:  # 400, 408, 413: answered here, then closed
                    self.body_done = True
                    self._refuse(body.error)
                    return _DISCONNECT
                buffered = body.buffered
                if buffered or body.complete:
                    data = body.read(buffered) if buffered else b""
                    if body.complete:
                        self.body_done = True
                    else:
                        io.resume_reading()
                    return {"type": "http.request", "body": data, "more_body": not body.complete}
                io.send_continue()  # `Expect: 100-continue`: only once the app wants the body
                io.resume_reading()
            await self._wait()

    def body_failed(self, error: HttpError) -> None:
        """The connection gave up on the body (RequestReadTimeout): as a refused body."""
        if not self.body_done:
            self.body_done = True
            self._refuse(error)
            self.wake()

    def _refuse(self, error: HttpError) -> None:
        """The body cannot complete: the server's error page if nothing went out yet (the
        app's later sends are no-ops, as after a disconnect), then the connection closes."""
        self.refused = True
        exchange = self.exchange
        exchange.keep_alive = False
        if exchange.head_sent or self.io.closed:
            exchange.aborted = True
        else:
            exchange.status = error.status
            self.io.send_error(error, exchange)

    async def _wait(self) -> None:
        event = self._event
        if event is None:
            event = self._event = asyncio.Event()
        await event.wait()
        event.clear()

    # -- send ----------------------------------------------------------------------------------

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{kind}'."
                )
            self.started = True
            self._start = message
            return
        if self.complete:
            if self.io.closed:
                raise ClientDisconnected("the client closed the connection")
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}' sent, after response already completed."
            )
        if self.io.closed or self.refused:
            return  # uvicorn's behaviour: a silent no-op (reference 4.5, #2276)
        exchange = self.exchange
        if not exchange.head_sent and self._start is not None:
            start, self._start = self._start, None
            if not self.request.body.complete:  # the rest is not waited for: close after
                exchange.keep_alive = False
            lines, kept, length, close = encode_headers(start.get("headers"))
            exchange.start_encoded(status_line(start["status"]), lines, kept, length, close)
        if kind == "http.response.body":
            more = message.get("more_body", False)
            body = message.get("body", b"")
            exchange.write(body if type(body) is bytes else bytes(body))
        elif kind == "http.response.pathsend":
            more = False
            _send_path(exchange, message["path"])
        elif kind == "http.response.zerocopysend":
            more = message.get("more_body", False)
            _send_file(exchange, message)
        else:
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        if not more:
            exchange.finish()
            self.complete = True
            self.wake()  # a receive() waiting for a disconnect returns now
        if self.io.backlogged():
            await self.io.drain()


def _send_path(exchange: Exchange, path: str) -> None:
    """http.response.pathsend: the whole file, with sendfile (the app set its headers)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        exchange.sendfile(fd, 0, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _send_file(exchange: Exchange, message: dict) -> None:
    """http.response.zerocopysend: a span of the app's open file (the app closes it)."""
    fd = message["file"] if isinstance(message["file"], int) else message["file"].fileno()
    offset = message.get("offset")
    if offset is None:
        offset = os.lseek(fd, 0, os.SEEK_CUR)
    count = message.get("count")
    if count is None:
        count = os.fstat(fd).st_size - offset
    exchange.sendfile(fd, offset, count)
    if message.get("offset") is None:
        os.lseek(fd, offset + count, os.SEEK_SET)
