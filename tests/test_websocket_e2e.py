"""WebSockets end to end on a real event mpmd (issue 15, Deliver 4): the conformance table
(tests/websocket_cases.py) over raw sockets, one connection per case, against one server; the
`websockets` library and `wsproto` as independent clients, with and without permessage-deflate;
handshake refusals, subprotocols, the denial extension and close-before-accept; keepalive pings;
size and protocol limits; TLS; the access log and the status page. Graceful stop and restart
and thousands of idle WebSockets are in test_websocket_e2e_lifecycle.py."""

from __future__ import annotations

import os
import re
import socket
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.websocket_cases import Case, cases, run_case
from tests.websocket_client import CLOSE, NO_CODE, PING, PONG, TEXT, frame, handshake, text
from websockets.sync.client import connect as ws_connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from server import ONE_EVENT_CHILD as ONE_CHILD
from server import Server, call, children_of, free_port, wait_for
from tls_certs import make_pki

MAX = 256 * 1024  # the conformance server's WebSocketMaxMessageSize: over the 128 KiB of
# groups 12-13's largest data set, small enough for group 9 to be quick
MIB = 1024 * 1024
MOUNTS = """\
ExtendedStatus On
<Location /server-status>
    SetHandler server-status
</Location>
ASGIApp /x asgi_ws_extra:app
ASGIApp / asgi_ws_echo:app
"""
TABLE = cases(max_message_size=MAX)


# -- raw sockets ------------------------------------------------------------------------------


class Raw:
    """A plain TCP client with the `send`/`recv(timeout)` pair run_case drives."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = bytearray()
        self.answer = b""  # the response head, once read by opened()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65536)

    def head(self) -> bytes:
        """The response head (its body, if any, stays in `buffer`)."""
        while b"\r\n\r\n" not in self.buffer:
            data = self.recv(10)
            if not data:
                raise AssertionError(f"closed before a whole head: {bytes(self.buffer)!r}")
            self.buffer += data
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        return head

    def rest(self) -> bytes:
        """Everything up to the server's EOF."""
        while data := self.recv(10):
            self.buffer += data
        data, self.buffer = bytes(self.buffer), bytearray()
        return data

    def frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload)."""
        while True:
            parsed = _parse_frame(self.buffer)
            if parsed is not None:
                opcode, payload, used = parsed
                del self.buffer[:used]
                return opcode, payload
            data = self.recv(10)
            if not data:
                raise AssertionError("the server closed TCP before a whole frame")
            self.buffer += data

    def close(self) -> None:
        self.sock.close()


def _parse_frame(buf: bytearray) -> tuple[int, bytes, int] | None:
    if len(buf) < 2:
        return None
    n, at = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        (n,), at = struct.unpack("!H", buf[2:4]), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        (n,), at = struct.unpack("!Q", buf[2:10]), 10
    if len(buf) < at + n:
        return None
    return buf[0] & 0x0F, bytes(buf[at : at + n]), at + n


def close_code(payload: bytes) -> int:
    return struct.unpack("!H", payload[:2])[0] if payload else NO_CODE


def opened(port: int, path: str = "/") -> Raw:
    """A raw WebSocket, handshake done (101 checked; its head in `answer`)."""
    raw = Raw(port)
    raw.send(handshake("localhost", path, None))
    raw.answer = raw.head()
    assert raw.answer.startswith(b"HTTP/1.1 101 "), raw.answer
    return raw


def access_lines(server: Server) -> list[str]:
    return server.access_log.read_text().splitlines() if server.access_log.exists() else []


def logged(server: Server, pattern: str) -> list[str]:
    """Access-log lines matching the regular expression `pattern` (polled: lines are written
    once a response ends)."""
    return [line for line in access_lines(server) if re.search(pattern, line)]


def child_pid(server: Server) -> int:
    kids = wait_for(lambda: children_of(server.pid), timeout=10)
    assert len(kids) == 1, kids
    return kids[0]


def still_serving(server: Server) -> None:
    status, _, body = call(server, "GET", "/hello")
    assert (status, body) == (200, b"WebSocket echo\n")


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the table and the other raw-socket tests: 256 KiB messages, no pings."""
    config = ONE_CHILD + MOUNTS + f"WebSocketMaxMessageSize {MAX}\nWebSocketPingInterval 0\n"
    with Server(tmp_path_factory.mktemp("ws-e2e"), config, mpm="event") as server:
        yield server


