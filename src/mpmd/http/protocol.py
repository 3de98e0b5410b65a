"""HttpProtocol: one connection's HTTP/1.x request stream, sans-I/O (bytes in, Requests out).

Owns framing, limits and the keep-alive decision for every request on one connection; it
never touches a socket, a clock or a handler. The I/O layer feeds it what it receives and
pulls complete request heads in order; a request body streams through the same object
(body.py) and may pull more bytes through the blocking `recv` the I/O layer provides.

The one idea: llhttp (httptools) validates every byte in C, but is only ever fed up to the
end of the current message, so this class always knows where each head starts and ends.
Heads are found with one `bytes.find(b"\\r\\n\\r\\n")` and split in Python after llhttp has
accepted them, so a request costs one `feed_data` and no per-header callbacks; the only
callbacks are `on_body` and `on_message_complete`. Errors are deferred: requests parsed
before a bad one are still answered in order, then `next_request()` raises the HttpError.
Where the connection stands is one named state (IDLE, REQUEST_LINE, HEADERS, BODY, CLOSED,
ERROR) whose transitions are listed in TRANSITIONS and made only by `_enter()`.

Deviations from Apache (deliberate or imposed by llhttp): Content-Length together with
Transfer-Encoding is refused with 400 (Apache drops the length); duplicate Content-Length
is refused even when the values agree (Apache merges them into "5, 5", which it also
refuses); unknown or lower-case methods are 400 from llhttp (Apache answers 501 later);
HTTP/0.9 simple requests are 400 (Apache serves them); Transfer-Encoding in an HTTP/1.0
request is 400 and closes (RFC 9112 6.1; Apache reads the chunked body); raw bytes >= 0x80 in the target are
400; `HTTP/1.2`, `HTTP/2.0`, `HTTP/3.0` on the request line are accepted as HTTP/1.1.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from mpmd.config.model import HttpSettings
from mpmd.http.body import EMPTY_BODY, StreamBody
from mpmd.http.errors import HttpError
from mpmd.http.fields import (
    body_too_large,
    check_target,
    chunked_http10,
    client_keeps_alive,
    expectation_failed,
    field_too_long,
    host_refused,
    malformed_line,
    odd_version,
    too_many_fields,
)
from mpmd.http.request import Request
from mpmd.http.timeouts import BODY, HEADERS, IDLE, REQUEST_LINE

# The connection's states. The four reading states are the RequestReadTimeout stages of
# timeouts.py (what the next socket read waits for); the two final ones take no more bytes.
CLOSED = "closed"  # a request without keep-alive ended, or the client closed: ignore the rest
ERROR = "error"  # a protocol violation: raised by next_request() once the queue is drained
_FINAL = frozenset({CLOSED, ERROR})
# Every transition the engine makes, in one place (h11's way). IDLE -> IDLE/BODY/CLOSED is a
# whole head parsed from one feed; REQUEST_LINE and HEADERS are heads that arrive in pieces.
TRANSITIONS: dict[str, frozenset[str]] = {
    IDLE: frozenset({REQUEST_LINE, HEADERS, IDLE, BODY, CLOSED, ERROR}),
    REQUEST_LINE: frozenset({HEADERS, IDLE, BODY, CLOSED, ERROR}),
    HEADERS: frozenset({IDLE, BODY, CLOSED, ERROR}),
    BODY: frozenset({IDLE, CLOSED, ERROR}),
    CLOSED: frozenset({ERROR}),  # a late body read that cannot pull more bytes
    ERROR: frozenset(),
}

# An unread body is skipped by reading at most this much more; beyond it the connection closes.
DISCARD_LIMIT = 64 * 1024
# Head bound when LimitRequestFields is 0 (unlimited): memory must stay bounded anyway.
_UNLIMITED_FIELDS_CAP = 1000

_VERSIONS = {"HTTP/1.1": "HTTP/1.1", "HTTP/1.0": "HTTP/1.0"}

_HOST = "host"
_CONTENT_LENGTH = "content-length"
_TRANSFER_ENCODING = "transfer-encoding"
_CONNECTION = "connection"
_EXPECT = "expect"
_SPECIAL = frozenset({_HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT})


class HttpProtocol:
    """The request side of one connection. Not thread-safe: one owner at a time.

    Usage (blocking loop):
        request = protocol.next_request()      # None: recv() and feed() more
        ... handle, reading request.body ...
        if not protocol.finish_request(request): close
    """

    __slots__ = (
        "_error",
        "_fields_cap",
        "_head_buf",
        "_head_fed",
        "_head_lines",
        "_head_scanned",
        "_held",
        "_keep_alive_allowed",
        "_limit_body",
        "_limit_field",
        "_limit_fields",
        "_limit_line",
        "_max_head",
        "_max_keep_alive",
        "_message_done",
        "_parser",
        "_queue",
        "_sink",
        "_sink_keep_alive",
        "_sink_left",
        "_sink_tail",
        "eof",
        "recv",
        "requests_started",
        "send_continue",
        "settings",
        "state",
    )

    def __init__(
        self,
        settings: HttpSettings,
        recv: Callable[[], bytes] | None = None,
        send_continue: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        # Blocking read for bodies: b"" at EOF, may raise TimeoutError/OSError/HttpError.
        # The event loop leaves it None until it hands a connection to a thread.
        self.recv = recv
        # Sends "HTTP/1.1 100 Continue\r\n\r\n"; called before the first body read that has
        # to wait for bytes on a request with `Expect: 100-continue` (see take_continue()).
        self.send_continue = send_continue
        self.requests_started = 0  # request heads parsed on this connection (MaxKeepAliveRequests)
        self.eof = False  # the client closed its side
        self._limit_line = settings.limit_request_line
        self._limit_field = settings.limit_request_field_size
        self._limit_fields = settings.limit_request_fields
        self._limit_body = settings.limit_request_body
        self._keep_alive_allowed = settings.keep_alive and settings.keep_alive_timeout > 0
        self._max_keep_alive = settings.max_keep_alive_requests
        self._fields_cap = self._limit_fields or _UNLIMITED_FIELDS_CAP
        self._max_head = self._limit_line + 2 + self._fields_cap * (self._limit_field + 2) + 2
        self._parser = self._new_parser()
        self._queue: deque[Request | HttpError] = deque()
        self.state = IDLE  # one of TRANSITIONS' keys; changed only by _enter()
        self._error: HttpError | None = None  # the ERROR state's error
        self._sink: StreamBody | None = None  # the BODY state's body
        self._sink_left = -1  # Content-Length bytes still to come, -1 for chunked
        self._sink_tail = b""  # last bytes of a chunked body (terminator across feeds)
        self._sink_keep_alive = True
        self._message_done = False  # llhttp reported the end of the message being fed
        # After an upgrade request (Request.upgrade): what the client sent behind its head,
        # unparsed until the response decides; None otherwise
        self._held: bytearray | None = None
        self._reset_head()

    # -- the I/O layer's API -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the socket; b"" means EOF. Never raises for bad input: errors are kept
        and raised by next_request() (or by the body being read) in order."""
        if self._held is not None:  # not HTTP, perhaps: kept raw until the response decides
            if data:
                self._held += data
            else:
                self.eof = True
            return
        if self.state in _FINAL:
            self.eof = self.eof or not data
            return
        if not data:
            self._on_eof()
            return
        try:
            while data and self.state not in _FINAL:
                data = self._feed_body(data) if self.state is BODY else self._feed_head(data)
                if self._held is not None:
                    self._held += data
                    return
        except HttpError as err:
            self._fail(err)
        except HttpParserCallbackError as err:
            cause = err.__context__
            self._fail(cause if isinstance(cause, HttpError) else HttpError(400, str(err)))
        except HttpParserError as err:
            self._fail(HttpError(400, f"Malformed request: {err}"))

    def next_request(self) -> Request | None:
        """The next request head, in order; None = feed more bytes (or, after EOF, close).

        Raises HttpError for a protocol violation once the requests before it were taken."""
        queue = self._queue
        if queue:
            item = queue.popleft()
            if type(item) is HttpError:
                raise item
            return item  # type: ignore[return-value]
        if self.state is ERROR:
            raise self._error  # type: ignore[misc]
        return None

    def buffered(self) -> bool:
        """A parsed request or error is waiting: call next_request() before blocking on recv."""
        return bool(self._queue) or self.state is ERROR

    def sent_more(self) -> bool:
        """The client sent more than the requests taken so far: one parsed (or an error), or
        bytes held behind an upgrade request. A response that could end the connection
        (Session.last_one) answers those first."""
        return self.buffered() or bool(self._held)

    def body_complete(self, request: Request) -> bool:
        """The body is fully parsed, or failed (reading it raises): no more bytes are needed."""
        body = request.body
        return body.complete or body.error is not None

    def take_continue(self, request: Request) -> bool:
        """True once if a 100 Continue is still owed to this request (and mark it sent).

        The event loop calls this before waiting for a body; the blocking path does not need
        it (the body's first read calls `send_continue`). After the final response head went
        out the I/O layer must not send 100 any more: finish_request() then closes instead."""
        body = request.body
        if body.continue_owed and not body.complete:
            body.continue_owed = False
            return True
        return False

    def finish_request(self, request: Request) -> bool:
        """After the response: skip what is left of the body. True = the connection may carry
        another request (the request allowed keep-alive and its body was consumed). Bytes held
        after an upgrade request that was answered without switching are parsed now."""
        if self._held is not None:
            self._resume()
        body = request.body
        if body is not EMPTY_BODY and not body.complete and not self._discard(body):  # type: ignore[arg-type]
            if self.state is not ERROR:
                self._enter(CLOSED)
            return False
        return request.keep_alive and body.error is None

    def take_upgraded(self) -> bytes:
        """The connection switches protocols (a tunnel takes the socket): the bytes the client
        sent behind the upgrade request's head; nothing more is parsed on this connection."""
        held = bytes(self._held or b"")
        self._held = None
        if self.state not in _FINAL:
            self._enter(CLOSED)
        return held

    def _resume(self) -> None:
        """Parse what was held after an upgrade request, then the EOF seen meanwhile."""
        held, self._held = self._held, None
        eof = self.eof
        if held:
            self.feed(bytes(held))
        if eof:
            self.feed(b"")

    def read_stage(self) -> str:
        """What the next socket read waits for: timeouts.IDLE, REQUEST_LINE, HEADERS or BODY."""
        state = self.state
        return IDLE if state in _FINAL else state

    def _enter(self, state: str) -> None:
        """The one place the state changes; a transition not in TRANSITIONS is a bug."""
        assert state in TRANSITIONS[self.state], f"{self.state} -> {state}"
        self.state = state

    # -- llhttp callbacks (the only two this class registers) ----------------------------------

    def on_body(self, data: bytes) -> None:
        sink = self._sink
        if sink is None:  # cannot happen: llhttp is fed no further than the current head
            return
        received = sink.received + len(data)
        if self._limit_body and received > self._limit_body:
            raise HttpError(
                413,
                f"AH01591: Read content-length of {received} is larger than the configured "
                f"limit of {self._limit_body}",
            )
        sink.received = received
        sink._buf += data

    def on_message_complete(self) -> None:
        self._message_done = True
        sink = self._sink
        if sink is not None:
            sink.complete = True

    # -- heads ---------------------------------------------------------------------------------

    def _new_parser(self) -> HttpRequestParser:
        parser = HttpRequestParser(self)
        # Versions: accept HTTP/1.2, 2.0, 3.0 like Apache (checked below). Keep-alive: decided
        # here, so llhttp must not refuse bytes after a message it would have closed.
        parser.set_dangerous_leniencies(lenient_version=True, lenient_keep_alive=True)
        return parser

    def _reset_head(self) -> None:
        self._head_buf = bytearray()  # a partial head, only while one is incomplete
        self._head_fed = 0  # bytes of _head_buf llhttp has seen
        self._head_scanned = 0  # bytes of _head_buf scanned for line ends
        self._head_lines = 0  # line ends seen in _head_buf

    def _feed_head(self, data: bytes) -> bytes:
        """Parse one head if `data` completes it; return the bytes after it."""
        head_buf = self._head_buf
        if head_buf:
            start = len(head_buf)
            head_buf += data
            buf: bytes | bytearray = head_buf
            end = head_buf.find(b"\r\n\r\n", start - 3 if start > 3 else 0)
        else:
            if data[0] in (13, 10):  # blank lines before a request line are skipped
                data = data.lstrip(b"\r\n")
                if not data:
                    return b""
            buf = data
            end = data.find(b"\r\n\r\n")
        if end < 0:
            self._partial_head(buf)
            return b""
        head_len = end + 4
        newline = buf.find(b"\n")
        if newline > self._limit_line:
            self._check_line_length(buf, newline)
        fed = self._head_fed
        if head_len == len(buf):
            head = buf
            rest = b""
        else:
            head = buf[:head_len]
            rest = bytes(buf[head_len:])
        piece = head if fed == 0 else head[fed:]
        self._message_done = False
        upgraded = False
        try:
            self._parser.feed_data(piece)
        except HttpParserUpgrade:
            upgraded = True  # Upgrade/CONNECT: served as a plain request, see _start_body
        if head_buf:
            self._reset_head()
            head = bytes(head)
        self._build_request(head, newline, upgraded)  # type: ignore[arg-type]
        return rest

    def _check_line_length(self, buf: bytes | bytearray, newline: int) -> None:
        """414 if the request line (without CRLF, or so far) is longer than LimitRequestLine."""
        length = newline if newline >= 0 else len(buf)
        if length > 0 and newline >= 0 and buf[newline - 1] == 13:
            length -= 1
        if length > self._limit_line:
            raise HttpError(
                414,
                "AH00565: request failed: client's request-line exceeds LimitRequestLine "
                f"(longer than {self._limit_line})",
            )

    def _partial_head(self, buf: bytes | bytearray) -> None:
        """An incomplete head: keep it, bound it, and let llhttp check what it can already."""
        head_buf = self._head_buf
        if buf is not head_buf:
            head_buf += buf
        scanned = self._head_scanned
        if self.state is not HEADERS:
            newline = head_buf.find(b"\n", scanned)
            if newline < 0:
                if self.state is IDLE:
                    self._enter(REQUEST_LINE)
                if len(head_buf) > self._limit_line + 1:
                    self._check_line_length(head_buf, -1)
                self._head_scanned = len(head_buf)
                return  # llhttp sees the request line only once it is whole (as Apache reads it)
            self._check_line_length(head_buf, newline)
            self._enter(HEADERS)
        self._parser.feed_data(bytes(head_buf[self._head_fed :]))
        self._head_fed = len(head_buf)
        self._head_lines += head_buf.count(b"\n", scanned)
        self._head_scanned = len(head_buf)
        if self._head_lines - 1 > self._fields_cap:
            raise HttpError(400, "AH00563: Number of request headers exceeds LimitRequestFields")
        current = len(head_buf) - head_buf.rfind(b"\n") - 1
        if current > self._limit_field + 1 or len(head_buf) > self._max_head:
            raise HttpError(400, "AH00561: Request header exceeds LimitRequestFieldSize")

    def _build_request(self, head: bytes, newline: int, upgraded: bool) -> None:
        """Turn a head llhttp accepted into a Request (or an HttpError) and queue it.

        The head is decoded once (latin-1, byte for byte) and split as str: cheaper than
        per-header callbacks or per-field decoding, and exact because llhttp already
        refused bare LF, obs-fold, bad tokens and control characters."""
        text = head.decode("latin-1")
        line = text[: newline - 1]
        parts = line.split(" ")
        if len(parts) != 3:
            raise malformed_line(line)
        method, target, version = parts
        version = _VERSIONS.get(version) or odd_version(version, line)
        if target[:1] != "/" or "#" in target:
            check_target(method, target, line)

        headers: list[tuple[str, str]] = []
        host_count = 0
        content_length: int | None = None
        chunked = False
        connection: str | None = None
        expect: str | None = None
        if newline + 3 < len(text):
            lines = text[newline + 1 : -4].split("\r\n")
            if len(lines) > self._fields_cap:
                raise too_many_fields(line)
            limit_field = self._limit_field
            special = _SPECIAL
            append = headers.append
            for raw in lines:
                if len(raw) > limit_field:
                    raise field_too_long(raw, line)
                name, _, value = raw.partition(":")
                name = name.lower()
                value = value.strip(" \t")
                append((name, value))
                if name in special:
                    if name == _HOST:
                        host_count += 1
                    elif name == _CONTENT_LENGTH:
                        content_length = int(value)  # llhttp: digits only, no duplicate
                    elif name == _TRANSFER_ENCODING:
                        chunked = True  # llhttp: final coding is chunked, no Content-Length
                    elif name == _CONNECTION:
                        connection = value if connection is None else f"{connection}, {value}"
                    else:
                        expect = value if expect is None else f"{expect}, {value}"

        http11 = version == "HTTP/1.1"
        if host_count != 1 and (host_count or http11):
            raise host_refused(host_count, line)
        if chunked and not http11:
            raise chunked_http10(line)
        if content_length is not None and self._limit_body and content_length > self._limit_body:
            raise body_too_large(content_length, self._limit_body, line)

        client_keep_alive = http11 if connection is None else client_keeps_alive(connection, http11)
        keep_alive = (
            client_keep_alive
            and self._keep_alive_allowed
            and (not self._max_keep_alive or self.requests_started < self._max_keep_alive)
        )
        self.requests_started += 1
        has_body = chunked or bool(content_length)
        # llhttp's upgrade: `Connection: upgrade` with `Upgrade`, or CONNECT (not switched here)
        upgrade = upgraded and http11 and not has_body and method != "CONNECT"
        if has_body == self._message_done and not upgraded:
            # llhttp framed this message differently from the headers we read: refuse it
            # rather than risk two views of where the next request starts.
            raise HttpError(400, "Request framing is ambiguous", request_line=line)

        expect_continue = False
        if expect:
            if expect.lower() == "100-continue":
                expect_continue = http11 and has_body
            else:
                error = expectation_failed(expect, keep_alive and not has_body, line)
                self._queue.append(error)
                self._enter(IDLE if error.keep_alive else CLOSED)
                return

        body = StreamBody(self, continue_owed=expect_continue) if has_body else EMPTY_BODY
        request = Request(  # (positional: measurably cheaper, once per request)
            method, target, version, headers, body, keep_alive, client_keep_alive,
            content_length, expect_continue, len(head), upgrade,
        )  # fmt: skip
        self._queue.append(request)
        if has_body:
            self._start_body(body, content_length, keep_alive, upgraded)
            return
        if upgraded:
            self._parser = self._new_parser()  # llhttp stays in "upgraded" mode otherwise
        if upgrade:
            self._held = bytearray()
        self._enter(IDLE if keep_alive else CLOSED)

    # -- bodies --------------------------------------------------------------------------------

    def _start_body(
        self, body: StreamBody, content_length: int | None, keep_alive: bool, upgraded: bool
    ) -> None:
        self._enter(BODY)
        self._sink = body
        self._sink_keep_alive = keep_alive
        self._sink_left = -1 if content_length is None else content_length
        self._sink_tail = b""
        if upgraded:
            # llhttp skipped the body of an Upgrade/CONNECT request and stopped. A fresh
            # parser fed a synthetic head (whose callbacks go nowhere) parses the real body.
            self._parser = self._new_parser()
            if content_length is None:
                self._parser.feed_data(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            else:
                self._parser.feed_data(
                    b"PUT / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % content_length
                )

    def _feed_body(self, data: bytes) -> bytes:
        """Feed llhttp up to the end of the current body at most; return the bytes after it."""
        sink = self._sink
        left = self._sink_left
        if left >= 0:
            if len(data) > left:
                piece, rest = data[:left], data[left:]
            else:
                piece, rest = data, b""
            self._sink_left = left - len(piece)
        else:
            # A chunked body ends with CRLF CRLF: cut there, so llhttp never runs into the
            # next request (a cut inside the body is harmless, llhttp resumes).
            tail = self._sink_tail
            probe = tail + data if tail else data
            end = probe.find(b"\r\n\r\n")
            if end >= 0:
                cut = end + 4 - len(tail)
                piece, rest = data[:cut], data[cut:]
            else:
                piece, rest = data, b""
            self._sink_tail = (tail + piece)[-3:]
        self._parser.feed_data(piece)
        if sink is not None and sink.complete:
            self._sink = None
            self._enter(IDLE if self._sink_keep_alive else CLOSED)
        return rest

    def _pull(self, body: StreamBody) -> None:
        """Get more bytes for `body` through the blocking recv (called by the body's reads)."""
        if body.continue_owed:
            body.continue_owed = False
            if self.send_continue is not None:
                self.send_continue()
        if self.recv is None:
            self._fail(HttpError(500, "request body read without a blocking recv"))
            return
        try:
            data = self.recv()
        except HttpError as err:
            self._fail(err)
            return
        except TimeoutError:
            self._fail(HttpError(408, "AH01382: Request body read timeout"))
            return
        except OSError as err:
            self._fail(HttpError(400, f"Error reading the request body: {err}"))
            return
        self.feed(data)

    def _discard(self, body: StreamBody) -> bool:
        """Read and drop the rest of an unread body, within DISCARD_LIMIT. True if consumed."""
        if body.error is not None or body.continue_owed:
            return False  # broken, or the client still waits for 100 before sending it
        if self._sink_left > DISCARD_LIMIT:
            return False
        dropped = body.discard_buffer()
        while not body.complete:
            if body.error is not None or dropped > DISCARD_LIMIT:
                return False
            self._pull(body)
            dropped += body.discard_buffer()
        return body.error is None

    # -- errors and end of stream --------------------------------------------------------------

    def _fail(self, error: HttpError) -> None:
        """Record a terminal error: no more parsing; the current body (if any) fails too."""
        if self.state is ERROR:
            return
        self._error = error
        sink = self._sink
        if sink is not None and sink.error is None:
            sink.error = error
        self._sink = None
        self._enter(ERROR)

    def _on_eof(self) -> None:
        self.eof = True
        if self.state is BODY:
            self._fail(
                HttpError(400, "client closed the connection before the request body was complete")
            )
        elif self.state is HEADERS:
            # Apache answers 400 to a head cut short after the request line; a partial
            # request line is closed without a response (the I/O layer sees EOF and closes).
            self._fail(HttpError(400, "client closed the connection while sending headers"))
        else:
            self._enter(CLOSED)
