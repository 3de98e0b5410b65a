"""mod_remoteip's directives in context → RemoteIpSettings per host, ProxyProtocolSettings.

Owns what httpd's mod_remoteip decides while it reads the configuration (reference 2.1):
proxy addresses parsed as apr_ipsubnet_create parses them (partial IPv4 such as `10.1`,
a mask in bits or dotted, `/0` refused) or resolved when they are names; the proxy list
files (`#` comments, words separated by white space, paths relative to ServerRoot); the
server merge (a <VirtualHost> without its own header, proxies header or proxy list takes the
main server's); and RemoteIPProxyProtocol kept per address, the last setting for an address
winning with httpd's notice (AH03491). Validators here are pure; reading the list files and
resolving names happen once per start or restart, never per request.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mpmd.config.model import IpNetwork, ProxyProtocolSettings, RemoteIpSettings, VirtualHost
from mpmd.config.syntax import ConfigError, Node
from mpmd.config.validators import DirectiveValueError

Seen = dict[str, list[tuple[Node, Any]]]
_BAD_IP = "The specified IP address is invalid."
_BAD_MASK = "The specified network mask is invalid."
_PROXY_NAMES = (
    "RemoteIPTrustedProxy",
    "RemoteIPInternalProxy",
    "RemoteIPTrustedProxyList",
    "RemoteIPInternalProxyList",
)


def _looks_like_ip(text: str) -> bool:
    """apr's looks_like_ip: a colon means IPv6; else only digits and dots."""
    return bool(text) and (":" in text or all(c == "." or c.isdigit() for c in text))


def subnet(text: str) -> IpNetwork:
    """apr_ipsubnet_create("ip[/mask]"); ValueError carries apr's %pm text."""
    ip, slash, mask = text.partition("/")
    if not _looks_like_ip(ip):
        raise LookupError(ip)
    if ":" in ip:
        try:
            address: Any = ipaddress.IPv6Address(ip)
        except ValueError:
            raise ValueError(_BAD_IP) from None
        bits = 128
    else:
        # a full address, or (without a mask) httpd's legacy network "10.1." = 10.1.0.0/16
        parts = (ip[:-1] if ip.endswith(".") and not slash else ip).split(".")
        octets = all(p.isdigit() and int(p) < 256 for p in parts)
        if not octets or not 1 <= len(parts) <= 4 or (slash and len(parts) != 4):
            raise ValueError(_BAD_IP)
        address = ipaddress.IPv4Address(
            ".".join([str(int(p)) for p in parts] + ["0"] * (4 - len(parts)))
        )
        bits = 8 * len(parts)
    if slash:
        if mask.isdigit() and 0 < int(mask) <= address.max_prefixlen:
            bits = int(mask)
        else:
            try:
                bits = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
            except ValueError:
                raise ValueError(_BAD_MASK) from None
            if address.version != 4 or bits == 0:
                raise ValueError(_BAD_MASK)
    return ipaddress.ip_network(f"{address}/{bits}", strict=False)


