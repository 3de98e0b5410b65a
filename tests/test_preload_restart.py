"""WSGIPreload across restarts, with real processes: the new generation runs the new code.

The parent that preloaded the application re-execs itself on a graceful restart or a restart
(keeping its pid, listening sockets, scoreboard and children), so the application module edited
between generations is imported afresh and no request fails meanwhile. An application that no
longer imports on a graceful restart stops the server, with or without preloading: the old
children finish, then the parent exits with AH02324.
"""

from __future__ import annotations

import signal

import pytest

from mpm_load import Load, attach_scoreboard, child_titles, fetch
from server import Server, wait_for

pytestmark = pytest.mark.slow
APP = "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [{!r}]\n"


def _server(tmp_path, mpm: str, preload: str) -> Server:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "editable.py").write_text(APP.format(b"version 1"))
    config = f'WSGIPythonPath "{apps}"\nWSGIApp / editable:app\nWSGIPreload {preload}\n'
    return Server(tmp_path, config + "StartServers 2\n", mpm=mpm)


def _all_of_generation(pid: int, mpm: str, generation: int) -> bool:
    titles = child_titles(pid).values()
    return bool(titles) and set(titles) == {f"mpmd: {mpm} child gen {generation}"}


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_a_restart_with_preload_serves_the_edited_code(tmp_path, mpm):
    server = _server(tmp_path, mpm, "On")
    module = tmp_path / "apps" / "editable.py"
    with server:
        assert fetch(server.port, "/") == (200, b"version 1")
        with Load(server.port, "/", clients=4) as load:
            module.write_text(APP.format(b"version 2 (graceful)"))
            server.signal(signal.SIGUSR1)
            wait_for(lambda: _all_of_generation(server.pid, mpm, 1), timeout=15)
            wait_for(lambda: load.ok > 50, timeout=10)
        assert load.failures == [], load.failures[:3]
        assert fetch(server.port, "/") == (200, b"version 2 (graceful)")
        module.write_text(APP.format(b"version 3 (restart, SIGHUP)"))
        server.signal(signal.SIGHUP)
        wait_for(lambda: _all_of_generation(server.pid, mpm, 2), timeout=15)
        assert fetch(server.port, "/") == (200, b"version 3 (restart, SIGHUP)")
        assert server.pid_file.read_text().strip() == str(server.pid)  # same parent process
        assert server.proc.poll() is None
    assert server.proc.returncode == 0
    assert server.log_text().count("resuming normal operations") == 3


@pytest.mark.parametrize("preload", ["Off", "On"])
def test_a_broken_import_on_graceful_restart_stops_the_server(tmp_path, preload):
    server = _server(tmp_path, "prefork", preload)
    with server:
        board = attach_scoreboard(server.pid)
        # the parent's tick has run and seen the children serve
        wait_for(lambda: board.snapshot().history(), timeout=10)
        board.close()
        (tmp_path / "apps" / "editable.py").write_text("raise ImportError('broken on purpose')\n")
        server.signal(signal.SIGUSR1)
        assert server.proc.wait(timeout=20) == 1
    log = server.log_text()
    assert "ImportError: broken on purpose" in log
    assert ("MP00005" if preload == "On" else "MP00001") in log
    assert "AH02324" in log
    assert not server.pid_file.exists()
