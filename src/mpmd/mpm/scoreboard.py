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
from collections.abc import Iterator
from dataclasses import dataclass

from mpmd.http.fields import hide_password

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
_RESET_STATES = frozenset((READY, DEAD))  # update_child_status resets connection counters
# status byte -> state char; garbage from a torn read shows as DEAD
_CHAR_TABLE = bytes(ord(STATE_CHARS[c]) if c < 11 else ord(".") for c in range(256))

# Request-duration histogram bounds (Prometheus' defaults), the last bucket is +Inf.
HISTOGRAM_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_BOUNDS_US = tuple(round(b * 1_000_000) for b in HISTOGRAM_BOUNDS)
HISTORY_SECONDS = 3600

# -- layout -----------------------------------------------------------------------------------
_MAGIC = b"MPMDSB01"
_HEADER_SIZE = 4096
# magic, version, server_limit, thread_limit, threads_per_child, max_request_workers, flags,
# generation, config_generation, restart_time_us, start_time_us, parent_pid, history_written,
# mpm name, parent cpu times (user, system, children user, children system)
_GLOBAL = struct.Struct("<8s6Iqqqqqq16s4d")
_G_GENERATION, _G_CONFIG_GEN, _G_RESTART, _G_START, _G_PPID, _G_HISTORY = 32, 40, 48, 56, 64, 72
_G_TPC, _G_MRW, _G_FLAGS, _G_CPU = 20, 24, 28, 96

# pid, generation, quiescing, not_accepting, connections, write_completion, keep_alive,
# lingering_close, suspended, wait_io, start_time_us (rest of the 128 bytes reserved)
_PROCESS = struct.Struct("<qqBB6x7q")
_PROCESS_SIZE = 128
_P_COUNTS = struct.Struct("<6q")

# status, pid, tid, generation, start_time; the 10-field counter block request_end writes;
# cpu user/system; 15 histogram counts; client, request, vhost, protocol.
_WORKER = struct.Struct("<B7xqqqq8Q2q2d15Q64s64s32s16s16x")
_WORKER_SIZE = _WORKER.size  # 448: seven cache lines
_W_PID, _W_START, _W_COUNTERS, _W_MY, _W_CONN, _W_STOP, _W_CPU, _W_HIST, _W_STRINGS = (
    8,
    32,
    40,
    56,
    72,
    104,
    120,
    136,
    256,
)
_W_COUNTERS_ST = struct.Struct("<8Q2q")  # access, bytes, my_access, my_bytes, conn_count,
# conn_bytes, duration_us, last_duration_us, stop_time_us, last_used_us
_W_STRINGS_ST = struct.Struct("<64s64s32s16s")
_W_IDENT = struct.Struct("<qqqq")  # pid, tid, generation, start_time
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_TWO_U64 = struct.Struct("<2Q")
_FOUR_U64 = struct.Struct("<4Q")
_TWO_D = struct.Struct("<2d")

# time_us, accesses, bytes, busy, idle, graceful, processes, async connections
_HISTORY = struct.Struct("<qQQ5I4x")


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


def _now_us() -> int:
    return time.time_ns() // 1000


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _field(value: str, size: int) -> bytes:
    """C-string field: at most size-1 bytes, as apr_cpystrn keeps a terminating NUL."""
    return value.encode("latin-1", "replace")[: size - 1]


class _Layout:
    """Offsets of one scoreboard geometry, computed once."""

    __slots__ = ("hist_off", "proc_off", "server_limit", "size", "thread_limit", "worker_off")

    def __init__(self, server_limit: int, thread_limit: int) -> None:
        self.server_limit = server_limit
        self.thread_limit = thread_limit
        self.proc_off = _HEADER_SIZE
        self.worker_off = (self.proc_off + server_limit * _PROCESS_SIZE + 63) // 64 * 64
        self.hist_off = self.worker_off + server_limit * thread_limit * _WORKER_SIZE
        self.size = self.hist_off + HISTORY_SECONDS * _HISTORY.size

    def process(self, slot: int) -> int:
        if not 0 <= slot < self.server_limit:
            raise IndexError(f"process slot {slot} outside ServerLimit {self.server_limit}")
        return self.proc_off + slot * _PROCESS_SIZE

    def worker(self, slot: int, thread: int) -> int:
        if not (0 <= slot < self.server_limit and 0 <= thread < self.thread_limit):
            raise IndexError(f"worker {slot}.{thread} outside the scoreboard")
        return self.worker_off + (slot * self.thread_limit + thread) * _WORKER_SIZE


