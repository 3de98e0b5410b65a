"""ASGI lifespan, configuration and restarts through the real server (tests/apps/asgi_apps.py).

Lifespan state reaches requests; shutdown runs on a graceful stop and in the old child of a
graceful restart, after the request it was serving completed; a failed startup stops the
server (MP00289); an application that raises on the lifespan scope is served anyway under
ASGILifespan auto (MP00288) and stops the server under `on`. ASGIApp needs the event MPM
(`-t` says where) except under -X; the positional `mpmd module:app` detects an ASGI callable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from server import APPS, Server, call, children_of, free_port, pid_alive, wait_for
from test_e2e_http import Wire

SMALL_POOL = """\
StartServers 1
MinSpareThreads 1
MaxSpareThreads 8
ThreadsPerChild 4
"""


def _markers(tmp_path: Path) -> Path:
    markers = tmp_path / "markers"
    markers.mkdir()
    markers.chmod(0o777)
    return markers


def _pid(server: Server) -> int:
    status, _, body = call(server, "GET", "/a/pid")
    assert status == 200
    return int(body)


def _exits(server: Server) -> int:
    """Start a server that must not come up; its exit status."""
    server.start(wait=False)
    try:
        return server.proc.wait(timeout=30)
    finally:
        server.stop()


# -- lifespan ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_state_reaches_requests_and_shutdown_runs_on_graceful_stop(tmp_path) -> None:
    markers = _markers(tmp_path)
    config = SMALL_POOL + "ASGIApp /a asgi_apps:app\n"
    with Server(tmp_path, config, mpm="event", env={"ASGI_MARKERS": str(markers)}) as server:
        _, _, body = call(server, "GET", "/a/scope")
        scope = json.loads(body)
        assert scope["state"] == {"started": "yes", "pid": scope["pid"]}
        child = scope["pid"]
        assert not (markers / f"shutdown-{child}").exists()
        server.signal(signal.SIGWINCH)  # graceful-stop
        wait_for(lambda: (markers / f"shutdown-{child}").exists(), timeout=15)
        assert server.proc.wait(timeout=15) == 0
    assert "MP00290" not in server.log_text()


@pytest.mark.slow
def test_graceful_restart_finishes_the_request_in_flight_then_runs_shutdown(tmp_path) -> None:
    markers = _markers(tmp_path)
    gate = markers / "gate"
    config = SMALL_POOL + "ASGIApp /a asgi_apps:app\n"
    with Server(tmp_path, config, mpm="event", env={"ASGI_MARKERS": str(markers)}) as server:
        old = _pid(server)
        wire = Wire.connect(server.port)
        try:
            wire.send(f"GET /a/held?gate={gate} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            assert wire._until(b"first;").startswith(b"HTTP/1.1 200 OK\r\n")
            server.signal(signal.SIGUSR1)  # graceful restart
            new = wait_for(lambda: (pid := _pid(server)) != old and pid, timeout=15)
            assert pid_alive(old)  # still serving the request in flight
            assert not (markers / f"shutdown-{old}").exists()
            gate.touch()
            rest = wire._until(b";end")
        finally:
            wire.close()
        assert rest.endswith(b"rest" * 10000 + b";end")  # chunk framing aside, all of it
        assert rest.count(b"rest") == 10000
        wait_for(lambda: (markers / f"shutdown-{old}").exists(), timeout=15)
        wait_for(lambda: old not in children_of(server.pid), timeout=15)
        assert _pid(server) == new
        assert not (markers / f"shutdown-{new}").exists()


def test_failed_startup_stops_the_server(tmp_path) -> None:
    server = Server(tmp_path, SMALL_POOL + "ASGIApp / asgi_apps:failing_startup\n", mpm="event")
    assert _exits(server) != 0
    log = server.log_text()
    assert "MP00289: Application startup failed (asgi_apps:failing_startup)" in log, log
    assert "database unreachable" in log


def test_an_app_without_lifespan_is_served_under_auto(tmp_path) -> None:
    config = SMALL_POOL + "ASGIApp /n asgi_apps:no_lifespan\n"
    with Server(tmp_path, config, mpm="event") as server:
        assert call(server, "GET", "/n")[::2] == (200, b"no lifespan here")
        line = wait_for(
            lambda: next((x for x in server.log_text().splitlines() if "MP00288" in x), None)
        )
        assert "[asgi:info]" in line
        assert "appears unsupported by 'asgi_apps:no_lifespan'" in line


def test_asgilifespan_on_stops_the_server_for_an_app_without_lifespan(tmp_path) -> None:
    config = SMALL_POOL + "ASGILifespan on\nASGIApp /n asgi_apps:no_lifespan\n"
    server = Server(tmp_path, config, mpm="event")
    assert _exits(server) != 0
    log = server.log_text()
    assert "MP00287: Exception in 'lifespan' protocol of 'asgi_apps:no_lifespan'" in log, log
    assert "MP00289" in log


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("mpm", ["prefork", "worker"])
def test_asgiapp_needs_the_event_mpm(tmp_path, mpm) -> None:
    server = Server(tmp_path, "ASGIApp /a asgi_apps:app\n", mpm=mpm)
    line = server.conf.read_text().splitlines().index("ASGIApp /a asgi_apps:app") + 1
    result = subprocess.run(
        [sys.executable, "-m", "mpmd", "-t", "-f", str(server.conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert f"{server.conf}:{line}: ASGIApp needs the event MPM" in result.stderr + result.stdout


@pytest.mark.slow
def test_one_process_serves_asgi_with_a_prefork_config(tmp_path) -> None:
    config = "ASGIApp /a asgi_apps:app\nWSGIApp /w testapp:hello\n"
    with Server(tmp_path, config, mpm="prefork", args=("-X",)) as server:
        assert call(server, "GET", "/a/hello")[::2] == (200, b"Hello, ASGI!")
        assert call(server, "GET", "/w")[::2] == (200, b"Hello, World!")
        assert json.loads(call(server, "GET", "/a/scope")[2])["state"]["started"] == "yes"


def _positional(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "mpmd", "--listen", f"127.0.0.1:{port}",
               "-C", f"PidFile {tmp_path}/mpmd.pid", "-C", "StartServers 1", *args]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=APPS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    return proc, port


def _get(proc: subprocess.Popen, port: int, path: str) -> tuple[int, bytes]:
    def answer():
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode(errors="replace"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return None

    return wait_for(answer, timeout=15)


def _stop(proc: subprocess.Popen) -> str:
    """Stop the positional server; what it wrote to stderr."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    return proc.stderr.read().decode(errors="replace")


def test_positional_asgi_app_is_detected_and_served(tmp_path) -> None:
    proc, port = _positional(tmp_path, "asgi_apps:hello")
    try:
        assert _get(proc, port, "/") == (200, b"Hello, ASGI!")
    finally:
        stderr = _stop(proc)
    assert "mpmd: asgi_apps:hello is an ASGI application" in stderr, stderr


def test_interface_wsgi_forces_a_wsgi_call(tmp_path) -> None:
    proc, port = _positional(tmp_path, "--interface", "wsgi", "asgi_apps:hello")
    try:
        status, _ = _get(proc, port, "/")
    finally:
        stderr = _stop(proc)
    assert status == 500
    assert "is an ASGI application" not in stderr
