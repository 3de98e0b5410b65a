"""Parsed configuration tree + directive registry → one frozen ServerConfig.

This module owns the meaning of a configuration as a whole: which MPM runs, inheritance from
the main server into <VirtualHost> blocks, ServerRoot-relative paths, LogFormat nicknames and
the built-in default used when no configuration file is given.

It never tokenises text (config/syntax.py does), never validates a single directive's
arguments by hand (config/directives.py does) and never clamps the MPM pool sizes itself
(config/mpm_limits.py does); it runs once per start or restart, never per request.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mpmd.config import accounts
from mpmd.config import directives as reg
from mpmd.config.asgi import app_mount, asgi_mount, asgi_settings
from mpmd.config.ignored import ignored_module, ignored_warning
from mpmd.config.listen import COMMAND_LINE, listen_addresses, server_name
from mpmd.config.model import (
    MPM_NAMES,
    AccessLogSpec,
    AccessRule,
    AliasMapping,
    DirectorySection,
    HttpSettings,
    LocationSection,
    MpmName,
    ReadTimeoutStage,
    ServerConfig,
    VirtualHost,
    WsgiMount,
)
from mpmd.config.mpm_limits import clamp_mpm
from mpmd.config.proxy import build_proxy
from mpmd.config.remoteip import apply_remoteip
from mpmd.config.ssl import build_ssl
from mpmd.config.syntax import STATIC_MODULES, ConfigError, Node

BUILT_IN = "(built-in)"
DEFAULT_SITE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "default_site")  # fmt: skip
# Predefined LogFormat nicknames: Apache predefines CLF; mpmd also knows common and combined.
PREDEFINED_FORMATS = {
    "CLF": '%h %l %u %t "%r" %>s %b',
    "common": '%h %l %u %t "%r" %>s %b',
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
}
_DIR_SECTIONS = {"directory": False, "directorymatch": True, "location": False,
                 "locationmatch": True}  # fmt: skip


def default_pid_file() -> str:
    """Per-user pid file for the built-in default: $XDG_RUNTIME_DIR, else /tmp."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(runtime, f"mpmd-{os.getuid()}.pid")


def load_config(
    path: str | None,
    *,
    server_root: str | None = None,
    defines: Sequence[str] = (),
    pre_directives: Sequence[str] = (),
    post_directives: Sequence[str] = (),
    mpm: str | None = None,
    listen: Sequence[str] = (),
    app: str | None = None,
    app_interface: str = "wsgi",
    previous: ServerConfig | None = None,
) -> ServerConfig:
    """Read the configuration the way httpd does (-f, -d, -D, -C, -c) and build it."""
    from mpmd.config.syntax import parse_config  # written in parallel; imported when used

    if mpm is not None and mpm not in MPM_NAMES:
        raise ConfigError(COMMAND_LINE, 0, f"--mpm must be one of {', '.join(MPM_NAMES)}")
    config_file = os.path.abspath(path) if path else ""
    if server_root:
        root = os.path.abspath(server_root)
    else:
        root = os.path.dirname(config_file) if config_file else os.getcwd()
    define_map = dict(_split_define(d) for d in defines)
    result = parse_config(
        config_file or None,
        server_root=root,
        defines=define_map,
        pre_directives=tuple(pre_directives),
        post_directives=tuple(post_directives),
        default_mpm=mpm or "event",
        is_directive=reg.is_directive,
    )
    return build_config(
        result.nodes,
        config_file=config_file,
        server_root=result.server_root or root,
        defines=frozenset(result.defines),
        parser_warnings=tuple(result.warnings),
        mpm=mpm,  # type: ignore[arg-type]
        listen=listen,
        app=app,
        app_interface=app_interface,
        previous=previous,
    )