class _Field:
    """A record field as a get/set attribute over the shared memory (owner has _mm, _off)."""

    __slots__ = ("offset", "st")

    def __init__(self, offset: int, fmt: str) -> None:
        self.offset = offset
        self.st = struct.Struct(fmt)

    def __get__(self, rec: ProcessRecord | Scoreboard, owner: type | None = None) -> int:
        return self.st.unpack_from(rec._mm, rec._off + self.offset)[0]

    def __set__(self, rec: ProcessRecord | Scoreboard, value: int) -> None:
        self.st.pack_into(rec._mm, rec._off + self.offset, value)


class ProcessRecord:
    """One child's process record: the parent sets pid/generation, the child its counters."""

    __slots__ = ("_mm", "_off", "slot")

    pid = _Field(0, "<q")
    generation = _Field(8, "<q")
    quiescing = _Field(16, "<B")  # 0, 1 = going down gracefully, 2 = seen by the parent
    not_accepting = _Field(17, "<B")  # event: listeners disabled
    connections = _Field(24, "<q")
    write_completion = _Field(32, "<q")
    keep_alive = _Field(40, "<q")
    lingering_close = _Field(48, "<q")
    suspended = _Field(56, "<q")
    wait_io = _Field(64, "<q")
    start_time = _Field(72, "<q")  # µs

    def __init__(self, mm: mmap.mmap, offset: int, slot: int) -> None:
        self._mm = mm
        self._off = offset
        self.slot = slot

    def start(self, pid: int, generation: int, now_us: int | None = None) -> None:
        """Parent, right after fork: a fresh record for the new child."""
        _PROCESS.pack_into(
            self._mm, self._off, pid, generation, 0, 0, 0, 0, 0, 0, 0, 0,
            _now_us() if now_us is None else now_us,
        )  # fmt: skip

    def set_connection_counts(
        self,
        connections: int,
        write_completion: int,
        keep_alive: int,
        lingering_close: int,
        suspended: int = 0,
        wait_io: int = 0,
    ) -> None:
        """Event child, during queue maintenance: the async counters mod_status prints."""
        _P_COUNTS.pack_into(
            self._mm, self._off + 24, connections, write_completion, keep_alive,
            lingering_close, suspended, wait_io,
        )  # fmt: skip


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
        "_duration",
        "_extended",
        "_hist",
        "_mm",
        "_my_access",
        "_my_bytes",
        "_off",
        "_peer",
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
        self._peer_key: tuple[str, str, str] | None = None
        self._peer: tuple[bytes, bytes, bytes] = (b"", b"", b"")
        self._load()

    def _load(self) -> None:
        (
            self._access, self._bytes, self._my_access, self._my_bytes,
            self._conn_count, self._conn_bytes, self._duration, _last, _stop, _used,
        ) = _W_COUNTERS_ST.unpack_from(self._mm, self._off + _W_COUNTERS)  # fmt: skip
        self._hist = list(struct.unpack_from("<15Q", self._mm, self._off + _W_HIST))

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
                _FOUR_U64.pack_into(self._mm, self._off + _W_MY, 0, 0, 0, 0)
            else:
                _TWO_U64.pack_into(self._mm, self._off + _W_CONN, 0, 0)
            _I64.pack_into(self._mm, self._off + _W_STOP + 8, time.time_ns() // 1000)
        self._mm[self._off] = state

    def connection_start(self) -> None:
        """A new connection: its counters start at zero and the worker reads its request."""
        self._conn_count = self._conn_bytes = 0
        _TWO_U64.pack_into(self._mm, self._off + _W_CONN, 0, 0)
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
        _I64.pack_into(mm, off + _W_START, now_us)
        key = (client, vhost, protocol)
        if key != self._peer_key:  # one peer and vhost serve many requests: encode once
            self._peer_key = key
            self._peer = (_field(client, 64), _field(vhost, 32), _field(protocol, 16))
        client_b, vhost_b, protocol_b = self._peer
        _W_STRINGS_ST.pack_into(
            mm, off + _W_STRINGS, client_b, _field(request_line, 64), vhost_b, protocol_b
        )
        mm[off] = BUSY_WRITE

    def request_end(self, bytes_sent: int, duration_us: int, now_us: int) -> None:
        """ap_increment_counts: slot, child and connection counters, duration, histogram and,
        if extended, the process's CPU times (Apache's times(): per process, as this worker
        sees it; shown only with ExtendedStatus On)."""
        self._access += 1
        self._my_access += 1
        self._conn_count += 1
        self._bytes += bytes_sent
        self._my_bytes += bytes_sent
        self._conn_bytes += bytes_sent
        self._duration += duration_us
        _W_COUNTERS_ST.pack_into(
            self._mm, self._off + _W_COUNTERS,
            self._access, self._bytes, self._my_access, self._my_bytes,
            self._conn_count, self._conn_bytes, self._duration, duration_us, now_us, now_us,
        )  # fmt: skip
        i = bisect_left(_BOUNDS_US, duration_us)
        hist = self._hist
        hist[i] += 1
        _U64.pack_into(self._mm, self._off + _W_HIST + 8 * i, hist[i])
        if self._extended:
            cpu = os.times()
            _TWO_D.pack_into(self._mm, self._off + _W_CPU, cpu.user, cpu.system)

    def reset_for_new_child(self, pid: int, generation: int, tid: int = 0) -> None:
        """A new child takes the slot: my_* and connection counters reset, slot totals kept."""
        self._load()
        self._my_access = self._my_bytes = self._conn_count = self._conn_bytes = 0
        _W_IDENT.pack_into(self._mm, self._off + _W_PID, pid, tid, generation, 0)
        _FOUR_U64.pack_into(self._mm, self._off + _W_MY, 0, 0, 0, 0)
        _W_STRINGS_ST.pack_into(self._mm, self._off + _W_STRINGS, b"", b"", b"", b"")
        self._mm[self._off] = STARTING


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    slot: int
    pid: int
    generation: int
    quiescing: int
    not_accepting: int
    connections: int
    write_completion: int
    keep_alive: int
    lingering_close: int
    suspended: int
    wait_io: int
    start_time_us: int


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

    def __init__(self, raw: bytes, layout: _Layout) -> None:
        self._raw = raw
        self._layout = layout
        (
            _magic, _version, self.server_limit, self.thread_limit, self.threads_per_child,
            self.max_request_workers, self.flags, self.generation, self.config_generation,
            self.restart_time_us, self.start_time_us, self.parent_pid, self._history_written,
            mpm, *cpu,
        ) = _GLOBAL.unpack_from(raw, 0)  # fmt: skip
        self.mpm = _cstr(mpm)
        self.parent_cpu: tuple[float, float, float, float] = tuple(cpu)  # type: ignore[assignment]
        wo = layout.worker_off
        # one status byte per worker record, slot-major
        self.statuses: bytes = raw[wo : layout.hist_off : _WORKER_SIZE]
        self.processes: tuple[ProcessInfo, ...] = tuple(
            ProcessInfo(i, *fields)
            for i, fields in enumerate(
                _PROCESS.unpack_from(raw, layout.proc_off + i * _PROCESS_SIZE)
                for i in range(layout.server_limit)
            )
        )

    def slot_statuses(self, slot: int) -> bytes:
        """The status codes of one process slot's ThreadLimit worker records."""
        tl = self.thread_limit
        return self.statuses[slot * tl : (slot + 1) * tl]

    def worker(self, slot: int, thread: int) -> WorkerInfo:
        f = _WORKER.unpack_from(self._raw, self._layout.worker(slot, thread))
        status = f[0] if f[0] <= IDLE_KILL else DEAD
        return WorkerInfo(
            slot, thread, status, *f[1:17], tuple(f[17:32]),
            _cstr(f[32]), _cstr(f[33]), _cstr(f[34]), _cstr(f[35]),
        )  # fmt: skip

    def workers(self, active_only: bool = False) -> Iterator[WorkerInfo]:
        """Every worker record in slot order; active_only keeps those mod_status lists
        with ExtendedStatus (access_count > 0 or status not in `_` / `.`)."""
        tl = self.thread_limit
        accesses = self._column(_W_COUNTERS)
        for index, status in enumerate(self.statuses):
            if active_only and accesses[index] == 0 and status in (DEAD, READY):
                continue
            yield self.worker(index // tl, index % tl)

    def _column(self, offset: int) -> memoryview:
        lay = self._layout
        words = memoryview(self._raw)[lay.worker_off : lay.hist_off].cast("Q")
        return words[offset // 8 :: _WORKER_SIZE // 8]

    def totals(self) -> Totals:
        """Accesses, bytes and duration summed over every slot (they survive recycling)."""
        return Totals(
            sum(self._column(_W_COUNTERS)),
            sum(self._column(_W_COUNTERS + 8)),
            sum(self._column(_W_COUNTERS + 48)),
        )

    def duration_histogram(self) -> tuple[tuple[int, ...], float]:
        """Per-bucket counts summed across all workers (not cumulative) and the sum in s."""
        counts = tuple(sum(self._column(_W_HIST + 8 * i)) for i in range(15))
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

    def history(self) -> list[HistorySample]:
        """The last hour of once-a-second samples, oldest first."""
        written = self._history_written
        count = min(written, HISTORY_SECONDS)
        base = self._layout.hist_off
        out = []
        for n in range(written - count, written):
            off = base + (n % HISTORY_SECONDS) * _HISTORY.size
            out.append(HistorySample(*_HISTORY.unpack_from(self._raw, off)))
        return out


class Scoreboard:
    """The shared mapping. `create` in the parent before forking; `attach` from a tool."""

    def __init__(self, path: str, mm: mmap.mmap, layout: _Layout, owner: bool) -> None:
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
        layout = _Layout(server_limit, thread_limit)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, layout.size)
            mm = mmap.mmap(fd, layout.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        now = _now_us()
        tpc = threads_per_child or thread_limit
        mrw = max_request_workers or server_limit * tpc
        _GLOBAL.pack_into(
            mm, 0, _MAGIC, 1, server_limit, thread_limit, tpc, mrw, 0,
            0, 1, now, now, os.getpid(), 0, mpm.encode("ascii"), 0.0, 0.0, 0.0, 0.0,
        )  # fmt: skip
        return cls(path, mm, layout, owner=True)

    @classmethod
    def attach(cls, path: str, readonly: bool = True, *, owner: bool = False) -> Scoreboard:
        """`owner`: the parent re-attaching its own scoreboard after a re-exec (reexec.py)."""
        fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < _HEADER_SIZE:
                raise ValueError(f"{path}: not an mpmd scoreboard (too small)")
            prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        finally:
            os.close(fd)
        magic, _version, sl, tl = struct.unpack_from("<8sIII", mm, 0)
        layout = _Layout(sl, tl) if magic == _MAGIC else None
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
        return _I64.unpack_from(self._mm, offset)[0]

    # ParentServerMPMGeneration (+1 per restart) and ParentServerConfigGeneration; times in µs
    generation = _Field(_G_GENERATION, "<q")
    config_generation = _Field(_G_CONFIG_GEN, "<q")
    restart_time = _Field(_G_RESTART, "<q")
    start_time = _Field(_G_START, "<q")
    parent_pid = _Field(_G_PPID, "<q")

    @property
    def mpm(self) -> str:
        return _cstr(self._mm[80:96])

    def set_limits(self, threads_per_child: int, max_request_workers: int) -> None:
        """Parent, at each (re)start: what the status tools need to draw the grid."""
        struct.pack_into("<II", self._mm, _G_TPC, threads_per_child, max_request_workers)

    def set_parent_cpu(self, user: float, system: float, cuser: float, csystem: float) -> None:
        struct.pack_into("<4d", self._mm, _G_CPU, user, system, cuser, csystem)

    # -- records ----------------------------------------------------------------------------
    def process(self, slot: int) -> ProcessRecord:
        return ProcessRecord(self._mm, self._layout.process(slot), slot)

    def worker(self, slot: int, thread: int) -> WorkerRecord:
        """This process's writer for one worker record, in its ExtendedStatus mode."""
        offset = self._layout.worker(slot, thread)
        return WorkerRecord(self._mm, offset, slot, thread, self.extended)

    def set_slot_state(self, slot: int, state: int, threads: int | None = None) -> None:
        """Parent: the status byte of a slot's first `threads` records (e.g. S before fork)."""
        for j in range(self.thread_limit if threads is None else threads):
            self._mm[self._layout.worker(slot, j)] = state

    def mark_process_dead(self, slot: int) -> None:
        """Parent, after reaping the slot's current pid: the slot is free again.

        Every worker record of the slot goes DEAD with its child and connection counters
        reset (as SERVER_DEAD does); slot totals are kept.
        """
        _PROCESS.pack_into(self._mm, self._layout.process(slot), *([0] * 11))
        for j in range(self.thread_limit):
            off = self._layout.worker(slot, j)
            _FOUR_U64.pack_into(self._mm, off + _W_MY, 0, 0, 0, 0)
            self._mm[off] = DEAD

    # -- readers ----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return Snapshot(self._mm[:], self._layout)

    def record_history(self, now: float, snap: Snapshot | None = None) -> None:
        """Parent, once a second: append one sample to the ring (the last hour is kept)."""
        snap = snap or self.snapshot()
        totals = snap.totals()
        counts = snap.worker_counts()
        live = snap.live_processes()
        written = self._get(_G_HISTORY)
        off = self._layout.hist_off + (written % HISTORY_SECONDS) * _HISTORY.size
        _HISTORY.pack_into(
            self._mm, off, int(now * 1_000_000), totals.accesses, totals.bytes,
            counts.busy, counts.idle, counts.graceful, len(live),
            sum(p.connections for p in live),
        )  # fmt: skip
        _I64.pack_into(self._mm, _G_HISTORY, written + 1)
