"""Entry point from the command line to a running server: `-X` in this process, else the parent.

A leaf: nothing in mpmd imports it but the command line. It hands the parent the MPM
descriptors (mpms.py), or runs one event loop in this process (`-X`, a debugging mode with
the event MPM's loop and no threads); what a serving process needs is built by context.py.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from mpmd import SERVER_SOFTWARE
from mpmd.config.model import ServerConfig
from mpmd.mpm.context import build_child_context
from mpmd.mpm.event import EventLoop
from mpmd.mpm.memory import MemorySampler
from mpmd.mpm.mpms import MPMS
from mpmd.mpm.parent import Parent
from mpmd.mpm.scoreboard import READY, Scoreboard, TlsCounters
from mpmd.mpm.startup import (
    StartupError,
    bind,
    check_access_logs,
    create_proxy_state,
    create_scoreboard,
    open_error_log,
    remove_pid_file,
    write_pid_file,
)


def serve(
    config: ServerConfig,
    *,
    single_process: bool,
    reload: Callable[[], ServerConfig],
    command_line: str,
    on_started: Callable[[], None] | None = None,
) -> int:
    """Run the server until it is stopped; returns the exit status."""
    if not single_process:
        parent = Parent(
            config,
            mpms=MPMS,
            reload=reload,
            command_line=command_line,
            on_started=on_started,
        )
        return parent.run()
    return _serve_single(config, command_line)


def _serve_single(config: ServerConfig, command_line: str) -> int:
    """`mpmd -X`: one process, serving in its main thread, in the foreground."""
    error_log = open_error_log(config)
    check_access_logs(config)
    listeners = bind(config, unmatched := [])
    for warning in unmatched:
        error_log.log("warn", warning)
    scoreboard = proxy_state = None
    try:
        scoreboard, record = _single_scoreboard(config)
        proxy_state = create_proxy_state(config, scoreboard.path)
        write_pid_file(config.pid_file)
    except StartupError:
        for sock in listeners:
            sock.close()
        if scoreboard is not None:
            scoreboard.close()
            scoreboard.unlink()
        raise
    ctx = build_child_context(
        config,
        error_log,
        multithread=False,
        multiprocess=False,
        scoreboard=scoreboard,
        proxy_state=proxy_state,
    )
    ctx.tls_counters = TlsCounters(scoreboard.process(0))  # -X counts its handshakes too
    loop = EventLoop(
        ctx,
        listeners,
        threads=0,
        worker_record=lambda index: record,
        process_record=scoreboard.process(0),
    )
    stop = []
    next_sample = [0.0]
    memory = MemorySampler(parent=False)  # the one process is slot 0

    def should_stop() -> bool:
        now = time.time()
        if now >= next_sample[0]:  # the parent's once-a-second history sample
            next_sample[0] = now + 1.0
            memory.sample(scoreboard, [(0, os.getpid())], time.monotonic())
            scoreboard.record_history(now, memory_kib=memory.total_kib)
        return bool(stop)

    def on_signal(signum, frame):  # handlers only record; the loop acts
        stop.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH):
        signal.signal(signum, on_signal)
    error_log.log(
        "notice",
        f"{SERVER_SOFTWARE} configured -- resuming normal operations",
        module="mpm_event",
        ah="AH00489",
    )
    error_log.log("notice", f"Command line: '{command_line}'", ah="AH00094")
    try:
        loop.run(should_stop=should_stop)
    finally:
        ctx.close()  # BufferedLogs: the last lines reach the file
        for sock in listeners:
            sock.close()
        scoreboard.close()
        scoreboard.unlink()
        if proxy_state is not None:
            proxy_state.close()
            proxy_state.unlink()
        remove_pid_file(config.pid_file)
        error_log.log("notice", "caught SIGTERM, shutting down", module="mpm_event", ah="AH00491")
    return 0


def _single_scoreboard(config: ServerConfig) -> tuple[Scoreboard, object]:
    """A one-process, one-thread scoreboard so /server-status and mpmctl status work in -X."""
    scoreboard = create_scoreboard(config, 1, 1, threads_per_child=1, max_request_workers=1)
    scoreboard.process(0).start(os.getpid(), 0)
    record = scoreboard.worker(0, 0)
    record.reset_for_new_child(os.getpid(), 0)
    record.set_state(READY)
    return scoreboard, record
