"""The prefork MPM's child: one process, one thread, one connection at a time.

For applications that are not thread-safe. The child waits in accept (serialised across
children by EPOLLEXCLUSIVE), serves the whole keep-alive connection, and repeats until it is
asked to stop or reaches MaxConnectionsPerChild. How many such children run is the parent's
business (maintenance.prefork_maintenance); this module never forks.
"""

from __future__ import annotations

import os

from mpmd.mpm.child import ChildSpec, StopSignal, accept_one, load_context, make_poller
from mpmd.mpm.scoreboard import BUSY_READ, READY
from mpmd.mpm.tls_connection import serve_accepted


def serve_prefork(spec: ChildSpec, stop: StopSignal) -> None:
    ctx = load_context(spec, stop, multithread=False)
    record = spec.scoreboard.worker(spec.slot, 0)
    record.reset_for_new_child(os.getpid(), spec.generation)
    poller = make_poller(spec.listeners, stop)
    limit = spec.config.mpm.max_connections_per_child
    served = 0
    while True:
        record.set_state(READY)
        accepted = accept_one(spec.listeners, poller, stop)
        if accepted is None:
            break
        sock, peer = accepted
        served += 1
        if limit and served >= limit:
            stop.request()  # MaxConnectionsPerChild: this connection's responses say close
        record.set_state(BUSY_READ)
        record.connection_start()
        serve_accepted(sock, peer, ctx, record)
        if stop.requested:
            break
    ctx.close()
