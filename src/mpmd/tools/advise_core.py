"""The advisor's arithmetic: measured inputs in, an MPM and every pool directive out.

This module owns the rules `mpmctl advise` applies, as pure functions a bench script can call
(`advise(inputs)`): the memory budget (0.9 x MemAvailable, counting back what mpmd's own
children already hold, less a reserve), the cost of one child (USS with a growth allowance that
MaxMemoryPerChild enforces, plus its share of shared pages, plus its threads), the concurrency
Little's law gives (rate x service time, the busiest second, the history's peak), and Apache's
clamps (reference 2.2-2.4: MaxRequestWorkers a multiple of ThreadsPerChild, ServerLimit x
ThreadsPerChild, MaxSpareThreads >= MinSpareThreads + ThreadsPerChild + 1, StartServers within
the children). Each value carries the sentence that justifies it. Nothing here reads /proc, a
log or the scoreboard (advise_inputs.py does), simulates (advise.py asks the planner) or prints
(advise_render.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

BUDGET_FRACTION = 0.9  # of MemAvailable: the page cache and the kernel keep the rest
GROWTH = 1.5  # a child may grow to 1.5 x its measured USS before MaxMemoryPerChild retires it
# ... and at least this many KiB above it: a small child's USS grows by megabytes under load
# (buffers, the allocator's arenas; the quality study's I/O app went from 4.4 to 8.3 MiB at 200
# req/s), and a cap at 1.5 x retired both children every few seconds (MP00004), p95 x 4
GROWTH_FLOOR_KIB = 16 * 1024
HEADROOM = 1.25  # workers above the measured peak concurrency
# ... and at least peak + SQRT_STAFFING x sqrt(peak): Poisson arrivals put about sqrt(L) more
# requests in service than their mean, so a small pool needs more than 25 % (square-root
# staffing: at 8 requests in service, ceil(1.25 x 8) = 10 workers leave ~40 % of requests
# waiting by Erlang C; 8 + 2 x sqrt(8) -> 14 leave ~4 %, at the busiest second's rate)
SQRT_STAFFING = 2.0
MAX_THREADS_PER_CHILD = 25  # Apache's default: more threads only queue on the GIL
MIN_THREADS_PER_CHILD = 4  # a thread costs tens of KiB: spare ones absorb a burst before a tick
ASGI_THREADS_WHY = (
    f"{MIN_THREADS_PER_CHILD}: the ASGI application runs on each child's event loop, not on "
    "its threads, which serve only what else the server answers (static files, the status page)"
)
DEFAULT_WORKERS = 150  # Debian's MaxRequestWorkers, when no traffic was measured
KEEPALIVE_HOLDING = (1, 5)  # KeepAliveTimeout range where a kept-alive connection holds a worker
KEEPALIVE_PARKED = (2, 15)  # the event MPM parks idle connections: a longer timeout is cheap
MAX_KEEPALIVE_REQUESTS = 100  # Apache's default; 0 (unlimited) lets one client pin a process
LEAK_MAX_CONNECTIONS = 10000  # MaxConnectionsPerChild when children are seen to grow
# a request on a CPU for at least CPU_BOUND of its time and longer than the GIL's switch
# interval (sys.getswitchinterval(), 5 ms) delays the other threads of its child: processes
CPU_BOUND = 0.5
GIL_SWITCH_MS = 5.0


@dataclass(frozen=True, slots=True)
class Memory:
    """The machine's memory as measured, in KiB."""

    available_kib: int  # /proc/meminfo MemAvailable
    total_kib: int  # MemTotal (reported, not used in the budget)
    own_children_kib: int = 0  # PSS of mpmd's running children: theirs again once replaced
    reserve_kib: int = 0  # kept free for other processes' growth (--reserve)
    budget_kib: int | None = None  # --memory-budget: replaces the computed budget


@dataclass(frozen=True, slots=True)
class ChildCost:
    """One child with one thread, measured; thread_kib is each extra thread's USS."""

    uss_kib: float
    shared_kib: float  # its share of shared pages: PSS - USS
    thread_kib: float
    source: str


