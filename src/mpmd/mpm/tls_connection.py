"""The blocking TLS transport of prefork and worker (and -X): a Connection through OpenSSL.

`serve_accepted()` is what a prefork or worker thread calls with each accepted socket: on a
plain-HTTP port the Connection of connection.py serves it; on a TLS port (http/tls.py's
TlsContexts names the port's context) the TlsConnection does the handshake first, bounded by
Timeout and RequestReadTimeout's handshake stage, then serves HTTP over TLS the same way.

The thread reads and writes the socket itself, exactly as on plain HTTP (blocking, under the
kernel's SO_RCVTIMEO and SO_SNDTIMEO: one recv per request, one send per response), and
OpenSSL works in memory (tls_records.py). An ssl.SSLSocket cost each keep-alive request a
poll before every write, two mode switches for its timeouts and two reads per record (the
header, then the body). What else differs from plain HTTP: files are sent in chunks (sendfile
cannot see through TLS), what the handshake's end made (session tickets) is sent only once
the client passed its checks, the close sends close_notify, a plain-HTTP request on the TLS
port gets Apache's 400 (reference 1.5), and a tunnel gets a TlsStream. The event MPM never
uses this module.
"""

from __future__ import annotations

import os
import socket
import ssl
import time

from mpmd.http.errors import HttpError
from mpmd.http.response import CONTINUE_100
from mpmd.http.tls import (
    PLAIN_HTTP_REQUEST_LINE,
    handshake_timeout,
    plain_http_response,
    tls_info,
)
from mpmd.http.tls_verify import client_refusal, handshake_failure
from mpmd.mpm.connection import Connection
from mpmd.mpm.context import ChildContext
from mpmd.mpm.tls_records import READ_SIZE, TLS_CHUNK, TlsRecords

FILE_CHUNK = 256 * 1024  # a file is read and encrypted this much at a time


def serve_accepted(sock: socket.socket, peer, ctx: ChildContext, worker=None) -> None:
    """Serve one accepted connection to its end, over TLS when its port is a TLS port."""
    context = ctx.tls.for_listener(sock) if ctx.tls is not None else None
    if context is None:
        Connection(sock, peer, ctx, worker).serve_blocking()
    else:
        TlsConnection(sock, peer, ctx, worker, context).serve_blocking()


class TlsConnection(Connection, TlsRecords):
    """A Connection whose bytes pass through an ssl.SSLObject over two MemoryBIOs."""

    __slots__ = ("bio_in", "bio_out", "eof", "handshaken", "ssl", "sslobj")

    def __init__(self, sock, peer, ctx: ChildContext, worker, context: ssl.SSLContext) -> None:
        super().__init__(sock, peer, ctx, worker)
        self.bio_in = ssl.MemoryBIO()
        self.bio_out = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self.bio_in, self.bio_out, server_side=True)
        self.sslobj = self.ssl._sslobj  # its C object: read/write/pending without a frame each
        self.handshaken = False  # done, and the client passed its checks: close_notify at close
        self.eof = False  # the client sent close_notify or closed its side

    def serve_blocking(self) -> None:
        if self._handshake():
            super().serve_blocking()
        else:
            self._drop_tls()

    def _use_kernel_timeouts(self) -> None:
        """Set before the handshake (`_handshake`), which needs them already."""

    def _handshake(self) -> bool:
        """The server handshake within handshake_timeout(); False (the socket closed, the
        failure counted and logged) if it fails or the client is refused."""
        metrics = self.ctx.tls_counters
        super()._use_kernel_timeouts()
        deadline = time.monotonic() + handshake_timeout(self.ctx.settings)
        obj = self.ssl
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._send_records()
                self._read_records(deadline - time.monotonic())
                if self.eof:
                    raise ConnectionResetError("the client closed during the TLS handshake")
        except ssl.SSLError as error:
            metrics.failed()
            if error.reason == "HTTP_REQUEST":
                self._plain_http()
            else:
                self._send_now()
                self._log_failure(*handshake_failure(error, obj))
            super().close()  # lingering: the alert or the answer is not lost to a reset
            return False
        except OSError:  # the handshake timed out, or the client went away
            metrics.failed()
            self.sock.close()
            return False
        info = tls_info(obj)
        self.session.info.tls = info
        refusal = client_refusal(info)
        if refusal is not None:
            # Without what the handshake's end made (TLS 1.3's session tickets, TLS 1.2's
            # Finished) a refused client has no session to resume past this check.
            self.bio_out.read()
            metrics.failed()
            self._log_failure(*refusal)
            super().close()
            return False
        metrics.succeeded()
        self.handshaken = True
        try:
            self._send_records()
        except OSError:
            self.sock.close()
            return False
        return True

    def _log_failure(self, level: str, ah: str, message: str) -> None:
        info = self.session.info
        self.ctx.error_log.log(
            level, message, module="ssl", ah=ah, client=f"{info.client_addr}:{info.client_port}"
        )

    def _plain_http(self) -> None:
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
            self.sock.sendall(head + body)  # in clear: OpenSSL never saw a handshake
        except OSError:
            pass
        error = HttpError(400, request_line=PLAIN_HTTP_REQUEST_LINE)
        self.session.log_refused(error, len(body))

    def _send_now(self) -> None:
        """What OpenSSL wrote (a failed handshake's alert, close_notify), if the socket takes
        it now: never waited for."""
        try:
            self.sock.send(self.bio_out.read(), socket.MSG_DONTWAIT)
        except OSError:
            pass

    # -- the socket, under the kernel's timeouts ------------------------------------------------

    def _read_records(self, seconds: float) -> None:
        """One read of the socket into the incoming BIO, waiting at most `seconds`; sets
        `eof` when the client closed. Raises TimeoutError."""
        if seconds <= 0:
            raise TimeoutError("timed out reading from the client")
        data = Connection.recv_within(self, seconds)
        if data:
            self.bio_in.write(data)
        else:
            self.eof = True

    def _send_records(self) -> None:
        """Send what OpenSSL wrote; waits at most Timeout (SO_SNDTIMEO). Raises OSError."""
        wire = self.bio_out.read()
        if wire:
            self.sock.sendall(wire)

    def _answer_reading(self) -> None:
        # A tunnel's socket is non-blocking: its TlsStream sends these before its next records.
        if self.sock.getblocking():
            self._send_records()

    # -- the session's transport ------------------------------------------------------------------

    def recv_within(self, seconds: float) -> bytes:
        """The plaintext of the next whole record(s), waiting at most `seconds`; b"" once the
        client closed. Raises TimeoutError, ConnectionError on a broken record."""
        try:
            if self.bio_in.pending:  # records that came with the handshake's last flight
                data = self._decrypt()
                if data or self.eof:
                    return data
            deadline = time.monotonic() + seconds
            while not self.eof:
                self._read_records(seconds)
                data = self._decrypt()
                if data:
                    return data
                # part of a record: the rest within what is left (the first read waits for
                # `seconds` as given, so SO_RCVTIMEO is not set again on every request)
                seconds = deadline - time.monotonic()
        except ssl.SSLError as error:
            raise ConnectionError(f"TLS: {error.reason or error}") from None
        return b""

    def send(self, data: bytes) -> None:
        """Encrypt and send, TLS_CHUNK at a time; waits at most Timeout for each send."""
        if not data:
            return
        write = self.sslobj.write
        if len(data) > TLS_CHUNK:
            view = memoryview(data)
            for start in range(0, len(view), TLS_CHUNK):
                write(view[start : start + TLS_CHUNK])
                self._send_records()
            return
        write(data)
        self.sock.sendall(self.bio_out.read())

    def write_error(self, data: bytes) -> None:
        try:
            self.sslobj.write(data)
        except (ssl.SSLError, ValueError):
            return
        super().write_error(self.bio_out.read())

    def send_continue(self) -> None:
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
        if self.bio_in.pending:
            return False
        return super().nothing_more_to_read()

    def for_tunnel(self) -> TlsStream:  # type: ignore[override]
        return TlsStream(self)

    def close(self) -> None:
        """close_notify (without waiting for the client's), then the lingering close."""
        if self.handshaken:
            self.handshaken = False
            try:
                self.ssl.unwrap()
            except (ssl.SSLError, ValueError):
                pass  # SSLWantReadError: ours is written, the client's not read (nor needed)
            self._send_now()
        super().close()
        self._drop_tls()

    def _drop_tls(self) -> None:
        """Free OpenSSL's state (tens of KiB) now: the connection and its session refer to
        each other, so the objects themselves wait for the cycle collector."""
        self.ssl = self.sslobj = self.bio_in = self.bio_out = None  # type: ignore[assignment]


