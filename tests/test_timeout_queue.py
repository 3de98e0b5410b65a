"""The event loop's timeout queues as tables: operations in, count, head and expiries out.

Each case is a list of steps on a queue with timeout 10: `("add", conn, now)`,
`("remove", conn)`, `("expire", now, [expected conns])`, `("oldest", count, [expected])`,
then the count and next expiry it must end with (Apache's struct timeout_queue, reference 1.4).
"""

from __future__ import annotations

import pytest

from mpmd.mpm import timeout_queue
from mpmd.mpm.timeout_queue import DeadlineQueue, TimeoutQueue

QUEUE_CASES = {
    "empty": ([], 0, None),
    "fifo order, one timeout": (
        [("add", "a", 0), ("add", "b", 1), ("add", "c", 2)],
        3,
        10,
    ),
    "expiry is from the head, up to now": (
        [("add", "a", 0), ("add", "b", 1), ("add", "c", 2), ("expire", 11, ["a", "b"])],
        1,
        12,
    ),
    "nothing due, nothing expires": (
        [("add", "a", 0), ("expire", 9.9, [])],
        1,
        10,
    ),
    "a woken connection leaves at once": (
        [("add", "a", 0), ("add", "b", 1), ("remove", "a"), ("expire", 10, [])],
        1,
        11,
    ),
    "removing what is not queued is a no-op": (
        [("add", "a", 0), ("remove", "z")],
        1,
        10,
    ),
    "a re-park moves to the tail with a new expiry": (
        [("add", "a", 0), ("add", "b", 1), ("add", "a", 5), ("expire", 11, ["b"])],
        1,
        15,
    ),
    "closing the oldest ignores expiry": (
        [("add", "a", 0), ("add", "b", 1), ("add", "c", 2), ("oldest", 2, ["a", "b"])],
        1,
        12,
    ),
    "closing more than are queued takes all": (
        [("add", "a", 0), ("oldest", 5, ["a"])],
        0,
        None,
    ),
}


@pytest.mark.parametrize(("steps", "count", "head"), QUEUE_CASES.values(), ids=QUEUE_CASES)
def test_timeout_queue(steps, count, head):
    queue = TimeoutQueue(10)
    for op, *args in steps:
        if op == "add":
            queue.add(*args)
        elif op == "remove":
            queue.remove(*args)
        elif op == "expire":
            assert queue.expire(args[0]) == args[1]
        else:
            assert queue.pop_oldest(args[0]) == args[1]
    assert len(queue) == count
    assert queue.next_expiry() == head


# Steps: ("set", conn, deadline), ("remove", conn), ("expire", now, [expected]); then count.
DEADLINE_CASES = {
    "earliest deadline first": (
        [("set", "a", 30), ("set", "b", 10), ("set", "c", 20), ("expire", 20, ["b", "c"])],
        1,
    ),
    "a deadline moved later is kept to its real value": (
        [("set", "a", 10), ("set", "a", 25), ("expire", 10, []), ("expire", 25, ["a"])],
        0,
    ),
    "a deadline moved earlier expires early, once": (
        [("set", "a", 30), ("set", "a", 5), ("expire", 5, ["a"]), ("expire", 30, [])],
        0,
    ),
    "a removed connection never expires": (
        [("set", "a", 10), ("set", "b", 20), ("remove", "a"), ("expire", 30, ["b"])],
        0,
    ),
    "re-queued after removal: only the new deadline counts": (
        [("set", "a", 10), ("remove", "a"), ("set", "a", 40), ("expire", 30, [])],
        1,
    ),
}


@pytest.mark.parametrize(("steps", "count"), DEADLINE_CASES.values(), ids=DEADLINE_CASES)
def test_deadline_queue(steps, count):
    queue = DeadlineQueue()
    for op, *args in steps:
        if op == "set":
            queue.set(*args)
        elif op == "remove":
            queue.remove(*args)
        else:
            assert queue.expire(args[0]) == args[1]
    assert len(queue) == count


def test_deadline_queue_compacts_stale_entries(monkeypatch):
    monkeypatch.setattr(timeout_queue, "COMPACT_SLACK", 4)
    queue = DeadlineQueue()
    for n in range(100):  # every connection leaves reading before its deadline
        queue.set(n, 1000 + n)
        queue.remove(n)
    queue.set("live", 5)
    assert len(queue._heap) <= 2 * len(queue) + 4
    assert queue.expire(2000) == ["live"]