@dataclass(frozen=True, slots=True)
class Traffic:
    """What the access log or the scoreboard history says about the load."""

    rate: float  # requests per second, mean over the window
    peak_rate: float  # requests in the busiest second
    service_s: float  # mean service time (%D, or the scoreboard's duration / accesses)
    source: str
    peak_busy: int = 0  # the history's most busy workers in one sample (0: no history)
    peak_connections: int = 0  # the history's most open connections (event), 0 unknown
    keepalive_gap_s: float | None = None  # p90 idle gap before a connection's next request


@dataclass(frozen=True, slots=True)
class Inputs:
    memory: Memory
    cost: ChildCost
    thread_safe: bool
    thread_safe_source: str
    cores: int
    traffic: Traffic | None = None
    error_patterns: dict[str, int] = field(default_factory=dict)  # errorlog pattern -> count
    leak: str | None = None  # why children look like they grow, if they do
    notes: tuple[str, ...] = ()
    cpu: tuple[float, float] | None = None  # (CPU ms, wall ms) of an unloaded request (probe)
    asgi: bool = False  # every application is an ASGIApp: each event child's loop runs them


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    value: int | float
    why: str  # the `#` line above it: inputs and arithmetic

    @property
    def text(self) -> str:
        if self.name == "MaxMemoryPerChild":
            return f"{int(self.value) // 1024}M"  # KiB in, whole MiB out (rounded down)
        if isinstance(self.value, float):
            return f"{self.value:g}"
        return str(self.value)


@dataclass(slots=True)
class Advice:
    mpm: str
    why_mpm: str
    budget_kib: int
    budget_why: str
    child_kib: int  # planned cost of one child at full threads, growth allowance included
    child_why: str
    concurrency_why: str
    settings: list[Setting]
    notes: list[str]
    fits: bool = True
    check: dict[str, object] | None = None  # the planner's verdict (advise.py)
    adjustments: list[str] = field(default_factory=list)

    def value(self, name: str) -> int | float:
        return next(s.value for s in self.settings if s.name == name)

    def directives(self) -> dict[str, int | float | str]:
        return {s.name: s.text if s.name == "MaxMemoryPerChild" else s.value
                for s in self.settings}  # fmt: skip


# -- the arithmetic ---------------------------------------------------------------------------


def memory_budget(memory: Memory) -> tuple[int, str]:
    """KiB the pool may plan for, and the sentence that says how."""
    if memory.budget_kib is not None:
        return memory.budget_kib, f"{memory.budget_kib} KiB (given with --memory-budget)"
    pool = BUDGET_FRACTION * (memory.available_kib + memory.own_children_kib)
    budget = math.floor(pool) - memory.reserve_kib
    return budget, (
        f"{BUDGET_FRACTION} x (MemAvailable {memory.available_kib} KiB + mpmd's children "
        f"{memory.own_children_kib} KiB) - reserve {memory.reserve_kib} KiB = {budget} KiB "
        f"(MemTotal {memory.total_kib} KiB; MemAvailable already nets out what other processes "
        "use)"
    )


def max_memory_per_child(cost: ChildCost, threads: int) -> int:
    """KiB of USS a child may reach: GROWTH x its measured USS with `threads` threads, at least
    GROWTH_FLOOR_KIB more than it, rounded up to a whole MiB (the directive is written in M)."""
    uss = cost.uss_kib + (threads - 1) * cost.thread_kib
    return math.ceil(max(GROWTH * uss, uss + GROWTH_FLOOR_KIB) / 1024) * 1024


def child_kib(cost: ChildCost, threads: int) -> int:
    """Planned KiB of one child: the USS MaxMemoryPerChild lets it reach, plus its shared share."""
    return max_memory_per_child(cost, threads) + math.ceil(cost.shared_kib)


def little(rate: float, service_s: float) -> float:
    """Little's law: requests in service at once = arrival rate x time in service."""
    return rate * service_s


