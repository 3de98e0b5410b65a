"""The open-loop replayer and what the planner takes from it: synthetic traces, the replay's
timing and latencies against a loopback server, the demand factor, %{mpmd-queued-ms}n read
back, logged waits moving arrivals, and the tick phase recovered from a log's waits."""

from __future__ import annotations

import math
import socket
import threading
import time
from dataclasses import replace

import pytest

from mpmd.config.model import MpmSettings
from mpmd.mpm.session import queued_ms
from mpmd.tools.accesslog import LogParser
from mpmd.tools.plan import Trace, build_trace, simulate_configs
from mpmd.tools.replay import Outcome, Shot, bursty, fit_demand, poisson, replay
from mpmd.tools.sim_report import SimSettings
from mpmd.tools.simulate import Request, simulate


def fixed(rng) -> str:
    return "/x"


def test_poisson_rate_and_span():
    shots = poisson(100.0, 50.0, fixed, seed=3)
    assert all(0 <= s.at < 50.0 for s in shots)
    assert [s.at for s in shots] == sorted(s.at for s in shots)
    assert abs(len(shots) - 5000) < 5 * math.sqrt(5000)


def test_bursty_alternates_rates():
    shots = bursty(20.0, 200.0, 4.0, 40.0, fixed, seed=3)
    low = sum(1 for s in shots if s.at % 4.0 < 2.0)
    high = len(shots) - low
    assert abs(low - 400) < 5 * math.sqrt(400)  # 10 low halves of 2 s at 20/s
    assert abs(high - 4000) < 5 * math.sqrt(4000)
    assert max(s.at for s in shots) < 40.0


class SlowServer(threading.Thread):
    """Answers each connection after `delay` seconds, one thread per connection."""

    def __init__(self, delay: float) -> None:
        super().__init__(daemon=True)
        self.delay = delay
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)
            time.sleep(self.delay)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.sock.close()


def test_replay_is_open_loop_and_measures_latency():
    server = SlowServer(0.2)
    server.start()
    try:
        shots = [Shot(k * 0.01, "/a") for k in range(10)]  # 10 in 0.1 s, each answered in 0.2 s
        outcomes = replay(f"http://127.0.0.1:{server.port}", shots)
    finally:
        server.close()
    assert [o.status for o in outcomes] == [200] * 10
    assert all(o.error is None and o.latency >= 0.2 for o in outcomes)
    # every connection was made before the first answer: nobody waited for a response
    assert server.accepted[-1] - server.accepted[0] < 0.2


def test_a_refused_connection_is_an_outcome():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        (outcome,) = replay(f"http://127.0.0.1:{port}", [Shot(0.0, "/")])
    assert outcome.error == "ConnectionRefusedError" and math.isnan(outcome.latency)


def test_replay_wants_an_http_url():
    with pytest.raises(ValueError, match="only http://"):
        replay("https://example.org", [])


def test_demand_is_a_ratio_of_sums_over_answered_requests():
    shots = [Shot(0, "/")] * 3
    outcomes = [
        Outcome(shots[0], 0.030, 200, 0.0),
        Outcome(shots[1], 0.010, 200, 0.0),
        Outcome(shots[2], math.nan, 0, 0.0, "ConnectionRefusedError"),
    ]
    demand = fit_demand([0.010, 0.010, 0.500], outcomes)
    assert demand.factor == pytest.approx(2.0)
    assert demand.requests == 2
    assert demand.live_ms == pytest.approx(20.0) and demand.logged_ms == pytest.approx(10.0)
    with pytest.raises(ValueError, match="answered none"):
        fit_demand([0.01], [outcomes[2]])


def test_queued_ms_reads_the_age_of_a_requests_bytes():
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as client,
    ):
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        conn, _ = listener.accept()
        with conn:
            assert queued_ms(conn).isdigit()
    a, b = socket.socketpair()
    with a, b:
        assert queued_ms(a) is None  # no TCP_INFO off TCP


QUEUED = '%a %{usec}t "%r" %>s %D %{mpmd-queued-ms}n'
T0 = 1764892800


