"""A WebSocket tunnel in the event loop: after a back end's 101, bytes both ways, no thread.

mod_proxy_http's tunnel (Apache 2.4.47+, ap_proxy_tunnel_run): once a member allowed to
upgrade (`upgrade=websocket`, or a ws:// member) answers an `Upgrade: websocket` request
with 101, the client and the back end are two byte streams joined until either side closes
or nothing moves for max(Timeout, ProxyTimeout). Backpressure both ways: the client is not
read while bytes for the back end wait, and the back end is not read while more than
CLIENT_OUT_LIMIT bytes wait for the client. Both sockets are EPOLLONESHOT and re-armed after
every event for exactly what is wanted. The tunnel owns neither socket: at its end it hands
both back to its request (Proxied.tunnel_closed), which closes the back end's and gives the
client's to the loop (what is queued for the client is still written, then it closes).
"""

from __future__ import annotations

import os
import select
from collections import deque
from typing import TYPE_CHECKING

from mpmd.handlers.proxy.backend import ResponseHead, client_headers
from mpmd.http.exchange import Exchange
from mpmd.http.response import build_head

if TYPE_CHECKING:
    from mpmd.mpm.event_proxy_request import Proxied

READ_SIZE = 65536
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ONESHOT = select.EPOLLONESHOT


def switching_head(head: ResponseHead, exchange: Exchange, balancers) -> bytes:
    """The 101 the client gets: the back end's headers as for any response, its Upgrade and
    `Connection: Upgrade`. The exchange records it for the access log."""
    upgrade = next((v for n, v in head.headers if n.lower() == "upgrade"), "websocket")
    host = exchange.request.header("host") or exchange.vhost.server_name
    headers = client_headers(head, exchange.vhost.proxy, balancers, base=f"http://{host}", via=None)
    headers += [("Upgrade", upgrade), ("Connection", "Upgrade")]
    data = build_head("HTTP/1.1", head.status_line, headers, content_length=None,
                      chunked=False, keep_alive=True, now=exchange.start_time)  # fmt: skip
    exchange.status = head.status
    exchange.status_line = head.status_line
    exchange.head_sent = True
    exchange.head_bytes = len(data)
    return data


class Tunnel:
    """The two streams of one upgraded connection."""

    def __init__(self, proxied: Proxied, limit: int, idle: float, now: float) -> None:
        self.proxied = proxied
        self.conn = proxied.conn
        self.backend = proxied.backend
        self.epoll = proxied.proxy.epoll
        self.limit = limit  # client bytes queued above which the back end is not read
        self.idle = idle
        self.out: deque[memoryview] = deque()  # client bytes the back end has not taken yet
        self.closed = False

    def on_backend(self, mask: int, now: float) -> None:
        if self.out and not self._write_backend():
            return
        conn = self.conn
        for _ in range(4):
            if conn.out_bytes > self.limit:
                break
            try:
                data = os.read(self.backend.fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._close()
                return
            try:
                conn.queue(data)
            except OSError:
                self._close()
                return
        self.arm(now)

    def on_client(self, now: float) -> None:
        conn = self.conn
        try:
            conn.flush()
        except OSError:
            self._close()
            return
        if not self.out:
            try:
                data = os.read(conn.fd, READ_SIZE)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data is not None:
                if not data:
                    self._close()
                    return
                self.out.append(memoryview(data))
                if not self._write_backend():
                    return
        self.arm(now)

    def arm(self, now: float) -> None:
        """Re-arm both sockets for what is wanted now; the idle clock restarts."""
        conn = self.conn
        client = _ONESHOT | (0 if self.out else _IN) | (_OUT if conn.out is not None else 0)
        backend = _ONESHOT | (_IN if conn.out_bytes <= self.limit else 0)
        self.epoll.modify(conn.fd, client)
        self.backend.arm(backend | (_OUT if self.out else 0))
        self.proxied.tunnel_wait(self.idle, now)

    def on_timeout(self) -> None:
        self._close()

    def _write_backend(self) -> bool:
        """Write what the back end takes now; False if the tunnel closed."""
        out = self.out
        try:
            while out:
                sent = os.write(self.backend.fd, out[0])
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
            self.proxied.tunnel_closed()
