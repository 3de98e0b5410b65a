"""How good `mpmctl advise` is (issue 12's acceptance "advisor quality").

`python -m bench.advise_quality [--seconds N] [--quick] [--workloads cpu,io,memory] [--out F]`
runs, for each of three workloads (bench/quality_apps.py, bench/quality_memory_app.py): a
CPU-bound app, an I/O-bound app that waits, and a memory-heavy app on an emulated small host
(`--memory-budget`):

1. a recording run: Debian's default pool (event, mods-available/mpm_event.conf) with an access
   log carrying %{usec}t and %D, driven by an open-loop Poisson trace (mpmd.tools.replay);
2. `mpmctl advise --app ... --thread-safe yes --access-log THAT_LOG [--memory-budget]`, the
   real command, as JSON;
3. the same trace (same seed) replayed against the advised pool, a grid of 14 pools (prefork
   MaxRequestWorkers 2..64, event 1..4 children x ThreadsPerChild 5 or 25), apache2buddy's rule
   (prefork, MaxRequestWorkers = memory / largest child's RSS) and gunicorn's (2 x cores) + 1
   prefork processes;
4. per run: the client's p50/p95/p99 (a failed request counts as infinitely slow), errors, and
   the peak of the children's summed PSS (sampled from /proc every SAMPLE_S);
5. a markdown report (default bench/results/advise-quality.md; docs/tuning.md quotes it): a
   table per workload and the verdict, advised p95 <= 1.10 x the best p95 among the pools that
   stayed within the memory budget, and the advised pool's planned memory within 0.9 x MemAvailable (or the given budget). When the
   advice misses, the advised and the best pool are run again back to back, twice, to tell noise
   from the rule.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.plan_accuracy import answers, children, free_port, stop, wait_until
from mpmd.config.build import load_config
from mpmd.mpm.memory import read_memory
from mpmd.tools.advise_inputs import read_meminfo
from mpmd.tools.replay import Shot, poisson, replay
from mpmd.tools.sim_report import percentile

BENCH = Path(__file__).resolve().parent
LOG_FORMAT = '%a %l %u %{usec}t "%r" %>s %b %k %D'
SAMPLE_S = 0.25  # how often the children's PSS is summed
TIMEOUT_S = 5.0  # a request not answered by then failed (keeps an overloaded pool's run short)
MARK = 1.10  # advised p95 within 10 % of the best
WARM_S = 3.0  # each run's first seconds at the trace's rate, not scored: pools grow to size
CORES = os.cpu_count() or 1

DEBIAN_EVENT = """\
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 25
MaxRequestWorkers 150
MaxConnectionsPerChild 0
"""


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    app: str  # path/to/file.py:callable, as --app takes it
    rate: float  # requests per second of the Poisson trace
    what: str
    budget_mib: int | None = None  # --memory-budget (emulates a small host)


WORKLOADS = {
    w.name: w
    for w in (
        Workload("cpu", "CPU-bound", f"{BENCH}/quality_apps.py:cpu_app", 70,
                 "spins 8 ms of CPU a request; 70 req/s load the 2 cores about half (with mpmd's own per-request work)"),
        Workload("io", "I/O-bound with waits", f"{BENCH}/quality_apps.py:io_app", 200,
                 "sleeps 100 ms a request; 200 req/s keep about 20 requests in flight"),
        Workload("memory", "memory-heavy", f"{BENCH}/quality_memory_app.py:app", 160,
                 "holds 160 MiB per process from import on and sleeps 50 ms a request; 160 "
                 "req/s keep about 8 in flight; --memory-budget 1536M emulates a small host",
                 budget_mib=1536),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Pool:
    label: str
    mpm: str
    directives: str
    role: str = ""  # "default", "advised", "apache2buddy", "gunicorn", "" (grid)
    maxchildren: int = 0
    threads: int = 1


def prefork(n: int, role: str = "", label: str | None = None) -> Pool:
    """Prefork with MaxRequestWorkers n and Debian's spares (5/10) kept within n."""
    start = min(5, n)
    text = (
        f"StartServers {start}\nMinSpareServers {start}\nMaxSpareServers {max(start + 1, 10)}\n"
        f"ServerLimit {n}\nMaxRequestWorkers {n}\n"
    )
    return Pool(label or f"prefork {n}", "prefork", text, role, n, 1)


