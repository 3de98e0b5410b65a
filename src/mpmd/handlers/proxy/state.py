"""The proxy's shared state: one slot per back-end worker and per balancer, in shared memory.

Apache keeps each worker's `proxy_worker_shared` and each balancer's `proxy_balancer_shared` in
slotmem so every child sees the same error state, counters and manager edits. mpmd keeps them in
one file beside the scoreboard (`<scoreboard path>.proxy`, a /dev/shm file), created by the
parent before the first fork and mapped by every process. It holds a header and fixed-size
records: a balancer record per balancer and a worker record per balancer member and per direct
ProxyPass worker (keyed by (balancer name or "", worker URL)).

Every read-modify-write holds `lock()`: a threading.RLock for the threads of one process plus
an fcntl lock on the file for the processes (re-made in a forked child). A record never moves:
a graceful `reconfigure` keeps the records of workers that persist (their counters, error state
and health-check counts, as the brief for mpmd asks), appends new ones and retires removed ones,
so children of the old generation keep writing into valid records. A full restart rebuilds the
file, as Apache's slotmem is rebuilt on every restart without BalancerPersist.
This module never logs and never chooses a worker: it is memory, its layout and the lock.
"""

from __future__ import annotations

import fcntl
import functools
import mmap
import os
import struct
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from dataclasses import fields as info_fields
from operator import itemgetter

from mpmd.config.model import BackendMember, Balancer, ServerConfig
from mpmd.mpm.scoreboard_layout import Field, c_str

# -- status flags: Apache's bits (mod_proxy.h) and its balancer-manager labels (proxy_wstat_tbl)
INIT, IGNORE, DRAIN, GENERIC, SHUTDOWN, DISABLED = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20
STOPPED, ERROR, STANDBY, FREE, HC_FAIL, SPARE = 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
FLAG_BITS = {
    "O": INIT, "I": IGNORE, "N": DRAIN, "G": GENERIC, "U": SHUTDOWN, "D": DISABLED,
    "S": STOPPED, "E": ERROR, "H": STANDBY, "F": FREE, "C": HC_FAIL, "R": SPARE,
}  # fmt: skip
_LABELS = (
    (INIT, "Init "), (IGNORE, "Ign "), (DRAIN, "Drn "), (GENERIC, "Gen "), (SHUTDOWN, "Shut "),
    (DISABLED, "Dis "), (STOPPED, "Stop "), (ERROR, "Err "), (STANDBY, "Stby "),
    (SPARE, "Spar "), (FREE, "Free "), (HC_FAIL, "HcFl "),
)  # fmt: skip
NOT_USABLE = SHUTDOWN | DISABLED | STOPPED | ERROR | HC_FAIL
# `status=` letters an admin sets; a graceful restart re-applies them from the configuration
ADMIN_FLAGS = DISABLED | STOPPED | IGNORE | STANDBY | SPARE | DRAIN


def flag_bit(letter: str) -> int:
    try:
        return FLAG_BITS[letter.upper()]
    except KeyError:
        raise ValueError(f"unknown worker status flag {letter!r}") from None


def flag_bits(letters: str) -> int:
    bits = 0
    for letter in letters:
        bits |= flag_bit(letter)
    return bits


def is_usable(status: int) -> bool:
    """PROXY_WORKER_IS_USABLE: initialised and none of Shut Dis Stop Err HcFl."""
    return bool(status & INIT) and not status & NOT_USABLE


def status_text(status: int) -> str:
    """ap_proxy_parse_wstatus: the labels, `??? ` for none, then `Ok ` when usable."""
    text = "".join(label for bit, label in _LABELS if status & bit) or "??? "
    return text + "Ok " if is_usable(status) else text


# -- layout ------------------------------------------------------------------------------------
MAGIC = b"MPMDPX01"
HEADER = struct.Struct("<8sII")  # magic, record size, record count
HEADER_SIZE = 64
RECORD_SIZE = 640
RETIRED, BALANCER, WORKER = 0, 1, 2  # a record's kind byte
ROUTE_SIZE = 64  # route and redirect: < 64 bytes, as the brief and reference 7.2 say
_KEY = struct.Struct("<128s256s")  # balancer name, worker URL (at _KEY_OFF in a worker record)
_KEY_OFF = 224
_BALANCER_NAME_OFF = 176
# a worker record's numbers, status to retry (offset 4), and its counters busy to read (24);
# a balancer record's settings, max_attempts to sticky_param (offset 4; wupdated skipped)
_NUMBERS = struct.Struct("<IiiqqQQQQdd")
_COUNTERS = struct.Struct("<qQQQ")
_CHOSEN = struct.Struct("<qqQ")  # lbstatus, busy, elected: adjacent in a worker's record
_SETTINGS = struct.Struct("<id8xBB6x16s64s64s")


