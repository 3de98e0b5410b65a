"""How close `mpmctl plan` comes to a real run (issue 12's acceptance "against a real run").

`python -m bench.plan_accuracy [--cases NAME,...] [--seconds S] [--out FILE]` runs, for each
case (an MPM, a pool configuration and a synthetic trace: Poisson or on/off bursty arrivals of
requests to tests/apps/timed.py, which sleeps or spins for the time named in the path), the
real server on loopback with an access log carrying %{usec}t and %D, replays the trace against
it open loop (mpmd.tools.replay) while sampling the number of children from /proc, then plans
that access log with that configuration, exactly as `mpmctl plan` does, and compares. Measured
latency is the client's (it includes waiting in the backlog and for a worker, as the planner's
does; %D does not). It prints a markdown table; tests/test_plan_accuracy.py runs short cases.

Tolerances (the issue's): p50 and p95 within 15 %, p99 within 25 % (or 3 ms when the measured
value is under 20 ms), peak processes within 1, and no refusals predicted when there were none.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mpmd.config.build import load_config
from mpmd.tools.accesslog import LogParser, read_access_log
from mpmd.tools.logformats import resolve_format
from mpmd.tools.plan import build_trace, simulate_configs, somaxconn
from mpmd.tools.replay import Outcome, Shot, bursty, poisson, replay
from mpmd.tools.sim_report import SimSettings, Summary, percentile

APPS = Path(__file__).resolve().parent.parent / "tests" / "apps"
LOG_FORMAT = r'"%a %l %u %{usec}t \"%r\" %>s %b %k %D %{mpmd-queued-ms}n" timed'


def sleep_ms(ms: int) -> Callable:
    """Paths for a handler that sleeps an exponential time with mean `ms` (at least 1 ms)."""
    return lambda rng: f"/sleep/{max(1, round(rng.expovariate(1 / ms)))}"


def mixed(ms: int, spin: int) -> Callable:
    """Mostly sleeping requests, one in five spinning `spin` ms of CPU."""
    sleeper = sleep_ms(ms)
    return lambda rng: f"/spin/{spin}" if rng.random() < 0.2 else sleeper(rng)


@dataclass(frozen=True)
class Case:
    name: str
    mpm: str
    pool: str  # pool directives
    trace: Callable[[float], list[Shot]]  # duration -> shots


PREFORK_SMALL = """\
    StartServers 2
    MinSpareServers 1
    MaxSpareServers 3
    MaxRequestWorkers 12
    ServerLimit 12
"""
PREFORK_ROOMY = """\
    StartServers 8
    MinSpareServers 5
    MaxSpareServers 10
    MaxRequestWorkers 16
    ServerLimit 16
"""
THREADED_SMALL = """\
    StartServers 1
    ServerLimit 4
    ThreadsPerChild 4
    ThreadLimit 4
    MinSpareThreads 2
    MaxSpareThreads 6
    MaxRequestWorkers 16
"""
THREADED_ROOMY = """\
    StartServers 2
    ServerLimit 4
    ThreadsPerChild 16
    ThreadLimit 16
    MinSpareThreads 8
    MaxSpareThreads 32
    MaxRequestWorkers 64
