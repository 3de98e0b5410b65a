"""The directive registry: every directive mpmd understands, declared once, as data.

Each `Directive` carries its name and aliases, where it may appear, how many arguments it
takes, its default (per MPM where Apache's differ), a validator that turns the arguments into
a typed value, and a one-line doc. config/build.py reads values only through this table, and
`python -m mpmd.config.directives` prints docs/directives.md from it.

config/ignored.py lists the directives of Apache modules mpmd does not implement, so that real
Apache configurations load (with one warning per name). A name in neither table is an error.

This module never reads files or builds a ServerConfig: it validates one directive at a time.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mpmd.config.ignored import (
    IGNORED,
    IGNORED_BY_NAME,
    IGNORED_CANONICAL,
    IGNORED_SECTIONS,
)
from mpmd.config.model import MPM_NAMES, MpmName
from mpmd.logs.targets import is_syslog, parse_syslog

# Where a directive may appear. "server" = main server config, "vhost" = <VirtualHost>,
# "directory" = <Directory>, <Location> and their Match forms.
SERVER = "server"
VHOST = "vhost"
DIRECTORY = "directory"
SV = frozenset({SERVER, VHOST})
S = frozenset({SERVER})
SVD = frozenset({SERVER, VHOST, DIRECTORY})
D = frozenset({DIRECTORY})

# Argument syntax, named after Apache's command_rec kinds: (label, min, max or None).
TAKE1 = ("TAKE1", 1, 1)
TAKE2 = ("TAKE2", 2, 2)
TAKE12 = ("TAKE12", 1, 2)
TAKE23 = ("TAKE23", 2, 3)
FLAG = ("FLAG", 1, 1)
ITERATE = ("ITERATE", 1, None)
ITERATE2 = ("ITERATE2", 2, None)
RAW_ARGS = ("RAW_ARGS", 0, None)

Validator = Callable[[str, tuple[str, ...]], Any]


class DirectiveValueError(ValueError):
    """A directive's arguments are wrong; the message is Apache-worded, without FILE:LINE."""


@dataclass(frozen=True, slots=True)
class Directive:
    name: str
    group: str
    contexts: frozenset[str]
    syntax: tuple[str, int, int | None]
    usage: str  # argument synopsis for the docs, e.g. "number"
    default: Any  # a value, a {mpm: value} mapping, or None = "none"
    doc: str
    validate: Validator
    aliases: tuple[str, ...] = ()
    mpms: frozenset[MpmName] = frozenset(MPM_NAMES)  # MPMs that use it
    global_only: bool = False  # Apache's GLOBAL_ONLY: "cannot occur within <VirtualHost>"
    repeatable: bool = False  # every occurrence counts (Listen, Alias ...) instead of last-wins
    extension: bool = False  # an mpmd extension, not an Apache directive

    def default_for(self, mpm: MpmName) -> Any:
        if isinstance(self.default, Mapping):
            return self.default.get(mpm)
        return self.default

    def check_arity(self, args: tuple[str, ...]) -> None:
        """Raise with Apache's invoke_cmd wording when the argument count is wrong."""
        label, low, high = self.syntax
        if low <= len(args) and (high is None or len(args) <= high):
            return
        wording = {
            "TAKE1": "takes one argument",
            "TAKE2": "takes two arguments",
            "TAKE12": "takes 1-2 arguments",
            "TAKE23": "takes two or three arguments",
            "ITERATE": "requires at least one argument",
            "ITERATE2": "requires at least two arguments",
        }
        if label == "FLAG":
            raise DirectiveValueError(f"{self.name} must be On or Off")
        raise DirectiveValueError(f"{self.name} {wording[label]}, {self.doc}")


# --- validators: (directive name, args) -> typed value --------------------------------------


def _integer(name: str, text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text.strip()):
        raise DirectiveValueError(f'{name} "{text}" must be an integer')
    return int(text)


