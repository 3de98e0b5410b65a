"""The scoreboard's bytes: record structs, field offsets and the geometry of one map.

Apache's scoreboard.h for mpmd (reference 4.2): a 4 KiB global header, ServerLimit process
records of 128 bytes, ServerLimit x ThreadLimit worker records of 448 (seven cache lines), one
more such record per process for the event loop's own requests (those it proxies without a
thread: counted in the totals, never a column of the worker grid) and a one-sample-per-second
history ring. scoreboard.py reads and writes through these; nothing else
needs them. Changing a struct here changes the format: bump MAGIC.
"""

from __future__ import annotations

import struct
import time
from typing import Any

HISTORY_SECONDS = 3600

MAGIC = b"MPMDSB03"
HEADER_SIZE = 4096
# magic, version, server_limit, thread_limit, threads_per_child, max_request_workers, flags,
# generation, config_generation, restart_time_us, start_time_us, parent_pid, history_written,
# mpm name, parent cpu times (user, system, children user, children system)
GLOBAL = struct.Struct("<8s6Iqqqqqq16s4d")
G_GENERATION, G_CONFIG_GEN, G_RESTART, G_START, G_PPID, G_HISTORY = 32, 40, 48, 56, 64, 72
G_TPC, G_MRW, G_FLAGS, G_CPU = 20, 24, 28, 96
# after GLOBAL: the parent's own PSS and USS in KiB, sampled by the parent each tick
G_MEMORY = GLOBAL.size
MEMORY = struct.Struct("<2q")

# pid, generation, quiescing, not_accepting, connections, write_completion, keep_alive,
# lingering_close, suspended, wait_io, start_time_us, pss_kib, uss_kib (the parent's sample
# of the child's memory; rest of the 128 bytes reserved); byte 18, in the padding, is an
# event child's `saturated` (scoreboard_process.py), zeroed with the record
PROCESS = struct.Struct("<qqBB6x9q")
P_MEMORY = 80
PROCESS_SIZE = 128
P_COUNTS = struct.Struct("<6q")
# TLS handshakes done and failed by the slot's children: outside PROCESS, so a new child in
# the slot keeps counting from its predecessor's totals (a counter survives recycling)
P_TLS = 96
TLS_COUNTS = struct.Struct("<2Q")

# status, pid, tid, generation, start_time; the 10-field counter block request_end writes;
# cpu user/system; 15 histogram counts; client, request, vhost, protocol.
WORKER = struct.Struct("<B7xqqqq8Q2q2d15Q64s64s32s16s16x")
WORKER_SIZE = WORKER.size  # 448: seven cache lines
W_PID, W_START, W_COUNTERS, W_MY, W_CONN, W_STOP, W_CPU, W_HIST, W_STRINGS = (
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
W_COUNTERS_ST = struct.Struct("<8Q2q")  # access, bytes, my_access, my_bytes, conn_count,
# conn_bytes, duration_us, last_duration_us, stop_time_us, last_used_us
W_STRINGS_ST = struct.Struct("<64s64s32s16s")
W_IDENT = struct.Struct("<qqqq")  # pid, tid, generation, start_time
U64 = struct.Struct("<Q")
I64 = struct.Struct("<q")
TWO_U64 = struct.Struct("<2Q")
FOUR_U64 = struct.Struct("<4Q")
TWO_D = struct.Struct("<2d")

# time_us, accesses, bytes, busy, idle, graceful, processes, async connections, and the PSS and
# USS in KiB of the parent and its children together
HISTORY = struct.Struct("<qQQ5I4x2Q")


def clock_us() -> int:
    return time.time_ns() // 1000


def c_str(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def c_field(value: str, size: int) -> bytes:
    """C-string field: at most size-1 bytes, as apr_cpystrn keeps a terminating NUL."""
    return value.encode("latin-1", "replace")[: size - 1]


class Layout:
    """Offsets of one scoreboard geometry, computed once."""

    __slots__ = (
        "hist_off",
        "loop_off",
        "proc_off",
        "server_limit",
        "size",
        "thread_limit",
        "worker_off",
    )

    def __init__(self, server_limit: int, thread_limit: int) -> None:
        self.server_limit = server_limit
        self.thread_limit = thread_limit
        self.proc_off = HEADER_SIZE
        self.worker_off = (self.proc_off + server_limit * PROCESS_SIZE + 63) // 64 * 64
        self.loop_off = self.worker_off + server_limit * thread_limit * WORKER_SIZE
        self.hist_off = self.loop_off + server_limit * WORKER_SIZE
        self.size = self.hist_off + HISTORY_SECONDS * HISTORY.size

    def process(self, slot: int) -> int:
        if not 0 <= slot < self.server_limit:
            raise IndexError(f"process slot {slot} outside ServerLimit {self.server_limit}")
        return self.proc_off + slot * PROCESS_SIZE

    def worker(self, slot: int, thread: int) -> int:
        if not (0 <= slot < self.server_limit and 0 <= thread < self.thread_limit):
            raise IndexError(f"worker {slot}.{thread} outside the scoreboard")
        return self.worker_off + (slot * self.thread_limit + thread) * WORKER_SIZE

    def loop(self, slot: int) -> int:
        """The record of the requests process `slot`'s event loop serves itself."""
        if not 0 <= slot < self.server_limit:
            raise IndexError(f"process slot {slot} outside ServerLimit {self.server_limit}")
        return self.loop_off + slot * WORKER_SIZE


class Field:
    """A record field as a get/set attribute over the shared memory (owner has _mm, _off)."""

    __slots__ = ("offset", "st")

    def __init__(self, offset: int, fmt: str) -> None:
        self.offset = offset
        self.st = struct.Struct(fmt)

    def __get__(self, rec: Any, owner: type | None = None) -> int:
        return self.st.unpack_from(rec._mm, rec._off + self.offset)[0]

    def __set__(self, rec: Any, value: int) -> None:
        self.st.pack_into(rec._mm, rec._off + self.offset, value)
