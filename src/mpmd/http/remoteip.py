"""mod_remoteip's rules: the RemoteIPHeader walk, and which connections owe a PROXY header.

The walk is httpd's remoteip_modify_request (reference 2.2), run per request once its virtual
host is known: starting from the peer, while the current address is a trusted proxy, the
rightmost address left in the header becomes the client. Internal proxies may present
private addresses; a trusted (external) proxy may not, and whatever an external proxy
presents is external too. What the walk did not consume stays in the header; the consumed
external proxies go to RemoteIPProxiesHeader. A peer that is not trusted changes nothing, so
a client cannot spoof its address by sending the header itself.

Pure functions over strings and the frozen settings: no sockets, no DNS (a header element
that is a name, not an address, ends the walk where httpd would resolve it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mpmd.config.model import ProxyProtocolSettings, RemoteIpSettings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 3330's local and private IPv4 blocks, which only an internal proxy may present.
_PRIVATE_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in ("10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
)


@dataclass(frozen=True, slots=True)
class WalkResult:
    """The client the header names, what is left of the header (None: remove it), and the
    external proxies consumed, joined by ", " (None: none)."""

    client: str
    header: str | None
    proxies: str | None


def parse_address(text: str) -> Address | None:
    """An address as httpd's apr_sockaddr_info_get reads a literal (IPv4-mapped → IPv4)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _private(address: Address) -> bool:
    """What an external proxy may not present: RFC 3330 IPv4, IPv6 outside 2000::/3."""
    if isinstance(address, ipaddress.IPv4Address):
        return any(address in net for net in _PRIVATE_V4)
    return address.packed[0] & 0xE0 != 0x20


def _trust(address: Address, proxies) -> bool | None:
    """The first list entry holding `address`: True internal, False trusted, None neither."""
    for network, internal in proxies:
        if address.version == network.version and address in network:
            return internal
    return None


def walk(peer: str, value: str, settings: RemoteIpSettings) -> WalkResult | None:
    """The header walk for a request from `peer` whose header reads `value` (duplicate lines
    joined with ", "). None when nothing changes: the client stays the peer, the header too."""
    proxies = settings.proxies
    internal = proxies is not None
    current = parse_address(peer)
    client = peer
    consumed: list[str] = []
    remote: str | None = value
    changed = False
    while remote is not None:
        if proxies is not None:
            trust = _trust(current, proxies) if current is not None else None
            if trust is None:
                break
            internal = internal and trust
        head, comma, element = remote.rpartition(",")
        remote = head if comma else None
        text = element.strip(" ")
        address = parse_address(text) if text else None
        if address is None or (not internal and _private(address)):
            # httpd puts the comma back over the trimmed element (its leading spaces stay)
            remote = f"{remote},{element.rstrip(' ')}" if remote is not None else text
            break
        if not internal:
            consumed.append(client)
        client = str(address)
        current = address
        changed = True
    if not changed:
        return None
    return WalkResult(client, remote, ", ".join(consumed) if consumed else None)


def header_value(headers: list[tuple[str, str]], name: str) -> str | None:
    """The header's lines joined with ", ", as httpd's core merges them before any module."""
    values = [value for key, value in headers if key == name]
    return ", ".join(values) if values else None


def rewrite_headers(
    headers: list[tuple[str, str]], settings: RemoteIpSettings, result: WalkResult
) -> None:
    """Leave the unconsumed part in RemoteIPHeader (or remove it) and set the proxies header."""
    name = settings.header
    kept = [(key, value) for key, value in headers if key != name]
    if result.header is not None:
        kept.append((name, result.header))
    proxies_header = settings.proxies_header
    if result.proxies is not None and proxies_header is not None:
        kept = [(key, value) for key, value in kept if key != proxies_header]
        kept.append((proxies_header, result.proxies))
    headers[:] = kept


def _listed(entries: tuple[tuple[str, int], ...], address: str, port: int) -> bool:
    """httpd's remoteip_sockaddr_compat: equal addresses or a wildcard, equal ports or 0."""
    return any(
        (host == "" or host == address) and (want == 0 or want == port) for host, want in entries
    )


def proxy_header_required(
    settings: ProxyProtocolSettings | None, local: tuple[str, int], peer: str
) -> bool:
    """Whether a connection to `local` from `peer` must begin with a PROXY header: the
    address is enabled and not disabled, and the peer is not an exception."""
    if settings is None:
        return False
    local_addr = parse_address(local[0])
    address = str(local_addr) if local_addr is not None else local[0]
    port = local[1]
    if not _listed(settings.enabled, address, port) or _listed(settings.disabled, address, port):
        return False
    client = parse_address(peer)
    return not (
        client is not None
        and any(client.version == net.version and client in net for net in settings.exceptions)
    )
