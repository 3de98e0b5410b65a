"""The event MPM's side of the simulated pool: parked connections and the accept rule.

A kept-alive connection of an event child holds no thread: it is parked until its next request
or KeepAliveTimeout, and still counts toward the child's connection cap. Once every thread of
the child has been busy for BUSY_GRACE_SECONDS, every parked connection closes (Apache's
"kill'em all", as mpmd's loop does it). A stopping child keeps its parked connections to their
timeout and answers a request on one (with close), then exits with its last connection. Whether a child
accepts is event_limit.py's connections_above_limit(), the function the server's loop calls,
with its hysteresis (a child that stopped accepting counts one idle thread less). mpmd goes
beyond Apache when a child is full only because of parked connections: every
REUSE_PROBE_SECONDS it takes clients waiting in the backlog and closes its oldest parked
connections to make room (event_accept.py), and so does the simulation.

A mixin of simulate._Pool, which owns the state; this module holds only event's rules.
"""

from __future__ import annotations

from mpmd.mpm.event_accept import ACCEPT_BATCH, BUSY_GRACE_SECONDS, REUSE_PROBE_SECONDS
from mpmd.mpm.event_limit import connections_above_limit, connections_over_limit
from mpmd.mpm.scoreboard import DEAD

# heap event kinds, after simulate.py's and sim_children.py's
PARK_NEXT, PARK_TIMEOUT, PROBE, KILL = 4, 5, 6, 7


class EventChildren:
    """event's connection rules, over the per-child lists simulate._Pool keeps."""

    def _may_accept(self, c: int) -> bool:
        """Apache's connections_above_limit() for child c (no lingering closes modelled); a
        child that stops accepting looks at the backlog again REUSE_PROBE_SECONDS later."""
        ok = not connections_above_limit(
            self.cconns[c], 0, len(self.cidle[c]), self.tpc, self.factor, not self.caccept[c]
        )
        if not ok and self.caccept[c]:
            self.cprobe[c] = self.now + REUSE_PROBE_SECONDS
        self.caccept[c] = ok
        return ok

    def _park_next(self, c: int, token: int) -> None:
        """A parked connection's next request arrives: a thread of its child, or the wait."""
        entry = self.cparked[c].pop(token, None)
        if entry is None:
            return  # closed meanwhile
        j, served = entry
        if self.cidle[c]:
            w = self._take_thread(c)
            self.wka[w] = served
            self._begin(w, j)
        else:
            self.cqueue[c].append(entry)
            self.nqueued += 1

    def _park_timeout(self, c: int, token: int) -> None:
        if self._close_parked(c, token):
            self._drain(c)

    def _park(self, c: int, j: int, served: int, until: float, kind: int) -> int:
        """Park a kept-alive connection until request j (or its timeout); returns its token."""
        self.ptoken += 1
        self.cparked[c][self.ptoken] = (j, served)
        self._push(until, kind, c, self.ptoken)
        self._want_probe(c)
        return self.ptoken

    def _close_parked(self, c: int, token: int) -> bool:
        """Close a parked connection (its next request reconnects); False if it was gone."""
        entry = self.cparked[c].pop(token, None)
        if entry is None:
            return False
        self.cconns[c] -= 1
        self.nconns -= 1
        if entry[0] >= 0:
            self._fresh(entry[0])
        if self.cquiesce[c] and not self.cconns[c]:
            self._event_exit(c)
        return True

    def _close_oldest(self, c: int, count: int) -> None:
        """Close the `count` connections parked the longest."""
        parked = self.cparked[c]
        for _ in range(min(count, len(parked))):
            self._close_parked(c, next(iter(parked)))

    def _take_thread(self, c: int) -> int:
        """An idle thread of child c gets work; the last one starts the busy clock."""
        idle = self.cidle[c]
        w = idle.pop()
        self._busy()
        if not idle:
            self.csat[c] = self.now
            self._push(self.now + BUSY_GRACE_SECONDS, KILL, c, self.now)
        return w

    def _kill_all(self, c: int, since: float) -> None:
        """Every thread still busy since `since`: close every parked connection."""
        if self.csat[c] == since:
            self._close_oldest(c, len(self.cparked[c]))

    def _kill_if_busy(self, c: int, token: int) -> None:
        """A connection parked while the threads stay busy past the grace closes at once."""
        since = self.csat[c]
        if since >= 0 and self.now - since >= BUSY_GRACE_SECONDS:
            self._close_parked(c, token)

    def _event_exit(self, c: int) -> None:
        """The stopping child's last connection is gone: its threads end, it exits."""
        base = self.cslot[c] * self.tl
        self.st[base : base + self.tpc] = bytes([DEAD]) * self.tpc
        self.cidle[c].clear()
        self.calive[c] = 0
        self._exit(c)

    def _want_probe(self, c: int) -> None:
        """Schedule child c's next look at the backlog if it is full with parked connections."""
        if (
            self.backlog
            and self.cparked[c]
            and not self.caccept[c]
            and not self.cprobing[c]
            and self.cready[c]
            and not self.cquiesce[c]
        ):
            self.cprobing[c] = True
            self._push(max(self.now, self.cprobe[c]), PROBE, c, 0)

    def _probe(self, c: int) -> None:
        """event_accept.Acceptor._reuse_keep_alive: with a thread idle, accept a batch from the
        backlog, closing the oldest parked connections beyond the cap after each."""
        self.cprobing[c] = False
        if self.cquiesce[c] or not self.cready[c]:
            return
        if self._may_accept(c):
            self._drain(c)
            return
        if not self.cidle[c]:
            return
        self.cprobe[c] = self.now + REUSE_PROBE_SECONDS
        backlog = self.backlog
        for _ in range(ACCEPT_BATCH):
            if not backlog or not self.cparked[c]:
                break
            i = backlog.popleft()
            self.caccepted[c] += 1
            self.cconns[c] += 1
            self.nconns += 1
            # counted as the loop counts it: the new connection's request is not read yet
            over = connections_over_limit(
                self.cconns[c], 0, len(self.cidle[c]), self.tpc, self.factor
            )
            self._close_oldest(c, over)
            if self.cidle[c]:
                w = self._take_thread(c)
                self.wka[w] = 0
                self._begin(w, i)
            else:
                self.cqueue[c].append((i, 0))
                self.nqueued += 1
            if self.mcpc and self.caccepted[c] >= self.mcpc:
                self._stop(c)
                return
        self._want_probe(c)
