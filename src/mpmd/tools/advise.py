"""`mpmctl advise`: a recommended MPM and pool, from a running server or a probe of the app.

This module owns the command and the planner's check: it gathers the inputs (advise_inputs.py
from a running server's scoreboard, /proc and logs; advise_probe.py from a short-lived probe of
`--app`), asks advise_core.py for the advice, and, when an access log with %D gives a trace,
replays the trace through the advised configuration with the simulator `mpmctl plan` uses
(tools/simulate.py). Refused connections or time at MaxRequestWorkers raise MaxRequestWorkers,
many waits raise the spare workers, each step said in the output, all within the memory
budget. It prints advise_render.py's snippet or JSON; an application that does not fit in
memory gets no configuration and exit status 1.

For scripts: `advise(inputs)` (advise_core) then `check_advice(advice, inputs, requests)`;
`snippet_warnings(text, mpm)` is what `mpmd -t` would warn about a snippet.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
from collections.abc import Sequence

from mpmd.config.model import ServerConfig
from mpmd.tools.accesslog import LogFormatError
from mpmd.tools.advise_core import Advice, ChildCost, Inputs, Memory, advise, cpu_workers
from mpmd.tools.advise_inputs import (
    LogTraffic,
    access_log_of,
    core_count,
    error_patterns,
    log_traffic,
    read_meminfo,
    snapshot_inputs,
)
from mpmd.tools.advise_render import render_json, render_text
from mpmd.tools.plan import somaxconn
from mpmd.tools.sim_report import SimSettings
from mpmd.tools.simulate import Request, simulate

PROG = "mpmctl advise"
MAX_ROUNDS = 5  # planner checks before the advice stands as it is
WAITED_SHARE = 0.01  # more requests than this waiting for a worker raise the spare workers


class AdviseError(Exception):
    """A reason the advice cannot be given (printed as `mpmctl advise: ...`, exit 1)."""


# -- the planner's check ------------------------------------------------------------------------


def advice_config(advice: Advice, snippet: str | None = None) -> ServerConfig:
    """The advised pool as mpmd builds it: the snippet after a LoadModule for its MPM."""
    from mpmd.config.build import load_config

    text = snippet if snippet is not None else render_text(advice, "the planner's check")
    with tempfile.TemporaryDirectory(prefix="mpmd-advise-") as tmp:
        path = os.path.join(tmp, "advice.conf")
        with open(path, "w") as f:
            f.write(f"LoadModule mpm_{advice.mpm}_module modules/mod_mpm_{advice.mpm}.so\n"
                    f"Listen 127.0.0.1:80\n{text}")  # fmt: skip
        return load_config(path)


def snippet_warnings(text: str, mpm: str) -> list[str]:
    """What `mpmd -t` prints about the snippet (clamps: AH00513 ...); [] when clean."""
    advice = Advice(mpm, "", 0, "", 0, "", "", [], [])
    return list(advice_config(advice, text).warnings)


def _simulate(advice: Advice, requests: Sequence[Request], backlog_cap: int, trace: str) -> dict:
    result = simulate(requests, SimSettings.from_config(advice_config(advice), backlog_cap))
    s = result.summary
    return {
        "trace": trace,
        "requests": s.requests,
        "p50_ms": round(s.p50_ms, 1),
        "p95_ms": round(s.p95_ms, 1),
        "p99_ms": round(s.p99_ms, 1),
        "waited": s.waited,
        "refused": s.refused,
        "seconds_at_max_request_workers": s.seconds_at_max,
        "peak_processes": s.peak_processes,
        "peak_busy_threads": s.peak_busy_threads,
        "peak_memory_kib": s.peak_processes * advice.child_kib,
        "budget_kib": advice.budget_kib,
    }


def check_advice(
    advice: Advice,
    inputs: Inputs,
    requests: Sequence[Request],
    *,
    trace: str = "the trace",
    backlog_cap: int | None = None,
) -> Advice:
    """Replay `requests` through the advice; while it refuses, sits at MaxRequestWorkers or
    makes many requests wait, advise again with more workers or spares (never past the
    memory budget). Returns the final advice with `check` set and the steps in
    `adjustments`."""
    cap = somaxconn() if backlog_cap is None else backlog_cap
    steps: list[str] = []
    min_workers = min_spare = 0
    for _ in range(MAX_ROUNDS):
        check = _simulate(advice, requests, cap, trace)
        mrw = int(advice.value("MaxRequestWorkers"))
        short = check["refused"] or check["seconds_at_max_request_workers"]
        if short:
            min_workers = math.ceil(mrw * 1.5)
            why = (f"the planner saw {check['refused']} refused and "
                   f"{check['seconds_at_max_request_workers']} s at MaxRequestWorkers {mrw}")  # fmt: skip
        elif check["waited"] > WAITED_SHARE * check["requests"]:
            spare = _spare_of(advice)
            min_spare = spare * 2
            why = (f"the planner saw {check['waited']} of {check['requests']} requests wait "
                   f"for a worker with {spare} spare")  # fmt: skip
        else:
            break
        better = advise(inputs, min_workers=min_workers, min_spare=min_spare)
        if better.directives() == advice.directives():
            limit = "memory" if cpu_workers(inputs) is None else "memory or the CPU"
            advice.notes.append(f"{why}, and {limit} allows no more")
            break
        steps.append(f"{why}: MaxRequestWorkers {mrw} -> {better.value('MaxRequestWorkers')}, "
                     f"spare {_spare_of(advice)} -> {_spare_of(better)}")  # fmt: skip
        advice = better
    else:
        check = _simulate(advice, requests, cap, trace)
    advice.check = check
    advice.adjustments = steps
    if check["peak_memory_kib"] > advice.budget_kib:
        advice.notes.append(
            f"the planner's peak of {check['peak_processes']} processes (stopping ones "
            f"included) x {advice.child_kib} KiB exceeds the budget for a moment"
        )
    return advice


def _spare_of(advice: Advice) -> int:
    name = "MinSpareServers" if advice.mpm == "prefork" else "MinSpareThreads"
    return int(advice.value(name))


# -- gathering the inputs -----------------------------------------------------------------------


def live_inputs(
    config: ServerConfig,
    *,
    thread_safe: bool | None = None,
    reserve_kib: int = 0,
    budget_kib: int | None = None,
) -> Inputs:
    """Inputs from the server this configuration's PidFile names (AdviseError if none runs)."""
    from mpmd.mpm.scoreboard import Scoreboard, default_path

    try:
        with open(config.pid_file) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        raise AdviseError(
            f"no running server (PidFile {config.pid_file}): start it, or measure the "
            "application offline with --app module:callable"
        ) from None
    path = config.scoreboard_file or default_path(pid)
    try:
        board = Scoreboard.attach(path)
    except (OSError, ValueError) as err:
        raise AdviseError(f"cannot read the scoreboard {path}: {err}") from None
    try:
        snap = board.snapshot()
    finally:
        board.close()
    try:
        return snapshot_inputs(
            config, snap, thread_safe=thread_safe, reserve_kib=reserve_kib, budget_kib=budget_kib
        )
    except ValueError as err:
        raise AdviseError(f"{err}: try again in a second") from None


