"""handlers/proxy/backend.py without sockets: routes, targets, the request head, the response
parser fed whole and byte by byte, and the client's response head (hop-by-hop, ProxyPassReverse)."""

from __future__ import annotations

import gc
import weakref

import pytest

from helpers import make_request
from mpmd.config.model import Balancer, BalancerParams, ProxyRoute, ProxySettings, ReverseRule
from mpmd.handlers.proxy.backend import (
    END,
    BackendError,
    Interim,
    ResponseHead,
    ResponseParser,
    backend_target,
    match_route,
    request_head,
)
from mpmd.handlers.proxy.client_head import relay_head, reverse_map
from proxy_doubles import member

B = member(8081, "/base")


def _route(path: str, target: str | None, *, regex: bool = False) -> ProxyRoute:
    return ProxyRoute(path, regex, target, B if target and "balancer" not in target else None, "t")


# -- routes and targets -------------------------------------------------------------------------


def test_first_match_wins_and_bang_excludes():
    settings = ProxySettings(
        routes=(
            _route("/app/static", None),
            _route("/app", "http://127.0.0.1:8081/base"),
            _route("/", "http://127.0.0.1:8081/other"),
        )
    )
    assert match_route(settings, "/app/static/x.css") is None
    route, rest = match_route(settings, "/app/x")
    assert (route.path, rest) == ("/app", "/x")
    assert match_route(settings, "/apple")[0].path == "/"  # a segment boundary, as alias_match
    assert match_route(ProxySettings(), "/x") is None


@pytest.mark.parametrize(
    ("route", "path", "query", "expected"),
    [
        (_route("/app", "http://127.0.0.1:8081/base"), "/app/x y", "", "/base/x%20y"),
        (_route("/app/", "http://127.0.0.1:8081/base/"), "/app/a/b", "q=1&r", "/base/a/b?q=1&r"),
        (_route("/app", "http://127.0.0.1:8081"), "/app", "", "/"),
        (_route("/", "http://127.0.0.1:8081/base/"), "/%25x", "", "/base/%25x"),
        (
            _route(r"^/(.*)\.php$", "http://127.0.0.1:8081/fcgi/$1.php", regex=True),
            "/dir/index.php",
            "",
            "/fcgi/dir/index.php",
        ),
        (
            _route(r"\.gif$", "http://127.0.0.1:8081/img", regex=True),
            "/a/b.gif",
            "",
            "/img/a/b.gif",
        ),
    ],
)
def test_backend_target(route, path, query, expected):
    matched = match_route(ProxySettings(routes=(route,)), path.replace("%25", "%"))
    assert matched is not None
    assert backend_target(matched[0], matched[1], B, query) == expected


def test_balancer_target_prefixes_the_member_url():
    route = ProxyRoute("/app", False, "balancer://cluster/sub", None, "t")
    rest = match_route(ProxySettings(routes=(route,)), "/app/x")[1]
    assert backend_target(route, rest, member(9000, "/m"), "a=b") == "/m/sub/x?a=b"


# -- the request head ---------------------------------------------------------------------------