def event(children: int, tpc: int) -> Pool:
    """Event with `children` x `tpc` workers and Debian's spares kept within the pool."""
    mrw = children * tpc
    low = min(25, mrw)
    text = (
        f"StartServers {min(2, children)}\nServerLimit {children}\nThreadsPerChild {tpc}\n"
        f"ThreadLimit {tpc}\nMaxRequestWorkers {mrw}\nMinSpareThreads {low}\n"
        f"MaxSpareThreads {max(75, low + tpc + 1)}\n"
    )
    return Pool(f"event {children} x {tpc}", "event", text, "", children, tpc)


def grid(quick: bool) -> list[Pool]:
    if quick:
        return [prefork(2), prefork(8), event(2, 5)]
    pools = [prefork(n) for n in (2, 4, 8, 16, 32, 64)]
    return pools + [event(c, t) for c in (1, 2, 3, 4) for t in (5, 25)]


def advised_pool(advice: dict) -> Pool:
    """The advice's directives (its JSON) as a pool, written as the snippet writes them."""
    d = advice["directives"]
    text = "".join(f"{name} {value}\n" for name, value in d.items())
    threads = int(d.get("ThreadsPerChild", 1))
    return Pool(f"advised: {advice['mpm']} {_shape(d)}", advice["mpm"], text, "advised",
                int(d["ServerLimit"]), threads)  # fmt: skip


def _shape(d: dict) -> str:
    if "ThreadsPerChild" in d:
        return f"{d['ServerLimit']} x {d['ThreadsPerChild']}"
    return str(d["MaxRequestWorkers"])


# -- one real run -----------------------------------------------------------------------------


@dataclass
class Run:
    pool: Pool
    requests: int
    errors: int
    p50: float
    p95: float
    p99: float
    peak_pss_kib: int
    peakchildren: int
    largest_rss_kib: int
    late_ms: float
    load: float  # the 1-minute load average when the run ended (the machine is shared)
    within_budget: bool = True
    notes: list[str] = field(default_factory=list)


