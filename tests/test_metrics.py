"""The Prometheus collector over a scoreboard in a temp file (no server)."""

from __future__ import annotations

import time

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mpmd.config.build import load_config
from mpmd.handlers.metrics import make_registry
from mpmd.mpm.scoreboard import READY, Scoreboard


def _samples(registry) -> dict:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_histogram_and_states_follow_the_scoreboard(tmp_path):
    config = load_config(None, mpm="worker")
    mpm = config.mpm
    board = Scoreboard.create(
        str(tmp_path / "sb"), mpm.server_limit, mpm.thread_limit, "worker",
        threads_per_child=mpm.threads_per_child, max_request_workers=mpm.max_request_workers,
    )  # fmt: skip
    board.process(0).start(111, 0)
    for thread in range(mpm.threads_per_child):
        record = board.worker(0, thread)
        record.reset_for_new_child(111, 0)
        record.set_state(READY)
    record = board.worker(0, 0)
    now = time.time_ns() // 1000
    for duration_us in (1_000, 30_000, 600_000, 20_000_000):
        record.request_start("GET / HTTP/1.1", "127.0.0.1", "localhost", "HTTP/1.1", now)
        record.request_end(100, duration_us, now)
    record.set_state(READY)
    board.worker(0, 1).connection_start()  # one worker reading a request
    registry = make_registry(config, board)
    values = _samples(registry)
    assert values[("mpmd_requests_total", ())] == 4
    assert values[("mpmd_sent_bytes_total", ())] == 400
    bucket = "mpmd_request_duration_seconds_bucket"
    assert values[(bucket, (("le", "0.005"),))] == 1
    assert values[(bucket, (("le", "0.05"),))] == 2
    assert values[(bucket, (("le", "0.75"),))] == 3
    assert values[(bucket, (("le", "10"),))] == 3
    assert values[(bucket, (("le", "+Inf"),))] == 4
    assert abs(values[("mpmd_request_duration_seconds_sum", ())] - 20.631) < 1e-9
    assert values[("mpmd_workers", (("state", "ready"),))] == 24
    assert values[("mpmd_workers", (("state", "read"),))] == 1
    assert values[("mpmd_busy_workers", ())] == 1
    assert values[("mpmd_processes", (("generation", "current"),))] == 1
    assert values[("mpmd_max_request_workers", ())] == mpm.max_request_workers
    # the child goes away and a new one takes the slot: the counters do not go backwards
    board.mark_process_dead(0)
    board.process(0).start(222, 1)
    board.generation = 1
    values = _samples(registry)
    assert values[("mpmd_requests_total", ())] == 4
    assert values[("mpmd_processes", (("generation", "current"),))] == 1
    assert values[("mpmd_generation", ())] == 1
    board.unlink()
