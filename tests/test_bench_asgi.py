"""Unit tests of the harness's ASGI parts (issue 15): the benchmark app, the WebSocket client's
frames and report, the ASGI servers' command lines and mpmd's config, which workloads they run.
No server process; the client is checked against the raw echo server inside one event loop."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside src/

from bench import report
from bench.asgi_hello import HELLO, app
from bench.asgi_servers import ASGI_SERVERS, mpmd_asgi_config
from bench.fixtures import ASGI_APP_SOURCE, write_fixtures
from bench.workloads import WORKLOADS
from bench.ws_client import MESSAGE, masked_frame, run
from bench.ws_load import parse_ws_output, ws_command
from bench.ws_raw_echo import RawEcho


def _drive(scope: dict, incoming: list[dict]) -> list[dict]:
    """Run the benchmark app on one scope with scripted messages; return what it sent."""
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_asgi_app_says_hello_echoes_and_does_lifespan() -> None:
    start, body = _drive({"type": "http"}, [])
    assert start["status"] == 200 and dict(start["headers"])[b"content-length"] == b"13"
    assert body == {"type": "http.response.body", "body": HELLO}
    ws = _drive(
        {"type": "websocket"},
        [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": "hi"},
            {"type": "websocket.receive", "bytes": b"\x00\x01"},
            {"type": "websocket.disconnect", "code": 1000},
        ],
    )
    assert ws == [
        {"type": "websocket.accept"},
        {"type": "websocket.send", "text": "hi"},
        {"type": "websocket.send", "bytes": b"\x00\x01"},
    ]
    life = _drive(
        {"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    )
    assert [m["type"] for m in life] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def _unmask(frame: bytes) -> tuple[int, bytes]:
    size, head = frame[1] & 0x7F, 2
    if size == 126:
        size, head = int.from_bytes(frame[2:4], "big"), 4
    mask, body = frame[head : head + 4], frame[head + 4 :]
    assert len(body) == size and frame[1] & 0x80  # client frames are masked
    return frame[0], bytes(b ^ mask[i % 4] for i, b in enumerate(body))


def test_client_frames_are_masked_and_sized() -> None:
    assert _unmask(masked_frame(0x1, MESSAGE)) == (0x81, MESSAGE)
    big = bytes(range(256)) * 2
    frame = masked_frame(0x2, big)
    assert frame[1] == 0x80 | 126 and _unmask(frame) == (0x82, big)
    assert _unmask(masked_frame(0x8, b"")) == (0x88, b"")


def test_ws_report_parses_into_the_wrk_result() -> None:
    line = {
        "requests_per_sec": 51234.5,
        "requests": 409876,
        "seconds": 8.0,
        "bytes_read": 6148140,
        "transfer_mib_per_sec": 0.733,
        "percentiles_ms": {"50": 0.9, "99": 2.5},
        "socket_errors": {"connect": 0, "handshake": 0, "closed": 1},
        "connections": 50,
        "loop": "uvloop",
    }
    result = parse_ws_output("noise\n" + json.dumps(line) + "\n")
    assert result.requests_per_sec == 51234.5 and result.requests == 409876
    assert result.p99_ms == 2.5 and result.socket_errors["closed"] == 1
    assert parse_ws_output("Traceback ...").requests_per_sec == 0.0
    cmd = ws_command("ws://127.0.0.1:9/ws", 50, 8.0)
    assert cmd[:5] == ["timeout", "-s", "INT", "-k", "2"] and cmd[6:9] == ["taskset", "-c", "0"]
    assert cmd[-4:] == ["--conns", "50", "--duration", "8"]


def test_client_against_the_raw_echo_server() -> None:
    async def session() -> dict:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(RawEcho, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        args = argparse.Namespace(
            url=f"ws://127.0.0.1:{port}/ws", conns=5, duration=0.3, connect_timeout=5, text=True
        )
        async with server:
            return await run(args)

    result = asyncio.run(session())
    assert result["connections"] == 5 and result["requests"] > 0
    assert result["bytes_read"] == result["requests"] * (2 + len(MESSAGE))
    assert result["socket_errors"] == {"connect": 0, "handshake": 0, "closed": 0}


def test_asgi_servers_and_their_workloads(tmp_path: Path) -> None:
    fx = write_fixtures(tmp_path / "t")
    assert (fx.apps / "asgi_hello.py").read_bytes() == ASGI_APP_SOURCE.read_bytes()
    run_dir = fx.run_dir("x")
    conf = mpmd_asgi_config(fx, run_dir, 4242).splitlines()
    for line in ("LoadModule mpm_event_module modules/mod_mpm_event.so", "StartServers 1",
                 "ServerLimit 1", "ASGIApp / asgi_hello:app", f'WSGIPythonPath "{fx.apps}"'):  # fmt: skip
        assert line in conf
    cmds = {n: s.build(fx, run_dir, 4242, Path("/v/bin")).cmd for n, s in ASGI_SERVERS.items()}
    assert cmds["mpmd-event-asgi"][:3] == ["/v/bin/python", "-m", "mpmd"]
    assert {"uvloop", "httptools", "--no-access-log"} <= set(cmds["uvicorn"])
    assert (
        cmds["granian-asgi"][1:3] == ["--interface", "asgi"] and "--workers" in cmds["granian-asgi"]
    )
    assert all(spec.asgi and set(spec.paths) == {"hello", "ws"} for spec in ASGI_SERVERS.values())
    assert [w.key for w in WORKLOADS.values() if w.asgi] == [
        "asgi-hello",
        "ws-echo",
        "ws-idle",
        "ws-idle-deflate",
    ]


def test_report_orders_asgi_workloads_last_and_counts_messages() -> None:
    run_ = {"requests_per_sec": 50000.0, "p99_ms": 1.0, "cpu0": 50.0, "cpu1": 99.0}
    results = [
        {"server": s, "workload": w, "runs": [run_], "median_rps": rate, "cpu0": 50.0, "cpu1": 99.0}
        for s, w, rate in (
            ("uvicorn", "ws-echo", 50000.0),
            ("mpmd-event-asgi", "ws-echo", 60000.0),
            ("waitress", "a", 12000.0),
        )
    ]
    data = {
        "date": "d", "settings": {"runs": 1, "duration": 2, "warmup": 1, "first_warmup": 2},
        "workloads": ["a", "ws-echo"], "results": results, "servers": {}, "machine": {},
        "versions": {}, "command": "c",
        "workload_titles": {w.key: w.title for w in WORKLOADS.values()},
    }  # fmt: skip
    text = report.render(data)
    assert text.index("### a.") < text.index("### ws-echo.")
    assert "| server | msg/s (median of runs) |" in text
    assert "| mpmd-event-asgi ws-echo vs uvicorn (msg/s) | 60,000 | 50,000 | 1.20x" in text
