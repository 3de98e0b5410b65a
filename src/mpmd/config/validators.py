"""Directive validators: (directive name, arguments) → the typed value config/build.py uses.

Each validator checks one directive's arguments and raises DirectiveValueError with Apache's
wording (without FILE:LINE, which the caller adds). They are pure functions of their arguments:
they never read files, the configuration tree or the registry (config/groups/ names which
validator each directive uses).
"""

from __future__ import annotations

import ipaddress
import re

from mpmd.logs.targets import is_syslog, parse_syslog


class DirectiveValueError(ValueError):
    """A directive's arguments are wrong; the message is Apache-worded, without FILE:LINE."""


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


MODULE_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def v_wsgi_app(name: str, args: tuple[str, ...]) -> tuple[str, str]:
    if not MODULE_CALLABLE.fullmatch(args[1]):
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

READ_TIMEOUT_STAGES = ("handshake", "header", "body")


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
        if key.lower() not in READ_TIMEOUT_STAGES:
            raise DirectiveValueError(
                f"RequestReadTimeout: {word}: Unknown RequestReadTimeout parameter '{key}'"
            )
        try:
            stages[key.lower()] = _reqtimeout_stage(value)
        except DirectiveValueError as err:
            raise DirectiveValueError(f"RequestReadTimeout: {key}={value}: {err}") from None
    return stages


# -- mod_ssl (reference edge-and-asgi 1.1) -------------------------------------------------

SSL_PROTOCOL_NAMES = {"sslv3": "SSLv3", "tlsv1": "TLSv1", "tlsv1.1": "TLSv1.1",
                      "tlsv1.2": "TLSv1.2", "tlsv1.3": "TLSv1.3"}  # fmt: skip
SSL_OPTION_NAMES = {n.lower(): n for n in ("StdEnvVars", "ExportCertData", "FakeBasicAuth",
                    "StrictRequire", "OptRenegotiate", "LegacyDNStringFormat")}  # fmt: skip


def v_ssl_engine(name: str, args: tuple[str, ...]) -> str:
    word = args[0].lower()
    if word not in ("on", "off", "optional"):
        raise DirectiveValueError("Argument must be On, Off, or Optional")
    return word


def v_ssl_verify_client(name: str, args: tuple[str, ...]) -> str:
    word = {"off": "none", "on": "require"}.get(args[0].lower(), args[0].lower())
    if word not in ("none", "optional", "require", "optional_no_ca"):
        raise DirectiveValueError(f"{name}: Invalid argument '{args[0]}'")
    return word


def v_ssl_verify_depth(name: str, args: tuple[str, ...]) -> int:
    if not args[0].isdigit():
        raise DirectiveValueError(f"{name}: Invalid argument '{args[0]}'")
    return int(args[0])


def v_ssl_protocol(name: str, args: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Apache's ssl_cmd_protocol_parse: `+p` adds, `-p` removes, a bare word replaces what
    came before (with AH02532 when something was set). Returns the set and the bare words
    that overrode a setting, for the caller to warn about with FILE:LINE."""
    every = frozenset(SSL_PROTOCOL_NAMES.values())
    enabled: frozenset[str] = frozenset()
    overriding: list[str] = []
    for word in args:
        action, proto = (word[0], word[1:]) if word[:1] in "+-" else ("", word)
        if proto.lower() == "sslv2":
            if action == "-":
                continue
            raise DirectiveValueError("SSLProtocol: SSLv2 is no longer supported")
        if proto.lower() == "all":
            this = every
        elif proto.lower() in SSL_PROTOCOL_NAMES:
            this = frozenset({SSL_PROTOCOL_NAMES[proto.lower()]})
        else:
            raise DirectiveValueError(f"{name}: Illegal protocol '{proto}'")
        if action == "-":
            enabled -= this
        elif action == "+":
            enabled |= this
        else:
            if enabled:
                overriding.append(proto)
            enabled = this
    return enabled, tuple(overriding)


def v_ssl_cipher_suite(name: str, args: tuple[str, ...]) -> tuple[str, str]:
    """(`SSL` or `TLSv1.3`, spec): the one-argument form names the TLS <= 1.2 list."""
    if len(args) == 1:
        return "SSL", args[0]
    protocol = args[0].upper().replace("TLSV", "TLSv")
    if protocol not in ("SSL", "TLSv1.3"):
        raise DirectiveValueError(f"protocol '{args[0]}' not supported")
    return protocol, args[1]


def v_ssl_options(name: str, args: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(action, option) pairs: action "+", "-" or "" (a bare word replaces, as Options)."""
    parsed = []
    for word in args:
        action, option = (word[0], word[1:]) if word[:1] in "+-" else ("", word)
        canonical = SSL_OPTION_NAMES.get(option.lower())
        if canonical is None:
            raise DirectiveValueError(f"{name}: Illegal option '{option}'")
        parsed.append((action, canonical))
    return tuple(parsed)


def v_ssl_session_cache(name: str, args: tuple[str, ...]) -> str:
    text = args[0]
    kind = text.partition(":")[0].lower()
    if text.lower() in ("none", "nonenotnull") or (
        ":" in text and kind in ("dbm", "shmcb", "shmht", "dc")
    ):
        return text
    raise DirectiveValueError(f"{name}: Invalid argument: '{text}'")
