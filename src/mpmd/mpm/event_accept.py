"""The event child's listening sockets: when it accepts, how much, and making room when full.

Owns the listeners' place in the poll set, Apache's "accepting: no" (the process record's
not_accepting), workers_were_busy, MaxConnectionsPerChild's count, mpmd's reuse of idle
keep-alive connections for clients left waiting in the backlog of a full child, and its
sharing of new connections with the sibling children. The rule itself is arithmetic in
event_limit.py; the connections, their queues and the threads are the loop's (event.py),
which this module asks for counts and hands each accepted socket to.

Sharing (mpmd goes beyond Apache here): an Apache child serves each connection's requests on
its own thread, so the kernel shares CPU among connections wherever they were accepted. An
mpmd child serves all of its connections from one loop thread, and the kernel shares CPU
among children: a child holding most of the connections gets no more CPU than one holding
two, and a keep-alive client that opened its connections in a burst (wrk, a front proxy's
pool) would load one child and leave the others idle. So a child steps back from accepting
(its listeners leave its poll set, "accepting" stays yes) while it holds more than
SHARE_SLACK connections above a sibling of its generation that accepts. It always takes the
first connection of a wake-up (the kernel woke it alone for that one), looks again at each
of its loop's iterations, and takes its listeners back after SHARE_HOLD_SECONDS anyway (its
next accept looks again): no connection waits longer than that while every child happens to
have stepped back, and an idle server sleeps. Each child publishes its count as it accepts.

Gathering (mpmd beyond Apache, too): a child's loop and its threads share one GIL, so a child
uses at most a CPU, and more children than the CPUs the server may run on only take turns on
them, each turn costing the next its caches: measured on one CPU with three children, 10 %
more CPU per proxied request and four times the p99 of one child serving all, and 6-8 % more
per full TLS handshake. So the connections gather in the first `gather` accepting children
of the generation (by slot; `gather` is the CPU count; none with an ASGI application), which
share them as above; any other child is surplus: it keeps its listeners out of its poll set
while those accept (looking again every GATHER_CHECK_SECONDS) and its responses say close
(ChildContext.surplus), so that its keep-alive clients come back to a child that gathers. It
accepts again as soon as one of those stops accepting (full, stopping) or dies.

Threads are what a gathering child can run short of: an application that waits (a database,
a back end) needs more of them than one child has long before the CPU is busy. A gathering
child whose threads were all busy for BUSY_GRACE_SECONDS while it used less than half a CPU
is saturated (its process record says so) for SATURATION_HOLD_SECONDS: meanwhile no child of
the generation is surplus, they share as without gathering, and while requests wait for the
saturated child's threads its responses say close (ChildContext.queued), so that its
keep-alive clients reconnect to siblings with idle threads.
"""

from __future__ import annotations

import resource
import select
import socket
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mpmd.mpm.event_limit import connections_above_limit, connections_over_limit, worker_factor

if TYPE_CHECKING:
    from mpmd.mpm.event import EventLoop

ACCEPT_BATCH = 16  # connections accepted per listener wake-up (the limit is checked for each)
# "All workers busy" must last this long: under the GIL a thread that has sent its response
# may wait milliseconds before it counts itself idle, and bursts shorter than that are not
# the overload Apache's rule (close idle keep-alive connections) is for.
BUSY_GRACE_SECONDS = 0.1
# A full child looks this long after it stopped accepting (and as often while full) for
# clients left waiting in the backlog, which it then takes by closing idle keep-alive
# connections; the delay leaves them first to the children that still accept.
REUSE_PROBE_SECONDS = 0.1
SHARE_SLACK = 1  # connections a child may hold above its least loaded accepting sibling
SHARE_HOLD_SECONDS = 0.01  # the longest a child stays stepped back (its next accept looks again)
SIBLINGS_SECONDS = 1.0  # how often the list of live siblings (slots with a pid) is renewed
GATHER_CHECK_SECONDS = 0.1  # how often a gathering child looks whether it is surplus
# A gathering child whose threads were all busy for BUSY_GRACE_SECONDS counts as saturated
# this long, and meanwhile the generation's children share the connections as without
# gathering (long enough that gathering and sharing do not take turns shedding keep-alive
# clients) ...
SATURATION_HOLD_SECONDS = 60.0
# ... provided the child used less than this share of a CPU meanwhile: its threads wait on
# something else. Busy on the CPU they wait for it (or for the GIL), and more children would
# only take turns on the same CPUs.
SATURATION_CPU_SHARE = 0.5


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: one child may hold thousands of connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError):
            pass
    return soft


