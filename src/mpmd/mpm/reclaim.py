"""Apache's ap_reclaim_child_processes: how a stopping parent makes its children exit.

TERM at once (unless they were already asked), TERM again at 3, 5 and 7 s, KILL at 9 s, and at
10 s give up on them, each step with Apache's message (AH00045, AH00046, AH00047). The parent
owns its children and reaps them; this module only keeps the schedule.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

RECLAIM_TERM_AGAIN = (3.0, 5.0, 7.0)  # seconds after the first TERM (reference 5)
RECLAIM_KILL = 9.0
RECLAIM_GIVE_UP = 10.0


def send_signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def reclaim(children: dict, reap: Callable[[], object], error_log, *, terminate: bool) -> None:
    """Until `children` (pid -> child with .pid, emptied by `reap`) is empty or 10 s passed."""
    start = time.monotonic()
    if terminate:
        for child in children.values():
            send_signal(child.pid, signal.SIGTERM)
    resent = set()
    killed = False
    pause = 0.016
    while children:
        reap()
        if not children:
            break
        elapsed = time.monotonic() - start
        for mark in RECLAIM_TERM_AGAIN:
            if elapsed >= mark and mark not in resent:
                resent.add(mark)
                for child in children.values():
                    error_log.log(
                        "warn",
                        f"child process {child.pid} still did not exit, sending a SIGTERM",
                        ah="AH00045",
                    )
                    send_signal(child.pid, signal.SIGTERM)
        if elapsed >= RECLAIM_KILL and not killed:
            killed = True
            for child in children.values():
                error_log.log(
                    "error",
                    f"child process {child.pid} still did not exit, sending a SIGKILL",
                    ah="AH00046",
                )
                send_signal(child.pid, signal.SIGKILL)
        if elapsed >= RECLAIM_GIVE_UP:
            for child in children.values():
                error_log.log(
                    "error",
                    f"could not make child process {child.pid} exit, attempting to continue anyway",
                    ah="AH00047",
                )
            children.clear()
            break
        time.sleep(pause)
        pause = min(pause * 4, 1.0)
