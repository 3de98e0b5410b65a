"""The acceptor's sharing and gathering rules (event_accept.py) against sibling records,
without a server.

The integration tests show a burst spread over the real children it gathers in
(test_event_mpm.py), and connections gathered in one child on one CPU and shared again once
its threads run out (test_event_gather.py); here each sibling state the rules must ignore is
checked on its own.
"""

from __future__ import annotations

from types import SimpleNamespace

from mpmd.mpm import event_accept
from mpmd.mpm.event_accept import (
    BUSY_GRACE_SECONDS,
    GATHER_CHECK_SECONDS,
    SATURATION_HOLD_SECONDS,
    SHARE_HOLD_SECONDS,
    SHARE_SLACK,
    Acceptor,
)


class Epoll:
    def __init__(self) -> None:
        self.fds: set[int] = set()

    def register(self, fd: int, mask: int) -> None:
        assert fd not in self.fds
        self.fds.add(fd)

    def unregister(self, fd: int) -> None:
        self.fds.remove(fd)


class Loop:
    """What the acceptor asks of the loop: counts, the poll set, accepted sockets."""

    stopping = False

    def __init__(self, connections: int) -> None:
        self.connections = connections
        self.epoll = Epoll()
        self.ctx = SimpleNamespace(surplus=False, queued=False)
        self.idle = 25

    def open_connections(self) -> int:
        return self.connections

    def add_connection(self, sock, peer, now, listener) -> None:
        self.connections += 1

    def connection_count(self) -> int:
        return self.connections

    def lingering(self) -> int:
        return 0

    def idle_threads(self) -> int:
        return self.idle

    def keep_alive_count(self) -> int:
        return 0


class Listener:
    """A listening socket with `waiting` connections in its backlog."""

    def __init__(self, waiting: int) -> None:
        self.waiting = waiting

    def fileno(self) -> int:
        return 3

    def setblocking(self, flag: bool) -> None:
        pass

    def accept(self):
        if not self.waiting:
            raise BlockingIOError
        self.waiting -= 1
        return object(), ("127.0.0.1", 1)


class Sibling:
    """A sibling's process record as share_view() reads it."""

    def __init__(
        self, connections, *, pid=7, generation=3, quiescing=0, not_accepting=0, saturated=0
    ):
        self.view = (pid, generation, quiescing, not_accepting, saturated, connections)

    def share_view(self):
        return self.view


def acceptor(mine: int, *siblings: Sibling, listeners=(), slot=0, gather=0) -> Acceptor:
    """A child in `slot`; its siblings in the other slots, in order."""
    others = [index for index in range(len(siblings) + 1) if index != slot]
    return Acceptor(
        Loop(mine),  # type: ignore[arg-type]
        list(listeners),
        threads=25,
        factor=2.0,
        max_connections=0,
        process_record=None,
        siblings=dict(zip(others, siblings, strict=True)),
        generation=3,
        slot=slot,
        gather=gather,
    )


def test_a_child_steps_back_only_past_the_slack_over_an_accepting_sibling() -> None:
    assert not acceptor(10, Sibling(10 - SHARE_SLACK)).over_share(0.0)
    assert acceptor(10, Sibling(10 - SHARE_SLACK - 1)).over_share(0.0)
    assert not acceptor(SHARE_SLACK, Sibling(0)).over_share(0.0)  # (never below the slack)
    assert not acceptor(10).over_share(0.0)  # no sibling: one child takes everything


def test_siblings_that_cannot_take_the_connection_do_not_count() -> None:
    for sibling in (
        Sibling(0, pid=0),  # an empty slot
        Sibling(0, generation=2),  # the old generation, finishing
        Sibling(0, quiescing=1),  # stopping
        Sibling(0, not_accepting=1),  # full (Apache's "accepting: no")
    ):
        assert not acceptor(10, sibling).over_share(0.0), sibling.view
    assert acceptor(10, Sibling(0, not_accepting=1), Sibling(2)).over_share(0.0)


def test_a_child_above_its_share_still_takes_the_connection_it_was_woken_for() -> None:
    """The kernel wakes one child per new connection (EPOLLEXCLUSIVE): a child that stepped
    back without accepting would strand it in the backlog while its siblings sleep. It takes
    that one, then steps back (listeners out of its poll set) and leaves the rest."""
    listener = Listener(waiting=5)
    child = acceptor(10, Sibling(2), listeners=[listener])
    child.set_accepting(True, 0.0)
    child.on_listener(listener, 0.0)  # type: ignore[arg-type]
    assert listener.waiting == 4 and child.loop.connections == 11
    assert child.yielding and child.loop.epoll.fds == set()
    child.on_listener(listener, 0.0)  # type: ignore[arg-type]  # (a second ready listener)
    assert listener.waiting == 4
    child.maintain(child.share_until)  # at the latest then, its listeners come back
    assert not child.yielding and child.loop.epoll.fds == {3}


