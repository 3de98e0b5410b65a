"""The proxy's shared state: real forked processes and threads, restarts, the snapshot."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from functools import cache

import pytest

from mpmd.config.build import load_config
from mpmd.config.model import (
    BackendMember,
    Balancer,
    BalancerParams,
    ProxyRoute,
    ProxySettings,
    ServerConfig,
    WorkerParams,
)
from mpmd.handlers.proxy.balancer import BalancerRuntime, WorkerRuntime
from mpmd.handlers.proxy.state import ProxyState, needs_state

NAME = "balancer://c"


def member(n: int, **params) -> BackendMember:
    port = 8000 + n
    return BackendMember(
        url=f"http://127.0.0.1:{port}", scheme="http", host="127.0.0.1", port=port, path="",
        params=WorkerParams(**params), source=f"t:{n}",
    )  # fmt: skip


@cache
def _base() -> ServerConfig:
    return load_config(None)


def config_with(*balancers: Balancer, direct: tuple[BackendMember, ...] = ()) -> ServerConfig:
    base = _base()
    routes = tuple(ProxyRoute(f"/d{i}", False, m.url, m, "t:1") for i, m in enumerate(direct))
    main = replace(base.main, proxy=ProxySettings(routes=routes))
    return replace(base, balancers=balancers, main=main)


def balancer(*members: BackendMember, **params) -> Balancer:
    return Balancer(NAME, members, BalancerParams(**params), "t:1")


class Log:
    def log(self, *args, **kw) -> None:
        pass


def test_needs_state() -> None:
    assert not needs_state(config_with())
    assert needs_state(config_with(direct=(member(9),)))
    assert needs_state(config_with(balancer(member(1))))


def test_no_update_lost_across_processes_and_threads(tmp_path) -> None:
    """4 processes x 2 threads x 250 choices: exact elected, busy back to 0, exact bytes,
    and byrequests' strict alternation survives the concurrency (the lock is global)."""
    bal = balancer(member(1), member(2))
    direct = member(9)
    state = ProxyState.create(str(tmp_path / "proxy"), config_with(bal, direct=(direct,)))
    procs, threads, rounds = 4, 2, 250

    def work(rt) -> None:
        for _ in range(rounds):
            choice = rt.choose("/", None, 0.0)
            rt.finished(choice, 3, 5)

    pids = []
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                runtimes = [BalancerRuntime(bal, state, Log()), WorkerRuntime(direct, state, Log())]
                ts = [threading.Thread(target=work, args=(rt,)) for rt in runtimes * threads]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    total = procs * threads * rounds
    snap = state.snapshot()
    members = snap.balancer(NAME).members
    assert [m.elected for m in members] == [total // 2, total // 2]
    assert [m.busy for m in members] == [0, 0]
    assert sum(m.transferred for m in members) == 3 * total
    assert sum(m.read for m in members) == 5 * total
    assert [m.lbstatus for m in members] == [0, 0]  # an even number of 1:1 picks
    (worker,) = snap.workers
    assert (worker.elected, worker.busy, worker.read) == (total, 0, 5 * total)
    state.close()
    state.unlink()
    assert not (tmp_path / "proxy").exists()


def test_graceful_reconfigure_keeps_persisting_workers(tmp_path) -> None:
    m1, m2, m3 = member(1), member(2), member(3)
    state = ProxyState.create(str(tmp_path / "proxy"), config_with(balancer(m1, m2)))
    slot = state.worker(NAME, m1.url)
    slot.elected, slot.busy, slot.hc_fcount = 7, 1, 2
    slot.error_time = 50.0
    slot.set_flag("E", True)
    slot.set_flag("D", True)  # a manager edit: not persisted
    state.balancer(NAME).timeout = 9.0
    changed = replace(m1, params=WorkerParams(loadfactor=300, route="r1", status="H"))
    state.reconfigure(config_with(balancer(m3, changed)))
    assert (slot.elected, slot.busy, slot.hc_fcount, slot.error_time) == (7, 1, 2, 50.0)
    assert (slot.lbfactor, slot.route) == (300, "r1")
    assert slot.status_text == "Init Err Stby "
    with pytest.raises(KeyError):
        state.worker(NAME, m2.url)
    fresh = state.worker(NAME, m3.url)
    assert (fresh.elected, fresh.lbstatus, fresh.status_text) == (0, 0, "Init Ok ")
    assert state.balancer(NAME).timeout == 0.0
    assert [m.url for m in state.snapshot().balancer(NAME).members] == [m3.url, m1.url]
    state.reconfigure(config_with(balancer(m3, changed)), keep=False)  # full restart
    again = state.worker(NAME, m1.url)
    assert (again.elected, again.status_text) == (0, "Init Stby Ok ")
    state.close()


def test_snapshot_status_text_and_readonly_attach(tmp_path) -> None:
    members = [
        member(1), member(2, status="H"), member(3, status="D"), member(4, status="N"),
        member(5, status="IR"), member(6, status="S"), member(7, status="C"),
    ]  # fmt: skip
    path = str(tmp_path / "proxy")
    state = ProxyState.create(path, config_with(balancer(*members, lbmethod="bybusyness")))
    state.worker(NAME, members[0].url).set_flag("E", True)
    state.worker(NAME, members[0].url).route = "x" * 63
    with pytest.raises(ValueError):
        state.worker(NAME, members[0].url).redirect = "x" * 64
    tool = ProxyState.attach(path)
    info = tool.snapshot().balancer(NAME)
    assert [m.status_text for m in info.members] == [
        "Init Err ", "Init Stby Ok ", "Init Dis ", "Init Drn Ok ", "Init Ign Spar Ok ",
        "Init Stop ", "Init HcFl ",
    ]  # fmt: skip
    assert info.members[0].route == "x" * 63 and not info.members[0].usable
    assert (info.lbmethod, info.max_attempts, info.nofailover) == ("bybusyness", 6, False)
    tool.close()
    state.close()


def test_recalc_factors(tmp_path) -> None:
    state = ProxyState.create(
        str(tmp_path / "proxy"), config_with(balancer(member(1, loadfactor=250), member(2)))
    )
    state.recalc_factors(NAME)
    assert [m.lbstatus for m in state.snapshot().balancer(NAME).members] == [250, 100]
    state.close()


def test_choices_follow_edits_of_the_balancer_record(tmp_path) -> None:
    """choose() reads the balancer's settings each time (decoded once per value): an edit
    of the record (lbmethod, need_reset) is what the next choice uses."""
    bal = balancer(member(1), member(2))
    state = ProxyState.create(str(tmp_path / "proxy"), config_with(bal))
    runtime = BalancerRuntime(bal, state, Log())
    slot = state.balancer(NAME)
    first = slot.settings()
    assert first[4:6] == ("byrequests", "") and slot.settings() is first
    for _ in range(3):
        runtime.finished(runtime.choose("/", None, 0.0), 0, 0)
    lbstatus = [m.lbstatus for m in state.snapshot().balancer(NAME).members]
    with state.lock():
        slot.lbmethod = "bybusyness"
        slot.need_reset = 1
    assert slot.settings()[3:5] == (1, "bybusyness")
    runtime.finished(runtime.choose("/", None, 0.0), 0, 0)  # reset, then one choice
    assert slot.settings()[3:5] == (0, "bybusyness")
    members = state.snapshot().balancer(NAME).members
    assert lbstatus != [0, 0] and [m.lbstatus for m in members] == [-100, 100]
    assert [m.elected for m in members] == [3, 1]
    state.close()


def test_startup_creates_it_beside_the_scoreboard_and_reattaches(tmp_path) -> None:
    from mpmd.mpm.startup import create_proxy_state, reattach_proxy_state

    board = str(tmp_path / "sb")
    assert create_proxy_state(config_with(), board) is None
    assert reattach_proxy_state(board) is None
    state = create_proxy_state(config_with(balancer(member(1))), board)
    assert state is not None and state.path == board + ".proxy"
    state.worker(NAME, member(1).url).elected = 3
    again = reattach_proxy_state(board)  # the parent's new image after a re-exec
    assert again.worker(NAME, member(1).url).elected == 3
    again.close()
    state.close()
    state.unlink()
