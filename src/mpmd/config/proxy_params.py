"""mod_proxy's `key=value` parameters: worker (BalancerMember, ProxyPass to a URL, ProxySet on a
worker), balancer (ProxySet / ProxyPass on balancer://) and mod_proxy_hcheck's hc* keys.

Each function checks one key as Apache 2.4's set_worker_param, set_balancer_param and
set_worker_hc_param do (modules/proxy/mod_proxy.c, mod_proxy_hcheck.c): the same ranges, the
same C number parsing (atoi/atof read a leading number and ignore the rest) and the same error
strings, raised as DirectiveValueError without the directive prefix the caller adds. Values are
collected into a dict of model field names (config/model.py WorkerParams / BalancerParams) so
that the builder knows which keys were set explicitly (templates, worker sharing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mpmd.config.validators import DirectiveValueError
from mpmd.handlers.proxy.hcexpr import ExprError, parse

# Flags `status=` may set or clear (reference 7.2); Apache's internal O G U F are refused.
STATUS_FLAGS = "DSIHRENC"
LBMETHODS = ("byrequests", "bytraffic", "bybusyness")
HC_METHODS = ("NONE", "TCP", "OPTIONS", "HEAD", "GET", "OPTIONS11", "HEAD11", "GET11")
HC_KEYS = ("hctemplate", "hcmethod", "hcinterval", "hcpasses", "hcfails", "hcuri", "hcexpr")
# Valid for Apache but with no effect in mpmd: accepted (after Apache's checks) with a warning.
UNUSED_WORKER_KEYS = ("addressttl", "flusher", "secret", "responsefieldsize")
_ROUTE_SIZE = 64  # PROXY_WORKER_MAX_ROUTE_SIZE
_SCHEME_SIZE = 16  # PROXY_WORKER_MAX_SCHEME_SIZE
_NONCE_SIZE = 37  # APR_UUID_FORMATTED_LENGTH + 1
_WD_SLICE = 0.1  # AP_WD_TM_SLICE: the watchdog's 100 ms tick
_INT32_MAX = 2**31 - 1
_LEADING_INT = re.compile(r"[ \t\n\r\v\f]*([+-]?\d+)")
_LEADING_FLOAT = re.compile(r"[ \t\n\r\v\f]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def c_atoi(text: str) -> int:
    """C's atoi: the leading integer, 0 when there is none."""
    match = _LEADING_INT.match(text)
    return int(match.group(1)) if match else 0


def c_atof(text: str) -> float:
    """C's atof: the leading decimal number, 0.0 when there is none."""
    match = _LEADING_FLOAT.match(text)
    return float(match.group(1)) if match else 0.0


def interval(text: str, default_unit: str) -> float | None:
    """ap_timeout_parameter_parse → seconds; None where Apache reports a wrong format.

    A number, then an optional unit (s, ms, mi, h; default `default_unit`), nothing else checked.
    """
    match = re.match(r"[ \t]*([+-]?\d+)(.*)", text, re.DOTALL)
    if match is None:
        return None
    number, unit = int(match.group(1)), (match.group(2) or default_unit).lower()
    if number < 0:
        return None
    if unit.startswith("s"):
        return float(number)
    if unit.startswith("h"):
        return number * 3600.0
    if unit.startswith("ms"):
        return number / 1000
    if unit.startswith("mi"):
        return number * 60.0
    return None


def _on_off(val: str, message: str) -> bool:
    word = val.lower()
    if word not in ("on", "off"):
        raise DirectiveValueError(message)
    return word == "on"


def apply_status(current: str, text: str) -> str:
    """`status=` as Apache walks it: `+` sets, `-` clears (and stays in force), plain sets."""
    flags = set(current)
    mode = True
    i = 0
    while i < len(text):
        if text[i] in "+-":
            mode = text[i] == "+"
            i += 1
        flag = text[i].upper() if i < len(text) else ""
        if not flag or flag not in STATUS_FLAGS:
            raise DirectiveValueError("Unknown status parameter option")
        if mode:
            flags.add(flag)
        else:
            flags.discard(flag)
        i += 1
    return "".join(f for f in STATUS_FLAGS if f in flags)


