"""mod_status for mpmd: `SetHandler server-status` as Apache's HTML page and `?auto` text.

It owns Apache's status formats (reference 4.4-4.6): line names, their order, the units
(status_format.py: APR's `%g`, single-precision arithmetic), the HTML sections in Apache's
order, `?auto`, `?notable` and `?refresh=N`; plus the history charts (charts.py) and the memory
section (status_memory.py) as mpmd sections after the scoreboard key, and the plain-text
report `mpmctl status` prints.
A request only copies the scoreboard (`Scoreboard.snapshot()`) and formats it: the handler
never waits on a lock, a process or the network, and never writes to the scoreboard.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from mpmd import SERVER_SOFTWARE
from mpmd.config.model import ServerConfig
from mpmd.handlers.charts import history_section
from mpmd.handlers.status_format import (
    KBYTE,
    MBYTE,
    apr_g,
    escape_html,
    f32,
    format_bytes,
    format_kbytes,
    show_time,
)
from mpmd.handlers.status_memory import memory_cells, memory_lines, memory_section, memory_sum_cells
from mpmd.http.exchange import Exchange
from mpmd.http.fields import host_name
from mpmd.mpm.scoreboard import (
    DEAD,
    GRACEFUL,
    READY,
    STATE_LEGEND,
    Scoreboard,
    Snapshot,
    WorkerInfo,
)

Handler = Callable[[Exchange], None]
AUTO_TYPE = "text/plain; charset=ISO-8859-1"
HTML_TYPE = "text/html; charset=ISO-8859-1"
DEFAULT_REFRESH = 10
GRID_WIDTH = 64  # the HTML page wraps the scoreboard string every 64 slots

# mpmd's build stamp, shaped like Apache's `Server Built:` (the package's install time, UTC).
SERVER_BUILT = time.strftime(
    "%Y-%m-%dT%H:%M:%S", time.gmtime(os.stat(os.path.dirname(__file__)).st_mtime)
)
_TIME_FORMAT = "%A, %d-%b-%Y %H:%M:%S %Z"
# The legend in Apache's order and line breaks (state char, text, separator after it).
_KEY_ORDER = "_SRWKDCLGI."
_KEY_BREAK = {"R": ",<br />", "D": ",<br />", "G": ",<br /> ", ".": "<br />"}  # else ", "
# The words `?notable` prints for each state.
_MODE_WORDS = (
    "Dead", "Starting", "Ready", "<b>Read</b>", "<b>Write</b>", "<b>Keepalive</b>",
    "<b>Logging</b>", "<b>DNS lookup</b>", "<b>Closing</b>", "Graceful", "Dying",
)  # fmt: skip
_WORKER_LEGEND = (
    ("Srv", "Child Server number - generation"),
    ("PID", "OS process ID"),
    ("Acc", "Number of accesses this connection / this child / this slot"),
    ("M", "Mode of operation"),
    ("CPU", "CPU usage, number of seconds"),
    ("SS", "Seconds since beginning of most recent request"),
    ("Req", "Milliseconds required to process most recent request"),
    ("Dur", "Sum of milliseconds required to process all requests"),
    ("Conn", "Kilobytes transferred this connection"),
    ("Child", "Megabytes transferred this child"),
    ("Slot", "Total megabytes transferred this slot"),
)


def parse_query(query: str) -> tuple[bool, bool, int | None]:
    """(auto, notable, refresh seconds or None); options match as substrings, as in Apache."""
    refresh = None
    at = query.find("refresh")
    if at >= 0:
        rest = query[at + 7 :]
        seconds = 0
        if rest.startswith("="):  # atol: leading digits, anything after them ignored
            digits = rest[1:].lstrip(" \t")
            sign = -1 if digits.startswith("-") else 1
            digits = digits.lstrip("+-")
            end = 0
            while end < len(digits) and "0" <= digits[end] <= "9":
                end += 1
            seconds = sign * int(digits[:end][:18] or 0)  # atol's range, not 5,000 digits
        refresh = seconds if seconds >= 1 else DEFAULT_REFRESH
    return "auto" in query, "notable" in query, refresh


# -- one view of the scoreboard -----------------------------------------------------------------


class StatusFacts:
    """What the page says that does not change while a configuration runs (built once)."""

    def __init__(self, config: ServerConfig) -> None:
        mpm = config.mpm
        self.mpm = mpm.name
        self.is_async = mpm.name == "event"
        self.extended = config.extended_status
        self.active_daemons_limit = mpm.active_daemons_limit
        self.threads_per_child = mpm.threads_per_child
        self.max_request_workers = mpm.max_request_workers
        self.server_version = SERVER_SOFTWARE
        self.server_built = SERVER_BUILT


class StatusView:
    """Everything one status page shows, computed once from one snapshot (reference 4.3)."""

    def __init__(self, snap: Snapshot, facts: StatusFacts, now: float | None = None) -> None:
        self.snap = snap
        self.facts = facts
        self.now = time.time() if now is None else now
        self.uptime = max(0, int(self.now - snap.restart_time_us / 1_000_000))
        counts = snap.worker_counts()
        self.busy, self.idle, self.graceful = counts.busy, counts.idle, counts.graceful
        self.scoreboard = snap.scoreboard_string(
            facts.active_daemons_limit, facts.threads_per_child
        )
        try:
            self.load = os.getloadavg()
        except OSError:
            self.load = (-1.0, -1.0, -1.0)
        totals = snap.totals()
        self.accesses = totals.accesses
        self.kbytes = totals.bytes // KBYTE
        self.duration_ms = totals.duration_us // 1000
        self.duration_us = totals.duration_us
        # A worker's CPU is its process's times() at its last request: take each process's
        # latest (mod_status's max per process, threads share one count), then add them up.
        per_process: dict[int, tuple[float, float]] = {}
        for worker in snap.workers(active_only=True):
            seen = per_process.get(worker.slot, (0.0, 0.0))
            per_process[worker.slot] = max(seen, (worker.cpu_user, worker.cpu_system))
        user, system, cuser, csystem = snap.parent_cpu
        user += sum(u for u, _ in per_process.values())
        system += sum(s for _, s in per_process.values())
        self.cpu = (user, system, cuser, csystem)
        self.processes = snap.live_processes()

    def time_text(self, seconds: float) -> str:
        return time.strftime(_TIME_FORMAT, time.localtime(seconds))

    def rate_lines(self) -> list[tuple[str, str]]:
        """The ExtendedStatus `?auto` lines from Total Accesses to DurationPerReq."""
        count, kb, uptime = self.accesses, self.kbytes, self.uptime
        lines = [
            ("Total Accesses", str(count)),
            ("Total kBytes", str(kb)),
            ("Total Duration", str(self.duration_ms)),
        ]
        names = ("CPUUser", "CPUSystem", "CPUChildrenUser", "CPUChildrenSystem")
        lines += [(name, apr_g(f32(value))) for name, value in zip(names, self.cpu, strict=True)]
        cpu = sum(self.cpu)
        if cpu and uptime:
            lines.append(("CPULoad", apr_g(cpu / uptime * 100.0)))
        lines.append(("Uptime", str(uptime)))
        if uptime > 0:
            lines.append(("ReqPerSec", apr_g(f32(f32(count) / f32(uptime)))))
            lines.append(("BytesPerSec", apr_g(f32(KBYTE * f32(kb) / f32(uptime)))))
        if count > 0:
            lines.append(("BytesPerReq", apr_g(f32(KBYTE * f32(kb) / f32(count)))))
            duration = f32(f32(f32(self.duration_us) / f32(count)) / 1000)
            lines.append(("DurationPerReq", apr_g(duration)))
        return lines

    def async_sums(self) -> dict[str, int]:
        """The event MPM's connection counters summed over live processes."""
        procs = self.processes
        return {
            "Processes": len(procs),
            "Stopping": sum(1 for p in procs if p.quiescing),
            "ConnsTotal": sum(p.connections for p in procs),
            "ConnsAsyncWaitIO": sum(p.wait_io for p in procs),
            "ConnsAsyncWriting": sum(p.write_completion for p in procs),
            "ConnsAsyncKeepAlive": sum(p.keep_alive for p in procs),
            "ConnsAsyncClosing": sum(p.lingering_close for p in procs),
        }

    def upgraded(self) -> int:
        """WebSockets open on the event children's ASGI loops (counted in ConnsTotal too; the
        scoreboard keeps them in Apache's `suspended` counter, which ?auto does not print)."""
        return sum(p.suspended for p in self.processes)

    def thread_counts(self, slot: int) -> tuple[int, int, int]:
        """Busy, graceful and idle threads of one live process (the event table's columns):
        its first ThreadsPerChild records (those beyond are in-flight ASGI requests)."""
        row = self.snap.slot_statuses(slot)[: self.facts.threads_per_child]
        idle = row.count(READY)
        graceful = row.count(GRACEFUL)
        busy = len(row) - idle - graceful - row.count(DEAD) - row.count(1) - row.count(10)
        return busy, graceful, idle

    def active_workers(self) -> Iterable[WorkerInfo]:
        return self.snap.workers(active_only=True)


