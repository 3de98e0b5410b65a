"""The proxy's shared state as plain frozen values, for the pages that show it.

`ProxyState.snapshot()` copies the file under its lock and decodes the copy here, through the
record classes' own field descriptors: the status page (ProxyStatus), `/metrics` and the
balancer-manager read these values and never the shared memory itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from mpmd.handlers.proxy.state import (
    BALANCER,
    WORKER,
    BalancerSlot,
    WorkerSlot,
    flag_bit,
    is_usable,
    status_text,
)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    balancer: str  # "" for a direct ProxyPass worker
    url: str
    status: int
    status_text: str  # "Init Ok ", "Init Stby Ok ", "Init Err " ...
    usable: bool
    lbfactor: int  # x100
    lbset: int
    lbstatus: int
    busy: int
    elected: int
    transferred: int
    read: int
    retries: int
    error_time: float
    retry: float
    hc_checked: float
    hc_pcount: int
    hc_fcount: int
    route: str
    redirect: str

    def has_flag(self, letter: str) -> bool:
        return bool(self.status & flag_bit(letter))


@dataclass(frozen=True, slots=True)
class BalancerInfo:
    name: str
    lbmethod: str
    timeout: float
    max_attempts: int
    nofailover: bool
    sticky_cookie: str
    sticky_param: str
    wupdated: int
    members: tuple[WorkerInfo, ...]  # configuration order
    nonce: str = ""  # the balancer-manager's CSRF token ("" with nonce=None)


@dataclass(frozen=True, slots=True)
class ProxySnapshot:
    balancers: tuple[BalancerInfo, ...]
    workers: tuple[WorkerInfo, ...]  # direct ProxyPass workers

    def balancer(self, name: str) -> BalancerInfo:
        for info in self.balancers:
            if info.name == name:
                return info
        raise KeyError(name)


# -- which workers a configuration has ---------------------------------------------------------


class _Copy:
    """A record over copied bytes, read through the same field descriptors."""

    __slots__ = ("_mm", "_off")

    def __init__(self, raw: bytes, offset: int) -> None:
        self._mm = raw
        self._off = offset


def decode(raw: bytes, index: dict[tuple[int, str, str], int]) -> ProxySnapshot:
    members: dict[str, list[tuple[int, WorkerInfo]]] = {}
    direct = []
    for (kind, bal, _url), off in sorted(index.items(), key=lambda item: item[1]):
        if kind != WORKER:
            continue
        rec = _Copy(raw, off)
        fields = {name: WorkerSlot.__dict__[name].__get__(rec) for name in _WORKER_FIELDS}
        status = fields["status"]
        info = WorkerInfo(status_text=status_text(status), usable=is_usable(status), **fields)
        position = WorkerSlot.__dict__["position"].__get__(rec)
        (members.setdefault(bal, []) if bal else direct).append((position, info))
    balancers = []
    for (kind, name, _url), off in sorted(index.items(), key=lambda item: item[1]):
        if kind == BALANCER:
            rec = _Copy(raw, off)
            fields = {f: BalancerSlot.__dict__[f].__get__(rec) for f in _BALANCER_FIELDS}
            fields["nofailover"] = bool(fields["nofailover"])
            ordered = tuple(info for _pos, info in sorted(members.get(name, ()), key=_first))
            balancers.append(BalancerInfo(members=ordered, **fields))
    return ProxySnapshot(tuple(balancers), tuple(info for _pos, info in sorted(direct, key=_first)))


def _first(item: tuple[int, WorkerInfo]) -> int:
    return item[0]


_WORKER_FIELDS = (
    "balancer", "url", "status", "lbfactor", "lbset", "lbstatus", "busy", "elected",
    "transferred", "read", "retries", "error_time", "retry", "hc_checked", "hc_pcount",
    "hc_fcount", "route", "redirect",
)  # fmt: skip
_BALANCER_FIELDS = (
    "name", "lbmethod", "timeout", "max_attempts", "nofailover", "sticky_cookie",
    "sticky_param", "wupdated", "nonce",
)  # fmt: skip
