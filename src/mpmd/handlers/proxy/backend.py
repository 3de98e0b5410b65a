"""The back-end HTTP/1.1 exchange as bytes: the request head out, the response events in.

Sans-I/O, like http/: nothing here opens, reads or writes a socket, so the blocking handler
(handler.py, prefork/worker/-X) and the event MPM's loop drive the same code. It owns:
- which route a URL-path takes (`match_route`, mod_proxy's translate_name: first match in
  file order, `!` excludes) and the back-end request-target it maps to (`backend_target`,
  Apache's ProxyPass/ProxyPassMatch substitution and re-encoding of the path);
- the request head sent to a back end, re-serialised from the parsed Request: never the
  client's bytes, so no framing the front end refused can reach a back end (`request_head`:
  hop-by-hop headers removed, Host, X-Forwarded-*, Via, the body re-framed);
- the response parser (`ResponseParser`, llhttp through httptools) that turns back-end bytes
  into a head, body chunks and an end, and refuses what cannot be trusted (`BackendError`);
- not the response head the client gets: client_head.py makes it from the back end's.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import httptools

from mpmd import SERVER_SOFTWARE
from mpmd.config.model import BackendMember, ProxyRoute, ProxySettings
from mpmd.http.request import Request

BALANCER_PREFIX = "balancer://"
# Request headers never forwarded as the client sent them: hop-by-hop (RFC 9110 7.6.1 and
# Apache's ap_proxy_create_hdrbrgd), the framing (re-made from the body as it is sent) and
# Host / Expect (set by the proxy).
_REQUEST_DROP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
        "expect",
    }
)
# Request headers the proxy appends its value to (apr_table_mergen) when the client sent one.
_ADDED = frozenset({"via", "x-forwarded-for", "x-forwarded-host", "x-forwarded-server"})
# Characters left as they are when the path is re-encoded (Apache's ap_proxy_canonenc for a
# path: unreserved, sub-delims, ":" "@" "/"); "%" is always encoded, so a decoded "%" in the
# URL-path cannot turn into an escape at the back end.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_TO_ENCODE = re.compile(r"[^A-Za-z0-9/:@!$&'()*+,;=._~-]")  # what quote() would change
_GROUP = re.compile(r"\$(\d)")

Framing = Literal["none", "length", "chunked"]


class BackendError(Exception):
    """A back end's answer that cannot be relayed: the client gets `status`; `message` is
    Apache's wording for the error log, `ah` its id; `timed_out` for failontimeout."""

    def __init__(
        self, message: str, *, status: int = 502, ah: str = "AH00898", timed_out: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.ah = ah
        self.timed_out = timed_out


def send_failed(peer: str, error: OSError) -> BackendError:
    """Writing the request to the back end at `peer` failed (AH01097)."""
    return BackendError(
        f"pass request body failed to {peer}: {error.strerror or error}",
        ah="AH01097",
        timed_out=isinstance(error, TimeoutError),
    )


def read_failed(started: bool, error: OSError) -> BackendError:
    """Reading the response failed: AH01110 once it began (`started`), else AH01102."""
    timed_out = isinstance(error, TimeoutError)
    if started:
        return BackendError(
            "Network error reading response" + (" (timeout)" if timed_out else ""),
            ah="AH01110",
            timed_out=timed_out,
        )
    return BackendError(
        "error reading status line from remote server", ah="AH01102", timed_out=timed_out
    )


# -- routes ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _prefix_rest(prefix: str, path: str) -> str | None:
    """mod_proxy's alias_match: `/app` takes `/app` and `/app/…`, never `/apple`."""
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix) :]
    if rest and not prefix.endswith("/") and not rest.startswith("/"):
        return None
    return rest


def match_route(settings: ProxySettings, path: str) -> tuple[ProxyRoute, str] | None:
    """The route for a normalised URL-path, first match in file order; None when no route
    applies or a `!` route excludes the path. `rest` is what follows a prefix route's path,
    or the whole path for a ProxyPassMatch (backend_target substitutes its groups)."""
    for route in settings.routes:
        if route.regex:
            if _compiled(route.path).search(path) is None:
                continue
            rest = path
        else:
            found = _prefix_rest(route.path, path)
            if found is None:
                continue
            rest = found
        if route.target is None:
            return None
        return route, rest
    return None


