"""Long-lived WebSockets on a real event mpmd (issue 15, Deliver 4-5): a graceful stop closes
every one with 1001 and the server exits within GracefulShutdownTimeout; a graceful restart
closes the old generation's WebSockets with 1001 while the new generation serves at once and a
request in flight on the old one completes; thousands of idle WebSockets hold no thread."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import struct
import threading
from pathlib import Path

import pytest
from tests.websocket_client import CLOSE, TEXT, frame, handshake, text

from server import Server, call, children_of, pid_alive, raise_open_files, wait_for
from test_websocket_e2e import (
    MOUNTS,
    ONE_CHILD,
    Raw,
    close_code,
    conns_total,
    opened,
    status_upgraded,
)

OPEN_SOCKETS = 20
GRACE = 10  # GracefulShutdownTimeout
CLOSE_TIMEOUT = 2  # WebSocketCloseTimeout: a peer that never answers the 1001 is cut after it
IDLE_SOCKETS = 2000
CONNECTS_IN_FLIGHT = 200  # under the listen backlog, so no SYN is dropped and retried


def pid_of(raw_head: bytes) -> int:
    return int(re.search(rb"\r\nx-pid: (\d+)", raw_head).group(1))


def opened_with_pid(port: int) -> tuple[Raw, int]:
    raw = Raw(port)
    raw.send(handshake("localhost", "/x/protocol", None))
    head = raw.head()
    assert head.startswith(b"HTTP/1.1 101 "), head
    return raw, pid_of(head)


def closed_going_away(raw: Raw, answer: bool) -> None:
    """The server's close is 1001; answered or not, the server then closes TCP."""
    opcode, payload = raw.frame()
    assert opcode == CLOSE and close_code(payload) == 1001, payload
    if answer:
        raw.send(frame(CLOSE, struct.pack("!H", 1001)))
    assert raw.rest() == b""
    raw.close()


@pytest.mark.slow
def test_graceful_stop_closes_every_websocket_with_1001(tmp_path: Path) -> None:
    config = (
        ONE_CHILD + MOUNTS + f"GracefulShutdownTimeout {GRACE}\n"
        f"WebSocketCloseTimeout {CLOSE_TIMEOUT}\n"
    )
    with Server(tmp_path, config, mpm="event") as server:
        sockets = [opened(server.port) for _ in range(OPEN_SOCKETS)]
        for raw in sockets:  # every one is accepted and echoing before the stop
            raw.send(text("hi"))
            assert raw.frame() == (TEXT, b"hi")
        server.signal(signal.SIGWINCH)
        # most answer the close; the last two never do, and are cut after WebSocketCloseTimeout
        for i, raw in enumerate(sockets):
            closed_going_away(raw, answer=i < OPEN_SOCKETS - 2)
        assert server.proc.wait(timeout=GRACE) == 0
        assert "Traceback" not in server.log_text()


