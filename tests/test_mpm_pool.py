"""Pool growth and shrink with real processes: Apache's idle-server maintenance, end to end.

A burst of slow requests leaves no idle worker, so the parent forks on the 1, 2, 4, 8 ...
schedule up to MaxRequestWorkers, says `server reached MaxRequestWorkers setting` once, and
after the burst retires one child per second down to the spare maximum. The child count is
read from the shared scoreboard every 50 ms.
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from mpm_load import Load, Sampler, attach_scoreboard, child_titles, live_children, steps
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


def _increments(changes: list[tuple[float, object]], window: float = 0.4) -> list[int]:
    """Net change per maintenance tick: changes less than `window` s apart are one tick's
    forks (forking eight children takes longer than one 50 ms sample)."""
    out: list[int] = []
    tick_start = None
    for (_, before), (when, value) in pairwise(changes):
        if tick_start is not None and when - tick_start < window:
            out[-1] += value - before
        else:
            tick_start = when
            out.append(value - before)
    return out


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_pool_grows_by_doubling_to_the_ceiling_and_shrinks_one_per_second(tmp_path, mpm):
    pool, at_rest, ceiling, after, clients = POOLS[mpm]
    server = Server(tmp_path, f"WSGIApp / testapp:sleepy\nLogLevel info\n{pool}", mpm=mpm)
    with server:
        board = attach_scoreboard(server.pid)
        wait_for(lambda: live_children(board) == at_rest, timeout=5)
        sampler = Sampler(board, live_children).start()
        try:
            with Load(server.port, "/?seconds=0.5", clients=clients):
                wait_for(lambda: live_children(board) == ceiling, timeout=15)
                wait_for(lambda: REACHED_MAX in server.log_text(), timeout=5)
                burst_end = len(sampler.samples)
            wait_for(lambda: live_children(board) == after, timeout=ceiling + 10)
            settled = time.monotonic()  # then watch that it stays there past the next ticks
            wait_for(lambda: sampler.samples[-1][0] > settled + 1.5, timeout=5)
        finally:
            sampler.stop()
        growth = _increments(steps(sampler.samples[:burst_end]))
        shrink = steps(sampler.samples[burst_end - 1 :])
        assert max(value for _, value in sampler.samples) == ceiling
        assert len(child_titles(server.pid)) <= ceiling
        # 1, 2, 4, 8 ... children per tick, the last step cut to what the ceiling leaves
        expected, rate, total = [], 1, at_rest
        while total < ceiling:
            expected.append(min(rate, ceiling - total))
            total += expected[-1]
            rate *= 2
        assert growth == expected, sampler.steps()
        assert server.log_text().count(REACHED_MAX) == 1
        # then one child per second down to the spare maximum, and it stays there
        drops = _increments(shrink)
        assert drops == [-1] * (ceiling - after), [(round(t, 2), v) for t, v in shrink]
        gaps = [b[0] - a[0] for a, b in pairwise(shrink[1:])]
        assert all(0.7 < gap < 1.6 for gap in gaps), gaps
        assert live_children(board) == after
        board.close()
