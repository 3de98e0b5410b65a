"""`mpmctl advise`'s arithmetic: budget, per-child cost, Little's law, Apache's clamps, the
planner's check and the command's refusals, with exact expected values (no server started)."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys

import pytest

from mpmd.tools.advise import check_advice, snippet_warnings
from mpmd.tools.advise_core import (
    ChildCost,
    Inputs,
    Memory,
    Traffic,
    advise,
    child_kib,
    keepalive_timeout,
    little,
    max_memory_per_child,
    memory_budget,
    workers_needed,
)
from mpmd.tools.advise_inputs import (
    cost_from_children,
    error_patterns,
    leak_hint,
    log_traffic,
    read_meminfo,
)
from mpmd.tools.advise_render import render_text
from mpmd.tools.simulate import Request

COST = ChildCost(10000, 5000, 100, "test")


def inputs(
    *,
    thread_safe: bool = False,
    budget: int | None = 1_000_000,
    traffic: Traffic | None = None,
    cores: int = 2,
    **kw,
) -> Inputs:
    return Inputs(
        memory=Memory(2_000_000, 4_000_000, 0, 0, budget),
        cost=kw.pop("cost", COST),
        thread_safe=thread_safe,
        thread_safe_source="given",
        cores=cores,
        traffic=traffic,
        **kw,
    )


TRAFFIC = Traffic(rate=50, peak_rate=80, service_s=0.1, source="test")


def test_memory_budget_counts_back_own_children_and_takes_off_the_reserve():
    memory = Memory(1_000_000, 2_000_000, own_children_kib=100_000, reserve_kib=50_000)
    assert memory_budget(memory)[0] == 940_000  # floor(0.9 x 1,100,000) - 50,000
    assert memory_budget(Memory(1_000_000, 2_000_000, budget_kib=4096))[0] == 4096


@pytest.mark.parametrize(
    ("threads", "cap", "child"),
    [
        # 1.5 x 10,000 = 15,000 KiB < the 16 MiB floor: 10,000 + 16,384 -> 26 MiB
        (1, 26 * 1024, 26 * 1024 + 5000),
        (11, 27 * 1024, 27 * 1024 + 5000),  # 10,000 + 10 x 100 + 16,384 = 27,384 -> 27 MiB
    ],
)
def test_child_cost_is_capped_uss_plus_shared_share(threads, cap, child):
    assert max_memory_per_child(COST, threads) == cap
    assert child_kib(COST, threads) == child


@pytest.mark.parametrize(
    ("rate", "service", "peak", "workers"),
    [
        (20, 0.05, 1.0, 3),
        (50, 0.1, 5.0, 10),
        (0.1, 0.01, 0.001, 1),
        (100, 0.04, 4.0, 8),
        (400, 0.1, 40.0, 53),
        (1000, 0.1, 100.0, 125),
    ],
)
def test_littles_law_and_headroom(rate, service, peak, workers):
    assert little(rate, service) == pytest.approx(peak)
    # ceil(max(1.25 x L, L + 2 sqrt(L))), at least 1: square-root staffing for small pools
    assert workers_needed(little(rate, service)) == workers


def test_prefork_table():
    advice = advise(inputs(traffic=TRAFFIC))
    # L = 50 x 0.1 = 5, busiest 80 x 0.1 = 8 -> ceil(8 + 2 sqrt(8)) = 14; child 26,624 + 5,000
    assert advice.mpm == "prefork"
    assert advice.child_kib == 31624
    assert advice.directives() == {
        "StartServers": 14,  # max(1, ceil(5)) + 9, at most 14
        "MinSpareServers": 9,  # 14 - floor(5)
        "MaxSpareServers": 18,
        "ServerLimit": 14,
        "MaxRequestWorkers": 14,
        "KeepAliveTimeout": 2,
        "MaxKeepAliveRequests": 100,
        "MaxConnectionsPerChild": 0,
        "MaxMemoryPerChild": "26M",
    }


def test_event_table():
    advice = advise(inputs(thread_safe=True, traffic=TRAFFIC))
    # 14 workers / 2 cores -> 7 threads a child, 2 children; child 10,600 + 16 MiB -> 27 MiB
    assert advice.mpm == "event"
    assert advice.child_kib == 27 * 1024 + 5000
    assert advice.directives() == {
        "StartServers": 2,  # ceil((5 + 9) / 7)
        "ServerLimit": 2,
        "ThreadLimit": 7,
        "ThreadsPerChild": 7,
        "MaxRequestWorkers": 14,
        "MinSpareThreads": 9,  # 14 - floor(5)
        "MaxSpareThreads": 23,  # 9 + 2 x 7
        "KeepAliveTimeout": 5,
        "MaxKeepAliveRequests": 100,
        "MaxConnectionsPerChild": 0,
        "MaxMemoryPerChild": "27M",
        "AsyncRequestWorkerFactor": 2,
    }


@pytest.mark.parametrize("cores", [2, 8])
def test_an_asgi_app_gets_event_and_a_loop_a_core(cores):
    """Thread safety does not matter to an ASGI application (its loop runs it); a CPU-bound
    one still gets event, the only MPM that serves it, with one child (one loop) a core."""
    advice = advise(inputs(thread_safe=False, traffic=TRAFFIC, cores=cores, asgi=True,
                           cpu=(50, 100)))  # fmt: skip
    assert advice.mpm == "event"
    assert "ASGI" in advice.why_mpm
    settings = advice.directives()
    assert settings["ThreadsPerChild"] == 4
    assert settings["ServerLimit"] == cores
    assert settings["MaxRequestWorkers"] == 4 * cores
    assert settings["MinSpareThreads"] <= settings["MaxRequestWorkers"]


def test_an_asgi_app_is_still_bounded_by_memory():
    advice = advise(inputs(asgi=True, cores=8, budget=3 * (27 * 1024 + 5000)))
    assert advice.directives()["ServerLimit"] == 3
    assert any("memory holds 3" in note for note in advice.notes)


@pytest.mark.parametrize(
    ("thread_safe", "cpu", "mpm"),
    [(True, (8.4, 8.5), "prefork"), (True, (50, 100), "prefork"), (True, (20, 100), "event"),
     (True, (0.8, 1.0), "event"),  # all CPU, but shorter than a GIL switch interval
     (True, None, "event"), (False, (0.4, 100), "prefork")],
)  # fmt: skip
def test_a_cpu_bound_thread_safe_app_gets_processes(thread_safe, cpu, mpm):
    advice = advise(inputs(thread_safe=thread_safe, traffic=TRAFFIC, cpu=cpu))
    assert advice.mpm == mpm
    if thread_safe and mpm == "prefork":
        assert "CPU-bound" in advice.why_mpm


@pytest.mark.parametrize(("cpu", "workers"), [((8.4, 8.5), 2), ((6, 11), 4), ((30, 100), None)])
def test_a_cpu_bound_pool_keeps_the_cores_busy_and_no_more(cpu, workers):
    advice = advise(inputs(thread_safe=True, traffic=TRAFFIC, cpu=cpu, cores=2))
    # TRAFFIC wants 14 workers; 2 cores x 8.5 / 8.4 -> 2, 2 x 11 / 6 -> 4; 30 % CPU: no cap
    assert advice.value("MaxRequestWorkers") == (workers or 14)
    raised = advise(inputs(thread_safe=True, traffic=TRAFFIC, cpu=cpu), min_workers=40)
    assert raised.value("MaxRequestWorkers") == (workers or 40)  # the planner cannot undo it


def test_memory_limits_the_pool_and_says_so():
    advice = advise(inputs(traffic=TRAFFIC, budget=100_000))
    assert advice.value("MaxRequestWorkers") == 3  # 100,000 // 31,624
    assert any("memory holds 3" in note for note in advice.notes)


def test_an_app_that_does_not_fit_gets_no_settings():
    advice = advise(inputs(budget=10_000))
    assert not advice.fits
    assert advice.settings == []
    text = render_text(advice, "test")
    assert "NOT SAFE" in text
    assert "<IfModule" not in text


def test_threads_shrink_before_giving_up():
    big = ChildCost(10000, 1000, 1000, "test")  # 1 MiB a thread
    advice = advise(inputs(thread_safe=True, traffic=TRAFFIC, cost=big, budget=30_000))
    assert advice.fits
    # 7 threads: 16,000 + 16,384 -> 32 MiB + 1,000 > 30,000; halved to 3: 28 MiB + 1,000 fits
    assert advice.value("ThreadsPerChild") == 3
    assert advice.child_kib == 29672


@pytest.mark.parametrize(
    ("gap", "parked", "value"), [(None, False, 2), (None, True, 5), (0.3, False, 1),
                                 (7.2, True, 8), (30, True, 15), (3.5, False, 4)]
)  # fmt: skip
def test_keepalive_timeout_from_the_gaps(gap, parked, value):
    traffic = Traffic(1, 1, 0.01, "test", keepalive_gap_s=gap)
    assert keepalive_timeout(inputs(traffic=traffic), parked)[0] == value


def test_async_factor_from_peak_connections():
    traffic = Traffic(50, 80, 0.1, "test", peak_busy=0, peak_connections=100)
    advice = advise(inputs(thread_safe=True, traffic=traffic))
    # 100 connections / 2 children = 50 a child; (50 - 7) / 3 idle threads -> 15
    assert advice.value("AsyncRequestWorkerFactor") == 15


def test_leak_sets_max_connections_per_child():
    advice = advise(inputs(traffic=TRAFFIC, leak="USS from 10 to 40 MiB"))
    assert advice.value("MaxConnectionsPerChild") == 10000


def test_every_advice_is_clean_for_apache_clamps():
    """A grid of inputs: the snippet builds with no warning and keeps Apache's rules."""
    rng = random.Random(12)
    for thread_safe, cores in itertools.product((False, True), (1, 2, 8)):
        for _ in range(15):
            traffic = Traffic(rng.uniform(0.1, 500), 0, rng.uniform(0.001, 2), "grid",
                              peak_busy=rng.randrange(0, 300))  # fmt: skip
            traffic = Traffic(traffic.rate, traffic.rate * rng.uniform(1, 4), traffic.service_s,
                              "grid", traffic.peak_busy)  # fmt: skip
            cost = ChildCost(rng.uniform(3000, 200_000), rng.uniform(0, 50_000),
                             rng.uniform(0, 2000), "grid")  # fmt: skip
            advice = advise(inputs(thread_safe=thread_safe, cores=cores, traffic=traffic,
                                   cost=cost, budget=rng.randrange(300_000, 8_000_000)))  # fmt: skip
            if not advice.fits:
                continue
            d = advice.directives()
            tpc = d.get("ThreadsPerChild", 1)
            assert d["MaxRequestWorkers"] % tpc == 0
            assert d["ServerLimit"] * tpc == d["MaxRequestWorkers"]
            assert d["ServerLimit"] * advice.child_kib <= advice.budget_kib
            if thread_safe:
                assert d["MaxSpareThreads"] >= d["MinSpareThreads"] + tpc + 1
                assert 1 <= d["StartServers"] <= d["ServerLimit"]
            else:
                assert d["MaxSpareServers"] >= d["MinSpareServers"] + 1
            assert snippet_warnings(render_text(advice, "grid"), advice.mpm) == []