"""


def _cases() -> dict[str, Case]:
    def steady(rate: float, paths: Callable) -> Callable[[float], list[Shot]]:
        return lambda seconds: poisson(rate, seconds, paths, seed=7)

    def burst(low: float, high: float, paths: Callable) -> Callable[[float], list[Shot]]:
        return lambda seconds: bursty(low, high, 4.0, seconds, paths, seed=11)

    out = {}
    for mpm in ("prefork", "worker", "event"):
        small, roomy = (
            (PREFORK_SMALL, PREFORK_ROOMY) if mpm == "prefork" else (THREADED_SMALL, THREADED_ROOMY)
        )
        busy = 1.0 if mpm == "prefork" else 2.5  # threads are cheap: load the small pool more
        for case in (
            Case(f"{mpm}-small-poisson", mpm, small, steady(80 * busy, sleep_ms(20))),
            Case(f"{mpm}-small-bursty", mpm, small, burst(20, 150 * busy, sleep_ms(20))),
            Case(f"{mpm}-roomy-poisson", mpm, roomy, steady(150, mixed(20, 3))),
            Case(f"{mpm}-roomy-bursty", mpm, roomy, burst(30, 250, sleep_ms(15))),
        ):
            out[case.name] = case
    return out


CASES = _cases()


@dataclass(frozen=True)
class Comparison:
    """One case's measured and predicted numbers (ms) and the tolerances it misses."""

    case: str
    requests: int
    measured: tuple[float, float, float]  # client p50, p95, p99
    predicted: tuple[float, float, float]
    peak_measured: int
    peak_predicted: int
    refused_measured: int
    refused_predicted: int
    # the replayer's worst lateness behind schedule: it shapes the trace, not the comparison
    # (the server logs, and the client times, each request when it was actually sent)
    late_ms: float
    misses: tuple[str, ...]


def tolerance_misses(
    measured: tuple[float, float, float],
    predicted: tuple[float, float, float],
    peaks: tuple[int, int],
    refused: tuple[int, int],
) -> list[str]:
    """The issue's tolerances that `predicted` misses, as short phrases."""
    misses = []
    tolerances = zip(("p50", "p95", "p99"), measured, predicted, (0.15, 0.15, 0.25), strict=True)
    for label, m, p, rel in tolerances:
        slack = max(rel * m, 3.0) if label == "p99" and m < 20 else rel * m
        if not abs(p - m) <= slack:
            misses.append(f"{label} {p:.1f} vs {m:.1f}")
    if abs(peaks[0] - peaks[1]) > 1:
        misses.append(f"peak processes {peaks[1]} vs {peaks[0]}")
    if refused[0] == 0 and refused[1] != 0:
        misses.append(f"refused {refused[1]} vs 0")
    return misses


# -- the real server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp: Path, mpm: str, pool: str, port: int) -> Path:
    conf = tmp / "mpmd.conf"
    conf.write_text(
        f"LoadModule mpm_{mpm}_module modules/mod_mpm_{mpm}.so\n"
        + textwrap.dedent(
            f"""\
            ServerRoot "{tmp}"
            Listen 127.0.0.1:{port}
            ServerName localhost
            PidFile "{tmp}/mpmd.pid"
            ErrorLog "{tmp}/error_log"
            LogLevel info
            LogFormat {LOG_FORMAT}
            CustomLog "{tmp}/access_log" timed
            WSGIPythonPath "{APPS}"
            WSGIApp / timed:app
            """
        )
        + textwrap.dedent(pool)
    )
    return conf


def children(pid: int) -> int:
    """Live (not zombie) children of `pid`."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids = f.read().split()
    except OSError:
        return 0
    alive = 0
    for child in pids:
        try:
            with open(f"/proc/{child}/stat") as f:
                alive += f.read().rsplit(") ", 1)[1][0] != "Z"
        except OSError:
            pass
    return alive


class ChildSampler(threading.Thread):
    """The peak number of the server's children, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, children(self.pid))


def wait_until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not within {timeout} s")
        time.sleep(0.02)


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /sleep/0 HTTP/1.0\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


# Where in the server's second the trace starts: a bursty trace's rate steps fall on its whole
# seconds, and a step that coincides with the tick makes the peak a coin toss, in the real
# server (6 or 7 children in five identical runs) and in any plan (a phase fitted 30 ms off
# decides the spawn round). Logs of real traffic have no such alignment.
TRACE_OFF_TICK = 0.5


