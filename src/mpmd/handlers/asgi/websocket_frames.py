"""The common WebSocket frame shapes read and written directly, wsproto doing everything else.

A WebSocket's traffic is nearly all small, whole, uncompressed text or binary messages, and
wsproto parses each through a byte buffer, a header object, a masker, two generators and an
event object: about 12 µs of pure Python per received message and 3 µs per sent one, most of
a message's cost on the server. This module parses exactly that common shape (a final,
masked, RSV-free text or binary frame with a 7- or 16-bit length, complete in the bytes at
hand, within the size limit, valid UTF-8 if text) and stops at the first frame that is
anything else, so the session (websocket.py) hands that frame and all that follows to wsproto
unchanged: control frames, fragments, compressed or partial frames and every protocol error
keep wsproto's handling. It is only used while wsproto is between messages with nothing
buffered, and never once permessage-deflate was negotiated.
"""

from __future__ import annotations

from wsproto.connection import Connection, ConnectionState

TEXT = 0x81  # FIN, no RSV bits, opcode 1
BINARY = 0x82  # FIN, no RSV bits, opcode 2
_MASKED_SHORT = 0x80  # the second byte of a masked frame: mask bit, 7-bit length
_MASKED_16 = 0xFE  # the mask bit and length 126: a 16-bit length follows


def wsproto_idle(conn: Connection) -> bool:
    """wsproto holds no partial frame or message and is open: the next bytes start a frame
    it has not seen, so they may be parsed here instead. Reads wsproto's private state
    (FrameProtocol's decoders), stable since wsproto 1.0."""
    proto = conn._proto
    decoder = proto._frame_decoder
    return (
        conn.state is ConnectionState.OPEN
        and decoder.header is None
        and not decoder.buffer.buffer
        and proto._message_decoder.opcode is None
    )


def read_messages(data: bytes, limit: int) -> tuple[list[dict], int]:
    """The ASGI `websocket.receive` messages of the common frames at the start of `data`, and
    the number of bytes they took; the rest is wsproto's."""
    messages: list[dict] = []
    pos = 0
    end = len(data)
    while end - pos >= 6:
        first = data[pos]
        if first != TEXT and first != BINARY:
            break
        second = data[pos + 1]
        if _MASKED_SHORT <= second < _MASKED_16:
            length = second - _MASKED_SHORT
            start = pos + 6
        elif second == _MASKED_16 and end - pos >= 8:
            length = (data[pos + 2] << 8) | data[pos + 3]
            if length < 126:
                break  # not the minimal length encoding: wsproto's protocol error
            start = pos + 8
        else:
            break
        stop = start + length
        if stop > end or length > limit:
            break
        if length:
            key = (data[start - 4 : start] * ((length >> 2) + 1))[:length]
            payload = (
                int.from_bytes(data[start:stop], "little") ^ int.from_bytes(key, "little")
            ).to_bytes(length, "little")
        else:
            payload = b""
        if first == TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                break  # wsproto fails the connection with 1007
            messages.append({"type": "websocket.receive", "bytes": None, "text": text})
        else:
            messages.append({"type": "websocket.receive", "bytes": payload, "text": None})
        pos = stop
    return messages, pos


def frame(first: int, payload: bytes) -> bytes:
    """One final, unmasked (server) frame: `first` is TEXT or BINARY."""
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return bytes((first, 126, length >> 8, length & 0xFF)) + payload
    return bytes((first, 127)) + length.to_bytes(8, "big") + payload
