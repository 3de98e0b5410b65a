"""The parent's watchdog: mpmd extensions that replace a child from the once-a-second tick.

A request busy longer than Timeout (MP00003) and a child whose unique memory passed
MaxMemoryPerChild (MP00004). A mixin of Parent: it reads the parent's config, children and
error log and stops children the way the parent does (`_ask_to_stop`, SIGKILL).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping

from mpmd.mpm.memory import ProcessMemory
from mpmd.mpm.reclaim import send_signal
from mpmd.mpm.scoreboard import BUSY_READ, BUSY_WRITE, WorkerInfo

BUSY_STATES = frozenset({BUSY_READ, BUSY_WRITE})  # a request is in progress


class Watchdog:
    def _find_hung_requests(self, snap) -> None:
        """mpmd extension: a request busy longer than Timeout gets its child replaced.

        A prefork child serves only that request, so it is killed at once. A threaded child
        also serves other requests: it is asked to stop gracefully (the other threads finish
        theirs) and killed only if, a further Timeout later, a request is still busy past
        Timeout."""
        timeout = self.config.main.http.timeout
        limit_us = int(timeout * 1_000_000)
        now_us = time.time_ns() // 1000
        oldest: dict[int, WorkerInfo] = {}  # pid -> its longest-running request past Timeout
        threads = self.config.mpm.threads_per_child  # records beyond: ASGI requests, no thread
        for worker in snap.workers(active_only=True):
            started = worker.start_time_us
            if worker.status not in BUSY_STATES or not started or now_us - started <= limit_us:
                continue
            if worker.thread >= threads:
                continue  # a long poll or WebSocket on the ASGI loop holds no thread
            seen = oldest.get(worker.pid)
            if seen is None or started < seen.start_time_us:
                oldest[worker.pid] = worker
        if not oldest:
            return
        threaded = self.mpm.threaded
        for child in self.children.values():
            worker = oldest.get(child.pid)
            if worker is None or child.killed:
                continue
            if not child.kill_after_us:
                how = "gracefully" if threaded else "now"
                self.error_log.log(
                    "error",
                    f'request exceeded Timeout ({timeout:g} s): "{worker.request}" from '
                    f"{worker.client}, child pid {child.pid}; replacing the child {how}",
                    module=self.module,
                    ah="MP00003",
                )
                if threaded:
                    child.kill_after_us = now_us + limit_us
                    self._ask_to_stop(child)
                    continue
            elif now_us < child.kill_after_us:
                continue
            else:
                self.error_log.log(
                    "error",
                    f'request still busy a further Timeout after a graceful stop: "{worker.request}"'
                    f" from {worker.client}; killing child pid {child.pid}",
                    module=self.module,
                    ah="MP00003",
                )
            child.killed = True
            send_signal(child.pid, signal.SIGKILL)

    def _check_memory(self, sampled: Mapping[int, ProcessMemory]) -> None:
        """mpmd extension: MaxMemoryPerChild retires a child whose unique memory passed it
        (this tick's sample, memory.py)."""
        limit = self.config.mpm.max_memory_per_child
        if not limit:
            return
        for child in list(self.children.values()):
            if child.killed or child.generation != self.generation:
                continue
            memory = sampled.get(child.pid)
            if memory is not None and memory.uss_kib * 1024 > limit:
                child.killed = True
                self.error_log.log(
                    "notice",
                    f"child pid {child.pid} uses {memory.uss_kib} KiB of unique memory, over "
                    f"MaxMemoryPerChild; retiring it gracefully",
                    module=self.module,
                    ah="MP00004",
                )
                self._ask_to_stop(child)
