"""/server-status and /metrics on real servers: mpmd against Apache 2.4, the Prometheus Apache
exporter and headless Chromium (each Debian package; a test skips when its package is missing)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import Server, free_port, wait_for

pytestmark = pytest.mark.slow

APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
EXPORTER = shutil.which("prometheus-apache-exporter")
CHROMIUM = shutil.which("chromium")
STATUS_LOCATION = """
LoadModule status_module modules/mod_status.so
ExtendedStatus {extended}
WSGIApp /hello testapp:hello
WSGIApp /sleep testapp:sleepy
<Location /server-status>
    SetHandler server-status
    Require local
</Location>
<Location /metrics>
    SetHandler metrics
    Require local
</Location>
<Location /private-status>
    SetHandler server-status
    Require ip 10.0.0.0/8
</Location>
"""


def get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode("latin-1")
            return response.status, dict(response.headers), body
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode("latin-1")


def auto_fields(text: str) -> list[tuple[str, str]]:
    """`?auto` as (name, value) pairs; the first line (the host) has no name."""
    lines = text.rstrip("\n").split("\n")
    return [("<host>", lines[0])] + [tuple(line.split(":", 1)) for line in lines[1:]]  # type: ignore[misc]


def mpmd_server(tmp: Path, mpm: str, *, extended: bool = True) -> Server:
    return Server(tmp, STATUS_LOCATION.format(extended="On" if extended else "Off"), mpm=mpm)


@contextlib.contextmanager
def apache(tmp: Path, mpm: str, *, extended: bool = True) -> Iterator[int]:
    """Debian's Apache 2.4 in the foreground on a loopback port, stopped by pid."""
    if not os.access(APACHE, os.X_OK):
        pytest.skip("Debian package apache2 is not installed (/usr/sbin/apache2)")
    root = tmp / f"apache-{mpm}"
    root.mkdir()
    port = free_port()
    user = "User nobody\nGroup nogroup\n" if os.getuid() == 0 else ""
    # DocumentRoot where Apache's unprivileged children may look (tmp_path is root-only)
    docroot = Path(tempfile.mkdtemp(prefix="mpmd-apache-"))
    docroot.chmod(0o755)
    conf = root / "httpd.conf"
    conf.write_text(
        textwrap.dedent(f"""\
        ServerRoot "{root}"
        LoadModule mpm_{mpm}_module {APACHE_MODULES}/mod_mpm_{mpm}.so
        LoadModule status_module {APACHE_MODULES}/mod_status.so
        LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so
        LoadModule authz_host_module {APACHE_MODULES}/mod_authz_host.so
        Listen 127.0.0.1:{port}
        ServerName localhost
        PidFile "{root}/httpd.pid"
        ErrorLog "{root}/error_log"
        DocumentRoot "{docroot}"
        ExtendedStatus {"On" if extended else "Off"}
        <Location /server-status>
            SetHandler server-status
            Require local
        </Location>
        """)
        + user
    )
    proc = subprocess.Popen(
        [APACHE, "-f", str(conf), "-DFOREGROUND"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _listening(port, proc), timeout=15)
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        shutil.rmtree(docroot, ignore_errors=True)


def _listening(port: int, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"apache2 exited with {proc.returncode}")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("mpm", "extended"),
    [("prefork", True), ("worker", True), ("event", True), ("prefork", False), ("event", False)],
)
def test_auto_lines_match_apache(tmp_path, mpm, extended):
    with apache(tmp_path, mpm, extended=extended) as port:
        get(f"http://127.0.0.1:{port}/")  # a 404, so the totals are not zero
        # Uptime > 0 brings ReqPerSec; let both servers run past their first second.
        wait_for(
            lambda: (
                "ServerUptimeSeconds: 0"
                not in get(f"http://127.0.0.1:{port}/server-status?auto")[2]
            )
        )
        status, headers, theirs = get(f"http://127.0.0.1:{port}/server-status?auto")
    assert status == 200
    with mpmd_server(tmp_path, mpm, extended=extended) as server:
        get(server.url("/hello"))
        wait_for(lambda: "ServerUptimeSeconds: 0" not in get(server.url("/server-status?auto"))[2])
        status, our_headers, ours = get(server.url("/server-status?auto"))
    assert status == 200
    assert (
        our_headers["Content-Type"] == headers["Content-Type"] == "text/plain; charset=ISO-8859-1"
    )
    their_names = [name for name, _ in auto_fields(theirs) if name != "CPULoad"]
    our_names = [name for name, _ in auto_fields(ours) if name != "CPULoad"]
    assert our_names == their_names
    ours_map, theirs_map = dict(auto_fields(ours)), dict(auto_fields(theirs))
    assert ours_map["<host>"] == theirs_map["<host>"] == "127.0.0.1"
    assert ours_map["ServerMPM"] == theirs_map["ServerMPM"] == f" {mpm}"
    assert len(ours_map["Scoreboard"]) == len(theirs_map["Scoreboard"])  # same default pool