def proxy_networks(name: str, arg: str) -> tuple[IpNetwork, ...]:
    """One RemoteIP{Trusted,Internal}Proxy argument: a subnet, or a name resolved now."""
    ip, slash, mask = arg.partition("/")
    try:
        return (subnet(arg),)
    except ValueError as error:
        raise DirectiveValueError(f"RemoteIP: Error parsing IP {arg} ({error} error) "
                                  f"for {name}") from None  # fmt: skip
    except LookupError:
        pass
    if slash:
        raise DirectiveValueError(f"RemoteIP: Error parsing IP {arg} the subnet /{mask} is "
                                  f"invalid for {name}")  # fmt: skip
    try:
        infos = socket.getaddrinfo(ip, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else str(error)
        raise DirectiveValueError(f"RemoteIP: Error parsing IP {arg} ({reason} error) "
                                  f"for {name}") from None  # fmt: skip
    found = dict.fromkeys(ipaddress.ip_network(info[4][0].partition("%")[0]) for info in infos)
    return tuple(found)


def v_remoteip_proxies(name: str, args: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(net for arg in args for net in proxy_networks(name, arg))


def v_header_name(name: str, args: tuple[str, ...]) -> str:
    return args[0].lower()


def v_exceptions(name: str, args: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    """RemoteIPProxyProtocolExceptions: subnets only, worded as remoteip_disable_networks."""
    networks = []
    for arg in args:
        try:
            networks.append(subnet(arg))
        except LookupError:
            raise DirectiveValueError(f"ip address '{arg.partition('/')[0]}' appears to be "
                                      "invalid") from None  # fmt: skip
        except ValueError as error:
            raise DirectiveValueError(f"ip address '{arg.partition('/')[0]}' appears to be "
                                      f"invalid: {error}") from None  # fmt: skip
    return tuple(networks)


def read_proxy_list(name: str, path: str) -> tuple[IpNetwork, ...]:
    """A RemoteIP*ProxyList file: words separated by white space, `#` to the end of a line."""
    try:
        with open(path, encoding="latin-1") as file:
            lines = file.read().splitlines()
    except OSError as error:
        raise DirectiveValueError(f"{name}: Could not open file {path}: {error.strerror}") from None
    found: list[IpNetwork] = []
    for number, line in enumerate(lines, 1):
        for word in line.split():
            if word.startswith("#"):
                break
            try:
                found.extend(proxy_networks(name.removesuffix("List"), word))
            except DirectiveValueError as error:
                raise DirectiveValueError(f"{error} at line {number} of {path}") from None
    return tuple(found)


@dataclass(frozen=True, slots=True)
class _Scope:
    """One server's own mod_remoteip values; None = not set here (inherit)."""

    header: str | None = None
    proxies_header: str | None = None
    proxies: tuple[tuple[IpNetwork, bool], ...] | None = None

    def settings(self) -> RemoteIpSettings | None:
        if self.header is None:
            return None
        return RemoteIpSettings(self.header, self.proxies_header, self.proxies)


def _last(seen: Seen, name: str) -> Any:
    entries = seen.get(name)
    return entries[-1][1] if entries else None


def _scope(seen: Seen, parent: _Scope | None, path: Callable[[str], str]) -> _Scope:
    entries = sorted(
        ((node, name, value) for name in _PROXY_NAMES for node, value in seen.get(name, ())),
        key=lambda e: (e[0].file, e[0].line),
    )
    proxies: list[tuple[IpNetwork, bool]] = []
    for node, name, value in entries:
        internal = "Internal" in name
        if name.endswith("List"):
            try:
                value = read_proxy_list(name, path(value))
            except DirectiveValueError as error:
                raise ConfigError(node.file, node.line, str(error)) from None
        proxies.extend((network, internal) for network in value)
    own = _Scope(_last(seen, "RemoteIPHeader"), _last(seen, "RemoteIPProxiesHeader"),
                 tuple(proxies) if entries else None)  # fmt: skip
    if parent is None:
        return own
    return _Scope(
        own.header if own.header is not None else parent.header,
        own.proxies_header if own.proxies_header is not None else parent.proxies_header,
        own.proxies if own.proxies is not None else parent.proxies,
    )


def _host_addresses(node: Node | None) -> list[tuple[str, int]]:
    """A server's addresses as httpd's s->addrs: the main server's is any address, any port."""
    if node is None:
        return [("", 0)]
    found = []
    for text in node.args:
        host, port = text, 0
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest[1:].isdigit() else 0
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = int(port_text) if port_text.isdigit() else 0
        if host in ("*", "_default_"):
            found.append(("", port))
            continue
        try:
            found.append((str(ipaddress.ip_address(host)), port))
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            except (socket.gaierror, UnicodeError):
                continue
            found.extend(dict.fromkeys((info[4][0], port) for info in infos))
    return found


def _describe(vhost: VirtualHost) -> str:
    return f"{vhost.server_name}:{vhost.port} in {vhost.source}"


def _proxy_protocol(
    scopes: Sequence[tuple[Node | None, Seen, VirtualHost]], warnings: list[str]
) -> ProxyProtocolSettings | None:
    """RemoteIPProxyProtocol per address, in file order (remoteip_enable_proxy_protocol)."""
    lists: dict[bool, list[tuple[str, int, VirtualHost]]] = {True: [], False: []}
    flags = sorted(
        ((node, flag, section, vhost) for section, seen, vhost in scopes
         for node, flag in seen.get("RemoteIPProxyProtocol", ())),
        key=lambda e: (e[0].file, e[0].line),
    )  # fmt: skip
    for _, flag, section, vhost in flags:
        for address in _host_addresses(section):
            opposite = lists[not flag]
            for index, (host, port, source) in enumerate(opposite):
                if (host, port) == address:
                    warnings.append(
                        f"AH03491: RemoteIPProxyProtocol: previous setting for {host or '*'}:"
                        f"{port} from virtual host {{{_describe(source)}}} is being overridden "
                        f"by virtual host {{{_describe(vhost)}}}; new setting is "
                        f"'{'On' if flag else 'Off'}'"
                    )
                    del opposite[index]
                    break
            same = lists[flag]
            if not any(_compatible((h, p), address) for h, p, _ in same):
                same.insert(0, (*address, vhost))
    if not lists[True]:
        return None
    exceptions = tuple(
        network for _, seen, _ in scopes
        for _, value in seen.get("RemoteIPProxyProtocolExceptions", ()) for network in value
    )  # fmt: skip
    return ProxyProtocolSettings(
        tuple((h, p) for h, p, _ in lists[True]),
        tuple((h, p) for h, p, _ in lists[False]),
        exceptions,
    )


def _compatible(a: tuple[str, int], b: tuple[str, int]) -> bool:
    same_host = a[0] == b[0] or a[0] == "" or b[0] == ""
    return same_host and (a[1] == b[1] or a[1] == 0 or b[1] == 0)


def apply_remoteip(
    main_seen: Seen,
    vhost_scopes: Sequence[tuple[Node, Seen]],
    main: VirtualHost,
    vhosts: Sequence[VirtualHost],
    server_root: str,
    warnings: list[str],
) -> tuple[VirtualHost, tuple[VirtualHost, ...], bool, ProxyProtocolSettings | None]:
    """The hosts with their RemoteIpSettings; whether any walks a header; the PROXY settings."""

    def path(text: str) -> str:
        return os.path.normpath(os.path.join(server_root, text))

    main_scope = _scope(main_seen, None, path)
    main = replace(main, remoteip=main_scope.settings())
    built = tuple(
        replace(vhost, remoteip=_scope(seen, main_scope, path).settings())
        for vhost, (_, seen) in zip(vhosts, vhost_scopes, strict=True)
    )
    headers = main.remoteip is not None or any(v.remoteip is not None for v in built)
    scopes = [(None, main_seen, main), *((node, seen, v) for (node, seen), v in zip(vhost_scopes, built, strict=True))]  # fmt: skip
    return main, built, headers, _proxy_protocol(scopes, warnings)
