"""The worker MPM's child: ThreadsPerChild threads, each owning a connection for its whole life.

For thread-safe applications with steady traffic. Every thread accepts for itself (the kernel
wakes one waiter per connection thanks to EPOLLEXCLUSIVE, so no listener thread and no
hand-off queue) and then serves the connection synchronously, keep-alive included (state K).
A graceful stop wakes every idle thread through the stop pipe; busy ones finish first.
"""

from __future__ import annotations

import os
import threading

from mpmd.mpm.child import ChildSpec, StopSignal, accept_one, load_context, make_poller
from mpmd.mpm.scoreboard import BUSY_READ, READY
from mpmd.mpm.tls_connection import serve_accepted


def serve_worker(spec: ChildSpec, stop: StopSignal) -> None:
    ctx = load_context(spec, stop, multithread=True)
    limit = spec.config.mpm.max_connections_per_child
    accepted = [0]
    lock = threading.Lock()

    def thread_main(index: int) -> None:
        record = spec.scoreboard.worker(spec.slot, index)
        record.reset_for_new_child(os.getpid(), spec.generation)
        poller = make_poller(spec.listeners, stop)
        while True:
            record.set_state(READY)
            got = accept_one(spec.listeners, poller, stop)
            if got is None:
                break
            sock, peer = got
            with lock:
                accepted[0] += 1
                if limit and accepted[0] >= limit:
                    stop.request()  # MaxConnectionsPerChild counts accepted connections
            record.set_state(BUSY_READ)
            record.connection_start()
            serve_accepted(sock, peer, ctx, record)
        record.set_state(0)
        poller.close()

    threads = [
        threading.Thread(target=thread_main, args=(index,), daemon=True)
        for index in range(spec.config.mpm.threads_per_child)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)  # short joins so signal handlers run in the main thread
    ctx.close()
