"""ASGI applications the integration tests mount (ASGIApp /a asgi_apps:NAME).

`app` routes on the path below its root_path to the cases test_asgi_http.py checks; a case
that must tell the test what it saw (a disconnect, its progress, a RuntimeError) writes it to
the file named by the `file` query parameter. Its lifespan sets `state` at startup and, at
shutdown, writes `shutdown-PID` into $ASGI_MARKERS when that is set.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from urllib.parse import parse_qs

TEXT = [(b"content-type", b"text/plain")]


def _query(scope: dict) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


def _record(scope: dict, text: str) -> None:
    """Write `text` to the file the query names (a rename: the test never sees half of it)."""
    path = Path(_query(scope)["file"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)


async def _respond(send, body: bytes, status: int = 200, headers=TEXT) -> None:
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + length})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(scope: dict, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            scope["state"]["started"] = "yes"
            scope["state"]["pid"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        else:
            markers = os.environ.get("ASGI_MARKERS")
            if markers:
                Path(markers, f"shutdown-{os.getpid()}").write_text("done")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive) -> tuple[bytes, int]:
    """The whole request body and how many http.request messages carried it (-1: the
    client went away)."""
    parts, count = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", -1
        parts.append(message["body"])
        count += 1
        if not message["more_body"]:
            return b"".join(parts), count


# -- the cases --------------------------------------------------------------------------------


async def _scope(scope, receive, send) -> None:
    shown = {
        key: scope[key]
        for key in ("type", "http_version", "method", "scheme", "path", "root_path", "client")
    }
    shown["server"] = scope["server"]
    shown["raw_path"] = scope["raw_path"].decode("latin-1")
    shown["query_string"] = scope["query_string"].decode("latin-1")
    shown["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
    shown["headers_are_bytes"] = all(
        type(n) is bytes and type(v) is bytes for n, v in scope["headers"]
    )
    shown["asgi"] = scope["asgi"]
    shown["extensions"] = sorted(scope.get("extensions") or ())
    shown["tls"] = (scope.get("extensions") or {}).get("tls")
    shown["state"] = scope.get("state")
    shown["pid"] = os.getpid()
    await _respond(
        send, json.dumps(shown).encode(), headers=[(b"content-type", b"application/json")]
    )


async def _hello(scope, receive, send) -> None:
    await _respond(send, b"Hello, ASGI!", headers=[*TEXT, (b"x-app", b"asgi")])


async def _echo(scope, receive, send) -> None:
    body, count = await _read_body(receive)
    await _respond(send, body, headers=[(b"x-messages", str(count).encode())])


async def _deny(scope, receive, send) -> None:
    await _respond(send, b"no\n", status=401)


async def _gated_echo(scope, receive, send) -> None:
    """Says it has the request (file), waits for `gate` to exist, only then reads the body."""
    query = _query(scope)
    _record(scope, "waiting")
    while not os.path.exists(query["gate"]):
        await asyncio.sleep(0.01)
    body, _ = await _read_body(receive)
    await _respond(send, body)


async def _stream(scope, receive, send) -> None:
    query = _query(scope)
    count, size = int(query.get("n", "5")), int(query.get("size", "10"))
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    for i in range(count):
        await send(
            {"type": "http.response.body", "body": bytes([65 + i % 26]) * size, "more_body": True}
        )
    await send({"type": "http.response.body"})


async def _slow_consumer(scope, receive, send) -> None:
    """n chunks of size bytes, its progress (chunks sent) in the file after each."""
    query = _query(scope)
    count, size = int(query["n"]), int(query["size"])
    headers = [*TEXT, (b"content-length", str(count * size).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    chunk = b"x" * size
    for i in range(count):
        await send({"type": "http.response.body", "body": chunk, "more_body": i + 1 < count})
        _record(scope, str(i + 1))


async def _held(scope, receive, send) -> None:
    """A first chunk at once, the rest once the `gate` file exists (a request in flight)."""
    query = _query(scope)
    await send({"type": "http.response.start", "status": 200, "headers": TEXT})
    await send({"type": "http.response.body", "body": b"first;", "more_body": True})
    while not os.path.exists(query["gate"]):
        await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"rest" * 10000 + b";end"})


async def _raise_before(scope, receive, send) -> None:
    raise ValueError("the ASGI application failed on purpose")


async def _raise_after(scope, receive, send) -> None:
    headers = [*TEXT, (b"content-length", b"1000")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("failed after the start")


async def _no_start(scope, receive, send) -> None:
    return


async def _body_first(scope, receive, send) -> None:
    await send({"type": "http.response.body", "body": b"too soon"})


async def _after_complete(scope, receive, send) -> None:
    await _respond(send, b"complete")
    try:
        await send({"type": "http.response.body", "body": b"more"})
    except RuntimeError as error:
        _record(scope, f"RuntimeError: {error}")
    else:
        _record(scope, "no error")


async def _disconnect(scope, receive, send) -> None:
    """Waits for the client to go away, without answering."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            _record(scope, "http.disconnect")
            return


