"""Loop prototypes (e): asyncio/uvloop with the WSGI call in a thread pool, three ways of
handing it over and back. See bench/loop_prototypes.py."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue

from bench.loop_session import SETTINGS, Responder, error_response
from mpmd.http.errors import HttpError
from mpmd.http.protocol import HttpProtocol
from mpmd.http.request import Request

HandOff = Callable[["ThreadedProtocol", Request], None]


class ThreadedProtocol(asyncio.Protocol):
    """The loop parses and writes; `hand_off` runs the app in a thread and calls finished()
    back in the loop. Reading pauses while a request is out and more are queued, so
    pipelining stays bounded."""

    def __init__(self, hand_off: HandOff) -> None:
        self.protocol = HttpProtocol(SETTINGS)
        self.hand_off = hand_off
        self.transport: asyncio.Transport | None = None
        self.pending: Request | None = None
        self.busy: Request | None = None
        self.paused = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.protocol.feed(data)
        if self.busy is None:
            self._next()
        elif self.protocol.buffered() and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.protocol.feed(b"")
        if self.busy is None:
            self._next()
        return True  # closed by _next once the responses due are written

    def _next(self) -> None:
        protocol, transport = self.protocol, self.transport
        request = self.pending
        if request is None:
            try:
                request = protocol.next_request()
            except HttpError as error:
                transport.write(error_response(error))  # type: ignore[union-attr]
                transport.close()  # type: ignore[union-attr]
                return
            if request is None:
                if protocol.eof:
                    transport.close()  # type: ignore[union-attr]
                return
        if not protocol.body_complete(request):
            self.pending = request
            return
        self.pending = None
        self.busy = request
        self.hand_off(self, request)

    def finished(self, out: bytes | None) -> None:
        """In the loop: the thread's response (None: the app failed)."""
        request, self.busy = self.busy, None
        transport = self.transport
        if out is None:
            out, keep = error_response(HttpError(500)), False
        else:
            keep = self.protocol.finish_request(request)  # type: ignore[arg-type]
        transport.write(out)  # type: ignore[union-attr]
        if not keep:
            transport.close()  # type: ignore[union-attr]
            return
        if self.paused:
            self.paused = False
            transport.resume_reading()  # type: ignore[union-attr]
        self._next()


def executor_hand_off(respond: Responder, threads: int) -> HandOff:
    """(e1, e2) `loop.run_in_executor`: a future per request, each result wakes the loop."""
    pool = ThreadPoolExecutor(max_workers=threads)

    def hand_off(proto: ThreadedProtocol, request: Request) -> None:
        future = asyncio.get_running_loop().run_in_executor(pool, respond, request)
        future.add_done_callback(
            lambda done: proto.finished(None if done.exception() else done.result())
        )

    return hand_off


