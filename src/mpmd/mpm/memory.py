"""Per-process memory from /proc: what the parent samples each tick and the tools read.

It owns mpmd's one reader of /proc/PID/smaps_rollup. PSS (each resident page divided by the
number of processes mapping it) adds up, over a process tree, to the memory the tree really
uses; USS (Private_Clean + Private_Dirty: pages no other process maps) is what the kernel gets
back when a child exits. The parent samples every child and itself once a maintenance tick (less
often when that would cost it more than 5 % of its time: the kernel walks every page table, about
0.15 ms for an idle Python child and 2 ms for one with 200 MiB resident) and writes the numbers
into the scoreboard, so the status page, /metrics, `mpmctl status`, MaxMemoryPerChild and the
advisor all read the same sample. A process that is gone (or a
zombie, whose smaps_rollup is empty) is skipped, never an error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpmd.mpm.scoreboard import Scoreboard

_PSS = b"\nPss:"
_PRIVATE_CLEAN = b"\nPrivate_Clean:"
_PRIVATE_DIRTY = b"\nPrivate_Dirty:"


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    pss_kib: int
    uss_kib: int


def parse_smaps_rollup(text: bytes) -> ProcessMemory:
    """PSS and USS in KiB from smaps_rollup's text (a field the kernel lacks counts as 0)."""

    def kib(key: bytes) -> int:
        at = text.find(key)
        if at < 0:
            return 0
        start = at + len(key)
        return int(text[start : text.index(b"kB", start)])

    return ProcessMemory(kib(_PSS), kib(_PRIVATE_CLEAN) + kib(_PRIVATE_DIRTY))


def read_memory(pid: int) -> ProcessMemory | None:
    """The process's PSS and USS now, or None if it is gone or a zombie."""
    try:
        fd = os.open(f"/proc/{pid}/smaps_rollup", os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 4096):  # one read in practice: the text is about 1 KiB
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    text = b"".join(chunks)
    return parse_smaps_rollup(text) if text else None


def sample_memory(
    scoreboard: Scoreboard, children: Iterable[tuple[int, int]], *, parent: bool = True
) -> dict[int, ProcessMemory]:
    """Parent, once a tick: read each (slot, pid) child's memory and, with `parent`, this
    process's own, and write them into the scoreboard. Returns pid -> memory of those read;
    a child that exited since the parent listed it keeps its last sample until it is reaped."""
    sampled: dict[int, ProcessMemory] = {}
    for slot, pid in children:
        memory = read_memory(pid)
        if memory is not None:
            scoreboard.process(slot).set_memory(memory.pss_kib, memory.uss_kib)
            sampled[pid] = memory
    if parent:
        own = read_memory(os.getpid())
        if own is not None:
            scoreboard.set_parent_memory(own.pss_kib, own.uss_kib)
            sampled[os.getpid()] = own
    return sampled


def total_kib(sampled: Mapping[int, ProcessMemory]) -> tuple[int, int]:
    """PSS and USS summed over one sample (the history ring's memory columns)."""
    return (
        sum(m.pss_kib for m in sampled.values()),
        sum(m.uss_kib for m in sampled.values()),
    )


class MemorySampler:
    """The parent's sampling schedule: every tick while reading /proc is cheap; after a sample
    that took d seconds, the next waits d / BUDGET, so sampling never takes more than BUDGET of
    the parent's time (256 children of 200 MiB: a sample every ten seconds or so)."""

    BUDGET = 0.05

    def __init__(self, *, parent: bool = True) -> None:
        self.parent = parent  # False in `mpmd -X`: the one process is slot 0
        self.next_at = 0.0
        self.total_kib = (0, 0)  # the last sample's, which the history repeats until the next

    def sample(
        self, scoreboard: Scoreboard, children: Iterable[tuple[int, int]], now: float
    ) -> dict[int, ProcessMemory]:
        """Sample now if due (`now` is time.monotonic()); {} when not."""
        if now < self.next_at:
            return {}
        started = time.perf_counter()
        sampled = sample_memory(scoreboard, children, parent=self.parent)
        self.next_at = now + (time.perf_counter() - started) / self.BUDGET
        self.total_kib = total_kib(sampled)
        return sampled
