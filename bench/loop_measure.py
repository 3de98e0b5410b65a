"""Measure the loop prototypes (bench/loop_prototypes.py) and three references with wrk.

Every server is started at once, pinned `taskset -c 1`, each in its own process group, and
warmed up (2 s of wrk); then rounds take one run of each in turn: `--runs` rounds of `wrk -t1
-c50 -dDs` pinned `taskset -c 0` (bench/wrk.py), keep-alive GET of the hello world, so load
from elsewhere that comes and goes hits every server alike. Around each run the utime+stime of every process in the server's tree
is read from /proc/PID/stat; CPU per request = its growth / requests wrk completed. That figure
holds when other work shares the machine (req/s does not), so a server whose req/s spread
exceeds --spread gets more runs, up to --max-runs. Prints a Markdown table; --json keeps the
raw runs.

    python -m bench.loop_measure                          # every variant and reference
    python -m bench.loop_measure --variants a,b,r2 --runs 3 --duration 8 --json out.json
    python -m bench.loop_measure --variants a,d,e6 --close      # a connection per request

References: r1 `mpmd -X` and r2 `mpmd` event (StartServers 1, ServerLimit 1, ThreadsPerChild
25) serving bench/fixtures.py's app at /hello, r3 uvicorn (uvloop + httptools) with an ASGI
hello. Run from the repository root with src/ and the repository on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.fixtures import write_fixtures
from bench.loop_prototypes import VARIANTS
from bench.process import free_port
from bench.procfs import descendants, process_table
from bench.servers import mpmd_config
from bench.wrk import run_wrk

REFERENCES = {"r1": "mpmd-X", "r2": "mpmd-event", "r3": "uvicorn-uvloop-httptools"}
EVENT_CHILD = [
    "StartServers 1",
    "ServerLimit 1",
    "ThreadsPerChild 25",
    "MaxRequestWorkers 25",
    "MinSpareThreads 1",
    "MaxSpareThreads 25",
]
_CLK_TCK = os.sysconf("SC_CLK_TCK")


async def hello_asgi(scope, receive, send):
    """uvicorn's app: the prototypes' response, from ASGI."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"13")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"Hello, World!"})


@dataclass
class Run:
    requests_per_sec: float
    requests: int
    cpu_seconds: float
    socket_errors: dict[str, int]

    @property
    def cpu_us_per_request(self) -> float:
        return 1e6 * self.cpu_seconds / self.requests if self.requests else 0.0


@dataclass
class Result:
    key: str
    name: str
    command: list[str]
    runs: list[Run] = field(default_factory=list)
    error: str = ""

    def median_rps(self) -> float:
        return statistics.median(r.requests_per_sec for r in self.runs) if self.runs else 0.0

    def median_cpu_us(self) -> float:
        return statistics.median(r.cpu_us_per_request for r in self.runs) if self.runs else 0.0

    def spread(self) -> float:
        """(max - min) / median of req/s."""
        rates = [r.requests_per_sec for r in self.runs]
        median = statistics.median(rates) if rates else 0.0
        return (max(rates) - min(rates)) / median if median else 0.0


