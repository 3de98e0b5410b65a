"""WSGI through the real server: a `wsgiref.validate` app and a Flask app over HTTP.

The validator raises AssertionError (and warns) at the first PEP 3333 slip by the server,
so every test here also checks the ErrorLog for validator errors. Bodies go up sized and
chunked; responses come back sized, streamed (chunked for 1.1, close-delimited for 1.0),
via write() and via wsgi.file_wrapper; an exception is a 500 with the traceback in the
ErrorLog and never in the response, and the worker serves the next request.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from server import APPS, Server, call
from test_e2e_http import Wire

FILE_BYTES = (APPS / "e2eapp.py").read_bytes()  # /file serves the app's own source
CONFIG = """\
WSGIApp /v e2eapp:validated
WSGIApp /raw e2eapp:unvalidated
WSGIApp /flask e2e_flaskapp:app
StartServers 1
MinSpareThreads 1
MaxSpareThreads 8
ThreadsPerChild 4
"""
MODES = {"X": ("-X",), "worker": ("--mpm", "worker")}


@pytest.fixture(scope="module", params=list(MODES))
def server(request, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("wsgi"), CONFIG, args=MODES[request.param])
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
    log = srv.log_text()
    assert "AssertionError" not in log and "WSGIWarning" not in log, log


def no_validator_errors(server: Server) -> None:
    log = server.log_text()
    assert "AssertionError" not in log, log
    assert "WSGIWarning" not in log, log


def test_get(server: Server) -> None:
    status, headers, body = call(server, "GET", "/v/get?a=1&b=%20")
    assert (status, body) == (200, b"query=a=1&b=%20")
    assert headers["Content-Length"] == str(len(body))
    no_validator_errors(server)


def test_post_sized_body_read_in_small_pieces(server: Server) -> None:
    data = os.urandom(200_000)
    status, _, body = call(server, "POST", "/v/post", body=data)
    assert status == 200
    assert body == f"len={len(data)} sha256={hashlib.sha256(data).hexdigest()}\n".encode()
    no_validator_errors(server)


def test_post_chunked_body(server: Server) -> None:
    pieces = [os.urandom(n) for n in (1, 1000, 70_000, 3)]
    data = b"".join(pieces)
    status, _, body = call(server, "POST", "/v/post", body=iter(pieces), encode_chunked=True)
    assert status == 200
    assert body == f"len={len(data)} sha256={hashlib.sha256(data).hexdigest()}\n".encode()
    status, _, body = call(
        server, "POST", "/v/lines", body=iter([b"a\nb", b"\nc\n", b"d"]), encode_chunked=True
    )
    assert (status, body) == (200, b"4 lines\n")
    no_validator_errors(server)


def test_streaming_response_is_chunked_for_http11_and_close_delimited_for_http10(
    server: Server,
) -> None:
    expected = b"".join(f"part {i}\n".encode() for i in range(7))
    wire = Wire.connect(server.port)
    try:
        wire.send(b"GET /v/stream?7 HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = wire.response()
        assert (resp.status, resp.chunked, resp.body) == (200, True, expected)
        assert resp.header("content-length") is None and not resp.closes
    finally:
        wire.close()
    wire = Wire.connect(server.port)
    try:
        wire.send(b"GET /v/stream?7 HTTP/1.0\r\n\r\n")
        resp = wire.response()  # no length, no chunking: the body ends at close
        assert (resp.status, resp.chunked, resp.body) == (200, False, expected)
        assert resp.header("content-length") is None and resp.header("transfer-encoding") is None
    finally:
        wire.close()
    no_validator_errors(server)


def test_write_callable(server: Server) -> None:
    status, _, body = call(server, "GET", "/v/write")
    assert (status, body) == (200, b"written first\nthen returned\n")
    no_validator_errors(server)


def test_file_wrapper(server: Server) -> None:
    """Validated, the wrapper is iterated (chunked); bare, it is sent with sendfile."""
    status, headers, body = call(server, "GET", "/v/file")
    assert status == 200 and body == FILE_BYTES
    status, headers, body = call(server, "HEAD", "/v/file")
    assert (status, body) == (200, b"")
    status, headers, body = call(server, "GET", "/raw/file")
    assert status == 200 and body == FILE_BYTES
    assert headers["Content-Length"] == str(len(FILE_BYTES))
    no_validator_errors(server)


def test_exception_is_500_with_traceback_in_error_log_only(server: Server) -> None:
    status, headers, body = call(server, "GET", "/v/crash")
    assert status == 500
    assert b"SECRET-TRACEBACK-MARKER" not in body and b"Traceback" not in body
    assert headers["Connection"] == "close"
    log = server.log_text()
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: e2e crash on purpose: SECRET-TRACEBACK-MARKER" in log
    assert call(server, "GET", "/v/get?after")[2] == b"query=after"  # the worker lives on
    no_validator_errors(server)


def test_exception_after_headers_closes_the_connection(server: Server) -> None:
    wire = Wire.connect(server.port)
    try:
        wire.send(b"GET /v/crash-late HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(EOFError):
            wire.response()  # the chunked body never gets its last chunk
    finally:
        wire.close()
    assert "e2e late crash on purpose" in server.log_text()
    assert call(server, "GET", "/v/get?after")[0] == 200


def test_flask_routes(server: Server) -> None:
    assert call(server, "GET", "/flask/")[::2] == (200, b"flask index")
    status, _, body = call(server, "GET", "/flask/user/ann%C3%A9e")
    assert status == 200
    assert json.loads(body) == {
        "name": "année",
        "script_root": "/flask",
        "path": "/user/année",
    }
    status, _, body = call(
        server,
        "POST",
        "/flask/echo",
        body=b"a=1&b=two",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, json.loads(body)) == (200, {"form": {"a": "1", "b": "two"}, "size": 9})
    status, _, body = call(
        server, "POST", "/flask/echo", body=b'{"k": [1, 2]}',
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert json.loads(body) == {"received": {"k": [1, 2]}}
    status, headers, _ = call(server, "GET", "/flask/go")
    assert status == 302 and headers["Location"].endswith("/flask/user/redirected")
    assert call(server, "GET", "/flask/missing")[0] == 404
    assert call(server, "GET", "/flask/fail")[0] == 500  # Flask answers it itself
    assert call(server, "GET", "/flask/")[0] == 200
