"""Pool growth and shrink with real processes: Apache's idle-server maintenance, end to end.

A burst of slow requests leaves no idle worker, so the parent forks on the 1, 2, 4, 8 ...
schedule up to MaxRequestWorkers, says `server reached MaxRequestWorkers setting` once, and
after the burst retires one child per tick down to the spare maximum. Tick by tick is read
from the scoreboard's history: the parent records, at each maintenance tick, the very
snapshot it decided on, so the test checks decisions per tick, not wall-clock gaps.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from mpm_load import Load, attach_scoreboard, child_titles, live_children
from server import Server, wait_for

pytestmark = pytest.mark.slow

REACHED_MAX = "server reached MaxRequestWorkers setting, consider raising the MaxRequestWorkers"

# mpm -> (pool config, children at rest before the burst, child ceiling, children after the
#          burst, concurrent clients)
POOLS = {
    "prefork": (
        """
        StartServers 2
        MinSpareServers 2
        MaxSpareServers 4
        MaxRequestWorkers 20
        """,
        2, 20, 4, 30,
    ),
    "worker": (
        """
        StartServers 1
        ThreadsPerChild 4
        MinSpareThreads 4
        MaxSpareThreads 12
        ServerLimit 16
        MaxRequestWorkers 40
        """,
        1, 10, 3, 50,
    ),
}  # fmt: skip
POOLS["event"] = POOLS["worker"]


def _ticks(board) -> int:
    """Maintenance ticks recorded so far (one history sample each)."""
    return len(board.snapshot().history())


def _serving(sample, threads_per_child: int) -> float:
    """Children running and not asked to stop when the tick took its snapshot: mod_status
    counts busy and idle workers of non-quiescing children only."""
    return (sample.busy + sample.idle) / threads_per_child


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_pool_grows_by_doubling_to_the_ceiling_and_shrinks_one_per_second(tmp_path, mpm):
    pool, at_rest, ceiling, after, clients = POOLS[mpm]
    threads, max_spare = (1, 4) if mpm == "prefork" else (4, 12)
    server = Server(tmp_path, f"WSGIApp / testapp:sleepy\nLogLevel info\n{pool}", mpm=mpm)
    with server:
        board = attach_scoreboard(server.pid)
        wait_for(lambda: live_children(board) == at_rest, timeout=5)
        before = _ticks(board)
        with Load(server.port, "/?seconds=0.5", clients=clients):
            wait_for(lambda: live_children(board) == ceiling, timeout=15)
            wait_for(lambda: REACHED_MAX in server.log_text(), timeout=5)
            logged = _ticks(board)  # the tick logs before it records its sample
            wait_for(lambda: _ticks(board) > logged, timeout=5)
            burst_end = _ticks(board)
        wait_for(lambda: live_children(board) == after, timeout=ceiling + 10)
        settled = _ticks(board)  # then watch that it stays there for the next ticks (the
        # tick in progress may have sampled before the child it retired was reaped: skip it)
        wait_for(lambda: _ticks(board) >= settled + 3, timeout=10)
        history = board.snapshot().history()
        board.close()
        assert len(child_titles(server.pid)) <= ceiling
    # 1, 2, 4, 8 ... children per tick, the last step cut to what the ceiling leaves
    processes = [sample.processes for sample in history[before:burst_end]]
    assert max(processes) == ceiling, processes
    growth = [b - a for a, b in pairwise(processes[: processes.index(ceiling) + 1]) if b != a]
    expected, rate, total = [], 1, at_rest
    while total < ceiling:
        expected.append(min(rate, ceiling - total))
        total += expected[-1]
        rate *= 2
    assert growth == expected, processes
    assert server.log_text().count(REACHED_MAX) == 1
    # then one child per tick down to the spare maximum, one in every tick that had idle
    # workers over it (event: unless a child it asked to stop was still finishing)
    shrink = history[burst_end:]
    serving = [_serving(sample, threads) for sample in shrink]
    for tick, (now, then) in zip(shrink, pairwise(serving), strict=False):
        assert now - then in (0, 1), serving
        stopping = tick.processes - now
        if tick.idle > max_spare and (mpm != "event" or stopping == 0):
            assert now - then == 1, (serving, [(s.idle, s.processes) for s in shrink])
    assert serving[-2:] == [after] * 2, serving
