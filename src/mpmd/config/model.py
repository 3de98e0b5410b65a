"""The frozen, typed configuration every other part of mpmd reads.

config/build.py is the only producer: it turns the parsed tree and the directive registry into a
ServerConfig. Everything else (http, handlers, logs, mpm) reads these objects and never looks at
raw directive text. All paths here are absolute (resolved against ServerRoot by the builder).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

MpmName = Literal["prefork", "worker", "event"]
MPM_NAMES: tuple[MpmName, ...] = ("prefork", "worker", "event")


@dataclass(frozen=True, slots=True)
class MpmSettings:
    """Pool sizes after Apache's clamping (reference 2.2-2.4); prefork has threads_per_child 1."""

    name: MpmName
    start_servers: int
    min_spare_servers: int
    max_spare_servers: int
    min_spare_threads: int
    max_spare_threads: int
    threads_per_child: int
    thread_limit: int
    server_limit: int
    max_request_workers: int
    max_connections_per_child: int  # 0 = unlimited
    async_request_worker_factor: float
    graceful_shutdown_timeout: int  # seconds, 0 = wait forever
    listen_backlog: int
    max_memory_per_child: int  # bytes of unique memory, 0 = off (mpmd extension)
    listen_buckets: int = 1  # ListenCoresBucketsRatio's buckets: child slot i accepts from i % n

    @property
    def active_daemons_limit(self) -> int:
        """Most children that may run at once (MaxRequestWorkers / ThreadsPerChild)."""
        return self.max_request_workers // self.threads_per_child


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A Listen address: TCP `[IP:]port`, or a Unix domain socket's path (`unix:PATH`, an
    mpmd extension; then host is "" and port 0)."""

    host: str  # "" = every address (IPv6 dual stack when available), else a literal IP
    port: int
    path: str = ""  # absolute path of a Unix domain socket; "" = TCP

    def __str__(self) -> str:
        """As `Listen` takes it back: `unix:/run/app.sock`, `8080`, `[::1]:80`."""
        if self.path:
            return f"unix:{self.path}"
        if not self.host:
            return str(self.port)
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ReadTimeoutStage:
    """One stage of RequestReadTimeout (reference 8.2); timeout 0 disables the stage."""

    timeout: int
    max_timeout: (
        int  # 0 = no cap: with MinRate the deadline keeps moving, as Apache's body=20,MinRate=500
    )
    min_rate: int  # bytes per second that extend the deadline, 0 = none


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Per-virtual-host protocol settings (Apache's SV-context core directives)."""

    timeout: float
    keep_alive: bool
    keep_alive_timeout: float
    max_keep_alive_requests: int  # 0 = unlimited
    limit_request_line: int
    limit_request_field_size: int
    limit_request_fields: int  # 0 = unlimited
    limit_request_body: int  # 0 = unlimited
    header_read_timeout: ReadTimeoutStage
    body_read_timeout: ReadTimeoutStage
    handshake_read_timeout: ReadTimeoutStage = ReadTimeoutStage(0, 0, 0)  # TLS; 0 = Timeout


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One `Require` line. Several lines in one section mean "any of them" (RequireAny)."""

    kind: Literal["all", "ip", "local", "host"]
    values: tuple[str, ...]  # ("granted",) / ("denied",) for all; networks for ip; names for host
    negate: bool = False  # `Require not ...`


@dataclass(frozen=True, slots=True)
class LocationSection:
    """A <Location> or <LocationMatch>; later sections win, as in Apache's merge order."""

    pattern: str
    regex: bool
    handler: str | None  # SetHandler value, e.g. "server-status", "metrics"
    require: tuple[AccessRule, ...] | None  # None = not set here


@dataclass(frozen=True, slots=True)
class DirectorySection:
    """A <Directory> or <DirectoryMatch> with the per-directory settings mpmd honours."""

    path: str
    regex: bool
    options: frozenset[str] | None  # e.g. {"Indexes", "FollowSymLinks"}; None = inherit
    directory_index: tuple[str, ...] | None
    handler: str | None
    require: tuple[AccessRule, ...] | None


