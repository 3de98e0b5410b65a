"""ListenCoresBucketsRatio (reference 1.5): one SO_REUSEPORT socket per bucket per Listen
address, each child accepting from its own bucket's (slot % buckets), and the pool kept per
bucket (reference 2.3) — the policy as tables, the spread across children measured live."""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess

import pytest

from mpmd.config.mpm_limits import clamp_mpm, listen_buckets
from mpmd.mpm.listeners import bucket_sockets
from mpmd.mpm.maintenance import (
    SpawnState,
    after_graceful_restart,
    prefork_maintenance,
    threaded_maintenance,
)
from server import Server, call, wait_for
from test_maintenance import Pool, settings

AB = shutil.which("ab")
REQUESTS = 2000
CONCURRENCY = (1, 4)  # ab -c: one client after the other, then four at a time


# -- pure parts -------------------------------------------------------------------------------


def test_buckets_are_cores_over_ratio_at_least_one():
    assert listen_buckets(0, cores=8) == 1  # off
    assert listen_buckets(1, cores=2) == 2
    assert listen_buckets(2, cores=8) == 4
    assert listen_buckets(4, cores=2) == 1


def _raw(mpm: str, **values: int) -> dict[str, int]:
    raw = {"ServerLimit": 16, "StartServers": 1, "ThreadLimit": 64, "ThreadsPerChild": 25,
           "MaxRequestWorkers": 400, "MinSpareThreads": 1, "MaxSpareThreads": 1,
           "MinSpareServers": 1, "MaxSpareServers": 1, "MaxConnectionsPerChild": 0,
           "GracefulShutdownTimeout": 0, "ListenBacklog": 511, "MaxMemoryPerChild": 0,
           "ListenCoresBucketsRatio": 1}  # fmt: skip
    if mpm == "prefork":
        raw.update(ServerLimit=256, MaxRequestWorkers=1)
    raw.update(values)
    return raw


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two buckets")
def test_startup_adjustments_scale_with_buckets():
    """Apache's *_run(): StartServers, MinSpare and MaxSpare raised for b buckets (2.2, 2.3)."""
    b = listen_buckets(1)
    prefork, _ = clamp_mpm("prefork", _raw("prefork"))
    assert prefork.listen_buckets == b
    assert (prefork.max_request_workers, prefork.start_servers) == (b, b)
    assert (prefork.min_spare_servers, prefork.max_spare_servers) == (b, 2 * b)
    event, _ = clamp_mpm("event", _raw("event"))
    assert event.start_servers == b
    assert event.min_spare_threads == 25 * (b - 1) + b
    assert event.max_spare_threads == event.min_spare_threads + 26 * b


def test_each_bucket_has_its_own_socket_and_shares_what_cannot_be_duplicated(tmp_path):
    port_socks = []
    for _ in range(2):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port_socks[0].getsockname()[1] if port_socks else 0))
        port_socks.append(sock)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "s.sock"))
    listeners = [port_socks[0], port_socks[1], unix]
    try:
        assert bucket_sockets(listeners, 2, 0) == [port_socks[0], unix]
        assert bucket_sockets(listeners, 2, 1) == [port_socks[1], unix]
        assert bucket_sockets(listeners, 2, 3) == [port_socks[1], unix]  # slot 3: bucket 1
        assert bucket_sockets(listeners, 1, 1) == listeners
    finally:
        for sock in listeners:
            sock.close()


def test_threaded_maintenance_runs_per_bucket(tmp_path):
    """Two buckets, MinSpareThreads 50 → 25 each: bucket 0 (slot 0) is all busy, bucket 1
    (slot 1) all idle, so only bucket 0 spawns, into its own next slot (2), and keeps its own
    rate; Max/b: bucket 1 retires nothing with 25 idle threads."""
    mpm = settings("event", min_spare_threads=50, max_spare_threads=100, listen_buckets=2)
    pool = Pool(str(tmp_path / "sb"), mpm)
    try:
        pool.child(0, "W" * 25)
        pool.child(1, "_" * 25)
        decision = threaded_maintenance(pool.sb.snapshot(), mpm, SpawnState())
        assert decision.spawn_slots == (2,) and decision.retire is None
        assert [b.rate for b in decision.state.buckets] == [2, 1]
        held = after_graceful_restart(decision.state)
        assert [b.hold_off for b in held.buckets] == [10, 10]
        # too many idle in both buckets: one child retired in each
        for slot in range(2, 8):
            pool.child(slot, "_" * 25)
        pool.child(0, "_" * 25)
        decision = threaded_maintenance(pool.sb.snapshot(), mpm, decision.state)
        retired = {decision.retire, *decision.retire_more}
        assert {slot % 2 for slot in retired} == {0, 1} and len(retired) == 2
    finally:
        pool.close()


