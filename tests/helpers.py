"""Builders the unit tests share: configuration, requests, exchanges, a fake error log, parsing.

This module owns the test doubles that stand in for the network and the real logs, so the
protocol, router, static, WSGI and access-log tests build the same objects the same way. It
must never start a process or open a socket (tests/server.py does that for integration tests),
and it holds no assertions about mpmd's behaviour beyond checking the bytes it parses are
well-formed HTTP.
"""

from __future__ import annotations

import dataclasses
import io
import os
import traceback
from collections.abc import Callable
from typing import Any

from mpmd.config.model import (
    HttpSettings,
    MpmSettings,
    ReadTimeoutStage,
    ServerConfig,
    VirtualHost,
)
from mpmd.handlers.router import Router
from mpmd.http.errors import HttpError
from mpmd.http.exchange import ConnectionInfo, Exchange
from mpmd.http.request import Request

# -- configuration ------------------------------------------------------------------------------

# Apache's defaults (Timeout 60, KeepAlive On, LimitRequestBody 1 GiB, RequestReadTimeout ...).
DEFAULT_SETTINGS = HttpSettings(
    timeout=60,
    keep_alive=True,
    keep_alive_timeout=5,
    max_keep_alive_requests=100,
    limit_request_line=8190,
    limit_request_field_size=8190,
    limit_request_fields=100,
    limit_request_body=1073741824,
    header_read_timeout=ReadTimeoutStage(20, 40, 500),
    body_read_timeout=ReadTimeoutStage(20, 0, 500),
)


def make_vhost(**changes: Any) -> VirtualHost:
    """A `localhost:80` server with FollowSymLinks; `changes` replace any field."""
    base = VirtualHost(
        addresses=(),
        server_name="localhost",
        server_aliases=(),
        server_admin="admin@localhost",
        port=80,
        document_root="/nonexistent-docroot",
        directory_index=("index.html",),
        options=frozenset({"FollowSymLinks"}),
        aliases=(),
        wsgi_mounts=(),
        locations=(),
        directories=(),
        http=DEFAULT_SETTINGS,
        access_logs=(),
        error_log="stderr",
        log_level="warn",
        source="(test)",
    )
    return dataclasses.replace(base, **changes)


def make_config(
    main: VirtualHost | None = None, vhosts: tuple[VirtualHost, ...] = ()
) -> ServerConfig:
    """An event-MPM ServerConfig around `main` (default make_vhost()) and `vhosts`."""
    mpm = MpmSettings("event", 3, 5, 10, 75, 250, 25, 64, 16, 400, 0, 2.0, 0, 511, 0)
    return ServerConfig(
        config_file="",
        server_root="/",
        mpm=mpm,
        listeners=(),
        pid_file="",
        user=None,
        group=None,
        main=main or make_vhost(),
        vhosts=vhosts,
        extended_status=False,
        buffered_logs=False,
        wsgi_python_path=(),
        wsgi_preload=False,
        modules=(),
        defines=frozenset(),
        warnings=(),
    )


# -- fakes for the I/O layer and the error log --------------------------------------------------


