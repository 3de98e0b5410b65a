"""What can fail before the first child starts, reported the way Apache reports it.

This module owns the start-up steps that touch the system — opening the logs, binding the
listeners, writing the PidFile, creating the scoreboard — and turns each failure into
Apache's lines (`(98)Address already in use: AH00072: make_sock: could not bind to address
127.0.0.1:8080`, `AH00015: Unable to open logs` …) carried by a StartupError, which the
command line prints to stderr before exiting 1. It never prints and never exits itself, and
it runs no application code.
"""

from __future__ import annotations

import os
import socket

from mpmd.config.model import ServerConfig
from mpmd.handlers.proxy.state import ProxyState, needs_state
from mpmd.logs.error import ErrorLog, errno_text
from mpmd.logs.targets import LogFile
from mpmd.mpm import systemd
from mpmd.mpm.listeners import BindError, bind_listeners
from mpmd.mpm.scoreboard import Scoreboard, default_path

UNABLE_TO_OPEN_LOGS = "AH00015: Unable to open logs"


class StartupError(Exception):
    """The server cannot start; `lines` are Apache's messages, one per line."""

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def open_error_log(config: ServerConfig) -> ErrorLog:
    """The main server's ErrorLog; AH00091 (a file) or AH00089 (a program) if it cannot open."""
    target = config.main.error_log
    try:
        return ErrorLog(target, config.main.log_level)
    except OSError as err:
        if target.startswith("|"):
            line = f"{errno_text(err)}: AH00089: Couldn't start ErrorLog process '{target[1:]}'."
        else:
            line = f"{errno_text(err)}: AH00091: mpmd: could not open error log file {target}."
        raise StartupError(line, UNABLE_TO_OPEN_LOGS) from None


def check_access_logs(config: ServerConfig) -> None:
    """Open (creating) every CustomLog file once, as Apache's open_logs does in the parent,
    so a log that cannot be written stops the start with AH00649 instead of every child."""
    targets = {spec.target for vhost in (config.main, *config.vhosts)
               for spec in vhost.access_logs if not spec.target.startswith("|")}  # fmt: skip
    for target in sorted(targets):
        try:
            LogFile(target).close()
        except OSError as err:
            raise StartupError(
                f"{errno_text(err)}: AH00649: could not open transfer log file {target}.",
                UNABLE_TO_OPEN_LOGS,
            ) from None


def bind(config: ServerConfig, warnings: list[str] | None = None) -> list[socket.socket]:
    """Every Listen, bound before the first fork (or taken from systemd's socket activation,
    systemd.py); AH00072 per failure, then no listeners. `warnings` gets what the parent
    should log once its error log is in use."""
    lines = []
    adopted, unmatched = systemd.adopt(config.listeners, systemd.inherited_sockets())
    if warnings is not None:
        warnings.extend(unmatched)
    if config.listeners:
        try:
            return bind_listeners(
                config.listeners,
                config.mpm.listen_backlog,
                adopted,
                buckets=config.mpm.listen_buckets,
                unix_mode=config.listen_unix_mode,
                unix_owner=config.listen_unix_owner,
            )
        except BindError as err:
            for sock in adopted.values():
                sock.close()
            lines.append(f"{errno_text(err)}: AH00072: make_sock: could not bind to address "
                         f"{err.address}")  # fmt: skip
            if err.note:
                lines.append(err.note)
    raise StartupError(
        *lines, "AH00451: no listening sockets available, shutting down", UNABLE_TO_OPEN_LOGS
    )


def write_pid_file(path: str) -> None:
    """The parent's pid, as ap_log_pid writes it; AH00099 and AH00100 if it cannot."""
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as file:
            file.write(f"{os.getpid()}\n")
    except OSError as err:
        raise StartupError(
            f"{errno_text(err)}: AH00099: could not create {path}",
            f"AH00100: mpmd: could not log pid to file {path}",
        ) from None


def remove_pid_file(path: str) -> None:
    """Remove the PidFile if it is ours: a server that failed to start leaves another's alone."""
    try:
        with open(path) as file:
            if file.read().strip() == str(os.getpid()):
                os.unlink(path)
    except (OSError, ValueError):
        pass


def create_scoreboard(
    config: ServerConfig, server_limit: int, thread_limit: int, **limits: int
) -> Scoreboard:
    """The shared memory at ScoreBoardFile, else at the path mpmctl derives from the pid."""
    path = config.scoreboard_file or default_path(os.getpid())
    try:
        return Scoreboard.create(path, server_limit, thread_limit, config.mpm.name, **limits)
    except OSError as err:
        raise StartupError(
            f'{errno_text(err)}: AH00001: Unable to create or access scoreboard "{path}" '
            "(name-based shared memory failure)"
        ) from None


def create_proxy_state(config: ServerConfig, scoreboard_path: str) -> ProxyState | None:
    """The balancers' and proxy workers' shared state, at the scoreboard's path + ".proxy"
    (so tools find it from the scoreboard); None when nothing is proxied."""
    if not needs_state(config):
        return None
    path = scoreboard_path + ".proxy"
    try:
        return ProxyState.create(path, config)
    except OSError as err:
        raise StartupError(f"{errno_text(err)}: AH01179: balancer slotmem_create failed") from None


def reattach_proxy_state(scoreboard_path: str) -> ProxyState | None:
    """After a re-exec: the state the old image left (None if it had none)."""
    try:
        return ProxyState.attach(scoreboard_path + ".proxy", readonly=False, owner=True)
    except FileNotFoundError:
        return None
