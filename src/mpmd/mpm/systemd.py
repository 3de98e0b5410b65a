"""systemd without libsystemd: socket activation and sd_notify, both done by the parent.

Socket activation (reference 3.1, beyond Apache 2.4, which has none): the sockets systemd
passes from fd 3 on are taken only when LISTEN_PID is this process, matched to the `Listen`
directives by the address they are bound to, and the three variables are unset, as
`sd_listen_fds(1)` does. The parent never re-binds a listener, so inherited sockets survive
graceful restarts and the re-exec of a WSGIPreload parent like bound ones.

sd_notify (reference 3.2, 3.3): one datagram of `KEY=VALUE` lines to $NOTIFY_SOCKET (a path,
or an abstract name written with a leading `@`); without it every call is a no-op. The
parent says READY=1 once a generation serves, RELOADING=1 with MONOTONIC_USEC when a restart
begins (so `Type=notify-reload` works), STOPPING=1, a STATUS= line in mod_systemd's format
every tenth tick as Apache's monitor hook does, and WATCHDOG=1 at half of WATCHDOG_USEC.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import MutableMapping, Sequence

from mpmd.config.model import ListenAddress
from mpmd.handlers.status_format import strfsize

SD_LISTEN_FDS_START = 3
STATUS_EVERY_TICKS = 10  # mod_systemd's monitor hook: every 10th ap_wait_or_timeout


def inherited_sockets(environ: MutableMapping[str, str] = os.environ) -> list[socket.socket]:
    """sd_listen_fds(1): the listening sockets systemd passed to this process (none if the
    variables are absent or name another pid); the variables are unset either way."""
    pid = environ.pop("LISTEN_PID", "")
    count = environ.pop("LISTEN_FDS", "")
    environ.pop("LISTEN_FDNAMES", None)
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def _matches(sock: socket.socket, address: ListenAddress) -> bool:
    """Is `sock` bound where `address` would bind? "" is the wildcard of either family; a Unix
    socket matches `Listen unix:PATH` by its path."""
    if sock.type != socket.SOCK_STREAM:
        return False
    if sock.family == socket.AF_UNIX:
        return bool(address.path) and sock.getsockname() == address.path
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or address.path:
        return False
    host, port = sock.getsockname()[:2]
    if port != address.port:
        return False
    if address.host == "":
        return host in ("0.0.0.0", "::")
    return host == address.host.strip("[]")


def adopt(
    addresses: Sequence[ListenAddress], inherited: list[socket.socket]
) -> tuple[dict[ListenAddress, socket.socket], list[str]]:
    """Match inherited sockets to Listen addresses. Returns the matched ones and a warning
    for each inherited socket no Listen names (it is closed: the configuration decides)."""
    matched: dict[ListenAddress, socket.socket] = {}
    warnings = []
    for sock in inherited:
        address = next((a for a in addresses if a not in matched and _matches(sock, a)), None)
        if address is None:
            try:
                where = sock.getsockname()
            except OSError:
                where = f"fd {sock.fileno()}"
            warnings.append(f"MP00255: systemd passed a socket ({where}) that no Listen "
                            "directive names; closing it")  # fmt: skip
            sock.close()
            continue
        sock.setblocking(False)
        matched[address] = sock
    return matched, warnings


def status_line(accesses: int, idle: int, busy: int, seconds: float, sent: int) -> str:
    """mod_systemd's STATUS= text, rates since the last restart (no space before
    `Requests/sec`, as Apache prints it)."""
    rate = accesses / seconds if seconds > 0 else 0.0
    per_second = int(sent / seconds) if seconds > 0 else 0
    return (
        f"Total requests: {accesses}; Idle/Busy workers {idle}/{busy};"
        f"Requests/sec: {rate:.3g}; Bytes served/sec: {strfsize(per_second)}B/sec"
    )


class Notifier:
    """The parent's messages to the service manager; silent when NOTIFY_SOCKET is unset."""

    def __init__(self, environ: MutableMapping[str, str] = os.environ) -> None:
        target = environ.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if target.startswith("/"):
            self.address = target
        elif target.startswith("@"):
            self.address = b"\0" + target[1:].encode()
        self.sock: socket.socket | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_every = int(usec) / 2_000_000 if usec.isdigit() and mine else 0.0
        self.next_watchdog = 0.0
        self.ticks = 0
        self.stopped = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> None:
        """One datagram; a manager that went away is not the server's problem."""
        if self.address is None:
            return
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.sendto(("\n".join(lines) + "\n").encode(), self.address)
        except OSError:
            pass

    def ready(self) -> None:
        self.send("READY=1", "STATUS=Processing requests...", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=Reading configuration...")

    def stopping(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.send("STOPPING=1", "STATUS=Shutting down...")

    def tick(self, now: float, status: str | None) -> None:
        """The parent's once-a-second tick: WATCHDOG=1 when due, STATUS= every tenth tick
        (`status` is None when the parent has no figures to give, e.g. no child yet)."""
        if self.address is None:
            return
        if self.watchdog_every and now >= self.next_watchdog:
            self.send("WATCHDOG=1")
            self.next_watchdog = now + self.watchdog_every
        self.ticks += 1
        if status is not None and self.ticks % STATUS_EVERY_TICKS == 0:
            self.send("READY=1", f"STATUS={status}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
