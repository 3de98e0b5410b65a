"""ASGI scopes from mpmd's parsed request: what an ASGI application sees of a request.

`path` is percent-decoded UTF-8 and includes `root_path` (the mount's URL-path), as the spec
says (PATH_INFO is path minus root_path); `raw_path` is the path as the client sent it. Header
names are already lower case (the parser's); both names and values go out as latin-1 bytes.
"""

from __future__ import annotations

import ssl
from typing import Any

from mpmd.http.exchange import ConnectionInfo
from mpmd.http.request import Request
from mpmd.http.tls import TlsInfo, rfc2253

ASGI_HTTP = {"version": "3.0", "spec_version": "2.4"}
EXTENSIONS = {"http.response.pathsend": {}, "http.response.zerocopysend": {}}
_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0"}
_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_SUITES: dict[str, int] = {}  # OpenSSL's cipher name -> its IANA number (from the contexts)


def connection_scope(info: ConnectionInfo, root_path: str) -> dict[str, Any]:
    """What the `http` scopes of one connection's requests to one mount share (built once,
    copied per request): client and server addresses, scheme, `root_path` (the mount's
    URL-path, in the router's form)."""
    client = (info.client_addr, info.client_port) if info.client_addr else None
    server_addr = info.server_addr
    if server_addr.startswith("/"):  # a Unix socket: [path, None], as the spec says
        server: tuple[str, int | None] | None = (server_addr, None)
    else:
        server = (server_addr, info.server_port) if server_addr else None
    return {
        "type": "http",
        "asgi": ASGI_HTTP,
        "scheme": "https" if info.tls is not None else "http",
        "root_path": root_path if root_path.isascii() else _text(root_path),
        "client": client,
        "server": server,
        "extensions": EXTENSIONS if info.tls is None else {**EXTENSIONS, "tls": tls(info.tls)},
    }


def tls(info: TlsInfo) -> dict[str, Any]:
    """ASGI's `tls` extension (reference 4.2) for a connection's handshake. The client's chain
    is its own certificate only: Python's ssl module gives the peer's leaf, not the rest."""
    host = info.host
    der = info.client_der
    subject = info.client_cert.get("subject")
    if info.cipher not in _SUITES and host is not None:
        for cipher in host.context.get_ciphers():  # `id` is 0x0300xxxx, xxxx the IANA number
            _SUITES.setdefault(cipher["name"], cipher["id"] & 0xFFFF)
    return {
        "server_cert": host.server_pem if host is not None else None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": rfc2253(subject) if subject else None,
        "client_cert_error": None if info.verify in ("SUCCESS", "NONE") else info.verify,
        "tls_version": _TLS_VERSIONS.get(info.protocol),
        "cipher_suite": _SUITES.get(info.cipher),
    }


def http_scope(
    request: Request, path: str, base: dict[str, Any], state: dict[str, Any] | None
) -> dict[str, Any]:
    """The `http` scope: `base` (connection_scope's) with the request's own keys. `path`: the
    router's normalised path (decoded, as latin-1 text of its bytes)."""
    scope = base.copy()
    scope["http_version"] = _VERSIONS.get(request.version, "1.1")
    scope["method"] = request.method
    scope["path"] = path if path.isascii() else _text(path)
    scope["raw_path"] = request.path.encode("latin-1")
    scope["query_string"] = request.query.encode("latin-1")
    scope["headers"] = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in request.headers]
    if state is not None:
        scope["state"] = state.copy()
    return scope


def _text(latin1: str) -> str:
    """The router's path form (bytes as latin-1 characters) as the spec's UTF-8 text."""
    return latin1.encode("latin-1").decode("utf-8", "replace")
