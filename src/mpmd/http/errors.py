"""HttpError: the one exception the protocol layer raises for anything a client sent wrong."""

from __future__ import annotations

from http import HTTPStatus


class HttpError(Exception):
    """A protocol violation answered with `status`; the connection is closed afterwards.

    `log_message` is what goes to the ErrorLog (with Apache's AH id where one exists);
    the client only ever sees the status and a short standard body.
    """

    def __init__(self, status: int, log_message: str = "") -> None:
        super().__init__(log_message or HTTPStatus(status).phrase)
        self.status = status
        self.log_message = log_message or HTTPStatus(status).phrase
