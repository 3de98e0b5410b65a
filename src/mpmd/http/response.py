"""Response heads and body framing: status line, Date/Server, Content-Length or chunked."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

from mpmd import SERVER_SOFTWARE

_SERVER_HEADER = f"Server: {SERVER_SOFTWARE}\r\n"
_SERVER_LINE = _SERVER_HEADER.encode("latin-1")
_date_cache: tuple[int, str, bytes] = (0, "", b"")


def _date(now: float | None) -> tuple[int, str, bytes]:
    """(second, `Date: ...\\r\\n` as text and as bytes) for `now` (default: the clock),
    formatted at most once per second."""
    global _date_cache
    second = int(time.time() if now is None else now)
    cached = _date_cache
    if cached[0] != second:
        text = f"Date: {formatdate(second, usegmt=True)}\r\n"
        cached = _date_cache = (second, text, text.encode("latin-1"))
    return cached


_STATUS_LINES: dict[int, str] = {}


def status_line(status: int) -> str:
    """`200 OK` for 200, `599 Unknown` for a code HTTP does not name (cached per code)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = f"{status} {phrase}"
    return line


def bodyless_status(status: int) -> bool:
    """1xx, 204 and 304 never carry a body (RFC 9112 section 6.3)."""
    return status < 200 or status in (204, 304)


def build_head(
    version: str,
    status: str,
    headers: list[tuple[str, str]],
    *,
    content_length: int | None,
    chunked: bool,
    keep_alive: bool,
    now: float | None = None,
) -> bytes:
    """Serialise a response head. `headers` must not contain framing or Connection headers.
    `now`: the time the Date header gives; Apache's is the request's time (r->request_time)."""
    parts = [f"{version} {status}\r\n", _date(now)[1], _SERVER_HEADER]
    for name, value in headers:
        parts.append(f"{name}: {value}\r\n")
    parts.append(_framing(version, content_length, chunked, keep_alive))
    return "".join(parts).encode("latin-1")


_FIRST_LINES: dict[tuple[str, str], bytes] = {}  # (version, status) -> its status line


def encode_head(
    version: str,
    status: str,
    lines: bytes,
    content_length: int | None,
    chunked: bool,
    keep_alive: bool,
    now: float | None = None,
    date: bytes | None = None,
    server: bytes | None = None,
) -> bytes:
    """build_head for header lines already encoded (`name: value\\r\\n` each, as an ASGI
    app's bytes give them). `date`, `server`: values that replace the server's own (a proxied
    response's, as Apache keeps the back end's)."""
    first = _FIRST_LINES.get((version, status))
    if first is None:
        first = f"{version} {status}\r\n".encode("latin-1")
        if len(_FIRST_LINES) < 256:  # a WSGI app may make up reason phrases: bounded
            _FIRST_LINES[(version, status)] = first
    end = _framing(version, content_length, chunked, keep_alive).encode("latin-1")
    date_line = _date(now)[2] if date is None else b"Date: %s\r\n" % date
    server_line = _SERVER_LINE if server is None else b"Server: %s\r\n" % server
    return b"".join((first, date_line, server_line, lines, end))


def _framing(version: str, content_length: int | None, chunked: bool, keep_alive: bool) -> str:
    """The head's last lines: the body's framing, Connection, the blank line."""
    if content_length is not None:
        framing = f"Content-Length: {content_length}\r\n"
    elif chunked:
        framing = "Transfer-Encoding: chunked\r\n"
    else:
        framing = ""
    if not keep_alive:
        return framing + "Connection: close\r\n\r\n"
    if version == "HTTP/1.0":
        return framing + "Connection: keep-alive\r\n\r\n"
    return framing + "\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def error_body(status: int, detail: str = "") -> bytes:
    """Apache's plain HTML error document for `status` (never a traceback)."""
    phrase = HTTPStatus(status).phrase
    text = detail or HTTPStatus(status).description or phrase
    return (
        '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n'
        f"<html><head>\n<title>{status} {phrase}</title>\n</head><body>\n"
        f"<h1>{phrase}</h1>\n<p>{text}</p>\n</body></html>\n"
    ).encode("latin-1", "replace")