@functools.lru_cache(maxsize=64)  # (a value changes with an edit, not with a request)
def _decoded(raw: bytes) -> tuple:
    *numbers, lbmethod, cookie, param = _SETTINGS.unpack(raw)
    return (*numbers, c_str(lbmethod), c_str(cookie), c_str(param))


class _Str:
    """A NUL-padded string field of a record (owner has _mm and _off)."""

    __slots__ = ("offset", "size")

    def __init__(self, offset: int, size: int) -> None:
        self.offset = offset
        self.size = size

    def __get__(self, rec, owner=None) -> str:
        return c_str(rec._mm[rec._off + self.offset : rec._off + self.offset + self.size])

    def __set__(self, rec, value: str) -> None:
        raw = value.encode("latin-1", "replace")
        if len(raw) >= self.size:
            raise ValueError(f"{value!r} is too long (at most {self.size - 1} bytes)")
        struct.pack_into(f"{self.size}s", rec._mm, rec._off + self.offset, raw)


class _Record:
    """A record through the map it was found in: a record never moves and a grown file's
    old map stays valid (it is never closed while the state is open), so a field access
    needs no look-up of the state's current map."""

    __slots__ = ("_mm", "_off", "_state")

    def __init__(self, state: ProxyState, offset: int) -> None:
        self._state = state
        self._off = offset
        self._mm = state._mm


class WorkerSlot(_Record):
    """One worker's shared record. Plain setters are single stores; a read-modify-write from
    the outside (counters, several fields at once) belongs inside `state.lock()`."""

    __slots__ = ()

    status = Field(4, "<I")  # flag bits
    lbfactor = Field(8, "<i")  # x100
    lbset = Field(12, "<i")
    lbstatus = Field(16, "<q")  # signed
    busy = Field(24, "<q")
    elected = Field(32, "<Q")
    transferred = Field(40, "<Q")  # bytes sent to the back end
    read = Field(48, "<Q")  # bytes received from it
    retries = Field(56, "<Q")
    error_time = Field(64, "<d")  # time.time() when it went into error
    retry = Field(72, "<d")  # seconds (configuration, kept here for the lbmethods)
    hc_checked = Field(80, "<d")  # time.time() of the last health check
    hc_pcount = Field(88, "<I")
    hc_fcount = Field(92, "<I")
    route = _Str(96, ROUTE_SIZE)
    redirect = _Str(160, ROUTE_SIZE)
    balancer = _Str(_KEY_OFF, 128)  # "" for a direct ProxyPass worker
    url = _Str(_KEY_OFF + 128, 256)
    position = Field(608, "<i")  # its index in the balancer's configuration order

    def has_flag(self, letter: str) -> bool:
        return bool(self.status & flag_bit(letter))

    def numbers(self) -> tuple:
        """status to retry (WorkerNumbers' order) in one read; a chooser holds lock()."""
        return _NUMBERS.unpack_from(self._mm, self._off + 4)

    def count_choice(self, lbstatus: int, busy: int, elected: int) -> None:
        """The chosen worker's lbstatus, busy and elected in one store; caller holds lock()."""
        _CHOSEN.pack_into(self._mm, self._off + 16, lbstatus, busy, elected)

    def settle(self, sent: int, received: int) -> None:
        """Request over: busy -= 1 (never below 0), bytes to and from it; caller holds lock()."""
        mm = self._mm
        off = self._off + 24
        busy, elected, transferred, read = _COUNTERS.unpack_from(mm, off)
        _COUNTERS.pack_into(mm, off, max(busy - 1, 0), elected, transferred + sent, read + received)

    def set_flag(self, letter: str, on: bool) -> None:
        bit = flag_bit(letter)
        with self._state.lock():
            self.status = self.status | bit if on else self.status & ~bit

    @property
    def usable(self) -> bool:
        return is_usable(self.status)

    @property
    def status_text(self) -> str:
        return status_text(self.status)