# -- ?auto --------------------------------------------------------------------------------------


def render_auto(view: StatusView, host: str) -> str:
    """The machine-readable page, line for line as Apache 2.4 prints it (reference 4.4)."""
    snap = view.snap
    facts = view.facts
    out = [
        host,
        f"ServerVersion: {facts.server_version}",
        f"ServerMPM: {facts.mpm}",
        f"Server Built: {facts.server_built}",
        f"CurrentTime: {view.time_text(view.now)}",
        f"RestartTime: {view.time_text(snap.restart_time_us / 1_000_000)}",
        f"ParentServerConfigGeneration: {snap.config_generation}",
        f"ParentServerMPMGeneration: {snap.generation}",
        f"ServerUptimeSeconds: {view.uptime}",
        f"ServerUptime:{show_time(view.uptime)}",
        f"Load1: {view.load[0]:.2f}",
        f"Load5: {view.load[1]:.2f}",
        f"Load15: {view.load[2]:.2f}",
    ]
    if facts.extended:
        out += [f"{name}: {value}" for name, value in view.rate_lines()]
    out += [
        f"BusyWorkers: {view.busy}",
        f"GracefulWorkers: {view.graceful}",
        f"IdleWorkers: {view.idle}",
    ]
    if facts.is_async:
        out += [f"{name}: {value}" for name, value in view.async_sums().items()]
    out.append(f"Scoreboard: {view.scoreboard}")
    return "\n".join(out) + "\n"


