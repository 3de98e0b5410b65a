"""Exchange: one request and its response, as a handler sees it.

A handler gets an Exchange, calls `start()` once with the status and headers, then `write()`,
`sendfile()` or nothing, and the connection loop calls `finish()`. The exchange chooses the
framing (Content-Length, chunked, or close-delimited for HTTP/1.0), drops the body for HEAD
(whose head carries GET's headers, never a made-up `Content-Length: 0`), and keeps the
figures the access log and the scoreboard need. It writes through two callables the I/O layer
provides, so it never touches a socket itself.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from mpmd.config.model import VirtualHost
from mpmd.http.request import Request
from mpmd.http.response import (
    LAST_CHUNK,
    bodyless_status,
    build_head,
    chunk,
    encode_head,
    error_body,
    status_line,
)

# Headers the server owns: an application's values for them are dropped.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
)


_OWN = (None, None)  # a head's Date and Server: the server's own

# A first body chunk up to this size goes out in one send with the head (copied behind it);
# a larger one is sent on its own rather than copied.
_JOIN_LIMIT = 16384


class ConnectionInfo:
    """What the I/O layer knows about one client connection, shared by its exchanges."""

    __slots__ = (
        "client_addr",
        "client_port",
        "conn_addr",
        "multiprocess",
        "multithread",
        "peer_addr",
        "requests",
        "server_addr",
        "server_port",
        "take_over",
        "tls",
        "wsgi_base",
    )

    def __init__(
        self,
        client_addr: str,
        client_port: int,
        server_addr: str,
        server_port: int,
        *,
        multithread: bool,
        multiprocess: bool,
    ) -> None:
        self.client_addr = client_addr  # the request's client: REMOTE_ADDR, %a, Require ip
        self.client_port = client_port  # the TCP peer's port (REMOTE_PORT), as httpd keeps it
        self.peer_addr = client_addr  # the TCP peer (%{c}a)
        self.conn_addr = client_addr  # the connection's client: a PROXY header's, or the peer
        self.server_addr = server_addr
        self.server_port = server_port
        self.multithread = multithread  # wsgi.multithread: true for worker and event
        self.multiprocess = multiprocess  # wsgi.multiprocess: false only for -X
        self.requests = 0  # requests completed on this connection before the current one (%k)
        # (WsgiHandler, its environ completed with this connection's values): built on the
        # connection's first request through a mount, copied for the next ones
        self.wsgi_base: tuple[object, dict] | None = None
        # For a tunnel (Request.upgrade answered with 101): the client socket, with the output
        # before it written, and the bytes the client sent behind the request head. The caller
        # then owns the socket's I/O (never closes it; it sets exchange.keep_alive = False and
        # the I/O layer closes it). None where the I/O layer cannot hand its socket over.
        self.take_over: Callable[[], tuple[socket.socket, bytes]] | None = None
        self.tls = None  # http/tls.py's TlsInfo on a TLS connection, set after the handshake


class ResponseAlreadyStarted(RuntimeError):
    """start() called after the head went out (PEP 3333: re-raise the app's exc_info)."""


class Exchange:
    __slots__ = (
        "_chunked",
        "_closing",
        "_content_length",
        "_head_lines",
        "_origin",
        "_raw_headers",
        "_remaining",
        "_response_headers",
        "_send",
        "_sendfile",
        "aborted",
        "bytes_out",
        "conn",
        "head_bytes",
        "head_sent",
        "keep_alive",
        "notes",
        "request",
        "start_time",
        "status",
        "status_line",
        "vhost",
    )

    def __init__(
        self,
        request: Request,
        conn: ConnectionInfo,
        vhost: VirtualHost,
        send: Callable[[bytes], None],
        sendfile: Callable[[int, int, int], None],
        closing: Callable[[], bool] | None = None,
    ) -> None:
        self.request = request
        self.conn = conn
        self.vhost = vhost  # the config.model.VirtualHost that serves this request
        self._send = send
        self._sendfile = sendfile
        # The I/O layer's say, asked as the head is built: True when this response must end
        # the connection (its process is stopping), so the head says close.
        self._closing = closing
        self.start_time = time.time()
        self.status = 0
        self.status_line = ""
        self._response_headers: list[tuple[str, str]] | None = []
        self._raw_headers: list = []  # start_encoded()'s (name, value) bytes, decoded if asked
        self._head_lines: bytes | None = None  # start_encoded()'s header lines, ready to send
        self._origin: tuple[bytes | None, bytes | None] = _OWN  # start_encoded()'s Date, Server
        self.head_sent = False
        self.keep_alive = request.keep_alive
        self.aborted = False
        self.bytes_out = 0  # body bytes sent (%B)
        self.head_bytes = 0  # bytes of the response head (%O counts both)
        self.notes: dict[str, str] = {}  # handler name, filename... for the access log
        self._content_length: int | None = None
        self._remaining = -1
        self._chunked = False

    # -- handler API ---------------------------------------------------------------------------

    def start(self, status: str, headers: list[tuple[str, str]]) -> None:
        """Set the status ("200 OK") and headers; nothing is sent until the first body byte."""
        if self.head_sent:
            raise ResponseAlreadyStarted("response head already sent")
        self.status_line = status
        self.status = int(status[:3])
        kept: list[tuple[str, str]] = []
        self._content_length = None
        for name, value in headers:
            lname = name.lower()
            if lname == "content-length":
                self._content_length = int(value)
            elif lname not in HOP_BY_HOP:
                kept.append((name, value))
            elif lname == "connection" and value.lower() == "close":
                self.keep_alive = False
        self.response_headers = kept

    def start_encoded(
        self,
        status: str,
        lines: bytes,
        kept: list,
        content_length: int | None,
        close: bool,
        origin: tuple[bytes | None, bytes | None] = _OWN,
    ) -> None:
        """start() for headers already checked and encoded (an ASGI app's bytes, a back
        end's): `lines` go into the head as they are; `kept`, their (name, value) bytes, are
        decoded only if the access log asks for a response header. `origin`: a proxied
        response's own Date and Server values, which the head gives instead of the server's."""
        if self.head_sent:
            raise ResponseAlreadyStarted("response head already sent")
        self.status_line = status
        self.status = int(status[:3])
        self._content_length = content_length
        if close:
            self.keep_alive = False
        self._head_lines = lines
        self._origin = origin
        self._raw_headers = kept
        self._response_headers = None

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The response's headers as text (%{X}o), without those the server frames itself."""
        headers = self._response_headers
        if headers is None:
            headers = self._response_headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in self._raw_headers
            ]
        return headers

    @response_headers.setter
    def response_headers(self, headers: list[tuple[str, str]]) -> None:
        self._response_headers = headers
        self._head_lines = None

    def respond(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        """Start and send a whole response whose body is already in memory (one send)."""
        self.start(status, headers)
        if self._content_length is None:
            self._content_length = len(body)
        self.write(body)

    def send_error(self, status: int, detail: str = "", headers=()) -> None:
        """An Apache-style HTML error document. Only valid before the head is sent."""
        body = error_body(status, detail)
        self.respond(
            status_line(status),
            [("Content-Type", "text/html; charset=iso-8859-1"), *headers],
            body,
        )

    def write(self, data: bytes) -> None:
        if not self.head_sent:
            if not self.status:
                raise RuntimeError("write() before start()")
            if not data:
                return
            self._send_head(data)
            return
        if data:
            self._send_body(data)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """Send `count` bytes of an open file with os.sendfile (the head goes out first)."""
        if not self.head_sent:
            if self._content_length is None:
                self._content_length = count
            self._send_head(b"")
        if self._chunked or not self._has_body() or count <= 0:
            if self._chunked and count > 0:
                import os

                self._send_body(os.pread(fd, count, offset))
            return
        if self._remaining >= 0:
            count = min(count, self._remaining)
            self._remaining -= count
        self._sendfile(fd, offset, count)
        self.bytes_out += count

    def finish(self) -> None:
        """End the response: send a head if none went out, the last chunk, check the length."""
        if not self.head_sent:
            if not self.status:
                raise RuntimeError("finish() before start()")
            if self._content_length is None:
                self._content_length = 0
            self._send_head(b"")
        elif self._chunked and not self.aborted:
            self._send(LAST_CHUNK)  # never after a failure: the client must see the cut
        if self._remaining > 0:
            # The app promised more than it sent: the stream can no longer be framed.
            self.keep_alive = False

    # -- internals ------------------------------------------------------------------------------

    def _has_body(self) -> bool:
        return self.request.method != "HEAD" and not bodyless_status(self.status)

    def _send_head(self, first: bytes) -> None:
        request = self.request
        length = self._content_length
        chunked = False
        head_request = request.method == "HEAD"
        bodyless = bodyless_status(self.status)
        if bodyless or (length == 0 and head_request):
            # HEAD: a handler that answers without producing the body cannot know GET's length,
            # so `Content-Length: 0` is never announced (Apache's http_header filter drops it).
            length = None
        elif length is None and not head_request:
            if request.version == "HTTP/1.1":
                chunked = True
            else:
                self.keep_alive = False  # close-delimited body
        self._chunked = chunked
        if self.keep_alive and self._closing is not None and self._closing():
            self.keep_alive = False
        has_body = not (head_request or bodyless)
        # A HEAD response announces the length but sends no body: nothing remains to send.
        self._remaining = length if length is not None and has_body else -1
        version = "HTTP/1.1" if request.version != "HTTP/1.0" else "HTTP/1.0"
        lines = self._head_lines
        if lines is None:
            head = build_head(
                version, self.status_line, self.response_headers, content_length=length,
                chunked=chunked, keep_alive=self.keep_alive, now=self.start_time,
            )  # fmt: skip
        else:
            head = encode_head(
                version, self.status_line, lines, length, chunked, self.keep_alive,
                self.start_time, *self._origin,
            )  # fmt: skip
        self.head_sent = True
        self.head_bytes = len(head)
        if not (first and has_body):
            self._send(head)
            return
        framed = self._frame(first)
        if len(framed) <= _JOIN_LIMIT:
            self._send(head + framed)  # one system call, one packet
        else:  # copying a large body behind the head costs more than a second send
            self._send(head)
            self._send(framed)

    def _frame(self, data: bytes) -> bytes:
        if self._chunked:
            self.bytes_out += len(data)
            return chunk(data)
        if self._remaining >= 0:
            if len(data) > self._remaining:
                data = data[: self._remaining]
            self._remaining -= len(data)
        self.bytes_out += len(data)
        return data

    def _send_body(self, data: bytes) -> None:
        if self._has_body():
            framed = self._frame(data)
            if framed:
                self._send(framed)
