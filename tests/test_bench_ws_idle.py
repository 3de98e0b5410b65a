"""Unit tests of workload ws-idle's pure parts (issue 15's Scale): the idle WebSocket client's
handshake check, frame splitting, pongs and counts; the cost arithmetic; the CPU-time parser;
its table in the report. No server process; the client is checked against the raw echo server
inside one event loop."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside src/

from bench import report
from bench.procfs import parse_cpu_ticks
from bench.workloads import WORKLOADS
from bench.ws_client import accept_key
from bench.ws_idle import cost_figures
from bench.ws_idle_client import (
    IdleWebSocket,
    WsIdleCounts,
    _open,
    parse_handshake,
    split_frames,
)
from bench.ws_raw_echo import RawEcho


def test_handshake_needs_101_and_the_accept_key_and_sees_deflate() -> None:
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    ok = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + accept_key(key)
    assert parse_handshake(ok, key) == (True, False)
    deflate = ok + b"\r\nSec-WebSocket-Extensions: permessage-deflate"
    assert parse_handshake(deflate, key) == (True, True)
    assert parse_handshake(ok.replace(b"101", b"400"), key)[0] is False
    assert parse_handshake(ok, b"another key") == (False, False)


def test_split_frames_keeps_the_incomplete_rest() -> None:
    ping, long_text = b"\x89\x02hi", b"\x81\x7e\x00\xc8" + b"x" * 200
    frames, rest = split_frames(ping + long_text + b"\x88")
    assert frames == [(0x9, b"hi"), (0x1, b"x" * 200)] and rest == b"\x88"


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_idle_websocket_answers_pings_and_counts_the_server_close() -> None:
    async def session() -> tuple[WsIdleCounts, _Transport]:
        counts = WsIdleCounts()
        ws = IdleWebSocket(counts, "127.0.0.1:1", "/ws", deflate=False)
        assert b"Sec-WebSocket-Extensions" not in ws.request
        transport = _Transport()
        ws.connection_made(transport)
        head = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: "
        ws.data_received(head + accept_key(ws.key) + b"\r\n\r\n\x89\x02h")
        ws.data_received(b"i")  # the ping's last byte in a second read
        ws.data_received(b"\x88\x02\x03\xe9")
        ws.connection_lost(None)  # after the close frame: still one close
        return counts, transport

    counts, transport = asyncio.run(session())
    pong = transport.written[1]
    assert pong[0] == 0x8A and pong[1] == 0x82  # a masked pong, 2 bytes
    mask = pong[2:6]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(pong[6:])) == b"hi"
    assert (counts.pings, counts.closed_by_server, transport.closed) == (1, 1, True)


def test_counts_report_what_is_open_and_what_never_answered() -> None:
    counts = WsIdleCounts(connected=9, connect_failed=1, upgraded=7, refused=1, closed_by_server=2)
    report_ = counts.report(10)
    assert report_["still_open"] == 5 and report_["never_answered"] == 1


def test_idle_client_holds_websockets_on_the_raw_echo_server() -> None:
    async def session() -> tuple[WsIdleCounts, int]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(RawEcho, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        args = argparse.Namespace(port=port, path="/ws", connect_timeout=5, deflate=False)
        counts, held = WsIdleCounts(), []
        async with server:
            gate = asyncio.Semaphore(2)
            await asyncio.gather(*(_open(args, gate, counts, held) for _ in range(5)))
            for conn in held:
                conn.close()
        return counts, len(held)

    counts, held = asyncio.run(session())
    assert (counts.connected, counts.upgraded, counts.refused, held) == (5, 5, 0, 5)


def test_cost_figures() -> None:
    met = cost_figures(40.0, 190.0, 10000, 40000.0, 36000.0, 25.0, 27.5)
    assert met == {
        "kib_per_conn": 15.36,
        "hello_ratio": 0.9,
        "cpu_hello_ratio": 0.909,
        "memory_met": True,
        "hello_met": True,
    }
    missed = cost_figures(40.0, 300.0, 10000, 40000.0, 20000.0)
    assert missed["kib_per_conn"] == 26.62 and missed["cpu_hello_ratio"] is None
    assert not missed["memory_met"] and not missed["hello_met"]
    assert cost_figures(None, 300.0, 0, None, 1.0)["kib_per_conn"] is None


def test_parse_cpu_ticks_adds_user_and_system() -> None:
    stat = "42 (mpmd: event child) S 1 42 42 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 28 0"
    assert parse_cpu_ticks(stat) == 1234 + 567


def test_ws_idle_workloads_and_their_table() -> None:
    plain, deflate = WORKLOADS["ws-idle"], WORKLOADS["ws-idle-deflate"]
    assert plain.idle and plain.asgi and plain.ws_idle and not plain.ws_deflate
    assert deflate.ws_deflate and deflate.content == plain.content == "hello"
    ready = {"still_open": 10000, "connect_failed": 0, "refused": 0, "never_answered": 0}
    result = {
        "server": "mpmd-event-asgi",
        "workload": "ws-idle",
        "runs": [{"requests_per_sec": 30000.0, "cpu0": 60.0, "cpu1": 99.0}],
        "median_rps": 30000.0,
        "median_rps_before": 36000.0,
        "pss_mib": 190.6,
        "pss_mib_before": 38.3,
        "kib_per_conn": 15.6,
        "hello_ratio": 0.833,
        "cpu_hello_ratio": 0.85,
        "cpu_us_per_req_before": 25.5,
        "cpu_us_per_req": 30.0,
        "memory_met": True,
        "hello_met": True,
        "ws_ready": ready,
        "ws_idle": {"closed_by_server": 0},
        "cpu0": 60.0,
        "cpu1": 99.0,
    }
    data = {"settings": {"ws_idle_conns": 10000}, "workload_titles": {"ws-idle": "idle WS"}}
    text = "\n".join(report.workload_section(data, "ws-idle", [result]))
    assert "10000 WebSockets" in text
    row = text.splitlines()[-1]
    assert row.startswith("| mpmd-event-asgi | 10000 / 0 / 0 | 38.3 / 190.6 | 15.6 |")
    assert "| 36,000 / 30,000 | 0.83x | 0.85x (25.5 / 30.0 us) | yes | yes |" in row
