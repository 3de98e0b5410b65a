"""The simulated pool's children: fork into a slot, start up, stop gracefully, exit.

A child is a number in fork order (pid = number + 1) holding a scoreboard slot; its threads are
positions slot x ThreadLimit + t whose status bytes are what the maintenance policy reads. A
forked child's threads are `S` until `startup` has passed, then `_`. A graceful stop ends idle
threads at once and kept-alive connections (their next request reconnects) and lets busy
threads finish; the slot is free when the last one has. Like mpmd's parent (parent.py), the
simulation forks only into slots with no process, even where worker's policy offers the slot
of a child still finishing.

A mixin of simulate._Pool, which owns the state and the clock.
"""

from __future__ import annotations

from collections import deque

from mpmd.mpm.scoreboard import DEAD, READY, STARTING

CHILD_READY = 3  # heap event kind, after simulate.py's DONE, KA_NEXT, KA_TIMEOUT


class Children:
    """Fork, start-up, graceful stop and exit of the simulated children."""

    def _spawn(self, slot: int, ready: bool) -> None:
        c = len(self.cslot)
        self.cslot.append(slot)
        self.cquiesce.append(0)
        self.cready.append(False)
        self.clast.append(False)
        self.caccepted.append(0)
        self.calive.append(0)
        self.cidle.append([])
        self.cconns.append(0)
        self.caccept.append(True)
        self.cqueue.append(deque())
        self.cparked.append({})
        self.cprobe.append(0.0)
        self.cprobing.append(False)
        self.csat.append(-1.0)
        self.slot_child[slot] = c
        base = slot * self.tl
        for w in range(base, base + self.tpc):
            self.st[w] = STARTING
            self.owner[w] = c
        self.calive[c] = self.tpc
        self.live = [c for c in self.slot_child if c >= 0]
        self.nproc += 1
        self.peak_proc = max(self.peak_proc, self.nproc)
        self.procs_dirty = True
        if ready:
            self._ready(c)
        else:
            self._push(self.now + self.s.startup, CHILD_READY, c, 0)

    def _ready(self, c: int) -> None:
        if self.cquiesce[c]:
            return
        self.cready[c] = True
        base = self.cslot[c] * self.tl
        for w in range(base, base + self.tpc):
            if self.owner[w] == c and self.st[w] == STARTING:
                self._idle(c, w)
        self._drain(c)

    def _idle(self, c: int, w: int) -> None:
        self.st[w] = READY
        if self.event:
            self.cidle[c].append(w)
            self.csat[c] = -1.0
        else:
            self.idle_stack.append(w)

    def _exit(self, c: int) -> None:
        self.cquiesce[c] = 1
        slot = self.cslot[c]
        self.slot_child[slot] = -1
        self.live = [c for c in self.slot_child if c >= 0]
        self.nproc -= 1
        self.procs_dirty = True

    def _thread_exits(self, c: int, w: int) -> None:
        """A thread of a stopping child ends; the child exits with its last one."""
        self.st[w] = DEAD
        self.owner[w] = -1
        self.calive[c] -= 1
        if self.calive[c] == 0:
            self._exit(c)

    def _stop(self, c: int) -> None:
        """Graceful stop (a retirement, MaxConnectionsPerChild): idle threads end now; busy
        ones finish, and one holding a kept-alive connection keeps the promise as mpmd's
        connection.py does (the next request is answered, with close) or times out."""
        if self.prefork:
            if self.st[self.cslot[c]] in (READY, STARTING):
                self.st[self.cslot[c]] = DEAD
                self.calive[c] = 0
                self._exit(c)
            else:
                self.clast[c] = True
            return
        self.cquiesce[c] = 1
        self.procs_dirty = True
        if self.event:  # parked connections stay to their timeout (sim_event.py)
            if not self.cconns[c]:
                self._event_exit(c)
            return
        base = self.cslot[c] * self.tl
        for w in range(base, base + self.tpc):
            if self.st[w] in (READY, STARTING):
                self._thread_exits(c, w)
