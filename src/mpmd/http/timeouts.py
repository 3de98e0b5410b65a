"""Read deadlines for RequestReadTimeout (mod_reqtimeout) and the read stages they apply to.

Owns the arithmetic only: every function takes `now` from the caller (time.monotonic() in the
I/O layer), so nothing here reads a clock, sleeps or touches a socket. The I/O layer asks the
protocol which stage it is in (`HttpProtocol.read_stage()`), picks the timeout for it
(KeepAliveTimeout while idle between requests, a ReadDeadline otherwise) and turns expiry
into the outcome `expiry_status()` names: 408, or a silent close.
"""

from __future__ import annotations

from mpmd.config.model import ReadTimeoutStage

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
