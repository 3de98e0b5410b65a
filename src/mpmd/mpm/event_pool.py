"""The event child's worker threads, and the one way back from them to the loop.

Owns ThreadsPerChild threads, the queue of requests the loop hands them (at the end of each
of its rounds: see `submit`) and the queue of connections they hand back. A thread owns a
connection only while it runs its request; it then appends (connection, keep-alive?) to
`returned` and never touches the loop's state (its timeout queues, the epoll set, its
counts): the loop takes the connection back at its next iteration. The eventfd wakes the
loop only when it may be asleep in epoll_wait, and once per sleep however many threads
finish meanwhile, so a loop that is already awake pays no system call per request.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue

from mpmd.http.request import Request
from mpmd.mpm.event_connection import EventConnection
from mpmd.mpm.scoreboard import READY


def run_request(conn: EventConnection, request: Request | None) -> bool:
    """Serve `request` and whatever follows it already buffered; True to keep the connection."""
    try:
        return conn.session.serve_buffered(request)
    except OSError:
        return False
    except Exception:  # never leak the connection or the thread's busy count
        conn.session.log_failure()
        return False


class WorkerPool:
    """Threads that run the requests the loop hands over; `busy` and `returned` are the loop's."""

    def __init__(self, threads: int, worker_record: Callable[[int], object] | None) -> None:
        self.threads = threads
        self.busy = 0  # loop-only: requests handed over and not yet taken back
        self.returned: deque[tuple[EventConnection, bool]] = deque()
        # Set by the loop just before epoll_wait; the first thread to hand back clears it and
        # writes the eventfd. Under the GIL either the loop sees the return before it sleeps
        # or the thread sees the flag.
        self.sleeping = False
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._worker_record = worker_record
        self._work: SimpleQueue[tuple[EventConnection, Request] | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.held: list[tuple[EventConnection, Request]] = []  # submitted in this round

    @property
    def idle(self) -> int:
        return self.threads - self.busy

    def start(self) -> None:
        for index in range(self.threads):
            thread = threading.Thread(target=self._main, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, conn: EventConnection, request: Request) -> None:
        """Loop: hand a parsed request over. It is held until the loop's round ends
        (`hand_over`), then waits for the next free thread: a thread woken at once takes the
        GIL from the loop at the loop's next system call, a switch back and forth per request."""
        self.busy += 1
        self.held.append((conn, request))

    def hand_over(self) -> None:
        """Loop, at its round's end: the threads may take the requests held meanwhile."""
        put = self._work.put
        for item in self.held:
            put(item)
        self.held.clear()

    def take_returned(self) -> list[tuple[EventConnection, bool]]:
        """Loop: the connections threads have handed back since the last call."""
        returned = self.returned
        taken = []
        while returned:
            taken.append(returned.popleft())
        self.busy -= len(taken)
        return taken

    def clear_wake(self) -> None:
        """Loop: the eventfd was readable; reset it."""
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            pass

    def stop(self) -> None:
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        os.close(self.wake_fd)

    def _main(self, index: int) -> None:
        record = self._worker_record(index) if self._worker_record else None
        work = self._work
        returned = self.returned
        while True:
            item = work.get()
            if item is None:
                return
            conn, request = item
            conn.session.worker = record
            keep = run_request(conn, request)
            conn.session.worker = None
            if record is not None:
                record.set_state(READY)  # back to `_`: the pool counts this thread idle again
            returned.append((conn, keep))
            if self.sleeping:
                self.sleeping = False
                try:
                    os.eventfd_write(self.wake_fd, 1)
                except OSError:
                    pass  # the loop has ended and closed it
