"""`mpmctl plan`: an access log replayed through the simulator once per configuration.

This module owns turning access-log records into the simulator's requests (arrival from %t
less mpmd's %{mpmd-queued-ms}n, service from %D / %T scaled by --calibrate's demand factor,
connections from %k and the client), fitting the parent's tick phase to the logged waits, the
per-process and per-thread memory footprint a configuration's peak memory is computed from,
and the report: an aligned table, the assumptions it rests on, or JSON. The live replay behind
--calibrate is tools/replay.py's. The simulation is tools/simulate.py's, the log
format tools/logformats.py's, the plots tools/plan_plots.py's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mpmd.config.model import ServerConfig
from mpmd.tools.accesslog import AccessRecord, LogFormatError, LogParser, read_access_log
from mpmd.tools.logformats import resolve_format
from mpmd.tools.replay import Demand, Shot, fit_demand, replay
from mpmd.tools.sim_report import SimResult, SimSettings
from mpmd.tools.simulate import Request, simulate

# A child of `mpmd` serving a Flask-less hello-world WSGI app (tests/apps/testapp.py) under
# prefork, Python 3.11, measured on the development machine with mpm/memory.read_memory()
# (smaps_rollup's Pss) after one request: 9,100 KiB for each of three children.
DEFAULT_PROCESS_KIB = 9100
# A worker thread's resident cost in a threaded MPM: the touched pages of its stack, its
# Python thread state and a request's buffers. An assumption, not a measurement.
DEFAULT_THREAD_KIB = 64
DEFAULT_SOMAXCONN = 4096  # Linux's default since 5.4, when /proc cannot be read
INSTALL_HINT = "--plots needs matplotlib: pip install 'mpmd[tools]' (or pip install matplotlib)"


@dataclass(frozen=True, slots=True)
class Trace:
    """The requests of a log, and what the log could not tell (said in the report)."""

    requests: list[Request]
    notes: list[str]
    # each request's logged wait on its socket (%{mpmd-queued-ms}n), in seconds, when the log
    # has it and the trace is the logged load (no --scale, no --calibrate): what the tick
    # phase is fitted to
    queued: list[float] | None = None


@dataclass(frozen=True, slots=True)
class Footprint:
    process_kib: float
    thread_kib: float
    source: str  # said in the report


@dataclass(frozen=True, slots=True)
class ConfigPlan:
    """One configuration's result and the numbers derived from it for the report."""

    path: str
    result: SimResult
    footprint: Footprint
    notes: tuple[str, ...] = ()  # the trace's assumptions, repeated in each JSON object

    @property
    def threaded(self) -> bool:
        return self.result.settings.mpm.name != "prefork"

    def memory_kib(self, processes: float, busy: float) -> float:
        """Processes x per-process footprint, plus busy threads x per-thread one (prefork's one
        thread is part of its process)."""
        threads = busy * self.footprint.thread_kib if self.threaded else 0.0
        return processes * self.footprint.process_kib + threads

    def as_dict(self) -> dict[str, object]:
        s = self.result.summary
        return {
            "config": self.path,
            "mpm": self.result.settings.mpm.name,
            "requests": s.requests,
            "served": s.served,
            "p50_ms": s.p50_ms,
            "p95_ms": s.p95_ms,
            "p99_ms": s.p99_ms,
            "max_ms": s.max_ms,
            "mean_ms": s.mean_ms,
            "mean_wait_ms": s.mean_wait_ms,
            "waited": s.waited,
            "refused": s.refused,
            "peak_processes": s.peak_processes,
            "mean_processes": s.mean_processes,
            "peak_busy_threads": s.peak_busy_threads,
            "seconds_at_max_request_workers": s.seconds_at_max,
            "forked": s.forked,
            "peak_memory_kib": round(self.memory_kib(s.peak_processes, s.peak_busy_threads)),
            "process_kib": self.footprint.process_kib,
            "thread_kib": self.footprint.thread_kib if self.threaded else 0,
            "footprint_source": self.footprint.source,
            "assumptions": list(self.notes),
        }


# -- the trace ---------------------------------------------------------------------------------