def worker_param(
    fields: dict[str, Any],
    key: str,
    val: str,
    templates: Mapping[str, Mapping[str, Any]],
    expressions: Mapping[str, tuple[str, str]],
) -> None:
    """Apply one worker `key=value` to `fields` (WorkerParams names); Apache's errors."""
    k = key.lower()
    if k == "loadfactor":
        factor = int(c_atof(val) * 100.0)
        if factor < 100 or factor > 10000:
            raise DirectiveValueError("LoadFactor must be a number between 1..100")
        fields["loadfactor"] = factor
    elif k == "retry":
        number = c_atoi(val)
        if number < 0:
            raise DirectiveValueError("Retry must be a positive value")
        fields["retry"] = float(number)
    elif k == "ttl":
        number = c_atoi(val)
        if number < 1:
            raise DirectiveValueError("TTL must be at least one second")
        fields["ttl"] = float(number)
    elif k in ("min", "max", "smax"):
        number = c_atoi(val)
        if number < 0:
            raise DirectiveValueError(f"{k.capitalize()} must be a positive number")
        fields[k] = number if k == "min" or number else None  # max/smax 0: Apache's default
    elif k == "acquire":
        seconds = interval(val, "ms")
        if seconds is None:
            raise DirectiveValueError("Acquire timeout has wrong format")
        if seconds < 0.001:
            raise DirectiveValueError("Acquire must be at least one millisecond")
        fields["acquire"] = seconds
    elif k == "timeout":
        number = c_atoi(val)
        if number < 1:
            raise DirectiveValueError("Timeout must be at least one second")
        fields["timeout"] = float(number)
    elif k == "iobuffersize":
        number = c_atoi(val)
        if 0 < number < 512 or number < 0:
            raise DirectiveValueError("IOBufferSize must be >= 512 bytes, or 0 for system default.")
        fields["iobuffersize"] = number or 8192
    elif k == "receivebuffersize":
        number = c_atoi(val)
        if number < 512 and number != 0:
            raise DirectiveValueError(
                "ReceiveBufferSize must be >= 512 bytes, or 0 for system default."
            )
        fields["receivebuffersize"] = number
    elif k == "keepalive":
        fields["keepalive"] = _on_off(val, "KeepAlive must be On|Off")
    elif k == "disablereuse":
        fields["reuse"] = not _on_off(val, "DisableReuse must be On|Off")
    elif k == "enablereuse":
        fields["reuse"] = _on_off(val, "EnableReuse must be On|Off")
    elif k in ("route", "redirect"):
        if len(val) >= _ROUTE_SIZE:
            raise DirectiveValueError(f"{k.capitalize()} length must be < {_ROUTE_SIZE} characters")
        fields[k] = val
    elif k == "status":
        fields["status"] = apply_status(fields.get("status", ""), val)
    elif k == "flushpackets":
        if val.lower() not in ("on", "off", "auto"):
            raise DirectiveValueError("flushpackets must be on|off|auto")
        fields["flushpackets"] = val.lower()
    elif k == "flushwait":
        number = c_atoi(val)
        if number > 1000 or number < 0:
            raise DirectiveValueError(
                "flushwait must be <= 1000, or 0 for system default of 10 millseconds."
            )
        fields["flushwait"] = number / 1000 if number else 0.01
    elif k == "ping":
        seconds = interval(val, "s")
        if seconds is None:
            raise DirectiveValueError("Ping/Pong timeout has wrong format")
        if seconds < 0.001:
            raise DirectiveValueError("Ping/Pong timeout must be at least one millisecond")
        fields["ping"] = seconds
    elif k == "lbset":
        number = c_atoi(val)
        if number < 0 or number > 99:
            raise DirectiveValueError("lbset must be between 0 and 99")
        fields["lbset"] = number
    elif k == "connectiontimeout":
        seconds = interval(val, "s")
        if seconds is None:
            raise DirectiveValueError("Connectiontimeout has wrong format")
        if seconds < 0.001:
            raise DirectiveValueError("Connectiontimeout must be at least one millisecond.")
        fields["connection_timeout"] = seconds
    elif k == "upgrade":
        value = "*" if val.lower() == "any" else val
        if len(value) >= _SCHEME_SIZE:
            raise DirectiveValueError(
                f"upgrade protocol length must be < {_SCHEME_SIZE} characters"
            )
        fields["upgrade"] = value
    elif k in UNUSED_WORKER_KEYS:
        _unused_worker_param(k, val)
    else:
        hc_param(fields, key, val, templates, expressions)


