"""An open-loop replayer: a trace's requests sent at their scheduled times, latency measured.

This module owns driving a live server with a trace whose timing must be kept: each request
goes out on its own connection at its time, whether or not earlier ones have been answered
(open loop, as real clients arrive), so a slow server builds a queue instead of slowing the
client down. The latency it records is the client's: from just before connect() to the end of
the response, which includes waiting in the listen backlog and for a worker, which the access
log's %D does not. It also builds synthetic traces (Poisson and on/off bursty arrivals) and
fits `mpmctl plan --calibrate`'s demand factor. It never parses logs and never simulates.

One asyncio loop on one thread: a request costs the client a connect, a write and a few reads,
so a few hundred requests a second leave the client far from being the bottleneck; `late` says
how far behind its schedule each request actually went out.
"""

from __future__ import annotations

import asyncio
import math
import random
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shot:
    """One request of a trace: `at` seconds after the start, GET `path`."""

    at: float
    path: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one Shot: latency in seconds (nan when it failed), and `error`."""

    shot: Shot
    latency: float
    status: int
    late: float  # seconds it went out after its scheduled time
    error: str | None = None


def poisson(
    rate: float, duration: float, path: Callable[[random.Random], str], seed: int = 1
) -> list[Shot]:
    """Poisson arrivals at `rate` per second for `duration` seconds; `path` picks each URL."""
    rng = random.Random(seed)
    shots, t = [], rng.expovariate(rate)
    while t < duration:
        shots.append(Shot(t, path(rng)))
        t += rng.expovariate(rate)
    return shots


def bursty(
    low: float,
    high: float,
    period: float,
    duration: float,
    path: Callable[[random.Random], str],
    seed: int = 1,
) -> list[Shot]:
    """On/off arrivals: Poisson at `low` per second, and at `high` for the second half of every
    `period` seconds (a rate step each way; the pool must grow at each step up)."""
    rng = random.Random(seed)
    shots: list[Shot] = []
    half = period / 2
    for k in range(math.ceil(duration / half)):
        end = min((k + 1) * half, duration)
        rate = high if k % 2 else low
        t = k * half + rng.expovariate(rate)
        while t < end:
            shots.append(Shot(t, path(rng)))
            t += rng.expovariate(rate)
    return shots


async def _one(host: str, port: int, shot: Shot, sent: float, timeout: float) -> Outcome:
    request = f"GET {shot.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    begin = loop.time()
    late = begin - sent
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                head = await reader.readline()
                await reader.read()  # Connection: close: the response ends at EOF
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as err:
        return Outcome(shot, math.nan, 0, late, type(err).__name__)
    latency = loop.time() - begin
    parts = head.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return Outcome(shot, latency, status, late, None if status else "no status line")


async def _replay(host: str, port: int, shots: Sequence[Shot], timeout: float) -> list[Outcome]:
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks = []
    for shot in sorted(shots, key=lambda s: s.at):
        due = start + shot.at
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(host, port, shot, due, timeout)))
    return list(await asyncio.gather(*tasks))


def replay(url: str, shots: Sequence[Shot], timeout: float = 30.0) -> list[Outcome]:
    """Send `shots` to the server at `url` (http://host:port) on their schedule; the outcomes
    in the order of `shots` sorted by time."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url}: only http://host[:port] URLs can be replayed against")
    return asyncio.run(_replay(parts.hostname, parts.port or 80, shots, timeout))


@dataclass(frozen=True, slots=True)
class Demand:
    """A fitted demand factor: how much longer (>1) or shorter the live server takes."""

    factor: float
    requests: int  # answered requests the fit used
    live_ms: float  # their mean latency on the live server
    logged_ms: float  # their mean logged service time


def fit_demand(logged: Sequence[float], outcomes: Sequence[Outcome]) -> Demand:
    """The ratio of total live latency to total logged service time over the requests the live
    server answered (`logged[k]` is the service time of `outcomes[k]`'s request). A ratio of
    sums, not a mean of ratios: it is the factor that keeps the total work, which is what
    queueing depends on."""
    pairs = [(s, o.latency) for s, o in zip(logged, outcomes, strict=True) if o.error is None]
    if not pairs:
        raise ValueError("the live server answered none of the calibration requests")
    total_logged = sum(s for s, _ in pairs)
    total_live = sum(x for _, x in pairs)
    if total_logged <= 0:
        raise ValueError("the sampled requests have no logged service time to scale")
    n = len(pairs)
    return Demand(total_live / total_logged, n, total_live / n * 1000, total_logged / n * 1000)
