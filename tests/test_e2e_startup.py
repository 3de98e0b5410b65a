"""Starting the real `mpmd` command: the positional app's import path, and start-up failures.

Each failure case runs the installed `mpmd` script (its sys.path is the script's, not the
current directory, exactly as a user's shell runs it) and checks Apache's message, that no
Python traceback reaches the user, and a non-zero exit.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from server import Server, free_port, wait_for

MPMD = Path(sys.executable).with_name("mpmd")
APP = """\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"from the project folder"]
"""


def _project(folder: Path) -> None:
    (folder / "pkg").mkdir()
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "wsgi.py").write_text(APP)


def _serve_app(cwd: Path, tmp: Path, *args: str) -> str:
    """Run `mpmd [args] pkg.wsgi:application` from `cwd`; return the body of GET /."""
    port = free_port()
    command = [str(MPMD), "--listen", f"127.0.0.1:{port}", "-C", f"PidFile {tmp}/mpmd.pid",
               "-C", "StartServers 1", *args, "pkg.wsgi:application"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def answer() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode(errors="replace"))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    return response.read().decode()
            except OSError:
                return None

        return wait_for(answer, timeout=15)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.slow
def test_positional_app_is_imported_from_the_current_directory(tmp_path):
    _project(tmp_path)
    assert _serve_app(tmp_path, tmp_path) == "from the project folder"


@pytest.mark.slow
def test_chdir_chooses_the_project_folder(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _project(project)
    assert _serve_app(tmp_path, tmp_path, "--chdir", "project") == "from the project folder"


# -- start-up failures: Apache's message, no traceback, exit 1 --------------------------------


def _mpmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MPMD), *args], capture_output=True, text=True, timeout=30)


def _fails_with(result: subprocess.CompletedProcess, *lines: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    for line in lines:
        assert line in output.splitlines(), output


def test_missing_error_log_directory(tmp_path):
    server = Server(tmp_path, f'ErrorLog "{tmp_path}/missing/error_log"\n')
    _fails_with(
        _mpmd("-f", str(server.conf)),
        f"(2)No such file or directory: AH00091: mpmd: could not open error log file "
        f"{tmp_path}/missing/error_log.",
        "AH00015: Unable to open logs",
    )


def test_missing_access_log_directory(tmp_path):
    server = Server(tmp_path, f'CustomLog "{tmp_path}/missing/access_log" common\n')
    _fails_with(
        _mpmd("-f", str(server.conf)),
        f"(2)No such file or directory: AH00649: could not open transfer log file "
        f"{tmp_path}/missing/access_log.",
        "AH00015: Unable to open logs",
    )
    assert not server.pid_file.exists()


@pytest.mark.parametrize(
    "debug", [(), ("-X",), ("-k", "start")], ids=["parent", "single process", "detached"]
)
def test_address_already_in_use(tmp_path, debug):
    server = Server(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        result = _mpmd("-f", str(server.conf), *debug)
    _fails_with(
        result,
        f"(98)Address already in use: AH00072: make_sock: could not bind to address "
        f"127.0.0.1:{server.port}",
        "AH00451: no listening sockets available, shutting down",
        "AH00015: Unable to open logs",
    )


def test_unwritable_pid_file(tmp_path):
    (tmp_path / "afile").write_text("")
    pid_file = tmp_path / "afile" / "mpmd.pid"
    server = Server(tmp_path, f'PidFile "{pid_file}"\n')
    result = _mpmd("-f", str(server.conf))
    _fails_with(result, f"AH00100: mpmd: could not log pid to file {pid_file}")
    assert f": AH00099: could not create {pid_file}" in result.stderr


def test_no_listen_is_refused_by_configtest_and_at_start(tmp_path):
    conf = tmp_path / "mpmd.conf"
    conf.write_text(f'ServerRoot "{tmp_path}"\nPidFile mpmd.pid\nErrorLog error_log\n')
    _fails_with(_mpmd("-f", str(conf)), "AH00451: no listening sockets available, shutting down")
    test = _mpmd("-t", "-f", str(conf))
    _fails_with(test, f"{conf}: no Listen directive: the server would have no listening sockets")
    assert "Syntax OK" not in test.stdout


def test_custom_log_expr_is_refused_with_file_and_line(tmp_path):
    server = Server(tmp_path, 'CustomLog access_log common "expr=%{REQUEST_STATUS} >= 400"\n')
    line = len(server.conf.read_text().splitlines())
    expected = f"{server.conf}:{line}: expr= conditions are not implemented by mpmd; use env=[!]VAR"
    _fails_with(_mpmd("-t", "-f", str(server.conf)), expected)
    _fails_with(_mpmd("-f", str(server.conf)), expected)


def test_unknown_syslog_facility_is_refused_with_file_and_line(tmp_path):
    server = Server(tmp_path, "ErrorLog syslog:local9\n")
    line = len(server.conf.read_text().splitlines())
    _fails_with(_mpmd("-t", "-f", str(server.conf)))
    assert _mpmd("-t", "-f", str(server.conf)).stderr.startswith(
        f"{server.conf}:{line}: ErrorLog syslog:local9: unknown syslog facility 'local9'"
    )


@pytest.mark.slow
def test_error_log_syslog_passes_configtest_and_serves(tmp_path):
    server = Server(tmp_path, "ErrorLog syslog:daemon\nStartServers 1\n")
    test = _mpmd("-t", "-f", str(server.conf))
    assert (test.returncode, test.stdout) == (0, "Syntax OK\n"), test.stderr
    (tmp_path / "htdocs" / "index.html").write_text("served")
    with server, urllib.request.urlopen(server.url("/"), timeout=5) as response:
        assert response.read() == b"served"
    assert server.proc.returncode == 0, server.output()