def _unused_worker_param(k: str, val: str) -> None:
    """Apache's checks for the keys mpmd accepts without using them."""
    if k == "addressttl":
        seconds = interval(val, "s")
        if val != "-1" and (seconds is None or seconds > _INT32_MAX or seconds % 1):
            raise DirectiveValueError(
                f"AddressTTL must be -1 or a number of seconds not exceeding {_INT32_MAX}"
            )
    elif k == "flusher" and len(val) >= _SCHEME_SIZE:
        raise DirectiveValueError(f"flusher name length must be < {_SCHEME_SIZE} characters")
    elif k == "secret" and len(val) >= _SCHEME_SIZE:
        raise DirectiveValueError(f"Secret length must be < {_SCHEME_SIZE} characters")
    elif k == "responsefieldsize" and c_atoi(val) < 0:
        raise DirectiveValueError(
            "ResponseFieldSize must be greater than 0 bytes, or 0 for system default."
        )


def hc_param(
    fields: dict[str, Any],
    key: str,
    val: str,
    templates: Mapping[str, Mapping[str, Any]],
    expressions: Mapping[str, tuple[str, str]],
) -> None:
    """mod_proxy_hcheck's keys (set_worker_hc_param); templates and expressions by name."""
    k = key.lower()
    if k == "hctemplate":
        template = templates.get(val.lower())
        if template is None:
            raise DirectiveValueError(f"Unknown ProxyHCTemplate name: {val}")
        fields.update(template)
    elif k == "hcmethod":
        method = val.upper()
        if method in ("CPING", "PROVIDER"):
            raise DirectiveValueError(f"Health check method {val} not (yet) implemented")
        if method not in HC_METHODS:
            raise DirectiveValueError("Unknown method")
        fields["hcmethod"] = method
    elif k == "hcinterval":
        seconds = interval(val, "s")
        if seconds is None:
            raise DirectiveValueError("Unparse-able hcinterval setting")
        if seconds < _WD_SLICE:
            raise DirectiveValueError("Interval must be a positive value greater than 100ms")
        fields["hcinterval"] = seconds
    elif k in ("hcpasses", "hcfails"):
        number = c_atoi(val)
        if number < 0:
            raise DirectiveValueError(f"{k[2:].capitalize()} must be a positive value")
        fields[k] = number
    elif k == "hcuri":
        if len(val) >= _ROUTE_SIZE:
            raise DirectiveValueError(f"Health check uri length must be < {_ROUTE_SIZE} characters")
        fields["hcuri"] = val
    elif k == "hcexpr":
        if val.lower() not in expressions:
            raise DirectiveValueError(f"Unknown health check condition expr: {val}")
        fields["hcexpr"] = expressions[val.lower()][0]  # as ProxyHCExpr spells it
    else:
        raise DirectiveValueError("unknown Worker hcheck parameter")


def template_fields() -> dict[str, Any]:
    """A new ProxyHCTemplate: Apache starts it at method TCP, 30 s, passes and fails 1."""
    return {"hcmethod": "TCP", "hcinterval": 30.0, "hcpasses": 1, "hcfails": 1,
            "hcuri": "", "hcexpr": ""}  # fmt: skip


