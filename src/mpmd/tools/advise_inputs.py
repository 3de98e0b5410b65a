"""What the advisor measures: memory from /proc, the scoreboard and its history, the logs.

It owns turning a running server (its scoreboard: per-child PSS/USS, the once-a-second history
of accesses, busy workers and connections, the lifetime request durations), /proc/meminfo, the
ErrorLog's tuning patterns (tools/errorlog.py) and an access log with %D (tools/accesslog.py)
into advise_core's `Inputs`. `snapshot_inputs` reads only the scoreboard copy and /proc, so the
status page's `?advice` can call it in a request; the logs are read by `mpmctl advise` only.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from mpmd.config.model import ServerConfig
from mpmd.mpm.memory import read_memory
from mpmd.mpm.scoreboard import Snapshot
from mpmd.tools.accesslog import LogFormatError, LogParser, read_access_log
from mpmd.tools.advise_core import ChildCost, Inputs, Memory, Traffic
from mpmd.tools.errorlog import pattern_of, read_error_log
from mpmd.tools.logformats import resolve_format
from mpmd.tools.plan import DEFAULT_THREAD_KIB, build_trace
from mpmd.tools.simulate import Request

ERROR_LOG_TAIL = 8 << 20  # bytes of the ErrorLog read: the recent past is what matters
LEAK_RATIO = 1.5  # the largest child's USS over the smallest's that says children grow
LEAK_MIN_KIB = 4096  # ... and by at least this much


@dataclass(frozen=True, slots=True)
class LogTraffic:
    traffic: Traffic
    requests: list[Request]  # the trace the planner replays
    notes: list[str]


def read_meminfo(path: str = "/proc/meminfo") -> tuple[int, int]:
    """(MemAvailable, MemTotal) in KiB."""
    values: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("MemAvailable", "MemTotal"):
                values[key] = int(rest.split()[0])
    return values["MemAvailable"], values["MemTotal"]


def core_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# -- the running server ------------------------------------------------------------------------


def children_memory(snap: Snapshot, fresh: bool = True) -> list[tuple[int, int]]:
    """(PSS, USS) KiB of each live child: with `fresh`, read from /proc now when this process
    may, else the parent's last sample in the scoreboard; children not sampled are left out."""
    out = []
    for p in snap.live_processes():
        now = read_memory(p.pid) if fresh else None
        pss, uss = (now.pss_kib, now.uss_kib) if now else (p.pss_kib, p.uss_kib)
        if pss > 0:
            out.append((pss, uss))
    return out


def cost_from_children(
    sizes: Sequence[tuple[int, int]], threads: int, thread_kib: float = DEFAULT_THREAD_KIB
) -> ChildCost:
    """The largest child (by PSS) as a one-thread child: its threads beyond the first at
    `thread_kib` each are taken off its USS."""
    pss, uss = max(sizes)
    base = max(1.0, uss - (threads - 1) * thread_kib)
    thread_note = f", less {threads - 1} threads x {thread_kib:g} KiB" if threads > 1 else ""
    return ChildCost(
        base, pss - uss, thread_kib,
        f"largest of {len(sizes)} running children: PSS {pss} KiB, USS {uss} KiB{thread_note}",
    )  # fmt: skip


def leak_hint(sizes: Sequence[tuple[int, int]]) -> str | None:
    """Why the children look like they grow (the largest USS well above the smallest)."""
    if len(sizes) < 2:
        return None
    low, high = min(u for _, u in sizes), max(u for _, u in sizes)
    if high > LEAK_RATIO * low and high - low >= LEAK_MIN_KIB:
        return f"children's USS ranges from {low} to {high} KiB"
    return None


def history_traffic(snap: Snapshot) -> Traffic | None:
    """Rate, busiest second and peaks from the history ring; mean service time from the
    lifetime totals (duration / accesses). None before any request was served."""
    totals = snap.totals()
    history = snap.history()
    if totals.accesses == 0 or len(history) < 2:
        return None
    first, last = history[0], history[-1]
    span = (last.time_us - first.time_us) / 1e6
    rates = [
        (b.accesses - a.accesses) / max(1e-3, (b.time_us - a.time_us) / 1e6)
        for a, b in itertools.pairwise(history)
    ]
    rate = (last.accesses - first.accesses) / span if span > 0 else 0.0
    return Traffic(
        rate=rate,
        peak_rate=max(rates, default=0.0),
        service_s=totals.duration_us / totals.accesses / 1e6,
        source=f"scoreboard history of {len(history)} s, mean service time over "
        f"{totals.accesses} requests",
        peak_busy=max(h.busy for h in history),
        peak_connections=max(h.async_connections for h in history),
    )


