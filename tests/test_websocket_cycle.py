"""The ASGI websocket cycle in process: the conformance table against the echo app, and the
server duties of ASGI 4.3/4.5 (403, denial responses, 500, 1011, ClientDisconnected, pings,
graceful close), over an in-memory connection that honours pause_reading like a transport."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import traceback

import pytest
from tests.apps.asgi_ws_echo import app as echo_app
from tests.websocket_cases import Case, cases, run_case
from tests.websocket_client import CLOSE, PING, PONG, TEXT, Reader, close, frame, handshake, text

from mpmd.handlers.asgi.websocket import WebSocketSettings, handshake_refusal
from mpmd.handlers.asgi.websocket_cycle import (
    QUEUE_BYTES,
    QUEUE_MESSAGES,
    ClientDisconnected,
    WebSocketCycle,
    websocket_scope,
)

MAX = 256 * 1024
QUIET = WebSocketSettings(ping_interval=None, max_message_size=MAX)


class FakeErrorLog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, level: str, message: str, **kw: object) -> None:
        self.lines.append(f"{level} {message}")

    def exception(self, message: str, **kw: object) -> None:
        self.lines.append(f"error {message}\n{traceback.format_exc()}")


class Connection:
    """The client's end and the server's WebSocketIO in one: `send`/`recv` are the client's,
    data reaches `feed` only while reading is not paused, as a transport delivers it."""

    def __init__(self, app, settings: WebSocketSettings = QUIET) -> None:
        self.loop = asyncio.new_event_loop()
        self.app, self.settings, self.error_log = app, settings, FakeErrorLog()
        self.cycle: WebSocketCycle | None = None
        self.task: asyncio.Task | None = None
        self.head, self.pending, self.out = bytearray(), bytearray(), bytearray()
        self.paused = self.closed = False
        self.pauses = 0
        self._ready = asyncio.Event()

    # WebSocketIO
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.out += data
            self._ready.set()

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False
        self.loop.call_soon(self._pump)

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    # the client
    def send(self, data: bytes) -> None:
        if self.cycle is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, _, data = bytes(self.head).partition(b"\r\n\r\n")
            self._start(head)
        self.pending += data
        self._pump()

    def _start(self, head: bytes) -> None:
        request, *lines = head.decode("latin-1").split("\r\n")
        method, path, version = request.split(" ")
        headers = [
            (name.strip().lower().encode(), value.strip().encode())
            for name, _, value in (line.partition(":") for line in lines)
        ]
        assert handshake_refusal(method, version.removeprefix("HTTP/"), headers) is None
        scope = websocket_scope(
            {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": headers,
                "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 80),
            }
        )
        self.cycle = WebSocketCycle(self.app, scope, self, self.settings, self.error_log)
        self.task = self.loop.create_task(self.cycle.run())

    def _pump(self) -> None:
        if self.pending and not self.paused and not self.closed:
            data, self.pending = bytes(self.pending), bytearray()
            assert self.cycle is not None
            self.cycle.feed(data)

    def recv(self, timeout: float) -> bytes:
        async def wait() -> None:
            while not self.out and not self.closed:
                self._ready.clear()
                await self._ready.wait()

        self.loop.run_until_complete(asyncio.wait_for(wait(), timeout))
        data, self.out = bytes(self.out), bytearray()
        return data

    def result(self) -> tuple[int, int]:
        assert self.task is not None
        try:
            return self.loop.run_until_complete(asyncio.wait_for(self.task, 10))
        finally:
            self.loop.close()


TABLE = cases(MAX)


@pytest.mark.parametrize("case", TABLE, ids=[case.id for case in TABLE])
def test_conformance_case(case: Case) -> None:
    conn = Connection(echo_app)
    run_case(case, conn.send, conn.recv)
    status, sent = conn.result()
    assert status == 101 and sent > 0
    assert conn.error_log.lines == []


def test_the_table_covers_every_autobahn_group() -> None:
    assert {case.group for case in TABLE} == {1, 2, 3, 4, 5, 6, 7, 9, 12, 13}
    assert len({case.id for case in TABLE}) == len(TABLE)


def opened(app, settings: WebSocketSettings = QUIET) -> tuple[Connection, Reader]:
    conn = Connection(app, settings)
    conn.send(handshake("localhost", "/", None))
    reader = Reader(Case("-", "-", ()), conn.recv)
    assert reader.head().startswith(b"HTTP/1.1 101 ")
    return conn, reader


def answer(app) -> tuple[bytes, Connection]:
    """The whole HTTP answer to a handshake the app does not accept."""
    conn = Connection(app)
    conn.send(handshake("localhost", "/", None))
    data = b""
    while chunk := conn.recv(5):
        data += chunk
    return data, conn


def test_close_before_accept_is_a_403_and_the_app_sees_1006() -> None:
    seen = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.close"})
        seen.append(await receive())

    data, conn = answer(app)
    assert data.startswith(b"HTTP/1.1 403 Forbidden\r\n") and b"Connection: close" in data
    assert conn.result()[0] == 403
    assert seen == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]


@pytest.mark.parametrize(
    "parts, framing",
    [([b"no"], b"Content-Length: 2"), ([b"n", b"o"], b"Transfer-Encoding: chunked")],
)
def test_denial_response_extension(parts: list[bytes], framing: bytes) -> None:
    async def app(scope, receive, send):
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"x-why", b"token")],
            }
        )
        for i, part in enumerate(parts):
            await send(
                {
                    "type": "websocket.http.response.body",
                    "body": part,
                    "more_body": i < len(parts) - 1,
                }
            )

    data, conn = answer(app)
    assert data.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert framing in data and b"x-why: token" in data and b"Connection: close" in data
    assert data.endswith(b"\r\n\r\nno") or data.endswith(b"1\r\nn\r\n1\r\no\r\n0\r\n\r\n")
    assert conn.result()[0] == 401


@pytest.mark.parametrize("raises, log_id", [(True, "MP00300"), (False, "MP00302")])
def test_failure_before_accept_is_a_logged_500(raises: bool, log_id: str) -> None:
    async def app(scope, receive, send):
        await receive()
        if raises:
            raise ValueError("boom")

    data, conn = answer(app)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert conn.result()[0] == 500
    assert len(conn.error_log.lines) == 1 and log_id in conn.error_log.lines[0]
    assert ("ValueError: boom" in conn.error_log.lines[0]) == raises


def test_exception_after_accept_closes_1011_and_is_logged() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        raise KeyError("late")

    conn, reader = opened(app)
    opcode, payload = reader.event(None)
    assert opcode == CLOSE and struct.unpack("!H", payload[:2])[0] == 1011
    conn.send(close(1011))
    assert conn.result()[0] == 101
    assert "MP00301" in conn.error_log.lines[0] and "KeyError: 'late'" in conn.error_log.lines[0]


def test_send_after_close_raises_client_disconnected_unlogged() -> None:
    raised = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        try:
            await send({"type": "websocket.send", "text": "late"})
        except ClientDisconnected as exc:
            raised.append(exc)
            raise

    conn, reader = opened(app)
    conn.send(close(1000))
    assert reader.event(None) == (CLOSE, struct.pack("!H", 1000))
    assert conn.result()[0] == 101
    assert isinstance(raised[0], OSError) and conn.error_log.lines == []


def test_invalid_events_raise_from_send() -> None:
    errors = []

    async def app(scope, receive, send):
        await receive()
        for bad in ({"type": "websocket.send", "text": "x"}, {"type": "http.response.start"}):
            try:
                await send(bad)
            except RuntimeError as exc:
                errors.append(str(exc))
        try:
            await send({"type": "websocket.accept", "subprotocol": "chat"})
        except ValueError as exc:
            errors.append(str(exc))
        await send({"type": "websocket.accept"})
        for bad in (
            {"type": "websocket.accept"},
            {"type": "websocket.send", "text": "a", "bytes": b"b"},
        ):
            try:
                await send(bad)
            except (RuntimeError, ValueError) as exc:
                errors.append(str(exc))
        await send({"type": "websocket.close"})

    conn, reader = opened(app)
    assert reader.event(None)[0] == CLOSE
    conn.send(close(1000))
    assert conn.result()[0] == 101
    assert errors[0].startswith("Expected ASGI message 'websocket.accept'")
    assert "'http.response.start'" in errors[1]
    assert "not offered" in errors[2]
    assert errors[3].startswith("Expected ASGI message 'websocket.send' or 'websocket.close'")
    assert "exactly one" in errors[4]


def test_accept_sends_the_subprotocol_and_headers() -> None:
    async def app(scope, receive, send):
        assert scope["subprotocols"] == ["chat", "superchat"] and "method" not in scope
        await receive()
        headers = [(b"x-extra", b"1"), (b"sec-websocket-protocol", b"other")]
        await send({"type": "websocket.accept", "subprotocol": "superchat", "headers": headers})
        await receive()

    conn = Connection(app)
    request = handshake("localhost", "/", None).replace(
        b"\r\n\r\n", b"\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n"
    )
    conn.send(request)
    head = Reader(Case("-", "-", ()), conn.recv).head()
    assert b"Sec-WebSocket-Protocol: superchat" in head and b"x-extra: 1" in head
    assert b"other" not in head and b"Server: mpmd/" in head and b"Date: " in head
    conn.send(close(1000))
    assert conn.result()[0] == 101


@pytest.mark.parametrize(
    "flood",
    [[str(i) for i in range(QUEUE_MESSAGES - 2)], ["x" * (QUEUE_BYTES - 6)]],
    ids=["messages", "bytes"],
)
def test_reading_pauses_while_the_app_lags(flood: list[str]) -> None:
    gate = asyncio.Event()
    got = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        while (message := await receive())["type"] != "websocket.disconnect":
            got.append(message["text"])

    conn, reader = opened(app)
    conn.send(text("one") + text("two"))
    assert not conn.paused and conn.pauses == 0  # a lag under the bounds reads on
    conn.send(b"".join(text(message) for message in flood))
    conn.send(text("after"))
    assert conn.paused and bytes(conn.pending) != b""  # "after" waits in the transport
    gate.set()
    conn.send(close(1000))
    assert reader.event(None)[0] == CLOSE
    assert conn.result()[0] == 101
    assert got == ["one", "two", *flood, "after"]


def test_a_receive_cancelled_while_waiting_leaves_the_next_one_working() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receive(), 0.001)  # nothing was sent: it times out
        await send({"type": "websocket.send", "text": "ready"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"]})

    conn, reader = opened(app)
    assert reader.event(None) == (TEXT, b"ready")
    conn.send(text("late"))
    assert reader.event(None) == (TEXT, b"late")
    assert reader.event(None)[0] == CLOSE
    conn.send(close(1000))
    assert conn.result()[0] == 101


def test_two_tasks_waiting_in_receive_are_both_woken() -> None:
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        first, second = await asyncio.gather(receive(), receive())
        await send({"type": "websocket.send", "text": first["text"] + second["text"]})

    conn, reader = opened(app)
    conn.send(text("a"))
    conn.send(text("b"))
    assert reader.event(None) == (TEXT, b"ab")
    assert reader.event(None)[0] == CLOSE
    conn.send(close(1000))
    assert conn.result()[0] == 101


def test_a_missing_pong_closes_1011() -> None:
    conn, reader = opened(echo_app, WebSocketSettings(ping_interval=0.01, ping_timeout=0.01))
    assert reader.event(None)[0] == PING
    opcode, payload = reader.event(None)
    assert opcode == CLOSE and payload == struct.pack("!H", 1011) + b"keepalive ping timeout"
    assert conn.result()[0] == 101


def test_answered_pings_keep_the_connection_open() -> None:
    conn, reader = opened(echo_app, WebSocketSettings(ping_interval=0.01, ping_timeout=5))
    for _ in range(3):
        opcode, payload = reader.event(None)
        assert opcode == PING
        conn.send(frame(PONG, payload))
    conn.send(text("still here"))
    while (event := reader.event(None))[0] == PING:
        pass
    assert event == (TEXT, b"still here")
    conn.send(close(1000))
    while (event := reader.event(None))[0] == PING:
        pass
    assert event == (CLOSE, struct.pack("!H", 1000))
    assert conn.result()[0] == 101


@pytest.mark.parametrize("peer_answers", [True, False])
def test_shutdown_closes_1001_with_a_bounded_wait(peer_answers: bool) -> None:
    seen = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        seen.append(await receive())

    conn, reader = opened(app, WebSocketSettings(ping_interval=None, close_timeout=0.01))
    assert conn.cycle is not None
    conn.cycle.shutdown()
    assert reader.event(None) == (CLOSE, struct.pack("!H", 1001) + b"Server shutting down")
    if peer_answers:
        conn.send(close(1001))
    assert conn.result()[0] == 101 and conn.closed
    assert seen == [
        {"type": "websocket.disconnect", "code": 1001 if peer_answers else 1006, "reason": ""}
    ]


def test_eof_without_close_frame_is_1006() -> None:
    seen = []

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        seen.append(await receive())
        seen.append(await receive())  # once disconnected, receive keeps answering disconnect

    conn, _ = opened(app)
    assert conn.cycle is not None
    conn.cycle.feed(b"")
    assert conn.result()[0] == 101
    assert seen == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}] * 2


def test_websocket_scope_from_an_http_scope() -> None:
    http = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": "/chat",
        "headers": [(b"sec-websocket-protocol", b"a, b"), (b"host", b"x")],
        "extensions": {"tls": {"tls_version": 0x0304}, "http.response.pathsend": {}},
    }
    scope = websocket_scope(http)
    assert scope["type"] == "websocket" and scope["scheme"] == "wss" and "method" not in scope
    assert scope["subprotocols"] == ["a", "b"] and scope["path"] == "/chat"
    assert scope["extensions"] == {"websocket.http.response": {}, "tls": {"tls_version": 0x0304}}
    assert http["type"] == "http"
