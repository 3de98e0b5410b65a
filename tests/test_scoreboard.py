"""The shared scoreboard: layout, writers, readers, across real processes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from mpm_load import attach_scoreboard, fetch
from mpmd.mpm.scoreboard import (
    BUSY_WRITE,
    DEAD,
    GRACEFUL,
    HISTORY_SECONDS,
    KEEPALIVE,
    READY,
    STARTING,
    STATE_CHARS,
    Scoreboard,
    default_path,
    strip_password,
)
from server import Server


@pytest.fixture
def board(tmp_path):
    sb = Scoreboard.create(
        str(tmp_path / "sb"), 16, 64, "event", threads_per_child=25, max_request_workers=400
    )
    yield sb
    sb.unlink()
    sb.close()


def _wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def _start_child(sb: Scoreboard, slot: int, generation: int, threads: int) -> None:
    """What parent + child do for a fresh child, in one process (for table-driven tests)."""
    sb.process(slot).start(os.getpid(), generation)
    for t in range(threads):
        sb.worker(slot, t).reset_for_new_child(os.getpid(), generation)
        sb.worker(slot, t).set_state(READY)


def test_state_chars_follow_apache_codes():
    assert STATE_CHARS == ".S_RWKLDCGI"
    assert (DEAD, STARTING, READY, BUSY_WRITE, KEEPALIVE, GRACEFUL) == (0, 1, 2, 4, 5, 9)


def test_create_writes_the_global_record(board):
    snap = board.snapshot()
    assert (snap.server_limit, snap.thread_limit) == (16, 64)
    assert (board.server_limit, board.thread_limit) == (16, 64)
    assert (snap.mpm, snap.parent_pid) == ("event", os.getpid())
    assert (snap.generation, snap.config_generation) == (0, 1)
    assert (snap.threads_per_child, snap.max_request_workers) == (25, 400)
    assert abs(snap.restart_time_us / 1e6 - time.time()) < 60
    board.generation = 3
    board.config_generation = 4
    board.set_limits(10, 150)
    snap = board.snapshot()
    assert (snap.generation, snap.config_generation) == (3, 4)
    assert (snap.threads_per_child, snap.max_request_workers) == (10, 150)
    assert all(p.pid == 0 for p in snap.processes) and len(snap.processes) == 16
    assert snap.statuses == bytes(16 * 64)


def test_default_path_is_derived_from_the_parent_pid():
    assert default_path(1234).endswith("/mpmd-1234.scoreboard")


def test_forked_child_writes_and_parent_reads_live(board):
    """A real fork: the child writes its own record, the parent sees it while it runs."""
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(release_w)
            board.process(2).start(os.getpid(), 0)
            w = board.worker(2, 5)
            w.reset_for_new_child(os.getpid(), 0, tid=77)
            w.connection_start()
            w.request_start("GET /slow HTTP/1.1", "10.0.0.9", "example.org:80", "http/1.1", 1)
            w.request_end(512, 2_000, 2)
            w.request_start("GET /next HTTP/1.1", "10.0.0.9", "example.org:80", "http/1.1", 3)
            os.read(release_r, 1)  # stay busy until the parent has looked
            w.request_end(488, 40_000, 4)
            w.set_state(KEEPALIVE)
        finally:
            os._exit(0)
    os.close(release_r)
    try:
        _wait_until(lambda: board.snapshot().worker(2, 5).request == "GET /next HTTP/1.1")
        snap = board.snapshot()
        live = snap.worker(2, 5)
        assert (live.status, live.pid, live.tid, live.access_count) == (BUSY_WRITE, pid, 77, 1)
        assert snap.processes[2].pid == pid
        assert snap.worker_counts().busy == 1
    finally:
        os.close(release_w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    done = board.snapshot().worker(2, 5)
    assert done.state_char == "K"
    assert (done.access_count, done.bytes_served, done.conn_count, done.conn_bytes) == (
        2,
        1000,
        2,
        1000,
    )
    assert (done.duration_us, done.last_duration_us, done.last_used_us) == (42_000, 40_000, 4)
    assert (done.client, done.vhost, done.protocol) == ("10.0.0.9", "example.org:80", "http/1.1")


def test_attach_readonly_from_another_process(board):
    _start_child(board, 0, 0, 3)
    w = board.worker(0, 1)
    w.request_start("GET /a HTTP/1.1", "1.2.3.4", "h:80", "http/1.1", 10)
    w.request_end(100, 300, 11)
    code = (
        "import json, sys\n"
        "from mpmd.mpm.scoreboard import Scoreboard\n"
        "sb = Scoreboard.attach(sys.argv[1])\n"
        "s = sb.snapshot()\n"
        "c = s.worker_counts()\n"
        "print(json.dumps([s.mpm, s.totals().accesses, c.busy, c.idle,\n"
        "                  s.scoreboard_string(16, 25)[:3], s.worker(0, 1).request]))\n"
        "try:\n"
        "    sb.worker(0, 0).set_state(4)\n"
        "except TypeError:\n"
        "    print('readonly')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, board.path], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert json.loads(first) == ["event", 1, 1, 2, "_W_", "GET /a HTTP/1.1"]
    assert second == "readonly"


def test_attach_rejects_other_files(tmp_path):
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"x" * 8192)
    with pytest.raises(ValueError):
        Scoreboard.attach(str(bogus))


def test_counters_survive_a_new_child_in_the_slot(board):
    first = board.worker(1, 0)
    first.reset_for_new_child(1001, 0)
    for i in range(3):
        first.request_start(f"GET /{i} HTTP/1.1", "c", "v", "p", 0)
        first.request_end(100, 1_000, 0)
    board.mark_process_dead(1)
    dead = board.snapshot().worker(1, 0)
    assert (dead.status, dead.access_count, dead.my_access_count) == (DEAD, 3, 0)
    # a new child (a new writer object, as after a fork) continues the slot totals
    second = board.worker(1, 0)
    second.reset_for_new_child(1002, 1)
    second.request_start("GET / HTTP/1.1", "c", "v", "p", 0)
    second.request_end(50, 1_000, 0)
    w = board.snapshot().worker(1, 0)
    assert (w.pid, w.generation, w.access_count, w.bytes_served) == (1002, 1, 4, 350)
    assert (w.my_access_count, w.my_bytes_served, w.duration_us) == (1, 50, 4_000)
    assert board.snapshot().totals().accesses == 4


def test_ready_resets_connection_counters_and_dead_resets_child_counters(board):
    w = board.worker(0, 0)
    w.reset_for_new_child(5, 0)
    w.connection_start()
    w.request_end(10, 1, 0)
    assert board.snapshot().worker(0, 0).conn_count == 1
    w.set_state(READY)
    info = board.snapshot().worker(0, 0)
    assert (info.conn_count, info.conn_bytes, info.my_access_count) == (0, 0, 1)
    assert abs(info.last_used_us / 1e6 - time.time()) < 60
    w.request_end(10, 1, 0)
    w.set_state(DEAD)
    info = board.snapshot().worker(0, 0)
    assert (info.my_access_count, info.my_bytes_served, info.access_count) == (0, 0, 2)


def test_string_fields_truncated_and_password_stripped(board):
    w = board.worker(0, 0)
    w.reset_for_new_child(5, 0)
    long_path = "/" + "x" * 200
    w.request_start(f"GET {long_path} HTTP/1.1", "c" * 100, "v" * 40, "p" * 20, 0)
    info = board.snapshot().worker(0, 0)
    assert info.request == f"GET {long_path}"[:63]
    assert (len(info.client), len(info.vhost), len(info.protocol)) == (63, 31, 15)
    w.request_start("GET http://bob:s3cret@example.org/p?q=1 HTTP/1.1", "c", "v", "p", 0)
    assert board.snapshot().worker(0, 0).request == "GET http://bob@example.org/p?q=1 HTTP/1.1"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("GET /a@b HTTP/1.1", "GET /a@b HTTP/1.1"),
        ("GET http://u:p@h/ HTTP/1.1", "GET http://u@h/ HTTP/1.1"),
        ("GET http://u@h/ HTTP/1.1", "GET http://u@h/ HTTP/1.1"),
        ("GET http://h/?mail=a:b@c HTTP/1.1", "GET http://h/?mail=a:b@c HTTP/1.1"),
        ("OPTIONS * HTTP/1.1", "OPTIONS * HTTP/1.1"),
    ],
)
def test_strip_password(line, expected):
    assert strip_password(line) == expected


def test_duration_histogram_buckets(board):
    w = board.worker(3, 0)
    w.reset_for_new_child(5, 0)
    for duration_us in (1_000, 5_000, 5_001, 2_000_000, 60_000_000):
        w.request_end(0, duration_us, 0)
    counts, total = board.snapshot().duration_histogram()
    assert len(counts) == 15
    assert (counts[0], counts[1], counts[10], counts[14]) == (2, 1, 1, 1)
    assert sum(counts) == 5
    assert total == pytest.approx(62.011001)


def test_requests_ended_together_count_as_one_by_one(board):
    """The event loop stores a round of proxied requests at once (requests_end): the same
    counters and histogram as request_end for each, the last one's duration the slot's."""
    ended = [(100, 1_000), (50, 5_001), (7, 2_000_000), (0, 1_000)]
    one, batch = board.worker(3, 0), board.worker(3, 1)
    for record in (one, batch):
        record.reset_for_new_child(5, 0)
    for bytes_sent, duration_us in ended:
        one.request_end(bytes_sent, duration_us, 9)
    batch.requests_end(ended, 9)
    snap = board.snapshot()
    a, b = snap.worker(3, 0), snap.worker(3, 1)
    numbers = ("access_count", "bytes_served", "conn_count", "conn_bytes", "duration_us",
               "last_duration_us", "last_used_us")  # fmt: skip
    assert [getattr(b, n) for n in numbers] == [getattr(a, n) for n in numbers]
    assert (b.access_count, b.bytes_served, b.last_duration_us) == (4, 157, 1_000)
    counts, _ = snap.duration_histogram()
    assert (counts[0], counts[1], counts[10]) == (4, 2, 2)  # both records' requests


def test_worker_counts_follow_mod_status_rules(board):
    board.generation = 1
    _start_child(board, 0, 1, 4)  # current generation
    _start_child(board, 1, 0, 4)  # old generation: its `_` are not idle
    _start_child(board, 2, 1, 4)  # quiescing: not counted at all
    board.process(2).quiescing = 1
    board.worker(0, 0).set_state(BUSY_WRITE)
    board.worker(0, 1).set_state(STARTING)
    board.worker(1, 0).set_state(GRACEFUL)
    board.worker(1, 1).set_state(KEEPALIVE)
    counts = board.snapshot().worker_counts()
    assert (counts.busy, counts.idle, counts.graceful) == (2, 2, 1)


def test_scoreboard_string_lengths(tmp_path):
    event = Scoreboard.create(str(tmp_path / "e"), 16, 64, "event")
    prefork = Scoreboard.create(str(tmp_path / "p"), 256, 1, "prefork")
    try:
        assert len(event.snapshot().scoreboard_string(16, 25)) == 400
        assert len(prefork.snapshot().scoreboard_string(256, 1)) == 256
        # Debian sizes: 6 children x 25 threads; a live slot beyond the limit still shows
        _start_child(event, 0, 0, 25)
        _start_child(event, 9, 0, 25)
        text = event.snapshot().scoreboard_string(6, 25)
        assert len(text) == 150 + 25
        assert text.startswith("_" * 25 + "." * 125) and text.endswith("_" * 25)
    finally:
        for sb in (event, prefork):
            sb.unlink()
            sb.close()


def test_history_ring_keeps_the_last_hour(board):
    _start_child(board, 0, 0, 2)
    board.worker(0, 0).request_end(2048, 10, 0)
    for i in range(HISTORY_SECONDS + 5):
        board.record_history(1_000.0 + i)
    history = board.snapshot().history()
    assert len(history) == HISTORY_SECONDS
    assert history[0].time_us == 1_005_000_000 and history[-1].time_us == 4_604_000_000
    last = history[-1]
    assert (last.accesses, last.bytes, last.idle, last.processes) == (1, 2048, 2, 1)


def test_torn_reads_never_raise(board):
    """A writer scribbles (including garbage bytes) while a reader decodes everything."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def scribble() -> None:
        rng = random.Random(7)
        w = board.worker(0, 0)
        raw = board._mm
        base = board._layout.worker(0, 1)
        try:
            while not stop.is_set():
                w.request_start("GET /é" + "z" * rng.randrange(80) + " HTTP/1.1", "c", "v", "p", 1)
                w.request_end(rng.randrange(10**6), rng.randrange(10**7), 2)
                # garbage over a whole record: bad state codes, invalid text
                raw[base : base + 448] = rng.randbytes(448)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=scribble)
    thread.start()
    try:
        deadline = time.monotonic() + 0.5
        reads = 0
        while time.monotonic() < deadline or reads < 20:
            snap = board.snapshot()
            for w in snap.workers(active_only=True):
                assert 0 <= w.status <= 10
                assert isinstance(w.request, str)
            snap.worker_counts()
            snap.scoreboard_string(16, 25)
            snap.totals()
            reads += 1
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not errors


def test_only_the_creating_process_unlinks(board):
    pid = os.fork()
    if pid == 0:
        board.unlink()
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.path.exists(board.path)
    board.unlink()
    assert not os.path.exists(board.path)


@pytest.mark.parametrize("extended", ["On", "Off"])
def test_cpu_times_are_taken_only_with_extended_status(tmp_path, extended):
    """Apache calls times() per request only for ExtendedStatus, the only views showing it:
    with Off a request costs no system call for it, and the counters still count."""
    config = f"ExtendedStatus {extended}\nWSGIApp /burn testapp:burn\n"
    with Server(tmp_path, config, mpm="prefork") as server:
        for _ in range(3):
            assert fetch(server.port, "/burn?seconds=0.05")[0] == 200
        board = attach_scoreboard(server.pid)
        workers = [w for w in board.snapshot().workers() if w.access_count]
        board.close()
    assert sum(w.access_count for w in workers) >= 3
    cpu = sum(w.cpu_user + w.cpu_system for w in workers)
    assert (cpu > 0) == (extended == "On")