def _head(request, settings=None, **kw):
    settings = settings or ProxySettings()
    data, framing, expect = request_head(
        request,
        "/base/x",
        B,
        settings,
        client_ip="10.0.0.7",
        server_name="front.example",
        server_port=8080,
        **kw,
    )
    text = data.decode("latin-1")
    lines = text.split("\r\n")
    assert text.endswith("\r\n\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:-2]]
    return lines[0], headers, framing, expect


def test_hop_by_hop_removed_and_forwarded_headers_appended():
    request = make_request(
        "GET",
        "/app/x",
        [
            ("host", "front.example:8080"),
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "s"),
            ("keep-alive", "300"),
            ("te", "trailers"),
            ("trailer", "X-T"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("x-forwarded-for", "192.0.2.1"),
            ("accept", "*/*"),
        ],
    )
    line, headers, framing, expect = _head(request)
    assert line == "GET /base/x HTTP/1.1"
    assert headers[0] == ("Host", "127.0.0.1:8081")  # Host first, the member's (Off)
    names = [name.lower() for name, _ in headers]
    for gone in (
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    ):
        assert gone not in names
    assert ("x-forwarded-for", "192.0.2.1, 10.0.0.7") in headers  # appended with ", "
    assert ("X-Forwarded-Host", "front.example:8080") in headers
    assert ("X-Forwarded-Server", "front.example") in headers
    assert ("accept", "*/*") in headers
    assert (framing, expect) == ("none", False)


def test_preserve_host_add_headers_off_and_via():
    request = make_request("GET", "/", [("host", "front.example"), ("via", "1.0 edge")])
    _, headers, _, _ = _head(
        request, ProxySettings(preserve_host=True, add_headers=False, via="On")
    )
    assert headers[0] == ("Host", "front.example")
    assert not any(name.lower().startswith("x-forwarded") for name, _ in headers)
    assert ("via", "1.0 edge, 1.1 front.example:8080") in headers
    _, headers, _, _ = _head(request, ProxySettings(via="Full"))
    via = dict(headers)["via"]
    assert via.startswith("1.0 edge, 1.1 front.example:8080 (mpmd/") and via.endswith(")")
    _, headers, _, _ = _head(request, ProxySettings(via="Block"))
    assert not any(name.lower() == "via" for name, _ in headers)


def test_body_is_reframed():
    length = make_request("POST", "/", [("host", "h")], b"abc")
    assert _head(length)[1][-1] == ("Content-Length", "3")
    chunked = make_request("POST", "/", [("host", "h")], b"abc", chunked=True)
    _, headers, framing, _ = _head(chunked)
    assert framing == "chunked"
    assert headers[-1] == ("Transfer-Encoding", "chunked")
    assert sum(1 for n, _ in headers if n.lower() in ("content-length", "transfer-encoding")) == 1


def test_expect_continue_goes_end_to_end():
    request = make_request("POST", "/", [("host", "h"), ("expect", "100-continue")], b"abc")
    request.expect_continue = True
    _, headers, _, expect = _head(request)
    assert expect and ("Expect", "100-Continue") in headers
    get = make_request("GET", "/", [("host", "h"), ("expect", "100-continue")])
    get.expect_continue = True
    _, headers, _, expect = _head(get)
    assert not expect and not any(n.lower() == "expect" for n, _ in headers)


# -- the response parser ------------------------------------------------------------------------


def _parse(data: bytes, method: str = "GET", *, split: bool = False, eof: bool = False):
    parser = ResponseParser(method)
    events = []
    pieces = [data[i : i + 1] for i in range(len(data))] if split else [data]
    for piece in pieces:
        events.extend(parser.feed(piece))
    if eof:
        events.extend(parser.eof())
    head = next(e for e in events if isinstance(e, ResponseHead))
    body = b"".join(e for e in events if isinstance(e, bytes))
    return parser, events, head, body


def test_a_complete_response_frees_its_parser_without_the_collector():
    """The parser and httptools' parser reference each other until the response is
    complete; then nothing is left for the cycle collector."""
    gc.disable()
    try:
        parser = ResponseParser("GET")
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert parser.complete and parser.reusable
        ref = weakref.ref(parser)
        del parser
        assert ref() is None
    finally:
        gc.enable()


def test_a_kept_parser_serves_the_connections_next_responses_until_it_cannot():
    """Recycled while llhttp ended each response itself; not after a HEAD (llhttp would take
    the next response as its body), bytes past the end, or other limits; close() frees it."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-N: %d\r\n\r\nok"
    parser = ResponseParser("GET", kept=True)
    for n in range(3):
        assert n == 0 or parser.recycle("POST", 8190, 100)
        events = parser.feed(ok % n)
        assert events[0].raw == [(b"Content-Length", b"2"), (b"X-N", b"%d" % n)]
        assert events[1:] == [b"ok", END] and parser.recyclable and parser.reusable
    assert not parser.recycle("GET", 100, 100)  # another LimitRequestFieldSize
    assert parser.recycle("HEAD", 8190, 100)
    parser.feed(ok % 3)
    assert parser.reusable and not parser.recyclable
    assert not parser.recycle("GET", 8190, 100)
    parser = ResponseParser("GET", kept=True)
    parser.feed(ok % 4 + b"HTTP/1.1")
    assert parser.complete and not parser.recyclable
    parser.feed(b" 200 OK\r\n")
    assert not (parser.reusable or parser.recyclable)
    gc.disable()
    try:
        parser = ResponseParser("GET", kept=True)
        parser.feed(ok % 5)
        ref = weakref.ref(parser)
        parser.close()
        del parser
        assert ref() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("split", [False, True])
def test_content_length_chunked_and_close_delimited(split):
    parser, events, head, body = _parse(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
        split=split,
    )
    assert isinstance(events[0], Interim) and events[-1] is END
    assert (head.status, head.reason, body, parser.reusable) == (200, "OK", b"hello", True)
    assert ("X-A", "b") in head.headers
    parser, events, head, body = _parse(
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        split=split,
    )
    assert (head.status, body, events[-1], parser.reusable) == (201, b"abcde", END, True)
    parser, events, head, body = _parse(
        b"HTTP/1.0 200 OK\r\n\r\nuntil close", split=split, eof=True
    )
    assert (body, events[-1], parser.reusable) == (b"until close", END, False)


def test_head_and_bodyless_responses_end_at_the_head():
    parser, events, _, body = _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", "HEAD")
    assert events[-1] is END and body == b"" and parser.reusable
    parser, events, _, _ = _parse(b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n")
    assert events[-1] is END and parser.reusable


@pytest.mark.parametrize(
    ("data", "ah"),
    [
        (b"HTTX/1.1 200 OK\r\n\r\n", "AH00898"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "AH00898"),
        (b"garbage\r\n\r\n", "AH00898"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", "AH10124"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "AH00898"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "AH01110"),
    ],
)
def test_malformed_responses(data, ah):
    with pytest.raises(BackendError) as caught:
        _parse(data)
    assert caught.value.ah == ah and caught.value.status == 502


def test_premature_close():
    parser = ResponseParser("GET")
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")[-1] == b"abc"
    with pytest.raises(BackendError) as caught:
        parser.eof()
    assert caught.value.ah == "AH01110"
    with pytest.raises(BackendError) as caught:
        ResponseParser("GET").eof()
    assert caught.value.ah == "AH01102"


def test_oversized_head_is_bounded_before_it_completes():
    parser = ResponseParser("GET", field_size=100, max_fields=10)
    with pytest.raises(BackendError):
        for _ in range(100):
            parser.feed(
                b"X-" + b"a" * 20 + b": b\r\n" if parser.started else b"HTTP/1.1 200 OK\r\n"
            )


# -- the client's head --------------------------------------------------------------------------


def _ok(*headers: tuple[bytes, bytes]) -> ResponseHead:
    """A back end's 200 head with `headers`, keep-alive."""
    return ResponseHead(200, "OK", list(headers), True)


def test_response_hop_by_hop_dropped():
    head = _ok(
        (b"Connection", b"close, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Upgrade", b"h2"),
        (b"Set-Cookie", b"a=b"),
    )
    out = relay_head(head, ProxySettings(), {}, base="http://front", via="1.1 front")
    assert out.kept == [(b"Set-Cookie", b"a=b"), (b"Via", b"1.1 front")]
    assert out.lines == b"Set-Cookie: a=b\r\nVia: 1.1 front\r\n"
    assert (out.content_length, out.date, out.server) == (None, None, None)


def test_response_keeps_the_back_ends_date_and_server_apart():
    """Apache's head for a proxied response gives the back end's Date and Server (its own
    only where the back end sent none): relay_head hands them over apart from the rest."""
    head = _ok(
        (b"Server", b"nginx/1.22.1"),
        (b"Date", b"Sat, 05 Dec 2026 09:24:28 GMT"),
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"13"),
    )
    out = relay_head(head, ProxySettings(), {}, base="", via=None)
    assert out.kept == [(b"Content-Type", b"text/plain")]
    assert out.content_length == 13
    assert out.date == b"Sat, 05 Dec 2026 09:24:28 GMT"
    assert out.server == b"nginx/1.22.1"