def build_trace(
    records: Sequence[AccessRecord],
    parser: LogParser,
    scale: float = 1.0,
    demand: Demand | None = None,
) -> Trace:
    """Requests for the simulator, arrivals relative to the first and divided by `scale`,
    service times multiplied by the fitted `demand` factor (--calibrate)."""
    notes = [
        "service times are the logged %D/%T: they include sending the response to slow clients "
        "and were measured at the recorded load"
    ]
    factor = 1.0 if demand is None else demand.factor
    if demand is not None:
        notes.append(
            f"service times multiplied by the demand factor {factor:.3f} fitted by --calibrate: "
            f"{demand.requests} sampled requests took {demand.live_ms:.1f} ms on average on the "
            f"live server against {demand.logged_ms:.1f} ms logged"
        )
    recs = [r for r in records if r.time is not None and r.service is not None]
    arrivals = _arrivals(recs, parser, notes)
    order = sorted(range(len(recs)), key=arrivals.__getitem__)
    t0 = arrivals[order[0]] if order else 0.0
    conns, keep = _connections([recs[k] for k in order], parser)
    if conns is None:
        notes.append(
            "the log has no %k keep-alive count (or no client address): each request is taken "
            "as its own connection"
        )
    else:
        notes.append(
            "connections are rebuilt from %k and the client address; the last logged request of "
            "a connection is taken to close it"
        )
    if scale != 1.0:
        notes.append(f"arrivals replayed at {scale:g}x the logged rate")
    requests = [
        Request(
            (arrivals[k] - t0) / scale,
            recs[k].service * factor,
            None if conns is None else conns[n],
            False if conns is None else keep[n],
        )
        for n, k in enumerate(order)
    ]
    queued = None
    if "queued" in parser.available and scale == 1.0 and demand is None:
        queued = [recs[k].queued or 0.0 for k in order]
    return Trace(requests, notes, queued)


def _arrivals(recs: Sequence[AccessRecord], parser: LogParser, notes: list[str]) -> list[float]:
    """When each request reached the server: its logged start (%t), spread within its second
    when the log has seconds only, less the time it waited on its socket (mpmd's
    %{mpmd-queued-ms}n) before a thread started it; what the log lacks goes into `notes`."""
    arrivals = [r.time for r in recs]
    if parser.time_resolution != "exact":
        arrivals = _spread(arrivals)
        notes.append(
            "the log has arrival times to the second only: each second's arrivals are spread "
            "evenly within it (log %{usec}t or %t with %{msec_frac}t for exact ones)"
        )
    if "queued" in parser.available:
        notes.append(
            "arrivals are the logged start less %{mpmd-queued-ms}n, the wait on the socket "
            "(listen backlog, or a thread) measured by the kernel in its 4 ms steps"
        )
        return [t - (r.queued or 0.0) for t, r in zip(arrivals, recs, strict=True)]
    notes.append(
        "the log has no %{mpmd-queued-ms}n: a request is taken to arrive when it started "
        "(%t), so a wait in the listen backlog or for a thread at the recorded load is not seen"
    )
    return arrivals


def _spread(times: Sequence[float]) -> list[float]:
    """Whole-second stamps spread evenly within their second, in log order."""
    counts: dict[float, int] = defaultdict(int)
    for t in times:
        counts[t] += 1
    seen: dict[float, int] = defaultdict(int)
    out = []
    for t in times:
        j = seen[t]
        seen[t] = j + 1
        out.append(t + (j + 0.5) / counts[t])
    return out


def _connections(
    recs: Sequence[AccessRecord], parser: LogParser
) -> tuple[list[int], list[bool]] | tuple[None, None]:
    """Connection ids and keep-alive flags, in arrival order, from %k (requests earlier on the
    connection) and the client: a request with %k = n continues that client's open connection
    whose last request had n - 1. None when the log has no %k or no client."""
    if not {"keepalive", "client"} <= parser.available:
        return None, None
    ids: list[int] = []
    keep = [False] * len(recs)
    open_conns: dict[tuple[str | None, int], list[tuple[int, int]]] = defaultdict(list)
    next_id = 0
    for n, r in enumerate(recs):
        k = r.keepalive or 0
        waiting = open_conns.get((r.client, k - 1)) if k else None
        if waiting:
            conn, prev = waiting.pop(0)
            keep[prev] = True
        else:
            conn, next_id = next_id, next_id + 1
        ids.append(conn)
        open_conns[(r.client, k)].append((conn, n))
    return ids, keep


# -- the tick's phase --------------------------------------------------------------------------

READY_STEP = 0.01  # the fit's step for when in the second a forked child starts accepting
STARTUPS = (0.005, 0.02, 0.05, 0.1, 0.3)  # seconds from fork to accepting: bare to heavy apps
PHASE_WINDOW = 3_000  # requests the fit replays


