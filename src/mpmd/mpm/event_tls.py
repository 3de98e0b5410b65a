"""TLS on the event MPM's connections: an `ssl.SSLObject` over two MemoryBIOs, never waiting.

A TlsConnection is an EventConnection whose bytes pass through OpenSSL in memory: the loop
reads the socket into the incoming BIO and drives the handshake and the decryption of request
heads without ever blocking (the SSLObject never touches the socket), so a client that stalls
in its handshake or dribbles its head holds no thread, as over plain HTTP. Whoever owns the
connection owns its SSLObject: the loop, or the thread running its request (which encrypts its
writes and decrypts the body it reads); they never touch it at the same time.

Two rules keep a connection from stalling on bytes epoll cannot see:
- every read decrypts all that the incoming BIO holds (`_decrypt`, tls_records.py), so what
  is left there is at most part of a record, which needs more bytes from the socket;
- the output queue (`out`) holds plaintext (bytes, or a file range: sendfile cannot go through
  TLS) that is encrypted only as the socket takes it, with the records OpenSSL produced but the
  socket has not taken at its front (`_Wire`), so records leave in the order they were made
  and a large file is never read whole. `out` is None exactly when nothing waits, as on plain.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import time
from collections import deque

from mpmd.http.errors import HttpError
from mpmd.http.timeouts import ReadDeadline, first_byte_wait, read_wait
from mpmd.http.tls import PLAIN_HTTP_REQUEST_LINE, plain_http_response, tls_info
from mpmd.http.tls_verify import client_refusal, handshake_failure
from mpmd.mpm.context import ChildContext
from mpmd.mpm.event_connection import (
    HANDSHAKE,
    READ_SIZE,
    READING,
    WRITE_BUFFER_LIMIT,
    EventConnection,
    _FileSlice,
)
from mpmd.mpm.timeout_queue import DeadlineQueue
from mpmd.mpm.tls_records import TLS_CHUNK, TlsRecords

_ARM_READ = select.EPOLLIN | select.EPOLLONESHOT
_ARM_WRITE = select.EPOLLOUT | select.EPOLLONESHOT


class _Wire:
    """Encrypted records the socket has not taken yet (always at the front of `out`)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)