def with_logs(
    inputs: Inputs, config: ServerConfig | None, access_log: str | None, log_format: str | None
) -> tuple[Inputs, LogTraffic | None]:
    """Inputs with the ErrorLog's patterns and the access log's traffic (which replaces the
    history's rate and service time, keeping its peaks), and the trace for the planner."""
    notes = list(inputs.notes)
    patterns = inputs.error_patterns
    if (
        config is not None
        and config.main.error_log not in ("stderr", "")
        and not (config.main.error_log.startswith(("|", "syslog")))
    ):
        try:
            patterns = error_patterns(config.main.error_log)
        except OSError as err:
            notes.append(f"ErrorLog {config.main.error_log} not read: {err.strerror}")
    path = access_log or (access_log_of(config) if config is not None else None)
    logged = None
    traffic = inputs.traffic
    if path is not None:
        try:
            logged = log_traffic(path, config=None if access_log else config.config_file or None,
                                 log_format=log_format)  # fmt: skip
        except (LogFormatError, OSError) as err:
            if access_log:
                raise AdviseError(f"{path}: {getattr(err, 'strerror', None) or err}") from None
            notes.append(f"access log {path} not used: {err}")
    if logged is not None:
        notes += logged.notes
        history = inputs.traffic
        traffic = logged.traffic
        if history is not None:
            traffic = dataclasses.replace(traffic, peak_busy=history.peak_busy,
                                          peak_connections=history.peak_connections)  # fmt: skip
    inputs = dataclasses.replace(
        inputs, traffic=traffic, error_patterns=patterns, notes=tuple(notes)
    )
    return inputs, logged


