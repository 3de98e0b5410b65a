"""A raw WebSocket client for conformance runs: masked frames built by hand, a case runner.

It owns the shapes of a conformance case (`Step`, `Case`) and `run_case`, which drives one case
over any byte transport: `send(bytes)` and `recv(timeout)` (b"" at EOF, TimeoutError when
nothing comes). The frames are built here rather than by a WebSocket library so that they can be
wrong on purpose (reserved bits, unmasked, oversized control frames, bad UTF-8). The table of
cases is tests/websocket_cases.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
RSV1 = 4  # the `rsv` argument of frame(): RSV1 RSV2 RSV3 as a 3-bit number
NO_CODE = 1005  # how the runner reports a close frame without a code
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
TIMEOUT = 10.0


def _mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One client frame (masked unless told otherwise)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n <= 125:
        head += bytes([bit | n])
    elif n <= 0xFFFF:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def text(data: str | bytes, **kw: object) -> bytes:
    return frame(TEXT, data.encode() if isinstance(data, str) else data, **kw)  # type: ignore[arg-type]


def close(code: int | None = None, reason: bytes = b"") -> bytes:
    return frame(CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


def deflated(opcode: int, data: bytes, compressor: object, fragment: int = 0) -> bytes:
    """A permessage-deflate message: compressed, the trailing 00 00 ff ff stripped, RSV1 on its
    first frame only, split into `fragment`-byte frames when asked."""
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)  # type: ignore[attr-defined]
    body = body[:-4]
    pieces = [body[i : i + fragment] for i in range(0, len(body), fragment)] if fragment else [body]
    out = b""
    for i, piece in enumerate(pieces):
        out += frame(
            opcode if i == 0 else CONT, piece, fin=i == len(pieces) - 1, rsv=RSV1 if i == 0 else 0
        )
    return out


def new_compressor(bits: int = 9) -> object:
    return zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits)


@dataclass(frozen=True)
class Step:
    send: bytes
    expect: tuple[tuple[int, bytes], ...] = ()  # server frames after this step: (opcode, payload)


@dataclass(frozen=True)
class Case:
    id: str
    description: str
    steps: tuple[Step, ...]
    close: int | None = None  # the server's close code; None: the runner closes (1000 echoed)
    offer: str | None = None  # Sec-WebSocket-Extensions of the handshake
    answer: dict[str, str | None] | None = None  # the expected permessage-deflate parameters
    chop: int = 0  # send each step in pieces of this many bytes

    @property
    def group(self) -> int:
        return int(self.id.split(".")[0])


def handshake(host: str, path: str, offer: str | None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if offer:
        lines.append(f"Sec-WebSocket-Extensions: {offer}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Reader:
    def __init__(self, case: Case, recv: Callable[[float], bytes]) -> None:
        self.case, self.recv, self.buffer = case, recv, bytearray()

    def fail(self, what: str) -> AssertionError:
        return AssertionError(f"case {self.case.id} ({self.case.description}): {what}")

    def more(self) -> None:
        try:
            data = self.recv(TIMEOUT)
        except TimeoutError as exc:
            raise self.fail("timed out waiting for the server") from exc
        if not data:
            raise self.fail("the server closed the connection early")
        self.buffer += data

    def take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.more()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self.more()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        return head

    def frame(self) -> tuple[bool, int, int, bytes]:
        b0, b1 = self.take(2)
        if b1 & 0x80:
            raise self.fail("the server masked a frame")
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.take(8))
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, self.take(n)

    def event(self, inflater: object) -> tuple[int, bytes]:
        """The next message (reassembled, inflated), pong or close."""
        fin, rsv, opcode, payload = self.frame()
        if opcode >= CLOSE:
            return opcode, payload
        compressed, parts = rsv == RSV1, [payload]
        while not fin:
            fin, _, _, payload = self.frame()
            parts.append(payload)
        data = b"".join(parts)
        if compressed:
            if inflater is None:
                raise self.fail("the server set RSV1 without permessage-deflate")
            data = inflater.decompress(data + b"\x00\x00\xff\xff")  # type: ignore[attr-defined]
        return opcode, data


def _answer(head: bytes) -> dict[str, str | None] | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "sec-websocket-extensions":
            name, *params = (part.strip() for part in value.split(";"))
            assert name == "permessage-deflate", value
            return {
                k.strip(): (v.strip() if eq else None)
                for k, eq, v in (p.partition("=") for p in params)
            }
    return None


def run_case(
    case: Case,
    send: Callable[[bytes], None],
    recv: Callable[[float], bytes],
    host: str = "localhost",
    path: str = "/",
) -> None:
    """Drive one case over a fresh connection; AssertionError naming the case on any difference."""
    reader = Reader(case, recv)
    send(handshake(host, path, case.offer))
    head = reader.head()
    if not head.startswith(b"HTTP/1.1 101 "):
        raise reader.fail(f"handshake answered {head[:40]!r}")
    token = base64.b64encode(hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    if b"Sec-WebSocket-Accept: " + token not in head:
        raise reader.fail("wrong or missing Sec-WebSocket-Accept")
    answer = _answer(head)
    if answer != case.answer:
        raise reader.fail(f"permessage-deflate answer {answer}, expected {case.answer}")
    inflater = zlib.decompressobj(-15) if answer is not None else None
    for step in case.steps:
        for i in range(0, len(step.send), case.chop or len(step.send) or 1):
            send(step.send[i : i + (case.chop or len(step.send))])
        for expected in step.expect:
            got = reader.event(inflater)
            if got != expected:
                raise reader.fail(f"expected {_show(expected)}, got {_show(got)}")
    if case.close is None:
        send(close(1000))
    opcode, payload = reader.event(inflater)
    if opcode != CLOSE:
        raise reader.fail(f"expected a close frame, got {_show((opcode, payload))}")
    code = struct.unpack("!H", payload[:2])[0] if payload else NO_CODE
    if code != (case.close or 1000):
        raise reader.fail(f"closed with {code} {payload[2:]!r}, expected {case.close or 1000}")
    while True:
        if reader.buffer:
            raise reader.fail(f"data after the close frame: {bytes(reader.buffer[:20])!r}")
        data = recv(TIMEOUT)
        if not data:
            return
        reader.buffer += data


def _show(event: tuple[int, bytes]) -> str:
    opcode, data = event
    return f"opcode {opcode} ({len(data)} bytes: {data[:24]!r})"