def balancer_param(fields: dict[str, Any], key: str, val: str) -> None:
    """Apply one balancer `key=value` to `fields` (BalancerParams names); Apache's errors."""
    k = key.lower()
    if k == "stickysession":
        cookie, bar, param = val.partition("|")
        fields["sticky_cookie"] = cookie
        fields["sticky_param"] = param if bar else cookie
    elif k == "stickysessionsep":
        if len(val) == 1:
            fields["sticky_separator"] = val
        elif val.lower() == "off":
            fields["sticky_separator"] = ""
        else:
            raise DirectiveValueError("stickysessionsep must be a single character or Off")
    elif k == "nofailover":
        fields["nofailover"] = _on_off(val, "failover must be On|Off")
    elif k == "timeout":
        number = c_atoi(val)
        if number < 1:
            raise DirectiveValueError("timeout must be at least one second")
        fields["timeout"] = float(number)
    elif k == "maxattempts":
        number = c_atoi(val)
        if number < 0:
            raise DirectiveValueError("maximum number of attempts must be a positive number")
        fields["maxattempts"] = number
    elif k == "lbmethod":
        if val == "heartbeat":
            raise DirectiveValueError(
                "lbmethod heartbeat is not implemented by mpmd (use byrequests, bytraffic "
                "or bybusyness)"
            )
        if val not in LBMETHODS:
            raise DirectiveValueError("unknown lbmethod")
        fields["lbmethod"] = val
    elif k == "scolonpathdelim":
        fields["scolonpathdelim"] = _on_off(val, "scolonpathdelim must be On|Off")
    elif k == "failonstatus":
        codes = set()
        for token in re.split(r"[, ]+", val):
            if not token:
                continue
            code = c_atoi(token)
            if not 100 <= code <= 599:
                raise DirectiveValueError("failonstatus must be one or more HTTP response codes")
            codes.add(code)
        fields["failonstatus"] = frozenset(codes)
    elif k == "failontimeout":
        fields["failontimeout"] = _on_off(val, "failontimeout must be On|Off")
    elif k == "nonce":
        if val.lower() == "none":
            fields["nonce"] = None
        elif len(val) >= _NONCE_SIZE:
            raise DirectiveValueError("Provided nonce is too large")
        else:
            fields["nonce"] = val
    elif k == "growth":
        number = c_atoi(val)
        if number < 1 or number > 100:
            raise DirectiveValueError("growth must be between 1 and 100")
        fields["growth"] = number
    elif k == "forcerecovery":
        fields["forcerecovery"] = _on_off(val, "forcerecovery must be On|Off")
    else:
        raise DirectiveValueError("unknown Balancer parameter")


# -- back-end URLs and balancer names --------------------------------------------------------

_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class BackendUrl:
    """A back end's URL, parsed: BackendMember.url is its `name`."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def parse_url(text: str, *, regex: bool = False) -> BackendUrl:
    """A back-end URL: http:// or ws://, host lower-case, port 80 by default, no trailing /."""
    if text.lower().startswith("unix:"):
        raise DirectiveValueError(
            f"{text}: unix: socket back ends are not supported by mpmd "
            "(it proxies to http:// and ws:// back ends)"
        )
    match = _URL.fullmatch(text)
    if match is None or not match.group(2):
        raise DirectiveValueError(f"URL must be absolute!: {text}")
    scheme = match.group(1).lower()
    if scheme in ("https", "wss"):
        raise DirectiveValueError(
            f"{text}: TLS to back ends is not supported by mpmd "
            "(it proxies to http:// and ws:// back ends)"
        )
    if scheme not in ("http", "ws"):
        raise DirectiveValueError(
            f"{text}: the {scheme}:// scheme is not supported by mpmd "
            "(it proxies to http:// and ws:// back ends)"
        )
    hostport = match.group(2).rpartition("@")[2]
    if regex and "$" in hostport:
        raise DirectiveValueError(
            f"{text}: $n in the host or port is not supported by mpmd (only in the path)"
        )
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise DirectiveValueError(f"URL must be absolute!: {text}")
    port = int(port_text) if port_text.isdigit() else (0 if port_text else 80)
    if not 0 < port < 65536:
        raise DirectiveValueError(f"Unable to parse URL: {text}")
    path = "" if regex else re.split(r"[?#]", match.group(3), maxsplit=1)[0].rstrip("/")
    return BackendUrl(scheme, host.lower(), port, path)


def balancer_name(text: str) -> str:
    """balancer://NAME[/path] → "balancer://name", as ap_proxy_define_balancer stores it."""
    scheme, sep, rest = text.partition("://")
    if not sep or not rest:
        raise DirectiveValueError(f"Bad syntax for a balancer name ({text})")
    return f"{scheme}://{rest.split('/', 1)[0]}".lower()