def run_real(tmp: Path, case: Case, seconds: float) -> tuple[Path, list[Outcome], int]:
    """Start the server, replay the case's trace, stop it: (config, outcomes, peak children)."""
    port = free_port()
    conf = write_config(tmp, case.mpm, case.pool, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpmd", "-f", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: proc.poll() is not None or answers(port), "the server answering")
        # The parent ticks once a second from the moment its first children are forked, and
        # they answer within milliseconds: the first answer marks the tick's phase (to the
        # probe's 20 ms poll).
        answered = time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"mpmd exited with {proc.returncode}: see {tmp}/error_log")
        start = load_config(str(conf)).mpm.start_servers  # the pool the plan starts from
        wait_until(lambda: children(proc.pid) == start, f"{start} children")
        sampler = ChildSampler(proc.pid)
        sampler.start()
        offset = (answered + TRACE_OFF_TICK - time.monotonic()) % 1.0
        shots = [Shot(shot.at + offset, shot.path) for shot in case.trace(seconds)]
        outcomes = replay(f"http://127.0.0.1:{port}", shots)
        sampler.done.set()
        sampler.join()
    finally:
        stop(proc)
    return conf, outcomes, sampler.peak


def stop(proc: subprocess.Popen) -> None:
    """Stop a server this study started, by pid: SIGTERM, then SIGKILL to its group."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def plan_run(conf: Path, access_log: Path) -> Summary:
    """What `mpmctl plan --access-log LOG --config CONF` computes for this run."""
    fmt, origin = resolve_format(config=str(conf), access_log=str(access_log))
    parser = LogParser(fmt, ("time", "service", "client", "keepalive", "queued"), origin)
    parser.require(("time", "service"))
    trace = build_trace(read_access_log(str(access_log), parser).records, parser)
    settings = SimSettings.from_config(load_config(str(conf)), somaxconn())
    return simulate_configs(trace, [settings])[0][0].summary


def compare(case: Case, seconds: float, tmp: Path | None = None) -> Comparison:
    """Run `case` for real for `seconds`, plan its log, and compare."""
    with tempfile.TemporaryDirectory(prefix="plan-accuracy-") as scratch:
        where = tmp or Path(scratch)
        conf, outcomes, peak = run_real(where, case, seconds)
        summary = plan_run(conf, where / "access_log")
    served = sorted(o.latency * 1000 for o in outcomes if o.error is None)
    measured = tuple(percentile(served, q) for q in (0.5, 0.95, 0.99))
    predicted = (summary.p50_ms, summary.p95_ms, summary.p99_ms)
    refused = sum(1 for o in outcomes if o.error is not None)
    misses = tolerance_misses(
        measured, predicted, (peak, summary.peak_processes), (refused, summary.refused)
    )
    late = max((o.late for o in outcomes), default=0.0)
    return Comparison(
        case.name,
        len(outcomes),
        measured,  # type: ignore[arg-type]
        predicted,
        peak,
        summary.peak_processes,
        refused,
        summary.refused,
        late * 1000,
        tuple(misses),
    )


def markdown(rows: list[Comparison], seconds: float) -> str:
    def ms(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.1f}"

    lines = [
        f"Each case ran for {seconds:g} s; latencies in ms, measured at the client "
        "(backlog and worker waits included), predicted by `mpmctl plan` from the run's access "
        "log and configuration.",
        "",
        "| case | requests | p50 measured / planned | p95 measured / planned "
        "| p99 measured / planned | peak processes measured / planned "
        "| refused measured / planned | client late ms | within tolerance |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        cells = [f"{ms(m)} / {ms(p)}" for m, p in zip(r.measured, r.predicted, strict=True)]
        verdict = "yes" if not r.misses else "no: " + "; ".join(r.misses)
        lines.append(
            f"| {r.case} | {r.requests} | {' | '.join(cells)} | {r.peak_measured} / "
            f"{r.peak_predicted} | {r.refused_measured} / {r.refused_predicted} | "
            f"{r.late_ms:.1f} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    ap.add_argument("--seconds", type=float, default=20.0, help="trace length per case")
    ap.add_argument("--out", help="write the markdown table here too")
    args = ap.parse_args()
    rows = []
    for name in args.cases.split(","):
        row = compare(CASES[name], args.seconds)
        print(f"{name}: {'ok' if not row.misses else '; '.join(row.misses)}", file=sys.stderr)
        rows.append(row)
    table = markdown(rows, args.seconds)
    print(table, end="")
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