def command(key: str, name: str, port: int, workdir: Path) -> tuple[list[str], str]:
    """The server's command line (pinned to cpu 1) and the URL wrk loads."""
    python = [sys.executable]
    url = f"http://127.0.0.1:{port}/"
    if key in VARIANTS:
        cmd = [*python, "-m", "bench.loop_prototypes", name, "--port", str(port)]
        if "-tls-" in name:
            url = f"https://127.0.0.1:{port}/"
    elif name == "uvicorn-uvloop-httptools":
        cmd = [*python, "-m", "uvicorn", "bench.loop_measure:hello_asgi", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
        cmd += ["--no-access-log", "--log-level", "warning"]
    else:
        fixtures = write_fixtures(workdir / "fixtures")
        run_dir = fixtures.run_dir(name)
        event = name == "mpmd-event"
        text = mpmd_config(fixtures, run_dir, port, "event" if event else None)
        if event:
            text += "\n".join(EVENT_CHILD) + "\n"
        conf = run_dir / "mpmd.conf"
        conf.write_text(text)
        flags = ["-f", str(conf), "-DFOREGROUND"] if event else ["-X", "-f", str(conf)]
        cmd = [*python, "-m", "mpmd", *flags]
        url = f"http://127.0.0.1:{port}/hello"
    return ["taskset", "-c", "1", *cmd], url


def answers(url: str) -> bool:
    host_port = url.split("/")[2]
    if url.startswith("https"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host_port, timeout=2, context=context
        )
    else:
        conn = http.client.HTTPConnection(host_port, timeout=2)
    try:
        conn.request("GET", "/" + url.split("/", 3)[3])
        response = conn.getresponse()
        return response.status == 200 and response.read() == b"Hello, World!"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def tree_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (each a whole process: all its threads)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLK_TCK


@dataclass
class Running:
    result: Result
    url: str
    proc: subprocess.Popen
    pids: list[int]

    def needs_run(self, args: argparse.Namespace) -> bool:
        runs = len(self.result.runs)
        return runs < args.runs or (self.result.spread() > args.spread and runs < args.max_runs)

    def run_once(self, args: argparse.Namespace) -> None:
        before = tree_cpu_seconds(self.pids)
        headers = ("Connection: close",) if args.close else ()
        wrk, _, _ = run_wrk(self.url, args.connections, args.duration, headers)
        after = tree_cpu_seconds(self.pids)
        run = Run(wrk.requests_per_sec, wrk.requests, after - before, wrk.socket_errors)
        self.result.runs.append(run)
        print(
            f"  {self.result.name}: {run.requests_per_sec:9.0f} req/s  "
            f"{run.cpu_us_per_request:6.1f} us CPU/req  errors {run.socket_errors}  "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )


def start(key: str, name: str, workdir: Path, stack: ExitStack) -> Running | Result:
    """Start one server (stopped when `stack` closes) and warm it up; a Result if it failed."""
    port = free_port()
    cmd, url = command(key, name, port, workdir)
    result = Result(key, name, cmd)
    log_path = workdir / f"{name}.log"
    with open(log_path, "w") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    stack.callback(stop, proc)
    deadline = time.monotonic() + 30
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            result.error = "did not start: " + log_path.read_text()[-500:]
            return result
        time.sleep(0.2)
    run_wrk(url, 50, 2)  # warm-up
    return Running(result, url, proc, descendants(proc.pid, process_table()))


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(servers: dict[str, str], args: argparse.Namespace, workdir: Path) -> list[Result]:
    """Every server runs at once (idle ones cost nothing); rounds take one wrk run of each in
    turn, so load from elsewhere that comes and goes hits every server alike."""
    with ExitStack() as stack:
        started = [start(key, name, workdir, stack) for key, name in servers.items()]
        running = [s for s in started if isinstance(s, Running)]
        while todo := [s for s in running if s.needs_run(args)]:
            for server in todo:
                server.run_once(args)
    return [s.result if isinstance(s, Running) else s for s in started]


def table(results: list[Result]) -> str:
    lines = [
        "| | server | req/s (median) | runs: req/s | µs CPU/req (median) | runs: µs CPU/req |",
        "|---|---|---:|---|---:|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.key} | {r.name} | failed | {r.error[:60]} | | |")
            continue
        rates = ", ".join(f"{run.requests_per_sec / 1000:.1f}k" for run in r.runs)
        cpus = ", ".join(f"{run.cpu_us_per_request:.1f}" for run in r.runs)
        lines.append(
            f"| {r.key} | {r.name} | {r.median_rps():,.0f} | {rates} | "
            f"{r.median_cpu_us():.1f} | {cpus} |"
        )
    return "\n".join(lines)


def main() -> None:
    everything = {**VARIANTS, **REFERENCES}
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(everything), help="keys, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-runs", type=int, default=6)
    parser.add_argument("--spread", type=float, default=0.10, help="(max-min)/median of req/s")
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--close", action="store_true", help="wrk sends Connection: close")
    parser.add_argument("--json", type=Path, help="write the raw runs here")
    args = parser.parse_args()
    servers = {key: everything[key] for key in args.variants.split(",")}
    with tempfile.TemporaryDirectory(prefix="loop-proto-") as tmp:
        results = measure(servers, args, Path(tmp))
    print(table(results))
    if args.json:
        data = [
            {**asdict(r), "median_rps": r.median_rps(), "median_cpu_us": r.median_cpu_us()}
            for r in results
        ]
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
