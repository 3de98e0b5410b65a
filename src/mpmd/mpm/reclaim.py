"""Apache's ap_reclaim_child_processes: how a stopping parent makes its children exit.

TERM at once (unless they were already asked), TERM again at 3, 5 and 7 s, KILL at 9 s, and at
10 s give up on them, each step with Apache's message (AH00045, AH00046, AH00047): a table, as
Apache's action_table. The parent owns its children and reaps them; this module only keeps the
schedule.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

# Apache's action_table (mpm_unix.c): seconds after the first TERM, the signal to send (None:
# give up on the child) and the line logged for each child still there.
SCHEDULE: tuple[tuple[float, int | None, str, str, str], ...] = (
    (3.0, signal.SIGTERM, "warn", "AH00045", "child process {} still did not exit, sending a SIGTERM"),
    (5.0, signal.SIGTERM, "warn", "AH00045", "child process {} still did not exit, sending a SIGTERM"),
    (7.0, signal.SIGTERM, "warn", "AH00045", "child process {} still did not exit, sending a SIGTERM"),
    (9.0, signal.SIGKILL, "error", "AH00046", "child process {} still did not exit, sending a SIGKILL"),
    (10.0, None, "error", "AH00047", "could not make child process {} exit, attempting to continue anyway"),
)  # fmt: skip


def send_signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def reclaim(children: dict, reap: Callable[[], object], error_log, *, terminate: bool) -> None:
    """Until `children` (pid -> child with .pid, emptied by `reap`) is empty or 10 s passed:
    TERM at once when terminating (silently), then the SCHEDULE's steps as their time comes,
    polling with Apache's growing sleep (16 ms, x4 each round, at most 1 s)."""
    start = time.monotonic()
    if terminate:
        for child in children.values():
            send_signal(child.pid, signal.SIGTERM)
    steps = iter(SCHEDULE)
    step = next(steps)
    pause = 0.016
    while children:
        reap()
        if not children:
            break
        elapsed = time.monotonic() - start
        while step is not None and elapsed >= step[0]:
            _, signum, level, ah, message = step
            for child in children.values():
                error_log.log(level, message.format(child.pid), ah=ah)
                if signum is not None:
                    send_signal(child.pid, signum)
            if signum is None:
                children.clear()
                return
            step = next(steps, None)
        time.sleep(pause)
        pause = min(pause * 4, 1.0)
