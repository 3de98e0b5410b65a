"""What a serving process needs, built once per child: ChildContext and its builders.

Owns the router (the applications imported, the status and metrics handlers bound to the
scoreboard), the access-log writers and the child's stop state. Built in each child, or the
router in the parent with WSGIPreload On. Imports handlers, logs and the scoreboard only:
never the MPMs, the parent or the entry point, so every MPM can use it without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mpmd.config.model import ServerConfig
from mpmd.handlers.router import Router
from mpmd.handlers.static import default_mime_table
from mpmd.logs.access import AccessLog, start_flush_thread
from mpmd.logs.error import ErrorLog
from mpmd.logs.targets import is_syslog, open_for_children
from mpmd.mpm.scoreboard import TlsCounters

# The note (`%{mpmd-queued-ms}n`) saying how long a request waited on its socket before it
# started, for `mpmctl plan`: %t and %D start when a thread takes the request, so without it
# a log hides every wait in the listen backlog or for a thread (session.queued_ms).
QUEUED_NOTE = "mpmd-queued-ms"


class ChildContext:
    """Everything a serving process needs, built once per child (never per request)."""

    def __init__(
        self,
        config: ServerConfig,
        router,
        error_log,
        access_logs: dict[int, Sequence],
        *,
        multithread: bool,
        multiprocess: bool,
        proxy_state=None,
    ) -> None:
        self.config = config
        self.router = router
        self.error_log = error_log
        self.access_logs = access_logs  # id(VirtualHost) -> its AccessLog writers
        self.settings = config.main.http  # the connection's limits come from the main server
        self.multithread = multithread
        self.multiprocess = multiprocess
        self.extended_status = config.extended_status
        self.stop = None  # the child's StopSignal: once set, responses say close
        self.surplus = False  # an event child the connections do not gather in: they say close
        self.queued = False  # a saturated gathering event child's requests wait for threads: ditto
        self.proxy_state = proxy_state  # the balancers' shared state (None: nothing proxied)
        # a CustomLog logs %{mpmd-queued-ms}n: sessions measure each request's wait for it
        self.log_queued = any(
            f"{{{QUEUED_NOTE}}}n" in spec.format
            for vhost in (config.main, *config.vhosts)
            for spec in vhost.access_logs
        )
        self.tls = tls_contexts(config)  # http/tls.py's TlsContexts; None: no TLS host
        # some virtual host mounts an ASGIApp (the event child's ASGI loop serves them)
        self.asgi = any(
            m.kind == "asgi" for v in (config.main, *config.vhosts) for m in v.wsgi_mounts
        )
        self.tls_counters = TlsCounters(None)  # the child's, once it knows its slot

    @property
    def stopping(self) -> bool:
        """The child is going away (graceful restart or stop, MaxConnectionsPerChild,
        MaxMemoryPerChild, a hung request): no response may promise keep-alive."""
        stop = self.stop
        return stop is not None and stop.requested

    def close(self) -> None:
        """Flush buffered access logs and close idle back-end connections before the child
        exits."""
        if self.router.proxy is not None:
            self.router.proxy.close()
        for writers in self.access_logs.values():
            for writer in writers:
                writer.flush()


def tls_contexts(config: ServerConfig):
    """The generation's TLS contexts (built by the CLI before the fork: found, not rebuilt)."""
    if all(v.ssl is None for v in (config.main, *config.vhosts)):
        return None
    from mpmd.http.tls import TlsContexts

    return TlsContexts.build(config)


def build_router(
    config: ServerConfig, error_log: ErrorLog, scoreboard=None, proxy_state=None
) -> Router:
    """Import the applications (in a child, or in the parent with WSGIPreload On)."""
    handlers = scoreboard_handlers(config, scoreboard, proxy_state, error_log)
    return Router(config, error_log, extra_handlers=handlers)


def scoreboard_handlers(config: ServerConfig, scoreboard, proxy_state=None, error_log=None) -> dict:
    """`SetHandler server-status` and `SetHandler metrics`, bound to the scoreboard (and, for
    ProxyStatus, the proxy state), and `SetHandler balancer-manager`, bound to the proxy state:
    only the ones the configuration names, so a child imports prometheus_client only where
    /metrics is mounted (it is the largest import a child would otherwise carry)."""
    if scoreboard is None:
        return {}
    made = {}
    for name, make in handler_factories(config).items():
        if name == "balancer-manager":
            made[name] = make(config, proxy_state, error_log)
        else:
            made[name] = make(config, scoreboard, proxy_state=proxy_state)
    return made


