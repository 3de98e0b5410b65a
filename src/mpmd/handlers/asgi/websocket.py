"""One WebSocket connection's protocol, sans-I/O: handshake checks, the 101, frames ↔ ASGI messages.

This module owns RFC 6455 and RFC 7692 for the server side, on top of wsproto's frame layer:
which handshakes are refused and how (reference 5.1), the 101 response with the negotiated
subprotocol and permessage-deflate, the reassembly of fragmented messages, the maximum message
size, UTF-8 checking and the close handshake. Like `mpmd.http` it never touches a socket or an
event loop: bytes in, ASGI messages and bytes out, so the asyncio cycle
(`websocket_cycle.py`) and the tests drive the same object. Whole, uncompressed text and binary
messages, nearly all of the traffic, are read and written by `websocket_frames.py` while wsproto
is between messages; every other frame is wsproto's.

The one idea: wsproto turns a protocol violation into a CloseConnection event just as it does a
close frame, and tells them apart only by its state; `receive_data` turns both into the single
`websocket.disconnect` the application sees, with the close frame to send queued for
`data_to_send()`, and after that the connection is over: `closed` tells the caller to flush and
close TCP (the server closes first, RFC 6455 7.1.1).
"""

from __future__ import annotations

import base64
import binascii
import os
import zlib
from dataclasses import dataclass

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits
from wsproto.utilities import generate_accept_token

from mpmd.handlers.asgi import websocket_frames
from mpmd.handlers.asgi.headers import response_headers
from mpmd.http.response import build_head

NO_STATUS = 1005  # the peer's close frame had no code (never sent)
ABNORMAL = 1006  # the connection ended without a close frame (never sent)
_MAX_REASON = 123  # bytes of UTF-8 a close reason may hold (125 minus the code)


@dataclass(frozen=True)
class WebSocketSettings:
    """Per-server WebSocket limits; the defaults are uvicorn's (reference 4.7, 5.2)."""

    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    max_message_size: int = 16 * 1024 * 1024
    per_message_deflate: bool = True
    close_timeout: float = 5.0  # the peer's time to answer mpmd's close before TCP is closed


def _header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def _tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """The comma-separated tokens of every `name` header, lower-cased and stripped."""
    return [
        token.strip().lower()
        for value in _header_values(headers, name)
        for token in value.decode("latin-1").split(",")
        if token.strip()
    ]


