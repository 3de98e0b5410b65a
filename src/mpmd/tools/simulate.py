"""A discrete-event simulation of one MPM's pool, the core of `mpmctl plan` (issue 12).

Owns a simulated clock and everything the clock moves: children and their threads in
scoreboard slots, client connections (kept alive or not), the listen backlog, and the requests
of a trace replayed through them. It never decides the pool itself: once per simulated second
it builds a scoreboard snapshot of its state and calls the same pure maintenance policy the
parent runs (mpm/maintenance.py: the 1-second tick, the 1->32 spawn doubling, one retirement a
second, MaxRequestWorkers, ServerLimit), and event's accept rule is event_limit.py's, so the
plan follows the server when either changes. No I/O, no wall clock: requests and settings in,
a SimResult (sim_report.py) out.

The model, per MPM (reference 1.2-1.4):
* A new connection goes to an idle thread (prefork: an idle child); with none it waits in the
  listen backlog, which holds `backlog + 1` connections as Linux's accept queue does; beyond
  that it is refused. A forked child accepts `startup` seconds after the tick that forked it.
* prefork and worker: a kept-alive connection holds its thread (state K) until its next
  request or KeepAliveTimeout. event: it is parked (no thread) and still counts toward the
  child's connection cap (ThreadsPerChild + AsyncRequestWorkerFactor x idle threads); its next
  request waits for a thread of that child; a child over its cap accepts nothing.
* MaxKeepAliveRequests closes a connection after that many requests; a later request on it
  reconnects. MaxConnectionsPerChild stops a child after that many accepted connections
  (prefork after serving that connection to its end, the others gracefully as below).
* A stopping child (retired, or at MaxConnectionsPerChild) accepts nothing more; it answers
  requests already on its connections, with close, and frees its slot once they are done.
* event as mpmd's loop runs it (sim_event.py): every parked connection closes once all the
  child's threads have been busy for 0.1 s ("kill'em all"); a child full only because of
  parked connections takes clients from the backlog every 0.1 s, closing its oldest parked
  ones; a stopping child keeps parked connections to their timeout and answers them.
Not modelled: lingering close, write completion, slow clients (service time includes sending);
the time before a request starts outside the pool (accepting, reading the head, the hand-over)
is one constant, SimSettings.overhead, added to each latency. The parent's tick falls
`tick_phase` into each second of the trace's clock (the server's depends on when it started).
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from mpmd.mpm.event_limit import worker_factor
from mpmd.mpm.scoreboard import BUSY_WRITE, DEAD, KEEPALIVE, READY
from mpmd.tools.sim_children import CHILD_READY, Children
from mpmd.tools.sim_event import PARK_NEXT, PARK_TIMEOUT, PROBE, EventChildren
from mpmd.tools.sim_report import SimResult, SimSettings, TimedLog, summarise
from mpmd.tools.sim_ticks import Ticker

# heap event kinds: (time, seq, kind, a, b); CHILD_READY and event's are the other modules'
_DONE, _KA_NEXT, _KA_TIMEOUT = range(3)
_INF = math.inf


class Request(NamedTuple):
    """One request of a trace. `conn`: the client connection it came on (None = its own);
    `keep_alive`: the connection stays open after it, for the next request with the same
    `conn` (a later request on a closed `conn` is a new connection)."""

    arrival: float  # seconds
    service: float  # seconds a thread spends on it (%D)
    conn: int | None = None
    keep_alive: bool = False


def simulate(requests: Iterable[Sequence], settings: SimSettings) -> SimResult:
    """Replay `requests` (Request or (arrival, service, conn, keep_alive) tuples, any order)
    through the pool `settings` describes. Results are in the order given."""
    reqs = list(requests)
    order: list[int] | None = None
    if any(reqs[k][0] > reqs[k + 1][0] for k in range(len(reqs) - 1)):
        order = sorted(range(len(reqs)), key=lambda k: reqs[k][0])
        reqs = [reqs[k] for k in order]
    result = _Pool(settings, reqs).run()
    if order is None:
        return result
    wait, latency = array("d", result.wait), array("d", result.latency)
    for pos, k in enumerate(order):
        wait[k] = result.wait[pos]
        latency[k] = result.latency[pos]
    return SimResult(result.settings, wait, latency, result.series, result.summary, result.logs)


class _Pool(Children, EventChildren):
    """The simulated server. Threads are scoreboard positions w = slot x ThreadLimit + t;
    children are numbered in fork order (pid = number + 1)."""

    def __init__(self, settings: SimSettings, reqs: list[Sequence]) -> None:
        mpm = settings.mpm
        self.s = settings
        self.mpm = mpm
        self.event = mpm.name == "event"
        self.prefork = mpm.name == "prefork"
        self.tl = 1 if self.prefork else mpm.thread_limit
        self.tpc = 1 if self.prefork else min(mpm.threads_per_child, self.tl)
        self.sl = mpm.server_limit
        self.factor = worker_factor(mpm.async_request_worker_factor)
        self.kat = settings.keep_alive_timeout
        self.maxka = settings.max_keep_alive_requests
        self.ka_on = settings.keep_alive
        self.mcpc = mpm.max_connections_per_child
        self.capacity = settings.backlog + 1
        n = len(reqs)
        self.n = n
        self.arr = [float(r[0]) for r in reqs]
        self.svc = [float(r[1]) for r in reqs]
        self.keep = [bool(r[3]) if len(r) > 3 else False for r in reqs]
        self.nxt = [-1] * n  # the next request on the same kept-alive connection
        self.has_pred = bytearray(n)
        last: dict[object, int] = {}
        for i, r in enumerate(reqs):
            conn = r[2] if len(r) > 2 else None
            if conn is None:
                continue
            p = last.get(conn)
            if p is not None and self.keep[p]:
                self.nxt[p] = i
                self.has_pred[i] = 1
            last[conn] = i
        # for a request with a predecessor: 0 not arrived, 1 arrived and waiting for the
        # predecessor's outcome, 2 continues on the connection, 3 a new connection
        self.link = bytearray(n)
        self.start = [_INF] * n
        self.refused = bytearray(n)
        size = self.sl * self.tl
        self.st = bytearray(size)  # scoreboard status per thread position
        self.owner = [-1] * size  # child owning the thread
        self.tok = [0] * size  # bumped to cancel a thread's pending keep-alive event
        self.wnext = [-1] * size  # request the thread's kept-alive connection waits for
        self.wka = [0] * size  # requests served on the thread's current connection
        self.slot_child = [-1] * self.sl
        self.live: list[int] = []  # children holding a slot, in slot order
        # per child
        self.cslot: list[int] = []
        self.cquiesce: list[int] = []
        self.cready: list[bool] = []
        self.clast: list[bool] = []  # prefork: exit after the current connection
        self.caccepted: list[int] = []
        self.calive: list[int] = []
        self.cidle: list[list[int]] = []  # event: idle threads
        self.cconns: list[int] = []  # event: open connections
        self.caccept: list[bool] = []  # event: listeners in the poll set
        self.cqueue: list[deque] = []  # event: requests read, waiting for a thread
        self.cparked: list[dict[int, tuple[int, int]]] = []  # event: token -> (next, served)
        self.cprobe: list[float] = []  # event: when a full child next looks at the backlog
        self.cprobing: list[bool] = []  # event: that look is scheduled
        self.csat: list[float] = []  # event: since when every thread is busy, -1 = not
        self.idle_stack: list[int] = []  # prefork / worker: idle threads (checked when popped)
        self.backlog: deque[int] = deque()
        self.heap: list[tuple] = []
        self.seq = 0
        self.now = 0.0
        self.in_sys = 0
        self.area = 0.0
        self.last_change = 0.0
        self.nbusy = self.peak_busy = 0
        self.nproc = self.peak_proc = 0
        self.nconns = 0
        self.nqueued = 0
        self.ptoken = 0
        self.procs_dirty = True
        self.initial = 0  # children running at the start
        self.logs: list[TimedLog] = []

    # -- connections ---------------------------------------------------------------------------

    def _push(self, t: float, kind: int, a: int, b: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, a, b))

    def _begin(self, w: int, i: int) -> None:
        self.start[i] = self.now
        self.st[w] = BUSY_WRITE
        self.wka[w] += 1
        self.seq += 1
        heapq.heappush(self.heap, (self.now + self.svc[i], self.seq, _DONE, w, i))

    def _accept(self, c: int, w: int, i: int) -> None:
        """Child c accepts request i's connection onto its thread w (already taken)."""
        self.caccepted[c] += 1
        if self.event:
            self.cconns[c] += 1
            self.nconns += 1
        self.wka[w] = 0
        self._begin(w, i)
        if self.mcpc and self.caccepted[c] >= self.mcpc:
            self._stop(c)

    def _take_idle(self) -> int:
        stack = self.idle_stack
        st = self.st
        while stack:
            w = stack.pop()
            if st[w] == READY:
                return w
        return -1

    def _connect(self, i: int) -> None:
        """Request i opens a new connection."""
        if self.event:
            for c in self.live:
                if self.cready[c] and not self.cquiesce[c] and self._may_accept(c):
                    self._accept(c, self._take_thread(c), i)
                    return
        else:
            w = self._take_idle()
            if w >= 0:
                self._busy()
                self._accept(self.owner[w], w, i)
                return
        if len(self.backlog) < self.capacity:
            self.backlog.append(i)
            if self.event:
                for c in self.live:
                    self._want_probe(c)
            return
        self.refused[i] = 1
        self._departs()
        if self.nxt[i] >= 0:
            self._fresh(self.nxt[i])

    def _busy(self) -> None:
        self.nbusy += 1
        if self.nbusy > self.peak_busy:
            self.peak_busy = self.nbusy

    def _drain(self, c: int) -> None:
        """Child c may have room: it accepts connections waiting in the backlog."""
        backlog = self.backlog
        if not backlog:
            return
        if self.event:
            while backlog and self.cready[c] and not self.cquiesce[c] and self._may_accept(c):
                self._accept(c, self._take_thread(c), backlog.popleft())
            return
        while backlog:
            w = self._take_idle()
            if w < 0:
                return
            self._busy()
            self._accept(self.owner[w], w, backlog.popleft())

    def _fresh(self, j: int) -> None:
        """Request j's connection is closed before it: j comes on a new connection."""
        if self.link[j] == 1:
            self.link[j] = 3
            self._connect(j)
        else:
            self.link[j] = 3

    def _departs(self) -> None:
        now = self.now
        self.area += self.in_sys * (now - self.last_change)
        self.last_change = now
        self.in_sys -= 1

    def _arrive(self, i: int) -> None:
        now = self.now
        self.area += self.in_sys * (now - self.last_change)
        self.last_change = now
        self.in_sys += 1
        if self.has_pred[i]:
            state = self.link[i]
            if state == 0:
                self.link[i] = 1
                return
            if state == 2:
                return  # its connection's event starts it
        self._connect(i)

    def _done(self, w: int, i: int) -> None:
        """Request i ends on thread w: keep the connection (hold or park it), or close it."""
        self._departs()
        now = self.now
        c = self.owner[w]
        j = self.nxt[i]
        keep = (
            self.keep[i]
            and self.ka_on
            and (not self.maxka or self.wka[w] < self.maxka)
            and not self.cquiesce[c]
        )
        token = 0
        if keep and j >= 0 and self.arr[j] <= now + self.kat:
            self.link[j] = 2
            if self.arr[j] <= now:
                self._begin(w, j)
                return
            if not self.event:
                self._hold(w, j, self.arr[j], _KA_NEXT)
                return
            token = self._park(c, j, self.wka[w], self.arr[j], PARK_NEXT)
        elif keep:
            if j >= 0:
                self.link[j] = 3  # it comes after KeepAliveTimeout: a new connection
            if not self.event:
                self._hold(w, -1, now + self.kat, _KA_TIMEOUT)
                return
            token = self._park(c, -1, 0, now + self.kat, PARK_TIMEOUT)
        elif self.event:
            self.cconns[c] -= 1
            self.nconns -= 1
        self._free(c, w)
        if token:
            self._kill_if_busy(c, token)
        if not keep and j >= 0:
            self._fresh(j)

    def _hold(self, w: int, j: int, until: float, kind: int) -> None:
        """prefork, worker: the thread keeps the connection (K) for request j or a timeout."""
        self.st[w] = KEEPALIVE
        self.tok[w] += 1
        self.wnext[w] = j
        self._push(until, kind, w, self.tok[w])

    def _free(self, c: int, w: int) -> None:
        """Thread w of child c has no connection any more."""
        if self.event:
            queue = self.cqueue[c]
            if queue:
                j, served = queue.popleft()
                self.nqueued -= 1
                self.wka[w] = served
                self._begin(w, j)
                return
            self.nbusy -= 1
            self._idle(c, w)
            if not self.cquiesce[c]:
                self._drain(c)
            elif not self.cconns[c]:
                self._event_exit(c)
            return
        if self.cquiesce[c] or self.clast[c]:
            self.nbusy -= 1
            if self.prefork:
                self.st[w] = DEAD
                self.calive[c] = 0
                self._exit(c)
            else:
                self._thread_exits(c, w)
            return
        if self.backlog:
            self._accept(c, w, self.backlog.popleft())
            return
        self.nbusy -= 1
        self.st[w] = READY
        self.idle_stack.append(w)

    # -- the clock -----------------------------------------------------------------------------

    def run(self) -> SimResult:
        n = self.n
        arr = self.arr
        t0 = math.floor(arr[0]) if n else 0.0
        self.now = self.last_change = t0
        mpm = self.mpm
        if self.prefork:
            room = min(mpm.max_request_workers, self.sl)
        else:
            room = min(mpm.active_daemons_limit, self.sl)
        initial = self.s.initial_children
        self.initial = min(mpm.start_servers if initial is None else initial, room)
        for slot in range(self.initial):
            self._spawn(slot, ready=True)
        next_tick = t0 + 1.0 + self.s.tick_phase % 1.0
        ticker = Ticker(self, next_tick)
        heap = self.heap
        done, ka_next, ka_timeout = _DONE, _KA_NEXT, _KA_TIMEOUT
        ia = 0
        while ia < n or self.in_sys:
            ta = arr[ia] if ia < n else _INF
            th = heap[0][0] if heap else _INF
            if ta <= th and ta < next_tick:
                self.now = ta
                self._arrive(ia)
                ia += 1
            elif th < next_tick:
                t, _seq, kind, a, b = heapq.heappop(heap)
                self.now = t
                if kind == done:
                    self._done(a, b)
                elif kind == ka_next:
                    if self.tok[a] == b:
                        self.st[a] = BUSY_WRITE
                        self._begin(a, self.wnext[a])
                elif kind == ka_timeout:
                    if self.tok[a] == b:
                        self._free(self.owner[a], a)
                elif kind == CHILD_READY:
                    self._ready(a)
                elif kind == PARK_NEXT:
                    self._park_next(a, b)
                elif kind == PARK_TIMEOUT:
                    self._park_timeout(a, b)
                elif kind == PROBE:
                    self._probe(a)
                else:
                    self._kill_all(a, b)
            else:
                self.now = next_tick
                ticker.tick()
                next_tick += 1.0
        return self._result(ticker, t0)

    def _result(self, ticker: Ticker, t0: float) -> SimResult:
        nan = math.nan
        wait = array("d", bytes(8 * self.n))
        latency = array("d", wait)
        arr, svc, start, refused = self.arr, self.svc, self.start, self.refused
        overhead = self.s.overhead
        for i in range(self.n):
            if refused[i]:
                wait[i] = latency[i] = nan
            else:
                wait[i] = start[i] - arr[i]
                latency[i] = wait[i] + svc[i] + overhead
        series = ticker.series()
        summary = summarise(
            self.s,
            wait,
            latency,
            series,
            peak_processes=self.peak_proc,
            peak_busy=self.peak_busy,
            forked=len(self.cslot) - self.initial,
            area=self.area + overhead * (self.n - sum(refused)),  # in the system meanwhile
            first=self.arr[0] if self.n else t0,
            last=self.last_change,
        )
        return SimResult(self.s, wait, latency, series, summary, tuple(self.logs))