def test_status_page_options_access_and_metrics(tmp_path):
    with mpmd_server(tmp_path, "worker") as server:
        for _ in range(5):
            assert get(server.url("/hello"))[0] == 200
        status, headers, _ = get(server.url("/private-status"))
        assert status == 403  # Require ip 10.0.0.0/8 refuses 127.0.0.1
        assert "client denied by server configuration" in server.log_text()
        status, headers, page = get(server.url("/server-status?refresh=3"))
        assert status == 200 and headers["Refresh"] == "3"
        assert headers["Content-Type"] == "text/html; charset=ISO-8859-1"
        assert "<h1>Apache Server Status for 127.0.0.1 (via 127.0.0.1)</h1>" in page
        assert "<td nowrap>GET /server-status?refresh=3 HTTP/1.1</td>" in page  # itself, W
        assert "Server Details" in get(server.url("/server-status?notable"))[2]
        assert get(server.url("/server-status?auto&refresh"))[1]["Refresh"] == "10"
        request = urllib.request.Request(server.url("/server-status"), method="POST", data=b"")
        assert get_request(request) == 405
        auto = dict(auto_fields(get(server.url("/server-status?auto"))[2]))
        status, headers, text = get(server.url("/metrics"))
        later = dict(auto_fields(get(server.url("/server-status?auto"))[2]))
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        accesses = int(auto["Total Accesses"])
        # counters only grow: the scrape lies between the two ?auto reads around it
        assert accesses <= samples[("mpmd_requests_total", ())] <= int(later["Total Accesses"])
        states = {k[1][0][1]: v for k, v in samples.items() if k[0] == "mpmd_workers"}
        assert sum(states.values()) == len(auto["Scoreboard"].strip())

        def worker_states() -> dict[str, float] | None:
            """A scrape showing ready and dead workers (a growing pool may show neither)."""
            scrape = get(server.url("/metrics"))[2]
            found = {
                s.labels["state"]: s.value
                for family in text_string_to_metric_families(scrape)
                for s in family.samples
                if s.name == "mpmd_workers"
            }
            return found if found.get("ready", 0) >= 1 and found.get("dead", 0) >= 1 else None

        wait_for(worker_states, timeout=10)
        assert samples[("mpmd_max_request_workers", ())] == 400
        inf = samples[("mpmd_request_duration_seconds_bucket", (("le", "+Inf"),))]
        assert inf == samples[("mpmd_request_duration_seconds_count", ())] >= accesses
        assert samples[("mpmd_up", ())] == 1


