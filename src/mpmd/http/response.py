"""Response heads and body framing: status line, Date/Server, Content-Length or chunked."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

from mpmd import SERVER_SOFTWARE

_SERVER_HEADER = f"Server: {SERVER_SOFTWARE}\r\n"
_date_cache: tuple[int, str] = (0, "")


def date_header(now: float | None = None) -> str:
    """`Date: ...\\r\\n` for `now` (default: the clock), formatted at most once per second."""
    global _date_cache
    second = int(time.time() if now is None else now)
    cached = _date_cache
    if cached[0] != second:
        cached = _date_cache = (second, f"Date: {formatdate(second, usegmt=True)}\r\n")
    return cached[1]


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
    parts = [f"{version} {status}\r\n", date_header(now), _SERVER_HEADER]
    for name, value in headers:
        parts.append(f"{name}: {value}\r\n")
    if content_length is not None:
        parts.append(f"Content-Length: {content_length}\r\n")
    elif chunked:
        parts.append("Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        parts.append("Connection: close\r\n")
    elif version == "HTTP/1.0":
        parts.append("Connection: keep-alive\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


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
