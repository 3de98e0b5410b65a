"""`SetHandler metrics`: Prometheus exposition of the scoreboard, built with prometheus_client.

It owns the metric names and the custom collector. Every scrape takes one snapshot of the
shared scoreboard, so the numbers are one consistent view of all processes with no
per-process metric files (prometheus_client's multiprocess mode is not used). Counters
survive child recycling because the scoreboard keeps slot totals. Like the status page, a
scrape only copies shared memory and formats it; it never writes the scoreboard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from mpmd import SERVER_SOFTWARE, __version__
from mpmd.config.model import ServerConfig
from mpmd.http.exchange import Exchange
from mpmd.mpm.scoreboard import HISTOGRAM_BOUNDS, STATE_CHARS, STATE_LEGEND, Scoreboard, Snapshot

Handler = Callable[[Exchange], None]
# Label values for the worker states, in state-code order (reference 4.1).
STATE_NAMES = (
    "dead", "starting", "ready", "read", "reply", "keepalive",
    "logging", "dns", "closing", "graceful", "idle_cleanup",
)  # fmt: skip


class ScoreboardCollector:
    """A prometheus_client collector: each collect() reads one scoreboard snapshot."""

    def __init__(self, config: ServerConfig, scoreboard: Scoreboard) -> None:
        self.scoreboard = scoreboard
        mpm = config.mpm
        self.mpm = mpm.name
        self.active_daemons_limit = mpm.active_daemons_limit
        self.threads_per_child = mpm.threads_per_child
        self.limits = (
            ("server_limit", "ServerLimit: most child processes", mpm.server_limit),
            ("thread_limit", "ThreadLimit: most threads a child may have", mpm.thread_limit),
            ("threads_per_child", "ThreadsPerChild", mpm.threads_per_child),
            ("max_request_workers", "MaxRequestWorkers", mpm.max_request_workers),
        )
        self.extended = config.extended_status
        # Cumulative `le` bounds for the histogram, formatted once.
        self.bounds = [f"{b:g}" for b in HISTOGRAM_BOUNDS] + ["+Inf"]

    def describe(self) -> list[Metric]:
        return []  # collected lazily: the registry must not snapshot at registration

    def collect(self) -> Iterator[Metric]:
        snap = self.scoreboard.snapshot()
        yield from self._server(snap)
        yield from self._traffic(snap)
        yield from self._workers(snap)
        yield from self._processes(snap)
        yield from self._memory(snap)

    def _server(self, snap: Snapshot) -> Iterator[Metric]:
        info = InfoMetricFamily("mpmd_build", "mpmd version and the MPM in use")
        info.add_metric([], {"version": __version__, "server": SERVER_SOFTWARE, "mpm": self.mpm})
        yield info
        up = GaugeMetricFamily("mpmd_up", "1 while the server answers scrapes")
        up.add_metric([], 1)
        yield up
        restart = snap.restart_time_us / 1_000_000
        yield GaugeMetricFamily(
            "mpmd_start_time_seconds", "Unix time of the last (re)start", value=restart
        )
        yield GaugeMetricFamily(
            "mpmd_uptime_seconds", "Seconds since the last (re)start", value=time.time() - restart
        )
        yield GaugeMetricFamily(
            "mpmd_generation", "ParentServerMPMGeneration (+1 per restart)", value=snap.generation
        )
        yield GaugeMetricFamily(
            "mpmd_config_generation",
            "ParentServerConfigGeneration",
            value=snap.config_generation,
        )
        for name, text, value in self.limits:
            yield GaugeMetricFamily(f"mpmd_{name}", f"Configured {text}", value=value)

    def _traffic(self, snap: Snapshot) -> Iterator[Metric]:
        totals = snap.totals()
        yield CounterMetricFamily(
            "mpmd_requests", "Requests served (all slots, survives recycling)", totals.accesses
        )
        yield CounterMetricFamily("mpmd_sent_bytes", "Response body bytes sent", totals.bytes)
        handshakes = CounterMetricFamily(
            "mpmd_tls_handshakes", "TLS handshakes by result (all slots)", labels=["result"]
        )
        handshakes.add_metric(["ok"], snap.tls_handshakes)
        handshakes.add_metric(["failed"], snap.tls_failures)
        yield handshakes
        counts, duration_sum = snap.duration_histogram()
        buckets = []
        running = 0
        for bound, count in zip(self.bounds, counts, strict=True):
            running += count
            buckets.append((bound, running))
        histogram = HistogramMetricFamily(
            "mpmd_request_duration_seconds", "Time from request head to the end of the response"
        )
        histogram.add_metric([], buckets, duration_sum)
        yield histogram
        cpu = CounterMetricFamily(
            "mpmd_cpu_seconds", "CPU seconds of the parent and its children", labels=["mode"]
        )
        user, system, cuser, csystem = snap.parent_cpu
        cpu.add_metric(["user"], user + cuser)
        cpu.add_metric(["system"], system + csystem)
        yield cpu

    def _workers(self, snap: Snapshot) -> Iterator[Metric]:
        grid = snap.scoreboard_string(self.active_daemons_limit, self.threads_per_child)
        states = GaugeMetricFamily(
            "mpmd_workers",
            "Worker slots in each scoreboard state: "
            + ", ".join(f"{n}={STATE_LEGEND[i]}" for i, n in enumerate(STATE_NAMES)),
            labels=["state"],
        )
        for name, char in zip(STATE_NAMES, STATE_CHARS, strict=True):
            states.add_metric([name], grid.count(char))
        yield states
        counts = snap.worker_counts()
        for name, value, text in (
            ("busy", counts.busy, "Busy workers (mod_status BusyWorkers)"),
            ("idle", counts.idle, "Idle workers of the current generation (IdleWorkers)"),
            ("graceful", counts.graceful, "Workers finishing gracefully (GracefulWorkers)"),
        ):
            yield GaugeMetricFamily(f"mpmd_{name}_workers", text, value=value)

    def _processes(self, snap: Snapshot) -> Iterator[Metric]:
        live = snap.live_processes()
        processes = GaugeMetricFamily(
            "mpmd_processes", "Child processes by generation", labels=["generation"]
        )
        current = sum(1 for p in live if p.generation == snap.generation)
        processes.add_metric(["current"], current)
        processes.add_metric(["old"], len(live) - current)
        yield processes
        yield GaugeMetricFamily(
            "mpmd_processes_stopping",
            "Children going down gracefully",
            value=sum(1 for p in live if p.quiescing),
        )
        connections = GaugeMetricFamily(
            "mpmd_connections", "Open connections (event MPM) by state", labels=["state"]
        )
        connections.add_metric(["total"], sum(p.connections for p in live))
        connections.add_metric(["keepalive"], sum(p.keep_alive for p in live))
        connections.add_metric(["writing"], sum(p.write_completion for p in live))
        connections.add_metric(["closing"], sum(p.lingering_close for p in live))
        connections.add_metric(["wait_io"], sum(p.wait_io for p in live))
        yield connections

    def _memory(self, snap: Snapshot) -> Iterator[Metric]:
        """The parent's once-a-tick /proc sample: per process (the parent as slot `parent`, so
        the series sum to the totals) and for the whole tree; a child not yet sampled is left
        out."""
        parent_pss, parent_uss = snap.parent_memory_kib
        rows = [(str(snap.parent_pid), "parent", parent_pss, parent_uss)]
        rows += [(str(p.pid), str(p.slot), p.pss_kib, p.uss_kib) for p in snap.live_processes()]
        total_pss, total_uss = snap.memory_kib()
        for kind, column, total, text in (
            ("pss", 2, total_pss, "Proportional set size (shared pages divided among sharers)"),
            ("uss", 3, total_uss, "Unique set size (what the process alone holds)"),
        ):
            family = GaugeMetricFamily(
                f"mpmd_process_{kind}_bytes", f"{text}, per process", labels=["pid", "slot"]
            )
            for row in rows:
                if row[column]:
                    family.add_metric([row[0], row[1]], row[column] * 1024)
            yield family
            yield GaugeMetricFamily(
                f"mpmd_memory_{kind}_bytes", f"{text}: the parent and its children", total * 1024
            )


class ProxyCollector:
    """ProxyStatus On: one series per back-end worker, labelled by balancer ("" for a direct
    ProxyPass worker) and member URL, from one snapshot of the shared proxy state."""

    GAUGES = (
        ("busy", "In-flight requests (Apache's Busy)", lambda w: w.busy),
        ("usable", "1 while the member may be chosen (no Dis Stop Err HcFl)", lambda w: w.usable),
        ("in_error", "1 while the member is in error (flag E)", lambda w: w.has_flag("E")),
        ("hc_failed", "1 while its health check fails (flag C)", lambda w: w.has_flag("C")),
        ("draining", "1 while draining (flag N)", lambda w: w.has_flag("N")),
        ("load_factor", "The load factor (Apache's Factor)", lambda w: w.lbfactor / 100),
    )
    COUNTERS = (
        ("requests", "Times the member was elected (Apache's Elected)", lambda w: w.elected),
        ("sent_bytes", "Bytes sent to the member (Apache's To)", lambda w: w.transferred),
        ("received_bytes", "Bytes read from the member (Apache's From)", lambda w: w.read),
        ("retries", "Retries of the member after an error", lambda w: w.retries),
    )

    def __init__(self, proxy_state) -> None:
        self.proxy_state = proxy_state

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self.proxy_state.snapshot()
        workers = [w for b in snap.balancers for w in b.members] + list(snap.workers)
        labels = ["balancer", "member"]
        for kind, table in ((GaugeMetricFamily, self.GAUGES), (CounterMetricFamily, self.COUNTERS)):
            for name, text, value in table:
                family = kind(f"mpmd_proxy_{name}", text, labels=labels)
                for w in workers:
                    family.add_metric([w.balancer, w.url], float(value(w)))
                yield family


def make_registry(
    config: ServerConfig, scoreboard: Scoreboard, proxy_state=None
) -> CollectorRegistry:
    """A registry holding only the scoreboard collector (no process or GC collectors), and
    with ProxyStatus On the proxy collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScoreboardCollector(config, scoreboard))
    if config.proxy_status and proxy_state is not None:
        registry.register(ProxyCollector(proxy_state))
    return registry


def make_metrics_handler(
    config: ServerConfig, scoreboard: Scoreboard, *, proxy_state=None
) -> Handler:
    """The `metrics` handler: text exposition, or OpenMetrics when the scraper asks for it."""
    registry = make_registry(config, scoreboard, proxy_state)

    def metrics(exchange: Exchange) -> None:
        request = exchange.request
        if request.method not in ("GET", "HEAD"):
            exchange.send_error(405, headers=[("Allow", "GET,HEAD")])
            return
        encoder, content_type = choose_encoder(request.header("accept") or "")
        exchange.respond("200 OK", [("Content-Type", content_type)], encoder(registry))

    return metrics
