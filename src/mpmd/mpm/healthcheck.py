"""The health-check process: one per generation, forked by the parent (Apache's watchdog).

mod_proxy_hcheck's checks run in one process of the server, never once per child
(handlers/proxy/hcheck.py does the checking). The parent owns this process as it owns its
children, through four calls: `start` at the start of a generation (nothing is forked when no
balancer member has a health check), `stop` when the generation ends (TERM; the parent's
reaping collects it), `reaped` from the parent's waitpid loop, and `tick` from the parent's
once-a-second maintenance, which replaces a process that died on its own. `stop_all` at exit
waits for every one still running. The process holds no listener and serves nothing; it
exits when TERM, HUP, USR1 or WINCH arrives, or when the parent is gone.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

from mpmd.config.model import ServerConfig
from mpmd.handlers.proxy import hcheck
from mpmd.handlers.proxy.state import ProxyState
from mpmd.mpm.child import PrivilegeError, drop_privileges, set_title

STOP_WAIT = 2.0  # seconds `stop_all` gives a process to exit before SIGKILL


@dataclass
class _Spec:
    config: ServerConfig
    state: ProxyState
    error_log: object
    generation: int
    inherited: tuple[int, ...]  # descriptors the process closes: listeners, the wake pipe


class HealthCheckProcess:
    def __init__(self) -> None:
        self.pid = 0  # the current generation's process, 0 when there is none
        self.spec: _Spec | None = None  # set while the current generation wants checks
        self.pids: set[int] = set()  # every process started and not yet reaped

    def start(
        self,
        config: ServerConfig,
        state: ProxyState | None,
        error_log,
        generation: int,
        inherited: Iterable[int],
    ) -> None:
        """Fork the generation's process, if any member is health-checked."""
        self.stop()
        if state is None or not hcheck.targets(config):
            return
        self.spec = _Spec(config, state, error_log, generation, tuple(inherited))
        self._fork()

    def stop(self) -> None:
        """End the current process (the parent reaps it); nothing is restarted."""
        self.spec = None
        if self.pid:
            _signal(self.pid, signal.SIGTERM)
            self.pid = 0

    def reaped(self, pid: int, status: int) -> bool:
        """The parent reaped `pid`: True if it was one of ours."""
        if pid not in self.pids:
            return False
        self.pids.discard(pid)
        if pid == self.pid:
            self.pid = 0
            if self.spec is not None:
                self.spec.error_log.log(
                    "error",
                    f"the health-check process (pid {pid}) exited with status "
                    f"{os.waitstatus_to_exitcode(status)}; starting another",
                    ah="MP00130",
                )
        return True

    def tick(self) -> None:
        """Replace a process that died while its generation still wants checks."""
        if self.spec is not None and not self.pid:
            self._fork()

    def stop_all(self) -> None:
        """At exit: TERM every process still running, wait, SIGKILL after STOP_WAIT."""
        self.stop()
        deadline = time.monotonic() + STOP_WAIT
        for pid in list(self.pids):
            _signal(pid, signal.SIGTERM)
        while self.pids:
            for pid in list(self.pids):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.pids.discard(pid)
                elif time.monotonic() > deadline:
                    _signal(pid, signal.SIGKILL)
            if self.pids:
                time.sleep(0.02)

    def _fork(self) -> None:
        spec = self.spec
        assert spec is not None
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                status = _run(spec, parent_pid)
            finally:
                os._exit(status)
        self.pid = pid
        self.pids.add(pid)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _run(spec: _Spec, parent_pid: int) -> int:
    """The forked process: shed what serving needs, then check until told to stop."""
    for fd in spec.inherited:
        try:
            os.close(fd)
        except OSError:
            pass
    stop = []
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH):
        signal.signal(signum, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    set_title(f"mpmd: proxy health checks gen {spec.generation}")
    try:
        drop_privileges(spec.config)
    except PrivilegeError as error:
        error.log(spec.error_log)
        return 1
    except KeyError as error:
        spec.error_log.log("alert", error.args[0], module="unixd")
        return 1
    try:
        hcheck.serve(
            spec.config, spec.state, spec.error_log, stopping=lambda: bool(stop),
            parent_pid=parent_pid, tpsize=spec.config.hc_tpsize,
        )  # fmt: skip
    except Exception:
        spec.error_log.exception("MP00131: the health-check process failed", module="proxy_hcheck")
        return 1
    return 0
