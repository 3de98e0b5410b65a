"""Apache's idle-server maintenance as pure functions (reference 2.1-2.3).

Apache's `perform_idle_server_maintenance` counts, forks and logs in one go. Here the counting
and the choice are a function: a scoreboard snapshot, the pool settings and the state Apache
retains between runs go in; the slots to fork into, the child to retire, the log lines (with
Apache's ids and texts) and the new retained state come out. The parent carries them out. No
forking, no logging, no clock, no shared memory writes happen here, so the tests are tables.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mpmd.config.model import MpmSettings
from mpmd.mpm.scoreboard import DEAD, GRACEFUL, IDLE_KILL, READY, STARTING, Snapshot

MAX_SPAWN_RATE = 32
HOLD_OFF_AFTER_GRACEFUL = 10
BUSY_LOG_RATE = 8  # "server seems busy" at info from this rate on

LogLine = tuple[str, str, str]  # (level, AH id, message)

_REACHED_MAX = (
    "server reached MaxRequestWorkers setting, consider raising the MaxRequestWorkers setting"
)
_NEAR_MAX = (
    "server is within MinSpareThreads of MaxRequestWorkers, "
    "consider raising the MaxRequestWorkers setting"
)
_IDS = {
    # (mpm, what) -> AH id
    ("prefork", "max"): "AH00161",
    ("prefork", "busy"): "AH00162",
    ("worker", "max"): "AH00286",
    ("worker", "near"): "AH00287",
    ("worker", "full"): "AH00288",
    ("worker", "busy"): "AH00289",
    ("event", "max"): "AH00484",
    ("event", "near"): "AH10159",
    ("event", "full"): "AH03490",
    ("event", "busy"): "AH00486",
    ("event", "capped"): "AH03491",
}
_FULL = {
    "worker": "scoreboard is full, not at MaxRequestWorkers",
    "event": "scoreboard is full, not at MaxRequestWorkers.Increase ServerLimit.",
}


@dataclass(frozen=True, slots=True)
class SpawnState:
    """What Apache's parent retains between maintenance runs (and across restarts)."""

    rate: int = 1  # idle_spawn_rate: children forked by the next spawning run
    hold_off: int = 0  # spawning runs left that do not double the rate (after graceful)
    reported_max: bool = False  # "server reached MaxRequestWorkers" said for this episode
    reported_near_max: bool = False  # "within MinSpareThreads of MaxRequestWorkers" said
    reported_full: bool = False  # "scoreboard is full" said for this episode
    # worker/event with ListenCoresBucketsRatio: each bucket's own retained state (Apache's
    # per-bucket idle_spawn_rate); empty with one bucket
    buckets: tuple[SpawnState, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """What the parent does after one run: fork into spawn_slots, stop `retire` gracefully."""

    spawn_slots: tuple[int, ...] = ()
    retire: int | None = None  # slot of the child to stop gracefully (POD byte / signal)
    retire_more: tuple[int, ...] = ()  # further slots to stop: one per listener bucket
    logs: tuple[LogLine, ...] = ()
    state: SpawnState = SpawnState()


def after_graceful_restart(state: SpawnState) -> SpawnState:
    """The next 10 spawning runs keep the rate instead of doubling it (reference 2.1)."""
    buckets = tuple(after_graceful_restart(bucket) for bucket in state.buckets)
    return replace(state, hold_off=HOLD_OFF_AFTER_GRACEFUL, buckets=buckets)


def _spawned(state: SpawnState, cap: int = MAX_SPAWN_RATE) -> SpawnState:
    """After a spawning run: double the rate, unless a graceful restart holds it."""
    if state.hold_off:
        return replace(state, hold_off=state.hold_off - 1)
    return replace(state, rate=min(state.rate * 2, cap))


def prefork_maintenance(snap: Snapshot, mpm: MpmSettings, state: SpawnState) -> Decision:
    """Reference 2.2: keep idle children between MinSpareServers and MaxSpareServers.

    Idle = slots below MaxRequestWorkers in `S` or `_` whose child is of the running
    generation and not quiescing. Free = the lowest DEAD slots with no process, up to the rate.
    """
    limit = min(mpm.max_request_workers, snap.server_limit)
    tl = snap.thread_limit
    statuses = snap.statuses
    generation = snap.generation
    idle_slots: list[int] = []
    free: list[int] = []
    any_free = False
    total = 0
    for slot in range(limit):
        status = statuses[slot * tl]
        proc = snap.processes[slot]
        if status == DEAD and proc.pid == 0:
            any_free = True
            if len(free) < state.rate:
                free.append(slot)
            continue
        total += 1
        if status <= READY and proc.generation == generation and not proc.quiescing:
            idle_slots.append(slot)
    if any_free:
        state = replace(state, reported_max=False)
    idle = len(idle_slots)

    if idle > mpm.max_spare_servers:
        buckets = mpm.listen_buckets
        if buckets > 1:  # Apache signals the buckets' PODs in turn: keep every bucket served
            per_bucket = [[s for s in idle_slots if s % buckets == b] for b in range(buckets)]
            idle_slots = max(per_bucket, key=len)
        ready = [s for s in idle_slots if statuses[s * tl] == READY]
        victim = (ready or idle_slots)[-1]
        return Decision(retire=victim, state=replace(state, rate=1))
    if idle < mpm.min_spare_servers:
        if not free:
            logs: tuple[LogLine, ...] = ()
            if not state.reported_max:
                logs = (("error", _IDS["prefork", "max"], _REACHED_MAX),)
            return Decision(logs=logs, state=replace(state, rate=1, reported_max=True))
        logs = ()
        if state.rate >= BUSY_LOG_RATE:
            logs = (
                (
                    "info",
                    _IDS["prefork", "busy"],
                    "server seems busy, (you may need to increase StartServers, or "
                    f"Min/MaxSpareServers), spawning {state.rate} children, there are {idle} "
                    f"idle, and {total} total children",
                ),
            )
        return Decision(spawn_slots=tuple(free), logs=logs, state=_spawned(state))
    return Decision(state=replace(state, rate=1))


def threaded_maintenance(snap: Snapshot, mpm: MpmSettings, state: SpawnState) -> Decision:
    """Reference 2.3, run once per listener bucket (ListenCoresBucketsRatio) as Apache's
    worker and event do: bucket b owns slots b, b + n, b + 2n ..., keeps its own spawn rate
    (capped at 32/n) and uses MinSpareThreads/n, MaxSpareThreads/n and MaxRequestWorkers/n."""
    buckets = mpm.listen_buckets
    if buckets <= 1:
        return _threaded_bucket(snap, mpm, state, 0, 1)
    states = state.buckets or (SpawnState(hold_off=state.hold_off),) * buckets
    decisions = [_threaded_bucket(snap, mpm, states[b], b, buckets) for b in range(buckets)]
    retiring = [d.retire for d in decisions if d.retire is not None]
    return Decision(
        spawn_slots=tuple(slot for d in decisions for slot in d.spawn_slots),
        retire=retiring[0] if retiring else None,
        retire_more=tuple(retiring[1:]),
        logs=tuple(line for d in decisions for line in d.logs),
        state=replace(state, buckets=tuple(d.state for d in decisions)),
    )


def _threaded_bucket(
    snap: Snapshot, mpm: MpmSettings, state: SpawnState, bucket: int, buckets: int
) -> Decision:
    """Keep idle threads between MinSpareThreads and MaxSpareThreads by adding or retiring
    whole children (worker and event; event's extra conditions when mpm.name is "event").

    A thread is idle when its state is `.`, `S` or `_` (Apache counts a live child's
    not-yet-started threads), its child is alive, of the running generation, not quiescing and,
    for event, accepting. Worker looks for free slots below MaxRequestWorkers/ThreadsPerChild and
    may reuse the slot of a quiescing child with dead threads, preferring fully dead slots; event
    uses any slot up to ServerLimit that has no process, but keeps the number of active children
    within MaxRequestWorkers/ThreadsPerChild.
    """
    event = mpm.name == "event"
    mpm_name = "event" if event else "worker"
    tpc = min(mpm.threads_per_child, snap.thread_limit)
    max_workers = mpm.max_request_workers // buckets
    daemons_limit = max(1, mpm.active_daemons_limit // buckets)
    server_limit = min(snap.server_limit, mpm.server_limit)
    scan = server_limit if event else min(mpm.active_daemons_limit, server_limit)
    min_spare, max_spare = mpm.min_spare_threads // buckets, mpm.max_spare_threads // buckets
    generation = snap.generation

    idle = active_threads = total_children = active_children = 0
    dead_slots: list[int] = []  # every thread DEAD, no process (or a quiescing one)
    dying_slots: list[int] = []  # only DEAD and gracefully finishing threads
    busy_slots: list[int] = []  # some DEAD threads beside live ones in a quiescing child
    retire_candidates: list[tuple[int, int]] = []  # (idle threads, slot)
    for slot in range(bucket, scan, buckets):
        proc = snap.processes[slot]
        row = snap.slot_statuses(slot)[:tpc]
        dead = row.count(DEAD)
        if proc.pid:
            total_children += 1
            stopping = bool(proc.quiescing) or proc.generation != generation
            if not stopping:
                active_children += 1
            starting = row.count(STARTING)
            active_threads += tpc - dead - starting - row.count(GRACEFUL) - row.count(IDLE_KILL)
            if not stopping and not (event and proc.not_accepting):
                child_idle = dead + starting + row.count(READY)
                idle += child_idle
                retire_candidates.append((child_idle, slot))
        if event:
            if not proc.pid:
                dead_slots.append(slot)
        elif dead and (not proc.pid or proc.quiescing):
            if dead == tpc:
                dead_slots.append(slot)
            elif dead + row.count(GRACEFUL) == tpc:
                dying_slots.append(slot)
            else:
                busy_slots.append(slot)
    free = (dead_slots + dying_slots + busy_slots)[: state.rate]

    at_ceiling = active_threads >= max_workers
    if not at_ceiling:
        state = replace(state, reported_max=False, reported_near_max=False)
    if free:
        state = replace(state, reported_full=False)

    if idle > max_spare:
        retire = None
        # event: with children already stopping, retire more only while the scoreboard has
        # room for their replacements, so slow finishers cannot fill it
        if retire_candidates and (
            not event
            or active_children == total_children
            or server_limit // buckets - total_children > daemons_limit
        ):
            retire = max(retire_candidates)[1]
        return Decision(retire=retire, state=replace(state, rate=1))
    if idle >= min_spare:
        return Decision(state=replace(state, rate=1))

    logs: tuple[LogLine, ...] = ()
    # event checks the ceiling first; worker only when it found no free slot
    if at_ceiling and (event or not free):
        if idle == 0:
            if not state.reported_max:
                logs = (("error", _IDS[mpm_name, "max"], _REACHED_MAX),)
            state = replace(state, reported_max=True)
        else:
            if not state.reported_near_max:
                logs = (("error", _IDS[mpm_name, "near"], _NEAR_MAX),)
            state = replace(state, reported_near_max=True)
        return Decision(logs=logs, state=replace(state, rate=1))
    if not free:
        if not state.reported_full:
            logs = (("error", _IDS[mpm_name, "full"], _FULL[mpm_name]),)
        return Decision(logs=logs, state=replace(state, rate=1, reported_full=True))

    count = len(free)
    if event and count + active_children > daemons_limit:
        if active_children < daemons_limit:
            count = daemons_limit - active_children
        else:
            logs += (
                (
                    "debug",
                    _IDS["event", "capped"],
                    f"server is at active daemons limit, spawning of {count} children "
                    f"cancelled: {active_children}/{daemons_limit} active, rate {state.rate}",
                ),
            )
            count = 0
    if state.rate >= BUSY_LOG_RATE:
        advice = (
            "server seems busy, (you may need to increase StartServers, ThreadsPerChild or "
            f"Min/MaxSpareThreads), spawning {count} children, there are around {idle} idle "
        )
        if event:
            advice += (
                f"threads, {active_children} active children, and {total_children} children "
                "that are shutting down"
            )
        else:
            advice += f"threads, and {total_children} total children"
        logs += (("info", _IDS[mpm_name, "busy"], advice),)
    return Decision(
        spawn_slots=tuple(free[:count]),
        logs=logs,
        state=_spawned(state, MAX_SPAWN_RATE // buckets),
    )
