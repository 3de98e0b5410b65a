"""WebSocket tunnelling (issue 11, item 7): the relay, the protocol's hand-over, and real
WebSocket clients and servers (websockets) through mpmd in every MPM."""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path

import pytest

from helpers import DEFAULT_SETTINGS
from mpmd.handlers.proxy.handler import upgrade_protocol
from mpmd.handlers.proxy.tunnel import BUFFER, relay
from mpmd.http.protocol import HttpProtocol
from proxy_doubles import Backend, member
from server import Server, call, free_port, wait_for

websockets = pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402
from websockets.sync.server import serve  # noqa: E402

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
)
MPMS = [("prefork", ()), ("worker", ()), ("event", ()), ("event", ("-X",))]

# -- the protocol holds what follows an upgrade request -----------------------------------------


def test_bytes_behind_an_upgrade_head_are_held_for_the_tunnel():
    protocol = HttpProtocol(DEFAULT_SETTINGS)
    protocol.feed(UPGRADE + b"\x81\x85frame")
    request = protocol.next_request()
    assert request.upgrade and request.path == "/ws"
    assert protocol.next_request() is None and not protocol.buffered()
    protocol.feed(b"more")
    assert protocol.take_upgraded() == b"\x81\x85framemore"
    protocol.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert protocol.next_request() is None  # the connection carries no more HTTP


def test_an_upgrade_answered_plainly_parses_what_followed_it():
    protocol = HttpProtocol(DEFAULT_SETTINGS)
    protocol.feed(UPGRADE + b"GET /next HTTP/1.1\r\nHost: a\r\n")
    request = protocol.next_request()
    protocol.feed(b"\r\n")
    protocol.feed(b"")
    assert protocol.finish_request(request)
    assert protocol.next_request().path == "/next"
    assert protocol.eof