class MemorySampler(threading.Thread):
    """Every SAMPLE_S: the children's summed PSS (peak kept), their count, the largest RSS."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_pss = self.peakchildren = self.largest_rss = 0
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.sample()
            if self.done.wait(SAMPLE_S):
                return

    def sample(self) -> None:
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            return
        total = 0
        for pid in pids:
            m = read_memory(pid)
            if m is not None:
                total += m.pss_kib
            self.largest_rss = max(self.largest_rss, _rss_kib(pid))
        self.peak_pss = max(self.peak_pss, total)
        self.peakchildren = max(self.peakchildren, children(self.pid))


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_config(tmp: Path, app: str, pool: Pool, port: int, log: bool) -> Path:
    directory, spec = os.path.split(app)
    module, _, call = spec.partition(":")
    escaped = LOG_FORMAT.replace('"', '\\"')
    text = (
        f"LoadModule mpm_{pool.mpm}_module modules/mod_mpm_{pool.mpm}.so\n"
        f'ServerRoot "{tmp}"\nListen 127.0.0.1:{port}\nServerName localhost\n'
        f'PidFile "{tmp}/mpmd.pid"\nErrorLog "{tmp}/error_log"\nLogLevel warn\n'
        f'WSGIPythonPath "{directory}"\nWSGIApp / {module.removesuffix(".py")}:{call}\n'
        + (f'LogFormat "{escaped}" timed\nCustomLog "{tmp}/access_log" timed\n' if log else "")
        + pool.directives
    )
    conf = tmp / "mpmd.conf"
    conf.write_text(text)
    return conf


def run_pool(
    workload: Workload, pool: Pool, shots: list[Shot], tmp: Path, log: bool, warm: float = 0.0
) -> Run:
    """Start mpmd with `pool`, wait for its StartServers children, replay `shots`, stop it;
    the requests of the first `warm` seconds (the pool growing from StartServers) are not
    scored."""
    port = free_port()
    conf = write_config(tmp, workload.app, pool, port, log)
    proc = subprocess.Popen([sys.executable, "-m", "mpmd", "-f", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: proc.poll() is not None or answers(port), "the server answering", 60)
        if proc.poll() is not None:
            raise RuntimeError(f"mpmd exited with {proc.returncode}: see {tmp}/error_log")
        start = load_config(str(conf)).mpm.start_servers
        wait_until(lambda: children(proc.pid) >= start, f"{start} children", 60)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        outcomes = replay(f"http://127.0.0.1:{port}", shots, timeout=TIMEOUT_S)
        outcomes = [o for o in outcomes if o.shot.at >= warm]
        sampler.done.set()
        sampler.join()
    finally:
        stop(proc)
    latencies = sorted(o.latency * 1000 if o.error is None and o.status == 200 else math.inf
                       for o in outcomes)  # fmt: skip
    p50, p95, p99 = (percentile(latencies, q) for q in (0.5, 0.95, 0.99))
    return Run(pool, len(outcomes), sum(1 for x in latencies if math.isinf(x)), p50, p95, p99,
               sampler.peak_pss, sampler.peakchildren, sampler.largest_rss,
               max((o.late for o in outcomes), default=0.0) * 1000,
               os.getloadavg()[0])  # fmt: skip


# -- the advisor ------------------------------------------------------------------------------


def advise_command(workload: Workload, access_log: Path) -> list[str]:
    """`mpmctl advise` exactly as an administrator would type it for this workload."""
    cmd = ["mpmctl", "advise", "--app", workload.app, "--thread-safe", "yes",
           "--access-log", str(access_log), "--log-format", LOG_FORMAT]  # fmt: skip
    if workload.budget_mib:
        cmd += ["--memory-budget", f"{workload.budget_mib}M"]
    return [*cmd, "--json"]


def run_advisor(workload: Workload, access_log: Path) -> dict:
    cmd = advise_command(workload, access_log)
    python = [sys.executable, "-c", "import sys; from mpmd.cli import mpmctl_main; "
              "sys.exit(mpmctl_main())"]  # fmt: skip
    done = subprocess.run(python + cmd[1:], capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"mpmctl advise failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


# -- a workload -------------------------------------------------------------------------------


@dataclass
class Study:
    workload: Workload
    budget_kib: int
    advice: dict
    runs: list[Run]
    apache2buddy_why: str
    reruns: list[tuple[float, float]] = field(default_factory=list)  # (advised, best) p95

    def advised(self) -> Run:
        return next(r for r in self.runs if r.pool.role == "advised")

    def best(self) -> Run:
        eligible = [r for r in self.runs if r.within_budget and r.pool.role != "advised"]
        return min(eligible, key=lambda r: (r.p95, r.p99))

    def planned_kib(self) -> int:
        return int(self.advice["directives"]["ServerLimit"]) * int(self.advice["child_kib"])

    def medians(self) -> tuple[float, float]:
        """The advised and the best pool's median p95 over the first run and the reruns."""
        adv = [self.advised().p95, *(a for a, _ in self.reruns)]
        best = [self.best().p95, *(b for _, b in self.reruns)]
        return statistics.median(adv), statistics.median(best)

    def verdict(self) -> tuple[bool, bool]:
        """(p95 within MARK of the best, planned and measured memory within the budget). With
        reruns, the medians decide: one run of a pool on a shared machine is one sample, and the
        best of 15 pools' single runs is the luckiest one."""
        adv = self.advised()
        advised_p95, best_p95 = self.medians()
        fast = advised_p95 <= MARK * best_p95
        fits = self.planned_kib() <= self.budget_kib and adv.peak_pss_kib <= self.budget_kib
        return fast, fits