# -- 1. the conformance table ----------------------------------------------------------------


@pytest.mark.parametrize("case", TABLE, ids=[case.id for case in TABLE])
def test_conformance(ws_server: Server, case: Case) -> None:
    raw = Raw(ws_server.port)
    try:
        run_case(case, raw.send, raw.recv)
    finally:
        raw.close()


def test_conformance_left_the_child_alive(ws_server: Server) -> None:
    """Runs after the table (pytest keeps file order): one child throughout, no traceback."""
    pid = child_pid(ws_server)
    still_serving(ws_server)
    assert child_pid(ws_server) == pid
    assert "Traceback" not in ws_server.log_text()


# -- 2. independent clients: the websockets library and wsproto --------------------------------


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The defaults (16 MiB messages, permessage-deflate On): 1 MiB messages pass."""
    with Server(tmp_path_factory.mktemp("ws-big"), ONE_CHILD + MOUNTS, mpm="event") as server:
        yield server


def payloads() -> list[str | bytes]:
    """Text and binary, small and 1 MiB (the binary one incompressible)."""
    return ["hello, ☃", b"\x00\xff binary", "µ" * (MIB // 2), os.urandom(MIB)]


def websockets_round_trip(url: str, compression: str | None, **kw: object) -> str | None:
    """Every payload echoed through the websockets library; the 101's extensions header."""
    with ws_connect(url, compression=compression, max_size=2 * MIB, proxy=None, **kw) as ws:
        for data in payloads():
            ws.send(data)
            assert ws.recv(timeout=10) == data
        return ws.response.headers.get("Sec-WebSocket-Extensions")


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["deflate", None])
def test_websockets_client_round_trips(big_server: Server, compression: str | None) -> None:
    answer = websockets_round_trip(f"ws://127.0.0.1:{big_server.port}/", compression)
    if compression:
        assert answer is not None and answer.startswith("permessage-deflate")
    else:
        assert answer is None


class WsprotoClient:
    """wsproto's client side over a raw socket: messages reassembled, pings answered."""

    def __init__(self, port: int, deflate: bool, path: str = "/") -> None:
        self.raw = Raw(port)
        self.ws = WSConnection(ConnectionType.CLIENT)
        extensions = [PerMessageDeflate()] if deflate else []
        self.raw.send(self.ws.send(Request(host="localhost", target=path, extensions=extensions)))
        self.parts: list[str | bytes] = []
        self.accepted: AcceptConnection = self.next_event(AcceptConnection)

    def next_event(self, kind: type) -> object:
        while True:
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self.raw.send(self.ws.send(event.response()))
                elif isinstance(event, kind):
                    return event
                elif isinstance(event, Message):
                    self.parts.append(event.data)
                else:
                    raise AssertionError(f"unexpected {event!r}")
            data = self.raw.recv(10)
            self.ws.receive_data(data or None)

    def round_trip(self, data: str | bytes) -> str | bytes:
        kind = TextMessage if isinstance(data, str) else BytesMessage
        self.raw.send(self.ws.send(kind(data=data)))
        while True:
            event = self.next_event(Message)
            self.parts.append(event.data)  # type: ignore[attr-defined]
            if event.message_finished:  # type: ignore[attr-defined]
                parts, self.parts = self.parts, []
                return "".join(parts) if isinstance(data, str) else b"".join(parts)  # type: ignore[arg-type]

    def close(self) -> int:
        """Close 1000 and return the code the server answered with."""
        self.raw.send(self.ws.send(CloseConnection(code=1000)))
        event = self.next_event(CloseConnection)
        assert self.raw.recv(10) == b""  # the server closes TCP first
        self.raw.close()
        return event.code  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("deflate", [True, False])
def test_wsproto_client_round_trips(big_server: Server, deflate: bool) -> None:
    client = WsprotoClient(big_server.port, deflate)
    assert bool(client.accepted.extensions) is deflate
    for data in payloads():
        assert client.round_trip(data) == data
    assert client.close() == 1000


