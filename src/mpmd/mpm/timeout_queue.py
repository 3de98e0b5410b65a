"""The event loop's timeout queues: where a parked connection waits, and until when.

Apache's `struct timeout_queue`: the connections waiting in one state (keep-alive, write
completion, lingering close) sit in that state's queue with one timeout for the whole queue,
so the queue is in expiry order and expiry is O(1) from its head; the queue keeps its own
count, which is what mod_status publishes. A TimeoutQueue is an insertion-ordered mapping
(connection -> expiry), so a connection that wakes leaves its queue in O(1) and nothing stale
stays behind: the count is the length, never a ledger kept beside it.

`DeadlineQueue` keeps the same contract for the connections the loop is reading, whose
deadlines differ (RequestReadTimeout's stages, Timeout) and move (MinRate extends them): a
heap with lazy deletion, compacted inside once stale entries outnumber live ones.

Both are loop-only (no locking) and read no clock: callers pass `now`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Hashable

COMPACT_SLACK = 1024  # stale heap entries tolerated beyond twice the live ones


class TimeoutQueue:
    """Connections in one state, oldest first, each expiring `timeout` seconds after it came."""

    __slots__ = ("_entries", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._entries: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, conn: Hashable, now: float) -> None:
        """Append `conn`, expiring at now + timeout; one already queued moves to the tail."""
        entries = self._entries
        if conn in entries:
            del entries[conn]
        entries[conn] = now + self.timeout

    def remove(self, conn: Hashable) -> None:
        """Take `conn` out (it woke, moved on or closed); no-op if it is not queued."""
        self._entries.pop(conn, None)

    def next_expiry(self) -> float | None:
        """When the head expires, or None when the queue is empty."""
        entries = self._entries
        if not entries:
            return None
        return entries[next(iter(entries))]

    def expire(self, now: float) -> list:
        """Remove and return, oldest first, every connection whose expiry is at or before `now`."""
        entries = self._entries
        expired = []
        while entries:
            conn = next(iter(entries))
            if entries[conn] > now:
                break
            del entries[conn]
            expired.append(conn)
        return expired

    def pop_oldest(self, count: int) -> list:
        """Remove and return up to `count` connections, oldest first, expired or not."""
        entries = self._entries
        taken = []
        while entries and len(taken) < count:
            taken.append(entries.popitem(last=False)[0])
        return taken


class DeadlineQueue:
    """Connections each with its own deadline, which may move; the earliest expires first.

    A deadline moved later leaves the heap entry where it is: when that entry comes due the
    connection goes back in at its real deadline (one push per move would cost more on the
    hot path, where every read extends the deadline). A deadline moved earlier is pushed."""

    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        # conn -> [its deadline, the deadline of its live heap entry, that entry's number]
        self._live: dict[Hashable, list] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def set(self, conn: Hashable, deadline: float) -> None:
        """Queue `conn` until `deadline`, or move its deadline there."""
        live = self._live.get(conn)
        if live is not None and deadline >= live[1]:
            live[0] = deadline  # its entry comes due first and re-queues it
            return
        seq = next(self._seq)
        self._live[conn] = [deadline, deadline, seq]
        heapq.heappush(self._heap, (deadline, seq, conn))
        if len(self._heap) > 2 * len(self._live) + COMPACT_SLACK:
            self._compact()

    def remove(self, conn: Hashable) -> None:
        """Take `conn` out; its heap entry goes stale. No-op if it is not queued."""
        self._live.pop(conn, None)

    def next_expiry(self) -> float | None:
        """The earliest heap entry: a deadline, or earlier (a stale or moved entry)."""
        heap = self._heap
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list:
        """Remove and return every connection whose deadline is at or before `now`."""
        heap = self._heap
        live = self._live
        expired = []
        while heap and heap[0][0] <= now:
            _, seq, conn = heapq.heappop(heap)
            state = live.get(conn)
            if state is None or state[2] != seq:
                continue  # removed, or re-queued at an earlier deadline: stale
            if state[0] > now:  # moved later: back in at its real deadline
                seq = next(self._seq)
                state[1] = state[0]
                state[2] = seq
                heapq.heappush(heap, (state[0], seq, conn))
                continue
            del live[conn]
            expired.append(conn)
        return expired

    def _compact(self) -> None:
        """Drop stale entries: amortised O(1) per push, and memory bounded by the live count."""
        live = self._live
        self._heap = [
            entry
            for entry in self._heap
            if (state := live.get(entry[2])) is not None and state[2] == entry[1]
        ]
        heapq.heapify(self._heap)
