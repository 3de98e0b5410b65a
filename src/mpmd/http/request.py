"""Request: one parsed request head plus the stream its body is read from."""

from __future__ import annotations

from typing import Protocol


class RequestBody(Protocol):
    """The request body as the handler reads it (it is `wsgi.input`).

    Bounded: reading past the end (Content-Length or the last chunk) returns b"".
    Raises HttpError (400/408/413) for bad framing, a timeout or LimitRequestBody.
    """

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...

    def readlines(self, hint: int = -1, /) -> list[bytes]: ...

    def __iter__(self): ...


class Request:
    """One request head. Header names are lower-case str (latin-1), in arrival order."""

    __slots__ = (
        "body",
        "client_keep_alive",
        "content_length",
        "expect_continue",
        "head_size",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        body: RequestBody,
        keep_alive: bool,  # (positional too: the parser builds one per request)
        client_keep_alive: bool = False,
        content_length: int | None = None,
        expect_continue: bool = False,
        head_size: int = 0,
        upgrade: bool = False,
    ) -> None:
        self.method = method
        self.target = target  # as sent, latin-1 decoded, not percent-decoded
        path, _, query = target.partition("?")
        self.path = path
        self.query = query
        self.version = version  # "HTTP/1.1"
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive  # the client's wish and the server's policy
        # The client's wish alone (Connection header, version): False when it closes itself.
        self.client_keep_alive = client_keep_alive
        self.content_length = content_length  # None for chunked or no body
        self.expect_continue = expect_continue
        self.head_size = head_size  # bytes of request line + headers (for %I)
        # An HTTP/1.1 request without a body asking to switch protocols (`Connection: upgrade`
        # and `Upgrade`): the bytes after its head wait raw in the protocol until the response
        # decides (HttpProtocol.take_upgraded for a tunnel, else finish_request parses them).
        self.upgrade = upgrade

    def header(self, name: str) -> str | None:
        """First value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target} {self.version}"
