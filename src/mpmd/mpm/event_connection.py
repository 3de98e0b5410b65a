"""A client connection as the event MPM's loop keeps it: writes that never wait, plus its place.

The session's transport in the event MPM (session.py serves the requests): it composes a
Session rather than extending the blocking Connection, so the loop can reach no blocking
write: only a thread's send(), sendfile() and send_continue() ever wait for the client.
Owns the connection's unsent output. `send()` and `sendfile()` write what the socket takes
now and queue the rest (bytes, or a duplicated file descriptor and a range); the event loop
finishes the queue when the socket becomes writable (write completion), so a slow reader
holds no thread. A thread streaming more than WRITE_BUFFER_LIMIT waits for the client (under
Timeout) instead of buffering without bound; error responses, which the loop writes too, are
only queued, never waited for. The fields the loop uses to place the connection
(kind, reader, request) live here too, so an idle connection is one object. Never touches
the loop's queues or the epoll set.
"""

from __future__ import annotations

import os
import select
import socket
from collections import deque

from mpmd.http.request import Request
from mpmd.http.response import CONTINUE_100
from mpmd.http.timeouts import ReadDeadline
from mpmd.mpm.context import ChildContext
from mpmd.mpm.session import Session

READ_SIZE = 65536
WRITE_BUFFER_LIMIT = 256 * 1024  # queued response bytes before a writing thread waits

# Where a connection is (one place at a time). The queues of the first five are the timeout
# classes; IN_THREAD connections belong to a worker thread, IN_PROXY ones to a request the
# loop proxies (event_proxy.py, its deadlines), CLOSED ones to nobody; HANDSHAKE ones are in
# their TLS handshake (event_tls.py), under a read deadline like READING ones.
READING, KEEP_ALIVE, WRITE_COMPLETION, LINGER, SHORT_LINGER, IN_THREAD, CLOSED, IN_PROXY = range(8)
HANDSHAKE = 8
IN_ASGI = 9  # held by the event child's ASGI loop (event_asgi.py)


class _FileSlice:
    """A sendfile the socket could not take at once: a duplicated descriptor and what is left."""

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = os.dup(fd)  # the handler closes its own descriptor when it returns
        self.offset = offset
        self.count = count


