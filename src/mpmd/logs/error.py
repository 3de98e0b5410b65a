"""The ErrorLog: Apache's error-log line shape, LogLevel filtering and `wsgi.errors`.

This module owns the line format of reference 2.5,
`[Www Mmm dd hh:mm:ss.uuuuuu yyyy] [module:level] [pid P:tid T] (errno)Text: [client ip:port] AHnnnnn: message`,
the level names (emerg … trace8) and the `[module:]level` syntax of LogLevel. It must never
write a line in two pieces: each call is one `os.write`, so threads and processes sharing the
file never interleave. Callers test `enabled(level)` before building costly messages.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Iterable

from mpmd.logs.targets import (
    LogFile,
    PipedLog,
    StderrTarget,
    SyslogTarget,
    is_syslog,
    open_log_target,
)

LEVELS = (
    "emerg",
    "alert",
    "crit",
    "error",
    "warn",
    "notice",
    "info",
    "debug",
    *(f"trace{n}" for n in range(1, 9)),
)
_RANK = {name: rank for rank, name in enumerate(LEVELS)}
_NOTICE = _RANK["notice"]


def parse_log_level(spec: str) -> tuple[int, dict[str, int]]:
    """`LogLevel info ssl:warn` → (rank of info, {"ssl": rank of warn}); ValueError if bad."""
    default = _RANK["warn"]
    per_module: dict[str, int] = {}
    for word in spec.split():
        module, _, level = word.rpartition(":")
        rank = _RANK.get(level.lower())
        if rank is None:
            raise ValueError(f"LogLevel requires level keyword: one of {'/'.join(LEVELS)}")
        if module:
            per_module[module.removesuffix("_module")] = rank
        else:
            default = rank
    return default, per_module


def errno_text(err: OSError) -> str:
    """`(98)Address already in use`, the way APR prints a status before the message."""
    if err.errno is None:
        return str(err)
    return f"({err.errno}){os.strerror(err.errno)}"


# ap_escape_errorlog_item: like the access log's escaping, but `"` is left alone.
_ESCAPES: dict[int, str] = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0x100))}
_ESCAPES.update({8: "\\b", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v", 0x5C: "\\\\"})


def escape_bytes(text: str, escapes: dict[int, str]) -> str:
    """`text` as one character per byte (a character above 0xff becomes its UTF-8 bytes), each
    byte then replaced through `escapes`: the slow path the access and error logs share."""
    if not text.isascii():
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogateescape").decode("latin-1")
    return text.translate(escapes)


def escape_errorlog_item(text: str) -> str:
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return escape_bytes(text, _ESCAPES)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ctime_cache: tuple[int, str, str] = (-1, "", "")


def _ctime_usec(now: float) -> str:
    """`Thu Nov 26 04:02:28.644944 2026` (local time; the text is rebuilt once a second)."""
    global _ctime_cache
    usec_total = int(now * 1_000_000)
    sec, usec = divmod(usec_total, 1_000_000)
    cached = _ctime_cache
    if cached[0] != sec:
        tm = time.localtime(sec)
        head = (
            f"{_DAYS[tm.tm_wday]} {_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:02d} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}"
        )
        cached = _ctime_cache = (sec, head, f" {tm.tm_year}")
    return f"{cached[1]}.{usec:06d}{cached[2]}"


_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


class ErrorLog:
    """One ErrorLog target with its LogLevel; safe to share between threads and processes."""

    def __init__(self, target: str, level: str = "warn") -> None:
        self.target = target
        self._sink: LogFile | PipedLog | StderrTarget | SyslogTarget
        if target == "stderr":
            self._sink = StderrTarget()
        elif is_syslog(target):
            self._sink = SyslogTarget(target)
        else:
            self._sink = open_log_target(target)
        # syslog stamps its own time, so Apache leaves the date out of syslog lines
        self._syslog = self._sink if isinstance(self._sink, SyslogTarget) else None
        self._level, self._module_levels = parse_log_level(level)
        self._stream: ErrorStream | None = None

    @property
    def level(self) -> str:
        return LEVELS[self._level]

    def enabled(self, level: str, module: str | None = None) -> bool:
        """Would a message at `level` be written? notice always is, as in Apache."""
        rank = _RANK[level]
        if rank == _NOTICE:
            return True
        limit = self._module_levels.get(module, self._level) if module else self._level
        return rank <= limit

    def format_line(
        self,
        level: str,
        message: str,
        *,
        module: str = "core",
        ah: str | None = None,
        client: str | None = None,
        errno_text: str | None = None,
        referer: str | None = None,
        now: float | None = None,
    ) -> str:
        """One line (with its newline) in Apache's default error-log shape."""
        parts = [] if self._syslog else [f"[{_ctime_usec(time.time() if now is None else now)}] "]
        parts.append(f"[{module}:{level}] [pid {_pid[0]}:tid {threading.get_native_id()}] ")
        if errno_text:
            parts.append(f"{errno_text}: ")
        if client:
            parts.append(f"[client {client}] ")
        if ah:
            parts.append(f"{ah}: ")
        parts.append(escape_errorlog_item(message))
        if referer:
            parts.append(f", referer: {escape_errorlog_item(referer)}")
        parts.append("\n")
        return "".join(parts)

    def log(
        self,
        level: str,
        message: str,
        *,
        module: str = "core",
        ah: str | None = None,
        client: str | None = None,
        errno_text: str | None = None,
        referer: str | None = None,
    ) -> None:
        """Write one line if `level` is enabled (for `module`); never raises on a write error."""
        if not self.enabled(level, module):
            return
        line = self.format_line(
            level,
            message,
            module=module,
            ah=ah,
            client=client,
            errno_text=errno_text,
            referer=referer,
        )
        self._write(line, level)

    def exception(
        self,
        message: str,
        *,
        client: str | None = None,
        module: str = "wsgi",
        referer: str | None = None,
    ) -> None:
        """`message` then the current exception's traceback, one error line per traceback line
        (mod_wsgi's shape), all in a single write so they stay together."""
        if not self.enabled("error", module):
            return
        lines = [message]
        exc = sys.exc_info()[1]
        if exc is not None:
            text = "".join(traceback.format_exception(exc))
            lines.extend(text.rstrip("\n").split("\n"))
        now = time.time()
        self._write(
            "".join(
                self.format_line(
                    "error", line, module=module, client=client, referer=referer, now=now
                )
                for line in lines
            )
        )

    @property
    def stream(self) -> ErrorStream:
        """A shared `wsgi.errors`-style stream with no client; see stream_for()."""
        if self._stream is None:
            self._stream = ErrorStream(self)
        return self._stream

    def stream_for(self, client: str | None = None, referer: str | None = None) -> ErrorStream:
        """A per-request `wsgi.errors` whose lines carry `[client ip:port]`, as mod_wsgi."""
        return ErrorStream(self, client, referer)

    def reopen(self) -> None:
        """Graceful restart / logrotate: open the target again onto the same fd."""
        self._sink.reopen()

    def capture_output(self) -> None:
        """Point fds 2 and 1 at this log, as Apache does for stderr and mod_wsgi for an app's
        stdout, so print(), stray writes, a dying thread's traceback and C libraries' output land
        in the ErrorLog (not in /dev/null once detached). Call again after reopen()."""
        sys.stdout.flush()
        sys.stderr.flush()
        fd = self._sink.fd
        if fd == -1:  # syslog has no fd: stdout and stderr stay where they are
            return
        if fd != 2:
            os.dup2(fd, 2)
        os.dup2(fd, 1)

    def close(self) -> None:
        self._sink.close()

    def _write(self, line: str, level: str = "error") -> None:
        try:
            if self._syslog is not None:
                self._syslog.send(_RANK[level], line)
                return
            self._sink.write(line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass  # nowhere left to report it; Apache drops the line too


class ErrorStream:
    """`wsgi.errors`: text written here becomes `[wsgi:error]` lines, one per newline.

    A partial line waits for its newline or for flush(), as mod_wsgi's Log object does.
    """

    __slots__ = ("_client", "_lock", "_log", "_pending", "_referer")

    def __init__(
        self, log: ErrorLog, client: str | None = None, referer: str | None = None
    ) -> None:
        self._log = log
        self._client = client
        self._referer = referer
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors.write() argument must be str, not {type(text).__name__}")
        written = len(text)
        with self._lock:
            text = self._pending + text
            complete, _, self._pending = text.rpartition("\n")
        if complete:
            self._emit(complete.split("\n"))
        return written

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, ""
        if pending:
            self._emit([pending])

    def close(self) -> None:
        self.flush()

    def _emit(self, lines: list[str]) -> None:
        log = self._log
        if not log.enabled("error", "wsgi"):
            return
        now = time.time()
        log._write(
            "".join(
                log.format_line(
                    "error",
                    line,
                    module="wsgi",
                    client=self._client,
                    referer=self._referer,
                    now=now,
                )
                for line in lines
            )
        )
