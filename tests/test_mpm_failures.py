"""Children that die, hang or wear out, with real processes, for prefork, worker and event.

kill -9 of a busy child costs only the connections that child held; a request busy past
Timeout is logged with its request line and its child replaced (a threaded child is first
stopped gracefully, so its other requests finish); MaxConnectionsPerChild
recycles children while the scoreboard's total access count only grows.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import pytest

from mpm_load import Load, Sampler, attach_scoreboard, child_titles, fetch
from mpmd.mpm.scoreboard import BUSY_WRITE
from server import Server, pid_alive, wait_for

pytestmark = pytest.mark.slow

# A pool held at its ceiling by the load, so a lost child is always replaced at the next tick.
AT_CEILING = {
    "prefork": "StartServers 4\nMinSpareServers 2\nMaxSpareServers 4\nMaxRequestWorkers 4\n",
    "worker": "StartServers 2\nThreadsPerChild 2\nMinSpareThreads 2\nMaxSpareThreads 8\n"
    "MaxRequestWorkers 4\n",
}
AT_CEILING["event"] = AT_CEILING["worker"]
MPMS = ["prefork", "worker", "event"]


def _busy_child(board) -> int:
    """The pid of a child running the application right now (a worker in state W), or 0."""
    snap = board.snapshot()
    for process in snap.live_processes():
        if BUSY_WRITE in snap.slot_statuses(process.slot):
            return process.pid
    return 0


@pytest.mark.parametrize("mpm", MPMS)
def test_kill_9_of_a_busy_child_costs_only_its_connections(tmp_path, mpm):
    server = Server(tmp_path, "WSGIApp / testapp:sleepy\n" + AT_CEILING[mpm], mpm=mpm)
    with server:
        board = attach_scoreboard(server.pid)
        with Load(server.port, "/?seconds=0.3", clients=8) as load:
            wait_for(lambda: load.ok >= 8, timeout=10)
            victim = wait_for(lambda: _busy_child(board), timeout=5)
            pool = set(child_titles(server.pid))
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: not pid_alive(victim), timeout=5)
            # replaced at the next tick: as many children as before, one of them new
            wait_for(lambda: len(set(child_titles(server.pid)) - pool) == 1, timeout=5)
            assert len(child_titles(server.pid)) == len(pool)
            served = load.ok
            wait_for(lambda: load.ok > served + 16, timeout=10)
        assert victim not in child_titles(server.pid)
        assert f"child pid {victim} exit signal SIGKILL (9)" in server.log_text()
        failed = load.failures
        # every failure is a request that was already running when the child died
        assert all(f.started < killed_at <= f.ended for f in failed), failed
        # the connections that child held: prefork one; worker one per thread; event one per
        # thread plus those its loop accepted for later (AsyncRequestWorkerFactor 2 per idle)
        threads = 1 if mpm == "prefork" else 2
        assert 1 <= len(failed) <= threads * (3 if mpm == "event" else 1), failed
        board.close()


def _busy_threads(board, pid: int) -> int:
    """How many of child `pid`'s threads are running the application."""
    snap = board.snapshot()
    return sum(1 for w in snap.workers(active_only=True) if w.pid == pid and w.status == BUSY_WRITE)


@pytest.mark.parametrize("mpm", MPMS)
def test_a_request_past_timeout_is_logged_and_its_child_replaced(tmp_path, mpm):
    """Prefork: the child is killed at once. Worker/event: it is first stopped gracefully, so a
    request in its other thread finishes, and killed a further Timeout later."""
    threaded = mpm != "prefork"
    pool = "StartServers 1\nMinSpareServers 1\nMaxSpareServers 2\n" if mpm == "prefork" else (
        "StartServers 1\nThreadsPerChild 2\nMinSpareThreads 1\nMaxSpareThreads 4\n")  # fmt: skip
    server = Server(tmp_path, f"WSGIApp / testapp:sleepy\nTimeout 2\n{pool}", mpm=mpm)
    with ThreadPoolExecutor(2) as clients, server:
        board = attach_scoreboard(server.pid)
        hung = wait_for(lambda: list(child_titles(server.pid)), timeout=5)[0]
        hanging = clients.submit(fetch, server.port, "/hang?seconds=30")
        if threaded:
            # The other thread starts a request that ends after the graceful stop (the hang is
            # found past Timeout 2 s, at most a tick later) and before the kill (a further
            # Timeout later, so past 4 s).
            wait_for(lambda: _busy_threads(board, hung) == 1, timeout=5)
            neighbour = clients.submit(fetch, server.port, "/other?seconds=3.5")
            wait_for(lambda: _busy_threads(board, hung) == 2, timeout=5)
        wait_for(lambda: f"child pid {hung}; replacing the child" in server.log_text(), 6)
        if threaded:
            assert not neighbour.done()  # still running when its child began to stop
            assert neighbour.result(timeout=5)[0] == 200
            assert pid_alive(hung)  # the hung request keeps it until the kill
        wait_for(lambda: not pid_alive(hung), timeout=5 if threaded else 3)
        with pytest.raises(OSError):  # the hung request itself is cut
            hanging.result(timeout=5)
        wait_for(lambda: [p for p in child_titles(server.pid) if p != hung], timeout=5)
        log = server.log_text()
        line = next(x for x in log.splitlines() if "exceeded Timeout" in x)
        assert '"GET /hang?seconds=30 HTTP/1.1"' in line and "from 127.0.0.1" in line
        assert ("gracefully" in line) == threaded
        assert (f"killing child pid {hung}" in log) == threaded
        assert f"child pid {hung} exit signal" not in log  # expected, not noise
        board.close()


@pytest.mark.parametrize("mpm", MPMS)
def test_max_connections_per_child_recycles_and_totals_only_grow(tmp_path, mpm):
    pool = "StartServers 2\n" if mpm == "prefork" else "StartServers 2\nThreadsPerChild 4\n"
    pids_log = (
        tmp_path / "pids_log"
    )  # the pid that served each request: every child, however short-lived
    config = (
        f'WSGIApp / testapp:info\nMaxConnectionsPerChild 50\n{pool}CustomLog "{pids_log}" "%P"\n'
    )
    server = Server(tmp_path, config, mpm=mpm)
    with server:
        board = attach_scoreboard(server.pid)
        first = set(child_titles(server.pid))
        sampler = Sampler(board, lambda b: b.snapshot().totals().accesses, 0.01).start()
        try:
            with Load(server.port, "/", clients=4) as load:
                wait_for(lambda: load.ok >= 400, 30)
        finally:
            sampler.stop()
        totals = [value for _, value in sampler.samples]
        assert all(a <= b for a, b in pairwise(totals)), "went backwards"
        assert load.failures == []
        served = wait_for(lambda: _logged_pids(pids_log, load.ok), timeout=5)
        assert len(served) >= load.ok // 50  # one connection per request, at most 50 per child
        assert len(served - first) >= load.ok // 50 - len(first)  # recycled children
        assert not first & set(child_titles(server.pid))
        # every answered request is counted, across all the children that served them
        wait_for(lambda: board.snapshot().totals().accesses >= load.ok, timeout=5)
        board.close()


def _logged_pids(log: Path, requests: int) -> set[int]:
    """The pids in a `%P` access log once it holds `requests` lines (else an empty set)."""
    lines = log.read_text().split() if log.exists() else []
    return {int(pid) for pid in lines} if len(lines) >= requests else set()
