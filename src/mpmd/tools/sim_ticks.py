"""The simulated parent's once-a-second work: sample the pool, then run the maintenance policy.

Each tick builds the part of a scoreboard Snapshot that mpm/maintenance.py reads from the
simulated state (statuses and process records; a real Snapshot would copy shared memory) and
calls the policy the server runs, then has the pool carry out the decision. When nothing has
changed since a tick whose decision was "do nothing", the policy would decide the same again,
so that tick only samples: long quiet stretches of a trace cost almost nothing.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, cast

from mpmd.mpm.maintenance import SpawnState, prefork_maintenance, threaded_maintenance
from mpmd.mpm.scoreboard import READY, ProcessInfo, Snapshot
from mpmd.tools.sim_report import Series

if TYPE_CHECKING:
    from mpmd.tools.simulate import _Pool


class _Snap:
    """What the maintenance policies read of a Snapshot, without shared memory."""

    __slots__ = ("generation", "processes", "server_limit", "statuses", "thread_limit")

    def __init__(
        self, server_limit: int, thread_limit: int, statuses: bytes, processes: tuple
    ) -> None:
        self.server_limit = server_limit
        self.thread_limit = thread_limit
        self.generation = 0
        self.statuses = statuses
        self.processes: tuple[ProcessInfo, ...] = processes

    def slot_statuses(self, slot: int) -> bytes:
        tl = self.thread_limit
        return self.statuses[slot * tl : (slot + 1) * tl]


def _proc(slot: int, pid: int, quiescing: int, not_accepting: int) -> ProcessInfo:
    return ProcessInfo(slot, pid, 0, quiescing, not_accepting, 0, 0, 0, 0, 0, 0, 0, 0, 0)


class Ticker:
    """Samples the pool and runs maintenance once per simulated second."""

    def __init__(self, pool: _Pool, first: float) -> None:
        self.pool = pool
        self.start = first  # the first tick, when the first sample is taken
        self.state = SpawnState()
        self.policy = prefork_maintenance if pool.prefork else threaded_maintenance
        self.processes = array("l")
        self.busy = array("l")
        self.idle = array("l")
        self.connections = array("l")
        self.queue = array("l")
        self._statuses = b""
        self._not_accepting: tuple[int, ...] = ()
        self._procs: tuple[ProcessInfo, ...] = ()
        self._settled = False  # the last decision did nothing and kept the state
        self._zeros = (0,) * pool.sl

    def tick(self) -> None:
        pool = self.pool
        statuses = bytes(pool.st)
        self.processes.append(pool.nproc)
        self.busy.append(pool.nbusy)
        self.idle.append(statuses.count(READY))
        self.connections.append(pool.nconns if pool.event else pool.nbusy)
        self.queue.append(len(pool.backlog) + pool.nqueued)

        not_accepting = self._accepting_flags()
        changed = pool.procs_dirty or not_accepting != self._not_accepting
        if self._settled and not changed and statuses == self._statuses:
            return
        if changed:
            self._procs = tuple(
                _proc(slot, c + 1, pool.cquiesce[c], not_accepting[slot])
                if c >= 0
                else _proc(slot, 0, 0, 0)
                for slot, c in enumerate(pool.slot_child)
            )
            self._not_accepting = not_accepting
            pool.procs_dirty = False
        self._statuses = statuses
        snap = cast(Snapshot, _Snap(pool.sl, pool.tl, statuses, self._procs))
        decision = self.policy(snap, pool.mpm, self.state)
        self._settled = (
            not decision.spawn_slots
            and decision.retire is None
            and not decision.logs
            and decision.state == self.state
        )
        self.state = decision.state
        for level, ah, message in decision.logs:
            pool.logs.append((pool.now, level, ah, message))
        if decision.retire is not None and pool.slot_child[decision.retire] >= 0:
            pool._stop(pool.slot_child[decision.retire])
        for slot in decision.spawn_slots:
            if pool.slot_child[slot] < 0:  # as parent.py: never into a slot still in use
                pool._spawn(slot, ready=False)

    def _accepting_flags(self) -> tuple[int, ...]:
        """event: each slot's not_accepting as the child's loop last set it (a child that has
        not started its loop yet still shows 0, as its fresh process record does)."""
        pool = self.pool
        if not pool.event:
            return self._zeros
        return tuple(
            1
            if c >= 0 and pool.cready[c] and not pool.cquiesce[c] and not pool._may_accept(c)
            else 0
            for c in pool.slot_child
        )

    def series(self) -> Series:
        return Series(
            self.start, self.processes, self.busy, self.idle, self.connections, self.queue
        )
