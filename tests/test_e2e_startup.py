"""Starting the real `mpmd` command: the positional app's import path, and start-up failures.

Each failure case runs the installed `mpmd` script (its sys.path is the script's, not the
current directory, exactly as a user's shell runs it) and checks Apache's message, that no
Python traceback reaches the user, and a non-zero exit.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from server import free_port, wait_for

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
