"""What the harness reads from /proc: per-core busy time and a process tree's memory.

Owns /proc/stat sampling (cpu0/cpu1 busy % across a wrk run) and PSS summed over a server's
whole process tree from /proc/PID/smaps_rollup. Parsing is split from reading so the arithmetic
is unit-tested on literal text. Never signals or changes a process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuTimes:
    """Jiffies of one core: busy = everything but idle and iowait."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> dict[str, CpuTimes]:
    """Per-core times from /proc/stat ('cpu0', 'cpu1', ...; the aggregate 'cpu' line too)."""
    cores: dict[str, CpuTimes] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *fields = line.split()
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = sum(values)
        cores[name] = CpuTimes(busy=total - idle, total=total)
    return cores


def read_cpu_times() -> dict[str, CpuTimes]:
    with open("/proc/stat") as f:
        return parse_proc_stat(f.read())


def busy_percent(before: dict[str, CpuTimes], after: dict[str, CpuTimes], core: str) -> float:
    """Share of the interval `core` was busy, 0-100."""
    if core not in before or core not in after:
        return 0.0
    total = after[core].total - before[core].total
    if total <= 0:
        return 0.0
    return 100.0 * (after[core].busy - before[core].busy) / total


def parse_stat_line(text: str) -> tuple[int, int]:
    """(ppid, num_threads) from /proc/PID/stat; the command name may hold spaces and ')'."""
    rest = text.rsplit(")", 1)[1].split()
    return int(rest[1]), int(rest[17])


def parse_cpu_ticks(text: str) -> int:
    """utime + stime (clock ticks) from /proc/PID/stat."""
    rest = text.rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def parse_pss_kib(smaps_rollup: str) -> int:
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, threads) for every process still readable."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                table[int(entry)] = parse_stat_line(f.read())
        except (OSError, IndexError, ValueError):
            continue
    return table


def descendants(root: int, table: dict[int, tuple[int, int]]) -> list[int]:
    """root and every process below it (root first), from a pid -> (ppid, threads) table."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _threads) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree


@dataclass(frozen=True)
class TreeMemory:
    pss_mib: float
    processes: int
    threads: int


def tree_memory(root: int) -> TreeMemory:
    """PSS summed over the tree under `root`, with its process and thread counts."""
    table = process_table()
    pids = descendants(root, table)
    pss_kib = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                pss_kib += parse_pss_kib(f.read())
        except OSError:
            continue
    threads = sum(table[pid][1] for pid in pids)
    return TreeMemory(pss_mib=pss_kib / 1024, processes=len(pids), threads=threads)


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by the processes now in the tree under `root`:
    what a server spent, whatever else shares its core."""
    ticks = 0
    for pid in descendants(root, process_table()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ticks += parse_cpu_ticks(f.read())
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")
