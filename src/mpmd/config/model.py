"""The frozen, typed configuration every other part of mpmd reads.

config/build.py is the only producer: it turns the parsed tree and the directive registry into a
ServerConfig. Everything else (http, handlers, logs, mpm) reads these objects and never looks at
raw directive text. All paths here are absolute (resolved against ServerRoot by the builder).
"""

from __future__ import annotations

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

    @property
    def active_daemons_limit(self) -> int:
        """Most children that may run at once (MaxRequestWorkers / ThreadsPerChild)."""
        return self.max_request_workers // self.threads_per_child


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str  # "" = every address (IPv6 dual stack when available), else a literal IP
    port: int


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
    target: str  # absolute file path (script) or "module:callable" (app)
    kind: Literal["script", "app"]


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
