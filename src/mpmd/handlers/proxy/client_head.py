"""The response head the client gets from a back end's, as bytes (sans-I/O, like backend.py).

`relay_head`: hop-by-hop headers (and those the back end's Connection names) dropped,
Location/Content-Location/URI reverse-mapped (ProxyPassReverse, `reverse_map`), Via added,
and Content-Length, Date and Server apart: the Exchange frames the client's side itself and
keeps the back end's Date and Server as Apache's basic_http_header does. For a 101, the head
before a tunnel (`switching_head`) and the check that the back end switched to the protocol
the client asked for (`upgrade_refused`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mpmd.config.model import Balancer, ProxySettings, ReverseRule
from mpmd.handlers.proxy.backend import (
    BALANCER_PREFIX,
    BackendError,
    ResponseHead,
    balancer_name,
)

# Response headers the client never sees from a back end (mod_proxy_http's hop_by_hop_hdrs,
# ap_proxy_clear_connection); the Exchange frames the client response itself.
_RESPONSE_DROP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REVERSE_HEADERS = frozenset({b"location", b"content-location", b"uri"})
# What relay_head does not pass through as it is: the above, and what the client's head
# gives from its own fields (the framing, Date, Server).
_RELAYED_APART = _RESPONSE_DROP | _REVERSE_HEADERS | {b"content-length", b"date", b"server"}
_CONNECTION_OPTIONS = frozenset({b"", b"close", b"keep-alive"})  # Connection's usual values


def reverse_map(
    value: str, rules: tuple[ReverseRule, ...], balancers: Mapping[str, Balancer], base: str
) -> str:
    """ProxyPassReverse (ap_proxy_location_reverse_map): a URL starting with a rule's URL
    (each member's URL for balancer://) gets the rule's path instead; a path-only result is
    made absolute with `base` (the client's scheme://host)."""
    for rule in rules:
        real = rule.url
        if real[: len(BALANCER_PREFIX)].lower() == BALANCER_PREFIX:
            balancer = balancers.get(balancer_name(real))
            if balancer is None:
                continue
            urlpart = real[len(balancer_name(real)) :]
            urlpart = urlpart if len(urlpart) > 1 else ""
            for member in balancer.members:
                name = member.url.rstrip("/") if urlpart else member.url
                if value[: len(name)].lower() != name.lower():
                    continue
                after = value[len(name) :]
                if urlpart:
                    if not after.startswith(urlpart):
                        continue
                    mapped = rule.path + after[len(urlpart) :]
                elif rule.path == "/" and after.startswith("/"):
                    mapped = after
                else:
                    mapped = rule.path + after
                return mapped if "://" in mapped else base + mapped
            continue
        part = value
        if real.startswith("/"):
            scheme_end = value.find("://")
            if scheme_end >= 0:
                slash = value.find("/", scheme_end + 3)
                part = value[slash:] if slash >= 0 else value
        if real and part[: len(real)].lower() == real.lower():
            mapped = rule.path + part[len(real) :]
            return mapped if "://" in mapped else base + mapped
    return value


@dataclass(slots=True)
class ClientHead:
    """The back end's head as the client gets it (relay_head), for Exchange.start_encoded."""

    lines: bytes  # the relayed headers, `Name: value\r\n` each
    kept: list[tuple[bytes, bytes]]  # the same as (name, value): the access log's %{X}o
    content_length: int | None  # the client's framing is the Exchange's
    date: bytes | None  # the back end's Date and Server: the client's head keeps them
    server: bytes | None  # (Apache's basic_http_header for a proxied response)


def relay_head(
    head: ResponseHead,
    settings: ProxySettings,
    balancers: Mapping[str, Balancer],
    *,
    base: str,
    via: str | None,
) -> ClientHead:
    """The back end's headers as the client gets them: hop-by-hop ones (and those its
    Connection names) dropped, Location/Content-Location/URI reverse-mapped, Via added;
    Content-Length, Date and Server apart, for the head the Exchange builds."""
    reverse = settings.reverse
    kept: list[tuple[bytes, bytes]] = []
    length = date = server = None
    named: set[bytes] = set()
    for name, value in head.raw:
        lname = name.lower()
        if lname not in _RELAYED_APART:
            kept.append((name, value))
        elif lname == b"content-length":
            length = int(value)
        elif lname == b"date":
            date = value
        elif lname == b"server":
            server = value
        elif lname == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
        elif lname in _REVERSE_HEADERS:
            if reverse:
                text = reverse_map(value.decode("latin-1"), reverse, balancers, base)
                value = text.encode("latin-1")
            kept.append((name, value))
    if named - _CONNECTION_OPTIONS:  # headers the back end's Connection names are its own
        kept = [(name, value) for name, value in kept if name.lower() not in named]
        date = None if b"date" in named else date
        server = None if b"server" in named else server
    if via is not None:
        kept.append((b"Via", via.encode("latin-1")))
    lines = b"".join([name + b": " + value + b"\r\n" for name, value in kept])
    return ClientHead(lines, kept, length, date, server)


# -- an upgrade (mod_proxy_http's tunnel) -------------------------------------------------------


def upgrade_refused(head: ResponseHead, protocol: str | None) -> BackendError | None:
    """A 101 the tunnel may not follow: the request asked for no upgrade (`protocol` None), or
    the back end switched to another protocol than the one asked for. The client gets a 502."""
    answer = next((value for name, value in head.headers if name.lower() == "upgrade"), None)
    if protocol is not None and answer is not None and answer.lower() == protocol.lower():
        return None
    return BackendError(f"Unexpected Upgrade: {answer or 'n/a'} (expecting {protocol or 'n/a'})")


def switching_head(
    head: ResponseHead,
    protocol: str,
    settings: ProxySettings,
    balancers: Mapping[str, Balancer],
    *,
    base: str,
    via: str | None,
) -> tuple[str, list[tuple[str, str]], bytes]:
    """The 101 the client gets before a tunnel, as (status line, headers, bytes): the back
    end's headers as for any response, then `Connection: Upgrade` and its `Upgrade`. Like
    mod_proxy_http's interim response it adds no Date or Server of its own."""
    relayed = relay_head(head, settings, balancers, base=base, via=via)
    pairs = [(b"Date", relayed.date), (b"Server", relayed.server)]
    origin = [(name, value) for name, value in pairs if value is not None]
    upgrade = [(b"Connection", b"Upgrade"), (b"Upgrade", protocol.encode("latin-1"))]
    encoded = origin + relayed.kept + upgrade
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in encoded]
    status_line = f"101 {head.reason or 'Switching Protocols'}"
    lines = [f"HTTP/1.1 {status_line}\r\n".encode("latin-1")]
    lines.extend(b"%s: %s\r\n" % pair for pair in encoded)
    lines.append(b"\r\n")
    return status_line, headers, b"".join(lines)