def test_proxy_pass_reverse():
    rules = (
        ReverseRule("/app", "http://127.0.0.1:8081/base"),
        ReverseRule("/lb", "balancer://cluster/"),
    )
    members = (member(9001), member(9002, "/m"))
    balancers = {
        "balancer://cluster": Balancer("balancer://cluster", members, BalancerParams(), "t")
    }
    base = "http://front.example:8080"
    assert reverse_map("http://127.0.0.1:8081/base/login", rules, balancers, base) == (
        "http://front.example:8080/app/login"
    )
    assert reverse_map("http://127.0.0.1:9002/m/x", rules, balancers, base) == (
        "http://front.example:8080/lb/x"
    )
    assert reverse_map("http://elsewhere/x", rules, balancers, base) == "http://elsewhere/x"
    head = ResponseHead(
        302,
        "Found",
        [
            (b"Location", b"http://127.0.0.1:9001/y"),
            (b"Content-Location", b"http://127.0.0.1:8081/base/c"),
        ],
        True,
    )
    out = relay_head(head, ProxySettings(reverse=rules), balancers, base=base, via=None)
    assert out.kept == [
        (b"Location", b"http://front.example:8080/lb/y"),
        (b"Content-Location", b"http://front.example:8080/app/c"),
    ]


def test_upgrade_is_kept_only_for_a_tunnel():
    request = make_request("GET", "/ws", [("host", "h"), ("connection", "Upgrade"),
                                          ("upgrade", "websocket")])  # fmt: skip
    _, headers, _, _ = _head(request)
    assert not any(n.lower() in ("upgrade", "connection") for n, _ in headers)
    _, headers, _, _ = _head(request, upgrade=True)
    assert headers[-2:] == [("Connection", "Upgrade"), ("Upgrade", "websocket")]