def simulate_configs(
    trace: Trace, settings: Sequence[SimSettings]
) -> tuple[list[SimResult], list[str]]:
    """Each configuration simulated over the trace, with the parent's tick at the phase, and
    a new child's start-up time, that reproduce the log's own waits best, and notes saying so.

    When a burst finds the pool full, how long it waits depends on where in the second the
    next tick falls (up to a second at the first spawn) and on how soon the forked child
    accepts; the server's tick phase is its start time's fraction and the start-up time is the
    application's, and the log says neither. Its waits do: under the configuration the log was
    recorded with, at the right phase and start-up, the simulated waits are the logged ones.
    What the waits show most sharply is when new children start accepting (phase + start-up),
    so that is searched first, every READY_STEP, at each configuration; then how it splits
    into phase and start-up. The best names the recording configuration and what all of them
    are simulated with."""
    if trace.queued is None or not any(trace.queued[:PHASE_WINDOW]) or not settings:
        return [simulate(trace.requests, one) for one in settings], []
    window = trace.requests[:PHASE_WINDOW]
    logged = trace.queued[:PHASE_WINDOW]

    def error(n: int, ready: float, startup: float) -> tuple[float, float, float, int]:
        tried = replace(settings[n], tick_phase=(ready - startup) % 1.0, startup=startup)
        waits = simulate(window, tried).wait
        gap = sum(abs(w - q) for w, q in zip(waits, logged, strict=True) if w == w)
        return gap, ready, startup, n

    first = STARTUPS[1]
    best = min(error(n, k * READY_STEP, first) for n in range(len(settings))
               for k in range(round(1 / READY_STEP)))  # fmt: skip
    _, ready, _, n = best
    best = min(best, *(error(n, ready, startup) for startup in STARTUPS if startup != first))
    _, ready, startup, n = best
    phase = (ready - startup) % 1.0
    waits = simulate(window, replace(settings[n], tick_phase=phase, startup=startup)).wait
    gaps = [q - w for w, q in zip(waits, logged, strict=True) if w == w]
    overhead = max(0.0, sum(gaps) / len(gaps)) if gaps else 0.0
    notes = [
        f"the maintenance tick is placed {phase:.3f} s into each second of the trace and a "
        f"forked child accepts {startup:g} s after the tick, the pair at which configuration "
        f"{n + 1} reproduces the logged waits best",
        f"each latency includes {overhead * 1000:.2f} ms the server spent on a request before "
        "starting it outside the model (accepting, reading the head, handing it to a thread): "
        "the mean of the logged waits less the simulated ones",
    ]
    fitted = [
        replace(one, tick_phase=phase, startup=startup, overhead=overhead) for one in settings
    ]
    return [simulate(trace.requests, one) for one in fitted], notes


# -- calibration ------------------------------------------------------------------------------

CALIBRATE_SECONDS = 10.0


def calibrate(
    url: str,
    records: Sequence[AccessRecord],
    parser: LogParser,
    seconds: float = CALIBRATE_SECONDS,
) -> Demand:
    """Replay the log's first `seconds` at its own timing (each request a GET of its logged
    path, on its own connection) against the live server at `url`, and fit the demand factor:
    how much longer the live server takes than the log says (replay.fit_demand)."""
    recs = [r for r in records if r.time is not None and r.service is not None and r.path]
    if not recs:
        raise LogFormatError("--calibrate needs requests with a logged URL path and service time")
    arrivals = _arrivals(recs, parser, [])
    order = sorted(range(len(recs)), key=arrivals.__getitem__)
    t0 = arrivals[order[0]]
    sample = [k for k in order if arrivals[k] - t0 < seconds]
    outcomes = replay(url, [Shot(arrivals[k] - t0, recs[k].path) for k in sample])
    return fit_demand([recs[k].service for k in sample], outcomes)


# -- footprints --------------------------------------------------------------------------------


