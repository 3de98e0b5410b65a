"""The workloads and how one (server, workload) cell is measured.

Owns the method of shared/reference/peer-benchmarks.md: warm-up, then `runs` wrk runs of
`duration` seconds with cpu0/cpu1 busy % sampled around each, PSS of the server's tree after the
last run; workload e holds idle keep-alive connections from bench.idle_client while wrk runs;
ws-echo's client is bench/ws_client.py (bench/ws_load.py runs it) instead of wrk.
Returns plain dicts (the JSON schema); it never starts or stops servers.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.ab import run_ab
from bench.environment import REPO
from bench.process import RunningServer
from bench.procfs import busy_percent, read_cpu_times, tree_memory
from bench.servers import ServerSpec
from bench.wrk import CLIENT_CPU, WrkResult, run_wrk
from bench.ws_load import run_ws


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    content: str  # key into ServerSpec.paths
    connections: int
    headers: tuple[str, ...] = ()
    idle: bool = False
    balancer: bool = False  # only balancer servers run it, and they run nothing else
    tls: bool = False  # over https: only TLS servers run it, and they run nothing else
    client: str = "wrk"  # "ab" for full TLS handshakes (bench/ab.py says why), "ws"
    asgi: bool = False  # only ASGI servers run it, and they run nothing else
    ws_idle: bool = False  # idle WebSockets held (bench/ws_idle.py), not keep-alive (e)
    ws_deflate: bool = False  # ws-idle's client offers permessage-deflate

    def run(self, url: str, seconds: float) -> tuple[WrkResult, list[str], str]:
        """One load run of this workload's client against `url`."""
        run = {"wrk": run_wrk, "ab": run_ab, "ws": run_ws}[self.client]
        return run(url, self.connections, seconds, self.headers)


WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in (
        Workload("a", "hello world, keep-alive, -c 50", "hello", 50),
        Workload("b", "hello world, Connection: close, -c 50", "hello", 50, ("Connection: close",)),
        Workload("c", "static 1 KiB, keep-alive, -c 50", "1k", 50),
        Workload("d", "static 1 MiB, keep-alive, -c 10", "1m", 10),
        Workload("e", "2000 idle keep-alive connections + hello at -c 20", "hello", 20, idle=True),
        Workload(
            "f",
            "hello through a balancer to 3 nginx back ends, keep-alive, -c 50",
            "hello",
            50,
            balancer=True,
        ),
        Workload("g", "hello world over TLS, keep-alive, -c 50", "hello", 50, tls=True),
        Workload(
            "h",
            "new TLS connections: hello with Connection: close, a full handshake each (ab), -c 50",
            "hello",
            50,
            ("Connection: close",),
            tls=True,
            client="ab",
        ),
        Workload("asgi-hello", "ASGI hello world, keep-alive, -c 50", "hello", 50, asgi=True),
        Workload(
            "ws-echo",
            "WebSocket echo, one message in flight on each of 50 connections (msg/s)",
            "ws",
            50,
            asgi=True,
            client="ws",
        ),
        Workload(
            "ws-idle",
            "10000 idle WebSockets held + ASGI hello at -c 50, against hello without them",
            "hello",
            50,
            idle=True,
            asgi=True,
            ws_idle=True,
        ),
        Workload(
            "ws-idle-deflate",
            "ws-idle with permessage-deflate offered by every idle WebSocket",
            "hello",
            50,
            idle=True,
            asgi=True,
            ws_idle=True,
            ws_deflate=True,
        ),
    )
}


@dataclass(frozen=True)
class Settings:
    duration: float = 8.0
    runs: int = 3
    warmup: float = 2.0
    first_warmup: float = 6.0  # prefork needs ~5 s to spawn 50 children
    idle_conns: int = 2000
    idle_ramp: float = 10.0
    ws_idle_conns: int = 10000
    ws_idle_ramp: float = 60.0  # at most this long to open them (200 connects in flight)


def _url(server: RunningServer, spec: ServerSpec, workload: Workload) -> str:
    scheme = "ws" if workload.client == "ws" else "https" if workload.tls else "http"
    return f"{scheme}://127.0.0.1:{server.port}{spec.paths[workload.content]}"


def timed_run(url: str, workload: Workload, seconds: float) -> dict:
    before = read_cpu_times()
    result, cmd, _output = workload.run(url, seconds)
    after = read_cpu_times()
    return {
        "cmd": cmd,
        **result.to_json(),
        "p99_ms": result.p99_ms,
        "cpu0": round(busy_percent(before, after, "cpu0"), 1),
        "cpu1": round(busy_percent(before, after, "cpu1"), 1),
    }


