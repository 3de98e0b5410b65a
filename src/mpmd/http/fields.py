"""Rules for the parts of a request head the protocol interprets beyond framing.

The request line's version and target, the Connection header's keep-alive wish, the Host
header's name and a password in an absolute URI, as Apache reads them. Pure functions over
strings llhttp has already validated byte by byte; the protocol engine calls the first ones
while it builds a Request, the router, WSGI, status and the logs the last two.
"""

from __future__ import annotations

import re

from mpmd.http.errors import HttpError

# `scheme://user:password@` at the start of an absolute URI: group 1 is `scheme://user`.
PASSWORD_IN_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#@]*@")


def host_name(host: str) -> str:
    """The name in a Host header (or ServerName): lower-case, without the port and a trailing
    dot; an IPv6 literal keeps its brackets. Apache's fix_hostname, less its validation."""
    host = host.strip().lower()
    if host[:1] == "[":
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.partition(":")[0].rstrip(".")


def hide_password(target: str, replacement: str) -> str:
    """`http://u:pw@h/` -> `http://u<replacement>@h/` (%r shows `:XXXXXXXX`, status nothing)."""
    if "@" not in target:
        return target
    return PASSWORD_IN_URI.sub(rf"\1{replacement}@", target, count=1)


def odd_version(version: str, line: str) -> str:
    """A version other than 1.0/1.1 that llhttp accepted: HTTP/d.d only, 1.2 and above."""
    if version[:5] != "HTTP/" or len(version) != 8 or version[5] == "0":
        raise HttpError(400, f"AH02418: Invalid protocol '{version}'", request_line=line)
    return "HTTP/1.1"


def check_target(method: str, target: str, line: str) -> None:
    """Targets not starting with "/": `*` for OPTIONS, authority for CONNECT, absolute URIs."""
    if "#" in target:
        raise HttpError(400, "AH10244: URI with a fragment", request_line=line)
    if target[0] == "/":
        return
    if target == "*":
        if method == "OPTIONS":
            return
    elif method == "CONNECT":
        return
    else:
        scheme, sep, rest = target.partition("://")
        if sep and scheme and "@" not in rest.partition("/")[0]:
            return
    raise HttpError(400, f"AH10388: Invalid request target '{target[:80]}'", request_line=line)


def client_keeps_alive(connection: str, http11: bool) -> bool:
    """Apache's reading of the Connection header: `close` wins; 1.0 needs `keep-alive`."""
    value = connection.lower()
    if value == "keep-alive":
        return True
    if value == "close":
        return False
    tokens = {token.strip() for token in value.split(",")}
    if "close" in tokens:
        return False
    return http11 or "keep-alive" in tokens


# -- refusals of a parsed head (reference 8.1), built off the hot path ----------------------------


def host_refused(host_count: int, line: str) -> HttpError:
    """AH00569 (HTTP/1.1 without Host) or AH00550 (several Host headers): 400."""
    if not host_count:
        return HttpError(
            400, "AH00569: client sent HTTP/1.1 request without hostname", request_line=line
        )
    return HttpError(400, "AH00550: client sent multiple Host headers", request_line=line)


def body_too_large(content_length: int, limit: int, line: str) -> HttpError:
    """AH01588: a declared Content-Length over LimitRequestBody, refused before reading: 413."""
    return HttpError(
        413,
        f"AH01588: Requested content-length of {content_length} is larger than the "
        f"configured limit of {limit}",
        request_line=line,
    )


def expectation_failed(expect: str, keep_alive: bool, line: str) -> HttpError:
    """AH00570: an Expect other than 100-continue: 417, the connection kept if it can be."""
    return HttpError(
        417,
        f"AH00570: client sent an unrecognized expectation value of Expect: {expect}",
        keep_alive=keep_alive,
        request_line=line,
    )


def malformed_line(line: str) -> HttpError:
    """AH10388: a request line that is not exactly `method SP target SP version`: 400."""
    return HttpError(400, "AH10388: Request line has extra spaces or no version", request_line=line)


def too_many_fields(line: str) -> HttpError:
    """AH00563: more header lines than LimitRequestFields: 400."""
    return HttpError(
        400, "AH00563: Number of request headers exceeds LimitRequestFields", request_line=line
    )


def field_too_long(raw: str, line: str) -> HttpError:
    """AH00561: a header line longer than LimitRequestFieldSize (400, never 431), named."""
    name = raw.partition(":")[0][:80]
    return HttpError(
        400, f"AH00561: Request header exceeds LimitRequestFieldSize: {name}", request_line=line
    )


def chunked_http10(line: str) -> HttpError:
    """RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing: 400."""
    return HttpError(400, "client sent Transfer-Encoding in an HTTP/1.0 request", request_line=line)
