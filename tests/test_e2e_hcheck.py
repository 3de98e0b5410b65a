"""mod_proxy_hcheck end to end: the real server checks real loopback back ends from one process."""

from __future__ import annotations

import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.server import Server, children_of, free_port, pid_alive, wait_for

from mpmd.handlers.proxy.state import ProxyState

pytestmark = pytest.mark.slow


class Backend:
    """A loopback HTTP back end that records when each health-check request arrived; it can
    be stopped and started again on the same port (a back end going down and coming back)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.checks: list[float] = []  # time.monotonic() of each GET /hc
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Backend:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/hc":
                    backend.checks.append(time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"up")

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def backends():
    pair = [Backend().start(), Backend().start()]
    yield pair
    for backend in pair:
        backend.stop()


def balanced_server(tmp_path: Path, backends: list[Backend], extra: str = "", **kw) -> Server:
    members = "\n".join(
        f"  BalancerMember http://127.0.0.1:{b.port} hcmethod=GET hcuri=/hc hcinterval=1 "
        "hcpasses=2 hcfails=1"
        for b in backends
    )
    config = f"""
ScoreBoardFile "{tmp_path}/scoreboard"
{extra}
<Proxy balancer://hc>
{members}
</Proxy>
ProxyPass /app balancer://hc
"""
    return Server(tmp_path, config, **kw)


def member_flags(tmp_path: Path, backend: Backend) -> tuple[bool, int]:
    state = ProxyState.attach(f"{tmp_path}/scoreboard.proxy")
    try:
        info = state.snapshot().balancer("balancer://hc").members
        slot = next(m for m in info if m.url == f"http://127.0.0.1:{backend.port}")
        return slot.has_flag("C"), slot.hc_pcount
    finally:
        state.close()


def checker_pids(server: Server) -> list[int]:
    found = []
    for pid in children_of(server.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if b"proxy health checks" in file.read() and pid_alive(pid):
                    found.append(pid)
        except OSError:
            pass
    return found


def test_a_dead_member_gets_c_and_comes_back_after_hcpasses(tmp_path: Path, backends) -> None:
    down, up = backends
    with balanced_server(tmp_path, backends) as server:
        wait_for(lambda: len(down.checks) >= 1 and len(up.checks) >= 1)
        assert member_flags(tmp_path, down) == (False, 0)
        down.stop()
        name = f"http://127.0.0.1:{down.port}"
        wait_for(lambda: f"AH03303: Threaded Health check DISABLING {name}\n" in server.log_text())
        assert member_flags(tmp_path, down)[0] is True
        assert member_flags(tmp_path, up)[0] is False
        line = next(li for li in server.log_text().splitlines() if "AH03303" in li)
        assert "[proxy_hcheck:info]" in line
        down.start()
        wait_for(lambda: member_flags(tmp_path, down) == (True, 1))  # one pass of two
        wait_for(lambda: f"AH03302: Threaded Health check ENABLING {name}\n" in server.log_text())
        assert member_flags(tmp_path, down) == (False, 0)


@pytest.mark.parametrize("preload", ["Off", "On"])
def test_one_process_checks_whatever_the_number_of_children(
    tmp_path: Path, backends, preload: str
) -> None:
    """prefork with 4 children: still one checker, whose checks of a member are at least an
    interval apart (several checkers sharing the state would race into back-to-back checks);
    a graceful restart (a re-exec of the parent with WSGIPreload On) replaces it, a stop ends
    it."""
    first = backends[0]
    extra = (
        "StartServers 4\nMinSpareServers 4\nMaxSpareServers 8\n"
        f"WSGIApp /wsgi testapp:hello\nWSGIPreload {preload}"
    )
    server = balanced_server(tmp_path, backends, extra, mpm="prefork")
    with server:
        wait_for(lambda: len(children_of(server.pid)) >= 5)
        (checker,) = wait_for(lambda: checker_pids(server))
        wait_for(lambda: len(first.checks) >= 4, timeout=15)
        gaps = [b - a for a, b in zip(first.checks, first.checks[1:], strict=False)]
        assert min(gaps) >= 0.9, gaps
        assert checker_pids(server) == [checker]
        server.signal(signal.SIGUSR1)
        wait_for(lambda: checker_pids(server) and checker_pids(server) != [checker])
        wait_for(lambda: not pid_alive(checker))
        assert len(checker_pids(server)) == 1
        replacement = checker_pids(server)[0]
    assert not pid_alive(replacement)