class TlsStream:
    """A tunnel's view of a TLS client (handlers/proxy/tunnel.py): the socket calls it makes,
    non-blocking, with the bytes passing through the connection's SSLObject."""

    __slots__ = ("conn", "plain", "sock", "wire", "wire_for")
    tls = True  # its half-close is not passed on: shutdown(SHUT_WR) would end the TLS layer

    def __init__(self, conn: TlsConnection) -> None:
        self.conn = conn
        self.sock = conn.sock
        self.plain = bytearray()  # decrypted, not yet taken
        self.wire = b""  # records of the last send() the socket has not taken
        self.wire_for = 0  # the plaintext length those records carry

    def fileno(self) -> int:
        return self.sock.fileno()

    def setblocking(self, flag: bool) -> None:
        self.sock.setblocking(flag)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def pending(self) -> int:
        """Plaintext decrypted and not yet taken, which poll() cannot see."""
        return len(self.plain)

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes of plaintext; b"" at the end. Raises BlockingIOError or
        ssl.SSLWantReadError while no whole record is in, OSError (ConnectionError)."""
        conn = self.conn
        if not self.plain:
            if conn.eof:
                return b""
            data = self.sock.recv(READ_SIZE)
            if not data:
                conn.eof = True
                return b""
            conn.bio_in.write(data)
            try:
                self.plain += conn._decrypt()
            except ssl.SSLError as error:
                raise ConnectionError(f"TLS: {error.reason or error}") from None
            if not self.plain:
                if conn.eof:
                    return b""
                raise ssl.SSLWantReadError("no whole TLS record yet")
        data = bytes(self.plain[:size])
        del self.plain[:size]
        return data

    def send(self, data: bytes | bytearray) -> int:
        """Encrypt up to TLS_CHUNK of `data` and write it; the plaintext count once all its
        records are out. Until then BlockingIOError, and the caller retries with the same
        bytes first (as OpenSSL's SSL_write wants): the records already made are sent."""
        if not self.wire:
            size = min(len(data), TLS_CHUNK)
            self.conn.sslobj.write(bytes(data[:size]))
            self.wire = self.conn.bio_out.read()
            self.wire_for = size
        sent = self.sock.send(self.wire)
        self.wire = self.wire[sent:]
        if self.wire:
            raise BlockingIOError("the socket took part of the records")
        return self.wire_for
