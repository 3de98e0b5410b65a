"""The planner's simulator (mpmd.tools.simulate) against queueing theory and the server's rules.

A fixed pool with Poisson arrivals and exponential service is an M/M/c queue: Erlang C gives
P(wait) and the mean wait in closed form, and with a bounded listen backlog it is M/M/c/K,
whose blocking probability is closed form too. Pool growth must follow maintenance.py's
decisions (1, 2, 4, 8 ... children a tick), and event's connection cap event_limit.py's rule.
Little's law (L = lambda x W) is checked on every result.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from mpmd.config.build import load_config
from mpmd.config.model import MpmSettings
from mpmd.mpm.event_accept import REUSE_PROBE_SECONDS
from mpmd.tools.sim_report import SimResult, SimSettings
from mpmd.tools.simulate import Request, simulate


def erlang_c(c: int, rate: float, mu: float) -> tuple[float, float]:
    """M/M/c: (P(wait), mean wait in s). a = rate/mu offered load; needs a < c.

    P(wait) = (a^c/c! * c/(c-a)) / (sum_{k<c} a^k/k! + a^c/c! * c/(c-a));
    mean wait = P(wait) / (c*mu - rate)."""
    a = rate / mu
    top = a**c / math.factorial(c) * c / (c - a)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return p_wait, p_wait / (c * mu - rate)


def mmck_blocking(c: int, k: int, rate: float, mu: float) -> float:
    """M/M/c/K: the probability that an arrival finds K in the system and is lost.

    p_n = a^n/n! p_0 for n <= c, a^c/c! (a/c)^(n-c) p_0 for c < n <= K."""
    a = rate / mu
    weights = [a**n / math.factorial(n) for n in range(c + 1)]
    weights += [weights[c] * (a / c) ** (n - c) for n in range(c + 1, k + 1)]
    return weights[k] / sum(weights)


def poisson_trace(n: int, rate: float, mu: float, seed: int) -> list[Request]:
    rnd = random.Random(seed)
    t = 0.0
    out = []
    for _ in range(n):
        t += rnd.expovariate(rate)
        out.append(Request(t, rnd.expovariate(mu)))
    return out


def realised(trace: list[Request]) -> tuple[float, float]:
    """The trace's own arrival rate and service rate: the closed forms are evaluated at them,
    which removes the part of the sampling error that is only the trace's load being off."""
    return len(trace) / trace[-1].arrival, len(trace) / sum(r.service for r in trace)


def prefork(c: int, **overrides: object) -> MpmSettings:
    """A prefork pool that never changes: c children, all of MaxRequestWorkers and ServerLimit,
    MaxSpareServers above c (no retirement), no free slot to spawn into."""
    values: dict[str, object] = dict(
        name="prefork", start_servers=c, min_spare_servers=1, max_spare_servers=c + 1,
        min_spare_threads=1, max_spare_threads=2, threads_per_child=1, thread_limit=1,
        server_limit=c, max_request_workers=c, max_connections_per_child=0,
        async_request_worker_factor=2.0, graceful_shutdown_timeout=0, listen_backlog=511,
        max_memory_per_child=0,
    )  # fmt: skip
    values.update(overrides)
    return MpmSettings(**values)  # type: ignore[arg-type]


def threaded(name: str, **overrides: object) -> MpmSettings:
    values: dict[str, object] = dict(
        name=name, start_servers=1, min_spare_servers=5, max_spare_servers=10,
        min_spare_threads=75, max_spare_threads=250, threads_per_child=25, thread_limit=64,
        server_limit=16, max_request_workers=400, max_connections_per_child=0,
        async_request_worker_factor=2.0, graceful_shutdown_timeout=0, listen_backlog=511,
        max_memory_per_child=0,
    )  # fmt: skip
    values.update(overrides)
    return MpmSettings(**values)  # type: ignore[arg-type]


def run(requests, settings: SimSettings) -> SimResult:
    """simulate(), with Little's law checked on every report."""
    result = simulate(requests, settings)
    summary = result.summary
    assert summary.served + summary.refused == summary.requests == len(requests)
    if summary.served:
        assert summary.little_error < 0.01, (summary.mean_in_system, summary.little_lambda_w)
    return result