def v_int(name: str, args: tuple[str, ...]) -> int:
    """Any integer; the MPM clamps out-of-range values later with Apache's warnings."""
    return _integer(name, args[0])


def v_nonneg(name: str, args: tuple[str, ...]) -> int:
    value = _integer(name, args[0])
    if value < 0:
        raise DirectiveValueError(f'{name} "{args[0]}" must be a non-negative integer')
    return value


def v_positive(name: str, args: tuple[str, ...]) -> int:
    value = _integer(name, args[0])
    if value <= 0:
        raise DirectiveValueError(f"{name} must be > 0")
    return value


def v_factor(name: str, args: tuple[str, ...]) -> float:
    try:
        value = float(args[0])
    except ValueError:
        raise DirectiveValueError("error parsing value") from None
    if not value > 0:
        raise DirectiveValueError(f"{name} argument must be a positive number")
    return value


def v_flag(name: str, args: tuple[str, ...]) -> bool:
    word = args[0].lower()
    if word not in ("on", "off"):
        raise DirectiveValueError(f"{name} must be On or Off")
    return word == "on"


_TIME_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "mi": 60.0, "h": 3600.0}


def v_timeout(name: str, args: tuple[str, ...]) -> float:
    """Seconds with an optional unit (ap_timeout_parameter_parse): `5`, `100ms`, `2mi`, `1h`."""
    match = re.fullmatch(r"(\d+)\s*(ms|s|mi|h|)", args[0].strip().lower())
    if match is None:
        raise DirectiveValueError(f"{name} has wrong format")
    return int(match.group(1)) * _TIME_UNITS[match.group(2)]


def v_size(name: str, args: tuple[str, ...]) -> int:
    """Bytes with an optional K/M/G suffix (powers of 1024); 0 = off."""
    match = re.fullmatch(r"(\d+)\s*([kKmMgG]?)[bB]?", args[0].strip())
    if match is None:
        raise DirectiveValueError(f'{name} "{args[0]}" must be a size such as 512M')
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2).lower()]
    return int(match.group(1)) * scale


def v_string(name: str, args: tuple[str, ...]) -> str:
    return args[0]


def v_strings(name: str, args: tuple[str, ...]) -> tuple[str, ...]:
    return args


def parse_listen(text: str) -> tuple[str, int]:
    """`[IP:]port` → (host, port); host "" = every address. Apache's ap_set_listener errors."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif host.startswith("[") or ":" in host:
        raise DirectiveValueError("Invalid address or port")
    if host == "*":
        host = ""
    if "%" in host:
        raise DirectiveValueError("Scope id is not supported")
    if not port_text:
        raise DirectiveValueError("Port must be specified")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise DirectiveValueError("Invalid address or port")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
                raise DirectiveValueError("Invalid address or port") from None
    return host, int(port_text)


def v_listen(name: str, args: tuple[str, ...]) -> tuple[str, int, str]:
    host, port = parse_listen(args[0])
    protocol = args[1].lower() if len(args) > 1 else ("https" if port == 443 else "http")
    return host, port, protocol


LOG_LEVELS = (
    *("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"),
    *(f"trace{n}" for n in range(1, 9)),
)


def v_loglevel(name: str, args: tuple[str, ...]) -> str:
    """`[module:]level ...`; the value is the server-wide level (module overrides are ignored)."""
    level = None
    for arg in args:
        module, _, lvl = arg.rpartition(":")
        if lvl.lower() not in LOG_LEVELS:
            raise DirectiveValueError(f"LogLevel requires level keyword: one of {LOG_LEVELS}")
        if not module:
            level = lvl.lower()
    return level or "warn"


OPTION_NAMES = {
    name.lower(): name
    for name in (
        "None",
        "All",
        "Indexes",
        "Includes",
        "IncludesNOEXEC",
        "FollowSymLinks",
        "SymLinksIfOwnerMatch",
        "ExecCGI",
        "MultiViews",
    )
}
OPTIONS_ALL = frozenset(
    {"Indexes", "Includes", "IncludesNOEXEC", "FollowSymLinks", "SymLinksIfOwnerMatch", "ExecCGI"}
)


def v_options(name: str, args: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """→ ((sign, Option), ...) with sign "+", "-" or "" (absolute); Apache's mixing rule."""
    parsed = []
    for word in args:
        sign = word[0] if word[:1] in ("+", "-") else ""
        canonical = OPTION_NAMES.get(word[len(sign) :].lower())
        if canonical is None:
            raise DirectiveValueError(f"Illegal option {word[len(sign) :]}")
        parsed.append((sign, canonical))
    if len({bool(sign) for sign, _ in parsed}) > 1:
        raise DirectiveValueError("Either all Options must start with + or -, or no Option may.")
    return tuple(parsed)


