"""Real ASGI frameworks end to end on mpmd's event MPM (issue 15's acceptance): FastAPI's JSON
routes, streaming, Server-Sent Events held open by 1,000 clients at once, file responses, a
WebSocket chat between two `websockets` clients and lifespan state; Django's admin login page
through its ASGI handler. The FastAPI app runs in one event child so that the chat room and
the lifespan state are one process's."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

import pytest
from websockets.sync.client import connect as ws_connect

from server import APPS, ONE_EVENT_CHILD, Server, call, children_of, raise_open_files

# One child (the chat room and lifespan state live in one process): server.ONE_EVENT_CHILD
ONE_CHILD = ONE_EVENT_CHILD
SSE_CLIENTS = 1000
SSE_CONNECTS_IN_FLIGHT = 200  # connects pending at once, so the listen backlog never drops SYNs
SSE_FIRST_EVENT = b"event: hello\ndata: connected\n\n"
FILE_SIZE = 1024 * 1024 + 7  # not a multiple of any chunk or page size


@pytest.fixture(scope="module")
def served_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("asgi-file") / "payload.bin"
    path.write_bytes(os.urandom(FILE_SIZE))
    return path


@pytest.fixture(scope="module")
def fastapi_server(tmp_path_factory: pytest.TempPathFactory, served_file: Path):
    """One mpmd serving tests/apps/fastapi_app.py for the whole module (it starts in seconds)."""
    raise_open_files(
        4 * SSE_CLIENTS
    )  # 1,000 SSE clients here, 1,000 connections in the child it inherits to
    tmp = tmp_path_factory.mktemp("asgi-fastapi")
    config = ONE_CHILD + "ASGIApp / fastapi_app:app\n"
    env = {"MPMD_TEST_FILE": str(served_file), "MPMD_TEST_SSE_INTERVAL": "1"}
    with Server(tmp, config, mpm="event", env=env) as server:
        yield server


def _get(server: Server, method: str, path: str, **kw) -> tuple[int, dict[str, str], bytes]:
    """`call` with header names lowercased: ASGI apps send them so, servers may keep them."""
    status, headers, body = call(server, method, path, **kw)
    return status, {name.lower(): value for name, value in headers.items()}, body


@pytest.mark.slow
def test_fastapi_json_routes(fastapi_server: Server) -> None:
    status, headers, body = _get(fastapi_server, "GET", "/items/42?q=mpmd")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"item_id": 42, "q": "mpmd"}
    sent = {"name": "widget", "tags": ["a", "b"], "price": 9.5}
    status, _, body = _get(
        fastapi_server,
        "POST",
        "/items",
        body=json.dumps(sent),
        headers={"Content-Type": "application/json"},
    )
    assert status == 200 and json.loads(body) == {"received": sent}
    status, _, _ = _get(fastapi_server, "GET", "/items/not-a-number")
    assert status == 422  # FastAPI's validation error, served like any other response


@pytest.mark.slow
def test_fastapi_streaming_response_is_complete(fastapi_server: Server) -> None:
    status, headers, body = _get(fastapi_server, "GET", "/stream")
    assert status == 200 and headers.get("transfer-encoding") == "chunked"
    assert body == b"".join(f"chunk {n}\n".encode() for n in range(10))


@pytest.mark.slow
def test_fastapi_file_response_is_byte_exact(fastapi_server: Server, served_file: Path) -> None:
    status, headers, body = _get(fastapi_server, "GET", "/file")
    assert status == 200 and headers["content-length"] == str(FILE_SIZE)
    assert body == served_file.read_bytes()


@pytest.mark.slow
def test_fastapi_lifespan_state_reaches_routes(fastapi_server: Server) -> None:
    status, _, body = _get(fastapi_server, "GET", "/state")
    state = json.loads(body)
    assert status == 200 and state["startups"] == 1 and state["started_at"] > 0
    assert state["pid"] in children_of(fastapi_server.pid)  # startup ran in the serving child


@pytest.mark.slow
def test_fastapi_websocket_chat_broadcasts_to_every_client(fastapi_server: Server) -> None:
    base = f"ws://127.0.0.1:{fastapi_server.port}/ws/chat"
    with ws_connect(f"{base}?name=alice", open_timeout=10) as alice:
        assert alice.recv(timeout=10) == "* alice joined"
        with ws_connect(f"{base}?name=bob", open_timeout=10) as bob:
            assert bob.recv(timeout=10) == "* bob joined"
            assert alice.recv(timeout=10) == "* bob joined"
            alice.send("hello from alice")
            assert alice.recv(timeout=10) == "alice: hello from alice"
            assert bob.recv(timeout=10) == "alice: hello from alice"
            bob.send("hi alice")
            assert alice.recv(timeout=10) == "bob: hi alice"
            assert bob.recv(timeout=10) == "bob: hi alice"
        assert alice.recv(timeout=10) == "* bob left"  # the server saw bob's close


async def _open_sse(port: int, gate: asyncio.Semaphore) -> tuple[bytes, asyncio.StreamWriter]:
    """One SSE client: connect, GET /events, read until the first event; the stream stays open."""
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    seen = b""
    while SSE_FIRST_EVENT not in seen:
        chunk = await reader.read(65536)
        if not chunk:
            raise AssertionError(f"stream closed before its first event: {head!r} {seen!r}")
        seen += chunk
    writer.transport.pause_reading()  # held open: the periodic comments stay unread
    return head, writer


async def _hold_sse_clients(server: Server) -> None:
    gate = asyncio.Semaphore(SSE_CONNECTS_IN_FLIGHT)
    opened = await asyncio.wait_for(
        asyncio.gather(
            *(_open_sse(server.port, gate) for _ in range(SSE_CLIENTS)), return_exceptions=True
        ),
        timeout=60,
    )
    writers = [item[1] for item in opened if not isinstance(item, BaseException)]
    try:
        failures = [item for item in opened if isinstance(item, BaseException)]
        assert not failures, f"{len(failures)} of {SSE_CLIENTS} clients failed: {failures[:3]}"
        heads = {item[0].split(b"\r\n", 1)[0] for item in opened}
        assert heads == {b"HTTP/1.1 200 OK"}
        assert all(b"text/event-stream" in item[0].lower() for item in opened)
        assert not any(w.transport.is_closing() for w in writers)  # all 1,000 still open
        # ... and while they are all held, the server still answers a plain request.
        status, _, body = await asyncio.to_thread(_get, server, "GET", "/items/7")
        assert status == 200 and json.loads(body)["item_id"] == 7
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@pytest.mark.slow
def test_fastapi_sse_held_open_by_1000_clients(fastapi_server: Server) -> None:
    asyncio.run(_hold_sse_clients(fastapi_server))
    status, _, body = _get(fastapi_server, "GET", "/items/8")  # all gone: still serving
    assert status == 200 and json.loads(body)["item_id"] == 8
    assert fastapi_server.proc.poll() is None
    assert "Traceback" not in fastapi_server.log_text()


def _django_prepare() -> ModuleType:
    """tests/apps/django_asgi/prepare.py, loaded by path so tests/apps stays off sys.path here."""
    spec = importlib.util.spec_from_file_location("django_prepare", APPS / "django_asgi/prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_django_admin_login_page(tmp_path: Path) -> None:
    prepare = _django_prepare()
    prepare.migrate(tmp_path)
    config = ONE_CHILD + "ASGIApp / django_asgi.asgi:application\n"
    with Server(tmp_path, config, mpm="event", env=prepare.environment(tmp_path)) as server:
        status, headers, body = _get(server, "GET", "/admin/login/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<form action="/admin/login/" method="post" id="login-form">' in body
    assert b'name="csrfmiddlewaretoken"' in body
    assert "csrftoken=" in headers.get("set-cookie", "")