class FakeErrorLog:
    """The error_log interface the handlers use, keeping every line for assertions."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []
        self.stream = io.StringIO()

    def log(self, level: str, message: str, *, module="core", ah=None, client=None) -> None:
        self.lines.append((level, message, {"module": module, "ah": ah, "client": client}))

    def exception(self, message: str, *, client=None) -> None:
        self.lines.append(("error", message + "\n" + traceback.format_exc(), {"client": client}))

    def enabled(self, level: str) -> bool:
        return True

    def text(self) -> str:
        return "\n".join(message for _, message, _ in self.lines)


class BytesBody:
    """A RequestBody over bytes: bounded, optionally raising an HttpError after `fail_after`."""

    def __init__(self, data: bytes = b"", fail_after: int | None = None, status: int = 413):
        self._io = io.BytesIO(data)
        self._fail_after = fail_after
        self._status = status

    def _check(self) -> None:
        if self._fail_after is not None and self._io.tell() >= self._fail_after:
            raise HttpError(self._status, "AH01591: Read content-length exceeds the limit")

    def read(self, size: int = -1, /) -> bytes:
        self._check()
        return self._io.read(size)

    def readline(self, size: int = -1, /) -> bytes:
        self._check()
        return self._io.readline(size)

    def readlines(self, hint: int = -1, /) -> list[bytes]:
        return self._io.readlines(hint)

    def __iter__(self):
        return iter(self._io)


class Sink:
    """Collects what the exchange sends; sendfile reads the file as the I/O layer would."""

    def __init__(self, fail_after_sends: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.sendfile_calls: list[tuple[int, int]] = []
        self.fail_after_sends = fail_after_sends

    def send(self, data: bytes) -> None:
        if self.fail_after_sends is not None and len(self.chunks) >= self.fail_after_sends:
            raise BrokenPipeError(32, "Broken pipe")
        self.chunks.append(data)

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        self.sendfile_calls.append((offset, count))
        self.chunks.append(os.pread(fd, count, offset))

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


# -- requests and exchanges ---------------------------------------------------------------------


def make_request(
    method: str = "GET",
    target: str = "/",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | BytesBody = b"",
    *,
    version: str = "HTTP/1.1",
    chunked: bool = False,
) -> Request:
    """A parsed Request; a bytes body gets its Content-Length header unless `chunked`."""
    headers = list(headers if headers is not None else [("host", "example.com")])
    stream = body if isinstance(body, BytesBody) else BytesBody(body)
    length = None
    if isinstance(body, bytes) and body and not chunked:
        length = len(body)
        headers.append(("content-length", str(length)))
    if chunked:
        headers.append(("transfer-encoding", "chunked"))
    return Request(method, target, version, headers, stream, keep_alive=True, content_length=length)


def make_exchange(
    request: Request, vhost: Any = None, *, sink: Sink | None = None, client: str = "10.0.0.7"
) -> tuple[Exchange, Sink]:
    """An Exchange from `client`:50123 to 10.0.0.1:8080 whose output lands in a Sink."""
    sink = sink or Sink()
    conn = ConnectionInfo(client, 50123, "10.0.0.1", 8080, multithread=True, multiprocess=True)
    return Exchange(request, conn, vhost, sink.send, sink.sendfile), sink


# -- responses ------------------------------------------------------------------------------------


class Response:
    """A response parsed back from the bytes an exchange sent."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def parse_response(data: bytes, *, head_only: bool = False) -> Response:
    """One HTTP/1.x response from bytes: Content-Length, chunked or close-delimited body."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    response = Response(status, headers, b"")  # type: ignore[arg-type]
    if head_only:
        assert rest == b"", "a HEAD/304 response must not carry a body"
        return response
    length = response.header("content-length")
    if length is not None:
        assert len(rest) == int(length), (len(rest), length)
        response.body = rest
    elif response.header("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                assert rest == b"\r\n"
                break
            body += rest[:size]
            assert rest[size : size + 2] == b"\r\n"
            rest = rest[size + 2 :]
        response.body = body
    else:
        response.body = rest
    return response


# -- the router -----------------------------------------------------------------------------------


def route(router: Router, method: str = "GET", target: str = "/", *, host="localhost", port=80,
          client="10.0.0.7", headers=None, body=b""):  # fmt: skip
    """Run one request through the router; returns (response, exchange)."""
    request = make_request(method, target, headers or [("host", host)], body)
    vhost = router.select_vhost(host, port)
    exchange, sink = make_exchange(request, vhost, client=client)
    router.handle(exchange)
    if exchange.status:
        exchange.finish()
    return parse_response(sink.data, head_only=method == "HEAD" or exchange.status == 304), exchange


def recording_app(label: str, calls: list) -> Callable:
    """A WSGI app that records (label, SCRIPT_NAME, PATH_INFO) and answers `label`."""

    def app(environ, start_response):
        calls.append((label, environ["SCRIPT_NAME"], environ["PATH_INFO"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [label.encode()]

    return app