@pytest.mark.parametrize(
    "head",
    [
        b"GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",  # no Connection: upgrade
        b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 1\r\n\r\nx",
    ],
    ids=["http10", "no-connection-token", "with-body"],
)
def test_requests_that_cannot_switch_are_not_upgrades(head):
    protocol = HttpProtocol(DEFAULT_SETTINGS)
    protocol.feed(head + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    request = protocol.next_request()
    assert not request.upgrade
    request.body.read()
    assert protocol.finish_request(request) == (b"HTTP/1.1" in head)


# -- which requests are tunnelled ---------------------------------------------------------------


class _Exchange:
    def __init__(self, request, takeover=True):
        self.request = request
        self.conn = dataclasses.make_dataclass("C", ["take_over"])(
            (lambda: None) if takeover else None
        )


def _request(upgrade="websocket"):
    protocol = HttpProtocol(DEFAULT_SETTINGS)
    protocol.feed(UPGRADE.replace(b"websocket", upgrade.encode()))
    return protocol.next_request()


@pytest.mark.parametrize(
    ("accepted", "asked", "result"),
    [
        ("websocket", "websocket", "websocket"),
        ("websocket", "WebSocket", "WebSocket"),  # case-insensitive, the client's spelling
        ("WebSocket", "websocket", "websocket"),
        ("h2c, websocket", "websocket", "websocket"),  # a list
        ("*", "foo", "foo"),  # upgrade=ANY
        ("websocket", "h2c", None),
        ("", "websocket", None),  # a member without upgrade=: plain HTTP
    ],
)
def test_upgrade_protocol(accepted, asked, result):
    exchange = _Exchange(_request(asked))
    assert upgrade_protocol(exchange, member(1, upgrade=accepted)) == result


def test_no_tunnel_where_the_connection_cannot_be_handed_over():
    exchange = _Exchange(_request(), takeover=False)
    assert upgrade_protocol(exchange, member(1, upgrade="websocket")) is None


# -- the relay ----------------------------------------------------------------------------------


def _tunnel(idle=10.0, **first):
    """(client's end, back end's end, thread running relay, its result list)."""
    client_out, client_in = socket.socketpair()
    backend_out, backend_in = socket.socketpair()
    results = []
    thread = threading.Thread(
        target=lambda: results.append(relay(client_in, backend_in, idle=idle, **first))
    )
    thread.start()
    return client_out, backend_out, thread, results, (client_in, backend_in)


def _read_all(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_relay_moves_both_ways_and_passes_half_closes_on():
    client, backend, thread, results, ends = _tunnel(to_client=b"101 head|", to_backend=b"held|")
    client.sendall(b"to backend")
    client.shutdown(socket.SHUT_WR)  # the client's half-close reaches the back end
    assert _read_all(backend) == b"held|to backend"
    backend.sendall(b"x" * 300_000)  # more than the buffer: flow control, nothing lost
    backend.shutdown(socket.SHUT_WR)
    assert _read_all(client) == b"101 head|" + b"x" * 300_000
    thread.join(10)
    (result,) = results
    assert result.end == "closed"
    assert (result.to_backend, result.from_client) == (len(b"held|to backend"), 10)
    assert (result.to_client, result.from_backend) == (300_009, 300_000)
    for sock in (client, backend, *ends):
        sock.close()


def test_relay_reads_no_more_than_its_buffer_ahead_of_a_stalled_reader():
    client, backend, thread, results, ends = _tunnel(idle=0.3)
    backend.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(10)
    sent = 0
    try:
        while True:  # the back end never reads: the client's sends must stop succeeding
            sent += client.send(b"y" * 65536)
    except (TimeoutError, OSError):
        pass
    thread.join(10)
    (result,) = results
    assert result.end == "idle"
    assert result.from_client - result.to_backend <= BUFFER
    assert sent > result.from_client  # the rest waited in the kernel, not in the relay
    for sock in (client, backend, *ends):
        sock.close()


def test_an_idle_tunnel_ends_and_both_sides_see_the_close():
    client, backend, thread, results, ends = _tunnel(idle=0.2)
    client.settimeout(10)
    backend.settimeout(10)
    assert client.recv(10) == b"" and backend.recv(10) == b""
    thread.join(10)
    assert results[0].end == "idle"
    for sock in (client, backend, *ends):
        sock.close()


def test_a_reset_ends_the_tunnel():
    client, backend, thread, results, ends = _tunnel()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # RST on a TCP socket; EOF on a socketpair: either ends this direction
    backend.settimeout(10)
    assert backend.recv(10) == b""
    backend.close()
    thread.join(10)
    assert results[0].end in ("closed", "error")
    for sock in ends:
        sock.close()


# -- real WebSocket traffic through mpmd ---------------------------------------------------------


class WsBackend:
    """A websockets echo server in a thread. `/refuse` answers 403; a request without
    Upgrade gets a plain HTTP 200; the message "close-me" makes the server close (4000)."""

    def __init__(self):
        self.requests = []
        self.server = serve(
            self._echo,
            "127.0.0.1",
            0,
            process_request=self._process,
            max_size=None,
            compression=None,
        )
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever)

    def _process(self, connection, request):
        self.requests.append(request)
        if request.path.startswith("/refuse"):
            return connection.respond(403, "refused\n")
        if "Upgrade" not in request.headers:
            return connection.respond(200, f"plain http {request.path}\n")
        return None

    @staticmethod
    def _echo(ws):
        for message in ws:
            if message == "close-me":
                ws.close(4000, "bye")
                return
            ws.send(message)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(10)


def _front(tmp_path: Path, backend: WsBackend, form: str, mpm, args, extra=""):
    if form == "ws":
        rule = f"ProxyPass /ws/ ws://127.0.0.1:{backend.port}/\n"
    else:
        rule = f"ProxyPass /ws/ http://127.0.0.1:{backend.port}/ upgrade=websocket\n"
    return Server(tmp_path, extra + rule, mpm=mpm, args=args)


def _check_echo(front: Server, backend: WsBackend):
    uri = f"ws://127.0.0.1:{front.port}/ws/chat"
    with connect(uri, max_size=None, open_timeout=10, close_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=10) == b"\x00\x01binary\xff"
        big = bytes(range(256)) * 4096  # 1 MiB
        ws.send(big)
        assert ws.recv(timeout=10) == big
    assert ws.close_code == 1000  # the client's close handshake, answered through the tunnel
    seen = backend.requests[-1]
    assert seen.path == "/chat" and seen.headers["Connection"] == "Upgrade"
    assert seen.headers["X-Forwarded-For"] == "127.0.0.1"
    with connect(uri, open_timeout=10, close_timeout=10) as ws:
        ws.send("close-me")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    assert (ws.close_code, ws.close_reason) == (4000, "bye")  # the back end's close
    wait_for(lambda: front.access_log.read_text().count('"GET /ws/chat HTTP/1.1" 101 ') == 2)
    lines = [x for x in front.access_log.read_text().splitlines() if "/ws/chat" in x]
    tunnelled = sorted(int(x.split('" 101 ')[1].split()[0]) for x in lines)  # %B of each
    assert tunnelled[-1] > 1024 * 1024  # the echo's; the children may log them in any order


@pytest.mark.parametrize(("mpm", "args"), MPMS)
@pytest.mark.parametrize("form", ["ws", "upgrade"])
def test_websocket_echo_through_the_proxy(tmp_path, mpm, args, form):
    with WsBackend() as backend, _front(tmp_path, backend, form, mpm, args) as front:
        _check_echo(front, backend)
        # the same server still answers plain HTTP on the tunnel's route
        status, _, body = call(front, "GET", "/ws/page")
        assert (status, body) == (200, b"plain http /page\n")
        assert "Upgrade" not in backend.requests[-1].headers


@pytest.mark.slow
@pytest.mark.parametrize(("mpm", "args"), [("worker", ()), ("event", ())])
def test_an_idle_tunnel_is_closed_at_the_larger_timeout(tmp_path, mpm, args):
    extra = "Timeout 1\nProxyTimeout 1\n"
    with (
        WsBackend() as backend,
        _front(tmp_path, backend, "upgrade", mpm, args, extra) as front,
        connect(f"ws://127.0.0.1:{front.port}/ws/idle", open_timeout=10) as ws,
    ):
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=15)  # nothing moves: the tunnel ends after a second
        wait_for(lambda: '"GET /ws/idle HTTP/1.1" 101 ' in front.access_log.read_text())