# -- HTML ---------------------------------------------------------------------------------------

_HEAD = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">\n'
    "<html><head>\n<title>Apache Status</title>\n</head><body>\n"
)
_EVENT_TABLE_HEAD = (
    '\n\n<table rules="all" cellpadding="1%">\n'
    '<tr><th rowspan="2">Slot</th><th rowspan="2">PID</th><th rowspan="2">Stopping</th>'
    '<th colspan="2">Connections</th>\n'
    '<th colspan="3">Threads</th><th colspan="5">Async connections</th>'
    '<th colspan="2">Memory</th></tr>\n'  # mpmd's columns (status_memory.py)
    "<tr><th>total</th><th>accepting</th><th>busy</th><th>graceful</th><th>idle</th>"
    "<th>wait-io</th><th>writing</th><th>keep-alive</th><th>closing</th><th>upgraded</th>"
    "<th>PSS</th><th>USS</th></tr>\n"
)
_WORKER_TABLE_HEAD = (
    '\n\n<table border="0"><tr><th>Srv</th><th>PID</th><th>Acc</th><th>M</th><th>CPU\n'
    "</th><th>SS</th><th>Req</th><th>Dur</th><th>Conn</th><th>Child</th><th>Slot</th>"
    "<th>Client</th><th>Protocol</th><th>VHost</th><th>Request</th></tr>\n\n"
)