def share_before_fork(config: ServerConfig) -> None:
    """Build in the parent, before it forks, what each child would otherwise build for itself
    from the same configuration, so the children share those pages: the modules of the
    scoreboard handlers in use, the proxy's and the MIME table (the parent then calls
    gc.freeze())."""
    handler_factories(config)
    default_mime_table()
    open_for_children(log_files(config))
    if config.balancers or any(v.proxy.routes for v in (config.main, *config.vhosts)):
        # The proxy's modules, and the codec socket.getaddrinfo imports on first use for a
        # host name: a child that dropped to User may no longer read the Python installation.
        import encodings.idna  # noqa: F401

        from mpmd.handlers.proxy.balancer import runtime_factory  # noqa: F401
        from mpmd.handlers.proxy.handler import ProxyHandler  # noqa: F401


def log_files(config: ServerConfig) -> set[str]:
    """The paths of the access logs and the virtual hosts' own error logs (the main one is the
    parent's already): what a child writes but may not be allowed to open."""
    paths = {spec.target for vhost in (config.main, *config.vhosts) for spec in vhost.access_logs}
    paths |= {vhost.error_log for vhost in config.vhosts}
    return {p for p in paths if p not in ("stderr", config.main.error_log)
            and not p.startswith("|") and not is_syslog(p)}  # fmt: skip


def handler_factories(config: ServerConfig) -> dict[str, Callable]:
    """The scoreboard handlers' factories for the SetHandler names in use (imported here)."""
    names = {
        section.handler
        for vhost in (config.main, *config.vhosts)
        for section in (*vhost.locations, *vhost.directories)
    }
    factories: dict[str, Callable] = {}
    if "server-status" in names:
        from mpmd.handlers.status import make_status_handler

        factories["server-status"] = make_status_handler
    if "metrics" in names:
        from mpmd.handlers.metrics import make_metrics_handler

        factories["metrics"] = make_metrics_handler
    if "balancer-manager" in names:
        from mpmd.handlers.proxy.manager import make_manager_handler

        factories["balancer-manager"] = make_manager_handler
    return factories


def build_child_context(
    config: ServerConfig,
    error_log: ErrorLog,
    *,
    multithread: bool,
    multiprocess: bool,
    router: Router | None = None,
    scoreboard=None,
    proxy_state=None,
) -> ChildContext:
    """Load the applications and open the access logs: done in each child, once."""
    if scoreboard is not None:
        scoreboard.extended = config.extended_status  # the worker records made from now on
    if router is None:
        router = build_router(config, error_log, scoreboard, proxy_state)
    elif scoreboard is not None:  # preloaded in the parent: bind the status handlers here
        handlers = scoreboard_handlers(config, scoreboard, proxy_state, error_log)
        router.extra_handlers.update(handlers)
    if proxy_state is not None:  # the pools are the child's: never built in the parent
        router.proxy = proxy_handler(config, error_log, proxy_state)
    access_logs = make_access_logs(
        config,
        lambda spec: AccessLog(
            spec.target, spec.format, buffered=config.buffered_logs, condition=spec.condition
        ),
    )
    if config.buffered_logs:
        start_flush_thread()
    return ChildContext(
        config,
        router,
        error_log,
        access_logs,
        multithread=multithread,
        multiprocess=multiprocess,
        proxy_state=proxy_state,
    )


def proxy_handler(config: ServerConfig, error_log: ErrorLog, proxy_state) -> Callable:
    """The child's ProxyHandler over the shared balancer state (its runtimes and pools)."""
    from mpmd.handlers.proxy.balancer import runtime_factory
    from mpmd.handlers.proxy.handler import ProxyHandler

    return ProxyHandler(config, error_log, runtime_factory(config, proxy_state, error_log))


def make_access_logs(config: ServerConfig, factory: Callable) -> dict[int, Sequence]:
    """One writer per CustomLog target, shared by the vhosts that name it."""
    by_spec: dict = {}
    result: dict[int, Sequence] = {}
    for vhost in (config.main, *config.vhosts):
        writers = []
        for spec in vhost.access_logs or config.main.access_logs:
            if spec not in by_spec:
                by_spec[spec] = factory(spec)
            writers.append(by_spec[spec])
        result[id(vhost)] = tuple(writers)
    return result
