"""Idle-server maintenance policies: scoreboard snapshot in, decision out (reference 2)."""

from __future__ import annotations

import os

import pytest

from mpmd.config.model import MpmSettings
from mpmd.mpm.maintenance import (
    Decision,
    SpawnState,
    after_graceful_restart,
    prefork_maintenance,
    threaded_maintenance,
)
from mpmd.mpm.scoreboard import DEAD, STATE_CHARS, Scoreboard

REACHED = "server reached MaxRequestWorkers setting, consider raising the MaxRequestWorkers setting"
NEAR = (
    "server is within MinSpareThreads of MaxRequestWorkers, consider raising the "
    "MaxRequestWorkers setting"
)


def settings(name: str, **overrides: object) -> MpmSettings:
    prefork = name == "prefork"
    values: dict[str, object] = {
        "name": name,
        "start_servers": 5 if prefork else 3,
        "min_spare_servers": 5,
        "max_spare_servers": 10,
        "min_spare_threads": 75,
        "max_spare_threads": 250,
        "threads_per_child": 1 if prefork else 25,
        "thread_limit": 1 if prefork else 64,
        "server_limit": 256 if prefork else 16,
        "max_request_workers": 256 if prefork else 400,
        "max_connections_per_child": 0,
        "async_request_worker_factor": 2.0,
        "graceful_shutdown_timeout": 0,
        "listen_backlog": 511,
        "max_memory_per_child": 0,
    }
    values.update(overrides)
    return MpmSettings(**values)  # type: ignore[arg-type]


class Pool:
    """A real scoreboard with children written into it the way parent and children would."""

    def __init__(self, path: str, mpm: MpmSettings) -> None:
        self.mpm = mpm
        self.sb = Scoreboard.create(path, mpm.server_limit, mpm.thread_limit, mpm.name)
        self.next_pid = 1000

    def child(
        self,
        slot: int,
        states: str,
        generation: int | None = None,
        quiescing: int = 0,
        not_accepting: int = 0,
    ) -> None:
        """Put a child in `slot` whose threads are in `states` (one state char per thread)."""
        generation = self.sb.generation if generation is None else generation
        self.next_pid += 1
        proc = self.sb.process(slot)
        proc.start(self.next_pid, generation)
        proc.quiescing = quiescing
        proc.not_accepting = not_accepting
        self.sb.set_slot_state(slot, DEAD)  # a slot reused by a test starts clean
        for thread, char in enumerate(states):
            w = self.sb.worker(slot, thread)
            w.set_state(STATE_CHARS.index(char))

    def prefork(self, state: SpawnState) -> Decision:
        return prefork_maintenance(self.sb.snapshot(), self.mpm, state)

    def threaded(self, state: SpawnState) -> Decision:
        return threaded_maintenance(self.sb.snapshot(), self.mpm, state)

    def close(self) -> None:
        self.sb.unlink()
        self.sb.close()


@pytest.fixture
def make_pool(tmp_path):
    pools: list[Pool] = []

    def make(mpm: MpmSettings) -> Pool:
        pool = Pool(str(tmp_path / f"sb{len(pools)}"), mpm)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


# -- prefork ----------------------------------------------------------------------------------


def test_prefork_spawn_schedule_doubles_to_32(make_pool):
    """Every spawned child gets busy at once: 1, 2, 4, 8, 16, 32, 32 children per run."""
    pool = make_pool(settings("prefork"))
    state = SpawnState()
    spawned = []
    next_slot = 0
    for _ in range(7):
        decision = pool.prefork(state)
        assert decision.retire is None
        # lowest free slots first
        assert decision.spawn_slots == tuple(
            range(next_slot, next_slot + len(decision.spawn_slots))
        )
        next_slot += len(decision.spawn_slots)
        spawned.append(len(decision.spawn_slots))
        busy_logs = [log for log in decision.logs if log[1] == "AH00162"]
        assert bool(busy_logs) == (state.rate >= 8)
        for slot in decision.spawn_slots:
            pool.child(slot, "W")
        state = decision.state
    assert spawned == [1, 2, 4, 8, 16, 32, 32]
    assert state.rate == 32
    assert pool.prefork(state).logs[0] == (
        "info",
        "AH00162",
        "server seems busy, (you may need to increase StartServers, or Min/MaxSpareServers), "
        "spawning 32 children, there are 0 idle, and 95 total children",
    )