# -- validators of the directives themselves (config/groups/proxy.py names them) ------------


def v_proxy_timeout(name: str, args: tuple[str, ...]) -> float:
    seconds = c_atoi(args[0])
    if seconds < 1:
        raise DirectiveValueError("Proxy Timeout must be at least 1 second.")
    return float(seconds)


def v_proxy_via(name: str, args: tuple[str, ...]) -> str:
    for word in ("Off", "On", "Full", "Block"):
        if args[0].lower() == word.lower():
            return word
    raise DirectiveValueError("ProxyVia must be one of: off | on | full | block")


def v_proxy_status(name: str, args: tuple[str, ...]) -> bool:
    word = args[0].lower()
    if word not in ("off", "on", "full"):
        raise DirectiveValueError("ProxyStatus must be one of: off | on | full")
    return word != "off"


def v_proxy_requests(name: str, args: tuple[str, ...]) -> bool:
    word = args[0].lower()
    if word not in ("on", "off"):
        raise DirectiveValueError(f"{name} must be On or Off")
    if word == "on":
        raise DirectiveValueError(
            "ProxyRequests On: mpmd is a reverse proxy only; forward proxying is not "
            "supported (use ProxyPass, and leave ProxyRequests Off)"
        )
    return False


def v_error_override(name: str, args: tuple[str, ...]) -> tuple[bool, frozenset[int]]:
    """On|Off, then (after On) the status codes to intercept, as Apache 2.4.47 takes them."""
    word = args[0].lower()
    if word not in ("on", "off"):
        raise DirectiveValueError("ProxyErrorOverride first parameter must be one of: off | on")
    codes = set()
    for arg in args[1:]:
        if not arg[:1].isdigit():
            raise DirectiveValueError(
                "ProxyErrorOverride: status codes to intercept must be numeric"
            )
        if word == "off":
            raise DirectiveValueError(
                "ProxyErrorOverride: status codes must follow a value of 'on'"
            )
        code = c_atoi(arg)
        if not 400 <= code < 600:
            raise DirectiveValueError(
                "ProxyErrorOverride: status codes to intercept must be valid HTTP Status "
                "Codes >=400 && <600"
            )
        codes.add(code)
    return word == "on", frozenset(codes)


def v_hc_expr(name: str, args: tuple[str, ...]) -> tuple[str, str]:
    """ProxyHCExpr name {expression}: the braces may enclose spaces (ap_getword_conf2)."""
    expr_name = args[0]
    if not expr_name:
        raise DirectiveValueError(f"Missing expression name for {name}")
    if len(expr_name) > _SCHEME_SIZE - 1:
        raise DirectiveValueError(f"Expression name limited to {_SCHEME_SIZE - 1} characters")
    text = " ".join(args[1:])
    if not text:
        raise DirectiveValueError(f"Missing expression for {name}")
    if text.startswith("{"):
        depth, end = 0, 0
        while end < len(text):
            depth += (text[end] == "{") - (text[end] == "}")
            if depth == 0:
                break
            end += 1
        if depth:
            raise DirectiveValueError(f'Could not parse expression "{text}": missing closing brace')
        expression, rest = text[1:end].strip(), text[end + 1 :].strip()
    else:
        expression, _, rest = text.partition(" ")
    if rest:
        raise DirectiveValueError("error: extra parameter(s)")
    try:
        parse(expression)
    except ExprError as error:
        raise DirectiveValueError(f'Could not parse expression "{expression}": {error}') from None
    return expr_name, expression


def v_hc_tpsize(name: str, args: tuple[str, ...]) -> int:
    """ProxyHCTPsize: atoi, as Apache reads it; a negative size is refused."""
    match = re.match(r"\s*[+-]?\d+", args[0])
    size = int(match.group()) if match else 0
    if size < 0:
        raise DirectiveValueError("Invalid ProxyHCTPsize parameter. Parameter must be >= 0")
    return size


def v_raw(name: str, args: tuple[str, ...]) -> tuple[str, ...]:
    """The words as written: config/proxy.py reads them with their section for context."""
    return args
