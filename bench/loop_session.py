"""What every loop prototype shares: the WSGI hello app, request -> response bytes, and TLS
over memory BIOs. See bench/loop_prototypes.py."""

from __future__ import annotations

import dataclasses
import ssl
import sys
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote

from bench import protocol_micro
from mpmd.http.errors import HttpError
from mpmd.http.protocol import HttpProtocol
from mpmd.http.request import Request

# The micro-benchmark's limits (Apache's defaults), with the bench's KeepAliveTimeout 30.
SETTINGS = dataclasses.replace(protocol_micro.SETTINGS, keep_alive_timeout=30)
READ_SIZE = 65536
HELLO = b"Hello, World!"


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))])
    return [HELLO]


# -- what every variant shares: a request in, response bytes out ------------------------------


class Responder:
    """Runs the WSGI app for one request (a complete environ) and frames its response."""

    def __init__(self, app: Callable, port: int, scheme: str) -> None:
        self.app = app
        self.base = {
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(port),
            "SCRIPT_NAME": "",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        self._date = ""
        self._date_second = 0

    def __call__(self, request: Request) -> bytes:
        environ = self.base.copy()
        environ["REQUEST_METHOD"] = request.method
        environ["PATH_INFO"] = unquote(request.path, "latin-1")
        environ["QUERY_STRING"] = request.query
        environ["SERVER_PROTOCOL"] = request.version
        environ["wsgi.input"] = request.body
        for name, value in request.headers:
            if name == "content-type":
                key = "CONTENT_TYPE"
            elif name == "content-length":
                key = "CONTENT_LENGTH"
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        started: list = []

        def start_response(status, headers, exc_info=None):
            started[:] = (status, headers)

        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = started
        lines = [f"HTTP/1.1 {status}", f"Date: {self._now()}", "Server: loop-proto"]
        lines += [f"{name}: {value}" for name, value in headers]
        if not request.keep_alive:
            lines.append("Connection: close")
        elif request.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if request.method == "HEAD" else head + body

    def _now(self) -> str:
        second = int(time.time())
        if second != self._date_second:
            self._date = formatdate(second, usegmt=True)
            self._date_second = second
        return self._date


def error_response(error: HttpError) -> bytes:
    phrase = HTTPStatus(error.status).phrase
    return f"HTTP/1.1 {error.status} {phrase}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


class Session:
    """One connection's request stream for the inline variants: bytes in, responses out."""

    __slots__ = ("pending", "protocol", "respond")

    def __init__(self, respond: Responder) -> None:
        self.protocol = HttpProtocol(SETTINGS)
        self.respond = respond
        self.pending: Request | None = None  # a head whose body is still arriving

    def receive(self, data: bytes) -> tuple[bytes, bool]:
        """Feed what arrived (b"" = EOF); the responses now due, and whether to keep going."""
        protocol = self.protocol
        protocol.feed(data)
        out = b""
        while True:
            request = self.pending
            if request is None:
                try:
                    request = protocol.next_request()
                except HttpError as error:
                    return out + error_response(error), False
                if request is None:
                    return out, not protocol.eof
            if not protocol.body_complete(request):
                self.pending = request
                return out, True
            self.pending = None
            out += self.respond(request)
            if not protocol.finish_request(request):
                return out, False


class TlsBio:
    """TLS without a socket (ssl.SSLObject over two MemoryBIOs), for the epoll loop."""

    __slots__ = ("incoming", "obj", "outgoing", "ready")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.ready = False

    def receive(self, data: bytes) -> bytes | None:
        """Plaintext from wire bytes (b"" while handshaking); None = close."""
        if not data:
            return None
        self.incoming.write(data)
        obj = self.obj
        if not self.ready:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            except ssl.SSLError:
                return None
            self.ready = True
        chunks = []
        try:
            while chunk := obj.read(READ_SIZE):
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:  # close_notify or a broken record
            return None
        return b"".join(chunks)

    def send(self, plaintext: bytes) -> bytes:
        if plaintext:
            self.obj.write(plaintext)
        return self.outgoing.read()