class EventConnection:
    """A client socket as the event loop keeps it: where it is, its session, unsent output.

    Its socket is in timeout mode (non-blocking at the OS level, Timeout for the blocking
    reads a thread makes through the protocol); send() and sendfile() write what the socket
    takes now and queue the rest in `out`, which the loop finishes (write completion).
    """

    __slots__ = (
        "after_error",
        "ctx",
        "fd",
        "keep",
        "kind",
        "out",
        "out_bytes",
        "protocol",
        "reader",
        "request",
        "session",
        "sock",
    )
    tls = False  # TlsConnection (event_tls.py): reads and writes go through an SSLObject
    can_hand_over = True  # a thread's tunnel may take the socket (Session.take_over)

    def __init__(self, sock: socket.socket, peer, ctx: ChildContext) -> None:
        self.sock = sock
        self.ctx = ctx
        self.fd = sock.fileno()
        self.session = Session(self, sock, peer, ctx)
        self.protocol = self.session.protocol
        self.kind = READING
        self.reader: ReadDeadline | None = None  # RequestReadTimeout stage being read
        self.request: Request | None = None  # parsed in the loop, body still arriving
        self.keep = True  # after write completion: keep alive, or close
        self.after_error = False  # after write completion: the short lingering close
        self.out: deque | None = None  # bytes / _FileSlice not yet written, None when empty
        self.out_bytes = 0

    def read_now(self) -> bytes:
        """One read that never waits (the loop's, the proxy's): b"" once the client closed;
        raises BlockingIOError when nothing arrived."""
        return os.read(self.fd, READ_SIZE)

    def write_now(self, data: bytes) -> bool:
        """A few bytes from the loop (100 Continue); False if the socket would not take them."""
        try:
            return os.write(self.fd, data) == len(data)
        except OSError:
            return False

    def end_output(self) -> None:
        """Nothing more is sent (lingering close, a tunnel's half-close). Raises OSError."""
        self.sock.shutdown(socket.SHUT_WR)

    def send(self, data: bytes) -> None:
        if self.out is not None and self.out_bytes >= WRITE_BUFFER_LIMIT:
            self.flush_blocking(WRITE_BUFFER_LIMIT // 2)  # a streaming app waits for the client
        self.queue(data)

    def queue(self, data: bytes) -> None:
        """Write what the socket takes now and queue the rest behind any queued output; never
        waits, so the loop may call it. Raises OSError."""
        if self.out is None:
            try:
                sent = os.write(self.fd, data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            self.out = deque()
            data = memoryview(data)[sent:]
        self.out.append(data)
        self.out_bytes += len(data)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        if self.out is None:
            sock_fd = self.fd
            while count > 0:
                try:
                    sent = os.sendfile(sock_fd, fd, offset, count)
                except BlockingIOError:
                    break
                if sent == 0:
                    raise BrokenPipeError("client closed the connection")
                offset += sent
                count -= sent
            if count <= 0:
                return
            self.out = deque()
        elif self.out_bytes >= WRITE_BUFFER_LIMIT:
            self.flush_blocking(WRITE_BUFFER_LIMIT // 2)
            if self.out is None:
                self.sendfile(fd, offset, count)
                return
        self.out.append(_FileSlice(fd, offset, count))

    def flush(self) -> bool:
        """Write what the socket takes now; True once nothing is left. Raises OSError."""
        out = self.out
        if out is None:
            return True
        fd = self.fd
        while out:
            item = out[0]
            if type(item) is _FileSlice:
                try:
                    sent = os.sendfile(fd, item.fd, item.offset, item.count)
                except BlockingIOError:
                    return False
                if sent == 0:
                    raise BrokenPipeError("client closed the connection")
                item.offset += sent
                item.count -= sent
                if item.count > 0:
                    continue
                os.close(item.fd)
            else:
                try:
                    sent = os.write(fd, item)
                except BlockingIOError:
                    return False
                self.out_bytes -= sent
                if sent < len(item):
                    out[0] = memoryview(item)[sent:]
                    continue
            out.popleft()
        self.out = None
        self.out_bytes = 0
        return True

    def for_tunnel(self) -> socket.socket:
        return self.sock

    def flush_blocking(self, target: int = 0) -> None:
        """Wait (Timeout per step) until at most `target` bytes are queued: a thread's send."""
        if self.out is None:
            return
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        timeout_ms = int(self.ctx.settings.timeout * 1000)
        while not self.flush() and (target == 0 or self.out_bytes > target):
            if not poller.poll(timeout_ms):
                raise TimeoutError("timed out writing to the client")

    def discard_output(self) -> None:
        out = self.out
        if out is not None:
            for item in out:
                if type(item) is _FileSlice:
                    os.close(item.fd)
            self.out = None
            self.out_bytes = 0

    def recv_within(self, seconds: float) -> bytes:
        """A thread's body read (the session's recv): waits at most `seconds`."""
        self.sock.settimeout(seconds)
        return self.sock.recv(65536)

    def send_continue(self) -> None:
        """A thread's body read only (HttpProtocol._pull): the loop writes its 100 Continue
        with one non-blocking write (write_now)."""
        self.queue(CONTINUE_100)  # never ahead of a previous response still queued
        self.flush_blocking()

    def write_error(self, data: bytes) -> None:
        """Queued behind what is still unsent and left to write completion: the loop answers
        refused requests itself, and a client that does not read must not stall it."""
        try:
            self.queue(data)
        except OSError:
            pass  # the client is gone: the loop's next write or read closes the connection
