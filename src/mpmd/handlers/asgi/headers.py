"""An ASGI application's response headers, checked as uvicorn checks them (a name that is not a
token, a value with a control character, anything but bytes would corrupt the head): as text
(a WebSocket's responses) or, for an HTTP response, encoded as they came, in one pass that also
takes out what the server frames itself (no round trip through str).
"""

from __future__ import annotations

import re

from mpmd.http.exchange import HOP_BY_HOP

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # a control character (tab is allowed)
# the headers the server frames itself: an app's are dropped, or read (Content-Length, close)
_FRAMED = frozenset(name.encode("latin-1") for name in HOP_BY_HOP) | {b"content-length"}
_NAMES_CAP = 1024  # distinct names remembered as checked (an application's are few)
_LOWER: dict[bytes, bytes] = {}  # a checked name -> its lower case


def _checked(name: object, value: object) -> bytes:
    """Refuse a header that would corrupt the head (uvicorn's messages); its name in lower case
    (remembered, bounded: an application's names are few)."""
    if type(value) is not bytes or type(name) is not bytes:
        raise TypeError("ASGI header names and values must be bytes.")
    lower = _LOWER.get(name)
    if lower is None:
        if not _TOKEN.match(name):
            raise RuntimeError("Invalid HTTP header name.")
        lower = name.lower()
        if len(_LOWER) < _NAMES_CAP:
            _LOWER[name] = lower
    if _BAD_VALUE.search(value):
        raise RuntimeError("Invalid HTTP header value.")
    return lower


def response_headers(headers: object) -> list[tuple[str, str]]:
    """An ASGI message's `headers` (an iterable of [bytes name, bytes value]) as str pairs."""
    pairs: list[tuple[str, str]] = []
    for name, value in headers or ():  # type: ignore[attr-defined]
        _checked(name, value)
        pairs.append((name.decode("latin-1"), value.decode("latin-1")))
    return pairs


def encode_headers(headers: object) -> tuple[bytes, list, int | None, bool]:
    """(the head's `name: value` lines, the pairs kept for the access log, the app's
    Content-Length, whether it asked to close) for an HTTP response's `headers`."""
    parts: list[bytes] = []
    kept = []
    content_length: int | None = None
    close = False
    for pair in headers or ():  # type: ignore[attr-defined]
        name, value = pair
        lower = _checked(name, value)
        if lower not in _FRAMED:
            kept.append(pair)
            parts += (name, b": ", value, b"\r\n")
        elif lower == b"content-length":
            content_length = int(value)
        elif lower == b"connection" and value.lower() == b"close":
            close = True
    return b"".join(parts), kept, content_length, close