def rel(measured: float, expected: float) -> float:
    return abs(measured - expected) / expected


# -- queueing theory: a fixed pool of c workers ------------------------------------------------

# 10^6 requests as the issue asks, the closed forms at the trace's realised rates. Over seeds
# 1-8 and 12 the relative errors had a standard deviation of 0.24 % for P(wait) (at most
# 0.38 %) and 0.55 % for the mean wait (at most 1.45 %: a wait's heavy tail), and M/M/c/K
# blocking 0.55 % (at most 1.1 %), so the 2 % holds with room.
N_THEORY = 1_000_000


@pytest.mark.slow
def test_fixed_pool_matches_erlang_c() -> None:
    c = 4  # offered 2.4 (utilisation 0.6, P(wait) = 0.287)
    trace = poisson_trace(N_THEORY, 24.0, 10.0, seed=12)
    settings = SimSettings(prefork(c), keep_alive=False, backlog=1_000_000)
    summary = run(trace, settings).summary
    p_wait, mean_wait = erlang_c(c, *realised(trace))
    assert summary.refused == 0
    assert rel(summary.waited / summary.served, p_wait) < 0.02
    assert rel(summary.mean_wait_ms / 1000, mean_wait) < 0.02
    assert summary.peak_processes == c and summary.forked == 0


@pytest.mark.slow
def test_bounded_backlog_matches_mmck_blocking() -> None:
    # ListenBacklog b holds b + 1 connections (Linux's accept queue), so K = c + b + 1
    c, backlog = 4, 3  # offered load 4 = c
    trace = poisson_trace(N_THEORY, 40.0, 10.0, seed=7)
    summary = run(trace, SimSettings(prefork(c), keep_alive=False, backlog=backlog)).summary
    blocking = mmck_blocking(c, c + backlog + 1, *realised(trace))
    assert rel(summary.refused / summary.requests, blocking) < 0.02


def test_small_fixed_pool_is_near_erlang_c() -> None:
    """The quick version: 40,000 requests, seed fixed. The spread above grows by
    sqrt(10^6 / 40,000) = 5: about 1.2 % for P(wait) and 2.8 % for the mean wait, so 10 %."""
    c = 4
    trace = poisson_trace(40_000, 24.0, 10.0, seed=3)
    summary = run(trace, SimSettings(prefork(c), keep_alive=False, backlog=100_000)).summary
    p_wait, mean_wait = erlang_c(c, *realised(trace))
    assert rel(summary.waited / summary.served, p_wait) < 0.10
    assert rel(summary.mean_wait_ms / 1000, mean_wait) < 0.10


def test_theory_formulas() -> None:
    """The closed forms themselves, on textbook values (M/M/1: P(wait) = rho, W = rho/(mu-l))."""
    p_wait, mean_wait = erlang_c(1, 8.0, 10.0)
    assert p_wait == pytest.approx(0.8) and mean_wait == pytest.approx(0.4)
    assert erlang_c(2, 1.0, 1.0)[0] == pytest.approx(1 / 3)
    assert mmck_blocking(1, 1, 1.0, 1.0) == pytest.approx(0.5)  # M/M/1/1: a/(1+a)


# -- the pool grows as maintenance.py decides ---------------------------------------------------


def burst(n: int, at: float = 0.5, service: float = 1000.0) -> list[Request]:
    """n long requests at once: every child forked gets busy at once."""
    return [Request(at + k * 1e-6, service) for k in range(n)]


def spawned_per_tick(result: SimResult) -> list[int]:
    procs = list(result.series.processes)
    return [b - a for a, b in itertools.pairwise(procs)]


def test_prefork_burst_forks_1_2_4_8_16_32_then_stops_at_max_request_workers() -> None:
    mpm = prefork(256, start_servers=1, min_spare_servers=5, max_spare_servers=10)
    result = run(burst(400, service=20.0), SimSettings(mpm, keep_alive=False, backlog=511))
    # 1 + 1+2+4+8+16+32 = 64, then 32 a tick until 256 (192 = 6 x 32)
    assert spawned_per_tick(result)[:13] == [1, 2, 4, 8, 16, 32, 32, 32, 32, 32, 32, 32, 0]
    assert result.summary.peak_processes == 256
    ids = [log[2] for log in result.logs]
    assert ids.count("AH00161") == 1  # "reached MaxRequestWorkers", once an episode
    reached = next(log for log in result.logs if log[2] == "AH00161")
    assert reached[0] == 13.0  # the first tick with every slot taken
    assert "spawning 8 children" in next(log[3] for log in result.logs if log[2] == "AH00162")
    assert result.summary.seconds_at_max >= 5


