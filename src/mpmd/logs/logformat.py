"""mod_log_config's format language: LogFormat compiled once into a fast formatter.

This module owns the format language (reference 6.2: directives, modifiers,
`ap_escape_logitem`) and nothing else: the CustomLog writer and BufferedLogs are
logs/access.py's, the files and `|program`s logs/targets.py's.

The one idea: `compile_format` turns the format string into the source of a single Python
function (one expression per item, joined) and compiles it once at start-up; logging a request
is then one call with no parsing and no per-item dispatch. What is the same from request to
request (the time text of a second, an escaped request line or header value) is remembered.
"""

from __future__ import annotations

import ast
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from mpmd.http.exchange import Exchange
from mpmd.http.fields import hide_password, host_name
from mpmd.logs.error import escape_bytes

Formatter = Callable[[Exchange, float], str]

COMMON = '%h %l %u %t "%r" %>s %b'
COMBINED = COMMON + ' "%{Referer}i" "%{User-Agent}i"'
# Apache predefines CLF; Debian's apache2.conf defines the others. The builder resolves these.
NICKNAMES: dict[str, str] = {
    "CLF": COMMON,
    "common": COMMON,
    "combined": COMBINED,
    "vhost_combined": "%v:%p " + COMBINED,
    "referer": "%{Referer}i -> %U",
    "agent": "%{User-agent}i",
}

# -- ap_escape_logitem ------------------------------------------------------------------------

_ESCAPES: dict[int, str] = {}
for _code in range(256):
    if _code in (0x22, 0x5C):
        _ESCAPES[_code] = "\\" + chr(_code)
    elif _code < 0x20 or _code >= 0x7F:
        _ESCAPES[_code] = f"\\x{_code:02x}"
