"""A child's process record in the scoreboard: who it is and what its connections are doing.

The parent writes the pid, generation and quiescing flag when it forks, stops or reaps a
child and, once a tick, the child's memory it sampled from /proc (PSS and USS in KiB,
mpm/memory.py); an event child writes its connection counters. Each writer owns its own fields, so nothing here locks:
readers copy the record (`ProcessInfo`, via `Snapshot`) and accept a torn read.
"""

from __future__ import annotations

import mmap
import struct
import threading
from dataclasses import dataclass

from mpmd.mpm import scoreboard_layout as sbl
from mpmd.mpm.scoreboard_layout import P_MEMORY, PROCESS, Field, clock_us

_MEMORY = sbl.MEMORY
# PROCESS's first fields: pid, generation, quiescing, not_accepting, saturated, connections
_SHARE = struct.Struct("<qqBBB5xq")


class ProcessRecord:
    """One child's process record: the parent sets pid/generation, the child its counters."""

    __slots__ = ("_mm", "_off", "slot")

    pid = Field(0, "<q")
    generation = Field(8, "<q")
    quiescing = Field(16, "<B")  # 0, 1 = going down gracefully, 2 = seen by the parent
    not_accepting = Field(17, "<B")  # event: listeners disabled
    saturated = Field(18, "<B")  # event, gathering: threads ran out, not CPU (event_accept.py)
    connections = Field(24, "<q")
    write_completion = Field(32, "<q")
    keep_alive = Field(40, "<q")
    lingering_close = Field(48, "<q")
    suspended = Field(56, "<q")
    wait_io = Field(64, "<q")
    start_time = Field(72, "<q")  # µs
    tls_handshakes = Field(sbl.P_TLS, "<Q")
    tls_failures = Field(sbl.P_TLS + 8, "<Q")

    def __init__(self, mm: mmap.mmap, offset: int, slot: int) -> None:
        self._mm = mm
        self._off = offset
        self.slot = slot

    def start(self, pid: int, generation: int, now_us: int | None = None) -> None:
        """Parent, right after fork: a fresh record for the new child."""
        PROCESS.pack_into(
            self._mm, self._off, pid, generation, 0, 0, 0, 0, 0, 0, 0, 0,
            clock_us() if now_us is None else now_us, 0, 0,
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
        sbl.P_COUNTS.pack_into(
            self._mm, self._off + 24, connections, write_completion, keep_alive,
            lingering_close, suspended, wait_io,
        )  # fmt: skip

    def share_view(self) -> tuple[int, int, int, int, int, int]:
        """(pid, generation, quiescing, not_accepting, saturated, connections) in one read:
        what a sibling event child compares its own load with (event_accept.py)."""
        return _SHARE.unpack_from(self._mm, self._off)

    def set_memory(self, pss_kib: int, uss_kib: int) -> None:
        """Parent, once a tick: the child's memory as /proc showed it (mpm/memory.py)."""
        _MEMORY.pack_into(self._mm, self._off + P_MEMORY, pss_kib, uss_kib)


class TlsCounters:
    """A child's TLS handshake counters in its process record, shared by its threads."""

    __slots__ = ("_lock", "_record")

    def __init__(self, record: ProcessRecord | None) -> None:
        self._record = record  # None: not counted (no scoreboard)
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        if self._record is not None:
            with self._lock:
                self._record.tls_handshakes += 1

    def failed(self) -> None:
        if self._record is not None:
            with self._lock:
                self._record.tls_failures += 1


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
    pss_kib: int  # proportional set size: private pages plus a share of shared ones;
    # 0 until the parent's tick first samples the child
    uss_kib: int  # unique set size: what exiting the child would give back