def balancer_name(target: str) -> str:
    """`balancer://name` of a route target `balancer://name/path` (lower-case, as stored)."""
    rest = target[len(BALANCER_PREFIX) :]
    return BALANCER_PREFIX + rest.partition("/")[0].lower()


def backend_target(route: ProxyRoute, rest: str, member: BackendMember, query: str) -> str:
    """The request-target sent to `member`: its path + the route target's path + the rest,
    re-encoded, then `?query` as the client sent it. A ProxyPassMatch target's $1..$9 take
    the regex groups; a target with none gets the whole path appended (Apache's rule)."""
    assert route.target is not None
    if route.regex:
        match = _compiled(route.path).search(rest)
        found = route.target
        if match is not None:
            groups = (match.group(0), *match.groups())

            def group(m: re.Match[str]) -> str:
                index = int(m.group(1))
                return (groups[index] or "") if index < len(groups) else ""

            found = _GROUP.sub(group, route.target)
        if found == route.target:
            found = route.target + rest
    else:
        found = route.target + rest
    if found[: len(BALANCER_PREFIX)].lower() == BALANCER_PREFIX:
        after = found[len(balancer_name(found)) :]
        path = member.path + after
    else:
        _, _, netloc_path = found.partition("://")
        slash = netloc_path.find("/")
        path = netloc_path[slash:] if slash >= 0 else ""
    path = path or "/"
    if _TO_ENCODE.search(path) is not None:  # (most paths need no encoding: no call)
        path = quote(path, safe=_PATH_SAFE, encoding="latin-1")
    return f"{path}?{query}" if query else path


# -- the request --------------------------------------------------------------------------------


def member_host(member: BackendMember) -> str:
    """Host as Apache sends it with ProxyPreserveHost Off: host, `:port` unless 80."""
    return _host_value(member.host, member.port)


