"""The shared scoreboard: one fixed-size memory map every process of the tree reads and writes.

The parent creates it once, before the first fork (a file in /dev/shm, so `mpmctl status` can
attach read-only by path), keeps it across restarts and unlinks it at exit. It holds a global
record, ServerLimit process records, ServerLimit x ThreadLimit worker records (each with a
request-duration histogram) and a one-sample-per-second history ring, all at fixed offsets
(reference 4.2). Each worker thread writes only its own record through a `WorkerRecord`;
nothing here takes a lock, so readers copy the bytes and accept a torn read the way Apache does.
This module never forks, logs or reads the configuration: it is memory and its layout.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mpmd.http.fields import hide_password
from mpmd.mpm import scoreboard_layout as sbl
from mpmd.mpm.scoreboard_layout import (
    FOUR_U64,
    HISTORY,
    HISTORY_SECONDS,
    I64,
    PROCESS,
    PROCESS_SIZE,
    TWO_D,
    TWO_U64,
    U64,
    W_CONN,
    W_COUNTERS,
    W_COUNTERS_ST,
    W_CPU,
    W_HIST,
    W_IDENT,
    W_MY,
    W_PID,
    W_START,
    W_STOP,
    W_STRINGS,
    W_STRINGS_ST,
    WORKER,
    WORKER_SIZE,
    Field,
    Layout,
    c_field,
    c_str,
    clock_us,
)
from mpmd.mpm.scoreboard_process import ProcessInfo, ProcessRecord, TlsCounters  # noqa: F401 (re-exported)

# -- worker states (reference 4.1); the index is the state code ------------------------------
# (".S_": code 1 is STARTING `S`, code 2 READY `_`, as Apache's status_flags)
STATE_CHARS = ".S_RWKLDCGI"
DEAD, STARTING, READY, BUSY_READ, BUSY_WRITE, KEEPALIVE, LOG, DNS, CLOSING, GRACEFUL, IDLE_KILL = (
    range(11)
)
STATE_LEGEND = (
    "Open slot with no current process",
    "Starting up",
    "Waiting for Connection",
    "Reading Request",
    "Sending Reply",
    "Keepalive (read)",
    "Logging",
    "DNS Lookup",
    "Closing connection",
    "Gracefully finishing",
    "Idle cleanup of worker",
)
CPU_EVERY_US = 100_000  # ExtendedStatus's CPU times: one times() per 0.1 s, not per request
_RESET_STATES = frozenset((READY, DEAD))  # update_child_status resets connection counters
# status byte -> state char; garbage from a torn read shows as DEAD
_CHAR_TABLE = bytes(ord(STATE_CHARS[c]) if c < 11 else ord(".") for c in range(256))

# Request-duration histogram bounds (Prometheus' defaults), the last bucket is +Inf.
HISTOGRAM_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_BOUNDS_US = tuple(round(b * 1_000_000) for b in HISTOGRAM_BOUNDS)


def default_path(parent_pid: int) -> str:
    """Where a scoreboard lives when ScoreBoardFile is not set: derivable from the PidFile."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"
    return f"{base}/mpmd-{parent_pid}.scoreboard"


def strip_password(request_line: str) -> str:
    """`GET http://u:pw@h/ HTTP/1.1` -> `GET http://u@h/ HTTP/1.1`, as Apache's status view."""
    method, space, rest = request_line.partition(" ")
    if not space or rest[:1] == "/":
        return request_line
    return method + space + hide_password(rest, "")