@pytest.mark.parametrize("form", ["ws", "upgrade"])
def test_a_refused_upgrade_reaches_the_client_as_it_is(tmp_path, form):
    with WsBackend() as backend, _front(tmp_path, backend, form, "event", ()) as front:
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{front.port}/ws/refuse", open_timeout=10)
        assert info.value.response.status_code == 403
        assert info.value.response.body == b"refused\n"
        # the connection carries on as HTTP: a plain request after the refused upgrade
        with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
            sock.sendall(
                b"GET /ws/refuse HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                b"GET /ws/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 403 ") and b"plain http /after\n" in data


def test_an_upgrade_to_a_member_without_upgrade_goes_as_plain_http(tmp_path):
    with WsBackend() as backend:
        config = f"ProxyPass /ws/ http://127.0.0.1:{backend.port}/\n"
        with Server(tmp_path, config, mpm="event") as front:
            with pytest.raises(InvalidStatus) as info:
                connect(f"ws://127.0.0.1:{front.port}/ws/x", open_timeout=10)
            assert info.value.response.status_code == 200  # the back end's plain answer
            assert "Upgrade" not in backend.requests[-1].headers


@pytest.mark.parametrize(("mpm", "args"), [("prefork", ()), ("event", ())])
def test_a_frame_sent_right_behind_the_upgrade_request_is_not_lost(tmp_path, mpm, args):
    """The client's first frame in the same packet as its head: the protocol holds it and the
    tunnel delivers it after the 101 (as a masked text frame "early")."""
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"early"))
    frame = b"\x81\x85" + mask + payload
    head = (
        b"GET /ws/first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with WsBackend() as backend, _front(tmp_path, backend, "ws", mpm, args) as front:
        with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
            sock.sendall(head + frame)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"\x81\x05early"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
        assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        response_head = data.split(b"\r\n\r\n")[0].decode()
        assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in response_head
        assert "Upgrade: websocket" in response_head and "Connection: Upgrade" in response_head


@pytest.mark.parametrize("mpm", ["worker", "event"])
def test_a_101_for_another_protocol_is_a_502(tmp_path, mpm):
    def answer(sock, reader, backend):
        if reader.head() is not None:
            sock.sendall(b"HTTP/1.1 101 Switching\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")

    with Backend(answer) as backend:
        config = f"ProxyPass /ws/ ws://127.0.0.1:{backend.port}/\n"
        with Server(tmp_path, config, mpm=mpm) as front:
            with pytest.raises(InvalidStatus) as info:
                connect(f"ws://127.0.0.1:{front.port}/ws/x", open_timeout=10)
            assert info.value.response.status_code == 502
            wait_for(lambda: "Unexpected Upgrade: h2c (expecting websocket)" in front.log_text())


def test_failover_happens_before_the_tunnel(tmp_path):
    dead = free_port()
    with WsBackend() as backend:
        config = (
            f"<Proxy balancer://ws>\n    BalancerMember ws://127.0.0.1:{dead}\n"
            f"    BalancerMember ws://127.0.0.1:{backend.port}\n</Proxy>\n"
            "ProxyPass /ws/ balancer://ws/\n"
        )
        with Server(tmp_path, config, mpm="event") as front:
            with connect(f"ws://127.0.0.1:{front.port}/ws/f", open_timeout=10) as ws:
                ws.send("after failover")
                assert ws.recv(timeout=10) == "after failover"
            assert "AH00959" in front.log_text() or "AH01114" in front.log_text()


def _switch_then_answer_eof(sock, reader, backend):
    """A 101 with a header to drop and one to keep, then: read until the client's EOF comes
    through, answer what came, and close (the half-close must reach the back end)."""
    if reader.head() is None:
        return
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Keep-Alive: timeout=5\r\nX-Back: 1\r\n\r\nearly:"
    )
    data = reader.buf
    while chunk := sock.recv(65536):
        data += chunk
    sock.sendall(b"got " + data)
    sock.close()


