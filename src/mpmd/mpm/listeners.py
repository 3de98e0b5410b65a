"""Listening sockets: bound once by the parent before any fork, inherited by every child."""

from __future__ import annotations

import socket
from collections.abc import Mapping

from mpmd.config.model import ListenAddress


class BindError(OSError):
    """A Listen address could not be bound; `address` as Apache prints it (`[::]:80`)."""

    def __init__(self, error: OSError, address: str) -> None:
        super().__init__(error.errno, f"could not bind to address {address}: {error.strerror}")
        self.address = address


def bind_listeners(
    addresses: tuple[ListenAddress, ...],
    backlog: int,
    adopted: Mapping[ListenAddress, socket.socket] | None = None,
) -> list[socket.socket]:
    """Bind every Listen address (IPv4 and IPv6, SO_REUSEADDR) and listen with ListenBacklog;
    an address in `adopted` (systemd's socket activation) uses that socket as it is."""
    adopted = adopted or {}
    sockets = []
    try:
        for address in addresses:
            sock = adopted.get(address)
            sockets.append(sock if sock is not None else _bind_one(address, backlog))
    except OSError:
        for sock in sockets:
            if sock not in adopted.values():
                sock.close()
        raise
    return sockets


def _bind_one(address: ListenAddress, backlog: int) -> socket.socket:
    host = address.host
    if host == "":
        family, bind_host = (socket.AF_INET6, "::") if socket.has_ipv6 else (socket.AF_INET, "")
    elif ":" in host:
        family, bind_host = socket.AF_INET6, host.strip("[]")
    else:
        family, bind_host = socket.AF_INET, host
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # An unspecified address serves IPv4 too; a literal IPv6 address only IPv6.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "" else 1)
        sock.bind((bind_host, address.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        shown = f"[{bind_host}]" if family == socket.AF_INET6 else bind_host or "0.0.0.0"
        raise BindError(error, f"{shown}:{address.port}") from None
    return sock
