"""A WebSocket open longer than Timeout is not a hung request: the parent's watchdog (MP00003)
replaced the event child, closing every WebSocket it held, once one had been open Timeout
seconds; an ASGI request holds no thread, so only the records of threads are watched."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from server import ONE_EVENT_CHILD, Server, wait_for
from websocket_client import PING, PONG, TEXT, Case, Reader, frame, handshake

CONFIG = (
    ONE_EVENT_CHILD
    + """\
Timeout 1
WebSocketPingInterval 1
ASGIApp / asgi_ws_echo:app
"""
)
HELD = Case("long-lived", "an idle WebSocket held past Timeout", ())
PINGS = 4  # a ping a second: the WebSocket has then been open past Timeout and several ticks


@pytest.mark.slow
def test_websocket_open_past_timeout_keeps_its_child(tmp_path: Path) -> None:
    with Server(tmp_path, CONFIG, mpm="event") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(handshake(f"127.0.0.1:{server.port}", "/ws", None))
            reader = Reader(HELD, lambda timeout: sock.recv(65536))
            assert reader.head().split(b"\r\n", 1)[0].split(b" ")[1] == b"101"
            for _ in range(PINGS):  # answered as a browser does
                _fin, _rsv, opcode, payload = reader.frame()
                assert opcode == PING
                sock.sendall(frame(PONG, payload))
            sock.sendall(frame(TEXT, b"still here"))
            _fin, _rsv, opcode, payload = reader.frame()
            assert (opcode, payload) == (TEXT, b"still here")
        wait_for(lambda: "AH00094" in server.error_log.read_text())
        assert "MP00003" not in server.error_log.read_text()