async def _pathsend(scope, receive, send) -> None:
    path = _query(scope)["path"]
    size = os.path.getsize(path)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(size).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.pathsend", "path": path})


async def _zerocopysend(scope, receive, send) -> None:
    """The file in two spans: the first half with an offset, the rest from the file position."""
    path = _query(scope)["path"]
    size = os.path.getsize(path)
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(size).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    with open(path, "rb") as file:
        half = size // 2
        await send({"type": "http.response.zerocopysend", "file": file.fileno(), "offset": 0,
                    "count": half, "more_body": True})  # fmt: skip
        file.seek(half)
        await send({"type": "http.response.zerocopysend", "file": file})


async def _headers(scope, receive, send) -> None:
    """Headers as an app may send them: mixed case, a parameter, and the framing headers the
    server owns (dropped, or read: Content-Length, Connection: close)."""
    headers = [
        (b"X-Case", b"Mixed Case"),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"transfer-encoding", b"chunked"),
        (b"Connection", b"close"),
        (b"content-length", b"2"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def _bad_header(scope, receive, send) -> None:
    bad = [(b"bad name", b"x")] if _query(scope).get("what") == "name" else [(b"x", b"a\nb")]
    await send({"type": "http.response.start", "status": 200, "headers": bad})
    await send({"type": "http.response.body", "body": b"never"})


async def _pid(scope, receive, send) -> None:
    await _respond(send, str(os.getpid()).encode())


CASES = {
    "/scope": _scope,
    "/hello": _hello,
    "/echo": _echo,
    "/deny": _deny,
    "/gated-echo": _gated_echo,
    "/stream": _stream,
    "/slow-consumer": _slow_consumer,
    "/held": _held,
    "/raise-before": _raise_before,
    "/raise-after": _raise_after,
    "/no-start": _no_start,
    "/body-first": _body_first,
    "/after-complete": _after_complete,
    "/disconnect": _disconnect,
    "/pathsend": _pathsend,
    "/zerocopysend": _zerocopysend,
    "/pid": _pid,
    "/headers": _headers,
    "/bad-header": _bad_header,
}


async def app(scope, receive, send) -> None:
    """The cases by path below root_path; lifespan with state and a shutdown marker."""
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    case = CASES.get(scope["path"][len(scope["root_path"]) :])
    if case is None:
        await _respond(send, b"no such case\n", status=404)
        return
    await case(scope, receive, send)


async def hello(scope, receive, send) -> None:
    """The smallest ASGI application (the positional `mpmd asgi_apps:hello`)."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']}")
    await _hello(scope, receive, send)


async def no_lifespan(scope, receive, send) -> None:
    """Raises on any scope but http, as many applications do (no lifespan support)."""
    if scope["type"] != "http":
        raise RuntimeError(f"unsupported scope {scope['type']}")
    await _respond(send, b"no lifespan here")


async def failing_startup(scope, receive, send) -> None:
    """Refuses to start: lifespan.startup.failed."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await _respond(send, b"never served")