class TlsConnection(EventConnection, TlsRecords):
    """A client connection on a TLS listener; see the module docstring for its two rules."""

    __slots__ = ("bio_in", "bio_out", "eof", "handshaken", "ssl", "sslobj")
    tls = True
    can_hand_over = False  # the socket carries records: a thread's tunnel would bypass TLS

    def __init__(self, sock: socket.socket, peer, ctx: ChildContext, context: ssl.SSLContext):
        super().__init__(sock, peer, ctx)
        self.bio_in = ssl.MemoryBIO()
        self.bio_out = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self.bio_in, self.bio_out, server_side=True)
        self.sslobj = self.ssl._sslobj  # its C object: read/write/pending without a frame each
        self.handshaken = False
        self.eof = False  # the client sent close_notify or closed its side

    # -- the loop: the handshake and reads ------------------------------------------------------

    def handshake(self) -> int:
        """One step of the handshake, never waiting; the bytes read from the client (for
        RequestReadTimeout's MinRate). Once it is done (`handshaken`), what its end made (the
        TLS 1.3 session tickets; TLS 1.2's last flight) waits in bio_out until the client is
        checked: `release()` sends it, a refused client never gets it. Until then `out` says
        which way to wait (not None: for the socket to take the server's flight).
        Raises ssl.SSLError when the handshake fails, OSError when the client went away."""
        if not self.flush() or self.handshaken:  # done once its last flight is out
            return 0
        try:
            data = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return 0
        if not data:
            raise ConnectionResetError("the client closed during the TLS handshake")
        self.bio_in.write(data)
        try:
            self.ssl.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as error:
            if error.reason != "HTTP_REQUEST":  # that one is answered in clear, no alert
                self._send_alert()
            raise
        else:
            self.handshaken = True
            return len(data)
        self._write_records(self.bio_out.read())  # nothing is queued: flush() said so
        return len(data)

    def release(self) -> None:
        """Send what the handshake's end made (the client passed its checks). Raises OSError."""
        self._write_records(self.bio_out.read())

    def withhold(self) -> None:
        """Drop what the handshake's end made, for a refused client: without a session ticket
        (or, in TLS 1.2, the server's Finished) it cannot resume the session it was refused.
        The handshake is then not done for the close either: no close_notify follows."""
        self.bio_out.read()
        self.handshaken = False

    def _send_alert(self) -> None:
        """The alert OpenSSL made for a failed handshake, if the socket takes it now."""
        try:
            os.write(self.fd, self.bio_out.read())
        except OSError:
            pass

    def read_now(self) -> bytes:
        """The loop's read: the plaintext of what the socket holds now (and of what the
        handshake left in the incoming BIO); b"" once the client closed. Raises
        BlockingIOError while no whole record arrived, ssl.SSLError on a broken one."""
        if self.eof:
            return b""
        if self.bio_in.pending:
            data = self._decrypt()
            if data or self.eof:
                return data
        data = os.read(self.fd, READ_SIZE)
        if not data:
            self.eof = True
            return b""
        self.bio_in.write(data)
        data = self._decrypt()
        if data or self.eof:
            return data
        raise BlockingIOError("no whole TLS record yet")

    def _answer_reading(self) -> None:
        self._emit()
        self.flush()

    # -- a thread's reads (request bodies) --------------------------------------------------------

    def recv_within(self, seconds: float) -> bytes:
        """A thread's body read: waits at most `seconds` for a whole record's plaintext."""
        if self.bio_in.pending:
            data = self._decrypt()
            if data:
                return data
        deadline = time.monotonic() + seconds
        sock = self.sock
        while not self.eof:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError("timed out reading from the client")
            sock.settimeout(wait)
            data = sock.recv(READ_SIZE)
            if not data:
                self.eof = True
                break
            self.bio_in.write(data)
            data = self._decrypt()
            if data:
                return data
        return b""

    # -- writes: plaintext queued, encrypted as the socket takes it -----------------------------

    def queue(self, data: bytes) -> None:
        """Write what the socket takes now and queue the rest; never waits. Raises OSError."""
        out = self.out
        if out is not None:
            out.append(data)
            self.out_bytes += len(data)
            return
        if len(data) <= TLS_CHUNK:  # the common response: encrypted and written at once
            self.sslobj.write(data)
            self._write_records(self.bio_out.read())
            return
        self.out = deque((data,))
        self.out_bytes = len(data)
        self.flush()

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """A file range through TLS: read and encrypted TLS_CHUNK at a time, as the socket
        takes it (the loop finishes what a slow client does not take now)."""
        if count <= 0:
            return
        if self.out is not None and self.out_bytes >= WRITE_BUFFER_LIMIT:
            self.flush_blocking(WRITE_BUFFER_LIMIT // 2)
        item = _FileSlice(fd, offset, count)
        if self.out is not None:
            self.out.append(item)
            return
        self.out = deque((item,))
        self.flush()

    def write_error(self, data: bytes) -> None:
        """An error answer: through TLS once the handshake is done; before it (plain HTTP
        spoken on the TLS port) in clear, past OpenSSL, as mod_ssl answers it."""
        if self.handshaken:
            super().write_error(data)
            return
        if self.out is None:
            self.out = deque()
        self.out.append(_Wire(data))
        self.out_bytes += len(data)
        try:
            self.flush()
        except OSError:
            pass  # the client is gone: the loop's next write or read closes the connection

    def write_now(self, data: bytes) -> bool:
        self.queue(data)
        return self.out is None

    def flush(self) -> bool:
        """Write what the socket takes now, encrypting as it goes; True once nothing is left.
        Raises OSError."""
        out = self.out
        if out is None:
            return True
        fd = self.fd
        while out:
            item = out[0]
            if type(item) is not _Wire:
                self._encrypt_front(out)
                continue
            try:
                sent = os.write(fd, item.data)
            except BlockingIOError:
                return False
            self.out_bytes -= sent
            if sent < len(item.data):
                item.data = item.data[sent:]
                return False
            out.popleft()
        self.out = None
        self.out_bytes = 0
        return True

    def _write_records(self, wire: bytes) -> None:
        """Write records while nothing is queued; what the socket does not take is queued."""
        if not wire:
            return
        try:
            sent = os.write(self.fd, wire)
        except BlockingIOError:
            sent = 0
        if sent < len(wire):
            self.out = deque((_Wire(wire[sent:]),))
            self.out_bytes = len(wire) - sent

    def _encrypt_front(self, out: deque) -> None:
        """Encrypt up to TLS_CHUNK bytes of the first plaintext item; its records go first."""
        item = out[0]
        if type(item) is _FileSlice:
            chunk = os.pread(item.fd, min(TLS_CHUNK, item.count), item.offset)
            if not chunk:
                raise BrokenPipeError("the file ended before its length")
            item.offset += len(chunk)
            item.count -= len(chunk)
            if item.count <= 0:
                os.close(item.fd)
                out.popleft()
        else:
            if len(item) > TLS_CHUNK:
                view = memoryview(item)
                chunk = view[:TLS_CHUNK]
                out[0] = view[TLS_CHUNK:]
            else:
                chunk = item
                out.popleft()
            self.out_bytes -= len(chunk)
        self.sslobj.write(chunk)
        wire = self.bio_out.read()
        out.appendleft(_Wire(wire))
        self.out_bytes += len(wire)

    def _emit(self) -> None:
        """Queue the records OpenSSL made outside a write (handshake, alerts) at the front."""
        data = self.bio_out.read()
        if not data:
            return
        out = self.out
        if out is None:
            self.out = deque((_Wire(data),))
        elif out and type(out[0]) is _Wire:
            out[0] = _Wire(bytes(out[0].data) + data)
        else:
            out.appendleft(_Wire(data))
        self.out_bytes += len(data)

    def end_output(self) -> None:
        """close_notify, best effort (never waited for), then the TCP half-close."""
        if self.handshaken and self.out is None:
            try:
                self.ssl.unwrap()
            except (ssl.SSLError, ValueError):
                pass  # SSLWantReadError: ours is written, the client's not read (nor needed)
            try:
                os.write(self.fd, self.bio_out.read())
            except OSError:
                pass
        super().end_output()

    def drop_tls(self) -> None:
        """At close: free OpenSSL's state (tens of KiB) now. The connection and its session
        refer to each other, so the objects themselves wait for the cycle collector, and a
        child doing thousands of handshakes a second grew by ~130 MiB before it caught up.
        (Not at end_output: a tunnel still reads the client after its half-close.)"""
        self.ssl = self.sslobj = self.bio_in = self.bio_out = None  # type: ignore[assignment]


# -- the loop's handshakes --------------------------------------------------------------------

WAITING, DONE, FAILED = range(3)  # what a handshake step leaves the loop to do


class Handshakes:
    """The child's TLS listeners, and the handshakes the loop drives (connections in
    HANDSHAKE): each step under the handshake's read deadline, in the loop's reading queue."""

    def __init__(
        self,
        ctx: ChildContext,
        contexts: dict[socket.socket, ssl.SSLContext],
        epoll: select.epoll,
        reading: DeadlineQueue,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.contexts = contexts  # listening socket -> its server context (SNI picks the host)
        self.epoll = epoll
        self.reading = reading

    @classmethod
    def for_listeners(
        cls, ctx: ChildContext, listeners, epoll: select.epoll, reading: DeadlineQueue
    ) -> Handshakes | None:
        """The loop's handshakes when one of its listeners is a TLS port, else None."""
        tls = ctx.tls
        if not tls:
            return None
        contexts = {}
        for sock in listeners:
            context = tls.for_listener(sock)
            if context is not None:
                contexts[sock] = context
        return cls(ctx, contexts, epoll, reading) if contexts else None

    def connection(self, sock: socket.socket, peer, listener) -> TlsConnection | None:
        """A TlsConnection for a socket accepted on a TLS port; None on a plain one."""
        context = self.contexts.get(listener)
        return None if context is None else TlsConnection(sock, peer, self.ctx, context)

    def start(self, conn: TlsConnection, now: float) -> None:
        """The handshake's clock starts at accept: RequestReadTimeout handshake= (with its
        MinRate), else Timeout per read (the loop registers the socket)."""
        conn.kind = HANDSHAKE
        conn.reader = reader = ReadDeadline(self.settings.handshake_read_timeout)
        reader.start(now)
        self.reading.set(conn, now + read_wait(self.settings, reader, now))

    def step(self, conn: TlsConnection, now: float) -> int:
        """Drive the handshake as far as the client's bytes allow: WAITING (re-armed, its
        deadline set), DONE (the loop reads the first request), or FAILED (refused, failed, or
        plain HTTP on the TLS port answered: the short lingering close, so that what was
        written, an alert or Apache's 400, is not lost to a reset)."""
        counters = self.ctx.tls_counters
        try:
            count = conn.handshake()
        except ssl.SSLError as error:
            counters.failed()
            if error.reason == "HTTP_REQUEST":
                self._plain_http(conn)
                return FAILED
            level, ah, message = handshake_failure(error, conn.ssl)
            self._log(conn, message, ah, level)
            return FAILED
        except OSError:
            counters.failed()
            return FAILED
        if conn.handshaken and conn.session.info.tls is None:  # it has just ended
            info = conn.session.info.tls = tls_info(conn.ssl)
            refusal = client_refusal(info)
            if refusal is not None:  # closed without its session, as mod_ssl's verify fails
                counters.failed()
                conn.withhold()
                level, ah, message = refusal
                self._log(conn, message, ah, level)
                return FAILED
            counters.succeeded()
            try:
                conn.release()
            except OSError:
                return FAILED
        if conn.handshaken and conn.out is None:  # done, and the client has all it needs
            conn.kind = READING  # the first request is awaited as on plain HTTP
            conn.reader = None
            self.reading.set(conn, now + first_byte_wait(self.settings, first_request=True))
            return DONE
        reader = conn.reader
        reader.on_bytes(count, now)  # type: ignore[union-attr]
        self.reading.set(conn, now + read_wait(self.settings, reader, now))
        self.epoll.modify(conn.fd, _ARM_READ if conn.out is None else _ARM_WRITE)
        return WAITING

    def timed_out(self, conn: TlsConnection) -> None:
        """The handshake's deadline passed: counted, and logged as mod_reqtimeout does when
        its handshake stage (not Timeout) expired; the loop closes the connection."""
        self.ctx.tls_counters.failed()
        if conn.reader is not None and conn.reader.enabled:
            info = conn.session.info
            self.ctx.error_log.log(
                "info",
                "Request handshake read timeout",
                module="reqtimeout",
                ah="AH01382",
                client=f"{info.client_addr}:{info.client_port}",
            )

    def _plain_http(self, conn: TlsConnection) -> None:
        """Apache's 400 in clear text (reference 1.5), logged as its injected request."""
        self._log(conn, "SSL handshake failed: HTTP spoken on HTTPS port; trying to send "
                  "HTML error page", "AH01996")  # fmt: skip
        head, body = plain_http_response()
        conn.write_error(head + body)
        conn.session.log_refused(HttpError(400, request_line=PLAIN_HTTP_REQUEST_LINE), len(body))

    def _log(
        self, conn: TlsConnection, message: str, ah: str | None = None, level: str = "info"
    ) -> None:
        """mod_ssl's lines: info, as a failed handshake is the client's doing, but for a
        certificate refused by configuration (AH02040)."""
        info = conn.session.info
        self.ctx.error_log.log(
            level,
            message,
            module="ssl",
            ah=ah,
            client=f"{info.client_addr}:{info.client_port}",
        )