def median_run(runs: list[dict]) -> dict | None:
    """The run whose req/s is the median (the lower middle for an even count)."""
    if not runs:
        return None
    ordered = sorted(runs, key=lambda r: r["requests_per_sec"])
    return ordered[(len(ordered) - 1) // 2]


def summarize(runs: list[dict]) -> dict:
    """Medians over the runs: req/s, p99 (of the runs that have one), MiB/s."""
    p99s = [r["p99_ms"] for r in runs if r.get("p99_ms") is not None and not r.get("killed")]
    middle = median_run(runs)
    return {
        "median_rps": statistics.median(r["requests_per_sec"] for r in runs) if runs else None,
        "median_p99_ms": statistics.median(p99s) if p99s else None,
        "median_mib_s": (
            statistics.median(r["transfer_mib_per_sec"] for r in runs) if runs else None
        ),
        "cpu0": middle["cpu0"] if middle else None,
        "cpu1": middle["cpu1"] if middle else None,
    }


def memory(server: RunningServer) -> dict:
    if not server.alive():
        return {"pss_mib": None, "procs": None, "threads": None}
    mem = tree_memory(server.pid)
    return {"pss_mib": round(mem.pss_mib, 1), "procs": mem.processes, "threads": mem.threads}


def measure_load(
    server: RunningServer, spec: ServerSpec, workload: Workload, settings: Settings, first: bool
) -> dict:
    """Workloads a-d: warm-up, `runs` timed runs, PSS after the last."""
    url = _url(server, spec, workload)
    warm = settings.first_warmup if first else settings.warmup
    if warm > 0:
        workload.run(url, warm)
    runs: list[dict] = []
    for _ in range(settings.runs):
        runs.append(timed_run(url, workload, settings.duration))
        if not server.alive():
            break
    return {"runs": runs, **summarize(runs), **memory(server), "server_died": not server.alive()}


def measure_idle(
    server: RunningServer, spec: ServerSpec, workload: Workload, settings: Settings, first: bool
) -> dict:
    """Workload e: warm-up, hold idle connections, 1 s later one wrk run, then count them."""
    url = _url(server, spec, workload)
    warm = settings.first_warmup if first else settings.warmup
    if warm > 0:
        workload.run(url, warm)
    before = memory(server)
    cmd = ["taskset", "-c", CLIENT_CPU, sys.executable, "-m", "bench.idle_client"]
    cmd += ["--port", str(server.port), "--path", spec.paths[workload.content]]
    cmd += ["--conns", str(settings.idle_conns), "--ramp", f"{settings.idle_ramp:g}"]
    cmd += ["--max-seconds", f"{settings.idle_ramp + settings.duration + 60:g}"]
    client = start_client(cmd)
    try:
        ready = read_json_line(client, settings.idle_ramp + 30)
        time.sleep(1.0)  # the reference's method: load starts 1 s after the ramp
        run = timed_run(url, workload, settings.duration)
        held = memory(server)
        report = ask_report(client)
    finally:
        stop_client(client)
    return {
        "runs": [run],
        **summarize([run]),
        **held,
        "pss_mib_before": before["pss_mib"],
        "idle_ready": ready,
        "idle": report,
        "idle_cmd": cmd,
        "server_died": not server.alive(),
    }


def start_client(cmd: list[str]) -> subprocess.Popen:
    """An idle-connection client (bench/idle_client.py, ws_idle_client.py): JSON lines out,
    a line in asks for its report; its own session, so stopping it reaches its children."""
    return subprocess.Popen(
        cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def read_json_line(proc: subprocess.Popen, timeout: float) -> dict | None:
    """The next JSON line from the client's stdout, or None after `timeout` s."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return None
    line = proc.stdout.readline()
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def ask_report(client: subprocess.Popen) -> dict | None:
    try:
        assert client.stdin is not None
        client.stdin.write("report\n")
        client.stdin.flush()
    except OSError:
        return None  # the client is gone
    return read_json_line(client, 30)


def stop_client(client: subprocess.Popen) -> None:
    """Closing its stdin makes the client report and exit; kill it if it does not."""
    with contextlib.suppress(OSError):
        if client.stdin is not None:
            client.stdin.close()
    try:
        client.wait(timeout=15)
    except subprocess.TimeoutExpired:
        client.kill()
        client.wait(timeout=5)
