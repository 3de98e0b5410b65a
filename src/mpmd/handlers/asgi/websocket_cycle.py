"""The ASGI `websocket` scope on asyncio: one application instance for one upgraded request.

This module owns what ASGI 3.0 asks of a server for a WebSocket (reference 4.3, 4.5): the
`websocket.connect` that opens the cycle, the handshake that waits for the application (accept →
101, close → 403, `websocket.http.response` → that HTTP response), the receive queue with reading
paused while the application lags behind the client (QUEUE_MESSAGES messages or QUEUE_BYTES bytes
not taken yet), keepalive pings, the close
handshake bounded in time, and the answers to an application that raises or returns early (500
before the handshake is answered, close 1011 after). It never touches a socket: the connection
behind `WebSocketIO` owns the file descriptor, and `WebSocketSession` owns the protocol.

The one idea: every way the connection can end (close handshake done, connection failed, the
peer gone, a close reply that never came) goes through `_end()`, which delivers the single
`websocket.disconnect` the application has not had yet and closes the connection; `run()`
returns once the application has returned and `_end()` has run.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mpmd.handlers.asgi.headers import response_headers
from mpmd.handlers.asgi.websocket import ABNORMAL, WebSocketSession, WebSocketSettings
from mpmd.http.response import (
    LAST_CHUNK,
    bodyless_status,
    build_head,
    chunk,
    error_body,
    status_line,
)

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Any]

# Messages read but not yet taken by the application before reading pauses (until it has taken
# them all): the memory a client flooding an application that does not receive can hold, plus
# what one read completes. Pausing only past a bound, not after each message, spares an
# application that keeps up two epoll_ctl calls per message.
QUEUE_MESSAGES = 16
QUEUE_BYTES = 65536


class ClientDisconnected(OSError):
    """`send` after the WebSocket closed: ASGI's server-specific OSError (spec 2.4), which an
    application may let escape and the server does not log as an error."""


class WebSocketIO(Protocol):
    """What the event child's connection gives a cycle."""

    loop: asyncio.AbstractEventLoop

    @property
    def closed(self) -> bool:
        """The client is gone or close() was called."""
        ...

    def write(self, data: bytes) -> None:
        """Queue and send without blocking; never raises; dropped once the connection is gone."""

    async def drain(self) -> None:
        """Return once queued output is under the low-water mark (or the connection is gone)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None:
        """End the connection once queued output is written (lingering close)."""


def websocket_scope(http_scope: dict) -> dict:
    """The `websocket` scope for an upgrade request's `http` scope (reference 4.3): no method,
    ws/wss, the offered subprotocols, and the denial-response extension mpmd implements."""
    scope = {key: value for key, value in http_scope.items() if key != "method"}
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if http_scope.get("scheme") in ("https", "wss") else "ws"
    scope["asgi"] = {"version": "3.0", "spec_version": "2.5"}  # 2.5: disconnect has `reason`
    scope["subprotocols"] = [
        token.strip()
        for name, value in http_scope.get("headers", ())
        if name == b"sec-websocket-protocol"
        for token in value.decode("latin-1").split(",")
        if token.strip()
    ]
    extensions = {"websocket.http.response": {}}
    tls = (http_scope.get("extensions") or {}).get("tls")
    if tls is not None:
        extensions["tls"] = tls
    scope["extensions"] = extensions
    return scope


_CONNECTING, _RESPONDING, _OPEN, _DONE = "connecting", "responding", "open", "done"


class WebSocketCycle:
    """Runs `app` for one WebSocket; the connection calls `feed()` with what it reads."""

    def __init__(
        self,
        app: ASGIApp,
        scope: dict,
        io: WebSocketIO,
        settings: WebSocketSettings,
        error_log: Any,
    ) -> None:
        self._app = app
        self._scope = scope
        self._io = io
        self._settings = settings
        self._log = error_log
        client = scope.get("client")
        self._client = f"{client[0]}:{client[1]}" if client else None
        self._session = WebSocketSession(list(scope.get("headers", ())), settings)
        self._state = _CONNECTING
        self._status = 0  # for the access log: what the client was answered
        self._sent = 0
        self._queue: deque[dict] = deque()
        self._queued = 0  # payload bytes in _queue
        self._waiter: asyncio.Future | None = None  # the application's receive() waiting
        self._ended = asyncio.Event()
        self._connect_delivered = False
        self._disconnect: dict | None = None  # once delivered, every later receive() returns it
        self._disconnect_queued = False
        self._early = bytearray()  # bytes behind the head, held until the app accepts
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._ping_at = 0.0
        self._pinging = False  # a ping awaits its pong under the ping_timeout timer
        self._shutting_down = False
        self._response: tuple[int, list[tuple[str, str]]] | None = None
        self._response_chunked: bool | None = None  # None until the denial's head is written

    # -- the connection's side -----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes read from the client after the request head; b"" when it is gone."""
        if self._ended.is_set():
            return
        if self._state is not _OPEN:
            if data:
                self._early += data
                self._pause()  # nothing more is read until the application answers
            else:
                self._end()
            return
        messages = self._session.receive_data(data)
        self._write(self._session.data_to_send())
        self._queue_messages(messages)
        if self._session.closed:
            self._end()
        elif self._pinging and not self._session.awaiting_pong:
            self._pong_arrived()

    def shutdown(self) -> None:
        """Graceful stop: close 1001, giving the peer WebSocketCloseTimeout to answer. A handshake the
        application has yet to answer is closed right after its accept."""
        self._shutting_down = True
        if self._state is _OPEN:
            self._server_close(1001, "Server shutting down")

    async def run(self) -> tuple[int, int]:
        """Run the application to its end and the connection to its close: (status for the
        access log — 101 once accepted, else the HTTP status sent —, bytes sent)."""
        try:
            await self._app(self._scope, self._receive, self._send)
        except ClientDisconnected:
            self._app_returned()
        except asyncio.CancelledError:
            self._end()
            raise
        except Exception:
            self._app_failed()
        else:
            self._app_returned()
        await self._ended.wait()
        return self._status, self._sent

    # -- receive ---------------------------------------------------------------------------------

    async def _receive(self) -> dict:
        if not self._connect_delivered:
            self._connect_delivered = True
            return {"type": "websocket.connect"}
        queue = self._queue
        while not queue:
            if self._disconnect is not None:
                return self._disconnect
            waiter = self._waiter
            if waiter is None or waiter.done():  # done: a receive() cancelled while waiting
                waiter = self._waiter = self._io.loop.create_future()
            await waiter
        message = queue.popleft()
        if message["type"] == "websocket.disconnect":
            self._disconnect = message
        else:
            self._queued -= _size(message)
        if self._paused and not queue and self._state is _OPEN and not self._ended.is_set():
            self._resume()
        return message

    def _queue_messages(self, messages: list[dict]) -> None:
        if not messages:
            return
        queue = self._queue
        for message in messages:
            if message["type"] == "websocket.disconnect":
                self._disconnect_queued = True
            else:
                self._queued += _size(message)
            queue.append(message)
        if len(queue) >= QUEUE_MESSAGES or self._queued >= QUEUE_BYTES:
            self._pause()
        self._wake()

    def _wake(self) -> None:
        """The application's receive() may go on (a message, or the end)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- send ------------------------------------------------------------------------------------

    async def _send(self, message: dict) -> None:
        if not isinstance(message, dict):
            raise TypeError(f"ASGI messages are dicts, not {type(message).__name__}.")
        kind = message.get("type")
        if self._state is _CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._error_response(403)
            elif kind == "websocket.http.response.start":
                self._start_response(message)
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start', but got {kind!r}."
                )
        elif self._state is _RESPONDING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body', but got {kind!r}."
                )
            self._response_body(message)
        elif self._state is _OPEN and not self._session.close_sent and not self._ended.is_set():
            if kind not in ("websocket.send", "websocket.close"):
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.send' or 'websocket.close', but got {kind!r}."
                )
            self._write(self._session.send_message(message))
            if kind == "websocket.close":
                self._closing()
        else:
            raise ClientDisconnected(f"Cannot send {kind!r}: the WebSocket is closed.")
        await self._io.drain()

    def _accept(self, message: dict) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and not isinstance(subprotocol, str):
            raise TypeError("websocket.accept 'subprotocol' must be str or None.")
        self._write(self._session.accept(subprotocol, list(message.get("headers") or ())))
        self._state = _OPEN
        self._status = 101
        if self._ended.is_set():
            return
        early, self._early = bytes(self._early), bytearray()
        if early:
            self.feed(early)
        if self._ended.is_set():
            return
        if len(self._queue) < QUEUE_MESSAGES and self._queued < QUEUE_BYTES:
            self._resume()
        if self._shutting_down:
            self._server_close(1001, "Server shutting down")
        elif not self._session.close_sent:
            self._arm_ping()

    def _start_response(self, message: dict) -> None:
        status = message.get("status")
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise TypeError("websocket.http.response.start 'status' must be an int (100-999).")
        headers = [
            (name, value)
            for name, value in response_headers(message.get("headers"))
            if name.lower() not in ("connection", "transfer-encoding")
        ]
        self._response = (status, headers)
        self._state = _RESPONDING

    def _response_body(self, message: dict) -> None:
        body = message.get("body", b"")
        if not isinstance(body, (bytes, bytearray)):
            raise TypeError("websocket.http.response.body 'body' must be bytes.")
        more = bool(message.get("more_body", False))
        assert self._response is not None
        status, headers = self._response
        if self._response_chunked is None:
            has_length = any(name.lower() == "content-length" for name, _ in headers)
            self._response_chunked = more and not has_length and not bodyless_status(status)
            length = None if has_length or more or bodyless_status(status) else len(body)
            self._status = status
            self._write(
                build_head(
                    "HTTP/1.1",
                    status_line(status),
                    headers,
                    content_length=length,
                    chunked=self._response_chunked,
                    keep_alive=False,
                )
            )
        if body and not bodyless_status(status):
            self._write(chunk(bytes(body)) if self._response_chunked else bytes(body))
        if not more:
            if self._response_chunked:
                self._write(LAST_CHUNK)
            self._state = _DONE
            self._end()

    def _error_response(self, status: int) -> None:
        """An HTTP error instead of the 101 (403 for a refused handshake, 500 for a failed
        application), Apache's error document, then the connection closes."""
        body = error_body(status)
        self._status = status
        self._write(
            build_head(
                "HTTP/1.1",
                status_line(status),
                [("Content-Type", "text/html; charset=iso-8859-1")],
                content_length=len(body),
                chunked=False,
                keep_alive=False,
            )
            + body
        )
        self._state = _DONE
        self._end()

    # -- the application's end -----------------------------------------------------------------

    def _app_failed(self) -> None:
        if self._session.accepted:
            self._log.exception(
                "MP00301: Exception in ASGI application after the WebSocket handshake",
                module="asgi",
                client=self._client,
            )
            self._server_close(1011, "Internal server error")
            return
        self._log.exception(
            "MP00300: Exception in ASGI application before the WebSocket handshake was answered",
            module="asgi",
            client=self._client,
        )
        if self._state is not _DONE:
            self._abandon_response()

    def _app_returned(self) -> None:
        if self._state is _CONNECTING:
            self._log.log(
                "error",
                "MP00302: ASGI callable returned without answering the WebSocket handshake",
                module="asgi",
                client=self._client,
            )
        elif self._state is _RESPONDING:
            self._log.log(
                "error",
                "MP00303: ASGI callable returned without completing the WebSocket denial response",
                module="asgi",
                client=self._client,
            )
        else:
            self._server_close(1000, "")
            return
        self._abandon_response()

    def _abandon_response(self) -> None:
        """500 if no head was written yet, else cut the response short."""
        if self._response_chunked is None:
            self._error_response(500)
        else:
            self._state = _DONE
            self._end()

    # -- closing ---------------------------------------------------------------------------------

    def _server_close(self, code: int, reason: str) -> None:
        """mpmd closes an accepted WebSocket (app returned or failed, graceful stop)."""
        if self._state is not _OPEN or self._session.close_sent or self._ended.is_set():
            return
        self._write(
            self._session.send_message({"type": "websocket.close", "code": code, "reason": reason})
        )
        self._closing()

    def _closing(self) -> None:
        """A close frame was sent: the peer has WebSocketCloseTimeout to answer it."""
        self._pinging = False  # the one timer now bounds the close handshake
        if self._session.closed:
            self._end()
        else:
            self._arm(self._settings.close_timeout, self._end)

    def _end(self) -> None:
        """The connection is over: deliver the disconnect the application has not had and close
        the connection once its output is written."""
        if self._ended.is_set():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._session.accepted:
            self._queue_messages(self._session.receive_data(b""))
        elif not self._disconnect_queued:
            self._queue_messages([{"type": "websocket.disconnect", "code": ABNORMAL, "reason": ""}])
        self._ended.set()
        self._wake()
        self._io.close()

    # -- keepalive -----------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        """One timer per connection: the next ping, the pong deadline or the close deadline."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._io.loop.call_later(delay, callback)

    def _arm_ping(self) -> None:
        if self._settings.ping_interval is not None:
            self._arm(self._settings.ping_interval, self._ping)

    def _ping(self) -> None:
        self._timer = None
        if self._ended.is_set() or self._session.close_sent:
            return
        self._ping_at = self._io.loop.time()
        self._write(self._session.ping())
        if self._settings.ping_timeout is None:
            self._arm_ping()
        else:
            self._pinging = True
            self._arm(self._settings.ping_timeout, self._check_pong)

    def _pong_arrived(self) -> None:
        """The pong came in time: the next ping is due ping_interval after the last one."""
        self._pinging = False
        assert self._settings.ping_interval is not None
        next_ping = self._ping_at + self._settings.ping_interval - self._io.loop.time()
        self._arm(max(0.0, next_ping), self._ping)

    def _check_pong(self) -> None:
        self._timer = None
        if self._ended.is_set() or self._session.close_sent:
            return
        messages = self._session.fail(1011, "keepalive ping timeout")
        self._write(self._session.data_to_send())
        self._queue_messages(messages)
        self._end()

    # -- the connection ------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if data and not self._io.closed:
            self._sent += len(data)
            self._io.write(data)

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._io.pause_reading()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._io.resume_reading()


def _size(message: dict) -> int:
    """A `websocket.receive` message's payload length (characters for text)."""
    text = message["text"]
    return len(message["bytes"]) if text is None else len(text)