def apply_options(base: frozenset[str], parsed: tuple[tuple[str, str], ...]) -> frozenset[str]:
    """Resolve parsed Options against the inherited set."""
    result = set() if parsed and not parsed[0][0] else set(base)
    for sign, option in parsed:
        names = OPTIONS_ALL if option == "All" else frozenset() if option == "None" else {option}
        if sign == "-":
            result -= names
        elif option == "None" and not sign:
            result.clear()
        else:
            result |= names
    return frozenset(result)


def v_allow_override(name: str, args: tuple[str, ...]) -> tuple[str, ...]:
    allowed = {"none", "all", "authconfig", "fileinfo", "indexes", "limit", "options"}
    for word in args:
        if word.split("=", 1)[0].lower() not in allowed and not word.lower().startswith(
            "nonfatal="
        ):
            raise DirectiveValueError(f"Illegal override option {word}")
    return args


_MODULE_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def v_wsgi_app(name: str, args: tuple[str, ...]) -> tuple[str, str]:
    if not _MODULE_CALLABLE.fullmatch(args[1]):
        raise DirectiveValueError(f"{name} target '{args[1]}' must be module:callable")
    return args[0], args[1]


def v_wsgi_script_alias(name: str, args: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
    """URL-path, script file, then mod_wsgi's `key=value` options (accepted, not used)."""
    for option in args[2:]:
        if "=" not in option:
            raise DirectiveValueError(f"Invalid option to {name} directive.")
    return args[0], args[1], args[2:]


def v_error_log(name: str, args: tuple[str, ...]) -> str:
    """A file, `|program` or `syslog[:facility[:tag]]`; a facility syslog lacks is refused."""
    if is_syslog(args[0]):
        try:
            parse_syslog(args[0])
        except ValueError as err:
            raise DirectiveValueError(f"{name} {args[0]}: {err}") from None
    return args[0]


def v_custom_log(name: str, args: tuple[str, ...]) -> tuple[str, str, str | None]:
    """`env=[!]VAR` (any case, as Apache); ap_expr conditions (`expr=`) are not implemented."""
    condition = args[2] if len(args) > 2 else None
    if condition is not None:
        kind, _, rest = condition.partition("=")
        if kind.lower() == "expr":
            raise DirectiveValueError("expr= conditions are not implemented by mpmd; use "
                                      "env=[!]VAR")  # fmt: skip
        if kind.lower() != "env" or not rest:
            raise DirectiveValueError("error in condition clause")
        condition = "env=" + rest
    return args[0], args[1], condition


def v_log_format(name: str, args: tuple[str, ...]) -> tuple[str, str | None]:
    return args[0], args[1] if len(args) > 1 else None


def v_load_module(name: str, args: tuple[str, ...]) -> tuple[str, str]:
    if not re.fullmatch(r"\w+", args[0]):
        raise DirectiveValueError(f"Invalid module name '{args[0]}'")
    return args[0], args[1]


def v_alias(name: str, args: tuple[str, ...]) -> tuple[str, str]:
    return args[0], args[1]


def _ip_network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    parts = text.rstrip(".").split(".")
    if 1 <= len(parts) <= 3 and all(p.isdigit() and int(p) < 256 for p in parts):
        padded = parts + ["0"] * (4 - len(parts))  # Apache's "10.1" = 10.1.0.0/16
        return f"{'.'.join(padded)}/{8 * len(parts)}"
    raise DirectiveValueError(f"ip address '{text}' appears to be invalid")


# Authorization providers of modules mpmd lacks: never silently open, treat as "all denied".
UNSUPPORTED_REQUIRE = frozenset(
    {"user", "valid-user", "group", "file-owner", "file-group", "env", "method", "expr"}
)


def v_require(name: str, args: tuple[str, ...]) -> tuple[bool, str, tuple[str, ...]]:
    """→ (negate, provider, values). Providers: all, ip, local, host (+ denied stand-ins)."""
    negate = args[0].lower() == "not"
    rest = args[1:] if negate else args
    if not rest:
        raise DirectiveValueError("Require requires at least one argument")
    provider, values = rest[0].lower(), rest[1:]
    if provider == "all":
        if len(values) != 1 or values[0].lower() not in ("granted", "denied"):
            raise DirectiveValueError("Argument for 'Require all' must be 'granted' or 'denied'")
        return negate, provider, (values[0].lower(),)
    if provider == "ip":
        if not values:
            raise DirectiveValueError("Require ip requires an argument")
        return negate, provider, tuple(_ip_network(v) for v in values)
    if provider == "local":
        if values:
            raise DirectiveValueError("'Require local' does not take an argument")
        return negate, provider, ()
    if provider == "host":
        if not values:
            raise DirectiveValueError("Require host requires an argument")
        return negate, provider, tuple(v.lower() for v in values)
    if provider in UNSUPPORTED_REQUIRE or provider.startswith("ldap-"):
        return negate, provider, values
    raise DirectiveValueError(f"Unknown Authz provider: {rest[0]}")


# --- RequestReadTimeout (mod_reqtimeout) -------------------------------------------------

READ_TIMEOUT_DEFAULTS = {"handshake": (0, 0, 0), "header": (20, 40, 500), "body": (20, 0, 500)}


def _reqtimeout_int(text: str) -> int:
    match = re.match(r"-?\d+", text)
    if match is None:
        raise DirectiveValueError(f"Value '{text}' not numerical")
    if match.end() != len(text):
        raise DirectiveValueError(f"Cannot parse '{text[match.end() :]}'")
    value = int(text)
    if value < 0:
        raise DirectiveValueError("Value must be non-negative")
    return value


def _reqtimeout_stage(value: str) -> tuple[int, int, int]:
    timeout = max_timeout = rate = 0
    for part in value.split(","):
        if part.lower().startswith("minrate="):
            rate = _reqtimeout_int(part[8:])
            if rate == 0:
                raise DirectiveValueError("Minimum data rate must be larger than 0")
        else:
            low, dash, high = part.partition("-")
            timeout = _reqtimeout_int(low)
            max_timeout = _reqtimeout_int(high) if dash else 0
            if dash and max_timeout <= timeout:
                raise DirectiveValueError("Maximum timeout must be larger than initial timeout")
    if max_timeout and not rate:
        raise DirectiveValueError("Must set MinRate option if using timeout range")
    return timeout, max_timeout, rate


def v_request_read_timeout(name: str, args: tuple[str, ...]) -> dict[str, tuple[int, int, int]]:
    """→ {stage: (timeout, max_timeout, min_rate)} for the stages this line sets."""
    stages: dict[str, tuple[int, int, int]] = {}
    for word in args:
        key, eq, value = word.partition("=")
        if not eq:
            raise DirectiveValueError(
                "Invalid RequestReadTimeout parameter. Parameter must be in the form 'key=value'"
            )
        if key.lower() not in READ_TIMEOUT_DEFAULTS:
            raise DirectiveValueError(
                f"RequestReadTimeout: {word}: Unknown RequestReadTimeout parameter '{key}'"
            )
        try:
            stages[key.lower()] = _reqtimeout_stage(value)
        except DirectiveValueError as err:
            raise DirectiveValueError(f"RequestReadTimeout: {key}={value}: {err}") from None
    return stages


# --- the registry -------------------------------------------------------------------------

_THREADED: frozenset[MpmName] = frozenset({"worker", "event"})
_PREFORK: frozenset[MpmName] = frozenset({"prefork"})


def _d(name: str, group: str, contexts: frozenset[str], syntax, usage, default, doc, validate,
       **extra) -> Directive:  # fmt: skip
    return Directive(name, group, contexts, syntax, usage, default, doc, validate, **extra)


_MPM: dict[str, Any] = {"global_only": True}
# fmt: off
DIRECTIVES: tuple[Directive, ...] = (
    # MPM pool sizes (reference 3.1)
    _d("StartServers", "mpm", S, TAKE1, "number", {"prefork": 5, "worker": 3, "event": 3},
       "Number of child processes launched at server startup", v_int, **_MPM),
    _d("MinSpareServers", "mpm", S, TAKE1, "number", {"prefork": 5},
       "Minimum number of idle children, to handle request spikes", v_int, mpms=_PREFORK, **_MPM),
    _d("MaxSpareServers", "mpm", S, TAKE1, "number", {"prefork": 10},
       "Maximum number of idle children", v_int, mpms=_PREFORK, **_MPM),
    _d("MinSpareThreads", "mpm", S, TAKE1, "number", {"worker": 75, "event": 75},
       "Minimum number of idle threads, to handle request spikes", v_int, mpms=_THREADED, **_MPM),
    _d("MaxSpareThreads", "mpm", S, TAKE1, "number", {"worker": 250, "event": 250},
       "Maximum number of idle threads", v_int, mpms=_THREADED, **_MPM),
    _d("ThreadsPerChild", "mpm", S, TAKE1, "number", {"worker": 25, "event": 25},
       "Number of threads each child creates", v_int, mpms=_THREADED, **_MPM),
    _d("ThreadLimit", "mpm", S, TAKE1, "number", {"worker": 64, "event": 64},
       "Maximum number of worker threads per child process for this run of Apache - Upper "
       "limit for ThreadsPerChild", v_int, mpms=_THREADED, **_MPM),
    _d("ServerLimit", "mpm", S, TAKE1, "number", {"prefork": 256, "worker": 16, "event": 16},
       "Maximum number of child processes for this run of Apache", v_int, **_MPM),
    _d("MaxRequestWorkers", "mpm", S, TAKE1, "number",
       {"prefork": 256, "worker": 400, "event": 400},
       "Maximum number of threads alive at the same time", v_int,
       aliases=("MaxClients",), **_MPM),
    _d("MaxConnectionsPerChild", "mpm", S, TAKE1, "number", 0,
       "Maximum number of connections a particular child serves before dying.", v_int,
       aliases=("MaxRequestsPerChild",), **_MPM),
    _d("AsyncRequestWorkerFactor", "mpm", S, TAKE1, "number", {"event": 2.0},
       "How many additional connects will be accepted per idle worker thread", v_factor,
       mpms=frozenset({"event"}), **_MPM),
    _d("GracefulShutdownTimeout", "mpm", S, TAKE1, "seconds", 0,
       "Maximum time in seconds to wait for child processes to complete transactions during "
       "shutdown", v_int, **_MPM),
    _d("ListenBacklog", "mpm", S, TAKE1, "number", 511,
       "Maximum length of the queue of pending connections, as used by listen(2)", v_positive,
       **_MPM),
    _d("MaxMemoryPerChild", "mpm", S, TAKE1, "size", 0,
       "mpmd extension: recycle a child whose unique memory exceeds this many bytes "
       "(K/M/G suffix; 0 = off)", v_size, extension=True, **_MPM),
    _d("Listen", "mpm", S, TAKE12, "[IP:]port [protocol]", None,
       "A port number or a numeric IP address and a port number, and an optional protocol",
       v_listen, repeatable=True, **_MPM),
    _d("PidFile", "mpm", S, TAKE1, "path", "logs/httpd.pid",
       "A file for logging the server process ID", v_string, **_MPM),
    _d("ScoreBoardFile", "mpm", S, TAKE1, "path", None,
       "A file for Apache to maintain runtime process management information (mpmd: the "
       "scoreboard's shared memory, which mpmctl status reads; default "
       "/dev/shm/mpmd-PID.scoreboard)",
       v_string, **_MPM),
    # Server identity and process
    _d("ServerRoot", "core", S, TAKE1, "path", "(directory of the config file)",
       "Common directory of server-related files (logs, confs, etc.)", v_string),
    _d("ServerName", "core", SV, TAKE1, "[scheme://]host[:port]", "(the host name)",
       "The hostname and port of the server", v_string),
    _d("ServerAlias", "core", frozenset({VHOST}), ITERATE, "name ...", None,
       "A name or names alternately used to access the server", v_strings, repeatable=True),
    _d("ServerAdmin", "core", SV, TAKE1, "email", "[no address given]",
       "The email address of the server administrator", v_string),
    _d("User", "core", S, TAKE1, "name|#uid", None,
       "Effective user id for this server", v_string),
    _d("Group", "core", S, TAKE1, "name|#gid", None,
       "Name or number of group to run httpd as", v_string),
    _d("LoadModule", "core", S, TAKE2, "module file", None,
       "A module name and the name of a shared object file to load it from (mpmd reads it "
       "to pick the MPM and for <IfModule>)", v_load_module, repeatable=True),
    _d("ExtendedStatus", "core", S, FLAG, "On|Off", "Off (On when status_module is loaded)",
       "\"On\" to track extended status information, \"Off\" to disable", v_flag),
    # HTTP protocol, per virtual host (reference 3.2, 8.2)
    _d("Timeout", "http", SV, TAKE1, "seconds", 60.0,
       "Timeout duration (sec)", v_timeout),
    _d("KeepAlive", "http", SV, FLAG, "On|Off", True,
       "Whether persistent connections should be On or Off", v_flag),
    _d("KeepAliveTimeout", "http", SV, TAKE1, "seconds|Nms", 5.0,
       "Keep-Alive timeout duration (sec)", v_timeout),
    _d("MaxKeepAliveRequests", "http", SV, TAKE1, "number", 100,
       "Maximum number of Keep-Alive requests per connection, or 0 for infinite", v_int),
    _d("RequestReadTimeout", "http", SV, ITERATE, "[handshake=..] [header=..] [body=..]",
       "header=20-40,MinRate=500 body=20,MinRate=500",
       "Set various timeout parameters for TLS handshake and reading request headers and body",
       v_request_read_timeout),
    _d("LimitRequestLine", "http", SV, TAKE1, "bytes", 8190,
       "Limit on maximum size of an HTTP request line", v_nonneg),
    _d("LimitRequestFieldSize", "http", SV, TAKE1, "bytes", 8190,
       "Limit on maximum size of an HTTP request header field", v_nonneg),
    _d("LimitRequestFields", "http", SV, TAKE1, "number", 100,
       "Limit (0 = unlimited) on max number of header fields in a request message", v_nonneg),
    _d("LimitRequestBody", "http", SV, TAKE1, "bytes", 1073741824,
       "Limit (in bytes) on maximum size of request message body", v_nonneg),
    # Content mapping
    _d("DocumentRoot", "content", SV, TAKE1, "path", "htdocs (built-in default: mpmd's page)",
       "Root directory of the document tree", v_string),
    _d("Alias", "content", SV, TAKE2, "URL-path file-path", None,
       "a fakename and a realname", v_alias, repeatable=True),
    _d("DirectoryIndex", "content", SVD, ITERATE, "file ...|disabled", ("index.html",),
       "a list of file names", v_strings),
    _d("Options", "content", SVD, ITERATE, "[+|-]option ...", ("FollowSymLinks",),
       "Set a number of attributes for a given directory", v_options),
    _d("AllowOverride", "content", D, ITERATE, "None|All|type ...", ("None",),
       "Controls what groups of directives can be configured by per-directory config files "
       "(mpmd never reads .htaccess)", v_allow_override),
    _d("SetHandler", "content", D, TAKE1, "handler", None,
       "A handler name that overrides any other configured handler (mpmd has server-status, "
       "metrics and none)", v_string),
    _d("Require", "content", D, ITERATE, "[not] all|ip|local|host ...", None,
       "Selects which authenticated users or groups may access a protected space", v_require,
       repeatable=True),
    # Logs (reference 6.1)
    _d("ErrorLog", "logs", SV, TAKE1, "file|\"|program\"|syslog[:facility[:tag]]",
       "logs/error_log", "The filename of the error log", v_error_log),
    _d("LogLevel", "logs", SV, ITERATE, "[module:]level ...", "warn",
       "Level of verbosity in error logging", v_loglevel),
    _d("LogFormat", "logs", SV, TAKE12, "format [nickname]", None,
       "a log format string (see docs) and an optional format name", v_log_format,
       repeatable=True),
    _d("CustomLog", "logs", SV, TAKE23, "file|\"|program\" format|nickname [env=[!]VAR]", None,
       "a file name, a custom log format string or format name, and an optional "
       "\"env=\" clause (mpmd has no \"expr=\")", v_custom_log, repeatable=True),
    _d("TransferLog", "logs", SV, TAKE1, "file|\"|program\"", None,
       "the filename of the access log", v_string, repeatable=True),
    _d("BufferedLogs", "logs", S, FLAG, "On|Off", False,
       "Enable Buffered Logging (experimental)", v_flag),
    # WSGI (mod_wsgi compatible, plus mpmd's own)
    _d("WSGIScriptAlias", "wsgi", SV, ITERATE2, "URL-path file [option=value ...]", None,
       "Map a URL to a WSGI script file that defines `application` (mod_wsgi compatible)",
       v_wsgi_script_alias, repeatable=True),
    _d("WSGIApp", "wsgi", SV, TAKE2, "URL-path module:callable", None,
       "mpmd extension: mount an importable WSGI callable at a URL-path", v_wsgi_app,
       repeatable=True, extension=True),
    _d("WSGIPythonPath", "wsgi", S, TAKE1, "dir[:dir...]", None,
       "Additional directories to search for Python modules", v_string),
    _d("WSGIPreload", "wsgi", S, FLAG, "On|Off", False,
       "mpmd extension: import the applications in the parent before forking (children "
       "share the pages; the app must be fork-safe)", v_flag, extension=True),
)
# fmt: on

# Handled by config/syntax.py while reading; listed so names are known and documented.
PARSER_DIRECTIVES: dict[str, str] = {
    "Include": "Name(s) of the config file(s) to be included; fails if the wildcard matches none",
    "IncludeOptional": "Name or pattern of the config file(s) to be included; ignored if absent",
    "Define": "Define a variable, optionally to a value.  Same as passing -D to the command line.",
    "UnDefine": "Undefine the existence of a variable. Undo a Define.",
}

# Sections mpmd honours (their directives are applied) and conditionals the parser resolves.
SECTIONS = frozenset({"virtualhost", "directory", "directorymatch", "location", "locationmatch"})
CONDITIONAL_SECTIONS = frozenset(
    {"ifmodule", "ifdefine", "ifversion", "iffile", "ifdirective", "ifsection"}
)


def _index() -> dict[str, Directive]:
    by_name: dict[str, Directive] = {}
    for directive in DIRECTIVES:
        for name in (directive.name, *directive.aliases):
            assert name.lower() not in by_name, name
            by_name[name.lower()] = directive
    overlap = set(by_name) & (set(IGNORED_BY_NAME) | set(PARSER_DIRECTIVES))
    assert not overlap, overlap
    return by_name


BY_NAME = _index()
_CANONICAL = {
    **{n.lower(): n for d in DIRECTIVES for n in (d.name, *d.aliases)},
    **IGNORED_CANONICAL,
    **{n.lower(): n for n in PARSER_DIRECTIVES},
    **{
        n.lower(): n
        for n in (
            *("VirtualHost", "Directory", "DirectoryMatch", "Location", "LocationMatch"),
            *("IfModule", "IfDefine", "IfVersion", "IfFile", "IfDirective", "IfSection"),
        )
    },
}


def lookup(name: str) -> Directive | None:
    """The implemented directive called `name` (case-insensitive, aliases included)."""
    return BY_NAME.get(name.lower())


def is_directive(name: str) -> bool:
    """Whether `name` is a directive or section mpmd knows (for <IfDirective>/<IfSection>)."""
    return name.lower().lstrip("<") in _CANONICAL


def unknown_message(name: str) -> str:
    """Apache's "Invalid command" error, with the closest known name as a suggestion."""
    message = (
        f"Invalid command '{name}', perhaps misspelled or defined by a module not included "
        "in the server configuration"
    )
    close = difflib.get_close_matches(name.lower(), list(_CANONICAL), n=1, cutoff=0.75)
    if close:
        message += f" (did you mean {_CANONICAL[close[0]]}?)"
    return message


# --- documentation ------------------------------------------------------------------------

GROUP_TITLES = {
    "mpm": "Processes and pools (MPM)",
    "core": "Server",
    "http": "HTTP protocol and limits (per virtual host)",
    "content": "Content mapping and access",
    "logs": "Logging",
    "wsgi": "WSGI applications",
}
_CONTEXT_ORDER = ((SERVER, "server config"), (VHOST, "virtual host"), (DIRECTORY, "directory"))


def _format_default(directive: Directive) -> str:
    default = directive.default
    if default is None:
        return "—"
    if isinstance(default, Mapping):
        return ", ".join(f"{mpm}: {_plain(default[mpm])}" for mpm in MPM_NAMES if mpm in default)
    return _plain(default)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "On" if value else "Off"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render_markdown() -> str:
    """docs/directives.md, generated from the registry (python -m mpmd.config.directives)."""
    lines = [
        "# mpmd directives",
        "",
        "Generated from `src/mpmd/config/directives.py` by "
        "`python -m mpmd.config.directives > docs/directives.md`; do not edit by hand.",
        "Names are case-insensitive. Defaults that differ per MPM are listed per MPM.",
        "",
    ]
    for group, title in GROUP_TITLES.items():
        lines += [f"## {title}", "", "| Directive | Aliases | Context | Syntax | Default | Description |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for d in (d for d in DIRECTIVES if d.group == group):
            context = ", ".join(label for key, label in _CONTEXT_ORDER if key in d.contexts)
            if d.mpms != frozenset(MPM_NAMES):
                context += f" ({'/'.join(m for m in MPM_NAMES if m in d.mpms)} only)"
            cells = [f"`{d.name}`", ", ".join(f"`{a}`" for a in d.aliases) or "—", context,
                     f"`{d.name} {d.usage}`", _format_default(d), d.doc]  # fmt: skip
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    lines += ["## Read by the configuration parser", "", "| Directive | Description |", "|---|---|"]
    lines += [f"| `{name}` | {doc} |" for name, doc in PARSER_DIRECTIVES.items()]
    lines += [
        "",
        "## Accepted and ignored",
        "",
        "Directives of Apache modules mpmd does not implement load with one warning per name "
        "(`FILE:LINE: Name (module) is not implemented by mpmd; every Name is ignored`).",
        "",
        "| Module | Directives |",
        "|---|---|",
    ]
    for module, names in IGNORED.items():
        sections = IGNORED_SECTIONS.get(module, "")
        shown = [f"`{n}`" for n in names.split()] + [f"`<{n}>`" for n in sections.split()]
        if shown:
            lines.append(f"| {module} | {', '.join(shown)} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown(), end="")
