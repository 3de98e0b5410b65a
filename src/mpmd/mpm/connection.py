"""A blocking client connection: prefork's and worker's keep-alive loop, and lingering close.

`serve_blocking()` owns the socket for the connection's whole keep-alive life: it waits for
each request head under timeouts.py's read policy (kernel timeouts, one system call per
read), has the session (session.py) serve it, and closes with a lingering close. It is the
session's blocking transport: sendall, sendfile waiting for writability, error answers
bounded by Timeout. The event MPM never uses it (its transport is event_connection.py).
This module never accepts connections and never forks.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from mpmd.http.response import CONTINUE_100
from mpmd.http.timeouts import HEADERS, first_byte_wait, read_wait, start_stage
from mpmd.mpm.context import ChildContext
from mpmd.mpm.scoreboard import CLOSING, KEEPALIVE
from mpmd.mpm.session import Session

_TIMEVAL = struct.Struct("@ll")  # struct timeval for SO_RCVTIMEO / SO_SNDTIMEO


def _timeval(seconds: float) -> bytes:
    """A kernel socket timeout; never 0, which the kernel reads as "wait forever"."""
    micros = max(1, int(seconds * 1_000_000))
    return _TIMEVAL.pack(micros // 1_000_000, micros % 1_000_000)


LINGER_SECONDS = 2.0  # the prefork/worker lingering close: read and discard for at most 2 s


class Connection:
    """A client socket one thread owns for its whole keep-alive life, and its session."""

    __slots__ = ("_rcvtimeo", "ctx", "protocol", "session", "sock")
    can_hand_over = True

    def __init__(self, sock: socket.socket, peer, ctx: ChildContext, worker=None) -> None:
        self.sock = sock
        self.ctx = ctx
        self.session = Session(self, sock, peer, ctx, worker)
        self.protocol = self.session.protocol
        self._rcvtimeo = -1.0

    # -- the session's transport -----------------------------------------------------------------

    def recv_within(self, seconds: float) -> bytes:
        """One recv() bounded by the kernel's SO_RCVTIMEO: a single system call per read,
        where a Python socket timeout costs a poll() and mode switches around every one."""
        if seconds != self._rcvtimeo:
            self._rcvtimeo = seconds
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(seconds))
        try:
            return self.sock.recv(65536)
        except BlockingIOError:
            raise TimeoutError("timed out reading from the client") from None

    def _use_kernel_timeouts(self) -> None:
        """Blocking mode for a connection one thread owns for its whole life (prefork, worker)."""
        sock = self.sock
        sock.settimeout(None)
        if sock.family != socket.AF_UNIX:  # Listen unix: has no Nagle to turn off
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.ctx.settings.timeout))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        """os.sendfile until `count` bytes are out, waiting for writability up to Timeout."""
        sock_fd = self.sock.fileno()
        timeout = self.ctx.settings.timeout
        while count > 0:
            try:
                sent = os.sendfile(sock_fd, fd, offset, count)
            except BlockingIOError:
                if not select.select([], [sock_fd], [], timeout)[1]:
                    raise TimeoutError("timed out sending a file") from None
                continue
            if sent == 0:
                raise BrokenPipeError("client closed the connection")
            offset += sent
            count -= sent

    def send_continue(self) -> None:
        self.sock.sendall(CONTINUE_100)

    def flush_blocking(self) -> None:
        """Nothing is ever queued: send() and sendfile() return once the kernel has it all."""

    def for_tunnel(self) -> socket.socket:
        return self.sock

    # -- serving ---------------------------------------------------------------------------------

    def serve_blocking(self) -> None:
        """Serve until the client or the keep-alive policy ends the connection (prefork, worker)."""
        protocol = self.protocol
        session = self.session
        settings = self.ctx.settings
        worker = session.worker
        try:
            self._use_kernel_timeouts()
            if session.proxy_header is not None and not self._read_proxy_header():
                return
            while True:
                if not protocol.buffered():
                    first = session.info.requests == 0
                    if not first and worker is not None:
                        worker.set_state(KEEPALIVE)
                    if not self._read_request_head(first):
                        return
                # A response sent before the child began to stop promised keep-alive: the next
                # request is awaited and answered (with close), never cut off.
                if not session.serve_buffered() or settings.keep_alive_timeout <= 0:
                    return
        except (ConnectionError, TimeoutError, OSError):
            return
        except Exception:
            session.log_failure()
            return
        finally:
            self.close()

    def _read_proxy_header(self) -> bool:
        """RemoteIPProxyProtocol: the PROXY header before any HTTP, under the header stage;
        False when it failed (logged by mpm/proxy_header.py) and the connection must close."""
        settings = self.ctx.settings
        session = self.session
        deadline = start_stage(settings, HEADERS, time.monotonic())
        while True:
            wait = read_wait(settings, deadline, time.monotonic())
            try:
                if wait == 0.0:
                    raise TimeoutError
                data = self.recv_within(wait)
            except TimeoutError:
                session.read_timed_out(HEADERS)
                return False
            try:
                rest = session.take_proxy_header(data)
            except ConnectionAbortedError:
                return False
            if rest is not None:
                if rest:
                    self.protocol.feed(rest)
                return True
            deadline.on_bytes(len(data), time.monotonic())

    def _read_request_head(self, first: bool) -> bool:
        """Block until a request head is complete, under KeepAliveTimeout and RequestReadTimeout."""
        protocol = self.protocol
        settings = self.ctx.settings
        try:
            data = self.recv_within(first_byte_wait(settings, first))
        except TimeoutError:
            return False
        if not data:
            return False
        deadline = start_stage(settings, HEADERS, time.monotonic())
        while True:
            protocol.feed(data)
            if protocol.buffered():
                return True
            now = time.monotonic()
            deadline.on_bytes(len(data), now)
            wait = read_wait(settings, deadline, now)
            if wait == 0.0:
                self.session.read_timed_out(protocol.read_stage())
                return False
            try:
                data = self.recv_within(wait)
            except TimeoutError:
                self.session.read_timed_out(protocol.read_stage())
                return False
            if not data:
                protocol.feed(b"")
                return protocol.buffered()

    def write_error(self, data: bytes) -> None:
        """Send an error response, waiting at most Timeout for a client that does not read."""
        try:
            self.sock.settimeout(self.ctx.settings.timeout)
            self.sock.sendall(data)
        except OSError:
            pass

    def nothing_more_to_read(self) -> bool:
        """The client asked to close and sent nothing after its request, so closing cannot
        turn into a reset that destroys the response it is still reading: no linger needed.
        (Apache lingers always; nginx's `lingering_close on` makes the same choice.) Only the
        blocking MPMs skip the linger, where it holds a whole process or thread: the event
        loop lingers for free and, closing second, leaves TIME_WAIT with the client."""
        if not self.session.client_done or self.protocol.buffered():
            return False
        try:
            # Non-blocking first: in timeout mode (an error answer sets it) Python would poll
            # for up to Timeout before even a MSG_DONTWAIT recv.
            self.sock.setblocking(False)
            return not self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return True

    def close(self) -> None:
        """Lingering close: stop sending, drain what the client still sends for up to 2 s."""
        sock = self.sock
        worker = self.session.worker
        if worker is not None:
            worker.set_state(CLOSING)
        # A PROXY header that never completed aborted the connection: httpd closes those at once.
        if self.session.proxy_header is not None or self.nothing_more_to_read():
            sock.close()
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            sock.settimeout(LINGER_SECONDS)
            while sock.recv(512) and time.monotonic() < deadline:
                pass
        except OSError:
            pass
        sock.close()
