"""Issue 11's failover acceptance on the real server (prefork, worker, event): a back end
SIGKILLed under 20 keep-alive clients costs them no error; it is back after `retry` seconds,
or with mod_proxy_hcheck within 5 s of accepting connections again; and a back end that
answers badly gives a 502 (or a cut once the response started), an error-log line naming
the member, and no dead worker.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import importlib.util
import re
import socket
import threading
import time
from datetime import datetime

import pytest

from backends import MpmdBackends, nginx_each
from proxy_doubles import Backend
from server import Server, children_of, pid_alive, wait_for
from test_balancer_e2e import MPMS, Front, get

# 20 keep-alive clients each hold a connection (and, in prefork, a child; in worker, a
# thread). The event MPM's threads still wait for the back end (until it proxies in its loop):
# a child may hold all 20 clients, and one whose threads were all busy closes its idle
# keep-alive connections (Apache's "kill them all"), which a client sees; so 25 threads each.
LOAD_POOLS = {
    "prefork": "StartServers 22\nMinSpareServers 5\nMaxSpareServers 30\n",
    "worker": "StartServers 2\nThreadsPerChild 25\nMinSpareThreads 4\nMaxSpareThreads 60\n",
    "event": "StartServers 2\nThreadsPerChild 25\nMinSpareThreads 4\nMaxSpareThreads 60\n",
}
KEEP_ALIVE = "MaxKeepAliveRequests 0\nKeepAliveTimeout 30\n"
CLIENTS = 20
PER_CLIENT = 150
HCHECK = importlib.util.find_spec("mpmd.handlers.proxy.hcheck") is not None


class Load:
    """`CLIENTS` threads, each one persistent connection doing PER_CLIENT GETs; every answer
    is recorded as (wall times when it was sent and answered, status, member); an exception
    is an error
    (no client-side retry: any failure would be seen by a real client)."""

    def __init__(self, port: int, path: str = "/app/") -> None:
        self.port = port
        self.path = path
        self.results: list[tuple[float, float, int, str]] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._client) for _ in range(CLIENTS)]

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            for _ in range(PER_CLIENT):
                sent = time.time()
                try:
                    conn.request("GET", self.path)
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as error:
                    self.errors.append(repr(error))
                    return
                self.results.append(
                    (sent, time.time(), response.status, response.headers.get("X-Backend", ""))
                )
        finally:
            conn.close()

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def join(self) -> None:
        for thread in self.threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in self.threads)


def _log_times(log: str, ah: str) -> list[float]:
    """The wall times of the error-log lines with `ah` (Apache's `[Fri Dec 04 22:06:42.458885
    2026]` stamp)."""
    times = []
    for line in log.splitlines():
        if ah in line:
            stamp = re.match(r"\[(\w{3} \w{3} \d\d \d\d:\d\d:\d\d\.\d{6} \d{4})\]", line)
            times.append(datetime.strptime(stamp.group(1), "%a %b %d %H:%M:%S.%f %Y").timestamp())
    return times


def _kill_under_load(front: Server, kill, start, path: str = "/app/") -> tuple[Load, float]:
    """Run the load; SIGKILL the victim once a third of it is done, and start it again on
    the same port once the server has put it out (AH00959, or hcheck's AH03303). Returns the
    finished load and when the restarted one accepted."""
    load = Load(front.port, path).start()
    wait_for(lambda: len(load.results) >= CLIENTS * PER_CLIENT // 3 or load.errors, timeout=60)
    kill()
    wait_for(lambda: re.search("AH00959|AH03303", front.log_text()), timeout=30)
    start()  # returns once it accepts connections
    accepting = time.time()
    load.join()
    return load, accepting


@contextlib.contextmanager
def _three_backends(tmp_path, kind: str):
    """(member URLs, kill backend-1, start it again, the load's path): nginx, or mpmd
    answering in 20 ms so that requests are in flight on the victim when it dies."""
    if kind == "nginx":
        with nginx_each(3, tmp_path / "nginx") as nginx:
            yield [n.member for n in nginx], nginx[1].kill, nginx[1].start, "/app/"
    else:
        with MpmdBackends(3, tmp_path / "backends") as mpmd:
            restart = functools.partial(mpmd.restart, 1)
            yield mpmd.members(), functools.partial(mpmd.kill, 1), restart, "/app/slow?ms=20"


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
@pytest.mark.parametrize("kind", ["nginx", "mpmd-slow"])
def test_sigkill_under_keep_alive_load_then_back_after_retry(tmp_path, mpm, kind):
    """No client sees an error (GETs in flight on the victim go to another member); AH00959
    is logged; the restarted member gets no request chosen before `retry` seconds from its
    error, and gets requests after."""
    retry = 3
    with _three_backends(tmp_path, kind) as (urls, kill, start, path):
        members = [f"{url} retry={retry}" for url in urls]
        front = Front(tmp_path / "front", mpm, members, config=KEEP_ALIVE, pool=LOAD_POOLS[mpm])
        with front:
            load, _ = _kill_under_load(front, kill, start, path)
            assert load.errors == []
            assert len(load.results) == CLIENTS * PER_CLIENT
            assert {status for _, _, status, _ in load.results} == {200}
            errors = _log_times(front.log_text(), "AH00959")
            assert errors, front.log_text()[-2000:]
            port = urls[1].rsplit(":", 1)[1]
            assert f"disabling worker for (127.0.0.1:{port}) for {retry}s" in front.log_text()
            # a request sent after the error was logged is chosen after the member went into
            # error (at the earliest when the first line was logged): it reaches the member
            # only `retry` seconds later
            back_from = errors[0] + retry
            later = [
                done
                for sent, done, _, name in load.results
                if name == "backend-1" and sent > errors[0]
            ]
            assert all(done >= back_from for done in later), (later[:3], back_from)
            # after retry seconds the member is tried again, and answers
            wait_for(lambda: get(front, "/app/")[1] == "backend-1", timeout=retry + 10)
            assert time.time() >= back_from


@pytest.mark.slow
@pytest.mark.skipif(not HCHECK, reason="mod_proxy_hcheck's checker is not on this branch yet")
@pytest.mark.parametrize("mpm", MPMS)
def test_sigkill_under_keep_alive_load_then_back_by_hcheck(tmp_path, mpm):
    """With health checks (and the default retry of 60 s), the restarted member takes
    requests again within 5 s of accepting connections."""
    with _three_backends(tmp_path, "nginx") as (urls, kill, start, path):
        members = [f"{url} hcmethod=GET hcinterval=2 hcpasses=2" for url in urls]
        front = Front(tmp_path / "front", mpm, members, config=KEEP_ALIVE, pool=LOAD_POOLS[mpm])
        with front:
            load, accepting = _kill_under_load(front, kill, start, path)
            assert load.errors == []
            assert {status for _, _, status, _ in load.results} == {200}
            assert "AH00959" in front.log_text() or "AH03303" in front.log_text()
            wait_for(
                lambda: get(front, "/app/")[1] == "backend-1",
                timeout=max(0.0, accepting + 5 - time.time()),
            )
            # it was out (not merely never noticed) and the checker put it back
            assert "AH03302" in front.log_text() and "Health check ENABLING" in front.log_text()


# -- bad back ends --------------------------------------------------------------------------------


def _malformed_status(sock, reader, backend):
    while reader.head() is not None:
        sock.sendall(b"HTTX/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def _oversized_header(sock, reader, backend):
    while reader.head() is not None:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20_000 + b"\r\nContent-Length: 2\r\n\r\nok"
        )


def _closes_mid_body(sock, reader, backend):
    if reader.head() is not None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)


def _raw_get(port: int, path: str) -> bytes:
    """One GET; everything the server sends until it closes (or 10 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                return data
            if not got:
                return data
            data += got


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_bad_backends_502_or_cut_logged_and_no_worker_dies(tmp_path, mpm):
    with (
        Backend(_malformed_status) as malformed,
        Backend(_oversized_header) as oversized,
        Backend(_closes_mid_body) as cut,
    ):
        config = "".join(
            f'ProxyPass "/{name}" "http://127.0.0.1:{b.port}"\n'
            for name, b in (("malformed", malformed), ("oversized", oversized), ("cut", cut))
        )
        with Server(tmp_path, config, mpm=mpm) as front:
            children = children_of(front.pid)
            for _ in range(3):
                for name in ("malformed", "oversized"):
                    reply = _raw_get(front.port, f"/{name}/x")
                    assert reply.startswith(b"HTTP/1.1 502 "), (name, reply[:200])
                reply = _raw_get(front.port, "/cut/x")
                head, _, body = reply.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ") and len(body) < 100000  # the cut shows
            log = front.log_text()
            for ah, backend in (("AH00898", malformed), ("AH10124", oversized), ("AH01110", cut)):
                line = re.search(f"{ah}: .* returned by http://127.0.0.1:{backend.port}/x\n", log)
                assert line, (ah, log[-3000:])
            assert all(pid_alive(pid) for pid in children)  # no worker died
            assert _raw_get(front.port, "/malformed/y").startswith(b"HTTP/1.1 502 ")