def wants_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request asks for a WebSocket (its Upgrade header names `websocket`): the test
    that makes a request a `websocket` scope rather than an `http` one."""
    return "websocket" in _tokens(headers, b"upgrade")


def handshake_refusal(
    method: str, http_version: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, list[tuple[str, str]], str] | None:
    """The answer to an invalid opening handshake (RFC 6455 4.2.1), or None when it is valid:
    (status, extra headers, a short reason for the body and the log).

    Missing Upgrade/Connection tokens get 400, as wsproto answers, not websockets' 426: a request
    only reaches here because its Upgrade header asked for WebSocket (`wants_websocket`), so the
    client already speaks the protocol a 426 would name and its request is simply malformed,
    for which RFC 6455 4.2.2 says 400. An unknown version is the one case where the client could
    retry: 426 with the version mpmd speaks (4.4)."""
    if method != "GET":
        return 400, [], "A WebSocket handshake must be a GET request"
    if http_version not in ("1.1", "HTTP/1.1"):
        return 400, [], "A WebSocket handshake needs HTTP/1.1"
    if not _header_values(headers, b"host"):
        return 400, [], "Missing header 'Host'"
    if "websocket" not in _tokens(headers, b"upgrade"):
        return 400, [], "Missing header 'Upgrade: websocket'"
    if "upgrade" not in _tokens(headers, b"connection"):
        return 400, [], "Missing header 'Connection: Upgrade'"
    versions = _header_values(headers, b"sec-websocket-version")
    if not versions:
        return 400, [], "Missing header 'Sec-WebSocket-Version'"
    if versions != [b"13"]:
        return 426, [("Sec-WebSocket-Version", "13")], "Unsupported WebSocket version"
    keys = _header_values(headers, b"sec-websocket-key")
    if len(keys) != 1 or not _is_key(keys[0]):
        return 400, [], "Missing or invalid header 'Sec-WebSocket-Key'"
    return None


def _is_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except binascii.Error:
        return False


# Headers of the 101 that mpmd writes itself: an application's copy would contradict them.
_SERVER_OWNED = frozenset(
    (b"connection", b"upgrade", b"content-length", b"transfer-encoding", b"date", b"server")
)


class _MessageSizeLimit(Extension):
    """Never negotiated: sits after permessage-deflate in wsproto's chain to count each
    message's (inflated) payload as its frames arrive, so a message over the limit is refused
    before it is ever buffered whole."""

    name = "mpmd-message-size"

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._control = False

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, length: int
    ) -> CloseReason | RsvBits:
        self._control = opcode.iscontrol()
        return RsvBits(False, False, False)

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._control:
            self._size += len(data)
            if self._size > self._limit:
                return CloseReason.MESSAGE_TOO_BIG
        return data

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if fin and not self._control:
            self._size = 0
        return None


class _Deflate(PerMessageDeflate):
    """wsproto's permessage-deflate with two bounds it lacks: inflating one chunk never
    yields more than the message limit (a deflate bomb is refused, 1009, instead of
    allocated), and the compressor uses memLevel 5 as websockets and uvicorn do, so an
    idle connection's context stays small. Both reach into wsproto's private state
    (`_inbound_compressed`, `_decompressor`, `_compressor`), stable since wsproto 0.14."""

    def __init__(self, limit: int, **params: bool | int | None) -> None:
        super().__init__(**params)  # type: ignore[arg-type]
        self._limit = limit

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        try:
            inflated = self._decompressor.decompress(data, self._limit + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if self._decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return inflated

    def frame_outbound(
        self,
        proto: FrameDecoder | FrameProtocol,
        opcode: Opcode,
        rsv: RsvBits,
        data: bytes,
        fin: bool,
    ) -> tuple[RsvBits, bytes]:
        if self._compressor is None and opcode in (Opcode.TEXT, Opcode.BINARY):
            self._compressor = zlib.compressobj(
                zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -self.server_max_window_bits, 5
            )
        return super().frame_outbound(proto, opcode, rsv, data, fin)


# The server's own choice of windows (websockets' and uvicorn's): 4 KiB instead of 32 KiB per
# direction per connection, answered only where the client's offer allows it.
_WINDOW_BITS = 12
_DEFLATE_PARAMS = (
    "server_no_context_takeover",
    "client_no_context_takeover",
    "server_max_window_bits",
    "client_max_window_bits",
)


def negotiate_deflate(offers: list[str]) -> tuple[str, dict[str, bool | int]] | None:
    """The first acceptable permessage-deflate offer (RFC 7692 5, 7.1): the response's
    extension value and PerMessageDeflate's parameters, or None to decline every offer.
    Offers with unknown, repeated or invalid parameters are declined, as is a server window
    under 9 bits (zlib cannot produce one)."""
    for offer in offers:
        name, *raw = (part.strip() for part in offer.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        params: dict[str, str | None] = {}
        for item in raw:
            key, eq, value = (text.strip() for text in item.partition("="))
            key = key.lower()
            if key not in _DEFLATE_PARAMS or key in params:
                break
            params[key] = value.strip('"') if eq else None
        else:
            agreed = _agree(params)
            if agreed is not None:
                return agreed
    return None


def _agree(params: dict[str, str | None]) -> tuple[str, dict[str, bool | int]] | None:
    answer: list[str] = []
    chosen: dict[str, bool | int] = {"server_max_window_bits": _WINDOW_BITS}
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in params:
            if params[flag] is not None:
                return None
            answer.append(flag)
            chosen[flag] = True
    if "server_max_window_bits" in params:
        bits = _window_bits(params["server_max_window_bits"])
        if bits is None or bits < 9:
            return None
        chosen["server_max_window_bits"] = min(bits, _WINDOW_BITS)
        answer.append(f"server_max_window_bits={chosen['server_max_window_bits']}")
    if "client_max_window_bits" in params:
        value = params["client_max_window_bits"]
        bits = 15 if value is None else _window_bits(value)
        if bits is None:
            return None
        if bits >= 9:  # under 9, say nothing and inflate with the default 15-bit window
            chosen["client_max_window_bits"] = min(bits, _WINDOW_BITS)
            answer.append(f"client_max_window_bits={chosen['client_max_window_bits']}")
    return "; ".join(["permessage-deflate", *answer]), chosen


def _window_bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2 or value.startswith("0"):
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


class WebSocketSession:
    """One upgraded connection: built from the request's headers, `accept()`ed once, then fed
    the client's bytes and the application's messages."""

    def __init__(self, headers: list[tuple[bytes, bytes]], settings: WebSocketSettings) -> None:
        self._settings = settings
        key = _header_values(headers, b"sec-websocket-key")
        self._key = key[0].strip() if key else b""
        self.subprotocols = [
            token.strip()
            for value in _header_values(headers, b"sec-websocket-protocol")
            for token in value.decode("latin-1").split(",")
            if token.strip()
        ]
        self._offers = [
            offer
            for value in _header_values(headers, b"sec-websocket-extensions")
            for offer in value.decode("latin-1").split(",")
        ]
        self._conn: Connection | None = None
        self._out = bytearray()
        self._parts: list[str | bytes] = []
        self._parts_size = 0
        self._ping_payload: bytes | None = None
        self.close_sent = False
        self.close_received = False
        self.failed = False  # mpmd failed the connection: no close reply is awaited
        self.disconnect_sent = False
        self._eof = False
        self.extension: str | None = None  # the negotiated Sec-WebSocket-Extensions value
        self._direct = False  # common frames bypass wsproto (websocket_frames.py): no deflate
        self._idle = True  # wsproto is between messages with nothing buffered

    # -- state ---------------------------------------------------------------------------------

    @property
    def accepted(self) -> bool:
        return self._conn is not None

    @property
    def closed(self) -> bool:
        """Nothing more will be exchanged: flush `data_to_send()` and close TCP."""
        return (self.close_sent and self.close_received) or self.failed or self._eof

    @property
    def closing(self) -> bool:
        """mpmd sent a close frame and waits for the peer's (bounded by the caller)."""
        return self.close_sent and not self.closed

    @property
    def awaiting_pong(self) -> bool:
        return self._ping_payload is not None

    # -- the handshake -------------------------------------------------------------------------

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The whole 101 response. ValueError for a subprotocol the client did not offer;
        RuntimeError/TypeError for headers that cannot be sent."""
        if self._conn is not None:
            raise RuntimeError("The WebSocket handshake was already answered.")
        if subprotocol is not None and subprotocol not in self.subprotocols:
            raise ValueError(f"Subprotocol {subprotocol!r} was not offered by the client.")
        fields = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", generate_accept_token(self._key).decode("ascii")),
        ]
        if subprotocol is not None:
            fields.append(("Sec-WebSocket-Protocol", subprotocol))
        extensions: list[Extension] = []
        agreed = negotiate_deflate(self._offers) if self._settings.per_message_deflate else None
        if agreed is not None:
            self.extension, params = agreed
            deflate = _Deflate(self._settings.max_message_size, **params)
            deflate.finalize(self.extension)
            extensions.append(deflate)
            fields.append(("Sec-WebSocket-Extensions", self.extension))
        for name, value in response_headers(headers):
            lower = name.lower()
            if lower.startswith("sec-websocket-") or lower.encode() in _SERVER_OWNED:
                continue
            fields.append((name, value))
        extensions.append(_MessageSizeLimit(self._settings.max_message_size))
        self._conn = Connection(ConnectionType.SERVER, extensions)
        self._direct = self.extension is None
        return build_head(
            "HTTP/1.1",
            "101 Switching Protocols",
            fields,
            content_length=None,
            chunked=False,
            keep_alive=True,
        )

    # -- bytes from the client -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[dict]:
        """Feed the client's bytes (b"" at EOF); the ASGI messages they complete, in order."""
        conn = self._require_open()
        if self.disconnect_sent or self.failed:
            return []  # after a close or a failure nothing the peer sends is processed
        if not data:
            self._eof = True
            return [self._disconnect(ABNORMAL, "")]
        if self._direct and self._idle:
            messages, used = websocket_frames.read_messages(data, self._settings.max_message_size)
            if used == len(data):
                return messages
            data = data[used:]
        else:
            messages = []
        conn.receive_data(data)
        self._idle = False
        for event in conn.events():
            if isinstance(event, Message):
                message = self._assemble(event)
                if message is not None:
                    messages.append(message)
            elif isinstance(event, Ping):
                if conn.state is ConnectionState.OPEN:  # once closing, pings go unanswered
                    self._out += conn.send(event.response())
            elif isinstance(event, Pong):
                if event.payload == self._ping_payload:
                    self._ping_payload = None
            elif isinstance(event, CloseConnection):
                messages.extend(self._on_close(event))
                break
        self._idle = not self._parts and websocket_frames.wsproto_idle(conn)
        return messages

    def _assemble(self, event: Message) -> dict | None:
        self._parts.append(event.data)
        if not event.message_finished:
            return None
        parts, self._parts = self._parts, []
        if isinstance(event, TextMessage):
            return {"type": "websocket.receive", "bytes": None, "text": "".join(parts)}
        assert isinstance(event, BytesMessage)
        return {"type": "websocket.receive", "bytes": b"".join(parts), "text": None}  # type: ignore[arg-type]

    def _on_close(self, event: CloseConnection) -> list[dict]:
        conn = self._require_open()
        if conn.state in (ConnectionState.REMOTE_CLOSING, ConnectionState.CLOSED):
            self.close_received = True
            if conn.state is ConnectionState.REMOTE_CLOSING:
                self._out += conn.send(CloseConnection(code=event.code))
                self.close_sent = True
            return [self._disconnect(event.code, event.reason or "")]
        # wsproto's parser failed: the frame was never a close, fail the connection (7.1.7)
        reason = event.reason or ""
        if event.code == CloseReason.MESSAGE_TOO_BIG:
            reason = f"Message exceeds the maximum size ({self._settings.max_message_size} bytes)"
        return self.fail(event.code, reason)

    def fail(self, code: int, reason: str) -> list[dict]:
        """Fail the connection (a protocol error, a missing pong): queue a close frame with
        `code` unless one was sent, stop processing input, and return the disconnect the
        application has not had yet."""
        conn = self._require_open()
        if not self.close_sent:
            self._out += conn.send(CloseConnection(code=code, reason=reason))
            self.close_sent = True
        self.failed = True
        if self.disconnect_sent:
            return []
        return [self._disconnect(code, reason)]

    def _disconnect(self, code: int, reason: str) -> dict:
        self.disconnect_sent = True
        self._parts = []
        return {"type": "websocket.disconnect", "code": int(code), "reason": reason}

    def data_to_send(self) -> bytes:
        """The bytes owed to the client (pongs, close replies, failure closes); clears them."""
        data, self._out = bytes(self._out), bytearray()
        return data

    # -- messages from the application ---------------------------------------------------------

    def send_message(self, message: dict) -> bytes:
        """`websocket.send` or `websocket.close` as frame bytes. ValueError/TypeError for an
        invalid message; RuntimeError once a close was sent."""
        conn = self._require_open()
        if self.close_sent:
            raise RuntimeError("Cannot send on a closed WebSocket.")
        kind = message.get("type")
        if kind == "websocket.send":
            data, text = message.get("bytes"), message.get("text")
            if (data is None) == (text is None):
                raise ValueError("websocket.send needs exactly one of 'bytes' and 'text'.")
            direct = self._direct and conn.state is ConnectionState.OPEN
            if text is not None:
                if not isinstance(text, str):
                    raise TypeError("websocket.send 'text' must be str.")
                if direct:
                    return websocket_frames.frame(websocket_frames.TEXT, text.encode("utf-8"))
                return conn.send(TextMessage(data=text))
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError("websocket.send 'bytes' must be bytes.")
            if direct:
                return websocket_frames.frame(websocket_frames.BINARY, bytes(data))
            return conn.send(BytesMessage(data=bytes(data)))
        if kind == "websocket.close":
            code = message.get("code", 1000)
            reason = message.get("reason") or ""
            if not isinstance(code, int) or not _sendable_code(code):
                raise ValueError(f"Invalid WebSocket close code {code!r}.")
            if not isinstance(reason, str):
                raise TypeError("websocket.close 'reason' must be str.")
            if len(reason.encode("utf-8")) > _MAX_REASON:
                raise ValueError(f"A close reason holds at most {_MAX_REASON} bytes of UTF-8.")
            self.close_sent = True
            return bytes(conn.send(CloseConnection(code=code, reason=reason)))
        raise ValueError(f"Unexpected ASGI message {kind!r} on an open WebSocket.")

    def ping(self) -> bytes:
        """A ping frame; `awaiting_pong` stays True until its pong arrives."""
        conn = self._require_open()
        if self.close_sent:
            raise RuntimeError("Cannot ping a closing WebSocket.")
        self._ping_payload = os.urandom(4)
        return conn.send(Ping(payload=self._ping_payload))

    def _require_open(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("The WebSocket handshake has not been accepted.")
        return self._conn


def _sendable_code(code: int) -> bool:
    """Codes an endpoint may put in a close frame (RFC 6455 7.4): 1000-1003, 1007-1014 and the
    registered and private ranges 3000-4999."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