def test_prefork_non_spawning_run_resets_rate(make_pool):
    pool = make_pool(settings("prefork"))
    for slot in range(7):
        pool.child(slot, "_")
    decision = pool.prefork(SpawnState(rate=16))
    assert decision == Decision(state=SpawnState(rate=1))


def test_prefork_retires_one_idle_child_per_run(make_pool):
    pool = make_pool(settings("prefork"))
    for slot in range(13):
        pool.child(slot, "W" if slot < 1 else "_")
    retired = []
    state = SpawnState(rate=4)
    for _ in range(4):
        decision = pool.prefork(state)
        assert decision.spawn_slots == ()
        state = decision.state
        assert state.rate == 1
        if decision.retire is None:
            break
        retired.append(decision.retire)
        pool.sb.mark_process_dead(decision.retire)  # the child left
    assert retired == [12, 11]  # 12 idle -> 11 -> 10 = MaxSpareServers: stop


def test_prefork_starting_children_count_as_idle(make_pool):
    pool = make_pool(settings("prefork"))
    for slot in range(5):
        pool.child(slot, "S")
    assert pool.prefork(SpawnState()).spawn_slots == ()


def test_prefork_old_generation_and_quiescing_children_are_not_idle(make_pool):
    pool = make_pool(settings("prefork"))
    pool.sb.generation = 1
    for slot in range(4):
        pool.child(slot, "_", generation=0)
    for slot in range(4, 8):
        pool.child(slot, "_", quiescing=1)
    decision = pool.prefork(SpawnState(rate=2))
    assert decision.spawn_slots == (8, 9)


def test_prefork_max_request_workers_ceiling_logged_once_per_episode(make_pool):
    pool = make_pool(settings("prefork", server_limit=8, max_request_workers=4))
    for slot in range(4):
        pool.child(slot, "W")
    first = pool.prefork(SpawnState(rate=8))
    assert first.spawn_slots == ()  # slots 4-7 lie beyond MaxRequestWorkers
    assert first.logs == (("error", "AH00161", REACHED),)
    assert first.state.rate == 1
    second = pool.prefork(first.state)
    assert (second.spawn_slots, second.logs) == ((), ())
    # a child leaves: the condition clears, the slot is refilled; hitting it again logs again
    pool.sb.mark_process_dead(2)
    third = pool.prefork(second.state)
    assert third.spawn_slots == (2,) and not third.state.reported_max
    pool.child(2, "W")
    assert pool.prefork(third.state).logs == (("error", "AH00161", REACHED),)


def test_prefork_hold_off_after_graceful_restart(make_pool):
    pool = make_pool(settings("prefork"))
    state = after_graceful_restart(SpawnState(rate=2))
    assert state.hold_off == 10
    rates = []
    for _ in range(12):
        decision = pool.prefork(state)
        rates.append(len(decision.spawn_slots))
        for slot in decision.spawn_slots:
            pool.child(slot, "W")
        state = decision.state
    assert rates == [2] * 11 + [4]
    assert state.hold_off == 0


# -- worker and event -------------------------------------------------------------------------

IDLE25 = "_" * 25
BUSY25 = "W" * 25


@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_threaded_spawns_whole_children_below_min_spare_threads(make_pool, mpm):
    pool = make_pool(settings(mpm))
    pool.child(0, IDLE25)
    pool.child(1, BUSY25)
    decision = pool.threaded(SpawnState(rate=4))
    assert decision.spawn_slots == (2, 3, 4, 5)  # 25 idle < 75: lowest free slots, rate 4
    assert decision.state.rate == 8
    assert decision.logs == ()


@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_threaded_spawn_schedule_and_busy_line(make_pool, mpm):
    pool = make_pool(settings(mpm, server_limit=64, max_request_workers=1600))
    state = SpawnState()
    counts = []
    for _ in range(6):
        decision = pool.threaded(state)
        counts.append(len(decision.spawn_slots))
        for slot in decision.spawn_slots:
            pool.child(slot, BUSY25)
        state = decision.state
        if counts[-1] == 8:
            (line,) = decision.logs
            assert line[0] == "info"
            assert line[1] == ("AH00486" if mpm == "event" else "AH00289")
            assert "spawning 8 children, there are around 0 idle threads" in line[2]
    assert counts == [1, 2, 4, 8, 16, 32]