def offline_inputs(
    app: str, *, thread_safe: bool | None, reserve_kib: int, budget_kib: int | None
) -> Inputs:
    from mpmd.tools.advise_probe import ProbeError, probe

    try:
        result = probe(app, thread_safe=bool(thread_safe))
    except ProbeError as err:
        raise AdviseError(f"--app {app}: {err}") from None
    available, total = read_meminfo()
    cost: ChildCost = result.cost
    return Inputs(
        memory=Memory(available, total, 0, reserve_kib, budget_kib),
        cost=cost,
        thread_safe=bool(thread_safe),
        thread_safe_source="given" if thread_safe is not None else "not stated: --thread-safe",
        cores=core_count(),
        cpu=(result.cpu_ms, result.service_ms),
        asgi=result.asgi,
        notes=(
            f"the probe's GET / took {result.service_ms:.2g} ms unloaded, "
            f"{result.cpu_ms:.2g} ms of it on a CPU",
        ),
    )


def live_advice_text(config: ServerConfig, snap) -> str:
    """The advice from one scoreboard copy (the parent's memory samples) and /proc/meminfo
    only: no logs, no planner, no walk of the children's page tables. What the status page's
    `?advice` shows."""
    try:
        inputs = snapshot_inputs(config, snap, fresh=False)
    except (OSError, ValueError) as err:
        return f"# mpmctl advise: no advice yet: {err}\n"
    advice = advise(inputs)
    advice.check = {"skipped": "not run on the status page: run mpmctl advise with the access "
                    "log to replay it through the planner"}  # fmt: skip
    return render_text(advice, "the running server (status page: scoreboard and /proc only)")


# -- the command --------------------------------------------------------------------------------


def _size_kib(text: str) -> int:
    from mpmd.config.validators import DirectiveValueError, v_size

    try:
        return v_size("size", (text,)) // 1024
    except DirectiveValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 512M") from None


def _yes_no(text: str) -> bool:
    if text.lower() not in ("yes", "no"):
        raise argparse.ArgumentTypeError("say yes or no")
    return text.lower() == "yes"


def _arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Recommend an MPM and every pool directive from measured memory and "
        "traffic, as a configuration snippet whose comments show the arithmetic.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("-f", dest="file", metavar="CONFIG",
                        help="the running server's configuration (default: mpmd's built-in)")  # fmt: skip
    source.add_argument("--app", metavar="MODULE:CALLABLE",
                   help="measure this application offline in a probe server instead "
                   "(module:callable or path/to/file.py:callable)")  # fmt: skip
    p.add_argument("--thread-safe", type=_yes_no, metavar="yes|no",
                   help="whether the application may run in threads (default: assumed from "
                   "the running MPM; offline: no)")  # fmt: skip
    p.add_argument("--access-log", metavar="FILE",
                   help="an access log with %%D (or %%T) for the rate, service times and the "
                   "planner's check (default: the config's CustomLog when it logs %%D)")  # fmt: skip
    p.add_argument("--log-format", metavar="FMT", help="its LogFormat (nickname or format)")
    p.add_argument("--memory-budget", type=_size_kib, metavar="SIZE",
                   help="memory the pool may use (K/M/G), instead of 0.9 x MemAvailable")  # fmt: skip
    p.add_argument("--reserve", type=_size_kib, default=0, metavar="SIZE",
                   help="memory to leave free for other processes' growth (K/M/G)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the advice as JSON")
    return p


def advise_main(argv: Sequence[str]) -> int:
    """`mpmctl advise ...`; returns the exit status."""
    from mpmd.config.build import load_config
    from mpmd.config.syntax import ConfigError

    ns = _arguments().parse_args(argv)
    config = None
    try:
        if ns.app:
            inputs = offline_inputs(ns.app, thread_safe=ns.thread_safe, reserve_kib=ns.reserve,
                                    budget_kib=ns.memory_budget)  # fmt: skip
            source = f"{ns.app} (probe)"
        else:
            config = load_config(ns.file)
            inputs = live_inputs(config, thread_safe=ns.thread_safe, reserve_kib=ns.reserve,
                                 budget_kib=ns.memory_budget)  # fmt: skip
            source = f"the server of {config.config_file or 'the built-in configuration'}"
        inputs, logged = with_logs(inputs, config, ns.access_log, ns.log_format)
    except (AdviseError, ConfigError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    advice = advise(inputs)
    if advice.fits and inputs.asgi:  # the planner models threads as the workers: not ASGI's
        advice.check = {"skipped": "the planner does not model an ASGI application's loops"}
    elif advice.fits and logged is not None:
        name = os.path.basename(ns.access_log or access_log_of(config) or "the access log")
        advice = check_advice(advice, inputs, logged.requests, trace=name)
    elif advice.fits:
        advice.check = {"skipped": "no trace to replay: give --access-log FILE with %D"}
    if ns.json:
        print(render_json(advice, inputs))
    elif advice.fits:
        print(render_text(advice, source), end="")
    if not advice.fits:
        if not ns.json:
            print(render_text(advice, source), end="", file=sys.stderr)
        return 1
    return 0