def test_planner_check_raises_the_pool_it_finds_short():
    """The inputs claim 1 req/s; the trace brings 40 req/s of 100 ms: the check raises
    MaxRequestWorkers until nothing is refused and nothing sits at the limit."""
    rng = random.Random(3)
    t, reqs = 0.0, []
    while t < 30:
        t += rng.expovariate(40)
        reqs.append(Request(t, 0.1))
    first = advise(inputs(traffic=Traffic(1, 1, 0.1, "claimed")))
    checked = check_advice(first, inputs(traffic=Traffic(1, 1, 0.1, "claimed")), reqs,
                           backlog_cap=511)  # fmt: skip
    assert checked.adjustments
    assert checked.value("MaxRequestWorkers") > first.value("MaxRequestWorkers")
    assert checked.check["requests"] == len(reqs)
    assert checked.check["refused"] == 0
    assert checked.check["peak_memory_kib"] <= checked.budget_kib


def test_planner_check_stops_at_the_memory_budget():
    reqs = [Request(i * 0.01, 0.5) for i in range(2000)]  # L = 50
    small = inputs(traffic=Traffic(1, 1, 0.5, "claimed"), budget=3 * 31624)
    checked = check_advice(advise(small), small, reqs, backlog_cap=511)
    assert checked.value("MaxRequestWorkers") == 3
    assert any("memory allows no more" in note for note in checked.notes)


