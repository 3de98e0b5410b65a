"""Unit tests of the benchmark harness's pure parts: wrk and ab parsing, /proc arithmetic, configs,
the idle client's counting, and the report's tables and targets. No server, no load."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside src/

from bench import report
from bench.ab import ab_command, parse_ab_output
from bench.backends import backend_config
from bench.fixtures import HELLO_BODY, write_fixtures
from bench.idle_client import IdleCounts, _read_response
from bench.procfs import (
    busy_percent,
    descendants,
    parse_proc_stat,
    parse_pss_kib,
    parse_stat_line,
)
from bench.servers import (
    SERVERS,
    apache_config,
    balancer_config,
    haproxy_config,
    mpmd_config,
    nginx_config,
    nginx_upstream_config,
)
from bench.workloads import WORKLOADS, median_run, summarize
from bench.wrk import parse_time_ms, parse_wrk_output, wrk_command

WRK_KEEPALIVE = """Running 8s test @ http://127.0.0.1:40000/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.88ms    1.02ms  30.14ms   91.22%
    Req/Sec    12.97k   512.33    13.80k    72.50%
  Latency Distribution
     50%    3.71ms
     75%    4.02ms
     90%    4.55ms
     99%    8.09ms
  103200 requests in 8.00s, 15.75MB read
  Socket errors: connect 0, read 5, write 0, timeout 30
  Non-2xx or 3xx responses: 7
Requests/sec:  12900.12
Transfer/sec:      1.97MB
"""

WRK_BIG = """Running 8s test @ http://127.0.0.1:40000/1m.bin
  1 threads and 10 connections
  Latency Distribution
     50%  850.00us
     75%    1.20ms
     90%    2.00ms
     99%    1.07s
  21696 requests in 8.00s, 21.19GB read
Requests/sec:   2712.00
Transfer/sec:      2.65GB
"""


def test_parse_wrk_keepalive_report() -> None:
    r = parse_wrk_output(WRK_KEEPALIVE)
    assert r.requests_per_sec == 12900.12
    assert r.requests == 103200 and r.seconds == 8.0
    assert r.bytes_read == round(15.75 * 1024**2)
    assert r.percentiles_ms == {"50": 3.71, "75": 4.02, "90": 4.55, "99": 8.09}
    assert r.p99_ms == 8.09
    assert r.socket_errors == {"connect": 0, "read": 5, "write": 0, "timeout": 30}
    assert r.non_2xx == 7
    assert r.transfer_mib_per_sec == pytest.approx(1.97, abs=0.001)
    assert not r.killed


def test_parse_wrk_units_are_binary_and_times_mixed() -> None:
    r = parse_wrk_output(WRK_BIG)
    assert r.percentiles_ms["50"] == pytest.approx(0.85)
    assert r.p99_ms == pytest.approx(1070.0)
    assert r.transfer_mib_per_sec == pytest.approx(2.65 * 1024, abs=0.01)
    assert r.socket_errors == {} and r.non_2xx == 0


def test_parse_wrk_empty_output_is_zero() -> None:
    r = parse_wrk_output("")
    assert r.requests_per_sec == 0.0 and r.p99_ms is None


@pytest.mark.parametrize(
    ("value", "unit", "ms"), [("500", "us", 0.5), ("2", "s", 2000.0), ("1.5", "m", 90_000.0)]
)
def test_parse_time_units(value: str, unit: str, ms: float) -> None:
    assert parse_time_ms(value, unit) == pytest.approx(ms)


def test_wrk_command_pins_client_and_bounds_time() -> None:
    cmd = wrk_command("http://127.0.0.1:1/", 50, 8, ("Connection: close",))
    assert cmd[:6] == ["timeout", "-s", "INT", "-k", "2", "10"]
    assert cmd[6:9] == ["taskset", "-c", "0"]
    assert "-t1" in cmd and "-c50" in cmd and "-d8s" in cmd and "--latency" in cmd
    assert cmd[cmd.index("-H") + 1] == "Connection: close"
    assert cmd[-1] == "http://127.0.0.1:1/"


AB_TLS = """Server Software:        mpmd/0.1.0
SSL/TLS Protocol:       TLSv1.3,TLS_AES_256_GCM_SHA384,256,256
Concurrency Level:      50
Time taken for tests:   8.001 seconds
Complete requests:      9372
Failed requests:        3
   (Connect: 0, Receive: 2, Length: 1, Exceptions: 0)
