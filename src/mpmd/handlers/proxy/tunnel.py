"""The blocking tunnel: bytes both ways between a client and a back end after a 101.

mod_proxy_http (Apache 2.4.47+) tunnels an upgraded connection itself: a request whose
`Upgrade` the member accepts (`upgrade=websocket`, a list, or `*`/`ANY`; a ws:// member
accepts WebSocket) goes to the back end with `Connection: Upgrade` and the client's `Upgrade`;
a 101 with the same `Upgrade` starts the tunnel, any other answer is relayed as a normal
response, and a request without Upgrade to a ws:// member is plain HTTP. This module owns the
relay once the 101 is in (handler.py decides all of that and writes the log line): one thread
moves the bytes of both directions until both are done, as ap_proxy_tunnel_run does.

- Bounded: each direction holds at most `BUFFER` bytes; a side that cannot take more stops
  being read from the other, so a slow reader slows the writer instead of filling memory.
- Half-close: an EOF read from one side is passed on, once its bytes are out, as
  shutdown(SHUT_WR) to the other; the other direction goes on until it ends too.
- Idle limit: nothing moved for `idle` seconds (Apache 2.4: the larger of the client's
  `Timeout` and the back end's timeout, i.e. the member's `timeout=`, else `ProxyTimeout`)
  ends the tunnel; so does a reset or a write error on either side.
- It never closes a socket it was given: at the end it shuts both down (the client sees the
  close at once) and the owners close them: the back end's is never pooled again, the
  client's connection is closed by its MPM (the event loop must never see its fd reused).
- TLS: a client on a TLS port (prefork's and worker's TlsStream, mpm/tls_connection.py) is
  read and written through OpenSSL; its half-close is not passed on (it would end the TLS
  layer), and bytes already decrypted count as readable, since poll() cannot see them.
"""

from __future__ import annotations

import select
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

BUFFER = 65536  # bytes one direction may hold: the memory a tunnel costs, twice
_IN = select.POLLIN
_OUT = select.POLLOUT
_FAILED = select.POLLERR | select.POLLNVAL  # a reset, or a socket closed under the tunnel
_NOT_NOW = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

End = Literal["closed", "idle", "error"]


@dataclass(slots=True)
class TunnelResult:
    """What moved, for the access log (%B) and the balancer's finished(sent, received)."""

    to_client: int = 0
    from_client: int = 0
    to_backend: int = 0
    from_backend: int = 0
    end: End = "closed"  # both directions ended, nothing moved for `idle`, or a failure


class _Side:
    """One socket: what waits to be written to it, and whether it still reads and writes."""

    __slots__ = ("fd", "out", "read", "reading", "sock", "tls", "writing", "written")

    def __init__(self, sock: socket.socket, pending: bytes) -> None:
        self.sock = sock
        self.tls = getattr(sock, "tls", False)  # a client on a TLS port: a TlsStream
        self.fd = sock.fileno()
        self.out = bytearray(pending)  # bytes for this socket, read from the other side
        self.reading = True  # no EOF read from it yet
        self.writing = True  # not shut down for writing yet
        self.read = 0
        self.written = 0

    def events(self, other: _Side) -> int:
        """Poll for reading while the other side has room, for writing while bytes wait."""
        wanted = 0
        if self.reading and len(other.out) < BUFFER:
            wanted |= _IN
        if self.out:
            wanted |= _OUT
        return wanted

    def pull(self, other: _Side) -> None:
        """Read what fits into the other side's buffer; EOF stops reading. Raises OSError."""
        room = BUFFER - len(other.out)
        if room <= 0:  # woken for writing only: reading waits for the other side to drain
            return
        try:
            data = self.sock.recv(room)
        except _NOT_NOW:
            return
        if not data:
            self.reading = False
            return
        self.read += len(data)
        other.out += data
        other.push()  # most of the time the other side takes it at once: no extra poll

    def push(self) -> None:
        """Write what the socket takes now. Raises OSError (a reset, a broken pipe)."""
        if not self.out:
            return
        try:
            sent = self.sock.send(self.out)  # TLS: retried with the same bytes first
        except _NOT_NOW:
            return
        del self.out[:sent]
        self.written += sent

    def finish_direction(self, other: _Side) -> None:
        """The other side sent EOF and its bytes are all out here: pass the half-close on."""
        if self.writing and not other.reading and not self.out:
            self.writing = False
            if not self.tls:  # an SSLSocket's shutdown() would drop its TLS layer
                self.sock.shutdown(socket.SHUT_WR)

    def decrypted(self, other: _Side) -> bool:
        """TLS bytes OpenSSL already holds, which poll() cannot see, and room for them."""
        return self.tls and self.reading and len(other.out) < BUFFER and self.sock.pending() > 0


def relay(
    client: socket.socket,
    backend: socket.socket,
    *,
    idle: float,
    to_client: bytes = b"",
    to_backend: bytes = b"",
) -> TunnelResult:
    """Move bytes both ways until both directions ended, `idle` seconds pass with nothing to
    do, or a side fails. `to_client` / `to_backend`: bytes to deliver first (the 101 head and
    what the back end sent behind it; what the client sent behind its request head). Both
    sockets are left non-blocking and shut down, never closed."""
    near = _Side(client, to_client)
    far = _Side(backend, to_backend)
    pairs = ((near, far), (far, near))
    result = TunnelResult()
    poller = select.poll()
    registered: dict[int, int] = {}
    timeout_ms = max(1, int(idle * 1000))
    try:
        client.setblocking(False)
        backend.setblocking(False)
        near.push()
        far.push()
        while True:
            for side, other in pairs:
                side.finish_direction(other)
            if not near.writing and not far.writing:
                break
            for side, other in pairs:
                wanted = side.events(other)
                if registered.get(side.fd) != wanted:
                    if wanted:
                        poller.register(side.fd, wanted)
                    elif side.fd in registered:
                        poller.unregister(side.fd)
                    registered[side.fd] = wanted
            held = [(side.fd, _IN) for side, other in pairs if side.decrypted(other)]
            ready = held or poller.poll(timeout_ms)
            if not ready:
                result.end = "idle"
                break
            for fd, revents in ready:
                side, other = pairs[0] if fd == near.fd else pairs[1]
                if revents & _FAILED:
                    raise ConnectionError(f"poll reported {revents:#x}")
                if revents & (_OUT | select.POLLHUP):
                    side.push()  # after a hang-up: the write's OSError, if bytes wait
                if side.reading and revents & (_IN | select.POLLHUP):
                    side.pull(other)
    except OSError:
        result.end = "error"
    finally:
        for side in (near, far):
            try:
                side.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    result.to_client, result.from_client = near.written, near.read
    result.to_backend, result.from_backend = far.written, far.read
    return result