def test_log_traffic_from_an_access_log(tmp_path):
    log = tmp_path / "access_log"
    lines = []
    for second in range(5):
        for n in range(2):
            stamp = f"[05/Dec/2026:00:00:0{second} +0000]"
            lines.append(f'127.0.0.1 - - {stamp} "GET / HTTP/1.1" 200 5 {n} 100000')
    log.write_text("\n".join(lines) + "\n")
    got = log_traffic(str(log), log_format='%h %l %u %t "%r" %>s %b %k %D')
    # arrivals spread within their second: 0.25 ... 4.75, so 10 requests over 4.5 s
    assert got.traffic.rate == pytest.approx(10 / 4.5)
    assert got.traffic.peak_rate == 2
    assert got.traffic.service_s == pytest.approx(0.1)
    assert got.traffic.keepalive_gap_s == pytest.approx(0.4)  # 0.75 - (0.25 + 0.1)
    assert len(got.requests) == 10


def test_cost_of_the_largest_child_as_a_one_thread_child():
    cost = cost_from_children([(9000, 5000), (12000, 7000)], threads=25, thread_kib=64)
    assert (cost.uss_kib, cost.shared_kib, cost.thread_kib) == (7000 - 24 * 64, 5000, 64)


def test_leak_hint_needs_a_wide_and_large_spread():
    assert leak_hint([(0, 10000)]) is None
    assert leak_hint([(0, 10000), (0, 14000)]) is None  # under 1.5x
    assert leak_hint([(0, 3000), (0, 6000)]) is None  # 2x but under 4 MiB
    assert leak_hint([(0, 10000), (0, 20000)]) == "children's USS ranges from 10000 to 20000 KiB"