@dataclass(frozen=True, slots=True)
class WsgiMount:
    url_path: str  # without trailing slash, "" for the root
    target: str  # absolute file path (script) or "module:callable" (app, asgi)
    kind: Literal["script", "app", "asgi"]  # asgi: an ASGIApp (event MPM, -X)


@dataclass(frozen=True, slots=True)
class AsgiSettings:
    """The ASGI directives (config/groups/asgi.py): lifespan, and the WebSockets' limits."""

    lifespan: str = "auto"  # ASGILifespan: auto, on, off
    ping_interval: float | None = 20.0  # WebSocketPingInterval; None: no pings
    ping_timeout: float | None = 20.0  # WebSocketPingTimeout; None: no timeout
    max_message_size: int = 16 << 20  # WebSocketMaxMessageSize
    per_message_deflate: bool = True  # WebSocketPerMessageDeflate
    close_timeout: float = 5.0  # WebSocketCloseTimeout: the peer's time to answer a close


@dataclass(frozen=True, slots=True)
class AliasMapping:
    url_path: str
    fs_path: str


@dataclass(frozen=True, slots=True)
class AccessLogSpec:
    """A CustomLog: target file (or "|program"), the format string with nicknames resolved."""

    target: str
    format: str
    condition: str | None  # "env=VAR" / "env=!VAR" as written, None = always


# -- mod_proxy, mod_proxy_balancer, mod_proxy_hcheck (reference 7) ---------------------------


@dataclass(frozen=True, slots=True)
class WorkerParams:
    """A back end's `key=value` parameters (BalancerMember, ProxyPass to a URL; reference 7.2
    and 7.6), validated and in working units: seconds, loadfactor x100, flags as letters."""

    loadfactor: int = 100  # 1..100 as written, stored x100 as Apache does
    lbset: int = 0
    route: str = ""
    redirect: str = ""
    retry: float = 60.0
    timeout: float | None = None  # None: ProxyTimeout, else Timeout
    connection_timeout: float | None = None  # None: the timeout
    ping: float = 0.0
    acquire: float | None = None  # None: wait for a pooled connection without limit
    min: int = 0
    max: int | None = None  # None: ThreadsPerChild (1 in prefork)
    smax: int | None = None  # None: max
    ttl: float | None = None  # None: idle pooled connections never expire
    keepalive: bool = False  # SO_KEEPALIVE on back-end sockets
    reuse: bool = True  # enablereuse=On / disablereuse=Off
    flushpackets: str = "off"  # on | off | auto
    flushwait: float = 0.01
    iobuffersize: int = 8192
    receivebuffersize: int = 0
    status: str = ""  # initial flags set by `status=`, upper-case letters from "DSIHRENC"
    upgrade: str = ""  # `upgrade=websocket` (or ws:// members): protocol tunnelled on Upgrade
    hcmethod: str = "NONE"  # NONE TCP OPTIONS HEAD GET OPTIONS11 HEAD11 GET11
    hcinterval: float = 30.0
    hcpasses: int = 1
    hcfails: int = 1
    hcuri: str = ""
    hcexpr: str = ""  # a ProxyHCExpr name (ProxyHCTemplate values are already merged in)

    def timeouts(self, default: float) -> tuple[float, float]:
        """(timeout, connectiontimeout) in seconds: the member's own, else `default`
        (ProxyTimeout, else Timeout); connectiontimeout defaults to the timeout."""
        timeout = self.timeout if self.timeout is not None else default
        connect = self.connection_timeout
        return timeout, connect if connect is not None else timeout


@dataclass(frozen=True, slots=True)
class BackendMember:
    """One back end: a BalancerMember, or the worker behind a ProxyPass to a URL."""

    url: str  # as Apache names the worker: scheme://host:port/path, scheme and host lower-case
    scheme: Literal["http", "ws"]
    host: str
    port: int
    path: str  # "" or "/base" without a trailing slash
    params: WorkerParams
    source: str  # FILE:LINE of its BalancerMember or ProxyPass