def get_request(request: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.skipif(EXPORTER is None, reason="Debian package prometheus-apache-exporter missing")
def test_prometheus_apache_exporter_reads_mpmd(tmp_path):
    with mpmd_server(tmp_path, "event") as server:
        wait_for(lambda: _settled(server), timeout=15)
        for _ in range(7):
            get(server.url("/hello"))
        port = free_port()
        exporter = subprocess.Popen(
            [EXPORTER, f"--scrape_uri={server.url('/server-status?auto')}",
             f"--telemetry.address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            before = dict(auto_fields(get(server.url("/server-status?auto"))[2]))
            text = wait_for(lambda: _scrape(port), timeout=15)
            after = dict(auto_fields(get(server.url("/server-status?auto"))[2]))
        finally:
            exporter.terminate()
            exporter.wait(timeout=10)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("apache_up", ())] == 1
    accesses = values[("apache_accesses_total", ())]
    assert int(before["Total Accesses"]) <= accesses <= int(after["Total Accesses"])
    idle = values[("apache_workers", (("state", "idle"),))]
    busy = values[("apache_workers", (("state", "busy"),))]
    # requests in flight move workers between busy and idle, never in or out of the pool
    assert idle + busy == int(after["IdleWorkers"]) + int(after["BusyWorkers"])
    assert values[("apache_processes", (("state", "all"),))] == int(after["Processes"])
    board = after["Scoreboard"].strip()
    assert values[("apache_scoreboard", (("state", "idle"),))] == idle  # the same scrape
    assert values[("apache_scoreboard", (("state", "open_slot"),))] == board.count(".")
    scoreboard_total = sum(v for k, v in values.items() if k[0] == "apache_scoreboard")
    assert scoreboard_total == len(board)
    assert ("apache_info", (("mpm", "event"), ("version", "mpmd/0.1.0"))) in values


def _settled(server: Server) -> bool:
    """StartServers children are up: no slot is still starting."""
    board = dict(auto_fields(get(server.url("/server-status?auto"))[2]))["Scoreboard"]
    return "S" not in board and "_" in board


def _scrape(port: int) -> str | None:
    try:
        status, _, text = get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except OSError:
        return None
    return text if status == 200 and "apache_up 1" in text else None


def _load(
    server: Server, stop: threading.Event, clients: int, ramp: float = 0.0
) -> list[threading.Thread]:
    """`clients` looping clients, the n-th joining after n x `ramp` seconds."""

    def client(n: int) -> None:
        stop.wait(n * ramp)
        while not stop.is_set():
            path = "/sleep?seconds=0.4" if n % 2 else "/hello"
            with contextlib.suppress(OSError):
                get(server.url(path), timeout=10)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium missing")
def test_status_page_renders_in_headless_chromium(tmp_path):
    """The grid and the history charts render; MPMD_STATUS_PNG=path keeps the screenshot."""
    seconds = float(os.environ.get("MPMD_STATUS_LOAD_SECONDS", "4"))
    config = STATUS_LOCATION.format(extended="On") + "StartServers 2\nMaxRequestWorkers 50\n"
    with Server(tmp_path, config, mpm="worker") as server:
        stop = threading.Event()
        threads = _load(server, stop, clients=12, ramp=seconds / 24)
        try:
            wait_for(lambda: len(_history_svgs(server)) >= 4, timeout=seconds + 20)
            if seconds > 4:
                stop.wait(seconds)
            dom = _chromium(server.url("/server-status"), "--dump-dom")
            shot = tmp_path / "status.png"
            png = _chromium(
                server.url("/server-status"), f"--screenshot={shot}", "--window-size=1200,1600"
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=15)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<pre>" in dom.stdout and "Scoreboard Key" in dom.stdout
    assert dom.stdout.count("<svg") >= 4 and "<polyline" in dom.stdout
    assert "<title>Memory</title>" in dom.stdout and 'class="mpmd-memory"' in dom.stdout
    assert png.returncode == 0, png.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    keep = os.environ.get("MPMD_STATUS_PNG")
    if keep:
        shutil.copyfile(shot, keep)


def _history_svgs(server: Server) -> list[str]:
    page = get(server.url("/server-status"))[2]
    return page.split("<svg")[1:]


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_cpu_column_shows_the_cpu_a_child_used(tmp_path, mpm):
    """The per-worker CPU column (and the CPU Usage line) come from the child's times()."""
    config = STATUS_LOCATION.format(extended="On") + "WSGIApp /burn testapp:burn\n"
    with Server(tmp_path, config, mpm=mpm) as server:
        status, _, pid = get(server.url("/burn?seconds=0.2"))
        assert status == 200
        row = re.compile(rf"<td>{pid}</td><td>[\d/]+</td><td>.*?\n</td><td>([\d.]+)</td>")

        def cpu_of_that_child() -> float:
            page = get(server.url("/server-status"))[2]
            return max((float(cpu) for cpu in row.findall(page)), default=0.0)

        assert wait_for(lambda: cpu_of_that_child() >= 0.1, timeout=10)
        auto = get(server.url("/server-status?auto"))[2]
        used = sum(float(re.search(rf"^CPU{kind}: (\S+)$", auto, re.M)[1])
                   for kind in ("User", "System"))  # fmt: skip
        assert used >= 0.1


def test_status_and_mpmctl_work_in_single_process_mode(tmp_path):
    server = Server(tmp_path, STATUS_LOCATION.format(extended="On"), args=("-X",))
    with server:
        for _ in range(3):
            assert get(server.url("/hello"))[0] == 200
        auto = dict(auto_fields(get(server.url("/server-status?auto"))[2]))
        assert int(auto["Total Accesses"]) >= 3  # the readiness probe counts too
        assert auto["Scoreboard"] == " W" and auto["Processes"] == " 1"
        code = "import sys; from mpmd.cli import mpmctl_main; sys.exit(mpmctl_main())"
        result = subprocess.run(
            [sys.executable, "-c", code, "status", "-f", str(server.conf)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"parent pid {server.pid}" in result.stdout and "\n_\n" in result.stdout
