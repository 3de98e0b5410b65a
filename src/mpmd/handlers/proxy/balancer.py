"""The per-child runtime the proxy handler calls: choose a worker, count it, fail it over.

One BalancerRuntime per `balancer://` and one WorkerRuntime per direct ProxyPass worker, built
in each child over the shared ProxyState. `choose` is proxy_balancer_pre_request (reference
7.5 steps 1-5): forced recovery, the sticky route, nofailover, the lbmethod; the chosen
worker is counted (busy, elected) in the same locked section. It never sleeps
and never blocks on anything but the short state lock: when it raises NoWorker the caller
may wait for the balancer's `timeout` (a blocking worker in 10 ms steps, the event loop with a
timer) and call it again. `failed` and `after_response` are the failover bookkeeping
(AH00959, failonstatus, failontimeout). The caller logs a NoWorker's message itself, with
the client, as Apache's pre_request does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from mpmd.config.model import BackendMember, Balancer, ProxyRoute, ServerConfig
from mpmd.handlers.proxy.backend import balancer_name
from mpmd.handlers.proxy.lbmethods import (
    charge_sticky,
    find_best,
    force_recovery,
    plain_byrequests,
    reset,
    retry_worker,
)
from mpmd.handlers.proxy.state import (
    ERROR,
    IGNORE,
    ProxyState,
    WorkerNumbers,
    WorkerSlot,
    is_usable,
)
from mpmd.handlers.proxy.sticky import find_session_route


class NoWorker(Exception):
    """No usable worker: answer `status` (503) and log `message` at error level."""

    def __init__(self, ah: str, text: str, module: str = "proxy_balancer") -> None:
        super().__init__(f"{ah}: {text}")
        self.status = 503
        self.ah = ah
        self.text = text
        self.module = module

    @property
    def message(self) -> str:
        return f"{self.ah}: {self.text}"


@dataclass
class Choice:
    member: BackendMember
    slot: WorkerSlot
    env: dict[str, str]  # BALANCER_* variables for the request (empty for a direct worker)
    sticky_route: str | None  # the route the client sent, if any
    max_attempts: int = 0  # the runtime's max_attempts as this choice read it


class _Runtime:
    """What balancers and direct workers share: the counters and the error bookkeeping."""

    def __init__(
        self,
        state: ProxyState,
        error_log,
        failonstatus: frozenset[int] = frozenset(),
        failontimeout: bool = False,
    ) -> None:
        self.state = state
        self._lock = state.lock()  # (one object for the state's life: asked once)
        self.error_log = error_log
        self._failonstatus = failonstatus
        self._failontimeout = failontimeout
        self._name = ""

    def finished(self, choice: Choice, sent: int, received: int) -> None:
        """The request is over: busy -= 1 (never below 0), bytes to and from the back end."""
        with self._lock:
            choice.slot.settle(sent, received)

    def failed(self, choice: Choice, now: float) -> None:
        """Connect error, reset or 503 from the back end: the worker goes into Error for
        `retry` seconds, unless flag I (ap_proxy_connect_backend)."""
        slot = choice.slot
        with self._lock:
            if not slot.usable or slot.status & IGNORE:
                return
            slot.error_time = now
            slot.status |= ERROR
        member = choice.member
        self.error_log.log(
            "error",
            f"ap_proxy_connect_backend disabling worker for ({member.host}:{member.port}) "
            f"for {int(member.params.retry)}s",
            module="proxy",
            ah="AH00959",
        )

    def after_response(self, choice: Choice, status: int, timed_out: bool) -> bool:
        """proxy_balancer_post_request: a status in failonstatus, or a back-end timeout with
        failontimeout, puts the worker into Error (not with flag I). True if it did."""
        if status not in self._failonstatus and not (timed_out and self._failontimeout):
            return False  # the common case: nothing to check, no lock taken
        slot = choice.slot
        notes = []
        with self._lock:
            if slot.status & IGNORE:
                return False
            if status in self._failonstatus:
                notes.append(
                    ("AH01174", f"{self._name}: Forcing worker ({choice.member.url}) into error "
                     f"state due to status code {status} matching 'failonstatus' balancer "
                     "parameter")
                )  # fmt: skip
            if timed_out and self._failontimeout:
                notes.append(
                    ("AH02460", f"{self._name}: Forcing worker ({choice.member.url}) into error "
                     "state due to timeout and 'failontimeout' parameter being set")
                )  # fmt: skip
            if notes:
                slot.status |= ERROR
                slot.error_time = time.time()
        for ah, text in notes:
            self.error_log.log("error", text, module="proxy_balancer", ah=ah)
        return bool(notes)


class BalancerRuntime(_Runtime):
    """One balancer://, for one child."""

    def __init__(self, balancer: Balancer, state: ProxyState, error_log) -> None:
        params = balancer.params
        super().__init__(state, error_log, params.failonstatus, params.failontimeout)
        self.balancer = balancer
        self._name = balancer.name
        self.slot = state.balancer(balancer.name)
        self._members = balancer.members
        self._slots = [state.worker(balancer.name, member.url) for member in balancer.members]

    @property
    def max_attempts(self) -> int:
        """Failover attempts: maxattempts, else members - 1 (a manager edit wins)."""
        return self.slot.max_attempts

    @property
    def timeout(self) -> float:
        """Seconds the caller may wait for a usable worker before giving up (0: none)."""
        return self.slot.timeout

    def choose(self, path_and_query: str, cookie: str | None, now: float) -> Choice:
        """Pick the worker for a request and count it (busy += 1, elected += 1), or raise
        NoWorker (503). Each member's record is read once and written back once."""
        with self._lock:
            max_attempts, _, nofailover, need_reset, lbmethod, sticky_cookie, sticky_param = (
                self.slot.settings()
            )
            if lbmethod == "byrequests" and not (sticky_cookie or need_reset):
                plain = self._plain_byrequests()
                if plain is not None:
                    return self._chosen(plain, {}, None, max_attempts)
            return self._choose(
                path_and_query, cookie, now, max_attempts, nofailover, need_reset, lbmethod,
                sticky_cookie, sticky_param,
            )  # fmt: skip

    def _plain_byrequests(self) -> int | None:
        """The usual case's choice (lbmethods.plain_byrequests), counted; None if it is not
        the usual case. Caller holds the lock."""
        slots = self._slots
        numbers = [slot.numbers() for slot in slots]
        plain = plain_byrequests(numbers)
        if plain is None:
            return None
        winner, lbstatuses = plain
        for index, before in enumerate(numbers):
            if lbstatuses[index] != before[3] and index != winner:
                slots[index].lbstatus = lbstatuses[index]
        chosen = numbers[winner]
        slots[winner].count_choice(lbstatuses[winner], chosen[4] + 1, chosen[5] + 1)
        return winner

    def _chosen(
        self, index: int, env: dict[str, str], route: str | None, max_attempts: int
    ) -> Choice:
        """The Choice of member `index`, with the BALANCER_* variables it sets."""
        member = self._members[index]
        slot = self._slots[index]
        env["BALANCER_NAME"] = self._name
        env["BALANCER_WORKER_NAME"] = member.url
        env["BALANCER_WORKER_ROUTE"] = slot.route
        return Choice(member, slot, env, route, max_attempts)

    def _choose(
        self,
        path_and_query: str,
        cookie: str | None,
        now: float,
        max_attempts: int,
        nofailover: int,
        need_reset: int,
        lbmethod: str,
        sticky_cookie: str,
        sticky_param: str,
    ) -> Choice:
        """Every other case: sticky sessions, flags, lbsets, a reset, the other lbmethods
        (reference 7.5 steps 1-5). Caller holds the lock."""
        balancer = self.balancer
        params = balancer.params
        env: dict[str, str] = {}
        workers = [WorkerNumbers(slot) for slot in self._slots]
        try:
            if need_reset:
                reset(lbmethod, workers)
                self.slot.need_reset = 0
            if force_recovery(workers, now) and params.forcerecovery:
                self._force_recovery(workers)
            session = (
                find_session_route(
                    workers,
                    path_and_query,
                    cookie,
                    sticky_cookie=sticky_cookie,
                    sticky_param=sticky_param,
                    separator=params.sticky_separator,
                    scolonpathdelim=params.scolonpathdelim,
                    now=now,
                )
                if sticky_cookie  # (None without: not sticky)
                else None
            )
            route = session.route if session is not None else None
            if session is not None and session.worker is not None:
                winner = session.worker
                charge_sticky(workers, winner)
                if session.changed:
                    env["BALANCER_ROUTE_CHANGED"] = "1"
            else:
                if route and nofailover and any(w.route == route for w in workers):
                    raise NoWorker(
                        "AH01167",
                        f"{balancer.name}: All workers are in error state for route ({route})",
                    )
                winner = find_best(lbmethod, workers, now)
                if winner is None:
                    if workers:
                        raise NoWorker(
                            "AH01170", f"{balancer.name}: All workers are in error state"
                        )
                    raise NoWorker("AH01171", f"{balancer.name}: No workers in balancer")
                if sticky_cookie:
                    env["BALANCER_ROUTE_CHANGED"] = "1"
            winner.busy += 1  # the request goes to it (Apache counts it in the same section)
            winner.elected += 1
        finally:
            for worker in workers:
                worker.store()
        if route is not None:
            env["BALANCER_SESSION_STICKY"] = session.sticky_used  # type: ignore[union-attr]
            env["BALANCER_SESSION_ROUTE"] = route
        return self._chosen(workers.index(winner), env, route, max_attempts)

    def _force_recovery(self, workers: list[WorkerNumbers]) -> None:
        """Every worker is in error: clear Error on all of them at once (AH01165)."""
        for worker, member in zip(workers, self._members, strict=True):
            worker.retries += 1
            worker.status &= ~ERROR
            self.error_log.log(
                "debug",
                f"{self._name}: Forcing recovery for worker ({member.host}:{member.port})",
                module="proxy_balancer",
                ah="AH01165",
            )


