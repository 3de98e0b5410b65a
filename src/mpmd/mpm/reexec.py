"""Restarts with WSGIPreload: the parent re-execs itself into a fresh interpreter.

A parent that imported the application cannot import its new code again: `sys.modules` keeps
the old modules, C extensions cannot be loaded twice, and `gc.freeze()` has moved the old
objects out of the collector's reach. So a restart (graceful or not) of a parent holding
preloaded code replaces the process image with `python -m mpmd` and the same arguments (less
`-k`), which imports the new code once and forks the new generation from it.

What survives exec is what must: the pid (the PidFile and the scoreboard path stay valid, and
the children stay this process's children), the listening sockets (made inheritable: they are
never closed, so no connection is refused while the new image starts; the kernel queues them)
and the scoreboard file. The rest (generation, children, restart kind) travels in one
environment variable that the new image reads and removes before it forks. The control
signals are blocked across exec, since exec resets their handlers to the default (terminate):
a signal sent in the gap waits until the new image has installed its handlers.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sys
from dataclasses import dataclass

from mpmd.mpm.listeners import adopt_unix_paths, owned_unix_paths
from mpmd.mpm.scoreboard import Scoreboard, default_path

ENV = "MPMD_REEXEC_STATE"
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH}


@dataclass
class Handoff:
    """What the old image passed on: the new image starts generation `generation + 1`."""

    graceful: bool
    generation: int
    listeners: list[socket.socket]
    scoreboard: Scoreboard
    children: list[dict]  # the fields of parent._Child, one dict per live child


def exec_fresh(
    *,
    graceful: bool,
    generation: int,
    listeners: list[socket.socket],
    children: list[dict],
    command_line: str,
) -> OSError:
    """Replace this process with a fresh mpmd parent; returns only if exec failed."""
    state = {
        "graceful": graceful,
        "generation": generation,
        "listeners": [sock.fileno() for sock in listeners],
        "unix_owned": owned_unix_paths(),
        "children": children,
    }
    for sock in listeners:
        os.set_inheritable(sock.fileno(), True)
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "mpmd", *_foreground_args(command_line)]
    try:
        os.execve(sys.executable, argv, {**os.environ, ENV: json.dumps(state)})
    except OSError as error:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        for sock in listeners:
            os.set_inheritable(sock.fileno(), False)
        return error
    raise AssertionError("unreachable: execve returned")  # pragma: no cover


def take_handoff(scoreboard_file: str | None) -> Handoff | None:
    """In the new image: the state the old one left, or None on a normal start."""
    text = os.environ.pop(ENV, None)
    if text is None:
        return None
    state = json.loads(text)
    adopt_unix_paths(state.get("unix_owned", []))
    listeners = []
    for fd in state["listeners"]:
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        listeners.append(sock)
    return Handoff(
        graceful=state["graceful"],
        generation=state["generation"],
        listeners=listeners,
        scoreboard=Scoreboard.attach(
            scoreboard_file or default_path(os.getpid()), readonly=False, owner=True
        ),
        children=state["children"],
    )


def unblock_signals() -> None:
    """Once the new image's handlers are installed: deliver what arrived during exec."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def _foreground_args(command_line: str) -> list[str]:
    """The command line's arguments without `-k VERB`: the new image serves in the foreground
    (it is already detached if the first one was)."""
    args: list[str] = []
    skip = False
    for arg in shlex.split(command_line)[1:]:
        if skip:
            skip = False
        elif arg == "-k":
            skip = True
        elif not arg.startswith("-k"):
            args.append(arg)
    return args