@functools.lru_cache(maxsize=256)  # (every request to a member asks it)
def _host_value(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return host if port == 80 else f"{host}:{port}"


def via_value(request_version: str, server_name: str, server_port: int, full: bool) -> str:
    """`1.1 name:port` (ProxyVia On), plus `(mpmd/x.y)` with Full; no :80, as Apache."""
    portstr = "" if server_port == 80 else f":{server_port}"
    version = request_version.partition("/")[2] or "1.0"
    value = f"{version} {server_name}{portstr}"
    return f"{value} ({SERVER_SOFTWARE})" if full else value


def _merge(headers: list[list[str]], added: list[tuple[str, str]]) -> None:
    """apr_table_mergen for each (name, value) in turn: append `, value` to the first
    header of that name (any case), else add it."""
    for name, value in added:
        lname = name.lower()
        for item in headers:
            if item[0].lower() == lname:
                item[1] = f"{item[1]}, {value}"
                break
        else:
            headers.append([name, value])


def request_head(
    request: Request,
    target: str,
    member: BackendMember,
    settings: ProxySettings,
    *,
    client_ip: str,
    server_name: str,
    server_port: int,
    upgrade: bool = False,
) -> tuple[bytes, Framing, bool]:
    """The head for `member`: (bytes, body framing, whether it asks `Expect: 100-Continue`).

    Apache's ap_proxy_create_hdrbrgd: Host first, then the client's headers in their order
    without the hop-by-hop ones (and those Connection names), X-Forwarded-For/-Host/-Server
    merged in with ", " (ProxyAddHeaders), Via per ProxyVia. Proxy-Authorization is kept:
    Apache strips it only after it authenticated the user itself, which mpmd never does.
    `Expect: 100-continue` goes end to end (Proxy100Continue On, Apache 2.4's default): the
    handler sends the body once the back end's 100 arrives. `upgrade`: a tunnel keeps the
    client's Upgrade and sends `Connection: Upgrade`.
    """
    named: set[str] = set()
    client_host = None
    merging = False  # the client sent a header the proxy appends to (Via, X-Forwarded-*)
    for name, value in request.headers:  # (names are lower-case: the HTTP engine's)
        if name == "connection":
            named.update(t.strip().lower() for t in value.split(",") if t.strip())
        elif name == "host":
            if client_host is None:
                client_host = value
        elif name in _ADDED:
            merging = True
    headers: list[list[str]] = [
        [name, value]
        for name, value in request.headers
        if name not in _REQUEST_DROP and name not in named
    ]
    added: list[tuple[str, str]] = []  # merged in this order
    via = settings.via
    if via == "Block":
        headers = [h for h in headers if h[0] != "via"]
    elif via == "On" or via == "Full":
        added.append(("Via", via_value(request.version, server_name, server_port, via == "Full")))
    if request.content_length is not None:
        framing: Framing = "length"
    else:
        framing = "chunked" if request.header("transfer-encoding") is not None else "none"
    expect = request.expect_continue and framing != "none"
    if settings.add_headers:
        added.append(("X-Forwarded-For", client_ip))
        if client_host is not None:
            added.append(("X-Forwarded-Host", client_host))
        added.append(("X-Forwarded-Server", server_name))
    if merging:
        _merge(headers, added)
        added = []
    host = (
        client_host
        if settings.preserve_host and client_host
        else _host_value(member.host, member.port)
    )
    head = f"{request.method} {target} HTTP/1.1\r\nHost: {host}\r\n"
    if headers:
        head += "".join([f"{name}: {value}\r\n" for name, value in headers])
    if added:  # (the usual case: at the end)
        head += "".join([f"{name}: {value}\r\n" for name, value in added])
    if expect:
        head += "Expect: 100-Continue\r\n"
    if framing == "length":
        head += f"Content-Length: {request.content_length}\r\n"
    elif framing == "chunked":
        head += "Transfer-Encoding: chunked\r\n"
    if upgrade:
        upgrade_value = request.header("upgrade")
        if upgrade_value is not None:
            head += f"Connection: Upgrade\r\nUpgrade: {upgrade_value}\r\n"
    return (head + "\r\n").encode("latin-1"), framing, expect


def chunk(data: bytes) -> bytes:
    """One chunk of a re-framed chunked request body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


# -- the response -------------------------------------------------------------------------------


@dataclass(slots=True)
class ResponseHead:
    """A final (or 101) response head; header names as the back end spelt them, as bytes
    (`raw`, values stripped): the client's head is made from them without decoding."""

    status: int
    reason: str
    raw: list[tuple[bytes, bytes]]
    keep_alive: bool  # the back end lets the connection be reused after this response

    @property
    def status_line(self) -> str:
        return f"{self.status} {self.reason}" if self.reason else str(self.status)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The headers as text (read where a response is not relayed as bytes)."""
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.raw]


@dataclass(slots=True)
class Interim:
    """A 1xx response other than 101 (100 Continue, 103 Early Hints)."""

    status: int


class End:
    """The response is complete (its body ended as it was framed)."""


END = End()
Event = ResponseHead | Interim | bytes | End


_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


class ResponseParser:
    """Back-end bytes in (`feed`, `eof`), events out: Interim*, ResponseHead, bytes*, END.

    Content-Length, chunked and close-delimited bodies; a response to HEAD, and 1xx/204/304,
    have none. After a 101 head, `tunnel_data` holds the bytes that followed it. A line
    longer than `field_size` (LimitRequestFieldSize, Apache's ResponseFieldSize is 8192), a
    bad status line or bad framing raise BackendError. A parser `kept` for its connection
    serves its next response too (`next_response`) when llhttp ended this one itself
    (`recyclable`); its owner calls `close()` when the connection goes.
    """

    __slots__ = (
        "__weakref__", "_events", "_field_size", "_head", "_head_bytes", "_head_limit",
        "_head_request", "_headers", "_keep", "_parser", "_reason", "_until_close", "complete",
        "received", "recyclable", "reusable", "tunnel_data",
    )  # fmt: skip

    # httptools looks these up on every parser it makes; present (as None), the look-up
    # raises no AttributeError, which costs more than the rest of making the parser
    on_chunk_header = on_chunk_complete = None

    def __init__(
        self, method: str, *, field_size: int = 8190, max_fields: int = 100, kept: bool = False
    ) -> None:
        self._field_size = field_size
        self._head_limit = field_size * (max_fields + 1)
        self._keep = kept
        self._reason: list[bytes] = []  # (and _headers: each message begins them)
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.next_response(method)

    def recycle(self, method: str, field_size: int, max_fields: int) -> bool:
        """Ready for the connection's next response, if llhttp ended the last one itself and
        the limits are the same; False: make a new parser."""
        if not self.recyclable or self._head_limit != field_size * (max_fields + 1):
            return False
        self.next_response(method)
        return True

    def next_response(self, method: str) -> None:
        """Start on a response (a kept parser: the connection's next; llhttp keeps its state)."""
        self._head_request = method == "HEAD"
        self._events: list[Event] = []
        self._head: ResponseHead | None = None
        self._head_bytes = 0
        self._until_close = False
        self.complete = False
        self.reusable = False  # the connection may carry another request once complete
        self.recyclable = False  # ... and this parser its response: llhttp ended this one
        self.received = 0  # bytes read from the back end (Apache's worker "read")
        self.tunnel_data = b""

    def close(self) -> None:
        """The connection is gone: end the cycle through the parser's bound methods now."""
        self._parser = None

    # -- driving ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Parse `data`; the events it completed."""
        self.received += len(data)
        if self.complete:
            self.reusable = self.recyclable = False  # bytes after the end: out of step
            return []
        if self._head is None:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.tunnel_data = data[upgrade.args[0] :]
            self.complete = True
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, BackendError):  # raised by a callback below
                raise error.__context__ from None
            if self._head is None:
                raise BackendError(
                    f"Corrupt status line returned by remote server: {error}"
                ) from None
            raise BackendError(f"Error reading from remote server: {error}", ah="AH01110") from None
        if self._head is None and self._head_bytes > self._head_limit:
            raise self._oversized("(response head)")
        if self.complete and not (self._keep and self.recyclable):
            self._parser = None  # no callback comes any more: end the cycle through its bound
            # methods, so both are freed now, not by the collector
        events, self._events = self._events, []
        return events

    def eof(self) -> list[Event]:
        """The back end closed: the end of a close-delimited body, else an error."""
        if self.complete:
            return []
        if self._head is not None and self._until_close:
            self.complete = True
            return [END]
        if self._head is None:
            raise BackendError("error reading status line from remote server", ah="AH01102")
        raise BackendError("Error reading from remote server: premature end of body", ah="AH01110")

    @property
    def started(self) -> bool:
        """Some response byte arrived (a failure after it must not be retried)."""
        return self.received > 0

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # bytes after the end, in the same read: this connection is not in step
            self.reusable = self.recyclable = False
        self._reason.clear()
        self._headers: list[tuple[bytes, bytes]] = []

    def on_status(self, data: bytes) -> None:
        self._reason.append(data)
        if sum(map(len, self._reason)) + 13 > self._field_size:
            raise self._oversized("(status line)")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head is None:  # (after it: a chunked trailer, not relayed)
            if len(name) + len(value) + 2 > self._field_size:
                raise self._oversized(name.decode("latin-1"))
            self._headers.append((name, value.strip()))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if parser.get_http_version() not in ("1.1", "1.0"):
            raise BackendError("Corrupt status line returned by remote server")
        if 100 <= status < 200 and status != 101:
            self._events.append(Interim(status))
            return
        keep_alive = parser.should_keep_alive()
        head = ResponseHead(
            status, b"".join(self._reason).decode("latin-1"), self._headers, keep_alive
        )
        self._head = head
        self._events.append(head)
        bodyless = self._head_request or status in (101, 204, 304)
        if bodyless:
            self._finish(keep_alive and status != 101)
            return
        if keep_alive:  # (llhttp keeps alive only a body it can frame: not close-delimited)
            return
        for name, _ in self._headers:
            if name.lower() in _FRAMING_HEADERS:
                break
        else:
            self._until_close = True

    def on_body(self, data: bytes) -> None:
        if not self.complete:
            self._events.append(bytes(data))

    def on_message_complete(self) -> None:
        if self._head is not None and not self.complete:
            self.recyclable = True
            self._finish(self._parser.should_keep_alive())

    def _finish(self, reusable: bool) -> None:
        self.complete = True
        self.reusable = reusable and not self._until_close
        self.recyclable = self.recyclable and self.reusable
        self._events.append(END)

    def _oversized(self, name: str) -> BackendError:
        return BackendError(
            f"header size is over the limit allowed by ResponseFieldSize "
            f"({self._field_size} bytes). Bad response header: {name[:64]!r}",
            ah="AH10124",
        )
