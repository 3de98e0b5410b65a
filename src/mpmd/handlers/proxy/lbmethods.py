"""Worker selection (reference 7.4): the common driver and the byrequests, bytraffic and
bybusyness methods, as mod_proxy's proxy_balancer_get_best_worker and mod_lbmethod_*.

Pure functions over a sequence of worker-like objects in configuration order: anything with
the attributes `status` (flag bits from state.py), `lbfactor`, `lbset`, `lbstatus`, `busy`,
`transferred`, `read`, `error_time`, `retry` and `retries` (a WorkerSlot, or a plain object in
tests). They read and write those attributes; the caller holds the state lock around a call,
as Apache holds the balancer mutex. Times are passed in (`now`), so nothing here sleeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mpmd.handlers.proxy.state import (
    DRAIN,
    ERROR,
    IGNORE,
    INIT,
    NOT_USABLE,
    SPARE,
    STANDBY,
    STOPPED,
    is_usable,
)

METHODS = ("byrequests", "bytraffic", "bybusyness")
IsBest = Callable[[Any, Any], bool]


def retry_worker(worker: Any, now: float) -> bool:
    """ap_proxy_retry_worker: a worker in error is put back (its Error cleared) once
    `now > error_time + retry`, or at once with flag I; never while it is Stopped. Returns
    whether it is out of error now (it may still be unusable for another reason)."""
    status = worker.status
    if not status & ERROR:
        return True
    if status & STOPPED:
        return False
    if status & IGNORE or now > worker.error_time + worker.retry:
        worker.retries += 1
        worker.status = status & ~ERROR
        return True
    return False


def best_worker(workers: Sequence[Any], is_best: IsBest, now: float) -> Any | None:
    """proxy_balancer_get_best_worker: the lbsets in order, the first set yielding a worker
    wins. In a set: draining members (N) are skipped, counted unusable unless spare/standby;
    unusable members get a retry; usable normal members compete; then as many usable spares
    (R) as there are unusable normal members; the standbys (H) only if nothing else did."""
    best = None
    max_lbset = 0
    cur_lbset = 0
    while best is None and cur_lbset <= max_lbset:
        unusable = 0
        spares = []
        standbys = []
        for worker in workers:
            lbset = worker.lbset
            if lbset > max_lbset:
                max_lbset = lbset
            if lbset != cur_lbset:
                continue
            status = worker.status
            if status & DRAIN:
                if not status & (SPARE | STANDBY):
                    unusable += 1
                continue
            usable = is_usable(status)
            if not usable:
                retry_worker(worker, now)
                status = worker.status
                usable = is_usable(status)
            if status & SPARE:
                if usable:
                    spares.append(worker)
            elif status & STANDBY:
                if usable:
                    standbys.append(worker)
            elif usable:
                if is_best(worker, best):
                    best = worker
            else:
                unusable += 1
        for worker in spares[:unusable]:
            if is_best(worker, best):
                best = worker
        if best is None:
            for worker in standbys:
                if is_best(worker, best):
                    best = worker
        cur_lbset += 1
    return best


def find_best(method: str, workers: Sequence[Any], now: float) -> Any | None:
    """The lbmethod's finder: the chosen worker (its lbstatus already charged) or None."""
    if method == "byrequests":
        return _credit(workers, now, _higher_lbstatus)
    if method == "bybusyness":
        return _credit(workers, now, _fewer_busy)
    if method == "bytraffic":
        return _bytraffic(workers, now)
    raise ValueError(f"unknown lbmethod {method!r}")


# Flags that make best_worker treat a worker otherwise than as a plain usable one.
_NOT_PLAIN = NOT_USABLE | DRAIN | SPARE | STANDBY | INIT


def plain_byrequests(numbers: Sequence[tuple]) -> tuple[int, list[int]] | None:
    """byrequests over workers that are all usable, flagless (N R H) and in lbset 0, which
    is most of the time: what find_best does for them, on (status, lbfactor, lbset, lbstatus,
    ...) tuples. (winner's index, every worker's new lbstatus), or None for any other case
    (the caller then runs find_best)."""
    total = 0
    best = -1
    best_status = 0
    lbstatuses = []
    for index, worker in enumerate(numbers):
        if worker[0] & _NOT_PLAIN != INIT or worker[2]:
            return None
        lbfactor = worker[1]
        lbstatus = worker[3] + lbfactor
        total += lbfactor
        lbstatuses.append(lbstatus)
        if best < 0 or lbstatus > best_status:
            best = index
            best_status = lbstatus
    if best < 0:
        return None
    lbstatuses[best] -= total
    return best, lbstatuses


def _higher_lbstatus(current: Any, best: Any) -> bool:
    return current.lbstatus > best.lbstatus


def _fewer_busy(current: Any, best: Any) -> bool:
    return current.busy < best.busy or (
        current.busy == best.busy and current.lbstatus > best.lbstatus
    )


def _credit(workers: Sequence[Any], now: float, better: IsBest) -> Any | None:
    """byrequests and bybusyness: each candidate earns its lbfactor (lbstatus and the total),
    the winner pays the total back."""
    total = 0

    def is_best(current: Any, best: Any) -> bool:
        nonlocal total
        lbfactor = current.lbfactor
        current.lbstatus += lbfactor
        total += lbfactor
        return best is None or better(current, best)

    winner = best_worker(workers, is_best, now)
    if winner is not None:
        winner.lbstatus -= total
    return winner


def _bytraffic(workers: Sequence[Any], now: float) -> Any | None:
    """The lowest (transferred / lbfactor + read / lbfactor), integer division as in C."""
    least = 0

    def is_best(current: Any, best: Any) -> bool:
        nonlocal least
        traffic = current.transferred // current.lbfactor + current.read // current.lbfactor
        if best is None or traffic < least:
            least = traffic
            return True
        return False

    return best_worker(workers, is_best, now)


def charge_sticky(workers: Sequence[Any], routed: Any) -> None:
    """A sticky hit (proxy_balancer_pre_request's default updatelbstatus, which every
    lbmethod here uses): each usable member earns its lbfactor and the routed one pays the
    total, so sticky traffic still counts against its share."""
    total = 0
    for worker in workers:
        if is_usable(worker.status):
            worker.lbstatus += worker.lbfactor
            total += worker.lbfactor
    routed.lbstatus -= total


def reset(method: str, workers: Sequence[Any]) -> None:
    """The lbmethod's reset (its counters), run when the manager switches lbmethod."""
    for worker in workers:
        if method == "bytraffic":
            worker.transferred = 0
            worker.read = 0
        else:
            worker.lbstatus = 0
            if method == "bybusyness":
                worker.busy = 0


def force_recovery(workers: Sequence[Any], now: float) -> bool:
    """force_recovery's test: True when every worker is in error even after a retry (the
    caller then clears Error on all of them, with forcerecovery On)."""
    for worker in workers:
        if not worker.status & ERROR or retry_worker(worker, now):
            return False
    return bool(workers)
