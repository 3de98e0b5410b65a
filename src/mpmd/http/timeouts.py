"""How long a read may wait: RequestReadTimeout (mod_reqtimeout), Timeout and KeepAliveTimeout.

The one policy both I/O paths follow, the blocking MPMs' threads and the event loop alike:
`first_byte_wait()` says how long to wait for a request's first byte, `start_stage()` starts
a stage's clock, `read_wait()` bounds each read by it and by Timeout, and `read_timeout()`
names what an expiry produces (a 408, a logged close or a silent one). The I/O layer asks the protocol which stage it is in
(`HttpProtocol.read_stage()`) and carries the outcome out. Owns the arithmetic only: every
function takes `now` from the caller, so nothing here reads a clock, sleeps or touches a
socket.
"""

from __future__ import annotations

from mpmd.config.model import HttpSettings, ReadTimeoutStage
from mpmd.http.errors import HttpError

# What the connection is waiting for when it reads from the socket.
IDLE = "idle"  # nothing of the next request yet: KeepAliveTimeout (or, first request, header)
REQUEST_LINE = "request_line"  # some bytes, request line incomplete: header stage
HEADERS = "headers"  # request line complete, headers incomplete: header stage
BODY = "body"  # head handed out, body incomplete: body stage


def expiry_status(stage: str) -> int | None:
    """What a read timeout in `stage` produces: 408, or None for a silent close (reference 8.2).

    Apache answers 408 to partial headers and partial bodies, and closes without a response
    while the request line is incomplete or nothing was received.
    """
    if stage in (HEADERS, BODY):
        return 408
    return None


def read_timeout(
    stage: str, first_request: bool, request_line: str | None = None
) -> tuple[HttpError | None, bool]:
    """What a read timeout in `stage` produces: (the error to log, whether it is answered).

    A 408 for partial headers or a partial body (answered, with AH01382 in the ErrorLog); a
    partial first request line is closed without a response but logged as `"-" 408 -`
    (reference 8.1); anything else is a silent close, (None, False)."""
    if expiry_status(stage) == 408:
        what = "body" if stage == BODY else "header"
        return HttpError(
            408, f"AH01382: Request {what} read timeout", request_line=request_line
        ), True
    if stage == REQUEST_LINE and first_request:
        return HttpError(408, "AH01382: Request header read timeout"), False
    return None, False


def first_byte_wait(settings: HttpSettings, first_request: bool) -> float:
    """How long to wait for the first byte of a request: KeepAliveTimeout between requests;
    for the connection's first, the header stage's timeout (as behind TCP_DEFER_ACCEPT, its
    clock starts only with that byte), never more than Timeout."""
    if not first_request:
        return settings.keep_alive_timeout
    header = settings.header_read_timeout.timeout
    return min(header, settings.timeout) if header else settings.timeout


def start_stage(settings: HttpSettings, stage: str, now: float) -> ReadDeadline:
    """The clock of the header stage (REQUEST_LINE, HEADERS) or of BODY, started at `now`."""
    deadline = ReadDeadline(
        settings.body_read_timeout if stage == BODY else settings.header_read_timeout
    )
    deadline.start(now)
    return deadline


def read_wait(settings: HttpSettings, deadline: ReadDeadline | None, now: float) -> float:
    """How long the next read may wait: Timeout, or less when the stage's deadline is nearer
    (0.0 once it passed)."""
    remaining = None if deadline is None else deadline.remaining(now)
    return settings.timeout if remaining is None else min(remaining, settings.timeout)


class ReadDeadline:
    """One mod_reqtimeout stage: deadline = start + timeout, extended by bytes/MinRate up to max.

    As in Apache, a stage with MinRate but no max keeps extending (the default
    `body=20,MinRate=500`); a stage without MinRate never moves; timeout 0 disables the stage
    (remaining() is then None: only Timeout bounds each read).
    """

    __slots__ = ("_max_timeout", "_seconds_per_byte", "_timeout", "deadline", "hard")

    def __init__(self, stage: ReadTimeoutStage) -> None:
        self._timeout = float(stage.timeout)
        self._max_timeout = float(stage.max_timeout)
        self._seconds_per_byte = 1.0 / stage.min_rate if stage.min_rate > 0 else 0.0
        self.deadline: float | None = None
        self.hard: float | None = None

    @property
    def enabled(self) -> bool:
        return self._timeout > 0

    def start(self, now: float) -> None:
        """Begin the stage (the first byte of the head arrived, or the body is awaited)."""
        if self._timeout <= 0:
            self.deadline = self.hard = None
            return
        self.deadline = now + self._timeout
        self.hard = now + self._max_timeout if self._max_timeout > 0 else None

    def on_bytes(self, count: int, now: float) -> None:
        """`count` bytes arrived: extend by count/MinRate, never past the hard limit."""
        deadline = self.deadline
        if deadline is None or self._seconds_per_byte == 0.0 or count <= 0:
            return
        if now >= deadline:
            return  # already expired: bytes after the deadline do not revive the stage
        deadline += count * self._seconds_per_byte
        hard = self.hard
        if hard is not None and deadline > hard:
            deadline = hard
        self.deadline = deadline

    def remaining(self, now: float) -> float | None:
        """Seconds left (0.0 when expired), or None when the stage is disabled or not started."""
        deadline = self.deadline
        if deadline is None:
            return None
        left = deadline - now
        return left if left > 0.0 else 0.0

    def expired(self, now: float) -> bool:
        deadline = self.deadline
        return deadline is not None and now >= deadline
