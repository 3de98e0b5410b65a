"""Request bodies as the application reads them: `wsgi.input`, bounded and streaming.

Owns the buffer of one request's body and the file-like reading API (PEP 3333). It never
parses framing and never touches a socket: the protocol appends decoded body bytes as it
parses them, and when the buffer runs dry the body asks the protocol to pull more
(`HttpProtocol._pull`, which calls the I/O layer's blocking `recv`). Reading past the end
(Content-Length reached or the last chunk seen) returns b"". Every failure is an HttpError.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from mpmd.http.errors import HttpError

if TYPE_CHECKING:
    from mpmd.http.protocol import HttpProtocol


class EmptyBody:
    """The body of a request that declared none. Stateless, so one instance serves all."""

    __slots__ = ()

    complete = True
    error = None
    continue_owed = False
    buffered = 0

    def read(self, size: int | None = -1, /) -> bytes:
        return b""

    def readline(self, size: int | None = -1, /) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1, /) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


EMPTY_BODY = EmptyBody()


class StreamBody:
    """A Content-Length or chunked body, filled by the protocol while the app reads it.

    `complete`: the last body byte was parsed. `error`: the body can never complete (bad
    chunk framing, LimitRequestBody, timeout, client gone); reads that need more bytes raise
    it. `continue_owed`: the client sent `Expect: 100-continue` and no 100 went out yet; the
    first read that must wait for bytes sends it through the protocol's hook.
    """

    __slots__ = ("_buf", "_protocol", "complete", "continue_owed", "error", "received")

    def __init__(self, protocol: HttpProtocol, *, continue_owed: bool) -> None:
        self._protocol = protocol
        self._buf = bytearray()
        self.complete = False
        self.error: HttpError | None = None
        self.continue_owed = continue_owed
        self.received = 0  # decoded body bytes parsed so far (LimitRequestBody for chunked)

    @property
    def buffered(self) -> int:
        """Bytes parsed and not yet read (the event MPM bounds what it buffers before hand-off)."""
        return len(self._buf)

    def _more(self) -> None:
        """Block until the protocol has parsed more of this body (or raise why it cannot)."""
        if self.error is not None:
            raise self.error
        self._protocol._pull(self)
        if self.error is not None:
            raise self.error

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to `size` bytes; fewer only at the end of the body. -1 or None: everything left."""
        buf = self._buf
        if size is None or size < 0:
            while not self.complete:
                self._more()
            data = bytes(buf)
            buf.clear()
            return data
        while len(buf) < size and not self.complete:
            self._more()
        data = bytes(buf[:size])
        del buf[:size]
        return data

    def readline(self, size: int | None = -1, /) -> bytes:
        buf = self._buf
        limit = -1 if size is None else size
        scanned = 0
        while True:
            newline = buf.find(b"\n", scanned)
            if newline >= 0:
                end = newline + 1
                break
            if (limit >= 0 and len(buf) >= limit) or self.complete:
                end = len(buf)
                break
            scanned = len(buf)
            self._more()
        if 0 <= limit < end:
            end = limit
        data = bytes(buf[:end])
        del buf[:end]
        return data

    def readlines(self, hint: int | None = -1, /) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def discard_buffer(self) -> int:
        """Drop what is buffered (finish_request skipping an unread body); returns the count."""
        count = len(self._buf)
        self._buf.clear()
        return count
