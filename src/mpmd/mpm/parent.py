"""The MPM-agnostic parent: listeners, scoreboard, signals, generations, reaping, the tick.

The parent binds every Listen before forking, writes the PidFile, creates the scoreboard and
forks children; it never serves a request and never imports the application (unless
WSGIPreload On asks it to, so children share the pages). Signal handlers only record the
signal; the main loop acts on it: TERM stop, HUP restart, USR1 graceful restart, WINCH
graceful stop. About once a second it runs the MPM's maintenance policy (a pure function of
a scoreboard snapshot, see maintenance.py) and carries out the decision.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from mpmd import SERVER_SOFTWARE
from mpmd.config.model import ServerConfig
from mpmd.config.syntax import ConfigError
from mpmd.mpm import maintenance, reexec, systemd
from mpmd.mpm.child import (
    CHILD_FATAL,
    ChildSpec,
    import_app_modules,
    privilege_warnings,
    run_child,
    set_title,
)
from mpmd.mpm.context import build_router, share_before_fork
from mpmd.mpm.healthcheck import HealthCheckProcess
from mpmd.mpm.listeners import bucket_sockets, remove_unix_sockets
from mpmd.mpm.memory import MemorySampler
from mpmd.mpm.reclaim import reclaim
from mpmd.mpm.scoreboard import READY, STARTING, Scoreboard
from mpmd.mpm.startup import (
    StartupError,
    bind,
    check_access_logs,
    create_proxy_state,
    create_scoreboard,
    open_error_log,
    reattach_proxy_state,
    remove_pid_file,
    write_pid_file,
)
from mpmd.mpm.watchdog import Watchdog

if TYPE_CHECKING:
    from mpmd.mpm.mpms import Mpm

_ALL_FAILED = (
    "A resource shortage or other unrecoverable failure was encountered before any child "
    "process initialized successfully... mpmd is exiting!"
)


@dataclass
class _Child:
    pid: int
    slot: int
    generation: int
    started: float
    killed: bool = False  # the parent already replaced it (hung request, memory)
    kill_after_us: int = 0  # stopping for a hung request: SIGKILL if one is still busy then


class Parent(Watchdog):
    def __init__(
        self,
        config: ServerConfig,
        *,
        mpms: Mapping[str, Mpm],
        reload: Callable[[], ServerConfig],
        command_line: str,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.on_started = on_started  # `-k start` waits for this to report success
        self.reload = reload
        self.command_line = command_line
        self.error_log = open_error_log(config)
        self.mpms = mpms  # the MPMs by name (mpms.py): this class never branches on one
        self.mpm = mpms[config.mpm.name]
        self.generation = 0
        self.children: dict[int, _Child] = {}
        self.spawn_state = maintenance.SpawnState()
        self.pending_starts = 0  # new-generation children still owed after a graceful restart
        self.signals: list[int] = []
        self.any_child_ready = False
        self.failed_children = 0
        self.preloaded = None
        self.listeners = []
        self.scoreboard: Scoreboard | None = None
        self.proxy_state = None  # handlers/proxy/state.py, beside the scoreboard
        self.hcheck = HealthCheckProcess()  # mod_proxy_hcheck's one process per generation
        self.memory = MemorySampler()  # each child's PSS and USS into the scoreboard
        self.notifier = systemd.Notifier()  # sd_notify, when systemd started us

    @property
    def module(self) -> str:
        return self.mpm.module

    # -- start and the main loop -----------------------------------------------------------------

    def run(self) -> int:
        config = self.config
        handoff = reexec.take_handoff(config.scoreboard_file)
        if handoff is not None:
            return self._resume(handoff)
        try:  # Apache's order: logs, listeners, then the PidFile and the scoreboard
            check_access_logs(config)
            self.listeners = bind(config, unmatched := [])
            self.scoreboard = create_scoreboard(
                config,
                config.mpm.server_limit,
                config.mpm.thread_limit,
                threads_per_child=config.mpm.threads_per_child,
                max_request_workers=config.mpm.max_request_workers,
            )
            self.proxy_state = create_proxy_state(config, self.scoreboard.path)
            write_pid_file(config.pid_file)
        except StartupError:
            self._cleanup()
            raise
        self.scoreboard.generation = self.generation
        self._install_signals()
        set_title(f"mpmd: parent -f {config.config_file or '(built-in)'}")
        for warning in (*config.warnings, *unmatched, *privilege_warnings(config)):
            self.error_log.log("warn", warning)
        self._log_configured()
        self.error_log.log("notice", f"Command line: '{self.command_line}'", ah="AH00094")
        try:
            if not self._preload():
                return self._stop_unloadable()
            if self.on_started is not None:
                self.on_started()
            self.error_log.capture_output()
            self._spawn_start_servers()
            self._start_hcheck()
            return self._main_loop()
        finally:
            self._cleanup()

    def _resume(self, handoff: reexec.Handoff) -> int:
        """The new image after a re-exec restart: adopt what survived exec, then start the
        next generation as the old image would have."""
        self.listeners = handoff.listeners
        self.scoreboard = handoff.scoreboard
        self.proxy_state = reattach_proxy_state(self.scoreboard.path)
        self.generation = handoff.generation
        self.children = {fields["pid"]: _Child(**fields) for fields in handoff.children}
        self._install_signals()
        reexec.unblock_signals()
        set_title(f"mpmd: parent -f {self.config.config_file or '(built-in)'}")
        self.error_log.capture_output()
        try:
            outcome = self._begin_generation(graceful=handoff.graceful)
            return self._main_loop() if outcome is None else outcome
        finally:
            self._cleanup()

    def _main_loop(self) -> int:
        next_tick = time.monotonic() + 1.0
        while True:
            reaped = self._reap()
            while self.signals:
                signum = self.signals.pop(0)
                outcome = self._on_signal(signum)
                if outcome is not None:
                    return outcome
            if self._all_failed():
                self.error_log.log("alert", _ALL_FAILED, module=self.module, ah="AH02324")
                self._reclaim(terminate=True)
                return 1
            now = time.monotonic()
            if now >= next_tick:
                if not reaped:
                    self._tick()
                next_tick = now + 1.0
            self._wait(max(0.0, next_tick - time.monotonic()))

    def _wait(self, timeout: float) -> None:
        try:
            select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            pass
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        for signum in (
            signal.SIGTERM,
            signal.SIGINT,
            signal.SIGHUP,
            signal.SIGUSR1,
            signal.SIGWINCH,
        ):
            signal.signal(signum, self._enqueue)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop

    def _enqueue(self, signum: int, frame) -> None:
        self.signals.append(signum)

    # -- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum: int) -> int | None:
        """Dispatch to the signal's own method (gunicorn's arbiter); an int ends the server."""
        return getattr(self, f"_on_{signal.Signals(signum).name.lower()}")()

    def _notice(self, ah: str, text: str) -> None:
        self.error_log.log("notice", text, module=self.module, ah=ah)

    def _on_sigterm(self) -> int:
        """stop: every child is terminated, in-flight requests included (Apache's schedule)."""
        self._notice(self.mpm.messages.sigterm, "caught SIGTERM, shutting down")
        self.notifier.stopping()
        self._reclaim(terminate=True)
        return 0

    _on_sigint = _on_sigterm

    def _on_sigwinch(self) -> int:
        """graceful-stop: the listeners close, children finish, GracefulShutdownTimeout."""
        self._notice(self.mpm.messages.sigwinch, "caught SIGWINCH, shutting down gracefully")
        self.notifier.stopping()
        self._graceful_stop()
        return 0

    def _on_sighup(self) -> int | None:
        """restart: the children are terminated and a new generation starts at once."""
        self._notice(self.mpm.messages.sighup, "SIGHUP received.  Attempting to restart")
        if not self._reload_config():
            return None
        self._reclaim(terminate=True)
        return self._begin_generation(graceful=False)

    def _on_sigusr1(self) -> int | None:
        """graceful: old children finish what they serve while the new generation starts."""
        self._notice(*self.mpm.messages.sigusr1)
        if not self._reload_config():
            return None
        for child in self.children.values():
            self._ask_to_stop(child)
        return self._begin_generation(graceful=True)

    def _reload_config(self) -> bool:
        """Re-read the configuration; a broken one is logged and the old one kept (and
        systemd told that the running one still serves)."""
        self.notifier.reloading()
        try:
            config = self.reload()
        except ConfigError as error:
            self.error_log.log("error", f"{error}; keeping the running configuration", ah="MP00010")
            self.notifier.ready()
            return False
        except Exception as error:  # a restart must never take the server down
            self.error_log.log(
                "error", f"reloading the configuration failed: {error}", ah="MP00010"
            )
            self.notifier.ready()
            return False
        if config.listeners != self.config.listeners:
            self.error_log.log(
                "warn",
                "Listen changed: restart with stop/start to bind new addresses",
                ah="MP00011",
            )
        self.config = config
        self.mpm = self.mpms[config.mpm.name]
        for warning in config.warnings:
            self.error_log.log("warn", warning)
        return True

    def _begin_generation(self, *, graceful: bool) -> int | None:
        """Start the next generation; a parent holding preloaded application code first
        re-execs itself (reexec.py), so the new generation forks from the new code."""
        self.hcheck.stop()  # the old generation's checks end with it (and before any re-exec)
        if self.preloaded is not None:
            error = reexec.exec_fresh(
                graceful=graceful,
                generation=self.generation,
                listeners=self.listeners,
                children=[asdict(child) for child in self.children.values()],
                command_line=self.command_line,
            )
            self.error_log.log(
                "error", f"re-exec failed ({error}); the preloaded code stays", ah="MP00006"
            )
        self._sync_proxy_state(graceful)
        self._new_generation()
        if not self._preload():
            return self._stop_unloadable()
        if graceful:
            self.spawn_state = maintenance.after_graceful_restart(self.spawn_state)
            self.pending_starts = self.config.mpm.start_servers
            self._spawn_pending()
        else:
            self._spawn_start_servers()
        self._start_hcheck()
        return None

    def _sync_proxy_state(self, graceful: bool) -> None:
        """A graceful restart keeps the counters and error state of the workers that persist;
        a full restart (the children are gone by now) rebuilds it, as Apache's slotmem is."""
        if self.proxy_state is not None:
            self.proxy_state.reconfigure(self.config, keep=graceful)
        else:
            self.proxy_state = create_proxy_state(self.config, self.scoreboard.path)

    def _start_hcheck(self) -> None:
        inherited = [sock.fileno() for sock in self.listeners] + [self._wake_r, self._wake_w]
        self.hcheck.start(self.config, self.proxy_state, self.error_log, self.generation, inherited)

    def _new_generation(self) -> None:
        self.generation += 1
        self.any_child_ready = False  # "no child ever started" is judged per generation
        self.failed_children = 0
        scoreboard = self.scoreboard
        scoreboard.generation = self.generation
        scoreboard.config_generation += 1
        scoreboard.restart_time = time.time_ns() // 1000
        mpm = self.config.mpm
        scoreboard.set_limits(mpm.threads_per_child, mpm.max_request_workers)
        self.error_log.reopen()
        self.error_log.capture_output()
        self._log_configured()

    def _log_configured(self) -> None:
        self.error_log.log(
            "notice",
            f"{SERVER_SOFTWARE} configured -- resuming normal operations",
            module=self.module,
            ah=self.mpm.messages.configured,
        )

    def _ask_to_stop(self, child: _Child) -> None:
        """Graceful: the child finishes what it serves, then exits (SIGUSR1, as prefork does)."""
        process = self.scoreboard.process(child.slot)
        process.quiescing = 1
        try:
            os.kill(child.pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass

    def _graceful_stop(self) -> None:
        for sock in self.listeners:
            sock.close()
        self.listeners = []
        for child in self.children.values():
            self._ask_to_stop(child)
        limit = self.config.mpm.graceful_shutdown_timeout
        deadline = time.monotonic() + limit if limit else None
        while self.children and (deadline is None or time.monotonic() < deadline):
            self._reap()
            if self.children:
                self._wait(0.2)
        if self.children:
            self._reclaim(terminate=True)

    # -- children ---------------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        config = self.config
        spec = ChildSpec(
            config=config,
            listeners=bucket_sockets(self.listeners, config.mpm.listen_buckets, slot),
            scoreboard=self.scoreboard,
            proxy_state=self.proxy_state,
            slot=slot,
            generation=self.generation,
            error_log=self.error_log,
            preloaded=self.preloaded,
        )
        self.scoreboard.set_slot_state(slot, STARTING, config.mpm.threads_per_child)
        serve = self.mpm.child_main
        pid = os.fork()
        if pid == 0:
            os.close(self._wake_r)
            os.close(self._wake_w)
            run_child(spec, serve)
        self.scoreboard.process(slot).start(pid, self.generation)
        self.children[pid] = _Child(pid, slot, self.generation, time.monotonic())

    def _spawn_start_servers(self) -> None:
        """StartServers children at start and after an ungraceful restart."""
        for slot in self._free_slots(self.config.mpm.start_servers):
            self._spawn(slot)

    def _free_slots(self, count: int) -> list[int]:
        used = {child.slot for child in self.children.values()}
        limit = min(self.config.mpm.server_limit, self.scoreboard.server_limit)
        return [slot for slot in range(limit) if slot not in used][:count]

    def _spawn_pending(self) -> None:
        """After a graceful restart, StartServers new children as slots come free."""
        if self.pending_starts <= 0:
            return
        current = sum(1 for c in self.children.values() if c.generation == self.generation)
        owed = min(self.pending_starts, self.config.mpm.active_daemons_limit - current)
        for slot in self._free_slots(max(0, owed)):
            self._spawn(slot)
            self.pending_starts -= 1

    def _reap(self) -> int:
        reaped = 0
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return reaped
            if pid == 0:
                return reaped
            reaped += 1
            child = self.children.pop(pid, None)
            if child is None:
                self.hcheck.reaped(pid, status)
                continue
            self._mark_dead(child)
            self._note_exit(child, status)
            if child.generation != self.generation:
                self._spawn_pending()

    def _mark_dead(self, child: _Child) -> None:
        if self.scoreboard.process(child.slot).pid == child.pid:
            self.scoreboard.mark_process_dead(child.slot)

    def _note_exit(self, child: _Child, status: int) -> None:
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            if not child.killed and signum not in (signal.SIGTERM, signal.SIGHUP):
                name = signal.Signals(signum).name
                self.error_log.log(
                    "notice",
                    f"child pid {child.pid} exit signal {name} ({signum})",
                    ah="AH00052",
                )
            return
        code = os.waitstatus_to_exitcode(status)
        if code == CHILD_FATAL:
            self.failed_children += 1
            self.spawn_state = maintenance.SpawnState()  # APEXIT_CHILDSICK: back to rate 1
            self.error_log.log(
                "error",
                f"child pid {child.pid} failed to start (exit status {code}); see the lines above",
                module=self.module,
                ah="MP00002",
            )

    def _all_failed(self) -> bool:
        """Every child failed before serving and none ever initialised: Apache exits."""
        if not self.failed_children or self.children:
            return False
        return not self._some_child_was_ready()

    def _some_child_was_ready(self) -> bool:
        if self.any_child_ready:
            return True
        snap = self.scoreboard.snapshot()
        self.any_child_ready = self._ready_in(snap)
        return self.any_child_ready

    def _ready_in(self, snap) -> bool:
        """A worker of the current generation got as far as serving."""
        generation = self.generation
        return any(
            w.pid and w.status >= READY and w.generation == generation for w in snap.workers()
        )

    # -- the once-a-second tick -----------------------------------------------------------------

    def _tick(self) -> None:
        scoreboard = self.scoreboard
        snap = scoreboard.snapshot()
        if not self.any_child_ready:
            self.any_child_ready = self._ready_in(snap)
            if self.any_child_ready:
                self.notifier.ready()  # this generation serves
        if self.failed_children and not self.any_child_ready:
            return  # do not respawn children that cannot start in a hot loop
        self._spawn_pending()
        self.hcheck.tick()
        mpm = self.config.mpm
        decision = self.mpm.maintenance(snap, mpm, self.spawn_state)
        self.spawn_state = decision.state
        for level, ah, message in decision.logs:
            self.error_log.log(level, message, module=self.module, ah=ah)
        used = {child.slot for child in self.children.values()}
        for slot in decision.spawn_slots:
            if slot not in used:
                self._spawn(slot)
        retiring = {decision.retire, *decision.retire_more} - {None}
        for child in self.children.values():
            if child.slot in retiring:
                self._ask_to_stop(child)
        children = ((c.slot, c.pid) for c in self.children.values())
        sampled = self.memory.sample(scoreboard, children, time.monotonic())
        self._find_hung_requests(snap)
        self._check_memory(sampled)
        times = os.times()
        scoreboard.set_parent_cpu(
            times.user, times.system, times.children_user, times.children_system
        )
        scoreboard.record_history(time.time(), snap, self.memory.total_kib)
        if self.notifier.enabled:  # systemd is listening
            self.notifier.tick(time.monotonic(), self._status_line(snap))

    def _status_line(self, snap) -> str:
        """mod_systemd's STATUS= figures, since the last restart."""
        totals = snap.totals()
        counts = snap.worker_counts()
        seconds = time.time() - snap.restart_time_us / 1_000_000
        return systemd.status_line(totals.accesses, counts.idle, counts.busy, seconds, totals.bytes)

    def _preload(self) -> bool:
        """Load here, before this generation forks, what its children would each load for
        themselves, then gc.freeze() so they share those pages rather than copy them: the
        handler modules in use, the MIME table and, with WSGIPreload On (an mpmd extension),
        the application. False if the application cannot be imported: the server stops, as
        when no child can load it."""
        self.preloaded = None
        share_before_fork(self.config)
        if self.config.wsgi_preload:
            try:
                import_app_modules(self.config)
                self.preloaded = build_router(self.config, self.error_log)
            except Exception:
                self.error_log.exception("MP00005: the parent could not preload the application")
                return False
        # A child's first full collection would otherwise write to every object inherited from
        # here and so copy every page holding one. Frozen objects are never collected, so the
        # previous generation's are thawed and the garbage collected first: restarts leak
        # nothing. (A WSGIPreload parent re-execs for the next generation, see reexec.py.)
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        return True

    def _stop_unloadable(self) -> int:
        """Children already serving finish (a graceful stop), then the server exits."""
        self.error_log.log("alert", _ALL_FAILED, module=self.module, ah="AH02324")
        self._graceful_stop()
        return 1

    # -- stopping ---------------------------------------------------------------------------

    def _reclaim(self, *, terminate: bool) -> None:
        """Stop every child on Apache's schedule (reclaim.py), then clear their slots."""
        reclaim(self.children, self._reap, self.error_log, terminate=terminate)
        for slot in range(self.scoreboard.server_limit):
            process = self.scoreboard.process(slot)
            if process.pid and process.pid not in self.children:
                process.pid = 0

    def _cleanup(self) -> None:
        self.notifier.stopping()  # (once: a stop signal may have said it already)
        self.notifier.close()
        self.hcheck.stop_all()
        for sock in self.listeners:
            sock.close()
        remove_unix_sockets()
        remove_pid_file(self.config.pid_file)
        if self.scoreboard is not None:
            self.scoreboard.close()
            self.scoreboard.unlink()
        if self.proxy_state is not None:
            self.proxy_state.close()
            self.proxy_state.unlink()
