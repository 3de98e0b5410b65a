"""The event MPM's child: its loop (event.py) in the main thread, ThreadsPerChild workers.

Like prefork.py and worker.py, the child's main: it loads the context, gives the loop its
scoreboard records (one per worker thread, and the loop's own for the requests it proxies)
and runs it until the child is asked to stop. It never forks.
"""

from __future__ import annotations

import os

from mpmd.mpm.child import load_context
from mpmd.mpm.event import EventLoop
from mpmd.mpm.scoreboard import DEAD, READY


def serve_event(spec, stop) -> None:
    """The event child: the loop in the main thread, ThreadsPerChild workers beside it."""
    ctx = load_context(spec, stop, multithread=True)
    loop = EventLoop(
        ctx,
        spec.listeners,
        threads=spec.config.mpm.threads_per_child,
        worker_record=lambda index: _ready_record(spec, index),
        process_record=spec.scoreboard.process(spec.slot),
        loop_record=_loop_record(spec),
        max_connections=spec.config.mpm.max_connections_per_child,
        wake_fd=stop.read_fd,
        asgi_records=_spare_records(spec, ctx),
        siblings={
            slot: spec.scoreboard.process(slot)
            for slot in range(spec.scoreboard.server_limit)
            if slot != spec.slot
        },
        generation=spec.generation,
        slot=spec.slot,
    )
    loop.run(should_stop=lambda: stop.requested)
    ctx.close()


def _loop_record(spec):
    record = spec.scoreboard.loop_worker(spec.slot)
    record.reset_for_new_child(os.getpid(), spec.generation)
    return record


def _spare_records(spec, ctx) -> list:
    """The child's records beyond ThreadsPerChild (up to ThreadLimit): one per in-flight ASGI
    request while they last (the pool's maintenance never counts them)."""
    config = spec.config
    if not ctx.asgi:
        return []
    records = []
    for index in range(config.mpm.threads_per_child, spec.scoreboard.thread_limit):
        record = spec.scoreboard.worker(spec.slot, index)
        record.reset_for_new_child(os.getpid(), spec.generation)
        record.set_state(DEAD)
        records.append(record)
    return records


def _ready_record(spec, index: int):
    record = spec.scoreboard.worker(spec.slot, index)
    record.reset_for_new_child(os.getpid(), spec.generation)
    record.set_state(READY)
    return record
