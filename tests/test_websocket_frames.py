"""The direct path for common frames (websocket_frames.py): what it takes from wsproto, and
that every other frame, however it arrives next to a common one, still gets wsproto's handling."""

from __future__ import annotations

import pytest
from tests.test_websocket_session import connected
from tests.websocket_client import BINARY, CONT, PING, frame, text
from wsproto.events import BytesMessage, CloseConnection, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate

from mpmd.handlers.asgi import websocket_frames
from mpmd.handlers.asgi.websocket import WebSocketSettings


def received(value: str | bytes) -> dict:
    if isinstance(value, str):
        return {"type": "websocket.receive", "bytes": None, "text": value}
    return {"type": "websocket.receive", "bytes": value, "text": None}


@pytest.fixture
def direct(monkeypatch) -> list[int]:
    """The byte count the direct path took on each read it was offered."""
    taken: list[int] = []
    read = websocket_frames.read_messages

    def spy(data: bytes, limit: int) -> tuple[list[dict], int]:
        messages, used = read(data, limit)
        taken.append(used)
        return messages, used

    monkeypatch.setattr(websocket_frames, "read_messages", spy)
    return taken


def test_common_frames_of_every_length_form(direct) -> None:
    _, session = connected()
    data = text("") + text("κόσμε") + frame(BINARY, b"\x00\xff" * 63) + text("x" * 300)
    data += frame(BINARY, b"b" * 65535)
    assert session.receive_data(data) == [
        received(""),
        received("κόσμε"),
        received(b"\x00\xff" * 63),
        received("x" * 300),
        received(b"b" * 65535),
    ]
    assert direct == [len(data)]


def test_a_ping_behind_a_common_frame_is_wsproto_s(direct) -> None:
    peer, session = connected()
    first = text("hello")
    assert session.receive_data(first + frame(PING, b"p") + text("again")) == [
        received("hello"),
        received("again"),
    ]
    assert direct == [len(first)]
    peer.receive_data(session.data_to_send())
    assert list(peer.events()) == [Pong(payload=b"p")]
    session.receive_data(text("next"))
    assert direct[-1] == len(text("next"))  # wsproto is idle again: the direct path resumes


def test_a_fragmented_message_after_a_common_frame(direct) -> None:
    _, session = connected()
    first = text("a")
    data = first + text("b", fin=False) + frame(PING) + frame(CONT, b"c") + text("d")
    assert session.receive_data(data) == [received("a"), received("bc"), received("d")]
    assert direct == [len(first)]
    assert session.receive_data(text("e", fin=False)) == []
    assert session.receive_data(frame(CONT, b"f")) == [received("ef")]
    assert direct == [len(first), 0]  # offered nothing while the fragment was in wsproto
    assert session.receive_data(text("g")) == [received("g")]
    assert direct[-1] == len(text("g"))


def test_a_frame_split_across_reads(direct) -> None:
    _, session = connected()
    whole = text("x" * 300)
    for cut in (1, 2, 5, 8, 100, len(whole) - 1):
        assert session.receive_data(whole[:cut]) == []
        assert session.receive_data(whole[cut:] + text("y")) == [received("x" * 300), received("y")]
    assert session.receive_data(whole) == [received("x" * 300)]
    assert direct[-1] == len(whole)


@pytest.mark.parametrize(
    "bad, code",
    [
        (text(b"\xed\xa0\x80"), 1007),  # a UTF-16 surrogate
        (text(b"\xc0\xaf"), 1007),  # an overlong encoding
        (text(b"ok", mask=False), 1002),
        (text("x", rsv=1), 1002),
        (b"\x81\xfe\x00\x05" + text("hello")[2:], 1002),  # 16 bits for a 7-bit length
    ],
)
def test_a_bad_frame_after_common_ones_fails_as_wsproto_does(direct, bad, code) -> None:
    peer, session = connected()
    messages = session.receive_data(text("ok") + bad + frame(PING))
    assert messages == [received("ok"), {"type": "websocket.disconnect", "code": code,
                                         "reason": messages[1]["reason"]}]  # fmt: skip
    assert direct == [len(text("ok"))]
    peer.receive_data(session.data_to_send())
    (event,) = peer.events()  # the close, no pong
    assert isinstance(event, CloseConnection) and event.code == code


def test_the_size_limit_holds_on_the_direct_path(direct) -> None:
    _, session = connected(WebSocketSettings(max_message_size=300))
    assert session.receive_data(text("x" * 300)) == [received("x" * 300)]
    (message,) = session.receive_data(text("x" * 301))
    assert message["code"] == 1009 and direct == [len(text("x" * 300)), 0]


def test_deflate_bypasses_the_direct_path(direct) -> None:
    peer, session = connected(extensions=[PerMessageDeflate()])
    data = peer.send(TextMessage(data="compressed")) + text("plain")
    assert session.receive_data(data) == [received("compressed"), received("plain")]
    out = session.send_message({"type": "websocket.send", "text": "x" * 100})
    assert out[0] == 0xC1 and direct == []  # RSV1: compressed by wsproto


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_sent_frames_read_back_with_wsproto(size: int) -> None:
    peer, session = connected()
    out = session.send_message({"type": "websocket.send", "text": "é" * (size // 2)})
    out += session.send_message({"type": "websocket.send", "bytes": bytearray(b"\x01" * size)})
    peer.receive_data(out)
    assert list(peer.events()) == [
        TextMessage(data="é" * (size // 2)),
        BytesMessage(data=b"\x01" * size),
    ]