def study(workload: Workload, seconds: float, quick: bool, say) -> Study:
    measured = poisson(workload.rate, seconds, lambda rng: "/", seed=12)
    shots = poisson(workload.rate, WARM_S, lambda rng: "/", seed=13)
    shots += [Shot(s.at + WARM_S, s.path) for s in measured]
    available, _ = read_meminfo()
    budget = workload.budget_mib * 1024 if workload.budget_mib else math.floor(0.9 * available)
    runs: list[Run] = []

    def run(pool: Pool, keep_log: Path | None = None) -> Run:
        with tempfile.TemporaryDirectory(prefix="advise-quality-") as tmp:
            r = run_pool(workload, pool, shots, Path(tmp), keep_log is not None, WARM_S)
            if keep_log is not None:
                shutil.copyfile(Path(tmp) / "access_log", keep_log)
        r.within_budget = r.peak_pss_kib <= budget
        say(f"{workload.name}: {pool.label}: p95 {r.p95:.1f} ms, {r.errors} errors, "
            f"peak PSS {r.peak_pss_kib // 1024} MiB, load {r.load:.1f}")  # fmt: skip
        runs.append(r)
        return r

    with tempfile.TemporaryDirectory(prefix="advise-quality-log-") as keep:
        log_path = Path(keep) / f"access_log.{workload.name}"
        run(Pool("Debian default: event 2..6 x 25", "event", DEBIAN_EVENT, "default", 6, 25),
            log_path)  # fmt: skip
        advice = run_advisor(workload, log_path)
    for pool in grid(quick):
        run(pool)
    rss = max(r.largest_rss_kib for r in runs)
    memory = workload.budget_mib * 1024 if workload.budget_mib else available
    buddy = max(1, memory // rss)
    why = (f"{'--memory-budget' if workload.budget_mib else 'MemAvailable'} {memory} KiB / "
           f"largest child RSS seen {rss} KiB = {buddy}")  # fmt: skip
    run(prefork(buddy, "apache2buddy", f"apache2buddy: prefork {buddy}"))
    run(prefork(2 * CORES + 1, "gunicorn", f"(2 x cores) + 1: prefork {2 * CORES + 1}"))
    run(advised_pool(advice))
    result = Study(workload, budget, advice, runs, why)
    if not quick and not result.verdict()[0]:
        adv, best = result.advised().pool, result.best().pool
        for _ in range(2):  # back to back, twice: noise or the rule?
            a, b = run(adv), run(best)
            result.runs.remove(a)
            result.runs.remove(b)
            result.reruns.append((a.p95, b.p95))
    return result


# -- the report -------------------------------------------------------------------------------


def _ms(v: float) -> str:
    return "failed" if math.isinf(v) else f"{v:.1f}"


def markdown(study: Study) -> str:
    w, adv, best = study.workload, study.advised(), study.best()
    fast, fits = study.verdict()
    d = study.advice["directives"]
    check = study.advice.get("planner") or {}
    lines = [
        f"### {w.title} (`{w.name}`)",
        "",
        f"The application {w.what}. Memory budget {study.budget_kib // 1024} MiB "
        f"({'given with --memory-budget' if w.budget_mib else '0.9 x MemAvailable'}).",
        "",
        f"Advice: **{study.advice['mpm']}**, "
        + ", ".join(f"{k} {v}" for k, v in d.items())
        + f"; one child planned at {study.advice['child_kib'] // 1024} MiB, "
        f"{study.planned_kib() // 1024} MiB for ServerLimit children. "
        f"Concurrency: {study.advice['concurrency_why']}. Planner check: p95 "
        f"{check.get('p95_ms', '-')} ms, {check.get('waited', '-')} waited.",
        "",
        f"apache2buddy's rule: {study.apache2buddy_why}.",
        "",
        "| pool | requests | errors | p50 ms | p95 ms | p99 ms | peak PSS MiB | peak children "
        "| within budget | load | |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in study.runs:
        marks = []
        if r is adv:
            marks.append("**advised**")
        if r is best:
            marks.append("**best**")
        if r.pool.role in ("apache2buddy", "gunicorn", "default"):
            marks.append({"apache2buddy": "rule", "gunicorn": "rule",
                          "default": "recording run"}[r.pool.role])  # fmt: skip
        lines.append(
            f"| {r.pool.label} | {r.requests} | {r.errors} | {_ms(r.p50)} | {_ms(r.p95)} | "
            f"{_ms(r.p99)} | {r.peak_pss_kib / 1024:.0f} | {r.peakchildren} | "
            f"{'yes' if r.within_budget else 'no'} | {r.load:.1f} | {' '.join(marks)} |"
        )
    ratio = adv.p95 / best.p95 if best.p95 and not math.isinf(best.p95) else math.nan
    lines += [
        "",
        f"{'First pass' if study.reruns else 'Verdict'}: advised p95 {_ms(adv.p95)} ms vs best "
        f"within budget ({best.pool.label}) {_ms(best.p95)} ms, ratio {ratio:.2f}: "
        f"**{'within' if ratio <= MARK else 'NOT within'} 10 %**; "
        f"planned memory {study.planned_kib() // 1024} MiB and measured peak "
        f"{adv.peak_pss_kib // 1024} MiB vs budget {study.budget_kib // 1024} MiB: "
        f"**{'within' if fits else 'OVER'}**.",
    ]
    if study.reruns:
        pairs = "; ".join(f"{_ms(a)} vs {_ms(b)}" for a, b in study.reruns)
        advised_p95, best_p95 = study.medians()
        lines += [
            "",
            f"The first pass missed, so the advised and the best pool ran again back to back, "
            f"twice: p95 {pairs} ms. Medians of three: advised {_ms(advised_p95)} ms, best "
            f"{_ms(best_p95)} ms, ratio {advised_p95 / best_p95:.2f}: "
            f"**{'within' if fast else 'NOT within'} 10 %** (the verdict).",
        ]
    return "\n".join(lines) + "\n"


def machine(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    available, total = read_meminfo()
    return (
        f"Machine: {CORES} cores ({platform.processor() or platform.machine()}), MemTotal "
        f"{total // 1024} MiB, MemAvailable {available // 1024} MiB at the end, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}. Shared with "
        f"other engineers' test runs: load average {', '.join(f'{x:.2f}' for x in load_before)}"
        f" before, {', '.join(f'{x:.2f}' for x in load_after)} after."
    )


NOTES = ("<!-- NOTES: hand-written, kept when the report is regenerated -->", "<!-- /NOTES -->")


def kept_notes(old: str) -> str:
    """The hand-written section of the previous report (between the NOTES markers), or empty
    markers to write one in."""
    start, end = old.find(NOTES[0]), old.find(NOTES[1])
    body = old[start + len(NOTES[0]) : end] if 0 <= start < end else "\n"
    return f"\n{NOTES[0]}{body}{NOTES[1]}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="scored trace length per run")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 s traces, 3-pool grid")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="cpu,io,memory")
    ap.add_argument("--out", default="bench/results/advise-quality.md", help="the markdown report")
    args = ap.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    load_before = os.getloadavg()
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {text}", file=sys.stderr, flush=True)

    studies = [study(WORKLOADS[n], seconds, args.quick, say) for n in args.workloads.split(",")]
    argv = " ".join(sys.argv[1:])
    text = "\n".join(
        [
            "## How good is the advice?",
            "",
            f"`python -m bench.advise_quality{' ' + argv if argv else ''}` ({seconds:g} s "
            f"Poisson trace per run, seed 12, replayed open loop after {WARM_S:g} s of warm-up at "
            f"the same rate that are not scored, so every pool has grown from its StartServers; "
            f"{time.monotonic() - started:.0f} s in all). Latencies are the client's, in ms; a request not answered within "
            f"{TIMEOUT_S:g} s failed and counts as infinitely slow. Peak PSS is the children's "
            f"sum sampled every {SAMPLE_S:g} s. A pool is eligible as the best when that peak "
            "stayed within the memory budget. `load` is the 1-minute load average as the run "
            "ended: other engineers' tests share the 2 cores, and a CPU-bound run under a load "
            "of 6 is not the same experiment as under 2.",
            "",
            machine(load_before, os.getloadavg()),
            "",
            *[markdown(s) for s in studies],
        ]
    )
    out = Path(args.out)
    text += kept_notes(out.read_text() if out.exists() else "")
    print(text)
    out.write_text(text)
    missed = [s.workload.name for s in studies if not all(s.verdict())]
    say(f"done: {'all within the marks' if not missed else 'missed: ' + ', '.join(missed)}")


if __name__ == "__main__":
    main()