@pytest.mark.slow
def test_per_message_deflate_off_answers_without_extensions(tmp_path: Path) -> None:
    config = ONE_CHILD + MOUNTS + "WebSocketPerMessageDeflate Off\n"
    with Server(tmp_path, config, mpm="event") as server:
        assert websockets_round_trip(f"ws://127.0.0.1:{server.port}/", "deflate") is None
        client = WsprotoClient(server.port, deflate=True)
        assert client.accepted.extensions == []
        assert client.round_trip(b"\x01" * MIB) == b"\x01" * MIB
        assert client.close() == 1000


# -- 3. handshake refusals ----------------------------------------------------------------------

GOOD = {
    "Host": "localhost",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
REFUSALS = {
    "missing-key": ("GET", {"Sec-WebSocket-Key": None}, 400),
    "bad-version": ("GET", {"Sec-WebSocket-Version": "8"}, 426),
    "no-connection-upgrade": ("GET", {"Connection": None}, 400),
    "post": ("POST", {}, 400),
    "with-body": ("GET", {"Content-Length": "5"}, 400),  # the body: "hello"
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_bad_handshake_is_refused_and_logged(ws_server: Server, name: str) -> None:
    method, changes, status = REFUSALS[name]
    fields = {**GOOD, **changes}
    target = f"/refused-{name}"
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(
        f"{key}: {value}\r\n" for key, value in fields.items() if value is not None
    )
    raw = Raw(ws_server.port)
    raw.send(head.encode() + b"\r\n" + (b"hello" if "Content-Length" in changes else b""))
    answer = raw.head()
    raw.rest()  # the server closes after a refusal
    raw.close()
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer
    if status == 426:
        assert b"\r\nSec-WebSocket-Version: 13" in answer
    assert wait_for(lambda: logged(ws_server, rf'"{method} {target} HTTP/1\.1" {status} \d+'))
    echo = opened(ws_server.port)  # the next connection is served
    echo.send(text("after"))
    assert echo.frame() == (TEXT, b"after")
    echo.close()


# -- 4. what the application answers to the handshake -----------------------------------------


def test_subprotocol_and_extra_headers_on_accept(ws_server: Server) -> None:
    url = f"ws://127.0.0.1:{ws_server.port}/x/protocol"
    with ws_connect(url, subprotocols=["chat", "superchat"], proxy=None) as ws:
        assert ws.subprotocol == "superchat"
        assert ws.response.headers["X-Picked"] == "chat,superchat"
        ws.send("picked")
        assert ws.recv(timeout=10) == "picked"


def test_denial_response_reaches_the_client(ws_server: Server) -> None:
    raw = Raw(ws_server.port)
    raw.send(handshake("localhost", "/x/deny", None))
    head = raw.head()
    body = raw.rest()
    raw.close()
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert b"\r\nx-denied: yes" in head.lower()
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"3\r\nno \r\n6\r\nentry\n\r\n0\r\n\r\n"
    assert wait_for(lambda: logged(ws_server, r'"GET /x/deny HTTP/1\.1" 401 \d+'))


def test_close_before_accept_is_403(ws_server: Server) -> None:
    raw = Raw(ws_server.port)
    raw.send(handshake("localhost", "/x/refuse", None))
    head = raw.head()
    raw.rest()
    raw.close()
    assert head.startswith(b"HTTP/1.1 403 "), head
    assert wait_for(lambda: logged(ws_server, r'"GET /x/refuse HTTP/1\.1" 403 \d+'))


# -- 5. keepalive pings ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ping_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = ONE_CHILD + MOUNTS + "WebSocketPingInterval 1\nWebSocketPingTimeout 1\n"
    with Server(tmp_path_factory.mktemp("ws-ping"), config, mpm="event") as server:
        yield server


@pytest.mark.slow
def test_a_client_that_never_answers_pings_is_closed_1011(ping_server: Server) -> None:
    raw = opened(ping_server.port)
    opcode, payload = raw.frame()  # within the ping interval (the read is bounded)
    assert opcode == PING
    opcode, payload = raw.frame()  # nothing answered: within the ping timeout
    assert opcode == CLOSE and close_code(payload) == 1011, payload
    assert b"keepalive ping timeout" in payload
    assert raw.rest() == b""  # a failed connection: TCP closed without waiting for a reply
    raw.close()


@pytest.mark.slow
def test_a_client_that_answers_pings_stays_open(ping_server: Server) -> None:
    raw = opened(ping_server.port)
    for _ in range(3):  # three ping intervals, each ping answered
        opcode, payload = raw.frame()
        assert opcode == PING
        raw.send(frame(PONG, payload))
    raw.send(text("still here"))
    assert raw.frame() == (TEXT, b"still here")
    raw.send(frame(CLOSE, struct.pack("!H", 1000)))
    opcode, payload = raw.frame()
    assert opcode == CLOSE and close_code(payload) == 1000
    raw.close()


# -- 6. limits and protocol errors never kill the child ----------------------------------------

BAD_INPUT = {
    "too-big": (frame(2, b"\x00" * (MAX + 1)), 1009),
    "reserved-opcode": (frame(3, b"x"), 1002),
    "unmasked": (frame(TEXT, b"unmasked", mask=False), 1002),
    "invalid-utf8": (text(b"\xce\xba\xed\xa0\x80"), 1007),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_frames_close_with_their_code(ws_server: Server, name: str) -> None:
    data, code = BAD_INPUT[name]
    pid = child_pid(ws_server)
    raw = opened(ws_server.port)
    raw.send(data)
    opcode, payload = raw.frame()
    assert opcode == CLOSE and close_code(payload) == code, payload
    assert raw.rest() == b""  # the server closes TCP after failing the connection
    raw.close()
    still_serving(ws_server)
    assert child_pid(ws_server) == pid


# -- 9. wss: a TLS virtual host ------------------------------------------------------------------


@pytest.mark.slow
def test_wss_through_a_tls_virtual_host(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    crt, key = pki.server("localhost")
    tls_port = free_port()
    config = (
        ONE_CHILD
        + f"Listen 127.0.0.1:{tls_port}\n<VirtualHost *:{tls_port}>\nServerName localhost\n"
        + f'SSLEngine on\nSSLCertificateFile "{crt}"\nSSLCertificateKeyFile "{key}"\n'
        + "ASGIApp /x asgi_ws_extra:app\n</VirtualHost>\n"
        + MOUNTS
    )
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    with Server(tmp_path, config, mpm="event") as server:
        url = f"wss://localhost:{tls_port}/x/protocol"
        with ws_connect(url, ssl=context, subprotocols=["tls"], max_size=2 * MIB, proxy=None) as ws:
            assert ws.subprotocol == "tls"
            for data in payloads():
                ws.send(data)
                assert ws.recv(timeout=10) == data
        assert wait_for(lambda: logged(server, r'"GET /x/protocol HTTP/1\.1" 101 \d+'))


# -- 10. the access log and the status page ------------------------------------------------------


def status_upgraded(server: Server) -> int:
    """The `upgraded` cell of the event table's Sum row on the HTML status page."""
    _, _, page = call(server, "GET", "/server-status")
    row = re.search(r"<tr><td>Sum</td>(.*?)</tr>", page.decode())
    assert row, page[:400]
    return int(re.findall(r"<td>(.*?)</td>", row.group(1))[11])


def conns_total(server: Server) -> int:
    _, _, page = call(server, "GET", "/server-status?auto")
    return int(re.search(r"^ConnsTotal: (\d+)$", page.decode(), re.M).group(1))


@pytest.mark.slow
def test_access_log_and_status_page_count_an_open_websocket(ws_server: Server) -> None:
    raw = opened(ws_server.port, "/logged")
    raw.send(text("x" * 1000))
    assert raw.frame() == (TEXT, b"x" * 1000)
    wait_for(lambda: status_upgraded(ws_server) >= 1)
    assert conns_total(ws_server) >= 1
    _, _, page = call(ws_server, "GET", "/server-status")
    assert b"GET /logged HTTP/1.1" in page  # its scoreboard record while open
    raw.send(frame(CLOSE, struct.pack("!H", 1000)))
    assert raw.frame() == (CLOSE, struct.pack("!H", 1000))
    assert raw.rest() == b""
    raw.close()
    line = wait_for(lambda: logged(ws_server, r'"GET /logged HTTP/1\.1" 101 '))[0]
    sent = int(re.search(r'" 101 (\d+) ', line).group(1))
    # the 101 head, the 1,000-byte echo (4-byte frame head) and the close (2-byte head, code)
    assert sent == len(raw.answer) + 4 + (4 + 1000) + (2 + 2), line
    wait_for(lambda: status_upgraded(ws_server) == 0)