def _scoreboard_key() -> str:
    legend = {ch: STATE_LEGEND[i] for i, ch in enumerate(".S_RWKLDCGI")}
    parts = ["<p>Scoreboard Key:<br />\n"]
    for ch in _KEY_ORDER:
        parts.append(f'"<b><code>{ch}</code></b>" {legend[ch]}{_KEY_BREAK.get(ch, ", ")}\n')
    return "".join(parts) + "</p>\n"


_SCOREBOARD_KEY = _scoreboard_key()


def _dt_times(view: StatusView) -> list[str]:
    snap = view.snap
    return [
        f"<dt>Current Time: {view.time_text(view.now)}</dt>\n",
        f"<dt>Restart Time: {view.time_text(snap.restart_time_us / 1_000_000)}</dt>\n",
        f"<dt>Parent Server Config. Generation: {snap.config_generation}</dt>\n",
        f"<dt>Parent Server MPM Generation: {snap.generation}</dt>\n",
        f"<dt>Server uptime: {show_time(view.uptime)}</dt>\n",
        f"<dt>Server load: {view.load[0]:.2f} {view.load[1]:.2f} {view.load[2]:.2f}</dt>\n",
    ]


def _dt_extended(view: StatusView) -> list[str]:
    count, kb, uptime = view.accesses, view.kbytes, view.uptime
    user, system, cuser, csystem = (apr_g(f32(v)) for v in view.cpu)
    cpu_line = f"<dt>CPU Usage: u{user} s{system} cu{cuser} cs{csystem}"
    cpu = sum(view.cpu)
    if cpu and uptime:
        cpu_line += f" - {apr_g(cpu / uptime * 100.0, '%.3g')}% CPU load"
    rates = "<dt>"
    if uptime > 0:
        per_second = int(f32(KBYTE * f32(kb) / f32(uptime)))
        rates += f"{apr_g(f32(f32(count) / f32(uptime)), '%.3g')} requests/sec - "
        rates += f"{format_bytes(per_second)}/second - "
    if count > 0:
        rates += f"{format_bytes(int(f32(KBYTE * f32(kb) / f32(count))))}/request"
        duration = f32(f32(f32(view.duration_us) / f32(count)) / 1000)
        rates += f" - {apr_g(duration)} ms/request"
    return [
        f"<dt>Total accesses: {count} - Total Traffic: {format_kbytes(kb)}"
        f" - Total Duration: {view.duration_ms}</dt>\n",
        cpu_line + "</dt>\n",
        rates + "</dt>\n",
    ]


def _event_table(view: StatusView) -> str:
    snap = view.snap
    rows = [_EVENT_TABLE_HEAD]
    for p in view.processes:
        busy, graceful, idle = view.thread_counts(p.slot)
        old = " (old gen)" if p.generation != snap.generation else ""
        rows.append(
            f"<tr><td>{p.slot}</td><td>{p.pid}</td><td>{'yes' if p.quiescing else 'no'}{old}</td>"
            f"<td>{p.connections}</td><td>{'no' if p.not_accepting else 'yes'}</td>"
            f"<td>{busy}</td><td>{graceful}</td><td>{idle}</td>"
            f"<td>{p.wait_io}</td><td>{p.write_completion}</td><td>{p.keep_alive}</td>"
            f"<td>{p.lingering_close}</td><td>{p.suspended}</td>{memory_cells(p)}</tr>\n"
        )
    sums = view.async_sums()
    rows.append(
        f"<tr><td>Sum</td><td>{sums['Processes']}</td><td>{sums['Stopping']}</td>"
        f"<td>{sums['ConnsTotal']}</td><td>&nbsp;</td>"
        f"<td>{view.busy}</td><td>{view.graceful}</td><td>{view.idle}</td>"
        f"<td>{sums['ConnsAsyncWaitIO']}</td><td>{sums['ConnsAsyncWriting']}</td>"
        f"<td>{sums['ConnsAsyncKeepAlive']}</td><td>{sums['ConnsAsyncClosing']}</td>"
        f"<td>{view.upgraded()}</td>{memory_sum_cells(snap)}</tr>\n</table>\n"
    )
    return "".join(rows)


