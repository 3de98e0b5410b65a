"""Property tests: whatever bytes arrive, the protocol raises nothing but HttpError.

Arbitrary bytes, arbitrary splits of valid streams, and valid streams with one byte changed,
driven through next_request / body reads / finish_request as the connection loop does.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import DEFAULT_SETTINGS
from mpmd.http.errors import HttpError
from mpmd.http.protocol import HttpProtocol

SMALL_LIMITS = dataclasses.replace(
    DEFAULT_SETTINGS,
    limit_request_line=64,
    limit_request_field_size=64,
    limit_request_fields=8,
    limit_request_body=64,
    max_keep_alive_requests=5,
)

VALID_STREAMS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a?b=c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=1\r\nabc\r\n2\r\n\r\n\r\n0\r\nT: v\r\n\r\n",
    b"PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nExpect: nope\r\n\r\n",
]

TOKENS = [
    b"GET ",
    b"POST ",
    b"/ ",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b":",
    b"Host: a",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"Expect: 100-continue",
    b"0",
    b"5",
    b"ff",
    b";ext",
    b"\x00",
    b"\t",
    b"\xff",
    b"hello",
]


def drive(chunks: list[bytes], limits=DEFAULT_SETTINGS) -> None:
    """Run a connection over `chunks`; only HttpError may escape, and only where expected."""
    pending = iter(chunks)
    protocol = HttpProtocol(limits, recv=lambda: next(pending, b""), send_continue=lambda: None)
    for _ in range(200):
        try:
            request = protocol.next_request()
        except HttpError as err:
            assert 400 <= err.status < 600
            if not err.keep_alive:
                return
            continue
        if request is None:
            data = next(pending, b"")
            protocol.feed(data)
            if not data:
                try:
                    protocol.next_request()
                except HttpError:
                    pass
                return
            continue
        assert request.target and request.method and request.version in ("HTTP/1.0", "HTTP/1.1")
        try:
            request.body.readline(3)
            request.body.read()
        except HttpError as err:
            assert 400 <= err.status < 600
            return
        if not protocol.finish_request(request):
            return


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_http_error(data: bytes) -> None:
    drive([data])
    drive([data], SMALL_LIMITS)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40), st.lists(st.integers(0, 2000), max_size=6))
def test_token_soup_only_raises_http_error(tokens: list[bytes], cuts: list[int]) -> None:
    data = b"".join(tokens)
    drive(split(data, cuts))
    drive(split(data, cuts), SMALL_LIMITS)


@FUZZ
@given(
    st.lists(st.sampled_from(VALID_STREAMS), min_size=1, max_size=4),
    st.lists(st.integers(0, 2000), max_size=8),
)
def test_valid_streams_split_anywhere_are_all_served(streams: list[bytes], cuts: list[int]) -> None:
    data = b"".join(streams)
    drive(split(data, cuts))
    whole = _served([data])
    assert _served(split(data, cuts)) == whole


@FUZZ
@given(
    st.sampled_from(VALID_STREAMS),
    st.integers(0, 10_000),
    st.integers(0, 255),
    st.lists(st.integers(0, 2000), max_size=4),
)
def test_one_byte_changed_only_raises_http_error(
    stream: bytes, position: int, value: int, cuts: list[int]
) -> None:
    data = bytearray(stream * 2)
    data[position % len(data)] = value
    drive(split(bytes(data), cuts))
    drive(split(bytes(data), cuts), SMALL_LIMITS)


def _served(chunks: list[bytes]) -> list[tuple]:
    """What the application sees: request lines, bodies and errors, in order."""
    pending = iter(chunks)
    protocol = HttpProtocol(DEFAULT_SETTINGS, recv=lambda: next(pending, b""))
    seen: list[tuple] = []
    while True:
        try:
            request = protocol.next_request()
        except HttpError as err:
            seen.append(("error", err.status))
            if err.keep_alive:
                continue
            return seen
        if request is None:
            data = next(pending, b"")
            if not data:
                return seen
            protocol.feed(data)
            continue
        seen.append((request.request_line, request.keep_alive, request.body.read()))
        if not protocol.finish_request(request):
            return seen