def _split_define(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name, value


@dataclass
class _Scope:
    """Everything seen in the main server, one <VirtualHost> or one <Directory>/<Location>."""

    node: Node | None
    seen: dict[str, list[tuple[Node, Any]]] = field(default_factory=dict)
    locations: list[LocationSection] = field(default_factory=list)
    directories: list[DirectorySection] = field(default_factory=list)

    def last(self, name: str, default: Any = None) -> Any:
        entries = self.seen.get(name)
        return entries[-1][1] if entries else default

    def all(self, name: str) -> list[Any]:
        return [value for _, value in self.seen.get(name, ())]

    def has(self, name: str) -> bool:
        return name in self.seen


class _Builder:
    """One pass over the tree; collects scopes, then turns them into the frozen model."""

    def __init__(self, mpm: MpmName, server_root: str, previous: ServerConfig | None) -> None:
        self.mpm = mpm
        self.one_process = False  # -X: ASGIApp runs whatever the MPM
        self.app_interface = "wsgi"  # the positional app's: wsgi or asgi
        self.root = server_root
        self.previous = previous
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self.main = _Scope(None)
        self.vhosts: list[_Scope] = []
        self.modules: list[str] = []

    # -- walking ------------------------------------------------------------------------

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)

    def walk(self, nodes: Sequence[Node], scope: _Scope, context: str, section: str) -> None:
        for node in nodes:
            if node.children is None:
                self.directive(node, scope, context, section)
            else:
                self.section(node, scope, context, section)

    def section(self, node: Node, scope: _Scope, context: str, parent: str) -> None:
        key = node.name.lower()
        if key in reg.CONDITIONAL_SECTIONS:  # normally resolved by the parser
            self.walk(node.children or (), scope, context, parent)
            return
        module = ignored_module(key)
        if module is not None:
            self.warn_once("<" + key, ignored_warning(node.where, node.name, module, True))
            self.check_names(node.children or ())
            return
        if key not in reg.SECTIONS:
            raise ConfigError(node.file, node.line, reg.unknown_message("<" + node.name))
        label = reg._CANONICAL[key]
        nested = key == "virtualhost" and context != reg.SERVER
        if context in (reg.DIRECTORY, reg.PROXY) or nested:
            message = f"<{label}> cannot occur within <{parent}> section"
            raise ConfigError(node.file, node.line, message)
        if not node.args:
            raise ConfigError(node.file, node.line,
                              f"<{label}> directive requires additional arguments")  # fmt: skip
        if key == "virtualhost":
            vhost = _Scope(node)
            self.vhosts.append(vhost)
            self.walk(node.children or (), vhost, reg.VHOST, label)
            return
        if key in ("proxy", "proxymatch"):  # checked here, built by config/proxy.py
            self.walk(node.children or (), _Scope(node), reg.PROXY, label)
            return
        self.dir_section(node, key, label, scope)

    def dir_section(self, node: Node, key: str, label: str, scope: _Scope) -> None:
        regex = _DIR_SECTIONS[key]
        args = node.args
        if args[0] == "~":
            regex, args = True, args[1:]
        if len(args) != 1:
            raise ConfigError(node.file, node.line,
                              f"<{label}> directive requires additional arguments")  # fmt: skip
        inner = _Scope(node)
        self.walk(node.children or (), inner, reg.DIRECTORY, label)
        handler = inner.last("SetHandler")
        if any(name.startswith("SSL") for name in inner.seen):  # mod_ssl's per-dir settings
            self.warn_once("ssl-dir", f"{node.where}: MP00232: mpmd applies SSL directives per "
                           "host; the ones in this section are ignored")  # fmt: skip
        require = self.access_rules(inner) if inner.has("Require") else None
        if key.startswith("location"):
            scope.locations.append(LocationSection(args[0], regex, handler, require))
            return
        path = args[0] if regex else self.path(args[0]).rstrip("/") or "/"
        options = None
        if inner.has("Options"):
            options = self.options(inner, self.options(self.main, self.default_options()))
        index = self.directory_index(inner) if inner.has("DirectoryIndex") else None
        scope.directories.append(DirectorySection(path, regex, options, index, handler, require))

    def check_names(self, nodes: Sequence[Node]) -> None:
        """Inside an ignored section: still reject names that are no directive at all."""
        for node in nodes:
            name = node.name if node.children is None else "<" + node.name
            if not reg.is_directive(name) and ignored_module(node.name) is None:
                raise ConfigError(node.file, node.line, reg.unknown_message(name))
            if node.children:
                self.check_names(node.children)

    def directive(self, node: Node, scope: _Scope, context: str, section: str) -> None:
        d = reg.lookup(node.name)
        if d is None:
            module = ignored_module(node.name)
            if module is not None:
                self.warn_once(node.name.lower(), ignored_warning(node.where, node.name, module))
                return
            if node.name.lower() in {n.lower() for n in reg.PARSER_DIRECTIVES}:
                return
            raise ConfigError(node.file, node.line, reg.unknown_message(node.name))
        fail = _failer(node)
        if context not in d.contexts and not (context == reg.PROXY and reg.DIRECTORY in d.contexts):
            if d.name == "ServerAlias":
                raise fail("ServerAlias only used in <VirtualHost>")
            if context == reg.VHOST and d.global_only:
                raise fail(f"{d.name} cannot occur within <VirtualHost> section")
            raise fail(f"{node.name} not allowed here")
        try:
            d.check_arity(node.args)
            value = d.validate(d.name, node.args)
        except reg.DirectiveValueError as err:
            raise fail(str(err)) from None
        if self.mpm not in d.mpms:
            self.warn_once(f"mpm:{d.name}", f"{node.where}: {d.name} is not used by the "
                           f"{self.mpm} MPM; ignored")  # fmt: skip
            return
        self.deprecation(node)
        if d.name == "LoadModule":
            self.load_module(node, value[0])
        scope.seen.setdefault(d.name, []).append((node, value))

    def deprecation(self, node: Node) -> None:
        name = node.name.lower()
        if name == "maxclients":
            number = {"prefork": "00188", "worker": "00324", "event": "00521"}[self.mpm]
            self.warn_once(name, f"AH{number}: MaxClients is deprecated, use MaxRequestWorkers "
                           "instead.")  # fmt: skip
        elif name == "maxrequestsperchild":
            self.warn_once(name, "AH00545: MaxRequestsPerChild is deprecated, use "
                           "MaxConnectionsPerChild instead.")  # fmt: skip

    def load_module(self, node: Node, module: str) -> None:
        if module in self.modules:
            self.warnings.append(f"{node.where}: AH01574: module {module} is already loaded, "
                                 "skipping")  # fmt: skip
            return
        self.modules.append(module)

    # -- turning scopes into model objects -----------------------------------------------

    def default(self, name: str) -> Any:
        """The registry's default for `name` under this MPM: build.py restates none."""
        return reg.BY_NAME[name.lower()].default_for(self.mpm)

    def default_options(self) -> frozenset[str]:
        return frozenset(self.default("Options"))

    def path(self, text: str) -> str:
        return os.path.normpath(os.path.join(self.root, text))

    def aliases(self, scope: _Scope) -> tuple[AliasMapping, ...]:
        """Alias targets keep a trailing slash: Apache appends the rest of the URL as written."""
        return tuple(
            AliasMapping(url, self.path(fs) + ("/" if fs.endswith("/") and fs != "/" else ""))
            for url, fs in scope.all("Alias")
        )

    def log_target(self, text: str) -> str:
        if text.startswith("|") or text.lower().startswith("syslog") or text == "stderr":
            return text
        return self.path(text)

    def options(self, scope: _Scope, base: frozenset[str]) -> frozenset[str]:
        for parsed in scope.all("Options"):
            base = reg.apply_options(base, parsed)
        return base

    @staticmethod
    def directory_index(scope: _Scope) -> tuple[str, ...]:
        names: list[str] = []
        for line in scope.all("DirectoryIndex"):
            names = [] if [w.lower() for w in line] == ["disabled"] else names + list(line)
        return tuple(names)

    def access_rules(self, scope: _Scope) -> tuple[AccessRule, ...]:
        rules = []
        for node, (negate, provider, values) in scope.seen["Require"]:
            if provider in ("all", "ip", "local", "host"):
                rules.append(AccessRule(provider, values, negate))  # type: ignore[arg-type]
                continue
            self.warn_once(f"require:{provider}", f"{node.where}: Require {provider} is not "
                           "implemented by mpmd; treated as 'Require all denied'")  # fmt: skip
            rules.append(AccessRule("all", ("denied",), negate))
        return tuple(rules)

    def http(self, scope: _Scope, parent: HttpSettings | None) -> HttpSettings:
        def get(name: str) -> Any:
            if scope.has(name):
                return scope.last(name)
            if parent is not None:
                return getattr(parent, _HTTP_FIELDS[name])
            return self.default(name)

        stages = {"header": None, "body": None, "handshake": None}
        if parent is not None:
            stages = {"header": parent.header_read_timeout, "body": parent.body_read_timeout,
                      "handshake": parent.handshake_read_timeout}  # fmt: skip
        for line in scope.all("RequestReadTimeout"):
            for stage, (timeout, max_timeout, rate) in line.items():
                if stage in stages:
                    stages[stage] = ReadTimeoutStage(timeout, max_timeout, rate)
        for stage, value in stages.items():
            if value is None:
                stages[stage] = ReadTimeoutStage(*self.default("RequestReadTimeout")[stage])
        return HttpSettings(
            timeout=get("Timeout"),
            keep_alive=get("KeepAlive"),
            keep_alive_timeout=get("KeepAliveTimeout"),
            max_keep_alive_requests=get("MaxKeepAliveRequests"),
            limit_request_line=get("LimitRequestLine"),
            limit_request_field_size=get("LimitRequestFieldSize"),
            limit_request_fields=get("LimitRequestFields"),
            limit_request_body=get("LimitRequestBody"),
            header_read_timeout=stages["header"],  # type: ignore[arg-type]
            body_read_timeout=stages["body"],  # type: ignore[arg-type]
            handshake_read_timeout=stages["handshake"],  # type: ignore[arg-type]
        )

    def access_logs(self, scope: _Scope, formats: dict[str, str]) -> tuple[AccessLogSpec, ...]:
        formats = dict(formats)
        transfer_format = formats["CLF"]
        for fmt, nickname in scope.all("LogFormat"):
            if nickname is None:
                transfer_format = fmt
            else:
                formats[nickname] = fmt
        logs = []
        for node, value in _in_order(scope, "CustomLog", "TransferLog"):
            if node.name.lower() == "transferlog":
                logs.append(AccessLogSpec(self.log_target(value), transfer_format, None))
            else:
                target, fmt, condition = value
                logs.append(AccessLogSpec(self.log_target(target), formats.get(fmt, fmt),
                                          condition))  # fmt: skip
        return tuple(logs)

    def wsgi_mounts(self, scope: _Scope) -> list[WsgiMount]:
        mounts = []
        for node, value in _in_order(scope, "WSGIScriptAlias", "WSGIApp", "ASGIApp"):
            url = value[0].rstrip("/")
            if node.name.lower() == "asgiapp":
                mounts.append(asgi_mount(node, value, self.mpm, self.one_process))
            elif node.name.lower() == "wsgiapp":
                mounts.append(WsgiMount(url, value[1], "app"))
            else:
                mounts.append(WsgiMount(url, self.path(value[1]), "script"))
        return mounts