class WorkerRecord:
    """The writer one worker thread keeps for its own record.

    It caches its counters (only this thread writes them), so each request costs a few
    `pack_into` calls and no reads of shared memory. Create it in the process that serves, after
    the fork, and call `reset_for_new_child` first. `extended` (ExtendedStatus): the CPU times,
    a times() system call per request, are only taken for the views that show them.
    """

    __slots__ = (
        "_access",
        "_bytes",
        "_conn_bytes",
        "_conn_count",
        "_cpu_due",
        "_duration",
        "_extended",
        "_hist",
        "_mm",
        "_my_access",
        "_my_bytes",
        "_off",
        "_peer_key",
        "slot",
        "thread",
    )

    def __init__(
        self, mm: mmap.mmap, offset: int, slot: int, thread: int, extended: bool = True
    ) -> None:
        self._mm = mm
        self._off = offset
        self.slot = slot
        self.thread = thread
        self._extended = extended
        self._cpu_due = 0  # when times() is next taken (us): at most every CPU_EVERY_US
        self._peer_key: tuple[str, str, str, str] | None = None  # the strings last written
        self._load()

    def _load(self) -> None:
        (
            self._access, self._bytes, self._my_access, self._my_bytes,
            self._conn_count, self._conn_bytes, self._duration, _last, _stop, _used,
        ) = W_COUNTERS_ST.unpack_from(self._mm, self._off + W_COUNTERS)  # fmt: skip
        self._hist = list(struct.unpack_from("<15Q", self._mm, self._off + W_HIST))

    @property
    def state(self) -> int:
        """This worker's state key (READY, BUSY_WRITE ...), as its last writer set it."""
        return self._mm[self._off]

    def set_state(self, state: int) -> None:
        """Apache's update_child_status: READY and DEAD also reset the connection counters."""
        if state in _RESET_STATES:
            self._conn_count = self._conn_bytes = 0
            if state == DEAD:
                self._my_access = self._my_bytes = 0
                FOUR_U64.pack_into(self._mm, self._off + W_MY, 0, 0, 0, 0)
            else:
                TWO_U64.pack_into(self._mm, self._off + W_CONN, 0, 0)
            I64.pack_into(self._mm, self._off + W_STOP + 8, time.time_ns() // 1000)
        self._mm[self._off] = state

    def park(self) -> None:
        """A record beyond ThreadsPerChild between two ASGI requests: shown as `.` (neither
        busy nor an idle thread), its counters kept for the next request it carries."""
        self._mm[self._off] = DEAD

    def connection_start(self) -> None:
        """A new connection: its counters start at zero and the worker reads its request."""
        self._conn_count = self._conn_bytes = 0
        TWO_U64.pack_into(self._mm, self._off + W_CONN, 0, 0)
        self._mm[self._off] = BUSY_READ

    def connection_end(self) -> None:
        """The connection is closed or handed back: the worker waits for the next one."""
        self.set_state(READY)

    def request_start(
        self, request_line: str, client: str, vhost: str, protocol: str, now_us: int
    ) -> None:
        """The request head is parsed and the handler runs: ExtendedStatus fields, state W."""
        mm = self._mm
        off = self._off
        if "@" in request_line:
            request_line = strip_password(request_line)
        I64.pack_into(mm, off + W_START, now_us)
        key = (client, vhost, protocol, request_line)
        if key != self._peer_key:  # a keep-alive client asks the same again: written once
            self._peer_key = key
            W_STRINGS_ST.pack_into(
                mm, off + W_STRINGS, c_field(client, 64), c_field(request_line, 64),
                c_field(vhost, 32), c_field(protocol, 16),
            )  # fmt: skip
        mm[off] = BUSY_WRITE

    def request_end(self, bytes_sent: int, duration_us: int, now_us: int) -> None:
        """ap_increment_counts: slot, child and connection counters, duration, histogram and,
        if extended, the process's CPU times (Apache's times(), taken at most every 0.1 s: per
        process, as this worker sees it; shown only with ExtendedStatus On)."""
        i = bisect_left(_BOUNDS_US, duration_us)
        self._hist[i] += 1
        self._store(1, bytes_sent, duration_us, duration_us, now_us, (i,))

    def requests_end(self, ended: Sequence[tuple[int, int]], now_us: int) -> None:
        """request_end for requests that ended together, (bytes sent, duration) each: the
        event loop stores the requests it proxied once per round. The last one's duration
        is the slot's last request's."""
        sent = took = 0
        hist = self._hist
        buckets = []
        for bytes_sent, duration_us in ended:
            sent += bytes_sent
            took += duration_us
            i = bisect_left(_BOUNDS_US, duration_us)
            hist[i] += 1
            buckets.append(i)
        self._store(len(ended), sent, took, ended[-1][1], now_us, buckets)

    def _store(
        self, count: int, sent: int, took: int, last: int, now_us: int, buckets: Sequence[int]
    ) -> None:
        self._access += count
        self._my_access += count
        self._conn_count += count
        self._bytes += sent
        self._my_bytes += sent
        self._conn_bytes += sent
        self._duration += took
        mm, off = self._mm, self._off
        W_COUNTERS_ST.pack_into(
            mm, off + W_COUNTERS,
            self._access, self._bytes, self._my_access, self._my_bytes,
            self._conn_count, self._conn_bytes, self._duration, last, now_us, now_us,
        )  # fmt: skip
        for i in buckets:
            U64.pack_into(mm, off + W_HIST + 8 * i, self._hist[i])
        if self._extended and now_us >= self._cpu_due:
            self._cpu_due = now_us + CPU_EVERY_US
            cpu = os.times()
            TWO_D.pack_into(mm, off + W_CPU, cpu.user, cpu.system)

    def reset_for_new_child(self, pid: int, generation: int, tid: int = 0) -> None:
        """A new child takes the slot: my_* and connection counters reset, slot totals kept."""
        self._load()
        self._my_access = self._my_bytes = self._conn_count = self._conn_bytes = 0
        W_IDENT.pack_into(self._mm, self._off + W_PID, pid, tid, generation, 0)
        FOUR_U64.pack_into(self._mm, self._off + W_MY, 0, 0, 0, 0)
        W_STRINGS_ST.pack_into(self._mm, self._off + W_STRINGS, b"", b"", b"", b"")
        self._peer_key = None
        self._mm[self._off] = STARTING


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    slot: int
    thread: int
    status: int
    pid: int
    tid: int
    generation: int
    start_time_us: int
    access_count: int
    bytes_served: int
    my_access_count: int
    my_bytes_served: int
    conn_count: int
    conn_bytes: int
    duration_us: int
    last_duration_us: int
    stop_time_us: int
    last_used_us: int
    cpu_user: float
    cpu_system: float
    histogram: tuple[int, ...]  # per-bucket counts (not cumulative), last one is +Inf
    client: str
    request: str
    vhost: str
    protocol: str

    @property
    def state_char(self) -> str:
        return STATE_CHARS[self.status]


@dataclass(frozen=True, slots=True)
class HistorySample:
    time_us: int
    accesses: int
    bytes: int
    busy: int
    idle: int
    graceful: int
    processes: int
    async_connections: int
    pss_kib: int = 0  # the parent's and its children's, summed (0: not sampled that second)
    uss_kib: int = 0


@dataclass(frozen=True, slots=True)
class WorkerCounts:
    """mod_status's counts (reference 4.3)."""

    busy: int
    idle: int
    graceful: int


@dataclass(frozen=True, slots=True)
class Totals:
    accesses: int
    bytes: int
    duration_us: int


class Snapshot:
    """An immutable copy of the whole scoreboard; worker records are decoded on demand."""

    def __init__(self, raw: bytes, layout: Layout) -> None:
        self._raw = raw
        self._layout = layout
        (
            _magic, _version, self.server_limit, self.thread_limit, self.threads_per_child,
            self.max_request_workers, self.flags, self.generation, self.config_generation,
            self.restart_time_us, self.start_time_us, self.parent_pid, self._history_written,
            mpm, *cpu,
        ) = sbl.GLOBAL.unpack_from(raw, 0)  # fmt: skip
        self.mpm = c_str(mpm)
        self.parent_cpu: tuple[float, float, float, float] = tuple(cpu)  # type: ignore[assignment]
        self.parent_memory_kib: tuple[int, int] = sbl.MEMORY.unpack_from(raw, sbl.G_MEMORY)
        wo = layout.worker_off
        # one status byte per worker record, slot-major (the loop records are no workers)
        self.statuses: bytes = raw[wo : layout.loop_off : WORKER_SIZE]
        self.processes: tuple[ProcessInfo, ...] = tuple(
            ProcessInfo(i, *fields)
            for i, fields in enumerate(
                PROCESS.unpack_from(raw, layout.proc_off + i * PROCESS_SIZE)
                for i in range(layout.server_limit)
            )
        )
        tls = (sbl.TLS_COUNTS.unpack_from(raw, layout.proc_off + i * PROCESS_SIZE + sbl.P_TLS)
               for i in range(layout.server_limit))  # fmt: skip
        self.tls_handshakes, self.tls_failures = (sum(column) for column in zip(*tls, strict=True))

    def slot_statuses(self, slot: int) -> bytes:
        """The status codes of one process slot's ThreadLimit worker records."""
        tl = self.thread_limit
        return self.statuses[slot * tl : (slot + 1) * tl]

    def worker(self, slot: int, thread: int) -> WorkerInfo:
        f = WORKER.unpack_from(self._raw, self._layout.worker(slot, thread))
        status = f[0] if f[0] <= IDLE_KILL else DEAD
        return WorkerInfo(
            slot, thread, status, *f[1:17], tuple(f[17:32]),
            c_str(f[32]), c_str(f[33]), c_str(f[34]), c_str(f[35]),
        )  # fmt: skip

    def workers(self, active_only: bool = False) -> Iterator[WorkerInfo]:
        """Every worker record in slot order; active_only keeps those mod_status lists
        with ExtendedStatus (access_count > 0 or status not in `_` / `.`)."""
        tl = self.thread_limit
        accesses = self._column(W_COUNTERS)
        for index, status in enumerate(self.statuses):
            if active_only and accesses[index] == 0 and status in (DEAD, READY):
                continue
            yield self.worker(index // tl, index % tl)

    def _column(self, offset: int) -> memoryview:
        lay = self._layout
        words = memoryview(self._raw)[lay.worker_off : lay.hist_off].cast("Q")
        return words[offset // 8 :: WORKER_SIZE // 8]

    def totals(self) -> Totals:
        """Accesses, bytes and duration summed over every slot (they survive recycling), the
        event loops' records included."""
        return Totals(
            sum(self._column(W_COUNTERS)),
            sum(self._column(W_COUNTERS + 8)),
            sum(self._column(W_COUNTERS + 48)),
        )

    def duration_histogram(self) -> tuple[tuple[int, ...], float]:
        """Per-bucket counts summed across all workers (not cumulative) and the sum in s."""
        counts = tuple(sum(self._column(W_HIST + 8 * i)) for i in range(15))
        return counts, self.totals().duration_us / 1_000_000

    def worker_counts(self) -> WorkerCounts:
        """Busy, idle and graceful workers with mod_status's rules (reference 4.3)."""
        busy = idle = graceful = 0
        for p in self.processes:
            if p.pid == 0 or p.quiescing:
                continue
            row = self.slot_statuses(p.slot)
            if p.generation == self.generation:
                idle += row.count(READY)
            g = row.count(GRACEFUL)
            graceful += g
            not_busy = row.count(DEAD) + row.count(STARTING) + row.count(IDLE_KILL)
            busy += len(row) - not_busy - row.count(READY) - g
        return WorkerCounts(busy, idle, graceful)

    def scoreboard_string(self, active_daemons_limit: int, threads_per_child: int) -> str:
        """One char per slot, DEAD slots beyond the configured limits left out (reference 4.3)."""
        out = []
        for i in range(self.server_limit):
            row = self.slot_statuses(i)
            if i < active_daemons_limit:
                out.append(row[:threads_per_child].translate(_CHAR_TABLE))
                out.append(row[threads_per_child:].translate(_CHAR_TABLE, b"\0"))
            else:
                out.append(row.translate(_CHAR_TABLE, b"\0"))
        return b"".join(out).decode("ascii")

    def live_processes(self) -> list[ProcessInfo]:
        return [p for p in self.processes if p.pid != 0]

    def memory_kib(self) -> tuple[int, int]:
        """PSS and USS of the parent and its live children summed, as last sampled."""
        pss, uss = self.parent_memory_kib
        for p in self.processes:
            if p.pid:
                pss += p.pss_kib
                uss += p.uss_kib
        return pss, uss

    def history(self) -> list[HistorySample]:
        """The last hour of once-a-second samples, oldest first."""
        written = self._history_written
        count = min(written, HISTORY_SECONDS)
        base = self._layout.hist_off
        out = []
        for n in range(written - count, written):
            off = base + (n % HISTORY_SECONDS) * HISTORY.size
            out.append(HistorySample(*HISTORY.unpack_from(self._raw, off)))
        return out


class Scoreboard:
    """The shared mapping. `create` in the parent before forking; `attach` from a tool."""

    def __init__(self, path: str, mm: mmap.mmap, layout: Layout, owner: bool) -> None:
        self.path = path
        self._mm = mm
        self._off = 0  # the global record's fields start at offset 0
        self._layout = layout
        self._owner_pid = os.getpid() if owner else 0
        self.extended = True  # per process: a child sets its ExtendedStatus (context.py)

    @classmethod
    def create(
        cls,
        path: str | None,
        server_limit: int,
        thread_limit: int,
        mpm: str,
        *,
        threads_per_child: int | None = None,
        max_request_workers: int | None = None,
    ) -> Scoreboard:
        if server_limit < 1 or thread_limit < 1:
            raise ValueError("ServerLimit and ThreadLimit must be at least 1")
        path = path or default_path(os.getpid())
        layout = Layout(server_limit, thread_limit)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, layout.size)
            mm = mmap.mmap(fd, layout.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        now = clock_us()
        tpc = threads_per_child or thread_limit
        mrw = max_request_workers or server_limit * tpc
        sbl.GLOBAL.pack_into(
            mm, 0, sbl.MAGIC, 1, server_limit, thread_limit, tpc, mrw, 0,
            0, 1, now, now, os.getpid(), 0, mpm.encode("ascii"), 0.0, 0.0, 0.0, 0.0,
        )  # fmt: skip
        return cls(path, mm, layout, owner=True)

    @classmethod
    def attach(cls, path: str, readonly: bool = True, *, owner: bool = False) -> Scoreboard:
        """`owner`: the parent re-attaching its own scoreboard after a re-exec (reexec.py)."""
        fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < sbl.HEADER_SIZE:
                raise ValueError(f"{path}: not an mpmd scoreboard (too small)")
            prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        finally:
            os.close(fd)
        magic, _version, sl, tl = struct.unpack_from("<8sIII", mm, 0)
        layout = Layout(sl, tl) if magic == sbl.MAGIC else None
        if layout is None or layout.size != size:
            mm.close()
            raise ValueError(f"{path}: not an mpmd scoreboard")
        return cls(path, mm, layout, owner=owner)

    def close(self) -> None:
        self._mm.close()

    def unlink(self) -> None:
        """Remove the file; only the creating process does (a forked child never does)."""
        if self._owner_pid == os.getpid():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    # -- global record ----------------------------------------------------------------------
    @property
    def server_limit(self) -> int:
        return self._layout.server_limit

    @property
    def thread_limit(self) -> int:
        return self._layout.thread_limit

    def _get(self, offset: int) -> int:
        return I64.unpack_from(self._mm, offset)[0]

    # ParentServerMPMGeneration (+1 per restart) and ParentServerConfigGeneration; times in µs
    generation = Field(sbl.G_GENERATION, "<q")
    config_generation = Field(sbl.G_CONFIG_GEN, "<q")
    restart_time = Field(sbl.G_RESTART, "<q")
    start_time = Field(sbl.G_START, "<q")
    parent_pid = Field(sbl.G_PPID, "<q")

    @property
    def mpm(self) -> str:
        return c_str(self._mm[80:96])

    def set_limits(self, threads_per_child: int, max_request_workers: int) -> None:
        """Parent, at each (re)start: what the status tools need to draw the grid."""
        struct.pack_into("<II", self._mm, sbl.G_TPC, threads_per_child, max_request_workers)

    def set_parent_cpu(self, user: float, system: float, cuser: float, csystem: float) -> None:
        struct.pack_into("<4d", self._mm, sbl.G_CPU, user, system, cuser, csystem)

    def set_parent_memory(self, pss_kib: int, uss_kib: int) -> None:
        sbl.MEMORY.pack_into(self._mm, sbl.G_MEMORY, pss_kib, uss_kib)

    # -- records ----------------------------------------------------------------------------
    def process(self, slot: int) -> ProcessRecord:
        return ProcessRecord(self._mm, self._layout.process(slot), slot)

    def worker(self, slot: int, thread: int) -> WorkerRecord:
        """This process's writer for one worker record, in its ExtendedStatus mode."""
        offset = self._layout.worker(slot, thread)
        return WorkerRecord(self._mm, offset, slot, thread, self.extended)

    def loop_worker(self, slot: int) -> WorkerRecord:
        """The writer of process `slot`'s loop record (the requests its event loop serves
        without a thread); its `thread` is ThreadLimit, past every worker's."""
        return WorkerRecord(
            self._mm, self._layout.loop(slot), slot, self.thread_limit, self.extended
        )

    def set_slot_state(self, slot: int, state: int, threads: int | None = None) -> None:
        """Parent: the status byte of a slot's first `threads` records (e.g. S before fork)."""
        for j in range(self.thread_limit if threads is None else threads):
            self._mm[self._layout.worker(slot, j)] = state

    def mark_process_dead(self, slot: int) -> None:
        """Parent, after reaping the slot's current pid: the slot is free again.

        Every worker record of the slot goes DEAD with its child and connection counters
        reset (as SERVER_DEAD does); slot totals are kept.
        """
        PROCESS.pack_into(self._mm, self._layout.process(slot), *([0] * 13))
        for j in range(self.thread_limit):
            off = self._layout.worker(slot, j)
            FOUR_U64.pack_into(self._mm, off + W_MY, 0, 0, 0, 0)
            self._mm[off] = DEAD

    # -- readers ----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return Snapshot(self._mm[:], self._layout)

    def record_history(
        self, now: float, snap: Snapshot | None = None, memory_kib: tuple[int, int] = (0, 0)
    ) -> None:
        """Parent, once a second: append one sample to the ring (the last hour is kept);
        `memory_kib` is the PSS and USS of the whole tree the parent sampled this second."""
        snap = snap or self.snapshot()
        totals = snap.totals()
        counts = snap.worker_counts()
        live = snap.live_processes()
        written = self._get(sbl.G_HISTORY)
        off = self._layout.hist_off + (written % HISTORY_SECONDS) * HISTORY.size
        HISTORY.pack_into(
            self._mm, off, int(now * 1_000_000), totals.accesses, totals.bytes,
            counts.busy, counts.idle, counts.graceful, len(live),
            sum(p.connections for p in live), *memory_kib,
        )  # fmt: skip
        I64.pack_into(self._mm, sbl.G_HISTORY, written + 1)
