"""The protocol engine against tests/protocol_cases: one request stream per file.

A case file starts with one `# {json}` line (the expected outcome), followed by the bytes
to send written with Python escapes (`\\r\\n`, `\\x00`); the file's own newlines are ignored.
Expected outcome: `events` in order, each `{"request": "<request line>", "keep_alive": b, ...}`
(optional `client_keep_alive` (the client's own wish, whatever the server allows), `body`, `body_error`, `headers`, `content_length`, `expect_continue`, `head_size`)
or `{"error": status, "keep_alive": b}`; `open`: the connection may carry another request at
the end; optional `settings` (HttpSettings overrides), `continue_sent` (100s sent),
`read_body` (false: leave bodies unread, finish_request must skip them).
Every case is fed whole, byte by byte, and at seeded random split points.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import random
from pathlib import Path

import pytest

from helpers import DEFAULT_SETTINGS
from mpmd.config.model import HttpSettings, ReadTimeoutStage
from mpmd.http.errors import HttpError
from mpmd.http.protocol import CLOSED, ERROR, TRANSITIONS, HttpProtocol
from mpmd.http.timeouts import BODY, HEADERS, IDLE, REQUEST_LINE

CASES = Path(__file__).parent / "protocol_cases"


def load_case(path: Path) -> tuple[dict, bytes]:
    first, _, rest = path.read_bytes().partition(b"\n")
    assert first.startswith(b"# "), path
    expected = json.loads(first[2:])
    data = codecs.escape_decode(rest.replace(b"\n", b""))[0]
    return expected, data


def run_stream(chunks: list[bytes], settings: HttpSettings, read_body: bool = True) -> dict:
    """Drive the protocol as the blocking connection loop does; return what happened."""
    pending = iter(chunks)
    sent_continue: list[int] = []

    def recv() -> bytes:
        return next(pending, b"")

    protocol = HttpProtocol(settings, recv=recv, send_continue=lambda: sent_continue.append(1))
    events: list[dict] = []
    is_open = True
    while True:
        try:
            request = protocol.next_request()
        except HttpError as err:
            assert isinstance(err.status, int)
            events.append({"error": err.status, "keep_alive": err.keep_alive})
            if err.keep_alive:
                continue
            is_open = False
            break
        if request is None:
            data = recv()
            if data:
                protocol.feed(data)
                continue
            # Sent everything: the connection stays open if it now waits for a new request.
            stage = protocol.read_stage()
            protocol.feed(b"")
            try:
                protocol.next_request()
            except HttpError as err:
                events.append({"error": err.status, "keep_alive": err.keep_alive})
                stage = "closed"
            is_open = stage == IDLE
            break
        event = {
            "request": request.request_line,
            "keep_alive": request.keep_alive,
            "client_keep_alive": request.client_keep_alive,
            "headers": [list(pair) for pair in request.headers],
            "content_length": request.content_length,
            "expect_continue": request.expect_continue,
            "head_size": request.head_size,
        }
        events.append(event)
        if read_body:
            try:
                event["body"] = request.body.read().decode("latin-1")
            except HttpError as err:
                event["body_error"] = err.status
                is_open = False
                break
        if not protocol.finish_request(request):
            is_open = False
            break
    return {"events": events, "open": is_open, "continue_sent": len(sent_continue)}


def check(expected: dict, got: dict, how: str) -> None:
    assert len(got["events"]) == len(expected["events"]), (how, got["events"])
    for want, have in zip(expected["events"], got["events"], strict=True):
        for key, value in want.items():
            assert key in have, (how, key, have)
            assert have[key] == value, (how, key, have)
    assert got["open"] == expected["open"], (how, got)
    if "continue_sent" in expected:
        assert got["continue_sent"] == expected["continue_sent"], how


def splits(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


CASE_FILES = sorted(CASES.glob("*/*.http"))


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case(path: Path) -> None:
    expected, data = load_case(path)
    settings = dataclasses.replace(DEFAULT_SETTINGS, **expected.get("settings", {}))
    read_body = expected.get("read_body", True)
    check(expected, run_stream([data], settings, read_body), "whole")
    check(expected, run_stream([bytes([b]) for b in data], settings, read_body), "bytewise")
    for seed in range(6):
        check(expected, run_stream(splits(data, seed), settings, read_body), f"seed {seed}")


def test_case_folders_are_populated() -> None:
    assert len(list((CASES / "valid").glob("*.http"))) >= 25
    assert len(list((CASES / "invalid").glob("*.http"))) >= 50


# -- cases at the default limits (too big for files) ----------------------------------------


def outcome(data: bytes, settings: HttpSettings = DEFAULT_SETTINGS) -> dict:
    return run_stream([data], settings)


def test_request_line_at_default_limit() -> None:
    target = b"/" + b"a" * (8190 - len(b"GET  HTTP/1.1") - 1)
    line = b"GET " + target + b" HTTP/1.1"
    assert len(line) == 8190
    ok = outcome(line + b"\r\nHost: a\r\n\r\n")
    assert ok["events"][0]["request"] == line.decode()
    too_long = outcome(b"GET " + target + b"a HTTP/1.1\r\nHost: a\r\n\r\n")
    assert too_long["events"] == [{"error": 414, "keep_alive": False}]


def test_header_field_at_default_limit() -> None:
    field = b"X: " + b"v" * (8190 - 3)
    ok = outcome(b"GET / HTTP/1.1\r\nHost: a\r\n" + field + b"\r\n\r\n")
    assert ok["events"][0]["headers"][1] == ["x", "v" * 8187]
    bad = outcome(b"GET / HTTP/1.1\r\nHost: a\r\n" + field + b"v\r\n\r\n")
    assert bad["events"] == [{"error": 400, "keep_alive": False}]


def test_exactly_100_fields_accepted_101_refused() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(99))
    ok = outcome(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
    assert len(ok["events"][0]["headers"]) == 100
    bad = outcome(b"GET / HTTP/1.1\r\nHost: a\r\nY: 1\r\n" + fields + b"\r\n")
    assert bad["events"] == [{"error": 400, "keep_alive": False}]


def test_endless_header_is_refused_while_streaming() -> None:
    protocol = HttpProtocol(DEFAULT_SETTINGS)
    protocol.feed(b"GET / HTTP/1.1\r\nX: ")
    for _ in range(10):
        protocol.feed(b"a" * 1000)
    with pytest.raises(HttpError) as info:
        protocol.next_request()
    assert info.value.status == 400


def test_endless_request_line_is_414_while_streaming() -> None:
    protocol = HttpProtocol(DEFAULT_SETTINGS)
    protocol.feed(b"GET /")
    for _ in range(9):
        protocol.feed(b"a" * 1000)
    with pytest.raises(HttpError) as info:
        protocol.next_request()
    assert info.value.status == 414


def test_body_content_length_limit_checked_before_reading() -> None:
    settings = dataclasses.replace(DEFAULT_SETTINGS, limit_request_body=100)
    protocol = HttpProtocol(settings)
    protocol.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
    with pytest.raises(HttpError) as info:
        protocol.next_request()
    assert info.value.status == 413
    assert "AH01588" in info.value.log_message


def test_read_stage_follows_the_stream() -> None:
    protocol = HttpProtocol(DEFAULT_SETTINGS)
    assert protocol.read_stage() == IDLE
    protocol.feed(b"POST / HT")
    assert protocol.read_stage() == REQUEST_LINE
    protocol.feed(b"TP/1.1\r\nHost: a\r\n")
    assert protocol.read_stage() == HEADERS
    protocol.feed(b"Content-Length: 4\r\n\r\nab")
    request = protocol.next_request()
    assert request is not None
    assert protocol.read_stage() == BODY
    assert not protocol.body_complete(request)
    assert request.body.buffered == 2
    protocol.feed(b"cd")
    assert protocol.body_complete(request)
    assert protocol.read_stage() == IDLE
    assert request.body.read() == b"abcd"


def test_final_states_take_no_more_bytes() -> None:
    closing = HttpProtocol(DEFAULT_SETTINGS)
    closing.feed(b"GET / HTTP/1.0\r\n\r\nGET /ignored HTTP/1.0\r\n\r\n")
    assert closing.state == CLOSED and closing.read_stage() == IDLE
    assert closing.next_request().path == "/"
    assert closing.next_request() is None  # bytes after a request without keep-alive
    failing = HttpProtocol(DEFAULT_SETTINGS)
    failing.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBAD\x00\r\n\r\n")
    assert failing.state == ERROR and failing.buffered()
    assert failing.next_request().path == "/"
    with pytest.raises(HttpError):
        failing.next_request()
    assert TRANSITIONS[ERROR] == frozenset()


def test_event_loop_style_continue_and_buffering() -> None:
    """recv=None: the I/O layer feeds bytes itself and sends 100 Continue when told to."""
    protocol = HttpProtocol(DEFAULT_SETTINGS)
    protocol.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert protocol.buffered()
    request = protocol.next_request()
    assert request is not None and request.expect_continue
    assert not protocol.buffered()
    assert protocol.take_continue(request) is True
    assert protocol.take_continue(request) is False
    protocol.feed(b"xyzGET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert protocol.body_complete(request)
    assert protocol.buffered()
    assert request.body.read() == b"xyz"
    assert protocol.finish_request(request)
    assert protocol.next_request().target == "/"  # type: ignore[union-attr]


def test_bytes_held_behind_an_upgrade_request_count_as_sent() -> None:
    """A refused upgrade's pipelined request is held raw, not parsed: it is still something
    the client sent (sent_more), so a closing response does not drop it."""
    protocol = HttpProtocol(DEFAULT_SETTINGS, recv=lambda: pytest.fail("must not read"))
    protocol.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
    request = protocol.next_request()
    assert request is not None and request.upgrade
    assert not protocol.sent_more()
    protocol.feed(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
    assert not protocol.buffered() and protocol.sent_more()
    assert protocol.finish_request(request)
    assert protocol.next_request().target == "/after"  # type: ignore[union-attr]
    assert not protocol.sent_more()


def test_unsent_continue_closes_instead_of_waiting() -> None:
    """A response given without reading an Expect: 100-continue body: do not wait for it."""
    protocol = HttpProtocol(DEFAULT_SETTINGS, recv=lambda: pytest.fail("must not read"))
    protocol.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    request = protocol.next_request()
    assert request is not None
    assert protocol.finish_request(request) is False


def test_large_unread_body_is_not_discarded() -> None:
    protocol = HttpProtocol(DEFAULT_SETTINGS, recv=lambda: pytest.fail("must not read"))
    protocol.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\nabc")
    request = protocol.next_request()
    assert request is not None
    assert protocol.finish_request(request) is False


def test_body_readline_readlines_and_iteration() -> None:
    data = b"line one\nline two\n\nlast"
    chunks = [data[i : i + 3] for i in range(0, len(data), 3)]
    head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(data)
    pending = iter(chunks)
    protocol = HttpProtocol(DEFAULT_SETTINGS, recv=lambda: next(pending, b""))
    protocol.feed(head)
    body = protocol.next_request().body  # type: ignore[union-attr]
    assert body.readline() == b"line one\n"
    assert body.readline(4) == b"line"
    assert body.read(5) == b" two\n"
    assert body.readlines() == [b"\n", b"last"]
    assert body.read() == b"" and body.readline() == b""
    pending2 = iter([b"a\nb", b"\nc"])
    protocol2 = HttpProtocol(DEFAULT_SETTINGS, recv=lambda: next(pending2, b""))
    protocol2.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    protocol2.feed(b"5\r\n")
    body2 = protocol2.next_request().body  # type: ignore[union-attr]
    pending2 = iter([b"a\nb\nc\r\n0\r\n\r\n"])
    assert list(body2) == [b"a\n", b"b\n", b"c"]


def test_body_timeout_and_reset_become_http_errors() -> None:
    def timing_out() -> bytes:
        raise TimeoutError

    protocol = HttpProtocol(DEFAULT_SETTINGS, recv=timing_out)
    protocol.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    request = protocol.next_request()
    assert request is not None
    assert request.body.read(2) == b"ab"
    with pytest.raises(HttpError) as info:
        request.body.read(1)
    assert info.value.status == 408
    assert protocol.finish_request(request) is False

    def resetting() -> bytes:
        raise ConnectionResetError

    protocol = HttpProtocol(DEFAULT_SETTINGS, recv=resetting)
    protocol.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
    with pytest.raises(HttpError) as info:
        protocol.next_request().body.read()  # type: ignore[union-attr]
    assert info.value.status == 400


def test_requests_started_counts_heads() -> None:
    protocol = HttpProtocol(DEFAULT_SETTINGS)
    protocol.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 3)
    assert protocol.requests_started == 3


def test_blocking_body_sends_100_continue_once_before_first_recv() -> None:
    log: list[str] = []
    pending = iter([b"da", b"ta"])

    def recv() -> bytes:
        log.append("recv")
        return next(pending, b"")

    protocol = HttpProtocol(DEFAULT_SETTINGS, recv=recv, send_continue=lambda: log.append("100"))
    protocol.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    request = protocol.next_request()
    assert request is not None and request.expect_continue
    assert request.body.read() == b"data"
    assert log == ["100", "recv", "recv"]
    assert protocol.finish_request(request)


# -- RequestReadTimeout arithmetic (timeouts.py) -------------------------------------------


def test_read_deadline_extends_by_min_rate_up_to_hard_limit() -> None:
    from mpmd.http.timeouts import ReadDeadline

    deadline = ReadDeadline(ReadTimeoutStage(timeout=20, max_timeout=40, min_rate=500))
    assert deadline.remaining(0.0) is None  # not started
    deadline.start(100.0)
    assert deadline.remaining(100.0) == 20.0
    deadline.on_bytes(1000, 101.0)  # 1000 bytes / 500 B/s = +2 s
    assert deadline.deadline == 122.0
    deadline.on_bytes(100_000, 102.0)  # +200 s, capped at start + 40
    assert deadline.deadline == 140.0 and deadline.hard == 140.0
    assert not deadline.expired(139.9)
    assert deadline.expired(140.0) and deadline.remaining(141.0) == 0.0
    deadline.on_bytes(500, 141.0)  # bytes after expiry do not revive it
    assert deadline.deadline == 140.0


def test_read_deadline_without_max_extends_without_cap_and_without_rate_never() -> None:
    from mpmd.http.timeouts import ReadDeadline

    body = ReadDeadline(ReadTimeoutStage(timeout=20, max_timeout=0, min_rate=500))
    body.start(0.0)
    body.on_bytes(50_000, 10.0)
    assert body.deadline == 120.0 and body.hard is None
    fixed = ReadDeadline(ReadTimeoutStage(timeout=5, max_timeout=0, min_rate=0))
    fixed.start(0.0)
    fixed.on_bytes(10_000, 1.0)
    assert fixed.deadline == 5.0
    disabled = ReadDeadline(ReadTimeoutStage(timeout=0, max_timeout=0, min_rate=0))
    disabled.start(0.0)
    assert not disabled.enabled and disabled.remaining(1e9) is None and not disabled.expired(1e9)


def test_expiry_status_per_stage() -> None:
    from mpmd.http.timeouts import expiry_status

    assert expiry_status(IDLE) is None
    assert expiry_status(REQUEST_LINE) is None
    assert expiry_status(HEADERS) == 408
    assert expiry_status(BODY) == 408
