"""Workload ws-idle (issue 15's Scale): idle WebSockets held on one ASGI server process.

On a fresh server: warm-up, PSS of the server's process tree and `runs` wrk hello runs with no
idle connections; then bench/ws_idle_client.py (on the client core) opens `ws_idle_conns`
WebSockets and holds them idle; PSS again and the same wrk hello runs. The cost per
connection is (PSS after - PSS before) / WebSockets open; the targets are under
KIB_PER_CONNECTION_GOAL each and hello at least HELLO_RATIO_GOAL of its own figure without
them. Returns a plain dict (the JSON schema); it never starts or stops servers.
"""

from __future__ import annotations

import sys
import time

from bench.process import RunningServer
from bench.procfs import tree_cpu_seconds
from bench.servers import ServerSpec
from bench.workloads import (
    Settings,
    Workload,
    ask_report,
    memory,
    read_json_line,
    start_client,
    stop_client,
    summarize,
    timed_run,
)
from bench.wrk import CLIENT_CPU

KIB_PER_CONNECTION_GOAL = 20.0
HELLO_RATIO_GOAL = 0.8


def client_cmd(port: int, path: str, conns: int, ramp: float, hold: float, deflate: bool) -> list:
    cmd = ["taskset", "-c", CLIENT_CPU, sys.executable, "-m", "bench.ws_idle_client"]
    cmd += ["--port", str(port), "--path", path, "--conns", str(conns)]
    cmd += ["--ramp", f"{ramp:g}", "--max-seconds", f"{ramp + hold:g}"]
    return cmd + (["--deflate"] if deflate else [])


def cost_figures(
    pss_before: float | None,
    pss_after: float | None,
    open_count: int | None,
    rps_before: float | None,
    rps_after: float | None,
    cpu_before: float | None = None,
    cpu_after: float | None = None,
) -> dict:
    """KiB per open connection, the hello ratio (req/s with / without), the same ratio from
    the server's CPU per request (without / with: what other load on the machine leaves
    alone), and whether each target is met (req/s decides the hello one)."""
    kib = None
    if pss_before is not None and pss_after is not None and open_count:
        kib = round((pss_after - pss_before) * 1024 / open_count, 2)
    ratio = round(rps_after / rps_before, 3) if rps_before and rps_after is not None else None
    cpu_ratio = round(cpu_before / cpu_after, 3) if cpu_before and cpu_after else None
    return {
        "kib_per_conn": kib,
        "hello_ratio": ratio,
        "cpu_hello_ratio": cpu_ratio,
        "memory_met": kib is not None and kib < KIB_PER_CONNECTION_GOAL,
        "hello_met": ratio is not None and ratio >= HELLO_RATIO_GOAL,
    }


def _hello_runs(server: RunningServer, url: str, workload: Workload, settings: Settings) -> list:
    """`runs` timed hello runs, each with the server's CPU microseconds per request: the
    ratio that other load on the machine does not move as it moves req/s."""
    runs = []
    for _ in range(settings.runs):
        cpu = tree_cpu_seconds(server.pid)
        run = timed_run(url, workload, settings.duration)
        cpu = tree_cpu_seconds(server.pid) - cpu
        run["server_cpu_us_per_req"] = (
            round(cpu * 1e6 / run["requests"], 2) if run["requests"] else None
        )
        runs.append(run)
    return runs


def median_cpu_per_request(runs: list[dict]) -> float | None:
    values = sorted(r["server_cpu_us_per_req"] for r in runs if r.get("server_cpu_us_per_req"))
    return values[(len(values) - 1) // 2] if values else None


def measure_ws_idle(
    server: RunningServer, spec: ServerSpec, workload: Workload, settings: Settings, first: bool
) -> dict:
    """Hello without idle WebSockets, then with `settings.ws_idle_conns` of them held."""
    url = f"http://127.0.0.1:{server.port}{spec.paths[workload.content]}"
    warm = settings.first_warmup if first else settings.warmup
    if warm > 0:
        workload.run(url, warm)
    before = memory(server)
    runs_before = _hello_runs(server, url, workload, settings)
    hold = (settings.duration + 2) * settings.runs + 60
    cmd = client_cmd(
        server.port,
        spec.paths["ws"],
        settings.ws_idle_conns,
        settings.ws_idle_ramp,
        hold,
        workload.ws_deflate,
    )
    client = start_client(cmd)
    try:
        ready = read_json_line(client, settings.ws_idle_ramp + 30)
        time.sleep(1.0)  # as workload e: load starts 1 s after the ramp
        held = memory(server)
        runs = _hello_runs(server, url, workload, settings)
        report = ask_report(client)
    finally:
        stop_client(client)
    summary, summary_before = summarize(runs), summarize(runs_before)
    open_count = (ready or {}).get("still_open")
    cpu_before, cpu_after = median_cpu_per_request(runs_before), median_cpu_per_request(runs)
    return {
        "runs": runs,
        **summary,
        **held,
        "runs_before": runs_before,
        "median_rps_before": summary_before["median_rps"],
        "median_p99_ms_before": summary_before["median_p99_ms"],
        "pss_mib_before": before["pss_mib"],
        "cpu_us_per_req_before": cpu_before,
        "cpu_us_per_req": cpu_after,
        **cost_figures(
            before["pss_mib"],
            held["pss_mib"],
            open_count,
            summary_before["median_rps"],
            summary["median_rps"],
            cpu_before,
            cpu_after,
        ),
        "ws_ready": ready,
        "ws_idle": report,
        "ws_idle_cmd": cmd,
        "server_died": not server.alive(),
    }
