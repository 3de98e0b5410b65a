"""The event loop's upkeep between polls: when to wake, which queue entries expired, and the
counts mod_status prints. A mixin of EventLoop (event.py), whose queues and counters it reads;
kept apart so that event.py holds the connection's path and this file the clocks.
"""

from __future__ import annotations

import os

from mpmd.mpm.event_connection import KEEP_ALIVE

LINGER_SECONDS = 30.0  # MAX_SECS_TO_LINGER: normal lingering close
SHORT_LINGER_SECONDS = 2.0  # SECONDS_TO_LINGER: after a timeout or error, or while stopping
MAX_POLL_SECONDS = 1.0  # the parent's liveness and the published counts are checked this often


class QueueUpkeep:
    """EventLoop's timeouts and published counts (see the module docstring)."""

    # -- timeouts --------------------------------------------------------------------------------

    def _poll_timeout(self, now: float) -> float:
        """Until the earliest expiry (kept in _due for _maintain), a probe, or MAX_POLL_SECONDS."""
        first = now + MAX_POLL_SECONDS
        for queue in self._queue_of.values():
            expiry = queue.next_expiry()
            if expiry is not None and expiry < first:
                first = expiry
        if self.stopping:
            expiry = self._linger_q.next_expiry()
            if expiry is not None and expiry - self._linger_cut() < first:
                first = expiry - self._linger_cut()
        self._due = first
        acceptor = self.acceptor
        if acceptor.full_with_keep_alive() and acceptor.next_probe < first:
            first = acceptor.next_probe
        if acceptor.yielding and acceptor.share_until < first:
            first = acceptor.share_until
        saturation = acceptor.saturation_due()
        if saturation is not None and saturation < first:
            first = saturation
        return max(0.0, first - now)

    def _maintain(self, now: float) -> None:
        """Expire each queue from its head; kill'em all when workers were busy.

        A dying child (Apache kills its keep-alive connections at once) keeps them to their
        KeepAliveTimeout instead: a client may be sending on one right now, and its request
        is answered (with close) rather than lost to the race. `mpmd -X` (no StopSignal) has
        no next generation to send its clients to and closes them at once."""
        expired = False
        keep_alive = self._keep_alive_q
        dying = self.stopping and self.ctx.stop is None
        kill = bool(keep_alive) and (self.acceptor.busy or dying)
        if now >= self._due or kill:  # else nothing is due: the queues are not walked
            expired = self._expire(now, kill)
        self.acceptor.maintain(now)
        if expired or now >= self._next_publish:
            self._publish_counts(now)

    def _linger_cut(self) -> float:
        """While stopping, a normal lingering close is cut to the short one."""
        return LINGER_SECONDS - SHORT_LINGER_SECONDS if self.stopping else 0.0

    def _expire(self, now: float, kill: bool) -> bool:
        """Expire each queue from its head (all keep-alive with `kill`); True if any did."""
        expired = False
        for conn in self._reading.expire(now):
            expired = True
            self._read_timeout(conn, now)
        keep_alive = self._keep_alive_q
        ending = keep_alive.pop_oldest(len(keep_alive)) if kill else keep_alive.expire(now)
        for conn in ending:
            expired = True
            self._on_readable(conn, now)  # a request that arrived meanwhile is served
            if conn.kind == KEEP_ALIVE:  # nothing had arrived: close
                self._linger(conn, short=False)
        for conn in self._write_q.expire(now):
            expired = True
            self._linger(conn, short=True)
        if self._proxy is not None:
            self._proxy.expire(now)
        for queue, limit in (
            (self._linger_q, now + self._linger_cut()),
            (self._short_linger_q, now),
        ):
            for conn in queue.expire(limit):
                expired = True
                self._close(conn)
        return expired

    def _publish_counts(self, now: float) -> None:
        """The process record's async counters mod_status prints (Apache: at queue upkeep)."""
        self._next_publish = now + 1.0
        if self._stop_fd is not None and os.getppid() != self._parent:
            self.begin_graceful_stop()  # the parent is gone
        record = self.process_record
        if record is not None:
            asgi = self._asgi
            record.set_connection_counts(
                self.open_connections(),
                len(self._write_q),
                len(self._keep_alive_q),
                self.lingering(),
                suspended=asgi.upgraded if asgi is not None else 0,
            )
