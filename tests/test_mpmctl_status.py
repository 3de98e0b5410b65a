"""`mpmctl status` / `fullstatus` against a real running server's scoreboard."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request

import pytest

from server import Server, wait_for

pytestmark = pytest.mark.slow


def mpmctl(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from mpmd.cli import mpmctl_main; sys.exit(mpmctl_main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=30
    )


def test_status_prints_the_grid_and_the_busy_worker(tmp_path):
    config = """\
        WSGIApp /sleep testapp:sleepy
        StartServers 2
        MinSpareServers 2
        MaxSpareServers 4
        MaxRequestWorkers 8
        """
    with Server(tmp_path, config, mpm="prefork") as server:
        done = threading.Event()

        def slow_request() -> None:
            try:
                urllib.request.urlopen(server.url("/sleep?seconds=3"), timeout=10).read()
            finally:
                done.set()

        thread = threading.Thread(target=slow_request)
        thread.start()
        try:
            result = wait_for(
                lambda: (
                    (r := mpmctl("status", "-f", str(server.conf))).returncode == 0
                    and "GET /sleep?seconds=3" in r.stdout
                    and r
                ),
                timeout=10,
            )
            out = result.stdout
            assert f"prefork MPM, parent pid {server.pid}" in out
            assert "Generation: 0 (config generation 1)" in out
            assert "1 busy," in out and "Busy workers:" in out
            grid = out.split("Scoreboard:\n", 1)[1].split("\n\n", 1)[0].replace("\n", "")
            assert len(grid) == 8 and grid.count("W") == 1 and "_" in grid
            full = mpmctl("fullstatus", "-f", str(server.conf))
            assert full.returncode == 0
            assert "Workers:" in full.stdout and "slot   0 pid" in full.stdout
            assert "Gracefully finishing" in full.stdout  # the legend
        finally:
            thread.join(timeout=15)
    assert done.is_set()


def test_status_when_not_running_says_so(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text(f'Listen 127.0.0.1:1\nPidFile "{tmp_path}/none.pid"\n')
    result = mpmctl("status", "-f", str(conf))
    assert result.returncode == 1
    assert "not running" in result.stdout


def test_score_board_file_holds_the_scoreboard_mpmctl_reads(tmp_path):
    board = tmp_path / "run" / "scoreboard"
    board.parent.mkdir()
    with Server(tmp_path, f'ScoreBoardFile "{board}"\nStartServers 1\n', mpm="prefork") as server:
        assert board.stat().st_size > 0  # the shared memory lives at ScoreBoardFile
        result = mpmctl("-f", str(server.conf), "status")
        assert result.returncode == 0, result.stderr
        assert f"prefork MPM, parent pid {server.pid}" in result.stdout
    assert not board.exists()  # removed with the server, like the default one