class WorkerRuntime(_Runtime):
    """A direct ProxyPass worker: the same interface, one member, no failover."""

    max_attempts = 0
    timeout = 0.0

    def __init__(self, member: BackendMember, state: ProxyState, error_log) -> None:
        super().__init__(state, error_log)
        self.member = member
        self.slot = state.worker(None, member.url)

    def choose(self, path_and_query: str, cookie: str | None, now: float) -> Choice:
        """The worker itself, counted (busy += 1, elected += 1), unless it is unusable
        after a retry (AH00940, 503)."""
        with self._lock:
            worker = WorkerNumbers(self.slot)
            if not is_usable(worker.status):
                retry_worker(worker, now)
            usable = is_usable(worker.status)
            if usable:
                worker.busy += 1
                worker.elected += 1
            worker.store()
        if not usable:
            member = self.member
            function = "HTTP" if member.scheme == "http" else "WS"
            raise NoWorker(
                "AH00940",
                f"{function}: disabled connection for ({member.host}:{member.port})",
                module="proxy",
            )
        return Choice(self.member, self.slot, {}, None)


def settle_all(finished: list[tuple[_Runtime, Choice, int, int]]) -> None:
    """`finished(choice, sent, received)` for several requests, in the caller's locked
    section (the event loop's round end, which holds the state's lock once for all of them)."""
    for _, choice, sent, received in finished:
        choice.slot.settle(sent, received)


def runtime_factory(
    config: ServerConfig, state: ProxyState, error_log
) -> Callable[[ProxyRoute], BalancerRuntime | WorkerRuntime]:
    """The child's runtime for a route: one per balancer and one per direct worker URL, so
    routes that share a balancer or a worker share its runtime, as they share its slots."""
    balancers = {b.name: b for b in config.balancers}
    made: dict[str, BalancerRuntime | WorkerRuntime] = {}

    def runtime_for(route: ProxyRoute) -> BalancerRuntime | WorkerRuntime:
        member = route.member
        key = member.url if member is not None else balancer_name(route.target or "")
        runtime = made.get(key)
        if runtime is None:
            if member is not None:
                runtime = WorkerRuntime(member, state, error_log)
            else:
                runtime = BalancerRuntime(balancers[key], state, error_log)
            made[key] = runtime
        return runtime

    return runtime_for
