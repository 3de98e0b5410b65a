"""Apache's start-up clamping of the MPM pool sizes, with Apache's warning texts.

This module owns the compile-time limits (MAX_SERVER_LIMIT, MAX_THREAD_LIMIT), the
check_config checks of each MPM (reference 2.4) with their AH numbers in start-up and restart
form, the silent *_run() adjustments (reference 2.2, 2.3) and the restart rule that
ServerLimit/ThreadLimit keep their old values.

It is a pure function of directive values: it never reads the configuration tree or files
(config/build.py gathers the values and calls clamp_mpm), and it runs once per start or
restart, never per request.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from mpmd.config.model import MpmName, MpmSettings

# Compile-time limits: MAX_SERVER_LIMIT and MAX_THREAD_LIMIT per MPM.
MAX_SERVER_LIMIT = {"prefork": 200000, "worker": 20000, "event": 20000}
MAX_THREAD_LIMIT = {"worker": 20000, "event": 100000}
# AH number of each check's start-up message; the restart form is the next number.
_AH = {
    "prefork": {"sl_max": 175, "sl_min": 177, "sl_restart": 179, "mrw_sl": 180, "mrw_min": 182,
                "start": 184, "min_spare": 186},
    "worker": {"sl_max": 300, "sl_min": 302, "sl_restart": 304, "tl_max": 305, "tl_min": 307,
               "tl_restart": 309, "tpc_max": 310, "tpc_min": 312, "mrw_tpc": 314,
               "mrw_multiple": 316, "mrw_sl": 318, "start": 320, "min_spare": 322},
    "event": {"sl_max": 497, "sl_min": 499, "sl_restart": 501, "tl_max": 502, "tl_min": 504,
              "tl_restart": 506, "tpc_max": 507, "tpc_min": 509, "mrw_tpc": 511,
              "mrw_multiple": 513, "mrw_sl": 515, "start": 517, "min_spare": 519},
}  # fmt: skip


def clamp_mpm(
    mpm: MpmName, raw: dict[str, Any], *, previous: MpmSettings | None = None
) -> tuple[MpmSettings, list[str]]:
    """Apply Apache's check_config and *_run adjustments; return settings and warnings.

    `raw` maps directive names to configured (or default) values. With `previous` (a restart)
    the warnings take Apache's restart form, and ServerLimit/ThreadLimit keep their old values.
    """
    startup = previous is None
    ids = _AH[mpm]
    warnings: list[str] = []

    def warn(check: str, start_text: str, restart_text: str) -> None:
        number = ids[check] + (0 if startup else 1)
        text = f"WARNING: {start_text}" if startup else restart_text
        warnings.append(f"AH{number:05d}: {text}")

    def restart_only(check: str, text: str) -> None:
        warnings.append(f"AH{ids[check]:05d}: {text}")

    server_limit = int(raw["ServerLimit"])
    max_sl = MAX_SERVER_LIMIT[mpm]
    if server_limit > max_sl:
        warn("sl_max",
             f"ServerLimit of {server_limit} exceeds compile-time limit of {max_sl} servers, "
             f"decreasing to {max_sl}.",
             f"ServerLimit of {server_limit} exceeds compile-time limit of {max_sl}, "
             "decreasing to match")  # fmt: skip
        server_limit = max_sl
    elif server_limit < 1:
        warn("sl_min", f"ServerLimit of {server_limit} not allowed, increasing to 1.",
             f"ServerLimit of {server_limit} not allowed, increasing to 1")  # fmt: skip
        server_limit = 1
    if previous is not None and server_limit != previous.server_limit:
        restart_only("sl_restart", f"changing ServerLimit to {server_limit} from original value "
                     f"of {previous.server_limit} not allowed during restart")  # fmt: skip
        server_limit = previous.server_limit

    buckets = listen_buckets(int(raw.get("ListenCoresBucketsRatio", 0)))
    if previous is not None and buckets != previous.listen_buckets:
        warnings.append(f"MP00271: keeping {previous.listen_buckets} listener bucket(s): "
                        "ListenCoresBucketsRatio takes effect when mpmd is stopped and started "
                        "(a restart never re-binds the listeners)")  # fmt: skip
        buckets = previous.listen_buckets

    start = int(raw["StartServers"])
    if mpm == "prefork":
        return _clamp_prefork(raw, server_limit, start, warn, buckets), warnings

    thread_limit = int(raw["ThreadLimit"])
    max_tl = MAX_THREAD_LIMIT[mpm]
    if thread_limit > max_tl:
        warn("tl_max",
             f"ThreadLimit of {thread_limit} exceeds compile-time limit of {max_tl} threads, "
             f"decreasing to {max_tl}.",
             f"ThreadLimit of {thread_limit} exceeds compile-time limit of {max_tl}, "
             "decreasing to match")  # fmt: skip
        thread_limit = max_tl
    elif thread_limit < 1:
        warn("tl_min", f"ThreadLimit of {thread_limit} not allowed, increasing to 1.",
             f"ThreadLimit of {thread_limit} not allowed, increasing to 1")  # fmt: skip
        thread_limit = 1
    if previous is not None and thread_limit != previous.thread_limit:
        restart_only("tl_restart", f"changing ThreadLimit to {thread_limit} from original value "
                     f"of {previous.thread_limit} not allowed during restart")  # fmt: skip
        thread_limit = previous.thread_limit

    tpc = int(raw["ThreadsPerChild"])
    if tpc > thread_limit:
        warn("tpc_max",
             f"ThreadsPerChild of {tpc} exceeds ThreadLimit of {thread_limit} threads, "
             f"decreasing to {thread_limit}. To increase, please see the ThreadLimit directive.",
             f"ThreadsPerChild of {tpc} exceeds ThreadLimit of {thread_limit}, decreasing to "
             "match")  # fmt: skip
        tpc = thread_limit
    elif tpc < 1:
        warn("tpc_min", f"ThreadsPerChild of {tpc} not allowed, increasing to 1.",
             f"ThreadsPerChild of {tpc} not allowed, increasing to 1")  # fmt: skip
        tpc = 1

    workers = int(raw["MaxRequestWorkers"])
    if workers < tpc:
        warn("mrw_tpc",
             f"MaxRequestWorkers of {workers} is less than ThreadsPerChild of {tpc}, increasing "
             f"to {tpc}. MaxRequestWorkers must be at least as large as the number of threads "
             "in a single server.",
             f"MaxRequestWorkers of {workers} is less than ThreadsPerChild of {tpc}, increasing "
             "to match")  # fmt: skip
        workers = tpc
    daemons = workers // tpc
    if workers % tpc:
        rounded = daemons * tpc
        warn("mrw_multiple",
             f"MaxRequestWorkers of {workers} is not an integer multiple of ThreadsPerChild of "
             f"{tpc}, decreasing to nearest multiple {rounded}, for a maximum of {daemons} "
             "servers.",
             f"MaxRequestWorkers of {workers} is not an integer multiple of ThreadsPerChild of "
             f"{tpc}, decreasing to nearest multiple {rounded}")  # fmt: skip
        workers = rounded
    if daemons > server_limit:
        warn("mrw_sl",
             f"MaxRequestWorkers of {workers} would require {daemons} servers and would exceed "
             f"ServerLimit of {server_limit}, decreasing to {server_limit * tpc}. To increase, "
             "please see the ServerLimit directive.",
             f"MaxRequestWorkers of {workers} would require {daemons} servers and exceed "
             f"ServerLimit of {server_limit}, decreasing to {server_limit * tpc}")  # fmt: skip
        daemons = server_limit
        workers = server_limit * tpc
    if start < 1:
        warn("start", f"StartServers of {start} not allowed, increasing to 1.",
             f"StartServers of {start} not allowed, increasing to 1")  # fmt: skip
        start = 1
    min_spare = int(raw["MinSpareThreads"])
    if min_spare < 1:
        warn("min_spare",
             f"MinSpareThreads of {min_spare} not allowed, increasing to 1 to avoid almost "
             "certain server failure. Please read the documentation.",
             f"MinSpareThreads of {min_spare} not allowed, increasing to 1")  # fmt: skip
        min_spare = 1
    # worker_run()/event_run(): silent adjustments for `b` listener buckets.
    b = buckets
    start = min(max(start, b), daemons)
    min_spare = max(min_spare, tpc * (b - 1) + b)
    max_spare = max(int(raw["MaxSpareThreads"]), min_spare + (tpc + 1) * b)
    return MpmSettings(
        name=mpm, start_servers=start, min_spare_servers=0, max_spare_servers=0,
        min_spare_threads=min_spare, max_spare_threads=max_spare, threads_per_child=tpc,
        thread_limit=thread_limit, server_limit=server_limit, max_request_workers=workers,
        listen_buckets=b, **_common(raw),
    ), warnings  # fmt: skip


def _clamp_prefork(raw: dict[str, Any], server_limit: int, start: int, warn, b: int) -> MpmSettings:
    workers = int(raw["MaxRequestWorkers"])
    if workers > server_limit:
        warn("mrw_sl",
             f"MaxRequestWorkers of {workers} exceeds ServerLimit value of {server_limit} "
             f"servers, decreasing MaxRequestWorkers to {server_limit}. To increase, please see "
             "the ServerLimit directive.",
             f"MaxRequestWorkers of {workers} exceeds ServerLimit value of {server_limit}, "
             "decreasing to match")  # fmt: skip
        workers = server_limit
    elif workers < 1:
        warn("mrw_min", f"MaxRequestWorkers of {workers} not allowed, increasing to 1.",
             f"MaxRequestWorkers of {workers} not allowed, increasing to 1")  # fmt: skip
        workers = 1
    if start < 1:
        warn("start", f"StartServers of {start} not allowed, increasing to 1.",
             f"StartServers of {start} not allowed, increasing to 1")  # fmt: skip
        start = 1
    min_spare = int(raw["MinSpareServers"])
    if min_spare < 1:
        warn("min_spare",
             f"MinSpareServers of {min_spare} not allowed, increasing to 1 to avoid almost "
             "certain server failure. Please read the documentation.",
             f"MinSpareServers of {min_spare} not allowed, increasing to 1")  # fmt: skip
        min_spare = 1
    # prefork_run(): silent adjustments for `b` listener buckets.
    workers, start, min_spare = max(workers, b), max(start, b), max(min_spare, b)
    max_spare = max(int(raw["MaxSpareServers"]), min_spare + b)
    return MpmSettings(
        name="prefork", start_servers=min(start, workers), min_spare_servers=min_spare,
        max_spare_servers=max_spare, min_spare_threads=0, max_spare_threads=0,
        threads_per_child=1, thread_limit=1, server_limit=server_limit,
        max_request_workers=workers, listen_buckets=b, **_common(raw),
    )  # fmt: skip


def _common(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "max_connections_per_child": int(raw["MaxConnectionsPerChild"]),
        "async_request_worker_factor": float(raw.get("AsyncRequestWorkerFactor", 2.0)),
        "graceful_shutdown_timeout": int(raw["GracefulShutdownTimeout"]),
        "listen_backlog": int(raw["ListenBacklog"]),
        "max_memory_per_child": int(raw["MaxMemoryPerChild"]),
    }


def listen_buckets(ratio: int, cores: int | None = None) -> int:
    """ListenCoresBucketsRatio: online cores / ratio buckets, at least 1; 1 when the ratio is
    0 (off) or the system has no SO_REUSEPORT, which every bucket but one needs."""
    if ratio <= 0 or not hasattr(socket, "SO_REUSEPORT"):
        return 1
    return max(1, (cores or os.cpu_count() or 1) // ratio)