_HTTP_FIELDS = {
    "Timeout": "timeout",
    "KeepAlive": "keep_alive",
    "KeepAliveTimeout": "keep_alive_timeout",
    "MaxKeepAliveRequests": "max_keep_alive_requests",
    "LimitRequestLine": "limit_request_line",
    "LimitRequestFieldSize": "limit_request_field_size",
    "LimitRequestFields": "limit_request_fields",
    "LimitRequestBody": "limit_request_body",
}


def _in_order(scope: _Scope, *names: str) -> list[tuple[Node, Any]]:
    entries = [entry for name in names for entry in scope.seen.get(name, ())]
    return sorted(entries, key=lambda e: (e[0].file, e[0].line))


def _failer(node: Node):
    return lambda message: ConfigError(node.file, node.line, message)


def _pick_mpm(nodes: Sequence[Node], option: MpmName | None) -> tuple[MpmName, str | None]:
    """LoadModule mpm_*_module wins, else --mpm, else event; two MPMs is Apache's error."""
    chosen: MpmName | None = None
    note = None
    for node in nodes:
        if node.children is None and node.name.lower() == "loadmodule" and node.args:
            module = node.args[0]
            if module.startswith("mpm_") and module.endswith("_module"):
                name = module[4:-7]
                if name not in MPM_NAMES:
                    raise ConfigError(node.file, node.line, f"Unknown MPM module {module}")
                if chosen is not None and name != chosen:
                    raise ConfigError(node.file, node.line, "More than one MPM loaded.")
                chosen = name  # type: ignore[assignment]
    if chosen is not None and option is not None and option != chosen:
        note = f"--mpm {option} ignored: the configuration loads mpm_{chosen}_module"
    return chosen or option or "event", note


