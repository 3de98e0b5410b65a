"""A back end for the proxy tests (tests/backends.py MpmdBackends): every answer names it.

`make_app(name)` builds the WSGI callable; each back end's generated script calls it with its
own name. Paths: / and /hello (name), /slow?ms=N (works N ms, emulating a slow back end),
/gate?path=FILE (held until FILE exists: the test's condition, with FILE.in created on entry),
/stream?chunks=N&gate=DIR (chunk i is sent once DIR/i exists, or at once without gate),
/echo-headers, /upload (POST or PUT: SHA-256 and length of the body, read in pieces),
/big?size=N (N bytes), /status?code=N, /cookie (the sticky-session cookies), /pid.
"""

import hashlib
import os
import time
from urllib.parse import parse_qs

HOLD_LIMIT = 30.0  # a held request is released after this many seconds whatever happens
STICKY_COOKIES = ("ROUTEID", "JSESSIONID")


def _wait_for_file(path: str) -> bool:
    deadline = time.monotonic() + HOLD_LIMIT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _text(start_response, name, body, status="200 OK", extra=()):
    data = body.encode()
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))]
    start_response(status, [*headers, ("X-Backend", name), *extra])
    return [data]


def _stream(start_response, name, chunks, gate):
    """No Content-Length: the server sends it chunked, each piece as the app yields it."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Backend", name)])
    for i in range(chunks):
        if gate and not _wait_for_file(os.path.join(gate, str(i))):
            return
        yield f"{name} chunk {i}\n".encode()


def _big(start_response, name, size):
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size)),
         ("X-Backend", name)],
    )  # fmt: skip
    block = b"x" * 65536
    while size > 0:
        yield block[:size]
        size -= len(block)


def _upload(environ):
    """SHA-256 and length of the request body, read 64 KiB at a time (never held whole)."""
    digest, total = hashlib.sha256(), 0
    stream = environ["wsgi.input"]
    while piece := stream.read(65536):
        digest.update(piece)
        total += len(piece)
    return f"sha256={digest.hexdigest()} length={total}\n"


def _echo_headers(environ):
    lines = [f"request: {environ['REQUEST_METHOD']} {environ.get('RAW_URI', environ['PATH_INFO'])}"]
    for key, value in sorted(environ.items()):
        if key.startswith("HTTP_"):
            lines.append(f"{key[5:].lower().replace('_', '-')}: {value}")
    for key in ("CONTENT_LENGTH", "CONTENT_TYPE"):
        if environ.get(key):
            lines.append(f"{key.lower().replace('_', '-')}: {environ[key]}")
    return "\n".join(lines) + "\n"


def make_app(name):
    """The WSGI callable of back end `name`."""

    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if path in ("/", "/hello"):
            return _text(start_response, name, f"{name}\n")
        if path == "/slow":
            time.sleep(int(query.get("ms", "100")) / 1000)
            return _text(start_response, name, f"{name}\n")
        if path == "/gate":
            open(query["path"] + ".in", "w").close()
            released = _wait_for_file(query["path"])
            return _text(start_response, name, f"{name} {'released' if released else 'expired'}\n")
        if path == "/stream":
            return _stream(start_response, name, int(query.get("chunks", "3")), query.get("gate"))
        if path == "/echo-headers":
            return _text(start_response, name, _echo_headers(environ))
        if path == "/upload":
            return _text(start_response, name, _upload(environ))
        if path == "/big":
            return _big(start_response, name, int(query.get("size", str(1 << 20))))
        if path == "/status":
            code = int(query.get("code", "500"))
            return _text(start_response, name, f"{name} {code}\n", f"{code} Status {code}")
        if path == "/cookie":
            cookies = [("Set-Cookie", f"{c}=s.{name}; Path=/") for c in STICKY_COOKIES]
            return _text(start_response, name, f"{name}\n", extra=cookies)
        if path == "/pid":
            return _text(start_response, name, f"{os.getpid()}\n")
        return _text(start_response, name, f"{name}: no {path}\n", "404 Not Found")

    return application
