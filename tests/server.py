"""Start and stop a real mpmd for integration tests: generated config, loopback, ephemeral port."""

from __future__ import annotations

import http.client
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

APPS = Path(__file__).parent / "apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02):
    """Poll `condition` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of the test is not alive
        with open(f"/proc/{pid}/stat") as file:
            return file.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# One event child whose spare-thread bounds fit it, so the parent does not log about children
# it may not start (the ASGI tests: an app's state lives in one process).
ONE_EVENT_CHILD = """\
StartServers 1
ServerLimit 1
ThreadsPerChild 25
MaxRequestWorkers 25
MinSpareThreads 1
MaxSpareThreads 26
"""


# Three event children with keep-alive that lasts the test (the sharing and gathering tests).
THREE_EVENT_CHILDREN = """\
StartServers 3
ServerLimit 3
ThreadsPerChild 10
MaxRequestWorkers 30
MinSpareThreads 10
MaxSpareThreads 30
KeepAliveTimeout 60
MaxKeepAliveRequests 0
"""


def raise_open_files(wanted: int) -> None:
    """This process's RLIMIT_NOFILE to at least `wanted` where allowed (a server started later
    inherits it); as root the hard limit too, since a container's may be low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted and os.geteuid() == 0:
        hard = wanted
    wanted = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            return [int(p) for p in file.read().split()]
    except OSError:
        return []


class Server:
    """One mpmd process tree; `config` is Apache syntax appended to the generated basics."""

    def __init__(
        self,
        tmp: Path,
        config: str = "",
        *,
        args: tuple[str, ...] = (),
        mpm: str | None = None,
        env: dict[str, str] | None = None,
        launcher: tuple[str, ...] = (),
    ):
        """`env`: extra environment variables; `launcher`: a command that execs mpmd's
        command line (e.g. systemd-socket-activate), so the process is still mpmd's parent."""
        self.tmp = tmp
        self.env = env
        self.launcher = launcher
        self.port = free_port()
        self.pid_file = tmp / "mpmd.pid"
        self.error_log = tmp / "error_log"
        self.access_log = tmp / "access_log"
        (tmp / "htdocs").mkdir(exist_ok=True)
        load = f"LoadModule mpm_{mpm}_module modules/mod_mpm_{mpm}.so\n" if mpm else ""
        self.conf = tmp / "mpmd.conf"
        self.conf.write_text(
            load
            + textwrap.dedent(
                f"""\
                ServerRoot "{tmp}"
                Listen 127.0.0.1:{self.port}
                ServerName localhost
                PidFile "{self.pid_file}"
                ErrorLog "{self.error_log}"
                LogLevel info
                CustomLog "{self.access_log}" combined
                DocumentRoot "{tmp / "htdocs"}"
                WSGIPythonPath "{APPS}"
                """
            )
            + textwrap.dedent(config)
        )
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self, *, wait: bool = True) -> Server:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("this server is already running: a second start would leak it")
        self.proc = subprocess.Popen(
            [*self.launcher, sys.executable, "-m", "mpmd", "-f", str(self.conf), *self.args],
            env={**os.environ, **self.env} if self.env else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            wait_for(self._ready, timeout=15)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mpmd exited with {self.proc.returncode}: {self.output()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"GET /__ready__ HTTP/1.0\r\n\r\n")
                return sock.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if self.proc and self.proc.stdout and self.proc.poll() is not None:
            return self.proc.stdout.read().decode(errors="replace")
        return ""

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self) -> None:
        """Stop the whole tree by pid; SIGKILL the group if it does not go within 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def log_text(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Server:
        try:
            return self.start()
        except BaseException:  # __exit__ does not run when __enter__ raises: stop it here
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def call(server: Server, method: str, path: str, body=None, headers=None, **kw):
    """One request on its own connection: (status, headers as a dict, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {}, **kw)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()