def build_config(
    nodes: Sequence[Node],
    *,
    config_file: str,
    server_root: str,
    defines: frozenset[str] = frozenset(),
    parser_warnings: Sequence[str] = (),
    mpm: MpmName | None = None,
    listen: Sequence[str] = (),
    app: str | None = None,
    app_interface: str = "wsgi",
    previous: ServerConfig | None = None,
) -> ServerConfig:
    """The tree (conditionals and includes already resolved) → ServerConfig. Raises ConfigError."""
    chosen, note = _pick_mpm(nodes, mpm)
    if previous is not None and previous.mpm.name != chosen:
        raise ConfigError(config_file or COMMAND_LINE, 0,
                          "The MPM cannot be changed during restart.")  # fmt: skip
    b = _Builder(chosen, server_root, previous)
    b.one_process = "ONE_PROCESS" in defines
    b.app_interface = app_interface
    b.warnings.extend(parser_warnings)
    if note:
        b.warnings.append(note)
    b.walk(nodes, b.main, reg.SERVER, "")
    builtin = not config_file
    main = b.main

    listeners = listen_addresses(b.main.all("Listen"), b.path, listen, builtin)
    raw = {d.name: main.last(d.name, b.default(d.name)) for d in reg.DIRECTIVES
           if d.group == "mpm" and isinstance(b.default(d.name), int | float)}  # fmt: skip
    mpm_settings, mpm_warnings = clamp_mpm(chosen, raw, previous=previous.mpm if previous else None)
    b.warnings.extend(mpm_warnings)

    modules = [ident for ident, _ in STATIC_MODULES]
    modules += [m for m in b.modules if m not in modules]
    if not any(m.startswith("mpm_") for m in modules):
        modules.append(f"mpm_{chosen}_module")
    if app is not None and not reg.MODULE_CALLABLE.fullmatch(app):
        raise ConfigError(COMMAND_LINE, 0, f"application '{app}' must be module:callable")

    formats = dict(PREDEFINED_FORMATS)
    for fmt, nickname in main.all("LogFormat"):
        if nickname is not None:
            formats[nickname] = fmt
    default_port = next((a.port for a in listeners if not a.path), 80)
    main_vhost = _main_vhost(b, formats, default_port, builtin, app, config_file)
    vhosts = tuple(_vhost(b, scope, main_vhost, formats, default_port) for scope in b.vhosts)
    proxy, tls = build_proxy(nodes), build_ssl(b.main, b.vhosts, b.path, b.default)
    b.warnings.extend(proxy.warnings + tls.warnings)
    main_vhost = replace(main_vhost, proxy=proxy.main, ssl=tls.main)
    vhosts = tuple(replace(v, proxy=p, ssl=t)
                   for v, p, t in zip(vhosts, proxy.vhosts, tls.vhosts, strict=True))  # fmt: skip
    main_vhost, vhosts, remoteip_headers, proxy_protocol = apply_remoteip(
        main.seen, [(s.node, s.seen) for s in b.vhosts], main_vhost, vhosts, server_root, b.warnings
    )

    pid_file = main.last("PidFile")
    if pid_file is not None:
        pid_file = b.path(pid_file)
    else:
        pid_file = default_pid_file() if builtin else b.path(b.default("PidFile"))
    scoreboard = main.last("ScoreBoardFile")
    python_path = main.last("WSGIPythonPath")
    python_paths = tuple(b.path(p) for p in python_path.split(":") if p) if python_path else ()
    if app is not None:  # its project folder, inserted last so it leads sys.path, as gunicorn's
        python_paths += (os.getcwd(),)
    accounts.check(main.seen.get("User"), main.seen.get("Group"))
    return ServerConfig(
        config_file=config_file,
        server_root=server_root,
        mpm=mpm_settings,
        listeners=listeners,
        pid_file=pid_file,
        user=main.last("User"),
        group=main.last("Group"),
        main=main_vhost,
        vhosts=vhosts,
        extended_status=main.last(
            "ExtendedStatus", "status_module" in modules or b.default("ExtendedStatus")
        ),
        buffered_logs=main.last("BufferedLogs", b.default("BufferedLogs")),
        wsgi_python_path=python_paths,
        wsgi_preload=main.last("WSGIPreload", b.default("WSGIPreload")),
        modules=tuple(modules),
        defines=defines,
        warnings=tuple(b.warnings),
        scoreboard_file=b.path(scoreboard) if scoreboard else "",
        balancers=proxy.balancers,
        proxy_status=proxy.status,
        hc_expressions=proxy.hc_expressions,
        hc_tpsize=main.last("ProxyHCTPsize", b.default("ProxyHCTPsize")),
        remoteip_headers=remoteip_headers,
        proxy_protocol=proxy_protocol,
        asgi=asgi_settings(main.last, b.default),
        listen_unix_mode=main.last("ListenUnixMode", b.default("ListenUnixMode")),
        listen_unix_owner=accounts.owner_ids(main.seen.get("ListenUnixOwner")),
    )


