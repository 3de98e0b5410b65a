"""`mpmctl plan`: a synthetic access log replayed through two prefork pools (JSON fields, the small
pool waiting, refusals), second-resolution and keep-alive traces, the bad-input messages, the
plots, and a real server's log planned with its own configuration."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from mpmd.tools.accesslog import LogParser
from mpmd.tools.plan import build_trace
from server import Server, call, wait_for

T0 = 1764892800  # 2025-12-05 00:00:00 UTC
USEC = '%h %l %u %{usec}t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D'
SECONDS = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i" %D'
FIELDS = ("time", "service", "client", "keepalive")


def mpmctl(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from mpmd.cli import mpmctl_main; sys.exit(mpmctl_main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def trace(n: int = 1500, rate: float = 40.0, mean_service: float = 0.05) -> list[tuple]:
    """(arrival epoch, service seconds, client) of a Poisson/exponential trace."""
    rng = random.Random(12)
    t, out = float(T0), []
    for i in range(n):
        t += rng.expovariate(rate)
        out.append((t, rng.expovariate(1 / mean_service), f"10.0.0.{i % 40}"))
    return out


def usec_line(t: float, service: float, client: str) -> str:
    return f'{client} - - {int(t * 1e6)} "GET /a HTTP/1.1" 200 5 "-" "ua" {int(service * 1e6)}\n'


def clf_line(t: float, service: float, client: str) -> str:
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t))
    return f'{client} - - [{stamp}] "GET /a HTTP/1.1" 200 5 "-" "ua" {int(service * 1e6)}\n'


def prefork_conf(tmp_path, name: str, workers: int, extra: str = "") -> str:
    path = tmp_path / f"{name}.conf"
    path.write_text(
        "LoadModule mpm_prefork_module modules/mod_mpm_prefork.so\n"
        f'ServerRoot "{tmp_path}"\nListen 127.0.0.1:8080\nPidFile "{tmp_path}/{name}.pid"\n'
        f"StartServers 2\nMaxRequestWorkers {workers}\nServerLimit {workers}\n{extra}"
    )
    return str(path)


@pytest.fixture
def pools(tmp_path):
    return prefork_conf(tmp_path, "small", 2), prefork_conf(tmp_path, "large", 20)


def plan_json(log, fmt, *configs, extra=()) -> list[dict]:
    args = ["plan", "--access-log", str(log), "--log-format", fmt, "--json", *extra]
    for c in configs:
        args += ["--config", c]
    done = mpmctl(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_two_pools_from_an_exact_log(tmp_path, pools):
    log = tmp_path / "access_log"
    log.write_text("".join(usec_line(*r) for r in trace()))
    small, large = plan_json(log, USEC, *pools)
    for report in (small, large):
        for key in ("config", "mpm", "requests", "p50_ms", "p95_ms", "p99_ms", "mean_wait_ms",
                    "waited", "refused", "peak_processes", "peak_busy_threads",
                    "peak_memory_kib"):  # fmt: skip
            assert key in report
        assert report["mpm"] == "prefork" and report["requests"] == 1500
        assert report["refused"] == 0  # a 511 backlog holds every waiting client
        assert not any("spread" in note for note in report["assumptions"])
        assert any("own connection" in note for note in report["assumptions"])
    assert small["config"] == pools[0] and small["peak_processes"] == 2
    assert small["waited"] > 10 * max(large["waited"], 1)
    assert small["p95_ms"] > 2 * large["p95_ms"]
    assert small["mean_wait_ms"] > large["mean_wait_ms"]
    assert small["peak_memory_kib"] < large["peak_memory_kib"]
    # --scale 2 doubles the rate: the large pool waits more
    (faster,) = plan_json(log, USEC, pools[1], extra=("--scale", "2"))
    assert faster["mean_wait_ms"] >= large["mean_wait_ms"]
    assert faster["peak_busy_threads"] >= large["peak_busy_threads"]


def test_the_table_and_its_assumptions(tmp_path, pools):
    log = tmp_path / "access_log"
    log.write_text("".join(clf_line(*r) for r in trace(300, 10)))
    done = mpmctl("plan", "--access-log", str(log), "--log-format", SECONDS,
                  "--config", pools[0], "--config", pools[1], "--process-kib", "20000")  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "small.conf" in out and "large.conf" in out and "p95 ms" in out
    assert "spread evenly within it" in out
    assert "include sending the response to slow clients" in out
    assert "20000 KiB a process (given)" in out


def test_second_resolution_spreads_arrivals():
    parser = LogParser(SECONDS, FIELDS)
    lines = [clf_line(T0 + s, 0.01, "c") for s in (0, 0, 0, 0, 1)]
    result = parser.parse_lines(lines)
    built = build_trace(result.records, parser)
    assert [r.arrival for r in built.requests] == [0.0, 0.25, 0.5, 0.75, 1.375]  # from the first
    assert any("spread evenly" in note for note in built.notes)
    halved = build_trace(result.records, parser, scale=2.0)
    assert [r.arrival for r in halved.requests] == [0.0, 0.125, 0.25, 0.375, 0.6875]


def test_keep_alive_connections_from_k():
    fmt = '%a %{usec}t "%r" %>s %D %k'
    parser = LogParser(fmt, FIELDS)
    lines = [
        f'{client} {T0 * 1_000_000 + t} "GET / HTTP/1.1" 200 1000 {k}\n'
        for client, t, k in [
            ("a", 0, 0),
            ("b", 10, 0),
            ("a", 5000, 1),
            ("a", 9000, 0),
            ("a", 12000, 2),
            ("b", 20000, 1),
        ]
    ]
    built = build_trace(parser.parse_lines(lines).records, parser)
    reqs = built.requests
    assert reqs[0].conn == reqs[2].conn == reqs[4].conn  # a: k 0, 1, 2
    assert reqs[1].conn == reqs[5].conn != reqs[0].conn  # b: k 0, 1
    assert reqs[3].conn not in (reqs[0].conn, reqs[1].conn)  # a's second connection
    assert [r.keep_alive for r in reqs] == [True, True, True, False, False, False]


def test_missing_service_time_says_what_to_add(tmp_path, pools):
    log = tmp_path / "access_log"
    log.write_text('10.0.0.1 - - [05/Dec/2025:00:00:00 +0000] "GET / HTTP/1.1" 200 5\n')
    done = mpmctl("plan", "--access-log", str(log), "--log-format", "common",
                  "--config", pools[0])  # fmt: skip
    assert done.returncode != 0
    assert "the LogFormat has no service time: add %D" in done.stderr
    assert "Traceback" not in done.stderr


def test_garbled_lines_are_counted_with_their_numbers(tmp_path, pools):
    lines = [usec_line(*r) for r in trace(50)]
    lines[9] = "garbage\n"
    lines[29] = lines[29][:25] + "\n"
    (tmp_path / "access_log").write_text("".join(lines))
    done = mpmctl("plan", "--access-log", str(tmp_path / "access_log"), "--log-format", USEC,
                  "--config", pools[1])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 lines skipped: line 10 (" in done.stderr and "line 30 (" in done.stderr
    assert "Traceback" not in done.stderr
    assert " 48" in done.stdout.split("requests", 2)[2].splitlines()[0]


def test_plots_are_written(tmp_path, pools):
    pytest.importorskip("matplotlib")
    log = tmp_path / "access_log"
    log.write_text("".join(usec_line(*r) for r in trace(400)))
    plan_json(log, USEC, *pools, extra=("--plots", str(tmp_path / "plots")))
    for stem in ("1-small.conf", "2-large.conf"):
        png = tmp_path / "plots" / f"{stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        root = ET.parse(tmp_path / "plots" / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg")


@pytest.mark.slow
def test_a_real_servers_log_planned_with_its_own_config(tmp_path):
    """Smoke check (the 15 % comparison is the acceptance study's): 4 clients on a 3-child
    prefork pool, requests that sleep 30 ms; the plan's p50 is near the log's own."""
    fmt = USEC.replace('"', '\\"')
    conf = (
        f'LogFormat "{fmt}" timed\nCustomLog "{tmp_path}/timed_log" timed\n'
        "WSGIApp / testapp:sleepy\nStartServers 3\nMinSpareServers 1\nMaxSpareServers 3\n"
        "MaxRequestWorkers 3\nServerLimit 3\nKeepAlive Off\n"
    )
    server = Server(tmp_path, conf, mpm="prefork")
    with server:

        def client():
            for _ in range(15):
                assert call(server, "GET", "/?seconds=0.03")[0] == 200

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log = tmp_path / "timed_log"
        args = ("plan", "--access-log", str(log), "--config", str(server.conf), "--json")

        def planned_with_measured_memory():
            done = mpmctl(*args)
            assert done.returncode == 0, done.stderr
            (report,) = json.loads(done.stdout)
            return report if "running server" in report["footprint_source"] else None

        # the parent samples the children's PSS at its next tick
        report = wait_for(planned_with_measured_memory, timeout=15)
    parser = LogParser(USEC, FIELDS)
    records = parser.parse_lines(log.read_text().splitlines()).records
    assert len(records) == report["requests"] >= 60
    logged = sorted(r.service * 1000 for r in records)
    measured_p50 = logged[len(logged) // 2]
    assert report["refused"] == 0
    assert 0.5 * measured_p50 <= report["p50_ms"] <= 2.0 * measured_p50
    assert report["peak_processes"] == 3
    assert report["peak_memory_kib"] == 3 * report["process_kib"] > 3 * 1024