@dataclass(frozen=True, slots=True)
class BalancerParams:
    """A balancer's parameters (ProxySet, or ProxyPass to balancer://; reference 7.3)."""

    lbmethod: str = "byrequests"
    sticky_cookie: str = ""  # stickysession=NAME, or the part before "|" in COOKIE|param
    sticky_param: str = ""  # the URL parameter: NAME again, or the part after "|"
    sticky_separator: str = "."  # stickysessionsep; "" for Off (the whole value is the route)
    scolonpathdelim: bool = False
    nofailover: bool = False
    maxattempts: int | None = None  # None: members - 1
    timeout: float = 0.0
    failonstatus: frozenset[int] = frozenset()
    failontimeout: bool = False
    forcerecovery: bool = True
    growth: int = 0
    nonce: str | None = ""  # "": a random UUID at start; None: `nonce=None`, no check


@dataclass(frozen=True, slots=True)
class Balancer:
    """A `<Proxy balancer://name>` (or BalancerMember balancer://name …) and its members, in
    configuration order: the order the lbmethods walk."""

    name: str  # "balancer://mycluster", lower-case as Apache stores it
    members: tuple[BackendMember, ...]
    params: BalancerParams
    source: str


@dataclass(frozen=True, slots=True)
class ProxyRoute:
    """One ProxyPass or ProxyPassMatch (or path-less ProxyPass in <Location>); the first match
    in file order wins (reference 7.1)."""

    path: str  # URL-path prefix, or the regex of ProxyPassMatch / <LocationMatch>
    regex: bool
    target: str | None  # None for `!`; "balancer://name/rest" or "http://host:port/path"
    member: BackendMember | None  # the worker for a URL target; None for balancer:// and `!`
    source: str


@dataclass(frozen=True, slots=True)
class ReverseRule:
    """ProxyPassReverse path url: Location, Content-Location and URI headers starting with
    `url` (each member's URL for balancer://) are rewritten to start with `path`."""

    path: str
    url: str


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """A virtual host's mod_proxy settings. Routes in the order they are tried: path-less
    ProxyPass of <Location> sections (the host's, then the main server's; the last section
    first), then the main server's ProxyPass lines, then the host's (mod_proxy's merge)."""

    routes: tuple[ProxyRoute, ...] = ()
    reverse: tuple[ReverseRule, ...] = ()
    preserve_host: bool = False
    timeout: float | None = None  # ProxyTimeout; None: Timeout
    add_headers: bool = True
    via: str = "Off"  # Off | On | Full | Block
    error_override: bool = False
    error_override_codes: frozenset[int] = frozenset()  # ProxyErrorOverride On 502 ...; empty: all


NO_PROXY = ProxySettings()

# -- mod_remoteip (reference 2) -----------------------------------------------------------------

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RemoteIpSettings:
    """A virtual host's RemoteIPHeader walk (mod_remoteip's server merge already applied)."""

    header: str  # RemoteIPHeader, lower-case as request headers are kept
    proxies_header: str | None  # RemoteIPProxiesHeader, lower-case
    # RemoteIP{Trusted,Internal}Proxy[List] in configuration order: (network, internal).
    # None: no list, so every peer is trusted as an external proxy.
    proxies: tuple[tuple[IpNetwork, bool], ...] | None


@dataclass(frozen=True, slots=True)
class ProxyProtocolSettings:
    """RemoteIPProxyProtocol, per address as httpd keeps it: (address, port) entries where
    "" is any address and 0 any port; the exceptions are never asked for a header."""

    enabled: tuple[tuple[str, int], ...]
    disabled: tuple[tuple[str, int], ...]
    exceptions: tuple[IpNetwork, ...]