def _main_vhost(b: _Builder, formats: dict[str, str], default_port: int, builtin: bool,
                app: str | None, config_file: str) -> VirtualHost:  # fmt: skip
    main = b.main
    name, port = server_name(main.last("ServerName"), default_port)
    docroot = main.last("DocumentRoot")
    if docroot:
        document_root = b.path(docroot)
    else:
        document_root = DEFAULT_SITE if builtin else b.path(b.default("DocumentRoot"))
    error_log = main.last("ErrorLog") or ("stderr" if builtin else b.default("ErrorLog"))
    mounts = b.wsgi_mounts(main)
    if app is not None:
        mounts.append(app_mount(app, b.app_interface, b.mpm, b.one_process))
    return VirtualHost(
        addresses=(),
        server_name=name,
        server_aliases=(),
        server_admin=main.last("ServerAdmin", b.default("ServerAdmin")),
        port=port,
        document_root=document_root,
        directory_index=b.directory_index(main)
        if main.has("DirectoryIndex")
        else b.default("DirectoryIndex"),
        options=b.options(main, b.default_options()),
        aliases=b.aliases(main),
        wsgi_mounts=tuple(mounts),
        locations=tuple(main.locations),
        directories=tuple(main.directories),
        http=b.http(main, None),
        access_logs=b.access_logs(main, formats),
        error_log=b.log_target(error_log),
        log_level=main.last("LogLevel", b.default("LogLevel")),
        source=BUILT_IN if builtin else config_file,
    )


