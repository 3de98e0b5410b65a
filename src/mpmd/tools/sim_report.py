"""What one simulated configuration produced: per-request times, a per-second series, a summary.

The simulator (simulate.py) fills a `SimResult`; `mpmctl plan`'s report, plots and JSON read it.
This module only does arithmetic on finished numbers (percentiles, means, Little's law); it
never simulates and never prints.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from mpmd.config.model import MpmSettings, ServerConfig

TimedLog = tuple[float, str, str, str]  # (simulated time s, level, AH id, message)


@dataclass(frozen=True, slots=True)
class SimSettings:
    """One configuration as the simulator needs it (build it with `from_config`)."""

    mpm: MpmSettings
    keep_alive: bool = True  # KeepAlive
    keep_alive_timeout: float = 5.0  # KeepAliveTimeout, seconds
    max_keep_alive_requests: int = 100  # MaxKeepAliveRequests, 0 = unlimited
    backlog: int = 511  # ListenBacklog capped by net.core.somaxconn (what listen() gets)
    startup: float = 0.05  # seconds from fork until a new child's threads accept
    initial_children: int | None = (
        None  # children running when the trace starts; None = StartServers
    )
    # where in each second of the trace's clock (epoch seconds for a log) the parent's tick
    # falls: the server's is its start time's fraction (plan.py fits it to a log's waits)
    tick_phase: float = 0.0
    # seconds each request spends before it starts outside the model (accepting, reading the
    # head, handing it to a thread): added to its latency, never to a worker's time
    overhead: float = 0.0

    @classmethod
    def from_config(cls, config: ServerConfig, somaxconn: int, **extra: float) -> SimSettings:
        """From mpmd's own ServerConfig (mpmd.config.build.load_config): the pool, the main
        server's keep-alive settings, and ListenBacklog capped by net.core.somaxconn as
        listen(2) caps it (the caller reads /proc/sys/net/core/somaxconn)."""
        http = config.main.http
        return cls(
            config.mpm,
            keep_alive=http.keep_alive,
            keep_alive_timeout=http.keep_alive_timeout,
            max_keep_alive_requests=http.max_keep_alive_requests,
            backlog=min(config.mpm.listen_backlog, somaxconn),
            **extra,  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class Series:
    """One sample per simulated second, taken at the maintenance tick (before it runs).

    processes: live children (stopping ones included); busy: threads serving a request or
    holding a keep-alive connection (mod_status's busy); idle: threads ready for a connection;
    connections: open client connections (event: parked ones included); queue: connections
    waiting in the listen backlog plus (event) requests read and waiting for a thread.
    """

    start: float  # time of the first sample, seconds on the trace's clock
    processes: array
    busy: array
    idle: array
    connections: array
    queue: array


@dataclass(frozen=True, slots=True)
class Summary:
    """The numbers `mpmctl plan` reports for one configuration (times in ms)."""

    requests: int  # requests in the trace
    served: int
    refused: int  # connections refused because the listen backlog was full
    waited: int  # served requests that waited for a worker (wait > 0)
    p50_ms: float  # latency = wait + service, over served requests (nearest rank)
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    mean_wait_ms: float
    peak_processes: int  # exact, not sampled
    mean_processes: float  # over the per-second samples
    peak_busy_threads: int  # exact, not sampled
    forked: int  # children forked during the trace (MaxConnectionsPerChild recycling shows here)
    seconds_at_max: int  # samples with every one of MaxRequestWorkers busy
    duration_s: float  # first arrival to last departure
    mean_in_system: float  # L: requests in the system, integrated over time by the simulator
    little_lambda_w: float  # lambda x W: arrival rate of served requests x mean latency

    @property
    def little_error(self) -> float:
        """Relative gap between L and lambda x W (Little's law says 0)."""
        if not self.little_lambda_w:
            return 0.0
        return abs(self.mean_in_system - self.little_lambda_w) / self.little_lambda_w


@dataclass(frozen=True, slots=True)
class SimResult:
    settings: SimSettings
    wait: array  # seconds per request in trace order; nan when refused
    latency: array  # wait + service, seconds; nan when refused
    series: Series
    summary: Summary
    logs: tuple[TimedLog, ...]  # the maintenance policy's log lines (AH00161 ...) with times


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..1); nan when empty."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(
    settings: SimSettings,
    wait: array,
    latency: array,
    series: Series,
    *,
    peak_processes: int,
    peak_busy: int,
    forked: int,
    area: float,
    first: float,
    last: float,
) -> Summary:
    """The summary of a finished run; `area` is the integral of requests in the system."""
    served = sorted(x for x in latency if x == x)  # nan != nan drops the refused
    waits = [x for x in wait if x == x]
    duration = max(last - first, 0.0)
    mean_latency = sum(served) / len(served) if served else 0.0
    procs = series.processes
    workers = settings.mpm.max_request_workers
    return Summary(
        requests=len(latency),
        served=len(served),
        refused=len(latency) - len(served),
        waited=sum(1 for x in waits if x > 0.0),
        p50_ms=percentile(served, 0.50) * 1000,
        p95_ms=percentile(served, 0.95) * 1000,
        p99_ms=percentile(served, 0.99) * 1000,
        max_ms=(served[-1] if served else math.nan) * 1000,
        mean_ms=mean_latency * 1000,
        mean_wait_ms=(sum(waits) / len(waits) * 1000) if waits else 0.0,
        peak_processes=peak_processes,
        mean_processes=sum(procs) / len(procs) if procs else 0.0,
        peak_busy_threads=peak_busy,
        forked=forked,
        seconds_at_max=sum(1 for b in series.busy if b >= workers),
        duration_s=duration,
        mean_in_system=area / duration if duration else 0.0,
        little_lambda_w=(len(served) / duration * mean_latency) if duration else 0.0,
    )
