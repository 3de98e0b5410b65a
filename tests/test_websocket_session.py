"""The sans-I/O WebSocket session: handshake refusals, the 101, messages and closes, with
wsproto's client side and hand-built frames as the peer."""

from __future__ import annotations

import struct

import pytest
from tests.websocket_client import CLOSE, PING, TEXT, frame, text
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from mpmd.handlers.asgi.websocket import (
    WebSocketSession,
    WebSocketSettings,
    handshake_refusal,
    negotiate_deflate,
    wants_websocket,
)

GOOD = [
    (b"host", b"example.com"),
    (b"upgrade", b"websocket"),
    (b"connection", b"keep-alive, Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"sec-websocket-version", b"13"),
]


def without(name: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in GOOD if k != name] + list(extra)


@pytest.mark.parametrize(
    "method, version, headers, status, extra",
    [
        ("POST", "1.1", GOOD, 400, []),
        ("GET", "1.0", GOOD, 400, []),
        ("GET", "1.1", without(b"host"), 400, []),
        ("GET", "1.1", without(b"upgrade"), 400, []),
        ("GET", "1.1", without(b"upgrade", (b"upgrade", b"h2c")), 400, []),
        ("GET", "1.1", without(b"connection"), 400, []),
        ("GET", "1.1", without(b"connection", (b"connection", b"keep-alive")), 400, []),
        ("GET", "1.1", without(b"sec-websocket-version"), 400, []),
        (
            "GET",
            "1.1",
            without(b"sec-websocket-version", (b"sec-websocket-version", b"8")),
            426,
            [("Sec-WebSocket-Version", "13")],
        ),
        ("GET", "1.1", without(b"sec-websocket-key"), 400, []),
        ("GET", "1.1", without(b"sec-websocket-key", (b"sec-websocket-key", b"c2hvcnQ=")), 400, []),
        (
            "GET",
            "1.1",
            without(b"sec-websocket-key", (b"sec-websocket-key", b"not base64!")),
            400,
            [],
        ),
        ("GET", "1.1", [*GOOD, (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")], 400, []),
    ],
)
def test_handshake_refusals(method, version, headers, status, extra) -> None:
    refusal = handshake_refusal(method, version, headers)
    assert refusal is not None and refusal[:2] == (status, extra) and refusal[2]


def test_a_valid_handshake_is_not_refused() -> None:
    assert handshake_refusal("GET", "1.1", GOOD) is None
    assert wants_websocket(GOOD) and not wants_websocket(without(b"upgrade"))


def client(subprotocols=(), extensions=()) -> tuple[WSConnection, list[tuple[bytes, bytes]]]:
    peer = WSConnection(ConnectionType.CLIENT)
    request = peer.send(
        Request(
            host="example.com",
            target="/",
            subprotocols=list(subprotocols),
            extensions=list(extensions),
        )
    )
    lines = request.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    headers = [
        (n.strip().lower(), v.strip()) for n, _, v in (line.partition(b":") for line in lines)
    ]
    return peer, headers


DEFAULTS = WebSocketSettings()


def connected(
    settings: WebSocketSettings = DEFAULTS, **kw
) -> tuple[WSConnection, WebSocketSession]:
    peer, headers = client(**kw)
    session = WebSocketSession(headers, settings)
    peer.receive_data(session.accept(None, []))
    assert isinstance(next(peer.events()), AcceptConnection)
    return peer, session


def test_accept_is_a_101_wsproto_accepts() -> None:
    peer, headers = client(subprotocols=["chat", "v2"], extensions=[PerMessageDeflate()])
    session = WebSocketSession(headers, WebSocketSettings())
    response = session.accept("v2", [(b"x-extra", b"1"), (b"sec-websocket-protocol", b"chat")])
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nServer: mpmd/" in response and b"\r\nDate: " in response
    peer.receive_data(response)
    accepted = next(peer.events())
    assert isinstance(accepted, AcceptConnection) and accepted.subprotocol == "v2"
    assert [e.name for e in accepted.extensions] == ["permessage-deflate"]
    assert (b"x-extra", b"1") in accepted.extra_headers
    assert response.count(b"Sec-WebSocket-Protocol") == 1


def test_accept_refuses_a_subprotocol_not_offered() -> None:
    _, headers = client(subprotocols=["chat"])
    with pytest.raises(ValueError):
        WebSocketSession(headers, WebSocketSettings()).accept("other", [])


def test_deflate_is_not_negotiated_when_disabled() -> None:
    _, headers = client(extensions=[PerMessageDeflate()])
    response = WebSocketSession(headers, WebSocketSettings(per_message_deflate=False)).accept(
        None, []
    )
    assert b"Sec-WebSocket-Extensions" not in response


@pytest.mark.parametrize(
    "offers, answer",
    [
        (["permessage-deflate"], "permessage-deflate"),
        (
            ["permessage-deflate; client_max_window_bits"],
            "permessage-deflate; client_max_window_bits=12",
        ),
        (
            ["permessage-deflate; server_max_window_bits=10"],
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            ["permessage-deflate; server_max_window_bits=8", "permessage-deflate"],
            "permessage-deflate",
        ),
        (["permessage-deflate; server_max_window_bits=08"], None),
        (["permessage-deflate; client_no_context_takeover=1"], None),
        (["permessage-deflate; foo"], None),
        (["x-webkit-deflate-frame"], None),
    ],
)
def test_deflate_negotiation(offers, answer) -> None:
    agreed = negotiate_deflate(offers)
    assert (agreed[0] if agreed else None) == answer


@pytest.mark.parametrize("deflate", [False, True])
def test_messages_both_ways_with_and_without_deflate(deflate: bool) -> None:
    peer, session = connected(extensions=[PerMessageDeflate()] if deflate else [])
    data = peer.send(TextMessage(data="héllo " * 1000)) + peer.send(
        BytesMessage(data=b"\x00" * 70000)
    )
    assert session.receive_data(data) == [
        {"type": "websocket.receive", "bytes": None, "text": "héllo " * 1000},
        {"type": "websocket.receive", "bytes": b"\x00" * 70000, "text": None},
    ]
    out = session.send_message({"type": "websocket.send", "text": "x" * 5000})
    assert (len(out) < 5000) == deflate
    peer.receive_data(out + session.send_message({"type": "websocket.send", "bytes": b"\x01"}))
    events = list(peer.events())
    assert [e.data for e in events] == ["x" * 5000, b"\x01"]


def test_split_at_every_byte() -> None:
    peer, session = connected()
    data = peer.send(TextMessage(data="κόσμε", message_finished=False)) + peer.send(
        TextMessage(data="!")
    )
    messages = []
    for i in range(len(data)):
        messages += session.receive_data(data[i : i + 1])
    assert messages == [{"type": "websocket.receive", "bytes": None, "text": "κόσμε!"}]


def test_pings_are_answered_and_pongs_tracked() -> None:
    peer, session = connected()
    assert session.receive_data(peer.send(Ping(payload=b"abc"))) == []
    peer.receive_data(session.data_to_send())
    assert list(peer.events()) == [Pong(payload=b"abc")]
    assert session.data_to_send() == b""
    peer.receive_data(session.ping())
    assert session.awaiting_pong
    (ping,) = peer.events()
    session.receive_data(peer.send(Pong(payload=b"wrong")))
    assert session.awaiting_pong
    session.receive_data(peer.send(ping.response()))
    assert not session.awaiting_pong


def test_close_from_the_peer_is_answered_and_disconnects_once() -> None:
    peer, session = connected()
    messages = session.receive_data(peer.send(CloseConnection(code=4000, reason="bye")))
    assert messages == [{"type": "websocket.disconnect", "code": 4000, "reason": "bye"}]
    assert session.closed and session.close_sent and session.close_received
    peer.receive_data(session.data_to_send())
    assert list(peer.events()) == [CloseConnection(code=4000, reason="")]
    assert session.receive_data(b"") == []
    with pytest.raises(RuntimeError):
        session.send_message({"type": "websocket.send", "text": "late"})


def test_close_without_code_is_1005_and_eof_is_1006() -> None:
    _, session = connected()
    assert session.receive_data(frame(CLOSE)) == [
        {"type": "websocket.disconnect", "code": 1005, "reason": ""}
    ]
    assert session.data_to_send() == b"\x88\x00"
    _, session = connected()
    assert session.receive_data(b"") == [
        {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    ]
    assert session.closed and session.data_to_send() == b""


def test_server_close_waits_for_the_reply() -> None:
    peer, session = connected()
    peer.receive_data(session.send_message({"type": "websocket.close", "reason": "done"}))
    assert list(peer.events()) == [CloseConnection(code=1000, reason="done")]
    assert session.closing and not session.closed
    messages = session.receive_data(peer.send(CloseConnection(code=1000)))
    assert messages == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]
    assert session.closed and session.data_to_send() == b""


@pytest.mark.parametrize(
    "data, code",
    [
        (text("x", rsv=1), 1002),
        (frame(3, b"x"), 1002),
        (frame(11), 1002),
        (text("x", mask=False), 1002),
        (frame(PING, b"x" * 126), 1002),
        (frame(PING, b"x", fin=False), 1002),
        (frame(0, b"x"), 1002),
        (frame(CLOSE, b"\x03"), 1002),
        (frame(CLOSE, struct.pack("!H", 1005)), 1002),
        (frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
        (text(b"\xed\xa0\x80"), 1007),
        (text(b"ok", fin=False) + frame(0, b"\xff"), 1007),
    ],
)
def test_protocol_errors_fail_the_connection(data: bytes, code: int) -> None:
    peer, session = connected()
    messages = session.receive_data(data + frame(PING, b"after"))
    assert [m["code"] for m in messages] == [code]
    assert session.closed and session.failed
    peer.receive_data(session.data_to_send())
    (event,) = peer.events()  # the close, and no pong for the ping that followed
    assert isinstance(event, CloseConnection) and event.code == code


def test_message_size_is_checked_while_the_frame_arrives() -> None:
    peer, session = connected(WebSocketSettings(max_message_size=1000))
    whole = frame(TEXT, b"*" * 100_000)
    assert session.receive_data(whole[:600]) == []
    (message,) = session.receive_data(whole[600:1200])
    assert message == {
        "type": "websocket.disconnect",
        "code": 1009,
        "reason": "Message exceeds the maximum size (1000 bytes)",
    }
    peer.receive_data(session.data_to_send())
    assert next(peer.events()).code == 1009


def test_message_size_counts_fragments_and_inflated_bytes() -> None:
    peer, session = connected(WebSocketSettings(max_message_size=1000))
    assert session.receive_data(peer.send(TextMessage(data="*" * 1000))) != []
    parts = b"".join(
        peer.send(BytesMessage(data=b"*" * 400, message_finished=False)) for _ in range(2)
    )
    assert session.receive_data(parts) == []
    assert session.receive_data(peer.send(BytesMessage(data=b"*" * 201)))[0]["code"] == 1009
    peer, session = connected(
        WebSocketSettings(max_message_size=1000), extensions=[PerMessageDeflate()]
    )
    bomb = peer.send(BytesMessage(data=b"\x00" * 1_000_000))
    assert len(bomb) < 2000
    assert session.receive_data(bomb)[0]["code"] == 1009


@pytest.mark.parametrize(
    "message, error",
    [
        ({"type": "websocket.send"}, ValueError),
        ({"type": "websocket.send", "bytes": b"a", "text": "b"}, ValueError),
        ({"type": "websocket.send", "text": b"bytes"}, TypeError),
        ({"type": "websocket.send", "bytes": "text"}, TypeError),
        ({"type": "websocket.close", "code": 1005}, ValueError),
        ({"type": "websocket.close", "code": 999}, ValueError),
        ({"type": "websocket.close", "reason": "x" * 124}, ValueError),
        ({"type": "websocket.accept"}, ValueError),
    ],
)
def test_invalid_messages_from_the_app(message: dict, error: type) -> None:
    _, session = connected()
    with pytest.raises(error):
        session.send_message(message)


def test_nothing_before_accept() -> None:
    _, headers = client()
    session = WebSocketSession(headers, WebSocketSettings())
    with pytest.raises(RuntimeError):
        session.receive_data(b"x")