class BalancerSlot(_Record):
    """One balancer's runtime-editable parameters. An editor bumps `wupdated` (touch())."""

    __slots__ = ()

    max_attempts = Field(4, "<i")
    timeout = Field(8, "<d")  # seconds to wait for a usable worker
    wupdated = Field(16, "<q")  # µs stamp of the last change
    nofailover = Field(24, "<B")
    need_reset = Field(25, "<B")  # the lbmethod changed: its counters reset at the next choice
    lbmethod = _Str(32, 16)
    sticky_cookie = _Str(48, 64)
    sticky_param = _Str(112, 64)
    name = _Str(_BALANCER_NAME_OFF, 128)
    nonce = _Str(_BALANCER_NAME_OFF + 128, 64)  # the balancer-manager's; "" with nonce=None

    def touch(self) -> None:
        self.wupdated = max(self.wupdated + 1, time.time_ns() // 1000)

    def settings(self) -> tuple[int, float, int, int, str, str, str]:
        """(max_attempts, timeout, nofailover, need_reset, lbmethod, sticky_cookie, sticky_param)
        for each choice: one read of the record, decoded once per distinct value of it."""
        return _decoded(self._mm[self._off + 4 : self._off + 4 + _SETTINGS.size])


class WorkerNumbers:
    """A worker record's numbers (`status` to `retry`) in one unpack, for a locked section that
    reads many (choosing a member): the lbmethods change the attributes (a WorkerSlot's
    names), then `store()` writes the record back if any changed, in the same lock."""

    __slots__ = (
        "_raw", "busy", "elected", "error_time", "lbfactor", "lbset", "lbstatus", "read",
        "retries", "retry", "slot", "status", "transferred",
    )  # fmt: skip

    def __init__(self, slot: WorkerSlot) -> None:
        self.slot = slot
        self._raw = raw = slot.numbers()
        (
            self.status, self.lbfactor, self.lbset, self.lbstatus, self.busy, self.elected,
            self.transferred, self.read, self.retries, self.error_time, self.retry,
        ) = raw  # fmt: skip

    route = property(lambda self: self.slot.route)  # (strings: read from the record when asked)
    redirect = property(lambda self: self.slot.redirect)

    def store(self) -> None:
        numbers = (
            self.status, self.lbfactor, self.lbset, self.lbstatus, self.busy, self.elected,
            self.transferred, self.read, self.retries, self.error_time, self.retry,
        )  # fmt: skip
        if numbers != self._raw:
            slot = self.slot
            _NUMBERS.pack_into(slot._mm, slot._off + 4, *numbers)


# -- snapshot ------------------------------------------------------------------------------------
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
def direct_workers(config: ServerConfig) -> list[BackendMember]:
    """Every ProxyPass worker (route.member) of every vhost, one per URL (as Apache shares
    a worker between ProxyPass lines naming the same URL; the first one's parameters win)."""
    seen: dict[str, BackendMember] = {}
    for vhost in (config.main, *config.vhosts):
        for route in vhost.proxy.routes:
            if route.member is not None:
                seen.setdefault(route.member.url, route.member)
    return list(seen.values())


def needs_state(config: ServerConfig) -> bool:
    return bool(config.balancers) or bool(direct_workers(config))


def default_max_attempts(balancer: Balancer) -> int:
    """maxattempts, else members - 1 (init_balancer_members; 0 for a single member)."""
    if balancer.params.maxattempts is not None:
        return balancer.params.maxattempts
    return max(len(balancer.members) - 1, 0)


_forked: weakref.WeakSet[ProxyState] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for state in list(_forked):
        state._tlock = threading.RLock()
        state._depth = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


class _Lock:
    """ProxyState.lock(): the thread lock, then the file lock at the outermost level. A plain
    context manager (not a generator one): it is taken on every proxied request."""

    __slots__ = ("_state",)

    def __init__(self, state: ProxyState) -> None:
        self._state = state

    def __enter__(self) -> None:
        state = self._state
        state._tlock.acquire()
        if state._depth == 0:
            try:
                fcntl.lockf(state._fd, fcntl.LOCK_EX, 1, 0)
            except BaseException:
                state._tlock.release()
                raise
        state._depth += 1

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        state = self._state
        state._depth -= 1
        try:
            if state._depth == 0:
                fcntl.lockf(state._fd, fcntl.LOCK_UN, 1, 0)
        finally:
            state._tlock.release()


class ProxyState:
    """The shared mapping. `create` in the parent before forking; `attach` from a tool."""

    def __init__(self, path: str, fd: int, writable: bool, owner: bool) -> None:
        self.path = path
        self._fd = fd
        self._writable = writable
        self._owner_pid = os.getpid() if owner else 0
        self._tlock = threading.RLock()
        self._depth = 0
        self._lock = _Lock(self)
        self._mm = self._map()
        self._index: dict[tuple[int, str, str], int] = {}
        self._reindex()
        _forked.add(self)

    # -- life cycle --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str, config: ServerConfig) -> ProxyState:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, HEADER_SIZE)
        os.pwrite(fd, HEADER.pack(MAGIC, RECORD_SIZE, 0), 0)
        state = cls(path, fd, writable=True, owner=True)
        state.reconfigure(config, keep=False)
        return state

    @classmethod
    def attach(cls, path: str, readonly: bool = True, *, owner: bool = False) -> ProxyState:
        """`owner`: the parent re-attaching its own state after a re-exec (reexec.py)."""
        fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
        head = os.pread(fd, HEADER.size, 0)
        if len(head) < HEADER.size or HEADER.unpack(head)[:2] != (MAGIC, RECORD_SIZE):
            os.close(fd)
            raise ValueError(f"{path}: not an mpmd proxy state file")
        return cls(path, fd, writable=not readonly, owner=owner)

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)

    def unlink(self) -> None:
        """Remove the file; only the creating process does (a forked child never does)."""
        if self._owner_pid == os.getpid():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _map(self) -> mmap.mmap:
        size = os.fstat(self._fd).st_size
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if self._writable else 0)
        return mmap.mmap(self._fd, size, mmap.MAP_SHARED, prot)

    def _count(self) -> int:
        return HEADER.unpack_from(self._mm, 0)[2]

    def _reindex(self) -> None:
        """Offsets of the live records, by (kind, balancer name, url)."""
        if self._mm.size() < os.fstat(self._fd).st_size:  # another process grew the file
            self._mm = self._map()  # the old map is left to the collector: a thread may use it
        index = {}
        for i in range(self._count()):
            off = HEADER_SIZE + i * RECORD_SIZE
            kind = self._mm[off]
            if kind == WORKER:
                bal, url = _KEY.unpack_from(self._mm, off + _KEY_OFF)
                index[(WORKER, c_str(bal), c_str(url))] = off
            elif kind == BALANCER:
                name = self._mm[off + _BALANCER_NAME_OFF : off + _BALANCER_NAME_OFF + 128]
                index[(BALANCER, c_str(name), "")] = off
        self._index = index

    # -- the lock ----------------------------------------------------------------------------
    def lock(self) -> _Lock:
        """Exclusive across the threads and processes sharing the file; re-entrant."""
        return self._lock

    # -- lookups -----------------------------------------------------------------------------
    def worker(self, balancer_name: str | None, url: str) -> WorkerSlot:
        """A balancer member (by balancer name and member URL), or with None a direct worker."""
        return WorkerSlot(self, self._index[(WORKER, balancer_name or "", url)])

    def balancer(self, name: str) -> BalancerSlot:
        return BalancerSlot(self, self._index[(BALANCER, name, "")])

    def recalc_factors(self, name: str) -> None:
        """The manager changed a load factor: lbstatus = lbfactor for every member (a lone
        member's factor is forced to 100), as mod_proxy_balancer's recalc_factors."""
        with self.lock():
            members = [
                WorkerSlot(self, off)
                for (kind, bal, _url), off in self._index.items()
                if kind == WORKER and bal == name
            ]
            if len(members) == 1:
                members[0].lbfactor = 100
            for slot in members:
                slot.lbstatus = slot.lbfactor

    # -- configuration -----------------------------------------------------------------------
    def reconfigure(self, config: ServerConfig, *, keep: bool = True) -> None:
        """Apply a new configuration (parent only, between generations).

        keep=True (graceful restart): a worker whose (balancer, url) persists keeps its
        counters, error state and health-check counts; its configured fields (lbfactor, lbset,
        retry, route, redirect, the admin flags of `status=`) are re-applied, and so are the
        balancers' parameters (manager edits are not persisted, as Apache says). New workers
        start fresh (lbstatus 0, as Apache's zeroed slotmem); removed ones are retired, never
        reused. keep=False (start, full restart): every record is rebuilt from scratch.
        """
        with self.lock():
            self._reindex()
            if not keep:
                HEADER.pack_into(self._mm, 0, MAGIC, RECORD_SIZE, 0)
                self._index = {}
            wanted: list[tuple[tuple[int, str, str], Balancer | BackendMember, int]] = []
            for balancer in config.balancers:
                wanted.append(((BALANCER, balancer.name, ""), balancer, 0))
                for i, member in enumerate(balancer.members):
                    wanted.append(((WORKER, balancer.name, member.url), member, i))
            for i, member in enumerate(direct_workers(config)):
                wanted.append(((WORKER, "", member.url), member, i))
            live = dict(self._index)
            new = [key for key, _obj, _bal in wanted if key not in live]
            self._grow(len(new))
            count = self._count()
            for key in new:
                off = HEADER_SIZE + count * RECORD_SIZE
                self._mm[off : off + RECORD_SIZE] = bytes(RECORD_SIZE)
                self._mm[off] = key[0]
                if key[0] == WORKER:
                    _KEY.pack_into(self._mm, off + _KEY_OFF, *(s.encode() for s in key[1:]))
                live[key] = off
                count += 1
            HEADER.pack_into(self._mm, 0, MAGIC, RECORD_SIZE, count)
            wanted_keys = {key for key, _obj, _bal in wanted}
            for key, off in live.items():
                if key not in wanted_keys:
                    self._mm[off] = RETIRED
            fresh = set(new)
            for key, obj, position in wanted:
                if isinstance(obj, Balancer):
                    _apply_balancer(BalancerSlot(self, live[key]), obj)
                else:
                    _apply_worker(WorkerSlot(self, live[key]), obj, position, key in fresh)
            self._reindex()

    def _grow(self, records: int) -> None:
        need = HEADER_SIZE + (self._count() + records) * RECORD_SIZE
        if need > self._mm.size():
            os.ftruncate(self._fd, need)
            self._mm = self._map()

    # -- readers -----------------------------------------------------------------------------
    def snapshot(self) -> ProxySnapshot:
        """Every balancer (with its members) and direct worker, as plain frozen values."""
        if self._writable:
            with self.lock():
                self._reindex()
                raw = self._mm[:]
        else:
            self._reindex()
            raw = self._mm[:]
        return _decode(raw, self._index)


