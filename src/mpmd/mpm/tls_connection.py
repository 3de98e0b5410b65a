"""The blocking TLS transport of prefork and worker (and -X): a Connection over ssl.SSLSocket.

`serve_accepted()` is what a prefork or worker thread calls with each accepted socket: on a
plain-HTTP port the Connection of connection.py serves it; on a TLS port (http/tls.py's
TlsContexts names the port's context) the TlsConnection does the handshake first, bounded by
Timeout and RequestReadTimeout's handshake stage, then serves HTTP over TLS the same way.
What differs from plain HTTP: reads and writes go through OpenSSL (a kernel timeout shows as
SSLWantRead/WriteError), files are sent in chunks (sendfile cannot see through TLS), the
close sends close_notify, and a plain-HTTP request on the TLS port gets Apache's 400
(reference 1.5). The event MPM never uses this module.
"""

from __future__ import annotations

import os
import socket
import ssl

from mpmd.http.errors import HttpError
from mpmd.http.tls import (
    PLAIN_HTTP_REQUEST_LINE,
    handshake_timeout,
    plain_http_response,
    tls_info,
)
from mpmd.http.tls_verify import client_refusal, handshake_failure
from mpmd.mpm.connection import Connection
from mpmd.mpm.context import ChildContext

FILE_CHUNK = 256 * 1024  # a file is read and encrypted this much at a time


def serve_accepted(sock: socket.socket, peer, ctx: ChildContext, worker=None) -> None:
    """Serve one accepted connection to its end, over TLS when its port is a TLS port."""
    context = ctx.tls.for_listener(sock) if ctx.tls is not None else None
    if context is None:
        Connection(sock, peer, ctx, worker).serve_blocking()
    else:
        TlsConnection(sock, peer, ctx, worker, context).serve_blocking()


class TlsConnection(Connection):
    """A Connection whose socket becomes an ssl.SSLSocket once the handshake is done."""

    __slots__ = ("context",)

    def __init__(self, sock, peer, ctx: ChildContext, worker, context: ssl.SSLContext) -> None:
        super().__init__(sock, peer, ctx, worker)
        self.context = context

    def serve_blocking(self) -> None:
        if self._handshake():
            super().serve_blocking()

    def _handshake(self) -> bool:
        """The server handshake; False (the socket closed, the failure counted) if it fails."""
        metrics = self.ctx.tls_counters
        self.sock.settimeout(handshake_timeout(self.ctx.settings))
        # The SSLSocket takes over the descriptor; it stays open when the handshake fails, so
        # the plain-HTTP answer can still be written past OpenSSL.
        tls = self.sock = self.context.wrap_socket(
            self.sock, server_side=True, do_handshake_on_connect=False
        )
        try:
            tls.do_handshake()
        except ssl.SSLError as error:
            metrics.failed()
            if error.reason == "HTTP_REQUEST":
                self._plain_http(tls)
            else:
                self._log_failure(*handshake_failure(error, tls))
            super().close()  # lingering: the alert or the answer is not lost to a reset
            return False
        except OSError:  # the handshake timed out, or the client went away
            metrics.failed()
            tls.close()
            return False
        info = tls_info(tls)
        self.session.info.tls = info
        refusal = client_refusal(info)
        if refusal is not None:
            metrics.failed()
            self._log_failure(*refusal)
            self._close_tls(linger=True)
            return False
        metrics.succeeded()
        return True

    def _log_failure(self, level: str, ah: str, message: str) -> None:
        info = self.session.info
        self.ctx.error_log.log(
            level, message, module="ssl", ah=ah, client=f"{info.client_addr}:{info.client_port}"
        )

    def _plain_http(self, tls: ssl.SSLSocket) -> None:
        """Apache's 400 in clear text, logged as its injected `GET / HTTP/1.0`."""
        info = self.session.info
        self.ctx.error_log.log(
            "info",
            "SSL handshake failed: HTTP spoken on HTTPS port; trying to send HTML error page",
            module="ssl",
            ah="AH01996",
            client=f"{info.client_addr}:{info.client_port}",
        )
        head, body = plain_http_response()
        try:
            socket.socket.sendall(tls, head + body)  # in clear, past the SSL layer
        except OSError:
            pass
        error = HttpError(400, request_line=PLAIN_HTTP_REQUEST_LINE)
        self.session.log_refused(error, len(body))

    # -- the session's transport, through OpenSSL -----------------------------------------------

    # Python's socket timeouts, not the kernel's SO_RCVTIMEO/SO_SNDTIMEO: on a blocking
    # SSLSocket, OpenSSL's read would retry after the kernel's timeout instead of returning.

    def _use_kernel_timeouts(self) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _wait(self, seconds: float) -> None:
        if seconds != self._rcvtimeo:
            self._rcvtimeo = seconds
            self.sock.settimeout(seconds)

    def recv_within(self, seconds: float) -> bytes:
        self._wait(seconds)
        try:
            return self.sock.recv(65536)
        except ssl.SSLEOFError:
            return b""
        except ssl.SSLError as error:
            raise ConnectionError(f"TLS: {error.reason or error}") from None

    def send(self, data: bytes) -> None:
        self._wait(self.ctx.settings.timeout)
        try:
            self.sock.sendall(data)
        except ssl.SSLError as error:
            raise ConnectionError(f"TLS: {error.reason or error}") from None

    def write_error(self, data: bytes) -> None:
        try:
            self.send(data)
        except OSError:
            pass

    def send_continue(self) -> None:
        from mpmd.http.response import CONTINUE_100

        self.send(CONTINUE_100)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """No sendfile through TLS: the file is read and sent a chunk at a time."""
        while count > 0:
            chunk = os.pread(fd, min(FILE_CHUNK, count), offset)
            if not chunk:
                raise BrokenPipeError("the file ended before its length")
            self.send(chunk)
            offset += len(chunk)
            count -= len(chunk)

    def nothing_more_to_read(self) -> bool:
        sock = self.sock
        if not isinstance(sock, ssl.SSLSocket) or sock.pending():
            return False
        if not self.session.client_done or self.protocol.buffered():
            return False
        try:
            sock.setblocking(False)
            return not socket.socket.recv(sock, 1, socket.MSG_PEEK)
        except (BlockingIOError, ValueError):
            return True
        except OSError:
            return True

    def close(self) -> None:
        self._close_tls(linger=True)

    def _close_tls(self, *, linger: bool) -> None:
        """close_notify (without waiting for the client's), then the lingering close."""
        sock = self.sock
        quiet = linger and self.nothing_more_to_read()
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.setblocking(False)
                sock.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
        if quiet or not linger:
            sock.close()
            return
        super().close()