class Acceptor:
    """Accepts for one loop within AsyncRequestWorkerFactor and MaxConnectionsPerChild."""

    def __init__(
        self,
        loop: EventLoop,
        listeners: Sequence[socket.socket],
        *,
        threads: int,
        factor: float,
        max_connections: int,
        process_record,
        siblings: Mapping[int, Any] = {},
        generation: int = 0,
        slot: int = 0,
        gather: int = 0,
    ) -> None:
        self.loop = loop
        self.listeners = {sock.fileno(): sock for sock in listeners}
        for sock in listeners:
            sock.setblocking(False)
        self.threads = threads
        self.factor = worker_factor(factor)
        self.max_connections = max_connections  # MaxConnectionsPerChild, 0 = unlimited
        self.process_record = process_record
        self.accepted = 0
        self.accepting = False
        self.busy = False  # Apache's workers_were_busy, set once per loop iteration
        self._saturated_since: float | None = None  # every thread has had a request since
        self._window: tuple[float, float] = (0.0, 0.0)  # (since, CPU time then): saturation
        self.next_probe = 0.0  # full: when to look for clients waiting in the backlog
        self.siblings = siblings  # slot -> the other children's process records (scoreboard's)
        self.generation = generation
        self.slot = slot
        self.gather = gather  # children the connections gather in (0: every child shares)
        self.surplus = False  # gathering, and this child is not one of those
        self.yielding = False  # accepting, but stepped back for a less loaded sibling
        self.share_until = 0.0  # stepped back: the listeners come back by then at the latest
        self._live: list = []  # (slot, record) of the siblings whose slot had a pid when looked
        self._live_due = 0.0
        self._gather_due = 0.0
        self.saturated_until = 0.0  # gathering: saturated until then (0: not saturated)

    def set_accepting(self, on: bool, now: float) -> None:
        """Put the listeners in the poll set or take them out ("accepting: no")."""
        if on == self.accepting or not self.listeners:
            return
        self.accepting = on
        if not on:
            self.next_probe = now + REUSE_PROBE_SECONDS
        if self.yielding:  # (the listeners are already out of the poll set)
            self.yielding = False
        else:
            self._listen(on)
        if self.process_record is not None:
            self.process_record.not_accepting = 0 if on else 1

    def _listen(self, on: bool) -> None:
        epoll = self.loop.epoll
        for fd in self.listeners:
            if on:
                epoll.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
            else:
                epoll.unregister(fd)

    def over_share(self, now: float) -> bool:
        """Leave the next connection to a sibling: this child is surplus (gathering), or a
        sibling of its generation that accepts (of those the connections gather in) holds
        more than SHARE_SLACK fewer connections than this child. Sets `surplus`."""
        mine = self.loop.open_connections()
        if not self.gather and mine <= SHARE_SLACK:
            return False
        if now >= self._live_due:  # (of ServerLimit's slots, usually a few hold a child)
            self._live_due = now + SIBLINGS_SECONDS
            self._live = [(slot, rec) for slot, rec in self.siblings.items() if rec.share_view()[0]]
        accepting = [(self.slot, mine)]
        saturated = now < self.saturated_until
        for slot, record in self._live:
            pid, generation, quiescing, not_accepting, busy, connections = record.share_view()
            if pid and generation == self.generation:
                saturated = saturated or bool(busy)
                if not (quiescing or not_accepting):
                    accepting.append((slot, connections))
        if self.gather:
            if not saturated:  # (else every child shares, as without gathering)
                accepting.sort()
                del accepting[self.gather :]
            surplus = (self.slot, mine) not in accepting
            if surplus != self.surplus:
                self.surplus = self.loop.ctx.surplus = surplus
            if surplus:
                return True
        return mine > SHARE_SLACK and any(
            count + SHARE_SLACK < mine for slot, count in accepting if slot != self.slot
        )

    def _step_back(self, now: float) -> None:
        self.yielding = True
        self.share_until = now + SHARE_HOLD_SECONDS
        self._listen(False)

    def _publish_count(self) -> None:
        if self.process_record is not None and self.siblings:
            self.process_record.connections = self.loop.open_connections()

    def update_busy(self, now: float) -> None:
        """workers_were_busy: every thread has a request, and has had one for the grace. A
        gathering child busy so is saturated (see over_share), and while requests wait for
        its threads its responses say close, so its keep-alive clients move to siblings."""
        idle = self.loop.idle_threads()
        if idle > 0:
            self._saturated_since = None
            self.busy = self.loop.ctx.queued = False
            return
        if self._saturated_since is None:
            self._saturated_since = now
            if self.gather:
                self._window = (now, time.process_time())
        self.busy = now - self._saturated_since >= BUSY_GRACE_SECONDS
        if self.busy and self.gather and (now < self.saturated_until or self._waiting(now)):
            if now >= self.saturated_until and self.process_record is not None:
                self.process_record.saturated = 1
            self.saturated_until = now + SATURATION_HOLD_SECONDS
            self.loop.ctx.queued = idle < 0

    def _waiting(self, now: float) -> bool:
        """Whether the threads, all busy since the window began, used less than
        SATURATION_CPU_SHARE of a CPU (checked once per BUSY_GRACE_SECONDS: a new window)."""
        since, cpu = self._window
        if now - since < BUSY_GRACE_SECONDS:
            return False
        used = time.process_time()
        self._window = (now, used)
        return used - cpu < SATURATION_CPU_SHARE * (now - since)

    def saturation_due(self) -> float | None:
        """Gathering, every thread busy: when that will have lasted the grace (the loop wakes
        then to see it, though no thread returns before)."""
        if self.gather and self._saturated_since is not None and not self.busy:
            return self._saturated_since + BUSY_GRACE_SECONDS
        return None

    def above_limit(self) -> bool:
        """Apache's connections_above_limit(): AsyncRequestWorkerFactor (reference 1.4)."""
        loop = self.loop
        return connections_above_limit(
            loop.connection_count(),
            loop.lingering(),
            loop.idle_threads(),
            self.threads,
            self.factor,
            disabled=not self.accepting,
        )

    def on_listener(self, listener: socket.socket, now: float) -> None:
        if self.loop.stopping or self.yielding:  # (stepped back for an earlier listener)
            return
        if self.threads and (self.busy or self.above_limit()):
            self.set_accepting(False, now)
            return
        self._accept(listener, now, reuse=False)

    def maintain(self, now: float) -> None:
        """Once per loop iteration: accept again once under the limit, or make room when full;
        a child that stepped back for a sibling takes its listeners back once it is no longer
        above its share, or SHARE_HOLD_SECONDS later (its next accept looks again). A gathering
        child looks every GATHER_CHECK_SECONDS whether it is surplus: then it steps back, and
        stays out as long as it is."""
        loop = self.loop
        if self.gather and now >= self._gather_due and not loop.stopping:
            self._gather_due = now + GATHER_CHECK_SECONDS
            if self.saturated_until and now >= self.saturated_until:
                self.saturated_until = 0.0
                if self.process_record is not None:
                    self.process_record.saturated = 0
            if self.over_share(now) and self.surplus and self.accepting and not self.yielding:
                self._step_back(now)
        if self.yielding and not loop.stopping:
            stay = self.over_share(now)
            if self.surplus and stay and now >= self.share_until:
                self.share_until = now + GATHER_CHECK_SECONDS  # out while those gather
            elif not stay or now >= self.share_until:
                self.yielding = False
                self._listen(True)
        if not self.threads or self.accepting or loop.stopping or self.busy:
            return
        if not self.above_limit():
            self.set_accepting(True, now)
        elif self.full_with_keep_alive():
            self._reuse_keep_alive(now)

    def full_with_keep_alive(self) -> bool:
        """Not accepting only because of the connection limit, with keep-alive parked."""
        loop = self.loop
        return (
            self.threads > 0
            and not (self.accepting or loop.stopping or self.busy)
            and loop.keep_alive_count() > 0
        )

    def _accept(self, listener: socket.socket, now: float, reuse: bool) -> None:
        """Accept a batch; with `reuse` (the child is full), each new connection closes the
        oldest idle keep-alive one, and the batch ends when none is left."""
        loop = self.loop
        for index in range(ACCEPT_BATCH):
            if reuse and not loop.keep_alive_count():
                return
            # Never before the first: the kernel woke this child alone for the connection
            # waiting (EPOLLEXCLUSIVE), so a sibling may not know of it.
            if index and self.siblings and not reuse and self.over_share(now):
                self._step_back(now)
                return
            try:
                sock, peer = listener.accept()
            except OSError:  # EAGAIN, or EMFILE and friends: try again on the next wake-up
                return
            loop.add_connection(sock, peer, now, listener)
            self._publish_count()  # (at once: a sibling deciding now must see this one)
            self.accepted += 1
            if reuse:
                loop.close_oldest_keep_alive(
                    connections_over_limit(
                        loop.connection_count(),
                        loop.lingering(),
                        loop.idle_threads(),
                        self.threads,
                        self.factor,
                    )
                )
            if self.max_connections and self.accepted >= self.max_connections:
                loop.begin_graceful_stop()  # MaxConnectionsPerChild counts connections
                return
            if self.threads and not reuse and self.above_limit():
                return

    def _reuse_keep_alive(self, now: float) -> None:
        """An idle keep-alive connection never keeps a new client waiting (mpmd goes beyond
        Apache here, as nginx reuses connections): a child that stopped accepting because it
        is full, with a thread idle and keep-alive connections parked, takes the clients still
        waiting in the backlog and closes its oldest keep-alive connections to make room."""
        if now < self.next_probe:
            return
        self.next_probe = now + REUSE_PROBE_SECONDS
        if self.loop.idle_threads() <= 0:
            return  # every thread busy: the listeners come back, or kill'em all, when it lasts
        for listener in self.listeners.values():
            if self.loop.stopping:
                return
            self._accept(listener, now, reuse=True)
