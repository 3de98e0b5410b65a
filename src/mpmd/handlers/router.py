"""The router: from a request to the one handler that answers it, as Apache's walks choose.

It owns virtual-host selection (Host against ServerName/ServerAlias among the vhosts of the
port), URL normalisation (percent-decoding once, dot segments, encoded slashes and NUL refused
as Apache does), the mapping of a URL to a handler, and `Require` evaluated before any handler
runs. Everything per configuration is built once in __init__; a request costs a few prefix tests.
It never answers a request itself beyond 400/403/404/500 and never reads a request body.

The mapping follows Apache's phases, whatever the order of the directives in the file:
1. URL to target (translate_name): mod_proxy's `ProxyPass` routes first (in file order, the
   first match wins, `!` excludes; handlers/proxy), then mod_alias's `Alias`, then mod_wsgi's mounts
   (`WSGIScriptAlias`, `WSGIApp`), and only then the `DocumentRoot` (core runs last). So
   `Alias /static …` beside an application mounted at `/` serves the files, as Django's
   mod_wsgi layout expects, and an Alias wins even over a longer mount below it.
2. `<Location>` `SetHandler` (type_checker, after the mapping) overrides the target's handler:
   `/server-status` answers beside an application at `/`; `SetHandler None` keeps the mapping.
   A `<Directory>` `SetHandler` applies to files reached through Alias or the DocumentRoot.
Matching is Apache's alias_matches on the normalised path: `/static` matches `/static` and
`/static/…` (not `/staticx`); `/static/` matches only `/static/…`; the rest of the path is
appended to the target as written, so `Alias /static/ /srv/static/` maps `/static/x` to
`/srv/static/x`. Within one phase the longest URL-path wins (Apache takes the first in file
order and warns AH00671 about one that can never match; both agree on every configuration
where no mapping is shadowed).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from mpmd.config.model import AccessRule, LocationSection, ProxyRoute, ServerConfig, VirtualHost
from mpmd.handlers.asgi.app import AsgiMount, load_asgi_app
from mpmd.handlers.proxy.backend import match_route
from mpmd.handlers.static import (
    ALLOW,
    BAD_REQUEST_TEXT,
    FORBIDDEN_TEXT,
    NOT_FOUND_TEXT,
    StaticFiles,
    _fs_name,
)
from mpmd.handlers.wsgi import WsgiHandler, load_failed_handler, load_wsgi_app, wsgi_str
from mpmd.http.exchange import Exchange
from mpmd.http.fields import host_name

Handler = Callable[[Exchange], None]
ProxyRouteHandler = Callable[[Exchange, ProxyRoute, str], None]
_HEX = frozenset("0123456789abcdefABCDEF")
_CACHE_LIMIT = 1024


# -- URL normalisation --------------------------------------------------------------------------


def normalize_path(raw: str) -> str | int:
    """The decoded (latin-1 str), dot-free, slash-merged path; or the error status to send.

    Apache: a bad %-escape → 400, `%2F` → 404 (AllowEncodedSlashes Off), `%00` → 404,
    `..` above the root (also spelt `%2e%2e`) → 400; `//` merged (MergeSlashes On).
    """
    if not raw.startswith("/"):
        scheme, sep, rest = raw.partition("://")
        if not sep or "/" in scheme:
            return 400
        slash = rest.find("/")
        raw = rest[slash:] if slash >= 0 else "/"
    if "%" in raw:
        pieces = raw.split("%")
        out = [pieces[0]]
        for piece in pieces[1:]:
            if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
                return 400
            code = int(piece[:2], 16)
            if code == 0 or code == 0x2F:
                return 404
            out.append(chr(code))
            out.append(piece[2:])
        raw = "".join(out)
    if "/." not in raw and "//" not in raw:
        return raw
    segments: list[str] = []
    parts = raw.split("/")
    for index, part in enumerate(parts[1:], 1):
        last = index == len(parts) - 1
        if part == "..":
            if not segments:
                return 400
            segments.pop()
            if last:
                segments.append("")
        elif part == ".":
            if last:
                segments.append("")
        elif part or last:
            segments.append(part)
    return "/" + "/".join(segments)


def _segment_match(prefix: str) -> Callable[[str], bool]:
    """`/app` matches `/app` and `/app/x`, not `/apple`; `/app/` is a plain prefix."""
    if prefix.endswith("/"):
        return lambda path: path.startswith(prefix)
    slashed = prefix + "/"
    return lambda path: path == prefix or path.startswith(slashed)


def _location_matcher(section: LocationSection) -> Callable[[str], bool]:
    if section.regex:
        return re.compile(section.pattern).search  # type: ignore[return-value]
    pattern = wsgi_str(section.pattern)
    if any(c in pattern for c in "*?["):
        parts = []
        for part in pattern.rstrip("/").split("/"):
            translated = fnmatch.translate(part)
            parts.append(translated[: translated.rfind(r"\Z")].replace(".*", "[^/]*"))
        return re.compile("^" + "/".join(parts) + "(?:/|$)").search  # type: ignore[return-value]
    return _segment_match(pattern)


# -- access control -----------------------------------------------------------------------------


class ReverseDns:
    """Double-reverse lookups for `Require host`, cached (blocking; only used when configured)."""

    def __init__(self, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, str | None]] = {}

    def name_of(self, ip: str) -> str | None:
        now = time.monotonic()
        hit = self._cache.get(ip)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        name: str | None = None
        try:
            host, _, _ = socket.gethostbyaddr(ip)
            forward = {info[4][0] for info in socket.getaddrinfo(host, None)}
            if ip in forward:  # double reverse, as Apache's Require host
                name = host.lower().rstrip(".")
        except (OSError, UnicodeError):
            name = None
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[ip] = (now, name)
        return name


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """`10.1` (partial), `10.0.0.0/8`, `10.0.0.0/255.0.0.0`, `2001:db8::/32`, a single address."""
    if "/" not in value and ":" not in value:
        octets = [o for o in value.split(".") if o]
        if len(octets) < 4:
            return ipaddress.ip_network(
                ".".join(octets + ["0"] * (4 - len(octets))) + f"/{8 * len(octets)}"
            )
    return ipaddress.ip_network(value, strict=False)


class AccessCheck:
    """One merged set of `Require` lines: any positive line grants, any negated one vetoes.

    Several lines are Apache's implicit <RequireAny>; `Require not ...` lines (which Apache only
    allows inside <RequireAll>) are read as vetoes applied after the grant.
    """

    def __init__(self, rules: tuple[AccessRule, ...], dns: ReverseDns, error_log: Any) -> None:
        self.dns = dns
        self.positive: list[Callable[[Any, Any], bool]] = []
        self.negative: list[Callable[[Any, Any], bool]] = []
        for rule in rules:
            test = self._compile(rule, error_log)
            (self.negative if rule.negate else self.positive).append(test)

    def _compile(self, rule: AccessRule, error_log: Any) -> Callable[[Any, Any], bool]:
        if rule.kind == "all":
            granted = bool(rule.values) and rule.values[0].lower() == "granted"
            return lambda ip, conn: granted
        if rule.kind == "local":
            return _is_local
        if rule.kind == "ip":
            networks = []
            for value in rule.values:
                try:
                    networks.append(_network(value))
                except ValueError:
                    error_log.log("warn", f"Require ip: ignoring bad address {value!r}")
            return lambda ip, conn: ip is not None and any(ip in net for net in networks)
        names = tuple(v.lower().strip(".") for v in rule.values)
        dns = self.dns

        def host_matches(ip: Any, conn: Any) -> bool:
            name = dns.name_of(conn.client_addr)
            return name is not None and any(name == n or name.endswith("." + n) for n in names)

        return host_matches

    def allows(self, conn: Any) -> bool:
        try:
            ip = ipaddress.ip_address(conn.client_addr.partition("%")[0])
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
        except ValueError:
            ip = None
        granted = not self.positive or any(test(ip, conn) for test in self.positive)
        return granted and not any(test(ip, conn) for test in self.negative)


def _is_local(ip: Any, conn: Any) -> bool:
    return ip is not None and (ip.is_loopback or conn.client_addr == conn.server_addr)


# -- per-vhost routes ---------------------------------------------------------------------------


class _FailedMount:
    """A mount whose application could not be loaded: every request gets a logged 500."""

    def __init__(self, target: str, error_log: Any) -> None:
        self._handler = load_failed_handler(target, error_log)

    def __call__(self, exchange: Exchange, path_info: str | None = None) -> None:
        self._handler(exchange)


class _VhostRoutes:
    """One virtual host's compiled routing table."""

    def __init__(self, router: Router, vhost: VirtualHost) -> None:
        self.vhost = vhost
        self.router = router
        self.static = StaticFiles(vhost, router.error_log)
        self.locations = [(_location_matcher(s), s) for s in vhost.locations]
        self.mounts: list[tuple[str, str, Any, AccessCheck | None, str, str]] = []
        for mount in sorted(vhost.wsgi_mounts, key=lambda m: len(m.url_path), reverse=True):
            prefix = wsgi_str(mount.url_path.rstrip("/"))
            if mount.kind == "asgi":  # served by the event child's ASGI loop (asgi_target)
                handler = router.asgi_mount(mount, prefix)
                self.mounts.append((prefix, prefix + "/", handler, None, "asgi-app", mount.target))
                continue
            handler = router.wsgi_handler(vhost, mount)
            dir_check = None
            filename = mount.target
            if mount.kind == "script":
                settings = self.static.rules.settings_for(os.path.dirname(mount.target))
                dir_check = router.access_check(settings.require)
            name = "wsgi-script" if mount.kind == "script" else "wsgi-app"
            self.mounts.append((prefix, prefix + "/", handler, dir_check, name, filename))
        self.aliases = [
            (_segment_match(url_path), url_path, a.fs_path)
            for url_path, a in sorted(
                ((re.sub("/+", "/", wsgi_str(a.url_path)), a) for a in vhost.aliases),
                key=lambda pair: len(pair[0]),
                reverse=True,
            )
        ]
        self.has_asgi = any(type(m[2]) is AsgiMount for m in self.mounts)
        self.document_root = vhost.document_root.rstrip("/")
        self.proxy = vhost.proxy if vhost.proxy.routes else None  # router.proxy answers

    def _location_rules(self, path: str) -> tuple[str | None, tuple[AccessRule, ...] | None]:
        """The <Location> sections' last SetHandler (None: none, or `None`) and Require."""
        handler_name: str | None = None
        require: tuple[AccessRule, ...] | None = None
        for matches, section in self.locations:
            if matches(path):
                if section.handler is not None:
                    handler_name = None if section.handler.lower() == "none" else section.handler
                if section.require is not None:
                    require = section.require
        return handler_name, require

    def dispatch(self, exchange: Exchange, path: str) -> None:
        router = self.router
        handler_name, require = self._location_rules(path)
        if handler_name is not None:
            if router.denied(exchange, require, path):
                return
            router.run_named(exchange, handler_name)
            return
        proxied = None
        if self.proxy is not None and router.proxy is not None:
            proxied = match_route(self.proxy, path)
        if proxied is not None:
            exchange.notes["handler"] = "proxy-server"
            if not router.denied(exchange, require, path):
                router.proxy(exchange, *proxied)  # type: ignore[misc]
            return
        for matches, url_path, fs_path in self.aliases:
            if matches(path):
                self._static(exchange, path, fs_path, path[len(url_path) :], require)
                return
        for prefix, slashed, handler, dir_check, name, filename in self.mounts:
            if not prefix or path == prefix or path.startswith(slashed):
                exchange.notes["handler"] = name
                exchange.notes["filename"] = filename
                check = router.access_check(require) if require is not None else dir_check
                if check is not None and not check.allows(exchange.conn):
                    router.forbid(exchange, filename)
                    return
                handler(exchange, path[len(prefix) :])
                return
        self._static(exchange, path, self.document_root, path, require)

    def asgi_target(self, raw: str) -> tuple[AsgiMount, str, AccessCheck | None] | None:
        """dispatch()'s choice when it is an ASGI mount, decided without running anything:
        (the mount, the normalised path, the Require check to apply). None otherwise."""
        path = normalize_path(raw) if "%" in raw or "/." in raw or "//" in raw else raw
        if type(path) is int or not path.startswith("/"):
            return None
        handler_name, require = self._location_rules(path)
        if handler_name is not None:
            return None
        proxy = self.proxy if self.router.proxy is not None else None
        if proxy is not None and match_route(proxy, path) is not None:
            return None
        for matches, _url, _fs in self.aliases:
            if matches(path):
                return None
        for prefix, slashed, handler, _check, _name, _filename in self.mounts:
            if not prefix or path == prefix or path.startswith(slashed):
                if type(handler) is not AsgiMount:
                    return None
                return handler, path, self.router.access_check(require)
        return None

    def proxied(self, raw: str) -> tuple[ProxyRoute, str] | None:
        """dispatch()'s answer for a request that goes straight to the proxy: no <Location>
        SetHandler or Require applies, so nothing but the proxy runs. None otherwise."""
        if self.proxy is None:
            return None
        path = normalize_path(raw) if "%" in raw or "/." in raw or "//" in raw else raw
        if type(path) is int or not path.startswith("/"):
            return None
        for matches, section in self.locations:
            if matches(path) and (section.handler is not None or section.require is not None):
                return None
        return match_route(self.proxy, path)

    def _static(
        self,
        exchange: Exchange,
        path: str,
        root: str,
        below: str,
        require: tuple[AccessRule, ...] | None,
    ) -> None:
        """A file under `root` (an Alias target or the DocumentRoot) + the rest of the path."""
        router = self.router
        fs_path = root + _fs_name(below)
        directory = fs_path if fs_path.endswith("/") else os.path.dirname(fs_path)
        settings = self.static.rules.settings_for(directory.rstrip("/") or "/")
        if require is None:
            require = settings.require
        if settings.handler is not None and settings.handler.lower() != "none":
            if router.denied(exchange, require, fs_path):
                return
            router.run_named(exchange, settings.handler)
            return
        exchange.notes["handler"] = "static"
        if router.denied(exchange, require, fs_path):
            return
        self.static.serve(exchange, root, fs_path, path, settings)