@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_threaded_within_spare_range_does_nothing(make_pool, mpm):
    pool = make_pool(settings(mpm))
    for slot in range(3):
        pool.child(slot, IDLE25)
    assert pool.threaded(SpawnState(rate=8)) == Decision(state=SpawnState(rate=1))


@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_threaded_retires_the_idlest_child_above_max_spare(make_pool, mpm):
    pool = make_pool(settings(mpm))
    for slot in range(11):
        pool.child(slot, IDLE25)
    pool.child(3, "W" * 5 + "_" * 20)
    pool.child(11, "_" * 25)  # 11 x 25 + 20 = 295 idle > 250
    decision = pool.threaded(SpawnState(rate=4))
    assert decision.retire == 11 and decision.spawn_slots == ()
    assert decision.state.rate == 1


@pytest.mark.parametrize(("mpm", "ah"), [("worker", "AH00286"), ("event", "AH00484")])
def test_threaded_max_request_workers_logged_once(make_pool, mpm, ah):
    pool = make_pool(settings(mpm))
    for slot in range(16):
        pool.child(slot, BUSY25)
    first = pool.threaded(SpawnState(rate=4))
    assert (first.spawn_slots, first.logs) == ((), (("error", ah, REACHED),))
    assert first.state.rate == 1
    assert pool.threaded(first.state).logs == ()


@pytest.mark.parametrize(("mpm", "ah"), [("worker", "AH00287"), ("event", "AH10159")])
def test_threaded_within_min_spare_threads_of_max(make_pool, mpm, ah):
    pool = make_pool(settings(mpm))
    for slot in range(16):
        pool.child(slot, BUSY25 if slot < 14 else IDLE25)  # 50 idle < 75, 400 active
    first = pool.threaded(SpawnState())
    assert first.logs == (("error", ah, NEAR),)
    assert pool.threaded(first.state).logs == ()


def test_event_checks_the_ceiling_before_free_slots(make_pool):
    """Debian sizes: ServerLimit 16 leaves free slots, but 6 x 25 = 150 are all busy."""
    pool = make_pool(settings("event", max_request_workers=150, min_spare_threads=25,
                              max_spare_threads=75))  # fmt: skip
    for slot in range(6):
        pool.child(slot, BUSY25)
    decision = pool.threaded(SpawnState())
    assert decision.spawn_slots == ()
    assert decision.logs == (("error", "AH00484", REACHED),)


def test_worker_scoreboard_full_below_max_request_workers(make_pool):
    pool = make_pool(settings("worker", max_request_workers=100))  # 4 slots to use
    pool.sb.generation = 1
    pool.child(0, BUSY25)
    for slot in (1, 2, 3):
        pool.child(slot, "G" * 25, generation=0, quiescing=1)
    first = pool.threaded(SpawnState())
    assert first.logs == (("error", "AH00288", "scoreboard is full, not at MaxRequestWorkers"),)
    assert first.spawn_slots == ()
    assert pool.threaded(first.state).logs == ()


def test_event_scoreboard_full(make_pool):
    pool = make_pool(settings("event", server_limit=4, max_request_workers=50))
    pool.sb.generation = 1
    pool.child(0, BUSY25)
    for slot in (1, 2, 3):
        pool.child(slot, "G" * 25, generation=0, quiescing=1)
    decision = pool.threaded(SpawnState())
    assert decision.logs == (
        ("error", "AH03490", "scoreboard is full, not at MaxRequestWorkers.Increase ServerLimit."),
    )


def test_worker_prefers_fully_dead_slots(make_pool):
    pool = make_pool(settings("worker", max_request_workers=125))  # slots 0-4
    pool.child(0, "W" * 10 + "." * 15, quiescing=1)  # some threads still serving
    pool.child(1, "G" * 20 + "." * 5, quiescing=1)  # only graceful threads left
    pool.child(3, BUSY25)
    pool.child(4, BUSY25)
    # slot 2 never had a child
    assert pool.threaded(SpawnState(rate=1)).spawn_slots == (2,)
    assert pool.threaded(SpawnState(rate=2)).spawn_slots == (2, 1)
    assert pool.threaded(SpawnState(rate=8)).spawn_slots == (2, 1, 0)