def peak_concurrency(traffic: Traffic) -> tuple[float, float, str]:
    """(mean, peak) requests in service and the sentence behind them."""
    mean = little(traffic.rate, traffic.service_s)
    busiest = little(traffic.peak_rate, traffic.service_s)
    peak = max(busiest, float(traffic.peak_busy))
    why = (
        f"Little's law L = {traffic.rate:.3g} req/s x {traffic.service_s * 1000:.3g} ms = "
        f"{mean:.3g}; busiest second {traffic.peak_rate:.3g} req/s x "
        f"{traffic.service_s * 1000:.3g} ms = {busiest:.3g}"
    )
    if traffic.peak_busy:
        why += f"; history's peak busy workers {traffic.peak_busy}"
    return mean, peak, why + f" ({traffic.source})"


def workers_needed(peak: float) -> int:
    """Workers for a peak concurrency: HEADROOM above it or SQRT_STAFFING standard deviations
    of Poisson arrivals above it, whichever is more; at least 1."""
    return max(1, math.ceil(max(HEADROOM * peak, peak + SQRT_STAFFING * math.sqrt(peak)) - 1e-9))


def cpu_bound(inputs: Inputs) -> bool:
    """Whether the probe's requests spent at least CPU_BOUND of their time on a CPU, and longer
    than a GIL switch interval."""
    if inputs.cpu is None:
        return False
    cpu_ms, wall_ms = inputs.cpu
    return cpu_ms >= GIL_SWITCH_MS and cpu_ms >= CPU_BOUND * wall_ms


def cpu_workers(inputs: Inputs) -> int | None:
    """For a CPU-bound application, the workers that keep every core busy: cores x wall / CPU
    time (a request on a CPU half its time needs two workers a core); None otherwise."""
    if not cpu_bound(inputs):
        return None
    cpu_ms, wall_ms = inputs.cpu  # type: ignore[misc]
    return max(inputs.cores, round(inputs.cores * wall_ms / cpu_ms))


def choose_mpm(inputs: Inputs) -> tuple[str, str]:
    if inputs.asgi:
        return "event", (
            "an ASGI application: the event MPM serves it, each child running it on its own "
            "event loop, where connections, not threads, carry its concurrency"
        )
    if not inputs.thread_safe:
        return "prefork", (
            f"the application is not known to be thread safe ({inputs.thread_safe_source}): "
            "prefork runs one request per process; pass --thread-safe yes to consider event"
        )
    if cpu_bound(inputs):
        cpu_ms, wall_ms = inputs.cpu  # type: ignore[misc]
        return "prefork", (
            f"the application is thread safe but CPU-bound (the probe's requests took "
            f"{cpu_ms:.3g} ms of CPU in {wall_ms:.3g} ms: at least {CPU_BOUND:.0%} of "
            f"their time and longer than the GIL's {GIL_SWITCH_MS:g} ms switch interval): "
            "a child's threads take turns on the GIL, so a request that lands in a child "
            "already running one waits for it while another core may idle; prefork gives "
            "each request a process of its own"
        )
    return "event", (
        f"the application is thread safe ({inputs.thread_safe_source}): event parks idle "
        "keep-alive connections without a thread, so keep-alive clients cost no worker, and "
        "threads are cheaper than processes for requests that wait on I/O (worker would hold a "
        "thread per kept-alive connection)"
    )


def threads_per_child(needed: int, cores: int) -> tuple[int, str]:
    """Enough threads that about one child per core carries the peak, within 4..25."""
    tpc = min(MAX_THREADS_PER_CHILD, max(MIN_THREADS_PER_CHILD, math.ceil(needed / cores)))
    return tpc, (
        f"ceil({needed} workers / {cores} cores) kept within {MIN_THREADS_PER_CHILD}.."
        f"{MAX_THREADS_PER_CHILD} = {tpc}: processes, not threads, buy CPU parallelism under "
        "the GIL; a few spare threads are cheap"
    )