class QueueHandOff:
    """(e3, e4) a lean hand-off: threads take requests from a SimpleQueue and append results
    to a deque; one call_soon_threadsafe drains every result that is in (a flag coalesces the
    wake-ups), as event.py's threads avoid waking the loop per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop, respond: Responder, threads: int) -> None:
        self.loop = loop
        self.respond = respond
        self.work: SimpleQueue[tuple[ThreadedProtocol, Request]] = SimpleQueue()
        self.done: deque[tuple[ThreadedProtocol, bytes | None]] = deque()
        self.lock = threading.Lock()
        self.scheduled = False
        for _ in range(threads):
            threading.Thread(target=self._worker, daemon=True).start()

    def __call__(self, proto: ThreadedProtocol, request: Request) -> None:
        self.work.put((proto, request))

    def _worker(self) -> None:
        work, respond, done = self.work, self.respond, self.done
        while True:
            proto, request = work.get()
            try:
                out: bytes | None = respond(request)
            except Exception:
                out = None
            done.append((proto, out))
            with self.lock:
                if self.scheduled:
                    continue
                self.scheduled = True
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self.lock:
            self.scheduled = False  # results appended from now on schedule another drain
        done = self.done
        while done:
            proto, out = done.popleft()
            proto.finished(out)


class DirectProtocol(asyncio.Protocol):
    """(e5, e6) event.py's hand-off on an asyncio loop. While a thread has the connection
    (`busy`) it owns the parser, under a per-connection lock the loop also takes to feed it;
    it writes the response itself, on its own dup of the socket (only the loop closes, and a
    closed connection's dup is dropped under the lock, so the number is never reused under
    the thread), and parks the connection by clearing `busy`: no wake-up on the hot path.
    Only what the socket did not take, a close, or resuming a paused reader go to the loop."""

    def __init__(self, work: SimpleQueue, loop: asyncio.AbstractEventLoop) -> None:
        self.protocol = HttpProtocol(SETTINGS)
        self.work = work
        self.loop = loop
        self.lock = threading.Lock()
        self.transport: asyncio.Transport | None = None
        self.wfd = -1
        self.pending: Request | None = None
        self.busy = False
        self.paused = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.wfd = os.dup(transport.get_extra_info("socket").fileno())

    def connection_lost(self, exc) -> None:
        with self.lock:
            os.close(self.wfd)
            self.wfd = -1

    def data_received(self, data: bytes) -> None:
        with self.lock:
            self.protocol.feed(data)
            if self.busy:
                if self.protocol.buffered() and not self.paused:
                    self.paused = True
                    self.transport.pause_reading()  # type: ignore[union-attr]
                return
            request = self.take()
        if request is not None:
            self.work.put((self, request))

    def eof_received(self) -> bool:
        self.data_received(b"")
        return True  # closed by take() once the responses due are written

    def take(self) -> Request | None:
        """Under the lock, not busy: the next request to hand over (now busy), or None."""
        protocol = self.protocol
        request = self.pending
        if request is None:
            try:
                request = protocol.next_request()
            except HttpError as error:
                self.busy = True
                self.loop.call_soon_threadsafe(self.rest, error_response(error), False)
                return None
            if request is None:
                if protocol.eof:
                    self.busy = True
                    self.loop.call_soon_threadsafe(self.rest, b"", False)
                return None
        if not protocol.body_complete(request):
            self.pending = request
            return None
        self.pending = None
        self.busy = True
        return request

    def rest(self, out: bytes, keep: bool) -> None:
        """In the loop: write what the thread could not, then close or carry on."""
        transport = self.transport
        if out:
            transport.write(out)  # type: ignore[union-attr]
        if not keep:
            transport.close()  # type: ignore[union-attr]
            return
        with self.lock:
            self.busy = False
            request = self.take()
        self.resume()
        if request is not None:
            self.work.put((self, request))

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]


def direct_workers(respond: Responder, threads: int) -> SimpleQueue:
    """Start the threads of DirectProtocol; returns the queue they take requests from."""
    work: SimpleQueue[tuple[DirectProtocol, Request]] = SimpleQueue()

    def worker() -> None:
        while True:
            conn, request = work.get()
            while request is not None:
                try:
                    out: bytes | None = respond(request)
                except Exception:
                    out = None
                with conn.lock:
                    if out is None:
                        out, keep = error_response(HttpError(500)), False
                    else:
                        keep = conn.protocol.finish_request(request)
                    sent = 0
                    if conn.wfd >= 0:
                        try:
                            sent = os.write(conn.wfd, out)
                        except BlockingIOError:
                            pass
                        except OSError:
                            sent, keep = len(out), False
                    if sent < len(out) or not keep:  # stays busy until the loop took over
                        conn.loop.call_soon_threadsafe(conn.rest, out[sent:], keep)
                        break
                    conn.busy = False
                    request = conn.take()
                    if request is None and conn.paused:
                        conn.loop.call_soon_threadsafe(conn.resume)

    for _ in range(threads):
        threading.Thread(target=worker, daemon=True).start()
    return work
