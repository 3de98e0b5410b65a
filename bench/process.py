"""Starting, probing and stopping one server process tree.

Owns the lifetime of every process the harness starts: each server runs in its own session
(process group) so that stop() can signal the whole tree by its pgid -- never by name -- first
SIGTERM, then SIGKILL after a grace period. Readiness is a successful HTTP GET within a bounded
time; a server that exits or never answers is reported, never waited on forever.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from bench.procfs import descendants, process_table
from bench.servers import Launch


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get_status(port: int, path: str, timeout: float = 2.0, tls: bool = False) -> int | None:
    """Status of one GET (over TLS, the certificate unchecked), or None without an answer."""
    if tls:
        context = ssl._create_unverified_context()  # the run's own self-signed certificate
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class ServerStartError(RuntimeError):
    """The server could not be configured, exited, or never answered."""


class RunningServer:
    """One started server; use as a context manager so the tree is always stopped."""

    def __init__(self, launch: Launch, log_path: Path, port: int) -> None:
        self.launch = launch
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            launch.cmd,
            cwd=launch.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, path: str, timeout: float, tls: bool = False) -> None:
        """Poll GET `path` until it answers 200, the process exits, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise ServerStartError(f"exited with status {self.proc.returncode}")
            status = http_get_status(self.port, path, tls=tls)
            if status == 200:
                return
            time.sleep(0.1)
        raise ServerStartError(f"no 200 for GET {path} within {timeout:g} s (last: {status})")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds, reap the leader.

        Processes of the tree that left the group (setsid) are killed by pid afterwards.
        """
        tree = descendants(self.proc.pid, process_table()) if self.alive() else []
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(self.proc):
                time.sleep(0.05)
            if not _group_alive(self.proc):
                break
        for pid in tree[1:]:
            try:
                if os.getpgid(pid) != self.proc.pid:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()

    def log_tail(self, lines: int = 5) -> str:
        """Last lines of the server's own output, for the failure note."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " / ".join(text.strip().splitlines()[-lines:])

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(proc: subprocess.Popen) -> bool:
    """True while any process of the leader's group exists (the leader reaped if it exited)."""
    proc.poll()
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