Non-2xx responses:      4
Total transferred:      2314884 bytes
Requests per second:    1171.35 [#/sec] (mean)
Transfer rate:          282.55 [Kbytes/sec] received

Percentage of the requests served within a certain time (ms)
  50%     41
  99%    128
 100%    301 (longest request)
"""


def test_parse_ab_report_and_command() -> None:
    r = parse_ab_output(AB_TLS)
    assert (r.requests_per_sec, r.requests, r.seconds) == (1171.35, 9372, 8.001)
    assert r.p99_ms == 128.0 and r.percentiles_ms["50"] == 41.0 and r.non_2xx == 4
    assert r.socket_errors == {"connect": 0, "read": 2, "length": 1, "exceptions": 0}
    assert r.transfer_mib_per_sec == pytest.approx(282.55 / 1024, abs=1e-3)
    assert parse_ab_output("").requests_per_sec == 0.0
    cmd = ab_command("https://127.0.0.1:1/", 50, 8, ("Connection: close",))
    assert cmd[:9] == ["timeout", "-s", "INT", "-k", "2", "10", "taskset", "-c", "0"]
    ab = cmd[cmd.index("ab") :]
    assert ab[ab.index("-c") + 1] == "50" and ab[ab.index("-t") + 1] == "8"
    assert ab.index("-n") > ab.index("-t")  # -t implies -n 50000 unless -n comes after
    assert cmd[cmd.index("-H") + 1] == "Connection: close" and cmd[-1] == "https://127.0.0.1:1/"


PROC_STAT_BEFORE = """cpu  100 0 100 800 0 0 0 0 0 0
cpu0 50 0 50 400 0 0 0 0 0 0
cpu1 50 0 50 400 0 0 0 0 0 0
intr 12345
"""
PROC_STAT_AFTER = """cpu  250 0 250 900 0 0 0 0 0 0
cpu0 140 0 55 400 5 0 0 0 0 0
cpu1 110 0 140 440 0 0 0 0 0 0
"""


def test_cpu_busy_percent_from_proc_stat() -> None:
    before, after = parse_proc_stat(PROC_STAT_BEFORE), parse_proc_stat(PROC_STAT_AFTER)
    # cpu0: busy +95 of +100 jiffies (iowait counts as idle); cpu1: busy +150 of +190.
    assert busy_percent(before, after, "cpu0") == pytest.approx(95.0)
    assert busy_percent(before, after, "cpu1") == pytest.approx(100 * 150 / 190)
    assert busy_percent(before, after, "cpu7") == 0.0


def test_stat_line_with_spaces_and_parens_in_name() -> None:
    fields = " ".join(["S", "42"] + ["0"] * 15 + ["9"] + ["0"] * 30)
    assert parse_stat_line(f"123 (a b) c)) {fields}") == (42, 9)


def test_pss_and_process_tree() -> None:
    assert parse_pss_kib("Rss: 10 kB\nPss:                2048 kB\nPss_Anon: 1 kB\n") == 2048
    table = {1: (0, 1), 10: (1, 2), 11: (10, 1), 12: (10, 1), 20: (1, 1), 13: (11, 4)}
    assert sorted(descendants(10, table)) == [10, 11, 12, 13]
    assert descendants(99, table) == []


def test_fixtures_and_generated_configs(tmp_path: Path) -> None:
    fx = write_fixtures(tmp_path / "t")
    assert (fx.static / "hello.txt").read_bytes() == HELLO_BODY
    assert (fx.static / "1k.bin").stat().st_size == 1024
    assert (fx.static / "1m.bin").stat().st_size == 1024 * 1024
    run = fx.run_dir("x")
    conf = apache_config(fx, run, 4242, "event", "daemon")
    for line in ("Listen 127.0.0.1:4242", "KeepAliveTimeout 30", "MaxKeepAliveRequests 0"):
        assert line in conf
    assert "WSGIDaemonProcess bench processes=2 threads=8" in conf and "CustomLog" not in conf
    assert "keepalive_requests 100000000;" in nginx_config(fx, run, 4242)
    mpmd = mpmd_config(fx, run, 4242, "prefork")
    assert "LoadModule mpm_prefork_module modules/mod_mpm_prefork.so" in mpmd
    assert "WSGIApp /hello hello:application" in mpmd
    assert "LoadModule" not in mpmd_config(fx, run, 4242, None)
    # workload e measures the event MPM as shipped: no connection-limit tuning (issue 9)
    assert "AsyncRequestWorkerFactor" not in mpmd_config(fx, run, 4242, "event")


def test_tls_servers_share_the_run_certificate(tmp_path: Path) -> None:
    fx = write_fixtures(tmp_path / "t")
    assert "BEGIN CERTIFICATE" in fx.tls_cert.read_text()
    assert "BEGIN PRIVATE KEY" in fx.tls_key.read_text()  # PKCS#8, as granian requires
    run = fx.run_dir("x")
    apache = apache_config(fx, run, 4242, "event", None, tls=True).splitlines()
    for line in (
        "LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so",
        "LoadModule socache_shmcb_module /usr/lib/apache2/modules/mod_socache_shmcb.so",
        "SSLEngine on",
        f'SSLCertificateFile "{fx.tls_cert}"',
        f'SSLCertificateKeyFile "{fx.tls_key}"',
    ):
        assert line in apache
    assert "SSLEngine on" not in apache_config(fx, run, 4242, "event", None)
    mpmd = mpmd_config(fx, run, 4242, "event", tls=True).splitlines()
    assert "SSLEngine on" in mpmd and f'SSLCertificateKeyFile "{fx.tls_key}"' in mpmd
    assert not [line for line in mpmd if line.startswith(("SSLProtocol", "SSLCipherSuite"))]
    granian = SERVERS["granian-tls"].build(fx, run, 4242, Path("/venv/bin")).cmd
    assert granian[granian.index("--ssl-certificate") + 1] == str(fx.tls_cert)
    assert granian[granian.index("--ssl-keyfile") + 1] == str(fx.tls_key)
    tls_servers = sorted(name for name, spec in SERVERS.items() if spec.tls)
    assert tls_servers == ["apache-event-tls", "granian-tls", "mpmd-event-tls",
                           "mpmd-prefork-tls", "mpmd-worker-tls"]  # fmt: skip
    assert [w.key for w in WORKLOADS.values() if w.tls] == ["g", "h"]
    assert WORKLOADS["h"].client == "ab" and WORKLOADS["h"].headers == ("Connection: close",)


def test_hello_app_serves_hello_and_files(tmp_path: Path) -> None:
    fx = write_fixtures(tmp_path / "t")
    namespace: dict = {}
    exec(compile((fx.apps / "hello.py").read_text(), "hello.py", "exec"), namespace)
    app = namespace["application"]
    seen: list = []

    def start_response(status: str, headers: list) -> None:
        seen.append((status, dict(headers)))

    assert b"".join(app({"PATH_INFO": "/"}, start_response)) == HELLO_BODY
    assert seen[-1] == ("200 OK", {"Content-Type": "text/plain", "Content-Length": "13"})
    body = b"".join(app({"PATH_INFO": "/1k.bin"}, start_response))
    assert body == (fx.static / "1k.bin").read_bytes()
    assert seen[-1][1]["Content-Length"] == "1024"


def test_every_server_has_every_url() -> None:
    for spec in SERVERS.values():
        wanted = {"hello"} if spec.balancer else {"hello", "1k", "1m"}
        assert set(spec.paths) == wanted, spec.name
    assert [w.key for w in WORKLOADS.values() if w.balancer] == ["f"]


def test_balancer_configs(tmp_path: Path) -> None:
    """Apache and mpmd run one generated httpd.conf; nginx pools its upstream connections."""
    fx = dataclasses.replace(write_fixtures(tmp_path / "t"), backend_ports=(4001, 4002, 4003))
    run = fx.run_dir("x")
    conf = balancer_config(fx, run, 4242, "event")
    members = [line.split()[-1] for line in conf.splitlines() if "BalancerMember" in line]
    assert members == ["http://127.0.0.1:4001", "http://127.0.0.1:4002", "http://127.0.0.1:4003"]
    for line in (
        "LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so",
        "LoadModule proxy_balancer_module /usr/lib/apache2/modules/mod_proxy_balancer.so",
        "<Proxy balancer://bench>",
        "ProxyPass / balancer://bench/",
        "Listen 127.0.0.1:4242",
        "ThreadsPerChild 25",
    ):
        assert line in conf.splitlines()
    assert "ThreadsPerChild" not in balancer_config(fx, run, 4242, "prefork")
    texts = {}
    for name in ("apache-balancer", "mpmd-balancer-event"):
        launch = SERVERS[name].build(fx, run, 4242, tmp_path / "bin")
        texts[name] = launch.config_file.read_text()
    assert texts["apache-balancer"] == texts["mpmd-balancer-event"] == conf
    upstream = nginx_upstream_config(fx, run, 4242)
    assert "server 127.0.0.1:4003;" in upstream and "keepalive 32;" in upstream
    assert 'proxy_set_header Connection "";' in upstream
    assert "    server b2 127.0.0.1:4003\n" in haproxy_config(fx, run, 4242)
    back = backend_config(run, fx.backend_ports)
    assert back.count('return 200 "Hello, World!"') == 3 and "worker_processes 1;" in back


def test_idle_client_reads_one_response_and_counts() -> None:
    async def read() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!NEXT")
        await _read_response(reader)
        return await reader.read(4)

    assert asyncio.run(read()) == b"NEXT"
    counts = IdleCounts(connected=1900, connect_failed=100, answered=1800, closed_by_server=300)
    report_ = counts.report(2000)
    assert report_["still_open"] == 1500 and report_["never_answered"] == 100


def _run(rps: float, p99: float, cpu0: float = 40.0, **extra) -> dict:
    return {
        "requests_per_sec": rps,
        "p99_ms": p99,
        "transfer_mib_per_sec": rps / 1000,
        "cpu0": cpu0,
        "cpu1": 99.0,
        "socket_errors": {},
        "non_2xx": 0,
        **extra,
    }


def test_summarize_takes_medians() -> None:
    runs = [_run(100, 5.0), _run(300, 1.0, cpu0=97.0), _run(200, 2.0, cpu0=50.0)]
    s = summarize(runs)
    assert s["median_rps"] == 200 and s["median_p99_ms"] == 2.0
    assert s["cpu0"] == 50.0 and median_run(runs)["requests_per_sec"] == 200


def _cell(server: str, workload: str, rps: float, **extra) -> dict:
    runs = [_run(rps, 2.0)]
    return {"server": server, "workload": workload, "runs": runs, **summarize(runs), **extra}


def _data(results: list[dict], duration: float = 8, runs: int = 3) -> dict:
    return {
        "date": "2026-11-26 05:00 UTC",
        "finished": "2026-11-26 05:30 UTC",
        "command": "python -m bench.run",
        "settings": {
            "duration": duration,
            "runs": runs,
            "warmup": 2.0,
            "first_warmup": 6.0,
            "idle_conns": 2000,
        },
        "workloads": ["a", "b", "c", "d", "e"],
        "workload_titles": {"a": "hello", "b": "close", "c": "1k", "d": "1m", "e": "idle"},
        "machine": {"cpu": "test cpu"},
        "versions": {"wrk": "4.1.0"},
        "servers": {"waitress": {"what": "waitress", "cmd": ["waitress-serve"]}},
        "results": results,
    }


def test_targets_ratios_and_idle_condition() -> None:
    idle = {"answered": 2000, "still_open": 525}  # a full child makes room: answered is what counts
    data = _data(
        [
            _cell("waitress", "a", 10_000),
            _cell("mpmd-X", "a", 12_000),
            _cell("mpmd-prefork", "a", 12_000),
            _cell("mpmd-event", "a", 30_000),
            _cell("mpmd-event", "e", 25_000, idle=idle, idle_cmd=[]),
            _cell("mpmd-worker", "a", 1, error="failed to start: boom"),
        ]
    )
    rows = {(r["target"].server, r["target"].workload): r for r in report.target_rows(data)}
    assert rows[("mpmd-X", "a")]["ratio"] == pytest.approx(1.2) and rows[("mpmd-X", "a")]["met"]
    assert rows[("mpmd-prefork", "a")]["ratio"] == pytest.approx(1.2)
    assert not rows[("mpmd-prefork", "a")]["met"]  # issue 10: >= 1.3x waitress
    assert rows[("mpmd-worker", "a")]["ratio"] is None
    assert (
        rows[("mpmd-event", "e")]["ratio"] == pytest.approx(25 / 30)
        and rows[("mpmd-event", "e")]["met"]
    )
    assert ("mpmd-event", "b") not in rows  # gunicorn-sync was not in the run
    idle["answered"] = 1999
    rows = {(r["target"].server, r["target"].workload): r for r in report.target_rows(data)}
    assert not rows[("mpmd-event", "e")]["met"]


def test_tls_targets() -> None:
    """g: TLS keep-alive against the same MPM's plain a; h: handshakes against Apache's."""
    data = _data(
        [
            _cell("mpmd-event", "a", 10_000),
            _cell("mpmd-event-tls", "g", 9_000),
            _cell("mpmd-event-tls", "h", 900),
            _cell("apache-event-tls", "h", 1_000),
        ]
    )
    rows = {(r["target"].server, r["target"].workload): r for r in report.target_rows(data)}
    assert rows[("mpmd-event-tls", "g")]["ratio"] == pytest.approx(0.9)
    assert rows[("mpmd-event-tls", "g")]["met"]
    assert rows[("mpmd-event-tls", "h")]["ratio"] == pytest.approx(0.9)
    assert not rows[("mpmd-event-tls", "h")]["met"]
    table = "\n".join(report.targets_table(data))
    assert "| mpmd-event-tls g vs mpmd-event a (req/s) |" in table
    assert "| mpmd-event-tls h vs apache-event-tls (req/s) |" in table


def test_cell_notes() -> None:
    noisy = {"runs": [_run(100, 1), _run(130, 1), _run(100, 1, socket_errors={"timeout": 3})]}
    noisy.update(summarize(noisy["runs"]))
    notes = report.cell_notes(noisy)
    assert "noisy: spread 30%" in notes and "wrk timeout 3" in notes
    saturated = {"runs": [_run(100, 1, cpu0=96.0)], "cpu0": 96.0, "cpu1": 40.0}
    assert "**client-bound**" in report.cell_notes(saturated)
    died = {"runs": [], "server_died": True, "idle_cmd": [], "idle": {"never_answered": 5}}
    assert "5 never answered" in report.cell_notes(died) and "died" in report.cell_notes(died)
    assert report.cell_notes({"error": "failed to start: x"}) == "**failed to start: x**"


def test_render_full_run_and_smoke_banner(tmp_path: Path) -> None:
    cells = [
        _cell("waitress", "a", 12_900),
        _cell("waitress", "d", 1_985),
        _cell("mpmd-X", "a", 1, error="failed to start: no | pipe"),
    ]
    full = report.render(_data(cells), "My note.", "x.json")
    assert "smoke test" not in full
    assert "| waitress | 12,900 | 12,900 | 2.00 | - |" in full
    assert "failed to start: no \\| pipe" in full
    assert "### d. 1m" in full and "| MiB/s |" in full.split("### d.")[1]
    assert "<!-- NOTES:BEGIN -->\nMy note.\n<!-- NOTES:END -->" in full
    smoke = report.render(_data(cells, duration=2, runs=1))
    assert "Harness smoke test, not the measurement of record" in smoke
    docs = tmp_path / "benchmarks.md"
    docs.write_text(full)
    assert report.existing_notes(docs) == "My note."
    report.write_docs(_data(cells), docs, "y.json")
    assert "My note." in docs.read_text() and "bench/results/y.json" in docs.read_text()


def test_balancer_target_and_configs_section() -> None:
    data = _data(
        [
            _cell("apache-balancer", "f", 20_000),
            _cell("mpmd-balancer-event", "f", 1, error="failed to start: no 200"),
            _cell("nginx-upstream", "f", 40_000),
        ]
    )
    data["workload_titles"]["f"] = "balancer"
    data["servers"] = {
        "apache-balancer": {"what": "a", "cmd": ["apache2"], "config": "Listen 1\n"},
        "mpmd-balancer-event": {"what": "m", "cmd": ["mpmd"], "config": "Listen 1\n"},
        "nginx-upstream": {"what": "n", "cmd": ["nginx"], "config": "worker_processes 1;\n"},
    }
    rows = report.target_rows(data)
    assert [(r["target"].server, r["ratio"]) for r in rows] == [("mpmd-balancer-event", None)]
    assert report.balancer_configs(data) == []  # no back ends recorded: nothing to show
    data["backends"] = {"what": "3 back ends", "cmd": ["nginx"], "config": "events {}\n"}
    text = report.render(data)
    section = text.split("### Balancer configurations (workload f)")[1]
    assert "```apache\nListen 1\n```" in section and "```nginx\nworker_processes 1;" in section
    assert "| mpmd-balancer-event f vs apache-balancer (req/s) |" in text
    data["results"][1] = _cell("mpmd-balancer-event", "f", 22_000)
    (row,) = report.target_rows(data)
    assert row["ratio"] == pytest.approx(1.1) and row["met"]
