"""Entry point from the command line to a running server: `-X` in this process, else the parent.

Builds what a serving process needs (router, logs) from a ServerConfig. The parent machinery
lives in parent.py; this module only chooses between it and the single-process debug mode.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from mpmd import SERVER_SOFTWARE
from mpmd.config.model import ServerConfig
from mpmd.handlers.router import Router
from mpmd.logs.access import AccessLog
from mpmd.logs.error import ErrorLog
from mpmd.mpm.connection import ChildContext, make_access_logs
from mpmd.mpm.event import EventLoop
from mpmd.mpm.listeners import bind_listeners


def open_error_log(config: ServerConfig) -> ErrorLog:
    return ErrorLog(config.main.error_log, config.main.log_level)


def build_router(config: ServerConfig, error_log: ErrorLog) -> Router:
    """Import the applications (in a child, or in the parent with WSGIPreload On)."""
    return Router(config, error_log)


def build_child_context(
    config: ServerConfig,
    error_log: ErrorLog,
    *,
    multithread: bool,
    multiprocess: bool,
    router: Router | None = None,
) -> ChildContext:
    """Load the applications and open the access logs: done in each child, once."""
    router = router or build_router(config, error_log)
    access_logs = make_access_logs(
        config,
        lambda spec: AccessLog(
            spec.target, spec.format, buffered=config.buffered_logs, condition=spec.condition
        ),
    )
    return ChildContext(
        config,
        router,
        error_log,
        access_logs,
        multithread=multithread,
        multiprocess=multiprocess,
    )


def serve(
    config: ServerConfig,
    *,
    single_process: bool,
    reload: Callable[[], ServerConfig],
    command_line: str,
) -> int:
    """Run the server until it is stopped; returns the exit status."""
    if not single_process:
        from mpmd.mpm.parent import Parent

        return Parent(config, reload=reload, command_line=command_line).run()
    return _serve_single(config, command_line)


def _serve_single(config: ServerConfig, command_line: str) -> int:
    """`mpmd -X`: one process, serving in its main thread, in the foreground."""
    error_log = open_error_log(config)
    listeners = bind_listeners(config.listeners, config.mpm.listen_backlog)
    ctx = build_child_context(config, error_log, multithread=False, multiprocess=False)
    loop = EventLoop(ctx, listeners, threads=0)
    stop = []

    def on_signal(signum, frame):  # handlers only record; the loop acts
        stop.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH):
        signal.signal(signum, on_signal)
    _write_pid_file(config.pid_file)
    error_log.log(
        "notice",
        f"{SERVER_SOFTWARE} configured -- resuming normal operations",
        module="mpm_event",
        ah="AH00489",
    )
    error_log.log("notice", f"Command line: '{command_line}'", ah="AH00094")
    try:
        loop.run(should_stop=lambda: bool(stop))
    finally:
        for sock in listeners:
            sock.close()
        _remove_pid_file(config.pid_file)
        error_log.log("notice", "caught SIGTERM, shutting down", module="mpm_event", ah="AH00491")
    return 0


def _write_pid_file(path: str) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as file:
        file.write(f"{os.getpid()}\n")


def _remove_pid_file(path: str) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, TypeError):
        pass