def test_error_log_patterns_become_notes(tmp_path):
    log = tmp_path / "error_log"
    head = "[Sat Dec 05 00:19:53.601123 2026] [mpm_prefork:error] [pid 5734:tid 5734]"
    log.write_text(
        f"{head} AH00161: server reached MaxRequestWorkers setting, consider raising the "
        "MaxRequestWorkers setting\n"
        f"{head} AH00161: server reached MaxRequestWorkers setting, consider raising the "
        "MaxRequestWorkers setting\n"
        f"{head} MP00003: request exceeded Timeout: GET /slow HTTP/1.1\n"
        f"{head} AH00052: child pid 7 exit signal Segmentation fault (11)\n"
        "  a traceback's continuation line\n"
    )
    patterns = error_patterns(str(log))
    assert patterns == {"MaxRequestWorkers reached": 2, "hung requests (Timeout exceeded)": 1,
                        "child crashes": 1}  # fmt: skip
    notes = advise(inputs(traffic=TRAFFIC, error_patterns=patterns)).notes
    assert any("reached 2 times" in n for n in notes)
    assert any("MP00003" in n for n in notes)
    assert any("child crashes" in n for n in notes)


def test_meminfo(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       24683784 kB\nMemFree: 1 kB\nMemAvailable:   24154292 kB\n")
    assert read_meminfo(str(path)) == (24154292, 24683784)


def mpmctl(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from mpmd.cli import mpmctl_main; sys.exit(mpmctl_main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_no_running_server_is_a_clear_message(tmp_path):
    conf = tmp_path / "mpmd.conf"
    conf.write_text(f'Listen 127.0.0.1:1\nPidFile "{tmp_path}/none.pid"\n')
    done = mpmctl("advise", "-f", str(conf))
    assert done.returncode == 1
    assert "mpmctl advise: no running server" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--app", "nocolon"), "must be module:callable"),
        (("--app", "missing/file.py:app"), "no such file"),
        (("--memory-budget", "lots"), "not a size"),
        (("--thread-safe", "maybe"), "say yes or no"),
        (("-f", "x.conf", "--app", "a:b"), "not allowed with argument"),
    ],
)
def test_bad_arguments(args, message):
    done = mpmctl("advise", *args)
    assert done.returncode in (1, 2)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