@pytest.mark.parametrize("name", ["worker", "event"])
def test_threaded_burst_doubles_up_to_the_daemon_limit(name) -> None:
    mpm = threaded(name)  # 16 children of 25 threads at most
    result = run(burst(600, service=20.0), SimSettings(mpm, keep_alive=False))
    assert spawned_per_tick(result)[:5] == [1, 2, 4, 8, 0]
    assert result.summary.peak_processes == 16
    assert result.summary.peak_busy_threads == 400
    ah = "AH00484" if name == "event" else "AH00286"
    assert [log[2] for log in result.logs].count(ah) == 1


def test_idle_pool_retires_one_child_a_second() -> None:
    mpm = prefork(256, start_servers=20, min_spare_servers=5, max_spare_servers=10)
    result = run([Request(0.5, 0.01), Request(15.5, 0.01)], SimSettings(mpm, keep_alive=False))
    assert list(result.series.processes)[:12] == [20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 10]


# -- keep-alive, event's connection cap, recycling ---------------------------------------------


def kept_connections(n: int, gap: float = 5.0) -> list[Request]:
    """n connections 0.1 s apart, each a short request, then a second one `gap` s later."""
    out = []
    for k in range(n):
        t = 0.1 * (k + 1)
        out.append(Request(t, 0.001, k, True))
        out.append(Request(t + gap, 0.001, k, False))
    return out


def one_child(name: str = "event", **overrides: object) -> MpmSettings:
    """One child of 4 threads that maintenance can neither grow nor shrink."""
    values: dict[str, object] = dict(
        threads_per_child=4, server_limit=1, max_request_workers=4, min_spare_threads=1,
        max_spare_threads=100,
    )  # fmt: skip
    values.update(overrides)
    return threaded(name, **values)


def test_event_connection_cap_queues_until_mpmd_reuses_a_parked_connection() -> None:
    """Factor 2, 4 idle threads: the child accepts ThreadsPerChild + 2 x 4 = 12 parked
    connections (event_limit.connections_above_limit); the 13th waits in the backlog. Apache
    would keep it there until a connection closes; mpmd's child looks again after
    REUSE_PROBE_SECONDS, takes it and closes its oldest parked connection, whose next request
    then reconnects."""
    result = run(kept_connections(16), SimSettings(one_child(), keep_alive_timeout=10.0))
    first = [result.wait[2 * k] for k in range(16)]
    assert first[:12] == [0.0] * 12
    assert first[12] == pytest.approx(REUSE_PROBE_SECONDS)
    assert result.summary.refused == 0
    assert result.summary.peak_busy_threads <= 4


def test_event_child_with_every_thread_busy_queues_then_refuses() -> None:
    """No idle thread: over the limit whatever the count; 4 served, backlog 2 holds 3."""
    trace = [Request(0.5 + k * 1e-3, 10.0) for k in range(10)]
    result = run(trace, SimSettings(one_child(), keep_alive=False, backlog=2))
    assert result.summary.refused == 3
    assert [result.wait[k] > 0 for k in range(7)] == [False] * 4 + [True] * 3


@pytest.mark.parametrize("name", ["prefork", "worker"])
def test_keep_alive_holds_the_worker_until_the_next_request(name) -> None:
    """prefork and worker: 4 workers, 8 kept-alive connections; the fifth connection waits
    until the first is done (its second request at 5.1 s), not until KeepAliveTimeout."""
    mpm = prefork(4) if name == "prefork" else one_child("worker")
    result = run(kept_connections(5), SimSettings(mpm, keep_alive_timeout=10.0))
    assert [result.wait[2 * k] for k in range(4)] == [0.0] * 4
    assert result.wait[8] == pytest.approx(5.1 + 0.001 - 0.5)
    assert result.summary.peak_busy_threads == 4


