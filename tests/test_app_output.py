"""An application's output reaches the ErrorLog of a detached server, as with Apache/mod_wsgi.

A server started with `mpmd -k start` has fds 0-2 on /dev/null; the parent points fds 1 and 2
at the ErrorLog once it has started, so print() to stdout or stderr, raw writes to fd 2 and
the traceback of a thread that dies all land there, in every MPM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mpm_load import child_titles, fetch, tree, wait_gone
from server import Server, pid_alive, wait_for

pytestmark = pytest.mark.slow


def _mpmd(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from mpmd.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("mpm", ["prefork", "worker", "event"])
def test_a_detached_servers_app_output_goes_to_the_error_log(tmp_path, mpm):
    server = Server(tmp_path, "WSGIApp / testapp:noisy\nStartServers 1\n", mpm=mpm)
    conf = str(server.conf)
    assert _mpmd("-k", "start", "-f", conf).returncode == 0
    pid = int(wait_for(lambda: server.pid_file.exists() and server.pid_file.read_text(), 10))
    try:
        wait_for(lambda: child_titles(pid), timeout=10)
        assert fetch(server.port, "/?first") == (200, b"noisy")
        expected = [
            "print to stdout first",
            "print to stderr first",
            "raw write to fd 2 first",
            "RuntimeError: thread died first",
        ]
        wait_for(lambda: all(text in server.log_text() for text in expected), timeout=5)
        # a graceful restart reopens the log: the new children's output still lands there
        server.error_log.rename(tmp_path / "error_log.1")
        old_children = set(child_titles(pid))
        os.kill(pid, signal.SIGUSR1)
        wait_for(server.error_log.exists, timeout=10)
        # an old child still finishing may take the next connection; its output goes to the old file
        wait_for(lambda: (now := set(child_titles(pid))) and not now & old_children, timeout=10)
        wait_for(lambda: fetch(server.port, "/?second")[0] == 200, timeout=10)
        wait_for(lambda: "print to stdout second" in server.log_text(), timeout=5)
        processes = tree(pid)
        assert _mpmd("-k", "stop", "-f", conf).returncode == 0
        wait_gone(processes)
    finally:
        for leftover in tree(pid) if pid_alive(pid) else []:
            os.kill(leftover, signal.SIGKILL)  # only if the test failed half-way
