"""Graceful restarts under load, with real processes, for prefork, worker and event.

Eight client threads (four fast requests, four that take 0.1 s) request in a loop, each request on a new connection (`Connection: close`;
the clients do not reuse keep-alive connections, so a connection the server closes while idle
between requests cannot be counted as a failure). Twenty SIGUSR1s, five of them after editing
the pool sizes and the LogFormat, must cost no request; afterwards only children of the last
generation remain. A restart with a broken configuration keeps the old one serving.
"""

from __future__ import annotations

import signal

import pytest

from mpm_load import Load, attach_scoreboard, child_titles, fetch
from server import Server, wait_for

pytestmark = pytest.mark.slow

POOL = {
    "prefork": ("StartServers 3\nMinSpareServers 2\nMaxSpareServers 6\n",
                "StartServers 2\nMinSpareServers 1\nMaxSpareServers 4\n"),
    "worker": ("StartServers 2\nThreadsPerChild 4\nMinSpareThreads 4\nMaxSpareThreads 16\n",
               "StartServers 3\nThreadsPerChild 3\nMinSpareThreads 3\nMaxSpareThreads 12\n"),
}  # fmt: skip
POOL["event"] = POOL["worker"]


def _children_of_generation(pid: int, mpm: str, generation: int) -> bool:
    """Every child is of `generation` (and there is at least one)."""
    titles = child_titles(pid)
    return bool(titles) and all(
        title == f"mpmd: {mpm} child gen {generation}" for title in titles.values()
    )


def _served_by_generation(board, generation: int) -> bool:
    snap = board.snapshot()
    return any(
        w.generation == generation and w.my_access_count > 0 for w in snap.workers(active_only=True)
    )


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_twenty_graceful_restarts_under_load_lose_no_request(tmp_path, mpm):
    base = 'WSGIApp / testapp:info\nWSGIApp /slow testapp:sleepy\nLogFormat "%h %>s %b" short\n'
    server = Server(tmp_path, base + POOL[mpm][0], mpm=mpm)
    conf = server.conf.read_text()
    with server:
        board = attach_scoreboard(server.pid)
        slow = Load(server.port, "/slow?seconds=0.1", clients=4).start()  # in flight at USR1
        with Load(server.port, "/", clients=4) as load:
            for generation in range(1, 21):
                edited = generation % 4 == 0  # restarts 4, 8, 12, 16, 20 re-read an edit
                if edited:
                    pool = POOL[mpm][generation // 4 % 2]  # the last edit: the second pool
                    log = f'CustomLog "{tmp_path}/gen{generation}.log" "gen{generation} %>s %U"'
                    server.conf.write_text(conf + base + pool + log + "\n")
                server.signal(signal.SIGUSR1)
                wait_for(lambda g=generation: board.snapshot().generation == g, timeout=10)
                # the new generation serves before the next restart
                wait_for(lambda g=generation: _served_by_generation(board, g), timeout=10)
                if edited:
                    wait_for((tmp_path / f"gen{generation}.log").exists, timeout=10)
        wait_for(lambda: slow.ok > 20, timeout=10)  # restarts may outpace 0.1 s requests
        slow.stop()
        assert load.failures + slow.failures == [], (load.failures + slow.failures)[:5]
        assert load.ok > 20 and slow.ok > 20  # each generation also served (checked above)
        wait_for(lambda: _children_of_generation(server.pid, mpm, 20), timeout=15)
        # a slot is freed once the parent has reaped its child, a moment after it is gone
        wait_for(lambda: {p.generation for p in board.snapshot().live_processes()} == {20}, 5)
        snap = board.snapshot()
        # the last edited config is the one serving: its LogFormat, its pool
        fetch(server.port, "/last")
        wait_for(lambda: "gen20 200 /last" in (tmp_path / "gen20.log").read_text(), timeout=5)
        assert snap.threads_per_child == (1 if mpm == "prefork" else 3)
        board.close()
    assert "caught SIGTERM, shutting down" in server.log_text()


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_graceful_restart_with_a_broken_config_keeps_the_old_one(tmp_path, mpm):
    server = Server(tmp_path, "WSGIApp / testapp:info\nStartServers 2\n", mpm=mpm)
    conf = server.conf.read_text()
    with server:
        # both StartServers children, once each has its title (the second may still be forking)
        before = wait_for(lambda: len(titles := child_titles(server.pid)) == 2 and titles)
        server.conf.write_text(conf.replace("WSGIApp /", "WSGIApp /new") + "Frobnicate on\n")
        broken_line = len(server.conf.read_text().splitlines())
        server.signal(signal.SIGUSR1)
        expected = f"{server.conf}:{broken_line}: Invalid command 'Frobnicate'"
        wait_for(lambda: expected in server.log_text(), timeout=10)
        status, body = fetch(server.port, "/")
        assert status == 200 and body.startswith(b"pid=") and b"script= " in body
        assert child_titles(server.pid).keys() == before.keys()  # nobody was restarted
        assert set(child_titles(server.pid).values()) == {f"mpmd: {mpm} child gen 0"}
        # once fixed, the next graceful restart takes the edit
        server.conf.write_text(conf.replace("WSGIApp /", "WSGIApp /new"))
        server.signal(signal.SIGUSR1)
        wait_for(lambda: _children_of_generation(server.pid, mpm, 1), timeout=10)
        assert b"script=/new " in fetch(server.port, "/new/x")[1]