def _apply_balancer(slot: BalancerSlot, balancer: Balancer) -> None:
    params = balancer.params
    slot.name = balancer.name
    slot.lbmethod = params.lbmethod
    slot.timeout = params.timeout
    slot.max_attempts = default_max_attempts(balancer)
    slot.nofailover = params.nofailover
    slot.sticky_cookie = params.sticky_cookie
    slot.sticky_param = params.sticky_param
    slot.need_reset = 0
    # a random UUID chosen here, in the parent, so every child's form carries the same one
    slot.nonce = str(uuid.uuid4()) if params.nonce == "" else params.nonce or ""
    slot.touch()


def _apply_worker(slot: WorkerSlot, member: BackendMember, position: int, fresh: bool) -> None:
    params = member.params
    configured = flag_bits(params.status)
    if fresh:
        slot.status = INIT | configured
    else:
        slot.status = (slot.status & ~ADMIN_FLAGS) | configured | INIT
    slot.position = position
    slot.lbfactor = params.loadfactor
    slot.lbset = params.lbset
    slot.retry = params.retry
    slot.route = params.route
    slot.redirect = params.redirect


@dataclass(slots=True)
class _Copy:
    """A record over copied bytes, read through the same field descriptors."""

    _mm: bytes
    _off: int


def _decode(raw: bytes, index: dict[tuple[int, str, str], int]) -> ProxySnapshot:
    records = sorted(index.items(), key=itemgetter(1))  # (in file order)
    members: dict[str, list[tuple[int, WorkerInfo]]] = {}
    direct = []
    for (kind, bal, _url), off in records:
        if kind == WORKER:
            rec = _Copy(raw, off)
            fields = {name: WorkerSlot.__dict__[name].__get__(rec) for name in _WORKER_FIELDS}
            status = fields["status"]
            info = WorkerInfo(status_text=status_text(status), usable=is_usable(status), **fields)
            position = WorkerSlot.__dict__["position"].__get__(rec)
            (members.setdefault(bal, []) if bal else direct).append((position, info))
    balancers = []
    for (kind, name, _url), off in records:
        if kind == BALANCER:
            rec = _Copy(raw, off)
            fields = {f: BalancerSlot.__dict__[f].__get__(rec) for f in _BALANCER_FIELDS}
            fields["nofailover"] = bool(fields["nofailover"])
            ordered = tuple(info for _pos, info in sorted(members.get(name, ()), key=_FIRST))
            balancers.append(BalancerInfo(members=ordered, **fields))
    return ProxySnapshot(tuple(balancers), tuple(info for _pos, info in sorted(direct, key=_FIRST)))


_FIRST = itemgetter(0)  # (position, info) by position
# what a snapshot reads from the records as stored (the other Info fields are derived)
_WORKER_FIELDS = tuple(
    f.name for f in info_fields(WorkerInfo) if f.name not in ("status_text", "usable")
)
_BALANCER_FIELDS = tuple(f.name for f in info_fields(BalancerInfo) if f.name != "members")