# -- mod_ssl (reference edge-and-asgi 1) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class SslSettings:
    """A TLS virtual host's mod_ssl settings (SSLEngine on), merged with the main server's.
    Files are absolute paths; `where` maps a directive name to the FILE:LINE that set it, for
    the errors http/tls.py reports when it loads the files."""

    certificate_files: tuple[str, ...]  # SSLCertificateFile, one per key type
    key_files: tuple[str, ...]  # SSLCertificateKeyFile, paired by position; () = in the cert
    chain_file: str | None
    ca_file: str | None
    ca_path: str | None
    verify_client: Literal["none", "optional", "require", "optional_no_ca"]
    verify_depth: int
    protocols: frozenset[str]  # of "TLSv1" "TLSv1.1" "TLSv1.2" "TLSv1.3" (SSLv3 never)
    cipher_suite: str  # TLS <= 1.2, with Apache's ":!aNULL:!eNULL:!EXP" suffix
    cipher_suite_tls13: str | None  # SSLCipherSuite TLSv1.3 ...; None = OpenSSL's
    honor_cipher_order: bool
    session_tickets: bool
    session_cache: str  # as written; mpmd keeps OpenSSL's per-process cache (docs/tls.md)
    options: frozenset[str]  # SSLOptions: StdEnvVars, ExportCertData, StrictRequire ...
    strict_sni: bool  # SSLStrictSNIVHostCheck
    where: tuple[tuple[str, str], ...]  # (directive name, FILE:LINE)

    def line_of(self, name: str) -> str:
        """FILE:LINE of the directive `name` that applies here ("" if it was not written)."""
        return next((where for key, where in self.where if key == name), "")


@dataclass(frozen=True, slots=True)
class VirtualHost:
    """The main server is a VirtualHost with no addresses; <VirtualHost> blocks inherit from it."""

    addresses: tuple[str, ...]
    server_name: str
    server_aliases: tuple[str, ...]
    server_admin: str
    port: int  # canonical port (ServerName's, else the first Listen's)
    document_root: str
    directory_index: tuple[str, ...]
    options: frozenset[str]
    aliases: tuple[AliasMapping, ...]
    wsgi_mounts: tuple[WsgiMount, ...]
    locations: tuple[LocationSection, ...]
    directories: tuple[DirectorySection, ...]
    http: HttpSettings
    access_logs: tuple[AccessLogSpec, ...]
    error_log: str  # a path, "|program", or "stderr"
    log_level: str
    source: str  # FILE:LINE where it was declared ("(built-in)" for the default)
    proxy: ProxySettings = NO_PROXY
    ssl: SslSettings | None = None  # None: plain HTTP (SSLEngine off)
    remoteip: RemoteIpSettings | None = None  # None: no RemoteIPHeader


@dataclass(frozen=True, slots=True)
class ServerConfig:
    config_file: str  # "" when running on the built-in default
    server_root: str
    mpm: MpmSettings
    listeners: tuple[ListenAddress, ...]
    pid_file: str
    user: str | None
    group: str | None
    main: VirtualHost
    vhosts: tuple[VirtualHost, ...]
    extended_status: bool
    buffered_logs: bool
    wsgi_python_path: tuple[str, ...]
    wsgi_preload: bool
    modules: tuple[str, ...]  # loaded module names, e.g. ("mpm_event_module", "status_module")
    defines: frozenset[str]
    warnings: tuple[str, ...]  # Apache-worded start-up warnings, printed by the CLI / parent
    scoreboard_file: str = ""  # ScoreBoardFile: the scoreboard's path; "" = the default
    balancers: tuple[Balancer, ...] = ()  # every balancer, server-wide as in Apache
    proxy_status: bool = False  # ProxyStatus: members on /server-status and /metrics
    hc_expressions: tuple[tuple[str, str], ...] = ()  # ProxyHCExpr name, expression
    hc_tpsize: int = 16  # ProxyHCTPsize: threads running the health checks
    remoteip_headers: bool = False  # some virtual host walks a RemoteIPHeader
    proxy_protocol: ProxyProtocolSettings | None = None  # None: RemoteIPProxyProtocol nowhere On
    listen_unix_mode: int = 0o666  # ListenUnixMode: every `Listen unix:` socket's mode
    asgi: AsgiSettings = AsgiSettings()
    listen_unix_owner: tuple[int, int] = (-1, -1)  # ListenUnixOwner's (uid, gid); -1 = as bound
