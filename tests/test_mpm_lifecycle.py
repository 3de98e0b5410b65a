"""Documented lifecycle behaviour, through the real server: MaxMemoryPerChild retires a child,
GracefulShutdownTimeout bounds a graceful stop, SIGHUP replaces every child, and logrotate
(rename, then graceful restart) loses no access-log line.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from mpm_load import Load, attach_scoreboard, child_titles, fetch, tree, wait_gone
from server import Server, pid_alive, wait_for

pytestmark = pytest.mark.slow


def test_max_memory_per_child_retires_the_child_and_replaces_it(tmp_path):
    config = (
        "WSGIApp /hog testapp:hog\nWSGIApp / testapp:info\nMaxMemoryPerChild 60M\n"
        "StartServers 1\nMinSpareServers 1\nMaxSpareServers 2\n"
    )
    with Server(tmp_path, config, mpm="prefork") as server:
        status, body = fetch(server.port, "/hog?mb=80")
        assert status == 200
        hog = int(body.split(b"=")[1])
        wait_for(lambda: f"child pid {hog} uses" in server.log_text(), timeout=10)
        assert "over MaxMemoryPerChild; retiring it gracefully" in server.log_text()
        wait_for(lambda: not pid_alive(hog), timeout=10)
        wait_for(lambda: child_titles(server.pid), timeout=10)
        status, body = fetch(server.port, "/")
        assert status == 200 and f"pid={hog} ".encode() not in body


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_graceful_shutdown_timeout_ends_the_tree_with_a_request_in_flight(tmp_path, mpm):
    config = "WSGIApp / testapp:sleepy\nStartServers 1\nGracefulShutdownTimeout 1\n"
    server = Server(tmp_path, config, mpm=mpm).start()
    try:
        board = attach_scoreboard(server.pid)
        processes = tree(server.pid)
        outcome: list[object] = []

        def client() -> None:
            try:
                outcome.append(fetch(server.port, "/?seconds=30", timeout=30))
            except OSError as error:
                outcome.append(error)

        thread = threading.Thread(target=client)
        thread.start()
        wait_for(lambda: _serving(board, "/?seconds=30"), timeout=5)
        board.close()
        server.signal(signal.SIGWINCH)
        assert server.proc.wait(timeout=15) == 0  # long before the request's 30 s
        wait_gone(processes)
        thread.join(10)
        assert outcome and not isinstance(outcome[0], tuple)  # cut off, not answered
        assert "caught SIGWINCH, shutting down gracefully" in server.log_text()
    finally:
        server.stop()


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_sighup_replaces_every_child_and_serves(tmp_path, mpm):
    with Server(tmp_path, "WSGIApp / testapp:info\nStartServers 2\n", mpm=mpm) as server:
        board = attach_scoreboard(server.pid)
        wait_for(lambda: len(child_titles(server.pid)) == 2, timeout=10)
        old = list(child_titles(server.pid))
        server.signal(signal.SIGHUP)
        wait_for(lambda: board.snapshot().generation == 1, timeout=10)
        wait_gone(old)
        titles = wait_for(lambda: child_titles(server.pid), timeout=10)
        assert set(titles.values()) == {f"mpmd: {mpm} child gen 1"}
        status, body = fetch(server.port, "/")
        assert status == 200 and int(body.split()[0].split(b"=")[1]) not in old
        board.close()
        assert "SIGHUP received.  Attempting to restart" in server.log_text()


@pytest.mark.parametrize("buffered", ["Off", "On"])
def test_logrotate_rename_then_graceful_loses_no_line(tmp_path, buffered):
    config = f"WSGIApp / testapp:hello\nBufferedLogs {buffered}\nStartServers 2\n"
    server = Server(tmp_path, config, mpm="event")
    rotated = tmp_path / "access_log.1"
    with server:
        board = attach_scoreboard(server.pid)
        with Load(server.port, "/rotated", clients=4) as load:
            wait_for(lambda: load.ok > 100, timeout=10)
            server.access_log.rename(rotated)
            server.error_log.rename(tmp_path / "error_log.1")
            server.signal(signal.SIGUSR1)  # logrotate's postrotate
            wait_for(lambda: board.snapshot().generation == 1, timeout=10)
            wait_for(lambda: server.access_log.exists() and load.ok > 300, timeout=10)
        board.close()
        assert load.failures == [], load.failures[:3]
        assert "resuming normal operations" in server.log_text()  # the new error_log

    def count(path) -> int:
        return sum(1 for line in path.read_text().splitlines() if " /rotated " in line)

    assert count(rotated) > 0 and count(server.access_log) > 0
    assert count(rotated) + count(server.access_log) == load.ok


def _term_pending(pid: int) -> bool:
    """SIGTERM is queued for `pid` and not yet delivered (its bit in ShdPnd or SigPnd)."""
    with open(f"/proc/{pid}/status") as status:
        masks = [line.split()[1] for line in status if line.startswith(("ShdPnd:", "SigPnd:"))]
    return any(int(mask, 16) & (1 << (signal.SIGTERM - 1)) for mask in masks)


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_a_stopped_child_writes_the_line_of_the_request_it_is_answering(tmp_path, mpm):
    """Stop and restart TERM the children. A request being answered then still finishes (for
    at most a second) and gets its access-log line: the client may already have its response
    when the child would otherwise die between the last byte and the line."""
    gate = tmp_path / "gate"
    config = "WSGIApp /gate testapp:gate\nStartServers 1\n"
    with Server(tmp_path, config, mpm=mpm) as server:
        child = next(iter(wait_for(lambda: child_titles(server.pid), timeout=10)))
        outcome: list[object] = []
        client = threading.Thread(
            target=lambda: outcome.append(fetch(server.port, f"/gate?path={gate}", timeout=20))
        )
        client.start()
        wait_for(lambda: (tmp_path / "gate.in").exists(), timeout=10)
        os.kill(child, signal.SIGTERM)  # what the parent's stop sends each child
        wait_for(lambda: not pid_alive(child) or not _term_pending(child), timeout=5)
        assert pid_alive(child)  # it waits for the request it is answering ...
        gate.touch()
        client.join(20)
        assert outcome and outcome[0][0] == 200  # ... which is answered
        wait_for(lambda: not pid_alive(child), timeout=5)  # and then it exits
        assert f'"GET /gate?path={gate} HTTP/1.1" 200' in server.access_log.read_text()


def _serving(board, target: str) -> bool:
    """A worker is in W with this request (not one still showing the start-up probe's W)."""
    return any(w.status == 4 and f" {target} " in w.request for w in board.snapshot().workers())