for _char, _text in (("\b", "\\b"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\v", "\\v")):
    _ESCAPES[ord(_char)] = _text
del _code, _char, _text


_escaped: dict[str, str] = {}  # text -> escaped text: request lines and headers repeat
_ESCAPED_LIMIT = 1024


def escape_logitem(text: str) -> str:
    """Apache's ap_escape_logitem: `"` and `\\` backslashed, other unprintables as \\xhh.

    Strings are latin-1 decoded bytes, so each character is one byte; a character above 0xff
    (from an application's note) is escaped as its UTF-8 bytes. The result is remembered: a
    lookup costs less than the checks, and a server logs the same few URLs and User-Agents.
    """
    escaped = _escaped.get(text)
    if escaped is None:
        if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
            escaped = text
        else:
            escaped = escape_bytes(text, _ESCAPES)
        if len(_escaped) >= _ESCAPED_LIMIT:
            _escaped.clear()
        _escaped[text] = escaped
    return escaped


def _esc_opt(text: str | None) -> str:
    """An item that may be absent: `-` when absent, escaped otherwise (empty stays empty)."""
    return "-" if text is None else escape_logitem(text)


# -- helpers the generated formatter calls ----------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_clf_cache: dict[int, str] = {}


def clf_time(when: float) -> str:
    """`[26/Nov/2026:04:03:23 +0000]` in local time, formatted at most once per second."""
    sec = int(when)
    text = _clf_cache.get(sec)
    if text is None:
        tm = time.localtime(sec)
        offset = tm.tm_gmtoff or 0
        sign = "-" if offset < 0 else "+"
        offset = abs(offset)
        text = (
            f"[{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:"
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} "
            f"{sign}{offset // 3600:02d}{offset % 3600 // 60:02d}]"
        )
        if len(_clf_cache) >= 16:
            _clf_cache.clear()
        _clf_cache[sec] = text
    return text


def _duration_us(x: Exchange, end: float) -> int:
    return max(0, int(end * 1_000_000) - int(x.start_time * 1_000_000))


_lines: dict[str, tuple[str, str, str]] = {}  # target -> (method, version, %r text)


def _request_line(x: Exchange) -> str:
    """%r: the request line, with a password in an absolute URI replaced by XXXXXXXX
    (remembered per target: the same URLs are asked again and again)."""
    r = x.request
    method = r.method
    if not method:
        return "-"  # the request line never arrived (e.g. a 408)
    target = r.target
    known = _lines.get(target)
    if known is not None and known[0] == method and known[1] == r.version:
        return known[2]
    shown = target if target.startswith("/") else hide_password(target, ":XXXXXXXX")
    text = escape_logitem(f"{method} {shown} {r.version}")
    if len(_lines) >= _ESCAPED_LIMIT:
        _lines.clear()
    _lines[target] = (method, r.version, text)
    return text


def _url_path(x: Exchange) -> str:
    """%U: the percent-decoded path, as Apache's r->uri (a handler may set notes["uri"])."""
    path = x.notes.get("uri")
    if path is None:
        path = x.request.path
        if path[:1] != "/" and "://" in path:  # absolute-form target
            path = "/" + path.split("://", 1)[1].partition("/")[2]
        if "%" in path:
            path = unquote_to_bytes(path).decode("latin-1")
    return escape_logitem(path)


def _query(x: Exchange) -> str:
    r = x.request
    if r.query or "?" in r.target:
        return "?" + escape_logitem(r.query)
    return ""


def _remote_user(x: Exchange) -> str:
    user = x.notes.get("remote_user")
    if user is None:
        return "-"
    return escape_logitem(user) if user else '""'


def _request_header(r, lname: str) -> str:
    """%{X}i: the header's first value, escaped; `-` when absent (one call per item)."""
    for name, value in r.headers:
        if name == lname:
            return escape_logitem(value)
    return "-"


def _response_header(x: Exchange, lname: str) -> str:
    """%{X}o: first value; Content-Type without parameters; Set-Cookie values joined."""
    if lname == "set-cookie":
        values = [v for n, v in x.response_headers if n.lower() == lname]
        return escape_logitem(", ".join(values)) if values else "-"
    for name, value in x.response_headers:
        if name.lower() == lname:
            if lname == "content-type":
                semi = value.find(";")
                if semi >= 0:
                    value = value[:semi].rstrip(" \t\n\v\f\r")
            return escape_logitem(value)
    return "-"


def _cookie(x: Exchange, lname: str) -> str:
    """%{X}C: a cookie's value from the first Cookie header (mod_log_config's log_cookie)."""
    header = x.request.header("cookie")
    if header is None:
        return "-"
    for part in header.split(";"):
        name, _, value = part.lstrip("=").partition("=")
        if not name or not value:
            continue
        if name.lstrip(" \t").rstrip(" \t\n\v\f\r").lower() == lname:
            return escape_logitem(value.lstrip(" \t").rstrip(" \t\n\v\f\r"))
    return "-"


def _server_name(x: Exchange) -> str:
    """%V: the Host header's name (UseCanonicalName Off), else the vhost's ServerName."""
    host = x.request.header("host")
    if not host:
        return escape_logitem(x.vhost.server_name)
    return escape_logitem(host_name(host))


def _bytes_in(x: Exchange) -> str:
    """%I: notes["bytes_in"] if the I/O layer counted, else head + declared body length."""
    counted = x.notes.get("bytes_in")
    if counted is not None:
        return counted
    return str(x.request.head_size + (x.request.content_length or 0))


def _bytes_out(x: Exchange) -> int:
    return x.head_bytes + x.bytes_out


def _ttfb(x: Exchange, divisor: int) -> str:
    ttfb = x.notes.get("ttfb_us")
    return "-" if ttfb is None else str(int(ttfb) // divisor)


def _absolute_time(when: float, kind: str) -> str:
    usec = int(when * 1_000_000)
    if kind == "sec":
        return str(usec // 1_000_000)
    if kind == "msec":
        return str(usec // 1000)
    if kind == "usec":
        return str(usec)
    if kind == "msec_frac":
        return f"{usec % 1_000_000 // 1000:03d}"
    return f"{usec % 1_000_000:06d}"  # usec_frac


def _strftime(fmt: str, when: float) -> str:
    return time.strftime(fmt, time.localtime(when))


def _ssl_variable(x: Exchange, name: str) -> str | None:
    upper = name.upper()
    if upper.startswith("HTTP:"):
        return x.request.header(name[5:].lower())
    if upper.startswith("ENV:"):
        return x.notes.get("env:" + name[4:])
    tls = x.conn.tls
    if upper == "HTTPS":
        return "on" if tls is not None else "off"
    if tls is None or not upper.startswith("SSL_"):
        return None
    from mpmd.http.tls import ssl_variable

    return ssl_variable(tls, upper)


_pid_text = [str(os.getpid())]
os.register_at_fork(after_in_child=lambda: _pid_text.__setitem__(0, str(os.getpid())))


_NAMESPACE: dict[str, object] = {
    "_esc": escape_logitem,
    "_esc_opt": _esc_opt,
    "_clf": clf_time,
    "_clf_get": _clf_cache.get,
    "_dur": _duration_us,
    "_reqline": _request_line,
    "_urlpath": _url_path,
    "_query": _query,
    "_user": _remote_user,
    "_status": {code: str(code) for code in range(1, 1000)}.get,  # %s: 0 (none yet) is "-"
    "_req": _request_header,
    "_resp": _response_header,
    "_cookie": _cookie,
    "_sname": _server_name,
    "_bin": _bytes_in,
    "_bout": _bytes_out,
    "_ttfb": _ttfb,
    "_abstime": _absolute_time,
    "_strftime": _strftime,
    "_pid": _pid_text,
    "_tid": threading.get_native_id,
    "_sslvar": _ssl_variable,
}

# -- the compiler ----------------------------------------------------------------------------


def _time_expr(arg: str) -> str:
    """%t and %{...}t, following mod_log_config's log_request_time."""
    when = "x.start_time"
    fmt = arg
    if fmt.startswith("begin"):
        fmt = fmt[5:]
        if fmt.startswith(":"):
            fmt = fmt[1:]
        elif fmt:
            fmt = arg  # "beginning..." is a strftime format, not a prefix
    elif fmt.startswith("end"):
        rest = fmt[3:]
        if not rest or rest.startswith(":"):
            when, fmt = "end", rest[1:]
    if not fmt:
        return f"(_clf_get(int({when})) or _clf({when}))"  # the call only once a second
    if fmt in ("sec", "msec", "usec", "msec_frac", "usec_frac"):
        return f"_abstime({when}, {fmt!r})"
    return f"_strftime({fmt!r}, {when})"


_SCALE = {"": 1_000_000, "s": 1_000_000, "ms": 1000, "us": 1}


def _directive_expr(code: str, arg: str) -> str | None:
    """The Python expression (over `x`, `r`, `end`) for one directive; None if unknown."""
    larg = arg.lower()
    simple = {
        "h": "x.conn.client_addr",
        "a": "x.conn.client_addr",
        "A": "x.conn.server_addr",
        "l": '"-"',
        "u": '(_user(x) if "remote_user" in x.notes else "-")',
        "r": "_reqline(x)",
        "s": '(_status(x.status) or "-")',
        "b": '(str(x.bytes_out) if x.bytes_out else "-")',
        "B": "str(x.bytes_out)",
        "D": "str(_dur(x, end))",
        "U": "_urlpath(x)",
        "q": "_query(x)",
        "H": "_esc(r.version)",
        "m": "_esc(r.method)",
        "v": "_esc(x.vhost.server_name)",
        "V": "_sname(x)",
        "X": '("X" if x.aborted else "+" if x.keep_alive else "-")',
        "I": "_bin(x)",
        "O": "str(_bout(x))",
        "S": "str(int(_bin(x)) + _bout(x))",
        "k": "str(x.conn.requests)",
        "L": '_esc_opt(x.notes.get("log_id"))',
        "R": '_esc_opt(x.notes.get("handler"))',
        "f": '_esc_opt(x.notes.get("filename"))',
        "^ti": '"-"',  # trailers are not kept
        "^to": '"-"',
    }
    if code in simple:
        return simple[code]
    if code == "t":
        return _time_expr(arg)
    if code == "i":
        return f"_req(r, {larg!r})"
    if code == "o":
        return f"_resp(x, {larg!r})"
    if code == "e":
        return f"_esc_opt(x.notes.get({'env:' + arg!r}))"
    if code == "x":  # mod_ssl's ssl_var_lookup: HTTPS, SSL_*, HTTP:header, ENV:name
        return f"_esc_opt(_sslvar(x, {arg!r}) or None)"
    if code == "n":
        return f"_esc_opt(x.notes.get({arg!r}))"
    if code == "C":
        return f"_cookie(x, {larg!r})"
    if code == "T" or code == "^FB":
        if larg not in _SCALE:
            return repr(arg)  # Apache logs a bogus argument as itself
        if code == "^FB":  # microseconds unless a unit is given
            return f"_ttfb(x, {_SCALE[larg] if larg else 1})"
        return f"str(_dur(x, end) // {_SCALE[larg]})"
    if code == "p":
        ports = {
            "": "str(x.vhost.port or 80)",
            "canonical": "str(x.vhost.port or 80)",
            "local": "str(x.conn.server_port)",
            "remote": "str(x.conn.client_port)",
        }
        return ports.get(larg, repr(arg))
    if code == "P":
        pids = {
            "": "_pid[0]",
            "pid": "_pid[0]",
            "tid": "str(_tid())",
            "hextid": 'format(_tid(), "x")',
        }
        return pids.get(larg, repr(arg))
    return None


def _unescape_literal(text: str) -> str:
    """Backslash escapes outside `%` items: \\n \\r \\t \\\\; any other backslash is kept."""
    if "\\" not in text:
        return text
    return re.sub(
        r"\\([\\nrt])", lambda m: {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}[m[1]], text
    )


@dataclass(frozen=True, slots=True)
class Item:
    """One `%...` item as written: the directive ("s", "^FB"), its {argument} and its status
    condition (`%400,501{User-agent}i`; `!` negates). The log parser (tools/accesslog.py)
    reads formats through these, so the two never disagree on the language."""

    code: str
    arg: str = ""
    statuses: tuple[int, ...] = ()
    negate: bool = False


def parse_item(fmt: str, pos: int) -> tuple[Item, int]:
    """Parse one `%...` item starting after the `%`; return (item, next position).

    Raises ValueError with Apache's messages for an unknown directive or a truncated item."""
    negate = False
    statuses: list[int] = []
    arg = ""
    n = len(fmt)
    while pos < n:
        ch = fmt[pos]
        if ch == "!":
            negate = not negate
            pos += 1
        elif ch in "<>,":
            pos += 1  # original/final request: mpmd has no internal redirects
        elif ch == "{":
            close = fmt.find("}", pos + 1)
            if close < 0:
                arg, pos = fmt[pos + 1 :], n
            else:
                arg, pos = fmt[pos + 1 : close], close + 1
        elif ch.isdigit():
            end = pos
            while end < n and fmt[end].isdigit():
                end += 1
            statuses.append(int(fmt[pos:end]))
            pos = end
        else:
            code = ch
            if ch == "^" and pos + 2 < n and _directive_expr(fmt[pos : pos + 3], arg) is not None:
                code = fmt[pos : pos + 3]
            elif _directive_expr(ch, arg) is None:
                raise ValueError(f"Unrecognized LogFormat directive %{ch}")
            return Item(code, arg, tuple(statuses), negate), pos + len(code)
    raise ValueError("Ran off end of LogFormat parsing args to some directive")


def split_format(fmt: str) -> list[str | Item]:
    """The format as literal text (escapes and `%%` resolved) and items, in order; adjacent
    literals joined."""
    parts: list[str | Item] = []
    literal: list[str] = []
    pos, n = 0, len(fmt)
    while pos < n:
        pct = fmt.find("%", pos)
        if pct < 0:
            literal.append(_unescape_literal(fmt[pos:]))
            break
        literal.append(_unescape_literal(fmt[pos:pct]))
        if fmt[pct + 1 : pct + 2] == "%":
            literal.append("%")
            pos = pct + 2
            continue
        item, pos = parse_item(fmt, pct + 1)
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(item)
    if "".join(literal):
        parts.append("".join(literal))
    return parts


def _item_expr(item: Item) -> str:
    """The Python expression (over `x`, `r`, `end`) that formats one item."""
    expr = _directive_expr(item.code, item.arg)
    assert expr is not None  # parse_item accepted the code
    if item.statuses:
        test = "not in" if item.negate else "in"
        expr = f'({expr} if x.status {test} {item.statuses!r} else "-")'
    return expr


def _constant_value(expr: str) -> str | None:
    """The text of an expression that is a plain string literal, else None."""
    if expr[:1] not in ("'", '"'):
        return None
    try:
        value = ast.literal_eval(expr)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def compile_format(fmt: str, end: str = "") -> Formatter:
    """Compile a LogFormat string once into `formatter(exchange, end_time) -> line + end`
    (CustomLog passes end="\\n": the newline is one more literal, not a concatenation).

    Raises ValueError("Unrecognized LogFormat directive %X") for an unknown directive.
    """
    parts: list[str] = []
    literal: list[str] = []
    for part in split_format(fmt):
        if isinstance(part, str):
            literal.append(part)
            continue
        expr = _item_expr(part)
        constant = _constant_value(expr)
        if constant is not None:
            literal.append(constant)  # e.g. %l: folded into the neighbouring text
            continue
        if "".join(literal):
            parts.append(repr("".join(literal)))
        literal = []
        parts.append(expr)
    literal.append(end)
    if "".join(literal):
        parts.append(repr("".join(literal)))
    if not parts:
        body = '""'
    elif len(parts) == 1:
        body = parts[0]
    else:
        body = '"".join((' + ", ".join(parts) + ",))"
    source = f"def _format(x, end):\n    r = x.request\n    return {body}\n"
    namespace = dict(_NAMESPACE)
    exec(compile(source, f"<LogFormat {fmt!r}>", "exec"), namespace)
    formatter = namespace["_format"]
    formatter.__doc__ = f"LogFormat {fmt!r} compiled to:\n{source}"
    return formatter  # type: ignore[return-value]


def compile_condition(condition: str | None) -> Callable[[Exchange], bool] | None:
    """CustomLog's `env=VAR` / `env=!VAR` (presence of notes["env:VAR"]); None = always log."""
    if condition is None:
        return None
    if condition.startswith("env="):
        name = condition[4:]
        if name.startswith("!"):
            key = "env:" + name[1:]
            return lambda x: key not in x.notes
        key = "env:" + name
        return lambda x: key in x.notes
    raise ValueError(f"error in condition clause: {condition}")
