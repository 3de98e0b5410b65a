"""The real `mpmd` / `mpmctl` command lines, run as subprocesses (each well under a second)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest


def run(*args: str, tool: str = "mpmd", cwd: pathlib.Path | None = None):
    code = f"import sys; from mpmd.cli import {'main' if tool == 'mpmd' else 'mpmctl_main'} as m; sys.exit(m())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=20, cwd=cwd)  # fmt: skip


def write(tmp_path: pathlib.Path, text: str, name: str = "httpd.conf") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_syntax_ok(tmp_path) -> None:
    conf = write(tmp_path, "Listen 8080\nAddType text/x .x\n")
    result = run("-t", "-f", conf)
    assert (result.returncode, result.stdout) == (0, "Syntax OK\n")
    assert "AddType (mod_mime) is not implemented by mpmd" in result.stderr


def test_module_entry_point(tmp_path) -> None:
    conf = write(tmp_path, "Listen 8080\n")
    result = subprocess.run([sys.executable, "-m", "mpmd", "-t", "-f", conf],
                            capture_output=True, text=True, timeout=20)  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "Syntax OK\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Listen 80\nFrobnicate 1\n", ":2: Invalid command 'Frobnicate', perhaps misspelled"),
        ("<VirtualHost *:80>\nStartServers 3\n</VirtualHost>\n",
         ":2: StartServers cannot occur within <VirtualHost> section"),
        ("Listen 80\n<IfModule foo_module>\nStartServers 2\n", ":2: <IfModule> was not closed."),
        ("Listen 80\nStartServers two\n", ':2: StartServers "two" must be an integer'),
        ("Listen 80\n\nInclude /nonexistent-h1b/x.conf\n", ":3: Could not open configuration file"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_file_and_line(tmp_path, text, expected) -> None:
    conf = write(tmp_path, text)
    result = run("-t", "-f", conf)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(conf + ":") and expected in lines[0]


def test_dump_after_clamping_is_valid_config(tmp_path) -> None:
    conf = write(tmp_path, "LoadModule mpm_worker_module x.so\nListen 8080\n"
                 "ThreadsPerChild 25\nMaxRequestWorkers 160\n")  # fmt: skip
    result = run("-S", "-f", conf)
    assert result.returncode == 0
    assert "MaxRequestWorkers 150" in result.stdout.splitlines()
    assert ("AH00316: WARNING: MaxRequestWorkers of 160 is not an integer multiple of "
            "ThreadsPerChild of 25, decreasing to nearest multiple 150, for a maximum of 6 "
            "servers.") in result.stderr  # fmt: skip
    # every non-comment line of the dump is itself accepted as configuration
    again = write(tmp_path, result.stdout.replace("\r", ""), "dump.conf")
    check = run("-t", "-f", again, "--mpm", "worker")
    assert check.returncode == 0, check.stderr
    redump = run("-S", "-f", again, "--mpm", "worker")
    assert [ln for ln in redump.stdout.splitlines() if not ln.startswith("#")] == [
        ln for ln in result.stdout.splitlines() if not ln.startswith("#")]  # fmt: skip


def test_modules_and_version(tmp_path) -> None:
    conf = write(tmp_path, "LoadModule mpm_prefork_module x.so\nLoadModule status_module y.so\n")
    result = run("-M", "-f", conf)
    lines = result.stdout.splitlines()
    assert lines[0] == "Loaded Modules:" and " core_module (static)" in lines
    assert " mpm_prefork_module (shared)" in lines and " status_module (shared)" in lines
    version = run("-V", "-f", conf)
    assert "Server MPM:     prefork" in version.stdout
    assert version.stdout.startswith("Server version: mpmd/")
    default = run("-M", cwd=tmp_path)
    assert any(line.startswith(" mpm_event_module (") for line in default.stdout.splitlines())


def test_control_without_a_server(tmp_path) -> None:
    conf = write(tmp_path, "Listen 8080\nPidFile run.pid\n")
    assert run("-k", "stop", "-f", conf).stdout == "mpmd (no pid file) not running\n"
    pid = subprocess.Popen([sys.executable, "-c", "pass"])
    pid.wait()
    (tmp_path / "run.pid").write_text(f"{pid.pid}\n")
    result = run("-k", "graceful-stop", "-f", conf)
    assert result.stdout == f"mpmd (pid {pid.pid}?) not running\n"


MPMCTL = pathlib.Path(sys.executable).with_name("mpmctl")


def test_mpmctl_help_lists_its_verbs() -> None:
    result = subprocess.run([str(MPMCTL), "--help"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0
    for verb in ("start", "stop", "restart", "graceful", "graceful-stop", "configtest",
                 "status", "fullstatus"):  # fmt: skip
        assert verb in result.stdout
    assert "-f FILE" in result.stdout


@pytest.mark.parametrize("order", ["verb first", "options first"])
def test_control_signals_the_pid_file_process(tmp_path, order) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
        "signal.signal(signal.SIGUSR1, lambda *a: sys.exit(7))\nprint('ready', flush=True)\n"
        "time.sleep(30)"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert sleeper.stdout.readline() == "ready\n"
        conf = write(tmp_path, f"Listen 8080\nPidFile {tmp_path}/run.pid\n")
        (tmp_path / "run.pid").write_text(f"{sleeper.pid}\n")
        args = ["graceful", "-f", conf] if order == "verb first" else ["-f", conf, "graceful"]
        result = subprocess.run([str(MPMCTL), *args], capture_output=True, text=True, timeout=20)
        assert result.returncode == 0, result.stderr
        assert sleeper.wait(timeout=10) == 7
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_restart_refuses_a_broken_config(tmp_path) -> None:
    conf = write(tmp_path, "Listen 8080\nStartServers many\n")
    result = run("restart", "-f", conf, tool="mpmctl")
    assert result.returncode == 1 and 'StartServers "many" must be an integer' in result.stderr


def test_mpmctl_verbs(tmp_path) -> None:
    conf = write(tmp_path, "Listen 8080\n")
    assert run("configtest", "-f", conf, tool="mpmctl").stdout == "Syntax OK\n"
    assert run("-f", conf, "configtest", tool="mpmctl").stdout == "Syntax OK\n"
    status = run("status", tool="mpmctl")
    assert status.returncode == 1 and "not running" in status.stdout  # no PidFile here
    assert run("frobnicate", tool="mpmctl").returncode == 2


def test_start_when_already_running(tmp_path) -> None:
    conf = write(tmp_path, f"Listen 8080\nPidFile {tmp_path}/run.pid\n")
    (tmp_path / "run.pid").write_text(f"{os.getpid()}\n")
    result = run("-k", "start", "-f", conf)
    assert result.stdout == f"mpmd (pid {os.getpid()}) already running\n"