def keepalive_timeout(inputs: Inputs, parked: bool) -> tuple[int, str]:
    low, high = KEEPALIVE_PARKED if parked else KEEPALIVE_HOLDING
    gap = inputs.traffic.keepalive_gap_s if inputs.traffic else None
    holds = "parked without a thread" if parked else "holds a worker while idle"
    if gap is None:
        value = 5 if parked else 2  # Apache's default; prefork/worker: shorter
        return value, f"no keep-alive gaps measured; a kept-alive connection {holds}: {value} s"
    value = min(high, max(low, math.ceil(gap)))
    return value, (
        f"p90 gap before a connection's next request {gap:.3g} s, rounded up and kept within "
        f"{low}..{high} s (a kept-alive connection {holds}) = {value} s"
    )


# -- the advice -------------------------------------------------------------------------------


def advise(inputs: Inputs, *, min_workers: int = 0, min_spare: int = 0) -> Advice:
    """The recommended MPM and every pool directive for `inputs`; fits=False (and no settings)
    when not even one child fits in the memory budget. `min_workers` and `min_spare` raise
    MaxRequestWorkers and the spare workers (the planner's adjustments, advise.py)."""
    mpm, why_mpm = choose_mpm(inputs)
    budget, budget_why = memory_budget(inputs.memory)
    threaded = mpm != "prefork"
    notes = list(inputs.notes)
    if inputs.traffic is not None:
        mean, peak, conc_why = peak_concurrency(inputs.traffic)
        needed = workers_needed(peak)
        conc_why += (
            f"; ceil(max({HEADROOM} x {peak:.3g}, {peak:.3g} + {SQRT_STAFFING:g} x "
            f"sqrt({peak:.3g}))) = {needed} workers"
        )
        if needed < inputs.cores:
            needed = inputs.cores
            conc_why += f"; at least one per core: {needed}"
        if min_workers > needed:
            needed = min_workers
            conc_why += f"; raised to {needed} after the planner's check"
        cap = cpu_workers(inputs)
        if cap is not None and needed > cap:
            needed = cap
            conc_why += (
                f"; CPU-bound: {inputs.cores} cores x wall / CPU time "
                f"{inputs.cpu[1]:.3g} / {inputs.cpu[0]:.3g} ms = {cap} workers keep every core "
                "busy, more would only share the cores (every request slower) where fewer queue "
                f"first come, first served: {cap}"
            )
    else:
        mean, peak, needed = 0.0, 0.0, DEFAULT_WORKERS
        conc_why = (
            f"no traffic measured (give --access-log with %D): sized for Debian's "
            f"{DEFAULT_WORKERS} workers, within memory"
        )
    if inputs.asgi:
        conc_why = (
            f"{conc_why}; an ASGI application's requests wait on each child's loop, not for a "
            "thread: one child a core"
            if inputs.traffic is not None
            else "an ASGI application: each child's loop carries its requests, one child a core"
        )
        tpc, tpc_why = MIN_THREADS_PER_CHILD, ASGI_THREADS_WHY
    else:
        tpc, tpc_why = threads_per_child(needed, inputs.cores) if threaded else (1, "")
    per_child = child_kib(inputs.cost, tpc)
    cap = budget // per_child if per_child > 0 else 0
    while threaded and cap < 1 and tpc > 1:  # fewer threads before giving up
        tpc = max(1, tpc // 2)
        tpc_why = f"{tpc}: a child with more threads does not fit in the memory budget"
        per_child = child_kib(inputs.cost, tpc)
        cap = budget // per_child
    mmpc = max_memory_per_child(inputs.cost, tpc)
    extra_threads = f" + {tpc - 1} threads x {inputs.cost.thread_kib:g} KiB" if tpc > 1 else ""
    child_why = (
        f"USS {inputs.cost.uss_kib:g} KiB{extra_threads}, x {GROWTH} growth allowance (at least "
        f"+{GROWTH_FLOOR_KIB // 1024} MiB) rounded up to a MiB = {mmpc} KiB (MaxMemoryPerChild), "
        f"+ shared share "
        f"{inputs.cost.shared_kib:g} KiB = {per_child} KiB ({inputs.cost.source})"
    )
    advice = Advice(mpm, why_mpm, budget, budget_why, per_child, child_why, conc_why, [], notes)
    if cap < 1:
        advice.fits = False
        notes.append(
            f"one child needs {per_child} KiB but the memory budget is {budget} KiB: no "
            "configuration of this application is safe on this machine"
        )
        return advice
    if inputs.asgi:  # one loop a core: a loop is one thread of Python, whatever it holds
        children_needed = inputs.cores
        wants = f"one event loop a core: {children_needed}"
    else:
        children_needed = max(math.ceil(needed / tpc), min(inputs.cores, needed))
        wants = (
            f"max(ceil({needed} / {tpc}), min({inputs.cores} cores, {needed})) = {children_needed}"
            if threaded
            else str(needed)
        )
    children = min(children_needed, cap)
    limit = f"memory allows {budget} // {per_child} = {cap} children, traffic needs {wants}"
    if children < children_needed:
        notes.append(
            f"the traffic wants {children_needed} children but memory holds {cap}: requests "
            "will wait at peaks (add memory, or lower the per-child cost)"
        )
    burst = None if inputs.traffic is None else workers_needed(peak) - math.floor(mean)
    if min_spare:
        burst = max(burst or 0, min_spare)
    if threaded:
        advice.settings = _threaded(children, tpc, tpc_why, mean, burst, limit)
    else:
        advice.settings = _prefork(children, mean, burst, limit)
    advice.settings += _common(inputs, mpm, children, tpc, mmpc)
    if inputs.error_patterns.get("MaxRequestWorkers reached"):
        notes.append(
            f"the ErrorLog says MaxRequestWorkers was reached "
            f"{inputs.error_patterns['MaxRequestWorkers reached']} times (AH00161/AH00286/AH00484)"
        )
    if inputs.error_patterns.get("hung requests (Timeout exceeded)"):
        notes.append(
            "the ErrorLog has hung requests (MP00003): a stuck request holds a worker until "
            "Timeout; look at the application before adding workers"
        )
    if inputs.error_patterns.get("child crashes"):
        notes.append("the ErrorLog has child crashes (AH00052/AH10392): look at the application")
    return advice


def _prefork(mrw: int, mean: float, burst: int | None, limit: str) -> list[Setting]:
    spare = _spare(burst, 2, 5, mrw)
    start = min(mrw, max(1, math.ceil(mean)) + spare)
    max_spare = max(spare + 1, 2 * spare)
    return [
        Setting("StartServers", start,
                f"max(1, ceil(mean concurrency {mean:.3g})) + MinSpareServers {spare}, at "
                f"most MaxRequestWorkers = {start}"),
        Setting("MinSpareServers", spare, _spare_why(burst, spare, "at least 2 so a second "
                "concurrent request never waits a tick for a fork", "MinSpareServers 5")),
        Setting("MaxSpareServers", max_spare,
                f"2 x MinSpareServers, at least MinSpareServers + 1 (Apache raises it "
                f"otherwise) = {max_spare}"),
        Setting("ServerLimit", mrw, f"= MaxRequestWorkers {mrw} (prefork: one child a worker)"),
        Setting("MaxRequestWorkers", mrw, f"{limit}: {mrw}"),
    ]  # fmt: skip


def _threaded(
    children: int, tpc: int, tpc_why: str, mean: float, burst: int | None, limit: str
) -> list[Setting]:
    mrw = children * tpc
    spare = _spare(burst, math.ceil(tpc / 2), 25, mrw)
    max_spare = spare + 2 * tpc
    start = min(children, max(1, math.ceil((mean + spare) / tpc)))
    return [
        Setting("StartServers", start,
                f"ceil((mean concurrency {mean:.3g} + MinSpareThreads {spare}) / "
                f"ThreadsPerChild {tpc}), at most {children} children = {start}"),
        Setting("ServerLimit", children,
                f"MaxRequestWorkers / ThreadsPerChild = {children}; no more, so children "
                "stopping in a graceful restart never overlap new ones beyond the budget"),
        Setting("ThreadLimit", tpc,
                f"= ThreadsPerChild {tpc}, so an older ThreadLimit cannot clamp it (AH00507); "
                "ServerLimit and ThreadLimit change only with a full stop and start"),
        Setting("ThreadsPerChild", tpc, tpc_why),
        Setting("MaxRequestWorkers", mrw,
                f"{limit}: {children} children x {tpc} threads = {mrw} (a multiple of "
                "ThreadsPerChild, no AH00513)"),
        Setting("MinSpareThreads", spare, _spare_why(burst, spare, "at least half a child "
                "of threads", "MinSpareThreads 25")),
        Setting("MaxSpareThreads", max_spare,
                f"MinSpareThreads {spare} + 2 x ThreadsPerChild {tpc} = {max_spare} (Apache "
                "needs at least MinSpareThreads + ThreadsPerChild + 1)"),
    ]  # fmt: skip


def _spare_why(burst: int | None, spare: int, floor_why: str, debian: str) -> str:
    if burst is None:
        return f"no traffic measured: Debian's {debian}, at most MaxRequestWorkers = {spare}"
    return (
        f"the burst above the mean (workers needed - floor(mean concurrency)) = {burst}, "
        f"{floor_why}, at most MaxRequestWorkers = {spare}"
    )


def _spare(burst: int | None, at_least: int, default: int, mrw: int) -> int:
    """Idle workers to keep: the peak's excess over the mean (`default`, Debian's, when no
    traffic was measured), at least `at_least`, at most MaxRequestWorkers."""
    wanted = default if burst is None else max(burst, at_least)
    return max(1, min(mrw, wanted))


def _common(inputs: Inputs, mpm: str, children: int, tpc: int, mmpc: int) -> list[Setting]:
    parked = mpm == "event"
    kat, kat_why = keepalive_timeout(inputs, parked)
    out = [
        Setting("KeepAliveTimeout", kat, kat_why),
        Setting("MaxKeepAliveRequests", MAX_KEEPALIVE_REQUESTS,
                f"Apache's default {MAX_KEEPALIVE_REQUESTS}: unlimited would let one client "
                "keep a connection (and in prefork/worker its worker) forever"),
    ]  # fmt: skip
    if inputs.leak:
        out.append(Setting("MaxConnectionsPerChild", LEAK_MAX_CONNECTIONS,
                           f"children grow ({inputs.leak}): recycle each after "
                           f"{LEAK_MAX_CONNECTIONS} connections"))  # fmt: skip
    else:
        out.append(Setting("MaxConnectionsPerChild", 0,
                           "0 (never recycle): no growth seen; MaxMemoryPerChild retires a "
                           "child that grows anyway"))  # fmt: skip
    out.append(Setting("MaxMemoryPerChild", mmpc,
                       f"{GROWTH} x the measured USS (at least {GROWTH_FLOOR_KIB // 1024} MiB "
                       f"more), rounded up to a MiB = {mmpc // 1024}M: the budget above assumes "
                       "no child grows past it"))  # fmt: skip
    if parked:
        out.append(_factor(inputs, children, tpc))
    return out


def _factor(inputs: Inputs, children: int, tpc: int) -> Setting:
    """AsyncRequestWorkerFactor: a child accepts up to ThreadsPerChild + factor x idle threads
    connections; keep Apache's 2 unless the history's connections per child need more with
    half the threads idle."""
    peak = inputs.traffic.peak_connections if inputs.traffic else 0
    per_child = math.ceil(peak / children) if peak else 0
    half = max(1, tpc // 2)
    factor = max(2, math.ceil((per_child - tpc) / half)) if per_child > tpc else 2
    if not peak:
        why = "Apache's 2: no connection counts measured"
    else:
        why = (
            f"peak open connections {peak} / {children} children = {per_child} a child; a "
            f"child accepts ThreadsPerChild {tpc} + factor x idle threads (taken as {half}): "
            f"max(2, ceil(({per_child} - {tpc}) / {half})) = {factor}"
        )
    return Setting("AsyncRequestWorkerFactor", factor, why)
