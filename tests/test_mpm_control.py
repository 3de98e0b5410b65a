"""Stopping and controlling a real mpmd: signals, `mpmd -k`, `mpmctl`, an app that cannot load.

stop (TERM) and graceful-stop (WINCH) end every process of the tree and remove the PidFile;
graceful-stop lets a request in flight finish. `mpmd -k` and `mpmctl` find the server through
the PidFile and say `not running` as apachectl does. A broken application import stops the
server with an error instead of forking children in a loop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from mpm_load import attach_scoreboard, child_titles, fetch, tree, wait_gone
from server import Server, pid_alive, wait_for

pytestmark = pytest.mark.slow
MPMS = ["prefork", "worker", "event"]


def _run(*args: str, tool: str = "mpmd") -> subprocess.CompletedProcess:
    entry = "main" if tool == "mpmd" else "mpmctl_main"
    code = f"import sys; from mpmd.cli import {entry} as m; sys.exit(m())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("mpm", MPMS)
def test_stop_ends_the_whole_tree_and_removes_the_pid_file(tmp_path, mpm):
    server = Server(tmp_path, "WSGIApp / testapp:info\nStartServers 3\n", mpm=mpm).start()
    try:
        wait_for(lambda: len(child_titles(server.pid)) == 3, timeout=5)
        processes = tree(server.pid)
        assert server.pid_file.read_text().strip() == str(server.pid)
        server.signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        wait_gone(processes)
        assert not server.pid_file.exists()
        assert "caught SIGTERM, shutting down" in server.log_text()
    finally:
        server.stop()


@pytest.mark.parametrize("mpm", MPMS)
def test_graceful_stop_finishes_the_request_in_flight_then_ends_the_tree(tmp_path, mpm):
    server = Server(tmp_path, "WSGIApp / testapp:sleepy\nStartServers 2\n", mpm=mpm).start()
    try:
        board = attach_scoreboard(server.pid)
        processes = tree(server.pid)
        answers: list[tuple[int, bytes]] = []
        client = threading.Thread(target=lambda: answers.append(fetch(server.port, "/?seconds=1")))
        client.start()
        wait_for(lambda: _serving(board, "/?seconds=1"), timeout=5)
        board.close()
        server.signal(signal.SIGWINCH)
        client.join(10)
        assert answers and answers[0][0] == 200 and answers[0][1].startswith(b"slept 1.0")
        assert server.proc.wait(timeout=15) == 0
        wait_gone(processes)
        assert not server.pid_file.exists()
        assert "caught SIGWINCH, shutting down gracefully" in server.log_text()
    finally:
        server.stop()


def test_mpmd_k_and_mpmctl_control_the_server_through_the_pid_file(tmp_path):
    server = Server(tmp_path, "WSGIApp / testapp:info\nStartServers 2\n", mpm="prefork").start()
    conf = str(server.conf)
    try:
        board = attach_scoreboard(server.pid)
        result = _run("-k", "graceful", "-f", conf)
        assert (result.returncode, result.stdout) == (0, "")
        wait_for(lambda: board.snapshot().generation == 1, timeout=5)
        result = _run("graceful", "-f", conf, tool="mpmctl")
        assert result.returncode == 0
        wait_for(lambda: board.snapshot().generation == 2, timeout=5)
        board.close()
        processes = tree(server.pid)
        result = _run("stop", "-f", conf, tool="mpmctl")
        assert result.returncode == 0
        assert server.proc.wait(timeout=15) == 0
        wait_gone(processes)
    finally:
        server.stop()
    # nothing runs now: apachectl's messages
    assert _run("-k", "stop", "-f", conf).stdout == "mpmd (no pid file) not running\n"
    server.pid_file.write_text(f"{server.pid}\n")  # stale: that pid has exited
    assert _run("stop", "-f", conf, tool="mpmctl").stdout == (
        f"mpmd (pid {server.pid}?) not running\n"
    )
    server.pid_file.unlink()


def test_mpmd_k_start_detaches_and_mpmctl_stop_ends_it(tmp_path):
    server = Server(tmp_path, "WSGIApp / testapp:info\nStartServers 1\n", mpm="worker")
    conf = str(server.conf)
    result = _run("-k", "start", "-f", conf)
    assert result.returncode == 0
    pid = int(wait_for(lambda: server.pid_file.exists() and server.pid_file.read_text(), 10))
    try:
        wait_for(lambda: child_titles(pid), timeout=10)
        status, body = fetch(server.port, "/")
        assert status == 200 and b"multithread=True" in body
        assert _run("-k", "start", "-f", conf).stdout == f"mpmd (pid {pid}) already running\n"
        processes = tree(pid)
        assert _run("stop", "-f", conf, tool="mpmctl").returncode == 0
        wait_gone(processes)
        assert not server.pid_file.exists()
    finally:
        for leftover in tree(pid) if pid_alive(pid) else []:
            os.kill(leftover, signal.SIGKILL)  # only if the test failed half-way


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_a_broken_app_import_stops_the_server_with_an_error(tmp_path, mpm):
    server = Server(tmp_path, "WSGIApp / broken_import:app\nStartServers 3\n", mpm=mpm)
    server.start(wait=False)
    try:
        assert server.proc.wait(timeout=15) != 0
        log = server.log_text()
        assert "this application is broken on purpose" in log
        assert "child could not load the application" in log
        assert "before any child process initialized successfully" in log
        assert log.count("failed to start") <= 3  # the first children only, no hot loop
        assert not server.pid_file.exists()
    finally:
        server.stop()


def _serving(board, target: str) -> bool:
    """A worker is in W with this request (not one still showing the start-up probe's W)."""
    return any(w.status == 4 and f" {target} " in w.request for w in board.snapshot().workers())