def footprint(
    config: ServerConfig, process_kib: float | None, thread_kib: float | None
) -> Footprint:
    """Given on the command line, else measured from the running server this config's PidFile
    names (its largest child's PSS: USS plus its share of shared pages), else the default."""
    tk = DEFAULT_THREAD_KIB if thread_kib is None else thread_kib
    thread_note = (
        "no thread term (prefork: a child's one thread is in its footprint)"
        if config.mpm.name == "prefork"
        else f"{tk:g} KiB a thread (given)"
        if thread_kib is not None
        else f"{tk:g} KiB a thread (assumed: touched stack, thread state, buffers)"
    )
    if process_kib is not None:
        return Footprint(process_kib, tk, f"{process_kib:g} KiB a process (given), {thread_note}")
    measured = _live_pss(config)
    if measured is not None:
        pss, pid, n = measured
        return Footprint(
            pss,
            tk,
            f"{pss} KiB a process (largest PSS of {n} children of the running server, pid "
            f"{pid}), {thread_note}",
        )
    return Footprint(
        DEFAULT_PROCESS_KIB,
        tk,
        f"{DEFAULT_PROCESS_KIB} KiB a process (default: a hello-world child's PSS; give "
        f"--process-kib, or run the server for a measured one), {thread_note}",
    )


def _live_pss(config: ServerConfig) -> tuple[int, int, int] | None:
    """(largest child PSS, parent pid, children sampled) from a live server's scoreboard."""
    from mpmd.mpm.scoreboard import Scoreboard, default_path

    try:
        with open(config.pid_file) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:
        board = Scoreboard.attach(config.scoreboard_file or default_path(pid))
    except (OSError, ValueError):
        return None
    try:
        sizes = [p.pss_kib for p in board.snapshot().live_processes() if p.pss_kib > 0]
    finally:
        board.close()
    return (max(sizes), pid, len(sizes)) if sizes else None


def somaxconn() -> int:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return DEFAULT_SOMAXCONN


# -- the report --------------------------------------------------------------------------------

ROWS = (
    ("MPM", lambda d: d["mpm"]),
    ("requests", lambda d: d["requests"]),
    ("p50 ms", lambda d: _ms(d["p50_ms"])),
    ("p95 ms", lambda d: _ms(d["p95_ms"])),
    ("p99 ms", lambda d: _ms(d["p99_ms"])),
    ("max ms", lambda d: _ms(d["max_ms"])),
    ("mean wait ms", lambda d: _ms(d["mean_wait_ms"])),
    ("waited", lambda d: d["waited"]),
    ("refused", lambda d: d["refused"]),
    ("peak processes", lambda d: d["peak_processes"]),
    ("mean processes", lambda d: f"{d['mean_processes']:.1f}"),
    ("peak busy threads", lambda d: d["peak_busy_threads"]),
    ("s at MaxRequestWorkers", lambda d: d["seconds_at_max_request_workers"]),
    ("peak memory KiB", lambda d: f"{d['peak_memory_kib']:,}"),
)


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f}"


def render_text(plans: Sequence[ConfigPlan], notes: Sequence[str], header: Sequence[str]) -> str:
    """A table with one column per configuration, then the assumptions."""
    dicts = [p.as_dict() for p in plans]
    table = [["", *(os.path.basename(p.path) for p in plans)]]
    table += [[label, *(str(get(d)) for d in dicts)] for label, get in ROWS]
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = [*header, ""]
    for row in table:
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    lines += ["", "Assumptions:"]
    lines += [f"- {note}" for note in notes]
    for p in plans:
        lines.append(f"- memory for {p.path}: {p.footprint.source}")
    return "\n".join(lines) + "\n"


def _finite(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def render_json(plans: Sequence[ConfigPlan]) -> str:
    """One object per configuration; NaN and infinities become null (valid JSON)."""
    return json.dumps([{k: _finite(v) for k, v in p.as_dict().items()} for p in plans], indent=2)


# -- the command -------------------------------------------------------------------------------


def _arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mpmctl plan",
        description="Replay an access log's arrivals and service times through a simulation "
        "of each configuration's MPM and report latency, waits, pool size and memory.",
    )
    p.add_argument("--access-log", required=True, metavar="FILE", help="the access log (.gz too)")
    p.add_argument("--log-format", metavar="FMT",
                   help="its LogFormat: a nickname or a format string (default: the first "
                   "config's CustomLog for this file, else detected)")  # fmt: skip
    p.add_argument("--config", action="append", required=True, metavar="FILE",
                   help="a configuration to simulate (repeat to compare)")  # fmt: skip
    p.add_argument("--scale", type=float, default=1.0, metavar="K",
                   help="replay at K times the logged rate (arrival times divided by K)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object per configuration")
    p.add_argument("--plots", metavar="DIR",
                   help="write concurrency, pool size and memory charts (PNG and SVG) to DIR; "
                   "needs matplotlib (pip install 'mpmd[tools]')")  # fmt: skip
    p.add_argument("--process-kib", type=float, metavar="N",
                   help="memory of one child in KiB (default: measured from the running "
                   "server, else a hello-world child's)")  # fmt: skip
    p.add_argument("--calibrate", metavar="URL",
                   help="fit a demand factor for the service times from a short live replay of "
                   "the log's first seconds against the server at URL (http://host:port)")  # fmt: skip
    p.add_argument("--calibrate-seconds", type=float, default=CALIBRATE_SECONDS, metavar="S",
                   help=f"how much of the log --calibrate replays (default {CALIBRATE_SECONDS:g})")  # fmt: skip
    p.add_argument(
        "--thread-kib",
        type=float,
        metavar="N",
        help=f"memory of one busy thread in KiB (default {DEFAULT_THREAD_KIB})",
    )
    return p