def test_event_uses_only_empty_slots_up_to_server_limit(make_pool):
    pool = make_pool(settings("event", max_request_workers=100))  # 4 active children at most
    pool.child(0, "G" * 20 + "." * 5, quiescing=1)
    pool.child(1, BUSY25)
    decision = pool.threaded(SpawnState(rate=8))
    assert decision.spawn_slots == (2, 3, 4)  # capped: 1 active + 3 = 4 children


@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_threaded_old_generation_threads_are_not_idle(make_pool, mpm):
    pool = make_pool(settings(mpm))
    pool.sb.generation = 2
    for slot in range(4):
        pool.child(slot, IDLE25, generation=1)
    decision = pool.threaded(SpawnState())
    assert decision.spawn_slots == (4,)


def test_event_not_accepting_children_are_not_idle(make_pool):
    pool = make_pool(settings("event"))
    for slot in range(3):
        pool.child(slot, IDLE25, not_accepting=int(slot == 0))
    assert pool.threaded(SpawnState()).spawn_slots == (3,)
    worker_pool = make_pool(settings("worker"))
    for slot in range(3):
        worker_pool.child(slot, IDLE25, not_accepting=int(slot == 0))
    assert worker_pool.threaded(SpawnState()).spawn_slots == ()


def test_event_spawn_capped_at_active_daemons_limit(make_pool):
    pool = make_pool(settings("event", max_request_workers=150, min_spare_threads=25,
                              max_spare_threads=75))  # fmt: skip
    for slot in range(4):
        pool.child(slot, BUSY25)
    decision = pool.threaded(SpawnState(rate=4))
    assert decision.spawn_slots == (4, 5)
    assert decision.state.rate == 8


def test_event_does_not_retire_while_children_stop_and_the_scoreboard_is_tight(make_pool):
    mpm = settings("event", max_request_workers=150, min_spare_threads=25, max_spare_threads=75)
    pool = make_pool(mpm)
    pool.sb.generation = 1
    for slot in range(4):
        pool.child(slot, IDLE25)  # 100 idle > 75
    pool.child(4, "G" * 25, generation=0)  # one old child still finishing
    assert pool.threaded(SpawnState()).retire == 3  # 16 - 5 = 11 slots > 6: room enough
    for slot in range(5, 13):
        pool.child(slot, "G" * 25, generation=0)
    decision = pool.threaded(SpawnState(rate=2))  # 16 - 13 = 3 slots <= 6: wait
    assert decision.retire is None and decision.state.rate == 1
    worker_pool = make_pool(settings("worker", max_request_workers=150, min_spare_threads=25,
                                     max_spare_threads=75))  # fmt: skip
    worker_pool.sb.generation = 1
    for slot in range(4):
        worker_pool.child(slot, IDLE25)
    worker_pool.child(4, "G" * 25, generation=0)
    assert worker_pool.threaded(SpawnState()).retire == 3


def test_threaded_hold_off_after_graceful(make_pool):
    pool = make_pool(settings("event", server_limit=64, max_request_workers=1600))
    state = after_graceful_restart(SpawnState())
    counts = []
    for _ in range(12):
        decision = pool.threaded(state)
        counts.append(len(decision.spawn_slots))
        for slot in decision.spawn_slots:
            pool.child(slot, BUSY25)
        state = decision.state
    assert counts == [1] * 11 + [2]


def test_policies_are_pure(make_pool):
    """Same snapshot and state in, same decision out; the scoreboard is left untouched."""
    pool = make_pool(settings("worker"))
    pool.child(0, BUSY25)
    snap = pool.sb.snapshot()
    before = pool.sb.snapshot().statuses
    a = threaded_maintenance(snap, pool.mpm, SpawnState(rate=2))
    b = threaded_maintenance(snap, pool.mpm, SpawnState(rate=2))
    assert a == b and pool.sb.snapshot().statuses == before
    assert os.path.exists(pool.sb.path)
