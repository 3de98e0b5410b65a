"""Log targets: where the access and error logs' bytes go (a file, a `|program`, stderr, syslog).

This module owns opening a log target the way Apache does (a file O_APPEND with mode 0666 less
umask, or a piped logger it restarts), reopening it onto the same fd on restart or logrotate,
and `write_all`. It must never split the bytes of one write() call in two: every call is one
`os.write` (looping only on a short write), so processes sharing an fd never interleave lines.
It knows nothing of log formats.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import syslog

# Apache's facility names for `ErrorLog syslog:facility` (log.c's table).
SYSLOG_FACILITIES = ("auth", "authpriv", "cron", "daemon", "ftp", "kern", "local0", "local1",
                     "local2", "local3", "local4", "local5", "local6", "local7", "lpr", "mail",
                     "news", "syslog", "user", "uucp")  # fmt: skip


def write_all(fd: int, data: bytes) -> None:
    """One os.write; loop only if the kernel took part of it (disk full, signal)."""
    written = os.write(fd, data)
    while written < len(data):
        data = data[written:]
        written = os.write(fd, data)


class LogFile:
    """A log file opened O_WRONLY|O_APPEND|O_CREAT (mode 0666 less umask, as APR_OS_DEFAULT)."""

    def __init__(self, path: str) -> None:
        self.target = path
        inherited = _opened_by_parent.get(path)
        if inherited is not None:  # a copy of the parent's fd: it opened the file as root
            self.fd = os.dup(inherited.fd)
            os.set_inheritable(self.fd, False)
            return
        # Forked MPM children share this fd; close-on-exec keeps it out of exec'd programs.
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def write(self, data: bytes) -> None:
        write_all(self.fd, data)

    def reopen(self) -> None:
        """Open the path again (after logrotate renamed it) onto the same fd number."""
        new_fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            # dup2 is atomic: a concurrent writer never sees a closed fd
            os.dup2(new_fd, self.fd, inheritable=False)
        finally:
            os.close(new_fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PipedLog:
    """`|program` (run directly) or `|$command` (via /bin/sh -c) reading log lines on stdin.

    The process that started the program restarts it if it died; other processes (MPM
    children) drop the line, as the parent will restart the program.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        command = target[2:] if target.startswith("||") else target[1:]
        if command.startswith("$"):
            self.argv = ["/bin/sh", "-c", command[1:]]
        else:
            self.argv = shlex.split(command)
        if not self.argv:
            raise ValueError(f"no program given for piped log {target!r}")
        self.fd = -1
        self._proc: subprocess.Popen[bytes] | None = None
        self._start()

    def _start(self) -> None:
        proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, close_fds=True)
        assert proc.stdin is not None
        if self.fd < 0:
            self.fd = os.dup(proc.stdin.fileno())
        else:
            # keep the fd number forked children share
            os.dup2(proc.stdin.fileno(), self.fd, inheritable=False)
        proc.stdin.close()
        self._proc = proc
        self._owner = os.getpid()

    def write(self, data: bytes) -> None:
        try:
            write_all(self.fd, data)
        except BrokenPipeError:
            if os.getpid() != self._owner:
                raise
            dead = self._proc
            self._start()
            self._retire(dead)
            write_all(self.fd, data)

    def _retire(self, proc: subprocess.Popen[bytes] | None) -> None:
        """Let a program whose stdin we closed finish its input, then make sure it is gone.

        MPM children may still hold the pipe open, so EOF is not guaranteed: after a grace
        period the program gets SIGTERM, as Apache sends on restart.
        """
        if proc is None or os.getpid() != self._owner:
            return
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def reopen(self) -> None:
        """Apache restarts piped loggers on every restart: start a new program, retire the old."""
        old = self._proc
        self._start()  # dup2 onto our fd closes this process's end of the old pipe
        self._retire(old)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # EOF on the program's stdin lets it finish its work
            self.fd = -1
        self._retire(self._proc)
        self._proc = None


class StderrTarget:
    """The process's standard error (fd 2); never closed or reopened by the log."""

    fd = 2
    target = "stderr"

    def write(self, data: bytes) -> None:
        write_all(2, data)

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        pass


def is_syslog(target: str) -> bool:
    """Apache treats any ErrorLog starting with `syslog` (any case) as syslog."""
    return target[:6].lower() == "syslog"


def parse_syslog(target: str) -> tuple[str, str]:
    """`syslog[:facility[:tag]]` → (facility, tag); local7 and "mpmd" by default, as Apache's
    (with its program name). ValueError for a facility syslog(3) does not have."""
    _, _, rest = target.partition(":")
    facility, _, tag = rest.partition(":")
    facility = facility.lower() or "local7"
    if facility not in SYSLOG_FACILITIES:
        raise ValueError(f"unknown syslog facility '{facility}' (one of "
                         f"{', '.join(SYSLOG_FACILITIES)})")  # fmt: skip
    return facility, tag or "mpmd"


class SyslogTarget:
    """`ErrorLog syslog[:facility[:tag]]`: each line goes to syslog(3) at its level's priority
    (emerg … debug map one to one; trace levels are debug). There is no fd to share or reopen."""

    fd = -1

    def __init__(self, target: str) -> None:
        self.target = target
        facility, tag = parse_syslog(target)
        syslog.openlog(tag, syslog.LOG_PID | syslog.LOG_NDELAY,
                       getattr(syslog, f"LOG_{facility.upper()}"))  # fmt: skip

    def send(self, priority: int, text: str) -> None:
        for line in text.splitlines():
            syslog.syslog(min(priority, syslog.LOG_DEBUG), line)

    def write(self, data: bytes) -> None:
        self.send(syslog.LOG_ERR, data.decode("utf-8", "backslashreplace"))

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        syslog.closelog()


_opened_by_parent: dict[str, LogFile] = {}  # path -> the file the parent opened for its children


def open_for_children(paths: set[str]) -> None:
    """The parent opens this generation's log files before it forks (as Apache's open_logs,
    still with the privileges it started with), so that children that run as User/Group
    append to files they could not open themselves. The previous generation's copies close:
    its children hold their own."""
    previous = dict(_opened_by_parent)
    _opened_by_parent.clear()
    for path in sorted(paths):
        _opened_by_parent[path] = LogFile(path)
    for log in previous.values():
        log.close()


def open_log_target(target: str) -> LogFile | PipedLog:
    """A file path or `|program`; OSError if the file cannot be opened."""
    if target.startswith("|"):
        return PipedLog(target)
    return LogFile(target)
