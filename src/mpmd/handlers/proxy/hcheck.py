"""mod_proxy_hcheck: health checks of balancer members, run once per server (reference 7.6).

Apache runs its checks in a mod_watchdog singleton: one process of the server, whatever the
number of children. mpmd does the same: the parent forks one health-check process per
generation (mpm/healthcheck.py) when some balancer member has `hcmethod` other than NONE; it
never serves a request, ends with its generation (a graceful restart starts a new one) and
exits when the parent is gone. This module is that process's work:

* a **tick** every 100 ms (Apache's AP_WD_TM_SLICE) finds the members that are due: not
  stopped (S), no check of theirs in flight, and `now > hc_checked + hcinterval`. As Apache
  stamps `updated` when the configuration is loaded, the first check of a member comes one
  interval after the process starts;
* due checks run concurrently on a **thread pool** of ProxyHCTPsize threads (16, Apache's
  default; 0 runs them one after the other in the tick, and drops the "Threaded " prefix from
  the log lines, as Apache's does);
* a check is TCP (connect only), or an HTTP/1.0 (OPTIONS, HEAD, GET) or HTTP/1.1 (OPTIONS11,
  HEAD11, GET11, with `Host: host:port`) request for `OPTIONS *` or the member's path joined
  to `hcuri` with one slash; it passes on a status 200-399, or when the member's ProxyHCExpr
  (hcexpr.py) is true of the answer. It has the member's connection timeout and timeout;
* the result goes to the shared state under `state.lock()` by Apache's exact state machine
  (`record`): a member in C or E counts passes and is enabled at hcpasses (AH03302); any other
  member counts failures and gets C at hcfails (AH03303). Like Apache, neither counter is
  reset by the opposite outcome.

Only balancer members are checked: Apache's watchdog walks the balancers, not the direct
ProxyPass workers. A body kept for `hc('body')` is capped at BODY_LIMIT bytes (the rest is
read and dropped); Apache keeps it whole.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httptools

from mpmd.config.model import BackendMember, ServerConfig
from mpmd.handlers.proxy.hcexpr import ExprError, HCExpr, HCResponse, parse
from mpmd.handlers.proxy.state import ERROR, HC_FAIL, STOPPED, ProxyState, WorkerSlot

TICK = 0.1  # seconds: the watchdog's slice
TPSIZE = 16  # ProxyHCTPsize's default (HC_THREADPOOL_SIZE)
BODY_LIMIT = 1 << 20
MODULE = "proxy_hcheck"
HTTP_METHODS = {
    "OPTIONS": ("OPTIONS", "HTTP/1.0"), "HEAD": ("HEAD", "HTTP/1.0"), "GET": ("GET", "HTTP/1.0"),
    "OPTIONS11": ("OPTIONS", "HTTP/1.1"), "HEAD11": ("HEAD", "HTTP/1.1"),
    "GET11": ("GET", "HTTP/1.1"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Target:
    """One balancer member to check, with everything a check needs worked out once."""

    balancer: str
    url: str  # the worker's name, as the log lines give it
    host: str
    port: int
    hcmethod: str
    request: bytes | None  # None for TCP
    interval: float
    passes: int
    fails: int
    expr: HCExpr | None
    expr_name: str
    connect_timeout: float
    timeout: float

    @property
    def key(self) -> tuple[str, str]:
        return self.balancer, self.url

    @property
    def header_only(self) -> bool:
        """OPTIONS and HEAD answers are read to the end of their headers only."""
        return self.request is not None and not self.request.startswith(b"GET ")


def request_for(member: BackendMember) -> bytes | None:
    """create_hcheck_req: the request a check sends (None for TCP)."""
    method, protocol = HTTP_METHODS.get(member.params.hcmethod.upper(), ("", ""))
    if not method:
        return None
    if method == "OPTIONS":
        target = "*"
    elif member.params.hcuri:
        target = member.path.rstrip("/") + "/" + member.params.hcuri.lstrip("/")
    else:
        target = member.path or "/"
    host = f"{member.host}:{member.port}"
    return f"{method} {target} {protocol}\r\nHost: {host}\r\n\r\n".encode("latin-1")


def targets(config: ServerConfig) -> list[Target]:
    """Every balancer member with a health check, in configuration order."""
    expressions = {name.lower(): text for name, text in config.hc_expressions}
    proxy_timeout = config.main.proxy.timeout
    found = []
    for balancer in config.balancers:
        for member in balancer.members:
            params = member.params
            hcmethod = params.hcmethod.upper()
            if hcmethod == "NONE":
                continue
            timeout, connect_timeout = params.timeouts(proxy_timeout or config.main.http.timeout)
            expr_text = expressions.get(params.hcexpr.lower()) if params.hcexpr else None
            found.append(
                Target(
                    balancer=balancer.name,
                    url=member.url,
                    host=member.host,
                    port=member.port,
                    hcmethod=hcmethod,
                    request=request_for(member),
                    interval=params.hcinterval,
                    passes=params.hcpasses,
                    fails=params.hcfails,
                    expr=parse(expr_text) if expr_text is not None else None,
                    expr_name=params.hcexpr,
                    connect_timeout=connect_timeout,
                    timeout=timeout,
                )
            )
    return found


# -- one check -------------------------------------------------------------------------------
class CheckFailed(Exception):
    """The back end could not be reached or sent no usable answer."""


class _Answer:
    """httptools callbacks: the head, and the body up to BODY_LIMIT."""

    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.head_done = False
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, data: bytes) -> None:
        room = BODY_LIMIT - len(self.body)
        if room > 0:
            self.body += data[:room]

    def on_message_complete(self) -> None:
        self.done = True

    def framed(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return "content-length" in names or "transfer-encoding" in names


def read_response(sock: socket.socket, target: Target) -> HCResponse:
    """Send the check's request and read the answer (hc_read_headers, hc_read_body)."""
    assert target.request is not None
    sock.sendall(target.request)
    answer = _Answer()
    parser = httptools.HttpResponseParser(answer)
    while not (answer.done or (target.header_only and answer.head_done)):
        data = sock.recv(65536)
        if not data:
            if answer.head_done and not answer.framed():
                break  # an unframed body ends with the connection
            raise CheckFailed("the back end closed the connection before the answer ended")
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as error:
            raise CheckFailed(f"malformed answer: {error}") from None
    method, protocol = HTTP_METHODS[target.hcmethod]
    return HCResponse(
        parser.get_status_code(), tuple(answer.headers), bytes(answer.body), method, protocol
    )


