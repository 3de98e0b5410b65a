"""Access logs: the CustomLog writer and BufferedLogs.

This module owns writing the lines logs/logformat.py's compiled formats produce, and
BufferedLogs; the files and `|program`s it writes to are logs/targets.py's. It must never split
a line across two `write()` calls: every line (or every PIPE_BUF-sized batch of whole lines)
goes out in one `os.write`, so many processes can append to one file without interleaving.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref

from mpmd.http.exchange import Exchange
from mpmd.logs.error import ErrorLog, errno_text
from mpmd.logs.logformat import compile_condition, compile_format
from mpmd.logs.targets import open_log_target

PIPE_BUF = 4096  # Linux: the largest write the kernel keeps whole on a pipe; BufferedLogs size
FLUSH_INTERVAL = 0.5  # BufferedLogs: checked this often, so no line waits more than a second


def _after_fork_in_child() -> None:
    for log in list(_open_access_logs):
        log._discard_inherited_buffer()


_open_access_logs: weakref.WeakSet[AccessLog] = weakref.WeakSet()
os.register_at_fork(after_in_child=_after_fork_in_child)


def flush_access_logs() -> None:
    """Write out every buffered line of this process: called on every way a child ends, from
    its exit path and from its TERM handler (the main thread; the locks are reentrant)."""
    for log in list(_open_access_logs):
        log.flush()


def start_flush_thread() -> None:
    """BufferedLogs: a daemon thread writes out any line older than FLUSH_INTERVAL, so a line
    never waits more than a second for traffic to fill the buffer (`tail -f` works)."""

    def run() -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            now = time.monotonic()
            for log in list(_open_access_logs):
                log.flush_if_due(now, FLUSH_INTERVAL)

    threading.Thread(target=run, name="mpmd-log-flush", daemon=True).start()


# -- CustomLog -----------------------------------------------------------------------------


class AccessLog:
    """One CustomLog: format compiled once, lines appended with one write each (or batched).

    Thread-safe: worker and event threads share one AccessLog per child.
    """

    def __init__(
        self,
        target: str,
        fmt: str,
        *,
        buffered: bool,
        condition: str | None = None,
        error_log: ErrorLog | None = None,
    ) -> None:
        self.target = target
        self.format = compile_format(fmt, "\n")
        self.condition = compile_condition(condition)
        self.buffered = buffered
        self._error_log = error_log
        self._sink = open_log_target(target)
        self._buffer: list[bytes] = []
        self._buffered_bytes = 0
        self._last_flush = time.monotonic()
        # Reentrant: a child's TERM handler flushes in the main thread, which may hold it.
        self._lock = threading.RLock()
        _open_access_logs.add(self)

    def log(self, exchange: Exchange, end_time: float) -> None:
        """Format and write the line for one finished exchange."""
        if self.condition is not None and not self.condition(exchange):
            return
        line = self.format(exchange, end_time)
        try:
            data = line.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = line.encode("utf-8", "backslashreplace")
        if not self.buffered:
            try:  # _write() inlined: this is every request's path
                self._sink.write(data)
            except OSError as err:
                self._report(err)
            return
        with self._lock:
            if self._buffered_bytes + len(data) > PIPE_BUF:
                self._flush_locked()
            if len(data) >= PIPE_BUF:
                self._write(data)
            else:
                self._buffer.append(data)
                self._buffered_bytes += len(data)

    def flush(self) -> None:
        """Write out buffered lines (one write)."""
        with self._lock:
            self._flush_locked()

    def flush_if_due(self, now: float, interval: float = 1.0) -> None:
        """Called from the worker loop's tick (monotonic `now`): flush if `interval` passed."""
        if self._buffered_bytes and now - self._last_flush >= interval:
            self.flush()

    def reopen(self) -> None:
        """Graceful restart / logrotate: flush, then open the target again."""
        with self._lock:
            self._flush_locked()
            self._sink.reopen()

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            self._sink.close()
        _open_access_logs.discard(self)

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if self._buffer:
            data = b"".join(self._buffer)
            self._write(data)
            # cleared only once written: a TERM handler interrupting this writes the lines again
            # rather than losing them
            self._buffer.clear()
            self._buffered_bytes = 0

    def _write(self, data: bytes) -> None:
        try:
            self._sink.write(data)
        except OSError as err:
            self._report(err)

    def _report(self, err: OSError) -> None:
        if self._error_log is not None:
            self._error_log.log(
                "error",
                f"Error writing to {self.target}",
                module="log_config",
                ah="AH00646",
                errno_text=errno_text(err),
            )
        else:
            sys.stderr.write(f"AH00646: Error writing to {self.target}: {err}\n")

    def _discard_inherited_buffer(self) -> None:
        """After fork: the parent's pending lines are the parent's to write, not the child's."""
        self._buffer = []
        self._buffered_bytes = 0
        self._lock = threading.RLock()
