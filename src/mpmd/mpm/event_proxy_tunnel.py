"""A tunnel in the event loop: after a back end's 101, bytes both ways, no thread.

tunnel.py's relay for the requests the loop proxies, with the same visible behaviour: the same
101 head (backend.switching_head), the client's bytes held behind its upgrade request's head
delivered to the back end first (HttpProtocol.take_upgraded), an EOF from one side passed on
as shutdown(SHUT_WR) to the other once its bytes are out while the other direction goes on,
and the end when both directions ended, when nothing moved for the idle limit (the larger of
`Timeout` and the member's timeout) or on a reset. Backpressure both ways: the client is not
read while bytes for the back end wait, and the back end is not read while more than `limit`
bytes wait for the client. Both sockets are EPOLLONESHOT and re-armed after every event for
exactly what is wanted; a side that wants nothing is left disarmed (a hang-up it reports once
more finds nothing to do). The tunnel owns neither socket: at its end it hands both back to
its request (Proxied.tunnel_closed), which closes the back end's and gives the client's to the
loop (what is queued for the client is still written, then it closes).
"""

from __future__ import annotations

import os
import select
import socket
from collections import deque
from typing import TYPE_CHECKING

from mpmd.handlers.proxy.backend import ResponseHead
from mpmd.handlers.proxy.client_head import switching_head
from mpmd.handlers.proxy.handler import client_base, via_for

if TYPE_CHECKING:
    from mpmd.mpm.event_proxy_request import Proxied

READ_SIZE = 65536
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ONESHOT = select.EPOLLONESHOT


class Tunnel:
    """The two streams of one upgraded connection."""

    def __init__(self, proxied: Proxied, held: bytes, limit: int, idle: float) -> None:
        self.proxied = proxied
        self.conn = proxied.conn
        self.backend = proxied.backend
        self.epoll = proxied.proxy.epoll
        self.limit = limit  # client bytes queued above which the back end is not read
        self.idle = idle
        # client bytes the back end has not taken yet: first those held behind the head
        self.out: deque[memoryview] = deque([memoryview(held)] if held else ())
        self.to_client = 0  # bytes queued for the client after the 101 head (%B)
        self.client_eof = self.backend_eof = False  # an EOF was read from that side
        self.backend_shut = self.client_shut = False  # the EOF was passed on to that side
        self.closed = False

    @classmethod
    def start(
        cls, proxied: Proxied, head: ResponseHead, protocol: str, limit: int, now: float
    ) -> None:
        """The back end switched protocols: the 101 to the client (logged as the response),
        what the back end sent behind it, then bytes both ways."""
        exchange = proxied.exchange
        vhost = exchange.vhost
        status_line, headers, data = switching_head(
            head, protocol, vhost.proxy, proxied.handler.balancers,
            base=client_base(exchange), via=via_for(exchange),
        )  # fmt: skip
        exchange.status = 101
        exchange.status_line = status_line
        exchange.response_headers = headers
        exchange.head_sent = True
        exchange.head_bytes = len(data)
        exchange.keep_alive = False
        proxied.handler.log("debug", f"HTTP: tunneling protocol {protocol}", exchange,
                            ah="AH10239")  # fmt: skip
        _, held = exchange.conn.take_over()  # type: ignore[misc]
        idle = max(vhost.http.timeout, proxied.pool.timeout)  # type: ignore[union-attr]
        tunnel = proxied.tunnel = cls(proxied, held, limit, idle)
        proxied.proxy.fds[tunnel.backend.fd] = tunnel.on_backend
        early = proxied.parser.tunnel_data  # type: ignore[union-attr]
        try:
            tunnel.conn.queue(data + early)
        except OSError:
            exchange.aborted = True
            tunnel._close()
            return
        tunnel.to_client = len(early)
        if tunnel.out and not tunnel._write_backend():
            return
        tunnel._step(now)

    def on_backend(self, mask: int, now: float) -> None:
        if self.out and not self._write_backend():
            return
        conn = self.conn
        for _ in range(4):
            if self.backend_eof or conn.out_bytes > self.limit:
                break
            try:
                data = os.read(self.backend.fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                self._close()
                return
            if not data:
                self.backend_eof = True
                break
            self.proxied.received += len(data)
            try:
                conn.queue(data)
            except OSError:
                self._close()
                return
            self.to_client += len(data)
        self._step(now)

    def on_client(self, now: float) -> None:
        try:
            self.conn.flush()
        except OSError:
            self._close()
            return
        if not self.out and not self.client_eof:
            try:
                data = self.conn.read_now()
            except BlockingIOError:
                data = None
            except OSError:
                self._close()
                return
            if data == b"":
                self.client_eof = True
            elif data is not None:
                self.out.append(memoryview(data))
                if not self._write_backend():
                    return
        self._step(now)

    def on_timeout(self) -> None:
        self._close()

    def _step(self, now: float) -> None:
        """Pass on the half-closes that are due, end once both directions ended, else re-arm
        both sockets for what is wanted now; the idle clock restarts."""
        conn = self.conn
        try:
            if self.client_eof and not self.out and not self.backend_shut:
                self.backend_shut = True
                self.backend.sock.shutdown(socket.SHUT_WR)
            if self.backend_eof and conn.out is None and not self.client_shut:
                self.client_shut = True
                conn.end_output()
        except OSError:
            self._close()
            return
        if self.backend_shut and self.backend_eof:  # both directions ended (the loop writes
            self._close()  # what the client has not taken yet, then closes)
            return
        client = (0 if self.out or self.client_eof else _IN) | (_OUT if conn.out else 0)
        if client:
            self.epoll.modify(conn.fd, client | _ONESHOT)
        self.backend.watch(
            (0 if self.backend_eof or conn.out_bytes > self.limit else _IN)
            | (_OUT if self.out else 0)
        )
        self.proxied.tunnel_wait(self.idle, now)

    def _write_backend(self) -> bool:
        """Write what the back end takes now; False if the tunnel closed."""
        out = self.out
        try:
            while out:
                sent = os.write(self.backend.fd, out[0])
                self.proxied.sent += sent
                if sent < len(out[0]):
                    out[0] = out[0][sent:]
                    break
                out.popleft()
        except BlockingIOError:
            pass
        except OSError:
            self._close()
            return False
        return True

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.out.clear()
            self.proxied.exchange.bytes_out = self.to_client
            self.proxied.tunnel_closed()