def _get_gate(port: int, gate: Path, out: list[bytes]) -> None:
    """GET /x/gate on its own connection; the whole response into `out`."""
    raw = Raw(port)
    raw.send(
        f"GET /x/gate?{gate} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    )
    out.append(raw.rest())
    raw.close()


@pytest.mark.slow
def test_graceful_restart_moves_new_websockets_to_the_new_generation(tmp_path: Path) -> None:
    # ServerLimit 2: a slot for the new generation while the old child finishes (Apache's
    # event MPM needs that headroom too)
    config = ONE_CHILD.replace("ServerLimit 1", "ServerLimit 2") + MOUNTS
    config += f"GracefulShutdownTimeout {GRACE}\n"
    with Server(tmp_path, config, mpm="event") as server:
        old = [opened_with_pid(server.port) for _ in range(OPEN_SOCKETS)]
        old_pid = old[0][1]
        assert {pid for _, pid in old} == {old_pid}
        gate, response = tmp_path / "gate", []
        held = threading.Thread(target=_get_gate, args=(server.port, gate, response))
        held.start()
        try:
            wait_for(Path(f"{gate}.started").exists)  # the request is in flight on old_pid
            server.signal(signal.SIGUSR1)
            for raw, _ in old:
                closed_going_away(raw, answer=True)
            new_pid = wait_for(lambda: [p for p in children_of(server.pid) if p != old_pid])[0]
            fresh, pid = opened_with_pid(server.port)
            assert pid == new_pid  # served at once by the new generation ...
            assert pid_alive(old_pid)  # ... while the old one still finishes its request
            fresh.send(text("new generation"))
            assert fresh.frame() == (TEXT, b"new generation")
            fresh.close()
        finally:
            gate.touch()
            held.join(timeout=10)
        assert response and response[0].startswith(b"HTTP/1.1 200 "), response
        assert response[0].endswith(b"\r\n9\r\nreleased\n\r\n0\r\n\r\n")
        wait_for(lambda: not pid_alive(old_pid), timeout=GRACE)
        assert "Traceback" not in server.log_text()


# -- idle WebSockets hold no thread ---------------------------------------------------------------


async def _open_idle(port: int, gate: asyncio.Semaphore) -> asyncio.StreamWriter:
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(handshake("localhost", "/idle", None))
        head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101 "):
        raise AssertionError(head)
    return writer


def thread_count(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        return int(re.search(r"^Threads:\s+(\d+)$", file.read(), re.M).group(1))


async def _hold_idle_websockets(server: Server, child: int, threads: int) -> None:
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    opened_ = await asyncio.wait_for(
        asyncio.gather(
            *(_open_idle(server.port, gate) for _ in range(IDLE_SOCKETS)), return_exceptions=True
        ),
        timeout=60,
    )
    writers = [item for item in opened_ if not isinstance(item, BaseException)]
    try:
        failures = [item for item in opened_ if isinstance(item, BaseException)]
        assert not failures, f"{len(failures)} of {IDLE_SOCKETS} failed: {failures[:3]}"
        assert not any(w.transport.is_closing() for w in writers)
        # four threads, 2,000 WebSockets: a WSGI request (which needs a thread) and an ASGI one
        # on new connections are served at once, and the child has not grown a thread
        status, _, body = await asyncio.to_thread(call, server, "GET", "/wsgi")
        assert (status, body) == (200, b"Hello, World!")
        status, _, body = await asyncio.to_thread(call, server, "GET", "/hello")
        assert (status, body) == (200, b"WebSocket echo\n")
        assert thread_count(child) == threads
        await asyncio.to_thread(wait_for, lambda: conns_total(server) >= IDLE_SOCKETS)
        await asyncio.to_thread(wait_for, lambda: status_upgraded(server) >= IDLE_SOCKETS)
        assert not any(w.transport.is_closing() for w in writers)  # all still open
    finally:
        for writer in writers:
            writer.close()
        for writer in writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


FOUR_THREADS = """\
StartServers 1
ServerLimit 1
ThreadsPerChild 4
MaxRequestWorkers 4
MinSpareThreads 1
MaxSpareThreads 5
"""


@pytest.mark.slow
def test_two_thousand_idle_websockets_on_four_threads(tmp_path: Path) -> None:
    raise_open_files(4 * IDLE_SOCKETS)  # the child inherits it
    config = FOUR_THREADS + "WSGIApp /wsgi testapp:hello\n" + MOUNTS
    with Server(tmp_path, config, mpm="event") as server:
        pid = wait_for(lambda: children_of(server.pid))[0]
        assert call(server, "GET", "/wsgi")[0] == 200  # every thread it will have is started
        asyncio.run(_hold_idle_websockets(server, pid, thread_count(pid)))
        wait_for(lambda: status_upgraded(server) == 0)  # every close seen, none left counted
        assert children_of(server.pid) == [pid]
        assert "Traceback" not in server.log_text()
