"""BufferedLogs with real processes: no access-log line is lost, and none waits long.

Every way a child ends writes out its buffer first: a graceful restart (old children finish),
a restart (SIGHUP: the parent TERMs them), a stop (TERM). So after load across graceful
restarts, a restart and a stop, the access log holds exactly one line per request answered.
And beyond Apache, a buffered line reaches the file within a second while the server idles.
"""

from __future__ import annotations

import signal

import pytest

from mpm_load import Load, attach_scoreboard, fetch
from server import Server, wait_for

pytestmark = pytest.mark.slow
POOL = "StartServers 2\nMinSpareThreads 2\nMaxSpareThreads 8\nThreadsPerChild 4\n"


def _lines(server: Server, path: str) -> int:
    return sum(1 for line in server.access_log.read_text().splitlines() if f" {path} " in line)


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_no_line_lost_across_graceful_restart_restart_and_stop(tmp_path, mpm):
    config = f"WSGIApp / testapp:hello\nBufferedLogs On\n{POOL}"
    server = Server(tmp_path, config, mpm=mpm)
    answered = 0
    with server:
        board = attach_scoreboard(server.pid)
        with Load(server.port, "/counted", clients=4) as load:
            for generation in (1, 2, 3):
                wait_for(lambda g=generation: load.ok > 100 * g, timeout=20)
                server.signal(signal.SIGUSR1)
                wait_for(lambda g=generation: board.snapshot().generation == g, timeout=10)
        assert load.failures == [], load.failures[:3]
        answered += load.ok
        # a restart (SIGHUP) TERMs the children right after these requests
        for _ in range(20):
            assert fetch(server.port, "/counted")[0] == 200
        answered += 20
        server.signal(signal.SIGHUP)
        wait_for(lambda: board.snapshot().generation == 4, timeout=10)
        board.close()
        for _ in range(20):
            assert fetch(server.port, "/counted")[0] == 200
        answered += 20
    # the server was stopped (TERM) right after the last request
    assert server.proc.returncode == 0
    assert _lines(server, "/counted") == answered


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_a_buffered_line_reaches_the_file_while_the_server_idles(tmp_path, mpm):
    with Server(tmp_path, "BufferedLogs On\nStartServers 1\n", mpm=mpm) as server:
        for _ in range(3):
            fetch(server.port, "/idle-check")
        wait_for(lambda: _lines(server, "/idle-check") == 3, timeout=5)