def wrap_grid(scoreboard: str, width: int = GRID_WIDTH) -> str:
    """The scoreboard string with a newline after every full row of `width` slots."""
    return "".join(
        scoreboard[i : i + width] + ("\n" if i + width <= len(scoreboard) else "")
        for i in range(0, len(scoreboard), width)
    )


def _pid_key(view: StatusView) -> str:
    snap = view.snap
    lines = ["PID Key: <br />\n<pre>\n"]
    k = 0
    for index, status in enumerate(snap.statuses):
        if status == DEAD:
            continue
        pid = snap.processes[index // snap.thread_limit].pid
        lines.append(f"   {pid} in state: {'.S_RWKLDCGI'[min(status, 10)]} ")
        k += 1
        if k >= 3:
            lines.append("\n")
            k = 0
        else:
            lines.append(",")
    lines.append("\n</pre>\n")
    return "".join(lines)


def _worker_numbers(view: StatusView, w: WorkerInfo) -> tuple[int, int, float]:
    """Seconds since last use, ms of the last request, CPU seconds."""
    since = max(0, int(view.now - w.last_used_us / 1_000_000))
    return since, max(0, w.last_duration_us // 1000), w.cpu_user + w.cpu_system


def _worker_rows(view: StatusView) -> str:
    snap = view.snap
    rows = [_WORKER_TABLE_HEAD]
    for w in view.active_workers():
        gen = snap.processes[w.slot].generation
        pid = "-" if w.status == DEAD else str(w.pid)
        mode = w.state_char if w.status in (DEAD, READY) else f"<b>{w.state_char}</b>"
        since, req_ms, cpu = _worker_numbers(view, w)
        rows.append(
            f"<tr><td><b>{w.slot}-{gen}</b></td><td>{pid}</td>"
            f"<td>{w.conn_count}/{w.my_access_count}/{w.access_count}</td><td>{mode}\n"
            f"</td><td>{cpu:.2f}</td><td>{since}</td><td>{req_ms}</td>"
            f"<td>{w.duration_us // 1000}</td><td>{f32(w.conn_bytes / KBYTE):-1.1f}</td>"
            f"<td>{f32(w.my_bytes_served / MBYTE):-2.2f}</td>"
            f"<td>{f32(w.bytes_served / MBYTE):-2.2f}\n"
            f"</td><td>{escape_html(w.client)}</td><td>{escape_html(w.protocol)}</td>"
            f"<td nowrap>{escape_html(w.vhost)}</td>"
            f"<td nowrap>{escape_html(w.request)}</td></tr>\n\n"
        )
    rows.append("</table>\n <hr /> <table>\n")
    rows += [f" <tr><th>{k}</th><td>{text}</td></tr>\n" for k, text in _WORKER_LEGEND]
    rows.append(" </table>\n")
    return "".join(rows)


def _worker_list(view: StatusView) -> str:
    snap = view.snap
    items = ["<hr /><h2>Server Details</h2>\n\n"]
    for w in view.active_workers():
        gen = snap.processes[w.slot].generation
        since, req_ms, _cpu = _worker_numbers(view, w)
        cpu = f"u{apr_g(w.cpu_user)} s{apr_g(w.cpu_system)} cu0 cs0"
        items.append(
            f"<b>Server {w.slot}-{gen}</b> ({w.pid}): "
            f"{w.conn_count}|{w.my_access_count}|{w.access_count} "
            f"[{_MODE_WORDS[w.status]}] {cpu}\n {since} {req_ms} {w.duration_us // 1000}("
            f"{format_bytes(w.conn_bytes)}|{format_bytes(w.my_bytes_served)}|"
            f"{format_bytes(w.bytes_served)})\n"
            f" <i>{escape_html(w.client)} {{{escape_html(w.request)}}}</i>"
            f" <i>({escape_html(w.protocol)})</i> <b>[{escape_html(w.vhost)}]</b><br />\n\n"
        )
    return "".join(items)


def render_html(
    view: StatusView,
    host: str,
    local_ip: str,
    *,
    notable: bool = False,
    extra: str = "",
    hooks: str = "",
) -> str:
    """Apache's sections in Apache's order; the charts (`extra`) after the key; `hooks` last."""
    facts = view.facts
    parts = [
        _HEAD,
        f"<h1>Apache Server Status for {escape_html(host)} (via {escape_html(local_ip)})</h1>\n\n",
        f"<dl><dt>Server Version: {escape_html(facts.server_version)}</dt>\n",
        f"<dt>Server MPM: {facts.mpm}</dt>\n",
        f"<dt>Server Built: {facts.server_built}\n</dt></dl><hr /><dl>\n",
        *_dt_times(view),
    ]
    if facts.extended:
        parts += _dt_extended(view)
    parts.append(
        f"<dt>{view.busy} requests currently being processed, {view.graceful} workers "
        f"gracefully restarting, {view.idle} idle workers</dt>\n</dl>"
    )
    if facts.is_async:
        parts.append(_event_table(view))
    parts += ["<pre>", wrap_grid(view.scoreboard), "</pre>\n", _SCOREBOARD_KEY, extra]
    if not facts.extended:
        parts.append(_pid_key(view))
        parts.append(
            "<hr />To obtain a full report with current status information you need to use "
            "the <code>ExtendedStatus On</code> directive.\n"
        )
    elif notable:
        parts.append(_worker_list(view))
    else:
        parts.append(_worker_rows(view))
    parts += [hooks, "</body></html>\n"]
    return "".join(parts)


# -- the handler --------------------------------------------------------------------------------


def request_host(exchange: Exchange) -> str:
    """ap_get_server_name with UseCanonicalName Off: the Host header's name, else ServerName."""
    host = exchange.request.header("host")
    return (host and host_name(host)) or exchange.vhost.server_name


_ADVICE_LINK = (
    '<p><a href="?advice">Tuning advice</a>: the MPM and pool directives `mpmctl advise` '
    "recommends from this scoreboard and the memory in /proc (read-only)</p>\n"
)


def make_status_handler(
    config: ServerConfig, scoreboard: Scoreboard, *, charts: bool = True, proxy_state=None
) -> Handler:
    """The `server-status` handler (facts computed once); ProxyStatus On adds the balancers."""
    facts = StatusFacts(config)
    draw = history_section if charts else None
    proxy = proxy_state if config.proxy_status and config.balancers else None
    if proxy is not None:
        from mpmd.handlers.proxy import status_page

    def status(exchange: Exchange) -> None:
        request = exchange.request
        if request.method not in ("GET", "HEAD"):
            exchange.send_error(405, headers=[("Allow", "GET,HEAD")])
            return
        auto, notable, refresh = parse_query(request.query)
        view = StatusView(scoreboard.snapshot(), facts)
        headers = [] if refresh is None else [("Refresh", str(refresh))]
        host = request_host(exchange)
        if auto:
            body = render_auto(view, host)
            if proxy is not None:
                body += status_page.render_auto(proxy.snapshot())
            content_type = AUTO_TYPE
        elif facts.extended and "advice" in request.query:  # mpmd's: mpmctl advise, read-only
            from mpmd.tools.advise import live_advice_text

            body = live_advice_text(config, view.snap)
            content_type = AUTO_TYPE
        else:
            extra = memory_section(view.snap, facts.is_async)
            if facts.extended:
                extra += _ADVICE_LINK
            if draw is not None:
                extra += draw(view.snap.history(), facts.max_request_workers, facts.is_async)
            hooks = status_page.render_html(proxy.snapshot(), escape_html) if proxy else ""
            body = render_html(
                view, host, exchange.conn.server_addr, notable=notable, extra=extra, hooks=hooks
            )
            content_type = HTML_TYPE
        headers.append(("Content-Type", content_type))
        exchange.respond("200 OK", headers, body.encode("latin-1", "replace"))

    return status


# -- the terminal report (mpmctl status / fullstatus) -------------------------------------------


def render_terminal(view: StatusView, *, full: bool, pid: int = 0) -> str:
    """What `mpmctl status` prints: summary, grid, one line per busy (full: active) worker."""
    snap = view.snap
    facts = view.facts
    lines = [
        f"{facts.server_version} - {snap.mpm or facts.mpm} MPM, parent pid {pid or snap.parent_pid}",
        f"Restart time: {view.time_text(snap.restart_time_us / 1_000_000)}",
        f"Generation: {snap.generation} (config generation {snap.config_generation})",
        f"Uptime:{show_time(view.uptime) or ' 0 seconds'}",
        f"Load: {view.load[0]:.2f} {view.load[1]:.2f} {view.load[2]:.2f}",
        f"Total accesses: {view.accesses} - Total traffic: {format_kbytes(view.kbytes)}"
        f" - Total duration: {view.duration_ms} ms",
        f"{view.busy} busy, {view.graceful} graceful, {view.idle} idle workers"
        f" (MaxRequestWorkers {facts.max_request_workers})",
    ]
    if facts.is_async or full:
        sums = view.async_sums()
        lines.append(
            f"Processes: {sums['Processes']} ({sums['Stopping']} stopping), connections "
            f"{sums['ConnsTotal']}: keep-alive {sums['ConnsAsyncKeepAlive']}, writing "
            f"{sums['ConnsAsyncWriting']}, closing {sums['ConnsAsyncClosing']}, upgraded "
            f"{view.upgraded()}"
        )
    lines += ["", "Scoreboard:", wrap_grid(view.scoreboard).rstrip("\n"), ""]
    lines += memory_lines(snap)
    if full:
        for p in view.processes:
            busy, graceful, idle = view.thread_counts(p.slot)
            stopping = "stopping" if p.quiescing else "running"
            lines.append(
                f"slot {p.slot:>3} pid {p.pid:>7} gen {p.generation} {stopping:<8} "
                f"busy {busy} graceful {graceful} idle {idle} connections {p.connections}"
            )
        lines.append("")
    busy_only = not full
    header = f"{'Srv':<8} {'PID':>7} {'Acc':<14} M {'SS':>5} {'Req':>6} {'Client':<22} Request"
    rows = []
    for w in view.active_workers():
        if busy_only and w.status in (READY, DEAD, 1, 10):
            continue
        since, req_ms, _cpu = _worker_numbers(view, w)
        gen = snap.processes[w.slot].generation
        rows.append(
            f"{f'{w.slot}-{gen}':<8} {w.pid:>7} "
            f"{f'{w.conn_count}/{w.my_access_count}/{w.access_count}':<14} {w.state_char} "
            f"{since:>5} {req_ms:>6} {w.client[:22]:<22} {w.request}"
        )
    lines.append(("Workers:" if full else "Busy workers:") + (" none" if not rows else ""))
    if rows:
        lines += [header, *rows]
    lines.append("")
    lines += (
        [f"  {ch} {STATE_LEGEND['.S_RWKLDCGI'.index(ch)]}" for ch in _KEY_ORDER] if full else []
    )
    return "\n".join(lines).rstrip("\n") + "\n"