# -- the real server: the spread of requests across children -----------------------------------


POOLS = {  # four workers that stay: 4 prefork children, or 2 children of 2 threads
    "prefork": "StartServers 4\nMinSpareServers 4\nMaxSpareServers 8\nServerLimit 4\n",
    "worker": "StartServers 2\nThreadsPerChild 2\nMinSpareThreads 4\nServerLimit 2\n",
}
POOLS["event"] = POOLS["worker"]


def _spread(tmp_path, ratio: int, concurrency: int, mpm: str = "prefork") -> list[int]:
    """Requests per child (most first) of REQUESTS short connections from ab, `concurrency`
    at a time, against four workers (prefork: 4 children)."""
    pid_log = tmp_path / "pid_log"
    children = 4 if mpm == "prefork" else 2
    config = f"""\
        {POOLS[mpm]}
        MaxRequestWorkers 4
        ListenCoresBucketsRatio {ratio}
        WSGIApp /hello testapp:hello
        CustomLog "{pid_log}" "%P %U"
        <Location /server-status>
          SetHandler server-status
        </Location>
        """
    tmp_path.mkdir()
    with Server(tmp_path, config, mpm=mpm) as server:
        # every child serves (this request is one of them)
        wait_for(lambda: b"IdleWorkers: 3\n" in call(server, "GET", "/server-status?auto")[2])
        pid_log.write_text("")
        subprocess.run([AB, "-q", "-n", str(REQUESTS), "-c", str(concurrency), server.url("/hello")],
                       check=True, capture_output=True, timeout=300)  # fmt: skip

        def counted() -> collections.Counter | None:
            lines = [ln.split() for ln in pid_log.read_text().splitlines()]
            hits = collections.Counter(pid for pid, path in lines if path == "/hello")
            return hits if sum(hits.values()) == REQUESTS else None

        hits = wait_for(counted)
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"],
                                   capture_output=True, text=True).stdout  # fmt: skip
        sockets = len(listening.splitlines()) if shutil.which("ss") else None
    counts = sorted(hits.values(), reverse=True)
    print(f"{mpm}: ab -c {concurrency}, ListenCoresBucketsRatio {ratio}: {sockets} listening sockets, requests per child "
          f"{counts} ({', '.join(f'{100 * n / REQUESTS:.0f}%' for n in counts)})")  # fmt: skip
    return counts + [0] * (children - len(counts))


@pytest.mark.slow
@pytest.mark.skipif(AB is None, reason="ab (apache2-utils) is not installed")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two buckets")
def test_every_child_gets_requests_with_buckets(tmp_path):
    """Recorded (pytest -s prints them), not judged: the spread without and with buckets; the
    behaviour asserted: with buckets and clients four at a time, every child serves."""
    for concurrency in CONCURRENCY:
        without = _spread(tmp_path / f"off{concurrency}", 0, concurrency)
        spread = _spread(tmp_path / f"on{concurrency}", 1, concurrency)
        assert sum(without) == sum(spread) == REQUESTS
    assert all(count > 0 for count in spread), spread


@pytest.mark.slow
@pytest.mark.skipif(AB is None, reason="ab (apache2-utils) is not installed")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two buckets")
@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_threaded_children_serve_their_buckets(tmp_path, mpm):
    spread = _spread(tmp_path / "on", 1, 4, mpm)
    assert sum(spread) == REQUESTS and all(count > 0 for count in spread), spread


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two buckets")
def test_a_restart_keeps_the_buckets_the_sockets_were_bound_for():
    first, _ = clamp_mpm("event", _raw("event"))
    again, warnings = clamp_mpm("event", _raw("event", ListenCoresBucketsRatio=0), previous=first)
    assert again.listen_buckets == first.listen_buckets > 1
    assert any(w.startswith("MP00271: keeping 2 listener bucket(s)") for w in warnings)


def test_prefork_retires_from_the_bucket_with_most_idle_children(tmp_path):
    """Slots 0, 2, 4 (bucket 0) and 1 (bucket 1) idle, MaxSpareServers 3: the victim is the
    highest idle slot of bucket 0, never bucket 1's only child."""
    mpm = settings("prefork", min_spare_servers=1, max_spare_servers=3, listen_buckets=2)
    pool = Pool(str(tmp_path / "sb"), mpm)
    try:
        for slot in (0, 1, 2, 4):
            pool.child(slot, "_")
        pool.child(3, "W")
        assert prefork_maintenance(pool.sb.snapshot(), mpm, SpawnState()).retire == 4
    finally:
        pool.close()
