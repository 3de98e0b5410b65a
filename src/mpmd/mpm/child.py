"""What every child process does between fork and exit, whatever its MPM.

A child: names itself, installs its signal policy (TERM/HUP: flush the buffered access logs
and exit now; USR1: finish what it serves and exit), drops privileges, loads the application (the parent never does, unless
WSGIPreload), marks its scoreboard records, runs its MPM's serving function and exits with a
status the parent understands. A child that cannot start exits with CHILD_FATAL, which tells
the parent not to respawn it in a loop.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import setproctitle

from mpmd.config import accounts
from mpmd.config.model import ServerConfig
from mpmd.logs.access import flush_access_logs
from mpmd.mpm.context import build_child_context
from mpmd.mpm.scoreboard import BUSY_WRITE, TlsCounters

CHILD_FATAL = 15  # APEXIT_CHILDFATAL: the child cannot ever work; the parent stops the server
CHILD_INIT = 3  # APEXIT_CHILDINIT: failed during initialisation
FINISH_SECONDS = 1.0  # TERM: how long requests being answered get to write their log line
POLL_SECONDS = 0.01


@dataclass
class ChildSpec:
    """What the parent hands a child at fork time."""

    config: ServerConfig
    listeners: list[socket.socket]
    scoreboard: object
    slot: int
    generation: int
    error_log: object
    preloaded: object | None = None  # a Router built in the parent (WSGIPreload On)
    proxy_state: object | None = None  # the shared balancer state (handlers/proxy/state.py)


class StopSignal:
    """Graceful stop requested by the parent: a flag plus a pipe any waiter can poll on."""

    def __init__(self) -> None:
        self.requested = False
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def request(self) -> None:
        self.requested = True
        try:
            os.write(self.write_fd, b"!")
        except BlockingIOError:
            pass


def run_child(spec: ChildSpec, serve: Callable[[ChildSpec, StopSignal], None]) -> None:
    """The body of a forked child; never returns."""
    status = 0
    try:
        status = _child(spec, serve)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        try:
            flush_access_logs()  # BufferedLogs: whatever way the child ends
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _exit_now(*_) -> None:
    """Exit at once, but write out buffered log lines first (Apache's child exit hooks flush
    mod_log_config's buffers too)."""
    try:
        flush_access_logs()
    finally:
        os._exit(0)


class _Ending:
    """TERM/HUP (stop, restart): the child ends within FINISH_SECONDS.

    Apache's child exits at once, which can lose the access-log line of a request whose
    response the client already has (it is written just after the last byte). Here the child
    exits as soon as none of its workers is answering a request (state W: the line is written
    before the state changes), polled every POLL_SECONDS by an interval timer so the handler
    never blocks the serving thread; a second TERM exits at once. In-flight requests are still
    cut at FINISH_SECONDS, as a stop aborts them."""

    def __init__(self, records: list) -> None:
        self.records = records  # this child's scoreboard worker records
        self.deadline: float | None = None

    def on_signal(self, signum: int, frame) -> None:
        if self.deadline is not None or not self._answering():
            _exit_now()
        self.deadline = time.monotonic() + FINISH_SECONDS
        signal.signal(signal.SIGALRM, self._check)
        signal.setitimer(signal.ITIMER_REAL, POLL_SECONDS, POLL_SECONDS)

    def _check(self, signum: int, frame) -> None:
        if not self._answering() or time.monotonic() >= self.deadline:  # type: ignore[operator]
            _exit_now()

    def _answering(self) -> bool:
        return any(record.state == BUSY_WRITE for record in self.records)


def _child(spec: ChildSpec, serve: Callable[[ChildSpec, StopSignal], None]) -> int:
    config = spec.config
    set_title(f"mpmd: {config.mpm.name} child gen {spec.generation}")
    sys.stdout.reconfigure(line_buffering=True)  # an app's print() reaches the ErrorLog now
    stop = StopSignal()
    threads = range(config.mpm.threads_per_child)  # 1 for prefork
    ending = _Ending([spec.scoreboard.worker(spec.slot, index) for index in threads])
    signal.signal(signal.SIGTERM, ending.on_signal)
    signal.signal(signal.SIGHUP, ending.on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGWINCH, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda *_: stop.request())
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    try:
        drop_privileges(config)
    except PrivilegeError as error:
        error.log(spec.error_log)
        return CHILD_FATAL
    except KeyError as error:  # the account went away since the configuration was read
        spec.error_log.log("alert", error.args[0], module="unixd")
        return CHILD_FATAL
    serve(spec, stop)
    return 0


def load_context(spec: ChildSpec, stop: StopSignal, *, multithread: bool):
    """Load the application and open the logs; a failure here is fatal for this child."""
    try:
        if spec.preloaded is None:
            import_app_modules(spec.config)
        ctx = build_child_context(
            spec.config,
            spec.error_log,
            multithread=multithread,
            multiprocess=True,
            router=spec.preloaded,
            scoreboard=spec.scoreboard,
            proxy_state=spec.proxy_state,
        )
    except Exception:
        spec.error_log.exception("MP00001: child could not load the application, exiting")
        raise SystemExit(CHILD_FATAL) from None
    ctx.stop = stop
    if ctx.tls is not None:
        ctx.tls_counters = TlsCounters(spec.scoreboard.process(spec.slot))
    return ctx


def import_app_modules(config: ServerConfig) -> None:
    """Import every WSGIApp module before the router is built.

    The router answers 500 for a mount it cannot load (mod_wsgi's behaviour, kept for
    WSGIScriptAlias files); an application module that cannot even be imported instead makes
    the child exit with CHILD_FATAL, so the parent stops the server rather than serving errors
    (gunicorn's and the issue's behaviour). The router then finds the module in sys.modules.
    """
    import importlib

    for entry in config.wsgi_python_path:
        if entry not in sys.path:
            sys.path.insert(0, entry)
    for vhost in (config.main, *config.vhosts):
        for mount in vhost.wsgi_mounts:
            if mount.kind in ("app", "asgi"):
                importlib.import_module(mount.target.partition(":")[0])


def accept_one(
    listeners: list[socket.socket], poller: select.epoll, stop: StopSignal
) -> tuple[socket.socket, tuple] | None:
    """Wait for a connection on any listener, or for a stop request (None).

    Listeners are registered with EPOLLEXCLUSIVE, so the kernel wakes one idle waiter per
    connection: accept is serialised across children and threads without a mutex.
    """
    by_fd = {sock.fileno(): sock for sock in listeners}
    while not stop.requested:
        if os.getppid() == 1:  # the parent is gone: stop serving
            return None
        for fd, _ in poller.poll(1.0):
            if fd == stop.read_fd:
                return None
            try:
                return by_fd[fd].accept()
            except (BlockingIOError, InterruptedError):
                continue
    return None


def make_poller(listeners: list[socket.socket], stop: StopSignal) -> select.epoll:
    poller = select.epoll()
    for sock in listeners:
        poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
    poller.register(stop.read_fd, select.EPOLLIN)
    return poller


def privilege_warnings(config: ServerConfig) -> list[str]:
    """What the parent says at start about User/Group: ignored when not started as root (the
    children keep the invoking user, as Apache's do); with WSGIPreload, the application's
    import-time code runs in the parent, which keeps root's privileges."""
    if not (config.user or config.group):
        return []
    if os.geteuid() != 0:
        return ["MP00256: User and Group are ignored: mpmd was not started as root"]
    if config.wsgi_preload:
        return ["MP00257: WSGIPreload On imports the application in the parent, which runs as "
                "root: its import-time code runs with root's privileges"]  # fmt: skip
    return []


class PrivilegeError(Exception):
    """A child could not become User/Group: Apache's AH id, message and the errno's text."""

    def __init__(self, ah: str, message: str, error: OSError) -> None:
        super().__init__(message)
        self.ah = ah
        self.errno_text = f"({error.errno}){error.strerror}"

    def log(self, error_log) -> None:
        error_log.log("alert", self.args[0], module="unixd", ah=self.ah, errno_text=self.errno_text)


def drop_privileges(config: ServerConfig) -> None:
    """When started as root: setgid(Group), initgroups(User, Group), setuid(User), in
    mod_unixd's order (the ids were checked when the configuration was read)."""
    if os.geteuid() != 0 or not (config.user or config.group):
        return
    gid = accounts.group_id(config.group) if config.group else -1
    uid = accounts.user_id(config.user) if config.user else -1
    if gid >= 0:
        try:
            os.setgid(gid)
        except OSError as error:
            raise PrivilegeError("AH02156", f"setgid: unable to set group id to Group {gid}",
                                 error) from None  # fmt: skip
        if uid >= 0:
            name = accounts.user_name(uid)
            try:
                os.initgroups(name, gid)
            except OSError as error:
                raise PrivilegeError("AH02157", f"initgroups: unable to set groups for User "
                                     f"{name} and Group {gid}", error) from None  # fmt: skip
        else:
            os.setgroups([gid])
    if uid >= 0:
        try:
            os.setuid(uid)
        except OSError as error:
            raise PrivilegeError("AH02162", f"setuid: unable to change to uid: {uid}",
                                 error) from None  # fmt: skip


def set_title(title: str) -> None:
    """The process title `ps` shows (parent and children): one helper for both."""
    setproctitle.setproctitle(title)
