"""The event child's WorkerPool: requests the loop submits wait for the end of its round.

A thread woken for each request as the loop parses it would take the GIL from the loop at the
loop's next system call; the pool holds a round's requests and hands them over together
(`hand_over`, called by the loop before it polls again and before it accepts).
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from mpmd.mpm.event_pool import WorkerPool


def _connection(served: list, done: threading.Event, keep: bool = True):
    """A stand-in for an EventConnection: its session records the request it serves."""

    def serve_buffered(request):
        served.append(request)
        done.set()
        return keep

    return SimpleNamespace(session=SimpleNamespace(serve_buffered=serve_buffered, worker=None))


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_a_submitted_request_waits_for_the_rounds_end():
    pool = WorkerPool(2, None)
    try:
        served: list = []
        conn = _connection(served, threading.Event())
        pool.submit(conn, "request")
        assert pool.busy == 1 and pool.idle == 1  # counted busy at once (the acceptor asks)
        assert pool._work.qsize() == 0  # no thread may take it yet
        assert pool.held == [(conn, "request")]
        pool.hand_over()
        assert pool.held == []
        assert pool._work.qsize() == 1
    finally:
        pool.stop()


def test_handed_over_requests_are_served_and_come_back():
    pool = WorkerPool(2, None)
    pool.start()
    try:
        served: list = []
        first, second = threading.Event(), threading.Event()
        kept = _connection(served, first, keep=True)
        closed = _connection(served, second, keep=False)
        pool.submit(kept, "one")
        pool.submit(closed, "two")
        pool.hand_over()
        assert first.wait(5) and second.wait(5)
        assert sorted(served) == ["one", "two"]
        assert _wait_for(lambda: len(pool.returned) == 2)
        returned = dict((id(conn), keep) for conn, keep in pool.take_returned())
        assert returned == {id(kept): True, id(closed): False}
        assert pool.busy == 0 and pool.idle == 2
    finally:
        pool.stop()