# -- the router ---------------------------------------------------------------------------------


def _address_port(address: str) -> int | None:
    """Port of a <VirtualHost> address; None means any port (`*`, `_default_`, `host:*`)."""
    if address.startswith("["):
        _, _, port = address.partition("]")
        port = port[1:] if port.startswith(":") else ""
    elif address.count(":") == 1:
        port = address.partition(":")[2]
    else:
        port = ""
    return int(port) if port.isdigit() else None


class Router:
    """Chooses and runs the handler for each request (see the module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        error_log: Any,
        *,
        extra_handlers: Mapping[str, Handler] = {},
        proxy: ProxyRouteHandler | None = None,
    ) -> None:
        self.config = config
        self.error_log = error_log
        self.extra_handlers = dict(extra_handlers)
        self.proxy = proxy  # handlers.proxy.handler.ProxyHandler: ProxyPass routes
        self.dns = ReverseDns()
        self._apps: dict[tuple[str, str], Any] = {}
        self._checks: dict[tuple[AccessRule, ...], AccessCheck] = {}
        self._vhosts = config.vhosts or (config.main,)
        self._names = [self._compile_names(v) for v in self._vhosts]
        self._routes = {id(v): _VhostRoutes(self, v) for v in self._vhosts}
        if id(config.main) not in self._routes:
            self._routes[id(config.main)] = _VhostRoutes(self, config.main)
        self._default_routes = self._routes[id(self._vhosts[0])]
        self._by_port: dict[int, list[int]] = {}
        self._vhost_cache: dict[tuple[str | None, int], VirtualHost] = {}

    # -- building -------------------------------------------------------------------------------

    def wsgi_handler(self, vhost: VirtualHost, mount: Any) -> Any:
        """A WsgiHandler for `mount` (its app loaded once and shared between vhosts)."""
        key = (mount.kind, mount.target)
        app = self._apps.get(key)
        if app is None:
            try:
                app = load_wsgi_app(mount, self.config.wsgi_python_path)
            except Exception:
                self.error_log.exception(
                    f"Target WSGI script '{mount.target}' cannot be loaded as Python module."
                )
                app = _FailedMount(mount.target, self.error_log)
            self._apps[key] = app
        if isinstance(app, _FailedMount):
            return app
        threaded = self.config.mpm.threads_per_child > 1 or self.config.mpm.name != "prefork"
        return WsgiHandler(
            app,
            mount,
            error_log=self.error_log,
            multithread=threaded,
            multiprocess=True,
            vhost=vhost,
        )

    def access_check(self, rules: tuple[AccessRule, ...] | None) -> AccessCheck | None:
        if rules is None:
            return None
        check = self._checks.get(rules)
        if check is None:
            check = self._checks[rules] = AccessCheck(rules, self.dns, self.error_log)
        return check

    @staticmethod
    def _compile_names(vhost: VirtualHost) -> tuple[frozenset[str], list[re.Pattern[str]]]:
        exact: set[str] = set()
        wild: list[re.Pattern[str]] = []
        for name in (vhost.server_name, *vhost.server_aliases):
            name = host_name(name.partition("://")[2] or name)
            if any(c in name for c in "*?["):
                wild.append(re.compile(fnmatch.translate(name)))
            elif name:
                exact.add(name)
        return frozenset(exact), wild

    # -- virtual hosts --------------------------------------------------------------------------

    def select_vhost(self, host_header: str | None, server_port: int) -> VirtualHost:
        """Name-based virtual host for a request arriving on `server_port` (cached)."""
        key = (host_header, server_port)
        found = self._vhost_cache.get(key)
        if found is not None:
            return found
        candidates = self._by_port.get(server_port)
        if candidates is None:
            candidates = self._by_port[server_port] = [
                i
                for i, v in enumerate(self._vhosts)
                if v is self.config.main
                or not v.addresses
                or any(_address_port(a) in (None, server_port) for a in v.addresses)
            ]
        if not candidates:
            found = self.config.main
        else:
            found = self._vhosts[candidates[0]]
            if host_header:
                host = host_name(host_header)
                for i in candidates:
                    exact, wild = self._names[i]
                    if host in exact or any(p.match(host) for p in wild):
                        found = self._vhosts[i]
                        break
        if len(self._vhost_cache) >= _CACHE_LIMIT:
            self._vhost_cache.clear()
        self._vhost_cache[key] = found
        return found

    # -- per request ----------------------------------------------------------------------------

    def handle(self, exchange: Exchange) -> None:
        """Run the one handler for this request (exchange.vhost chosen by select_vhost)."""
        routes = self._routes.get(id(exchange.vhost), self._default_routes)
        raw = exchange.request.path
        if "%" in raw or "/." in raw or "//" in raw or not raw.startswith("/"):
            if raw == "*":
                self._server_options(exchange)
                return
            path = normalize_path(raw)
            if type(path) is int:
                self._bad_path(exchange, path, raw)
                return
        else:
            path = raw
        routes.dispatch(exchange, path)  # type: ignore[arg-type]

    def asgi_target(
        self, vhost: VirtualHost, raw_path: str
    ) -> tuple[AsgiMount, str, AccessCheck | None] | None:
        """The ASGI mount handle() would reach for this path (see _VhostRoutes.asgi_target)."""
        routes = self._routes.get(id(vhost), self._default_routes)
        return routes.asgi_target(raw_path) if routes.has_asgi else None

    def asgi_mounts(self) -> list[AsgiMount]:
        """Every ASGIApp mount, of every virtual host (the event child's ASGI loop runs them)."""
        return [m[2] for r in self._routes.values() for m in r.mounts if type(m[2]) is AsgiMount]

    def asgi_mount(self, mount: Any, prefix: str) -> AsgiMount:
        """An ASGIApp's application, loaded once; one that cannot be loaded ends the child
        (import_app_modules imported it already, so only a bad attribute gets here)."""
        key = (mount.kind, mount.target)
        app = self._apps.get(key)
        if app is None:
            app = self._apps[key] = load_asgi_app(mount, self.config.wsgi_python_path)
        return AsgiMount(app, prefix, mount.target, self.error_log)

    def proxied(self, vhost: VirtualHost, raw_path: str) -> tuple[ProxyRoute, str] | None:
        """The (route, rest) of a request handle() would give straight to the ProxyPass
        handler, decided without running anything; None when anything else must happen (a
        <Location> handler or Require, a bad path, no route). The event loop proxies these."""
        return self._routes.get(id(vhost), self._default_routes).proxied(raw_path)

    def run_named(self, exchange: Exchange, name: str) -> None:
        exchange.notes["handler"] = name
        handler = self.extra_handlers.get(name)
        if handler is None:
            self.error_log.log(
                "error",
                f"MP00401: no handler registered for SetHandler {name!r}",
                client=self._client(exchange),
            )
            exchange.keep_alive = False
            exchange.send_error(500)
            exchange.keep_alive = False
            return
        handler(exchange)

    def denied(
        self, exchange: Exchange, require: tuple[AccessRule, ...] | None, target: str
    ) -> bool:
        """Evaluate Require; on refusal send the 403 and return True."""
        if require is None:
            return False
        check = self.access_check(require)
        if check is not None and not check.allows(exchange.conn):
            self.forbid(exchange, target)
            return True
        return False

    def forbid(self, exchange: Exchange, target: str) -> None:
        self.error_log.log(
            "error",
            f"client denied by server configuration: {target}",
            module="authz_core",
            ah="AH01630",
            client=self._client(exchange),
        )
        exchange.send_error(403, FORBIDDEN_TEXT)

    @staticmethod
    def _client(exchange: Exchange) -> str:
        return f"{exchange.conn.client_addr}:{exchange.conn.client_port}"

    def _bad_path(self, exchange: Exchange, status: int, raw: str) -> None:
        if status == 400:
            self.error_log.log(
                "info", f"AH10244: invalid URI path ({raw})", client=self._client(exchange)
            )
            exchange.keep_alive = False
            exchange.send_error(400, BAD_REQUEST_TEXT)
            exchange.keep_alive = False
        else:
            exchange.send_error(404, NOT_FOUND_TEXT)

    @staticmethod
    def _server_options(exchange: Exchange) -> None:
        if exchange.request.method == "OPTIONS":
            exchange.respond("200 OK", [("Allow", ALLOW)], b"")
        else:
            exchange.keep_alive = False
            exchange.send_error(400, BAD_REQUEST_TEXT)
            exchange.keep_alive = False
