"""`mpmctl advise` against real servers: a running mpmd (scoreboard, /proc, its %D access log),
the offline probe of an application, the status page's `?advice`; every snippet printed is
then checked by `mpmd -t` and by Debian's `apache2 -t`, with no clamp warning from either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from server import APPS, Server, call, wait_for

APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
TIMED = '%h %l %u %t.%{usec_frac}t \\"%r\\" %>s %b %k %D'
LIVE_CONFIG = f"""\
LogFormat "{TIMED}" timed
CustomLog "TMP/timed_log" timed
WSGIApp / testapp:sleepy
ExtendedStatus On
<Location /server-status>
    SetHandler server-status
</Location>
"""

pytestmark = pytest.mark.slow


def mpmctl(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from mpmd.cli import mpmctl_main; sys.exit(mpmctl_main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def assert_both_accept(tmp: Path, snippet: str, mpm: str) -> None:
    """`mpmd -t` and `apache2 -t` on a config that loads the MPM and includes the snippet."""
    (tmp / "advice.conf").write_text(snippet)
    base = (f'Listen 127.0.0.1:1\nServerName localhost\nServerRoot "{tmp}"\n'
            f'PidFile "{tmp}/check.pid"\nErrorLog "{tmp}/check_error_log"\n'
            f'Include "{tmp}/advice.conf"\n')  # fmt: skip
    conf = tmp / "mpmd-check.conf"
    conf.write_text(f"LoadModule mpm_{mpm}_module modules/mod_mpm_{mpm}.so\n{base}")
    done = subprocess.run([sys.executable, "-m", "mpmd", "-t", "-f", str(conf)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Syntax OK" in done.stdout
    assert "WARNING" not in done.stderr and "AH0" not in done.stderr, done.stderr
    if not os.access(APACHE, os.X_OK):
        return  # Debian's apache2 is not installed: mpmd's check only
    conf = tmp / "apache-check.conf"
    conf.write_text(f"LoadModule mpm_{mpm}_module {APACHE_MODULES}/mod_mpm_{mpm}.so\n{base}")
    env = dict(os.environ, APACHE_RUN_DIR=str(tmp), APACHE_LOCK_DIR=str(tmp),
               APACHE_LOG_DIR=str(tmp))  # fmt: skip
    done = subprocess.run([APACHE, "-t", "-f", str(conf)], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Syntax OK" in done.stderr + done.stdout
    assert "AH0" not in done.stderr and "WARNING" not in done.stderr, done.stderr


def _traffic(server: Server, count: int = 40, parallel: int = 4) -> None:
    def client() -> None:
        for _ in range(count // parallel):
            assert call(server, "GET", "/?seconds=0.02")[0] == 200

    threads = [threading.Thread(target=client) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_advice_for_a_running_server(tmp_path, mpm):
    with Server(tmp_path, LIVE_CONFIG.replace("TMP", str(tmp_path)), mpm=mpm) as server:
        _traffic(server)
        # until the parent's tick has sampled the children's memory and written history
        done = wait_for(lambda: (d := mpmctl("advise", "-f", str(server.conf))).returncode == 0
                        and d, timeout=15)  # fmt: skip
        text = done.stdout
        assert "Traceback" not in done.stderr
        assert f"<IfModule mpm_{mpm}_module>" in text
        assert "Planner check: " in text and "requests of timed_log replayed" in text
        assert "Memory budget: 0.9 x (MemAvailable" in text
        assert_both_accept(tmp_path, text, mpm)

        report = json.loads(mpmctl("advise", "-f", str(server.conf), "--json").stdout)
        assert report["mpm"] == mpm  # thread safety assumed from the running MPM
        assert report["planner"]["refused"] == 0
        assert report["planner"]["requests"] >= 40
        assert report["inputs"]["traffic"]["service_s"] >= 0.02
        assert report["directives"]["MaxRequestWorkers"] >= 1

        status, headers, body = call(server, "GET", "/server-status")
        assert b'href="?advice"' in body
        status, headers, body = call(server, "GET", "/server-status?advice")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        advice = body.decode()
        assert advice.startswith("# mpmctl advise for the running server")
        assert f"<IfModule mpm_{mpm}_module>" in advice
        assert_both_accept(tmp_path, advice, mpm)
        _, _, auto = call(server, "GET", "/server-status?auto")
        assert b"advice" not in auto and b"IfModule" not in auto


def test_status_page_without_extended_status_has_no_advice(tmp_path):
    conf = LIVE_CONFIG.replace("TMP", str(tmp_path)).replace(
        "ExtendedStatus On", "ExtendedStatus Off"
    )
    with Server(tmp_path, conf, mpm="prefork") as server:
        _, _, body = call(server, "GET", "/server-status")
        assert b"?advice" not in body
        _, headers, body = call(server, "GET", "/server-status?advice")
        assert headers["Content-Type"].startswith("text/html")  # the page, no advice


def test_offline_probe_of_a_thread_safe_app(tmp_path):
    done = mpmctl("advise", "--app", f"{APPS}/testapp.py:hello", "--thread-safe", "yes")
    assert done.returncode == 0, done.stderr
    assert "<IfModule mpm_event_module>" in done.stdout
    assert "a thread" in done.stdout  # the per-thread cost from the two probes
    assert_both_accept(tmp_path, done.stdout, "event")


def test_offline_probe_of_an_asgi_app(tmp_path):
    """An ASGI application is found as `mpmd module:app` finds it, probed with ASGIApp under
    event, and advised event (thread safety not asked) with a loop a core."""
    done = mpmctl("advise", "--app", f"{APPS}/asgi_apps.py:hello")
    assert done.returncode == 0, done.stderr
    assert "<IfModule mpm_event_module>" in done.stdout
    assert "(ASGI) under event" in done.stdout
    assert "ThreadsPerChild 4" in done.stdout
    assert_both_accept(tmp_path, done.stdout, "event")


def test_offline_probe_with_an_access_log(tmp_path):
    log = tmp_path / "access_log"
    log.write_text("".join(
        f'127.0.0.1 - - [05/Dec/2026:00:00:{s:02d} +0000] "GET / HTTP/1.1" 200 5 0 50000\n'
        for s in range(30) for _ in range(20)
    ))  # fmt: skip
    done = mpmctl("advise", "--app", "testapp:hello", "--access-log", str(log), "--log-format",
                  '%h %l %u %t "%r" %>s %b %k %D', "--json")  # fmt: skip
    # testapp is imported from the current directory: run there
    assert done.returncode == 1 and "No module named 'testapp'" in done.stderr
    code = "import sys; from mpmd.cli import mpmctl_main; sys.exit(mpmctl_main())"
    done = subprocess.run([sys.executable, "-c", code, "advise", "--app", "testapp:hello",
                           "--access-log", str(log), "--log-format",
                           '%h %l %u %t "%r" %>s %b %k %D', "--json"],
                          capture_output=True, text=True, timeout=120, cwd=APPS)  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mpm"] == "prefork"  # thread safety not stated
    # each second's 20 arrivals spread within it: 0.025 s ... 29.975 s
    assert report["inputs"]["traffic"]["rate"] == pytest.approx(600 / 29.95)
    assert report["inputs"]["traffic"]["peak_rate"] == 20
    assert report["planner"]["requests"] == 600
    assert report["planner"]["refused"] == 0
    assert report["planner"]["peak_memory_kib"] <= report["budget_kib"]


def test_an_app_that_does_not_fit_gets_no_config():
    done = mpmctl("advise", "--app", f"{APPS}/testapp.py:hello", "--memory-budget", "4M")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "NOT SAFE" in done.stderr and "budget is 4096 KiB" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("app", "reason"),
    [
        (f"{APPS}/broken_import.py:app", "ImportError: this application is broken on purpose"),
        ("no_such_module_here:app", "ModuleNotFoundError: No module named 'no_such_module_here'"),
        (f"{APPS}/testapp.py:no_such_callable", "no attribute 'no_such_callable'"),
    ],
)
def test_an_app_that_does_not_start_is_a_clear_message(app, reason):
    done = mpmctl("advise", "--app", app)
    assert done.returncode == 1
    assert done.stderr.startswith("mpmctl advise: --app ")
    assert reason in done.stderr
    assert "Traceback" not in done.stderr
