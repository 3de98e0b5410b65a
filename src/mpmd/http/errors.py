"""HttpError: the one exception the protocol layer raises for anything a client sent wrong."""

from __future__ import annotations

from http import HTTPStatus


class HttpError(Exception):
    """A protocol violation answered with `status`.

    `log_message` is what goes to the ErrorLog (with Apache's AH id where one exists);
    the client only ever sees the status and a short standard body.

    `keep_alive` is False for every error that leaves the byte stream untrustworthy: the
    I/O layer sends the error with `Connection: close` and closes. It is True only where
    Apache keeps the connection (417 for a request without a body). `request_line` is the
    request line as received when it was parsed far enough (for %r in the access log).
    """

    def __init__(
        self,
        status: int,
        log_message: str = "",
        *,
        keep_alive: bool = False,
        request_line: str | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(log_message or HTTPStatus(status).phrase)
        self.detail = detail  # the error document's text where Apache words one (TLS's)
        self.status = status
        self.log_message = log_message or HTTPStatus(status).phrase
        self.keep_alive = keep_alive
        self.request_line = request_line