def test_gathering_leaves_connections_to_the_first_children_that_accept() -> None:
    """On one CPU (gather=1) only the first accepting child of the generation takes
    connections, whatever it holds; the others are surplus, and their responses say close."""
    first = acceptor(40, Sibling(0), Sibling(0), gather=1)
    assert not first.over_share(0.0) and not first.surplus and not first.loop.ctx.surplus
    second = acceptor(0, Sibling(40), Sibling(0), slot=1, gather=1)
    assert second.over_share(0.0) and second.surplus and second.loop.ctx.surplus
    # the first is full, stopping, of the old generation, or gone: the next one gathers
    for first_state in (
        Sibling(40, not_accepting=1),
        Sibling(40, quiescing=1),
        Sibling(40, generation=2),
        Sibling(0, pid=0),
    ):
        child = acceptor(0, first_state, Sibling(0), slot=1, gather=1)
        assert not child.over_share(0.0) and not child.surplus, first_state.view
    # two CPUs: the first two share as without gathering, the third is surplus
    assert acceptor(10, Sibling(10 - SHARE_SLACK - 1), Sibling(0), gather=2).over_share(0.0)
    assert not acceptor(10, Sibling(10 - SHARE_SLACK), Sibling(0), gather=2).over_share(0.0)
    assert acceptor(0, Sibling(10), Sibling(10), slot=2, gather=2).surplus is False  # (not yet)
    third = acceptor(0, Sibling(10), Sibling(10), slot=2, gather=2)
    assert third.over_share(0.0) and third.surplus


def test_a_surplus_child_stays_out_while_the_first_ones_accept() -> None:
    listener = Listener(waiting=0)
    first = Sibling(30)
    child = acceptor(0, first, listeners=[listener], slot=1, gather=1)
    child.set_accepting(True, 0.0)
    assert child.loop.epoll.fds == {3}
    child.maintain(0.0)  # it looks, finds itself surplus: its listeners leave the poll set
    assert child.yielding and child.surplus and child.loop.epoll.fds == set()
    now = SHARE_HOLD_SECONDS
    for _ in range(5):  # past the hold, as long as the first one accepts
        now += GATHER_CHECK_SECONDS
        child.maintain(now)
        assert child.yielding and child.loop.epoll.fds == set()
        assert child.share_until > now
    first.view = (7, 3, 0, 1, 0, 30)  # the first one is full: this one accepts again at once
    child.maintain(now)
    assert not child.yielding and not child.surplus and not child.loop.ctx.surplus
    assert child.loop.epoll.fds == {3}


def test_without_gathering_a_child_is_never_surplus() -> None:
    child = acceptor(0, Sibling(40), Sibling(40), slot=2)
    assert not child.over_share(0.0) and not child.surplus
    child.maintain(1.0)
    assert not child.surplus and not child.loop.ctx.surplus


def test_a_saturated_child_has_the_generation_share_again() -> None:
    """A child of the generation whose threads were all busy (accepting or not, the flag in
    its record): no child is surplus, the connections are shared as without gathering."""
    assert not acceptor(0, Sibling(40, saturated=1), Sibling(0), slot=1, gather=1).over_share(0.0)
    full = Sibling(40, saturated=1, not_accepting=1)
    child = acceptor(0, full, Sibling(10), slot=2, gather=1)
    assert not child.over_share(0.0) and not child.surplus
    assert acceptor(0, Sibling(40), Sibling(0), slot=1, gather=1).over_share(0.0)  # (without)


def test_threads_busy_for_the_grace_saturate_a_gathering_child() -> None:
    """Every thread busy for BUSY_GRACE_SECONDS: the child is saturated for
    SATURATION_HOLD_SECONDS (its siblings share), and while requests wait for its threads its
    responses say close (ctx.queued), so its keep-alive clients move; a child that is not
    gathering only counts as busy, as in Apache."""
    record = SimpleNamespace(saturated=0, not_accepting=0, connections=0)
    child = acceptor(30, Sibling(0), gather=1)
    child.process_record = record
    child.loop.idle = -5  # 25 threads busy, 5 requests waiting
    child.update_busy(0.0)
    assert not child.busy and record.saturated == 0 and not child.loop.ctx.queued
    child.update_busy(BUSY_GRACE_SECONDS)
    assert child.busy and record.saturated == 1 and child.loop.ctx.queued
    assert child.over_share(BUSY_GRACE_SECONDS) and not child.surplus  # shared: the sibling next
    child.loop.idle = 0  # no request waits any more: its responses keep alive again
    child.update_busy(BUSY_GRACE_SECONDS + 0.01)
    assert record.saturated == 1 and not child.loop.ctx.queued
    child.loop.idle = 3
    child.update_busy(1.0)
    assert not child.busy and not child.loop.ctx.queued
    child.maintain(SATURATION_HOLD_SECONDS)  # still within the hold
    assert record.saturated == 1
    child.maintain(BUSY_GRACE_SECONDS + 0.01 + SATURATION_HOLD_SECONDS)
    assert record.saturated == 0
    plain = acceptor(30, Sibling(0))
    plain.loop.idle = -5
    plain.update_busy(0.0)
    plain.update_busy(BUSY_GRACE_SECONDS)
    assert plain.busy and not plain.loop.ctx.queued and plain.saturated_until == 0.0


def test_threads_busy_on_the_cpu_do_not_saturate(monkeypatch) -> None:
    """Every thread busy, but the child used most of a CPU meanwhile (a CPU-bound application,
    or the loop's work): more children would only take turns on the same CPUs, so the
    connections stay gathered; only the busy flag (Apache's workers_were_busy) is set."""
    cpu = [0.0]
    monkeypatch.setattr(event_accept.time, "process_time", lambda: cpu[0])
    record = SimpleNamespace(saturated=0, not_accepting=0, connections=0)
    child = acceptor(30, Sibling(0), gather=1)
    child.process_record = record
    child.loop.idle = -5
    child.update_busy(0.0)
    cpu[0] = 0.09  # 90 % of the CPU over the grace
    child.update_busy(BUSY_GRACE_SECONDS)
    assert child.busy and record.saturated == 0 and not child.loop.ctx.queued
    cpu[0] = 0.1  # then 10 % over the next grace: the threads wait on something else
    child.update_busy(2 * BUSY_GRACE_SECONDS)
    assert record.saturated == 1 and child.loop.ctx.queued
