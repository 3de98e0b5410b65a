"""Listening sockets: bound once by the parent before any fork, inherited by every child.

Two mpmd extensions live here beside Apache's TCP listeners. `Listen unix:PATH` binds a Unix
domain socket (the nginx → app-server deployment): a stale socket left by a crash is replaced,
anything else at the path is refused, the parent directory must exist (systemd's
RuntimeDirectory= makes it), the mode and owner come from ListenUnixMode/ListenUnixOwner, and
the parent removes the sockets it bound when the server stops, never on a restart (the
sockets live on in the parent, so a graceful restart keeps their inode). And Apache's
ListenCoresBucketsRatio: each TCP address is bound once per bucket with SO_REUSEPORT, and
`bucket_sockets` gives a child the sockets of its own bucket, derived from the sockets alone
(so it works the same after a re-exec). A Unix socket or a socket systemd passed cannot be
duplicated: every bucket shares it.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Mapping

from mpmd.config.model import ListenAddress

# Unix sockets this process bound (not those systemd passed): removed when the server stops.
_OWNED: set[str] = set()
UNIX_SERVER_PORT = 80  # SERVER_PORT of a request over a Unix socket (no port of its own)


class BindError(OSError):
    """A Listen address could not be bound; `address` as Apache prints it (`[::]:80`), `note`
    an mpmd line that says more (MP id included), or None."""

    def __init__(self, error: OSError, address: str, note: str | None = None) -> None:
        super().__init__(error.errno, f"could not bind to address {address}: {error.strerror}")
        self.address = address
        self.note = note


def bind_listeners(
    addresses: tuple[ListenAddress, ...],
    backlog: int,
    adopted: Mapping[ListenAddress, socket.socket] | None = None,
    *,
    buckets: int = 1,
    unix_mode: int = 0o666,
    unix_owner: tuple[int, int] = (-1, -1),
) -> list[socket.socket]:
    """Bind every Listen address (IPv4 and IPv6, SO_REUSEADDR; with `buckets` > 1 one
    SO_REUSEPORT socket per bucket) and listen with ListenBacklog; an address in `adopted`
    (systemd's socket activation) uses that socket as it is."""
    adopted = adopted or {}
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            sock = adopted.get(address)
            if sock is not None:
                sockets.append(sock)
            elif address.path:
                sockets.append(_bind_unix(address, backlog, unix_mode, unix_owner))
            else:
                for _ in range(buckets):
                    sockets.append(_bind_tcp(address, backlog, reuse_port=buckets > 1))
    except OSError:
        for sock in sockets:
            if sock not in adopted.values():
                sock.close()
        remove_unix_sockets()
        raise
    return sockets


def bucket_sockets(
    listeners: list[socket.socket], buckets: int, bucket: int
) -> list[socket.socket]:
    """The listeners child slot `bucket` (mod `buckets`) accepts from: of the sockets bound to
    one address, the bucket's own; a socket alone at its address serves every bucket."""
    if buckets <= 1:
        return listeners
    groups: dict[tuple, list[socket.socket]] = {}
    for sock in listeners:
        groups.setdefault((sock.family, sock.getsockname()), []).append(sock)
    return [group[bucket % len(group)] for group in groups.values()]


def connection_addresses(sock: socket.socket, peer) -> tuple[str, int, str, int]:
    """(client address, client port, server address, server port) of an accepted socket.

    TCP: `peer` is (host, port[, flow, scope]). A Unix socket's peer is the client's bound
    path, "" for the unnamed sockets nginx and curl connect from: the client address is that
    string, as gunicorn's REMOTE_ADDR, with port 0 (no REMOTE_PORT); the server address is the
    socket's path and the port 80, the http scheme's, as gunicorn's SERVER_PORT for a Host
    without a port (so `<VirtualHost *:80>` names match)."""
    if sock.family == socket.AF_UNIX:
        client = peer.decode(errors="replace") if isinstance(peer, bytes) else peer or ""
        return client, 0, sock.getsockname() or "", UNIX_SERVER_PORT
    local = sock.getsockname()
    return (peer[0] if peer else "", peer[1] if peer else 0, local[0], local[1])


def remove_unix_sockets() -> None:
    """At stop: remove the Unix sockets this process bound (if a socket is still there)."""
    for path in sorted(_OWNED):
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except OSError:
            pass
    _OWNED.clear()


def owned_unix_paths() -> list[str]:
    """For a re-exec: the sockets the new image removes at stop (reexec.py)."""
    return sorted(_OWNED)


def adopt_unix_paths(paths: list[str]) -> None:
    """In a re-exec'd image: the old image's sockets are this one's to remove."""
    _OWNED.update(paths)


def _bind_tcp(address: ListenAddress, backlog: int, *, reuse_port: bool) -> socket.socket:
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
        if reuse_port:  # a bucket's own socket: the kernel spreads connections across them
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
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


def _bind_unix(
    address: ListenAddress, backlog: int, mode: int, owner: tuple[int, int]
) -> socket.socket:
    """Bind PATH created with no permissions for others (umask 0177), then chmod/chown it: no
    moment where a client the mode excludes could connect."""
    path = address.path
    _clear_stale(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        bound = True
        if owner != (-1, -1):
            os.chown(path, *owner)
        os.chmod(path, mode)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        if bound:
            os.unlink(path)
        raise BindError(error, str(address)) from None
    _OWNED.add(path)
    return sock


def _clear_stale(address: ListenAddress) -> None:
    """Remove a socket nobody listens on (left by a crash); refuse a live one (EADDRINUSE)
    and anything that is not a socket (MP00270), which mpmd never deletes."""
    path = address.path
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise BindError(error, str(address)) from None
    if not stat.S_ISSOCK(mode):
        error = OSError(errno.EEXIST, os.strerror(errno.EEXIST))
        note = f"MP00270: {path} exists and is not a socket: mpmd replaces only a stale socket"
        raise BindError(error, str(address), note)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        code = probe.connect_ex(path)
    finally:
        probe.close()
    if code == errno.ECONNREFUSED:  # nobody listens: a stale socket
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    if code in (0, errno.EAGAIN, errno.EINPROGRESS):  # a server accepts there (or is full)
        code = errno.EADDRINUSE
    raise BindError(OSError(code, os.strerror(code)), str(address))