def snapshot_inputs(
    config: ServerConfig,
    snap: Snapshot,
    *,
    thread_safe: bool | None = None,
    reserve_kib: int = 0,
    budget_kib: int | None = None,
    fresh: bool = True,
) -> Inputs:
    """Inputs from one scoreboard copy, /proc/meminfo and (with `fresh`) each child's
    /proc/PID/smaps_rollup; without, the parent's last sample: cheap enough for a request."""
    available, total = read_meminfo()
    sizes = children_memory(snap, fresh)
    notes = []
    if not sizes:
        raise ValueError("no child of the running server has been measured yet")
    own = sum(p for p, _ in sizes)
    if thread_safe is None:
        thread_safe = config.mpm.name != "prefork"
        source = f"assumed from the running {config.mpm.name} MPM"
    else:
        source = "given"
    traffic = history_traffic(snap)
    if traffic is None:
        notes.append("the server has served no requests yet: no traffic measured")
    return Inputs(
        memory=Memory(available, total, own, reserve_kib, budget_kib),
        cost=cost_from_children(sizes, config.mpm.threads_per_child),
        thread_safe=thread_safe,
        thread_safe_source=source,
        cores=core_count(),
        traffic=traffic,
        leak=leak_hint(sizes),
        notes=tuple(notes),
        asgi=serves_asgi_only(config),
    )


def serves_asgi_only(config: ServerConfig) -> bool:
    """Every application the server mounts is an ASGIApp (its event loops carry them all)."""
    mounts = [m for v in (config.main, *config.vhosts) for m in v.wsgi_mounts]
    return bool(mounts) and all(m.kind == "asgi" for m in mounts)


# -- the logs ----------------------------------------------------------------------------------


def error_patterns(path: str) -> dict[str, int]:
    """Counts of the tuning patterns (AH00161, MP00003, crashes ...) in the ErrorLog's tail."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - ERROR_LOG_TAIL))
        text = f.read().decode("latin-1")
    events, _ = read_error_log(text.splitlines())
    return dict(Counter(p for e in events if (p := pattern_of(e)) is not None))


def log_traffic(
    path: str, *, config: str | None = None, log_format: str | None = None
) -> LogTraffic:
    """Traffic and the planner's trace from an access log with %D (or %T): rate over the log's
    span, the busiest second, mean service time, and the p90 idle gap between a connection's
    requests (with %k). LogFormatError when the format lacks a time or a service time."""
    fmt, origin = resolve_format(log_format, config=config, access_log=path)
    parser = LogParser(fmt, ("time", "service", "client", "keepalive"), origin)
    parser.require(("time", "service"))
    parsed = read_access_log(path, parser)
    trace = build_trace(parsed.records, parser)
    reqs = trace.requests
    if not reqs:
        raise LogFormatError(f"no requests in {path}")
    notes = list(trace.notes)
    if parsed.skipped:
        notes.append(parsed.skipped_summary(3))
    span = max(1.0, reqs[-1].arrival - reqs[0].arrival)
    per_second = Counter(int(r.arrival) for r in reqs)
    traffic = Traffic(
        rate=len(reqs) / span,
        peak_rate=float(max(per_second.values())),
        service_s=sum(r.service for r in reqs) / len(reqs),
        source=f"{len(reqs)} requests over {span:.0f} s of {os.path.basename(path)}",
        keepalive_gap_s=_gap_p90(reqs),
    )
    return LogTraffic(traffic, reqs, notes)


def _gap_p90(reqs: Sequence[Request]) -> float | None:
    """p90 of the idle time between a kept-alive request's end and the next on its connection."""
    ends: dict[int, float] = {}
    gaps = []
    for r in reqs:
        if r.conn is None:
            return None
        if r.conn in ends:
            gaps.append(max(0.0, r.arrival - ends[r.conn]))
        ends[r.conn] = r.arrival + r.service
    if not gaps:
        return None
    gaps.sort()
    return gaps[min(len(gaps) - 1, math.ceil(0.9 * len(gaps)) - 1)]


def access_log_of(config: ServerConfig) -> str | None:
    """The main server's first CustomLog file whose format logs a service time."""
    for spec in config.main.access_logs:
        if spec.target.startswith("|"):
            continue
        if any(code in spec.format for code in ("%D", "%T", "%{ms}T", "%{us}T")):
            return spec.target
    return None