def _vhost(b: _Builder, scope: _Scope, main: VirtualHost, formats: dict[str, str],
           default_port: int) -> VirtualHost:  # fmt: skip
    node = scope.node
    assert node is not None
    first_port = default_port
    for address in node.args:
        _, sep, port = address.rpartition(":")
        if sep and port.isdigit():
            first_port = int(port)
            break
    if scope.has("ServerName"):
        name, port = server_name(scope.last("ServerName"), first_port)
    else:
        name, port = main.server_name, first_port
    own_logs = scope.has("CustomLog") or scope.has("TransferLog")
    docroot = scope.last("DocumentRoot")
    return VirtualHost(
        addresses=node.args,
        server_name=name,
        server_aliases=tuple(a for line in scope.all("ServerAlias") for a in line),
        server_admin=scope.last("ServerAdmin", main.server_admin),
        port=port,
        document_root=b.path(docroot) if docroot else main.document_root,
        directory_index=b.directory_index(scope)
        if scope.has("DirectoryIndex")
        else main.directory_index,
        options=b.options(scope, main.options),
        aliases=b.aliases(scope) + main.aliases,
        wsgi_mounts=tuple(b.wsgi_mounts(scope)) + main.wsgi_mounts,
        locations=main.locations + tuple(scope.locations),
        directories=main.directories + tuple(scope.directories),
        http=b.http(scope, main.http),
        access_logs=b.access_logs(scope, formats) if own_logs else main.access_logs,
        error_log=b.log_target(scope.last("ErrorLog")) if scope.has("ErrorLog") else main.error_log,
        log_level=scope.last("LogLevel", main.log_level),
        source=node.where,
    )