@pytest.mark.parametrize(("mpm", "args"), [("prefork", ()), ("event", ())])
def test_a_half_close_goes_through_and_both_tunnels_agree(tmp_path, mpm, args):
    """The client sends (the first bytes in its head's packet) and shuts down its writing side:
    the back end sees the EOF, answers, and the answer reaches the client. The 101 head and the
    access log line are the same for the blocking tunnel (prefork) and the loop's (event)."""
    with Backend(_switch_then_answer_eof) as backend:
        config = (
            'LogFormat "%>s %B %r" tunnel\nCustomLog "logs/tunnel_log" tunnel\n'
            f"ProxyPass /ws/ ws://127.0.0.1:{backend.port}/\n"
        )
        (tmp_path / "logs").mkdir()
        with Server(tmp_path, config, mpm=mpm, args=args) as front:
            with socket.create_connection(("127.0.0.1", front.port), timeout=10) as sock:
                sock.sendall(UPGRADE.replace(b"/ws", b"/ws/x") + b"one,")
                sock.sendall(b"two")
                sock.shutdown(socket.SHUT_WR)
                data = _read_all(sock)
            log = tmp_path / "logs" / "tunnel_log"
            wait_for(lambda: "GET /ws/x" in log.read_text())
            # the tunnel's line: another child's (the readiness probe's) may be written after it
            line = next(x for x in log.read_text().splitlines() if "GET /ws/x" in x)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.decode() == (
        "HTTP/1.1 101 Switching Protocols\r\nX-Back: 1\r\nConnection: Upgrade\r\nUpgrade: websocket"
    )
    assert rest == b"early:got one,two"
    assert line == f"101 {len(rest)} GET /ws/x HTTP/1.1"
