"""Load and observation helpers for the process-machinery integration tests (test_mpm_*.py).

`Load` runs client threads that make real HTTP requests in a loop, one new connection per
request (`Connection: close`), and records every failure with its start and end time, so a
test can tell exactly which requests a signal or a kill cost. The other helpers read the
process tree (/proc) and the shared scoreboard of a running mpmd without changing either.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from mpmd.mpm.scoreboard import Scoreboard, default_path
from server import children_of


@dataclass
class Failure:
    started: float  # time.monotonic() when the request was sent
    ended: float
    error: str


def fetch(port: int, path: str = "/", *, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on a new connection, read to EOF; returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 "):
        raise ConnectionError(f"incomplete response: {raw[:80]!r}")
    return int(head[9:12]), body


@dataclass
class Load:
    """`clients` threads requesting `path` until stopped; a non-200 answer counts as failed."""

    port: int
    path: str = "/"
    clients: int = 8
    timeout: float = 10.0
    ok: int = 0
    failures: list[Failure] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, name=f"load-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _client(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, body = fetch(self.port, self.path, timeout=self.timeout)
                error = None if status == 200 else f"status {status}: {body[:80]!r}"
            except OSError as exc:
                error = repr(exc)
            with self._lock:
                if error is None:
                    self.ok += 1
                else:
                    self.failures.append(Failure(started, time.monotonic(), error))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "a load client did not finish"

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def process_title(pid: int) -> str:
    """The process title setproctitle wrote (argv area, NULs and padding stripped)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().split(b"\0", 1)[0].decode(errors="replace").strip()
    except OSError:
        return ""


def child_titles(parent_pid: int) -> dict[int, str]:
    """Children that finished their fork-side setup (a just-forked child still says parent)."""
    titles = {pid: process_title(pid) for pid in children_of(parent_pid)}
    return {pid: title for pid, title in titles.items() if " child gen " in title}


def tree(pid: int) -> list[int]:
    """The pid and all its descendants."""
    out = [pid]
    for child in children_of(pid):
        out.extend(tree(child))
    return out


def attach_scoreboard(parent_pid: int) -> Scoreboard:
    return Scoreboard.attach(default_path(parent_pid))


def live_children(board: Scoreboard) -> int:
    """Processes of the running generation that are not being stopped (the pool size)."""
    snap = board.snapshot()
    return sum(
        1 for p in snap.processes if p.pid and p.generation == snap.generation and not p.quiescing
    )


class Sampler:
    """Samples a function of the scoreboard every `interval` s in a thread: (time, value)."""

    def __init__(self, board: Scoreboard, probe, interval: float = 0.05) -> None:
        self.board = board
        self.probe = probe
        self.interval = interval
        self.samples: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.probe(self.board)))
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def steps(self) -> list[tuple[float, object]]:
        return steps(self.samples)


def steps(samples: list[tuple[float, object]]) -> list[tuple[float, object]]:
    """The samples where the value changed (the first one included)."""
    out: list[tuple[float, object]] = []
    for when, value in samples:
        if not out or out[-1][1] != value:
            out.append((when, value))
    return out


def unique_memory_kib(pid: int) -> int:
    """USS: Private_Clean + Private_Dirty from /proc/PID/smaps_rollup, in KiB."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as file:
        for line in file:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def wait_gone(pids: list[int], timeout: float = 15.0) -> None:
    from server import pid_alive, wait_for

    wait_for(lambda: not [p for p in pids if pid_alive(p)], timeout=timeout)