def test_logged_waits_move_arrivals_earlier():
    parser = LogParser(QUEUED, ("time", "service", "client", "keepalive", "queued"))
    lines = [
        f'c {T0 * 1_000_000 + 100_000} "GET / HTTP/1.1" 200 20000 0\n',
        f'c {T0 * 1_000_000 + 300_000} "GET / HTTP/1.1" 200 20000 120\n',
        f'c {T0 * 1_000_000 + 400_000} "GET / HTTP/1.1" 200 20000 -\n',
    ]
    records = parser.parse_lines(lines).records
    assert [r.queued for r in records] == [0.0, 0.12, None]
    built = build_trace(records, parser)
    assert [round(r.arrival, 6) for r in built.requests] == [0.0, 0.08, 0.3]
    assert built.queued == [0.0, 0.12, 0.0]
    assert any("less %{mpmd-queued-ms}n" in note for note in built.notes)
    assert build_trace(records, parser, scale=2.0).queued is None  # not the logged load
    plain = LogParser(QUEUED.rsplit(" ", 1)[0], ("time", "service", "queued"))
    built = build_trace(plain.parse_lines([line.rsplit(" ", 1)[0] for line in lines]).records,
                        plain)  # fmt: skip
    assert built.queued is None
    assert any("no %{mpmd-queued-ms}n" in note for note in built.notes)


def test_the_tick_phase_is_recovered_from_the_logged_waits():
    """A burst on a full prefork pool waits for the first tick after it and the child it
    forks: waits simulated at phase 0.37 with a 0.05 s start-up, given as the log's, are
    reproduced by the fit (one burst tells only when the new child accepted: 0.42 s)."""
    mpm = MpmSettings(
        name="prefork", start_servers=1, min_spare_servers=1, max_spare_servers=2,
        min_spare_threads=1, max_spare_threads=2, threads_per_child=1, thread_limit=1,
        server_limit=8, max_request_workers=8, max_connections_per_child=0,
        async_request_worker_factor=2.0, graceful_shutdown_timeout=0, listen_backlog=511,
        max_memory_per_child=0,
    )  # fmt: skip
    settings = SimSettings(mpm, keep_alive=False)
    requests = [Request(0.1 + k * 0.1, 0.05) for k in range(5)]
    requests += [Request(2.5 + k * 0.004, 0.3) for k in range(40)]
    truth = simulate(requests, replace(settings, tick_phase=0.37, startup=0.05))
    trace = Trace(requests, [], list(truth.wait))
    (result,), notes = simulate_configs(trace, [settings])
    words = notes[0].split()
    phase = float(words[words.index("placed") + 1])
    startup = float(words[words.index("accepts") + 1])
    assert phase + startup == pytest.approx(0.42, abs=0.006)
    assert list(result.wait) == pytest.approx(list(truth.wait), abs=0.006)
    assert sum(result.wait) > 10  # the burst waited


def test_the_time_before_a_start_outside_the_model_is_added_to_latency():
    """Logged waits 3 ms longer than the pool explains: each planned latency gains 3 ms, and
    Little's law still holds (the requests are in the system meanwhile)."""
    mpm = MpmSettings(
        name="prefork", start_servers=4, min_spare_servers=1, max_spare_servers=5,
        min_spare_threads=1, max_spare_threads=2, threads_per_child=1, thread_limit=1,
        server_limit=4, max_request_workers=4, max_connections_per_child=0,
        async_request_worker_factor=2.0, graceful_shutdown_timeout=0, listen_backlog=511,
        max_memory_per_child=0,
    )  # fmt: skip
    settings = SimSettings(mpm, keep_alive=False)
    requests = [Request(k * 0.05, 0.01) for k in range(200)]
    bare = simulate(requests, settings)
    (result,), notes = simulate_configs(Trace(requests, [], [0.003] * 200), [settings])
    assert "includes 3.00 ms the server spent" in notes[1]
    assert result.summary.p50_ms == pytest.approx(bare.summary.p50_ms + 3.0)
    assert result.summary.little_error < 0.01
