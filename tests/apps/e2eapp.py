"""WSGI applications for the end-to-end tests (tests/test_e2e_*.py), mounted with WSGIApp.

`probe` answers every request with its own request line and body, so a raw-socket test can
check that pipelined responses come back in order; `noread` never reads the body (the server
must skip it); `validated` is a small suite of PEP 3333 behaviours wrapped in
`wsgiref.validate.validator`, so any protocol slip by the server raises an AssertionError
that lands in the ErrorLog.
"""

from __future__ import annotations

import hashlib
from wsgiref.validate import validator


def probe(environ, start_response):
    """Body: `METHOD REQUEST_URI SERVER_PROTOCOL\\n` followed by the request body read whole."""
    data = environ["wsgi.input"].read()
    line = f"{environ['REQUEST_METHOD']} {environ['REQUEST_URI']} {environ['SERVER_PROTOCOL']}\n"
    body = line.encode("latin-1") + data
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def noread(environ, start_response):
    """Answers without touching wsgi.input: the server discards the unread body itself."""
    body = f"{environ['REQUEST_METHOD']} {environ['REQUEST_URI']}\n".encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _suite(environ, start_response):
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/get":
        body = f"query={environ['QUERY_STRING']}".encode()
        start_response("200 OK", [*text, ("Content-Length", str(len(body)))])
        return [body]
    if path == "/post":
        stream = environ["wsgi.input"]
        parts = []
        while True:  # small reads: exercises the streaming body and the validator's wrapper
            piece = stream.read(7)
            if not piece:
                break
            parts.append(piece)
        body = b"".join(parts)
        digest = hashlib.sha256(body).hexdigest()
        reply = f"len={len(body)} sha256={digest}\n".encode()
        start_response("200 OK", [*text, ("Content-Length", str(len(reply)))])
        return [reply]
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        body = f"{len(lines)} lines\n".encode()
        start_response("200 OK", [*text, ("Content-Length", str(len(body)))])
        return [body]
    if path == "/stream":
        count = int(environ["QUERY_STRING"] or "5")
        start_response("200 OK", text)
        return (f"part {i}\n".encode() for i in range(count))
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written first\n")
        return [b"then returned\n"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        # This module's own source: a real file, so the server can sendfile() it.
        return environ["wsgi.file_wrapper"](open(__file__, "rb"), 4096)
    if path == "/crash":
        raise RuntimeError("e2e crash on purpose: SECRET-TRACEBACK-MARKER")
    if path == "/crash-late":

        def late():
            yield b"first part\n"
            raise RuntimeError("e2e late crash on purpose")

        start_response("200 OK", text)
        return late()
    start_response("404 Not Found", [*text, ("Content-Length", "9")])
    return [b"not found"]


validated = validator(_suite)
unvalidated = _suite  # the same, without the validator's wrapper (which hides file_wrapper)