def probe(target: Target) -> HCResponse | None:
    """Run one check: the answer (None for TCP); CheckFailed or OSError when it failed."""
    address = (target.host, target.port)
    with socket.create_connection(address, timeout=target.connect_timeout) as sock:
        if target.request is None:
            return None
        sock.settimeout(target.timeout)
        return read_response(sock, target)


def passed(target: Target, response: HCResponse | None) -> bool:
    """Status 200-399, or the hcexpr's verdict when there is one (ExprError: AH03301)."""
    if response is None:
        return True
    if target.expr is not None:
        return target.expr.matches(response)
    return 200 <= response.status <= 399


# -- the state machine -------------------------------------------------------------------------
def record(slot: WorkerSlot, ok: bool, now: float, passes: int, fails: int) -> str | None:
    """hc_check's state machine on the shared record (the caller holds `state.lock()`):
    "ENABLING" when C and E were cleared, "DISABLING" when C was set, else None."""
    event = None
    if slot.status & (HC_FAIL | ERROR):
        if ok:
            slot.hc_pcount += 1
            if slot.hc_pcount >= passes:
                slot.status &= ~(HC_FAIL | ERROR)
                slot.hc_pcount = 0
                event = "ENABLING"
    elif not ok:
        slot.error_time = now
        slot.hc_fcount += 1
        if slot.hc_fcount >= fails:
            slot.status |= HC_FAIL
            slot.hc_fcount = 0
            event = "DISABLING"
    slot.hc_checked = now
    return event


class Checker:
    """The watchdog callback: `tick(now)` starts the due checks; results land in the state."""

    def __init__(
        self,
        targets: list[Target],
        state: ProxyState,
        error_log,
        *,
        tpsize: int = TPSIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = targets
        self.state = state
        self.error_log = error_log
        self.clock = clock
        self.pool = ThreadPoolExecutor(tpsize, "hcheck") if tpsize else None
        self.prefix = "Threaded " if self.pool else ""
        self.running: set[tuple[str, str]] = set()  # Apache's `updated = 0` while in flight

    def begin(self, now: float) -> None:
        """Stamp every member as just checked, as Apache's post_config stamps `updated`."""
        with self.state.lock():
            for target in self.targets:
                self.state.worker(target.balancer, target.url).hc_checked = now

    def due(self, now: float) -> list[Target]:
        with self.state.lock():
            found = []
            for target in self.targets:
                if target.key in self.running:
                    continue
                slot = self.state.worker(target.balancer, target.url)
                if not slot.status & STOPPED and now > slot.hc_checked + target.interval:
                    found.append(target)
            return found

    def tick(self, now: float) -> None:
        for target in self.due(now):
            self.running.add(target.key)
            if self.pool is None:
                self.check(target)
            else:
                self.pool.submit(self.check, target)

    def check(self, target: Target) -> None:
        """hc_check: probe, judge, record, log; never raises."""
        log = self.error_log
        try:
            log.log("debug", f"{self.prefix}Health checking {target.url}", module=MODULE,
                    ah="AH03256")  # fmt: skip
            try:
                ok = passed(target, probe(target))
            except (OSError, CheckFailed) as error:
                log.log("debug", f"Health check {target.hcmethod} failed for {target.url}: "
                        f"{error}", module=MODULE, ah="AH03251")  # fmt: skip
                ok = False
            except ExprError as error:
                log.log("info", f"Error on checking condition {target.expr_name} for "
                        f"{target.url} ({target.url}): {error}", module=MODULE,
                        ah="AH03301")  # fmt: skip
                ok = False
            now = self.clock()
            with self.state.lock():
                slot = self.state.worker(target.balancer, target.url)
                event = record(slot, ok, now, target.passes, target.fails)
            if event is not None:
                ah = "AH03302" if event == "ENABLING" else "AH03303"
                log.log("info", f"{self.prefix}Health check {event} {target.url}",
                        module=MODULE, ah=ah)  # fmt: skip
        except Exception:
            log.exception(f"MP00131: health check of {target.url} failed", module=MODULE)
        finally:
            self.running.discard(target.key)


def serve(
    config: ServerConfig,
    state: ProxyState,
    error_log,
    *,
    stopping: Callable[[], bool],
    parent_pid: int,
    tpsize: int = TPSIZE,
) -> None:
    """The health-check process's loop: a tick every TICK seconds until `stopping()` or the
    parent is gone. Checks still in flight are abandoned (the process exits)."""
    checker = Checker(targets(config), state, error_log, tpsize=tpsize)
    checker.begin(time.time())
    while not stopping() and os.getppid() == parent_pid:
        checker.tick(time.time())
        time.sleep(TICK)