def _parser_for(ns: argparse.Namespace, configs: Sequence[tuple[str, ServerConfig]]) -> LogParser:
    """--log-format, else the first config with a CustomLog, else detected."""
    with_log = next((path for path, c in configs
                     if any(v.access_logs for v in (c.main, *c.vhosts))), None)  # fmt: skip
    if ns.log_format:
        fmt, origin = resolve_format(ns.log_format, config=configs[0][0])
    elif with_log is not None:
        fmt, origin = resolve_format(config=with_log, access_log=ns.access_log)
    else:
        fmt, origin = resolve_format(access_log=ns.access_log)
    needs = ("time", "service", "path") if ns.calibrate else ("time", "service")
    parser = LogParser(fmt, (*needs, "client", "keepalive", "queued"), origin)
    parser.require(needs)
    return parser


def plan_main(argv: Sequence[str]) -> int:
    """`mpmctl plan ...`; returns the exit status."""
    from mpmd.config.build import load_config
    from mpmd.config.syntax import ConfigError

    ns = _arguments().parse_args(argv)
    if ns.scale <= 0:
        print("mpmctl plan: --scale must be positive", file=sys.stderr)
        return 2
    if ns.plots:
        from mpmd.tools.plan_plots import have_matplotlib

        if not have_matplotlib():
            print(f"mpmctl plan: {INSTALL_HINT}", file=sys.stderr)
            return 2
    try:
        configs = [(path, load_config(path)) for path in ns.config]
    except ConfigError as err:
        print(f"mpmctl plan: {err}", file=sys.stderr)
        return 1
    try:
        parser = _parser_for(ns, configs)
        parsed = read_access_log(ns.access_log, parser)
    except LogFormatError as err:
        print(f"mpmctl plan: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"mpmctl plan: {ns.access_log}: {err.strerror or err}", file=sys.stderr)
        return 1
    demand = None
    if ns.calibrate:
        try:
            demand = calibrate(ns.calibrate, parsed.records, parser, ns.calibrate_seconds)
        except (LogFormatError, ValueError) as err:
            print(f"mpmctl plan: --calibrate: {err}", file=sys.stderr)
            return 1
        print(
            f"calibrated against {ns.calibrate}: demand factor {demand.factor:.3f} "
            f"({demand.requests} requests, {demand.live_ms:.1f} ms live vs "
            f"{demand.logged_ms:.1f} ms logged)",
            file=sys.stderr,
        )
    trace = build_trace(parsed.records, parser, ns.scale, demand)
    if not trace.requests:
        print(f"mpmctl plan: no requests in {ns.access_log}", file=sys.stderr)
        if parsed.skipped:
            print(parsed.skipped_summary(), file=sys.stderr)
        return 1
    backlog_cap = somaxconn()
    results, phase_notes = simulate_configs(
        trace, [SimSettings.from_config(config, backlog_cap) for _, config in configs]
    )
    trace.notes.extend(phase_notes)
    plans = [
        ConfigPlan(
            path, result, footprint(config, ns.process_kib, ns.thread_kib), tuple(trace.notes)
        )
        for (path, config), result in zip(configs, results, strict=True)
    ]
    if ns.json:
        print(render_json(plans))
    else:
        header = [
            f"{ns.access_log}: {len(trace.requests)} requests, LogFormat {parser.format!r} "
            f"({parser.origin}); somaxconn {backlog_cap}"
        ]
        print(render_text(plans, trace.notes, header), end="")
    if ns.plots:
        from mpmd.tools.plan_plots import write_plots

        for written in write_plots(plans, ns.plots):
            print(f"wrote {written}", file=sys.stderr)
    if parsed.skipped:
        print(parsed.skipped_summary(), file=sys.stderr)
    return 0