def test_event_parks_kept_alive_connections_without_a_thread() -> None:
    result = run(kept_connections(5), SimSettings(one_child(), keep_alive_timeout=10.0))
    assert result.summary.waited == 0
    assert result.summary.peak_busy_threads == 1


def test_keep_alive_timeout_and_max_keep_alive_requests_close_the_connection() -> None:
    """After KeepAliveTimeout the held worker is free; a request after it reconnects."""
    mpm = prefork(1)
    trace = [Request(0.5, 0.1, 1, True), Request(2.0, 0.1, 2, False), Request(4.0, 0.1, 1, False)]
    result = run(trace, SimSettings(mpm, keep_alive_timeout=3.0))
    assert result.wait[1] == pytest.approx(0.6 + 3.0 - 2.0)  # held by connection 1 until 3.6
    assert result.wait[2] == 0.0  # connection 1 timed out: a new connection, a free child
    # MaxKeepAliveRequests 1: no holding at all
    result = run(trace, SimSettings(mpm, keep_alive_timeout=3.0, max_keep_alive_requests=1))
    assert result.summary.waited == 0


def test_max_connections_per_child_recycles_children() -> None:
    mpm = prefork(2, max_connections_per_child=3, max_request_workers=4, server_limit=4)
    trace = [Request(0.5 + k, 0.01) for k in range(12)]
    result = run(trace, SimSettings(mpm, keep_alive=False))
    # 12 connections, 3 per child: 4 children served them, 2 of them forked on ticks
    assert result.summary.forked >= 2
    assert result.summary.refused == 0


def test_settings_from_a_real_config_file(tmp_path) -> None:
    conf = tmp_path / "httpd.conf"
    conf.write_text(
        "LoadModule mpm_worker_module x.so\nListen 8080\nKeepAliveTimeout 3\n"
        "MaxKeepAliveRequests 7\nListenBacklog 1000\nThreadsPerChild 10\n"
        "MaxRequestWorkers 50\nMaxConnectionsPerChild 100\n"
    )
    settings = SimSettings.from_config(load_config(str(conf)), somaxconn=128, startup=0.02)
    assert settings.mpm.name == "worker"
    assert settings.mpm.max_request_workers == 50
    assert settings.backlog == 128  # capped by somaxconn, as listen(2) caps it
    assert (settings.keep_alive_timeout, settings.max_keep_alive_requests) == (3.0, 7)
    assert settings.startup == 0.02
    trace = poisson_trace(2000, 100.0, 50.0, seed=1)
    summary = run(trace, settings).summary
    assert summary.refused == 0 and summary.peak_busy_threads <= 50


def test_results_keep_the_callers_order() -> None:
    trace = [Request(2.0, 0.5), Request(1.0, 0.25)]
    result = run(trace, SimSettings(prefork(1), keep_alive=False))
    assert list(result.latency) == [0.5, 0.25]


def test_event_closes_parked_connections_when_every_thread_stays_busy() -> None:
    """Two parked connections, then 4 long requests take every thread: after
    BUSY_GRACE_SECONDS the child closes both ("kill'em all"); their next requests reconnect."""
    trace = kept_connections(2, gap=5.0) + [Request(0.5 + k * 1e-3, 2.0) for k in range(4)]
    result = run(trace, SimSettings(one_child(), keep_alive_timeout=10.0))
    assert list(result.series.connections)[:2] == [4, 4]  # the 4 busy ones only
    assert result.summary.refused == 0 and result.summary.waited == 0


def test_stopping_event_child_answers_its_parked_connection() -> None:
    """MaxConnectionsPerChild 2: the child stops after its second connection but keeps the
    first, parked, until its next request (at 2.5 s); a new child serves in the meantime."""
    mpm = one_child(max_connections_per_child=2, server_limit=2, max_request_workers=8)
    trace = [
        Request(0.1, 0.001, 1, True),
        Request(0.2, 0.001, 2, False),
        Request(2.5, 0.001, 1, False),
        Request(3.5, 0.001),
    ]
    result = run(trace, SimSettings(mpm, keep_alive_timeout=10.0))
    # the stopping child and its successor, until the parked connection's request is answered
    assert list(result.series.processes) == [1, 2, 1]
    assert result.summary.forked == 1 and result.summary.waited == 0
