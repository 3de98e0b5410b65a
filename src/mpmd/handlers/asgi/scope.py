"""ASGI scopes from mpmd's parsed request: what an ASGI application sees of a request.

`path` is percent-decoded UTF-8 and includes `root_path` (the mount's URL-path), as the spec
says (PATH_INFO is path minus root_path); `raw_path` is the path as the client sent it. Header
names are already lower case (the parser's); both names and values go out as latin-1 bytes.
"""

from __future__ import annotations

from typing import Any

from mpmd.http.exchange import ConnectionInfo
from mpmd.http.request import Request

ASGI_HTTP = {"version": "3.0", "spec_version": "2.4"}
EXTENSIONS = {"http.response.pathsend": {}, "http.response.zerocopysend": {}}
_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0"}


def http_scope(
    request: Request,
    info: ConnectionInfo,
    path: str,
    root_path: str,
    state: dict[str, Any] | None,
) -> dict[str, Any]:
    """The `http` scope. `path`: the router's normalised path (decoded, as latin-1 text of its
    bytes); `root_path`: the mount's URL-path, in the same form."""
    client = (info.client_addr, info.client_port) if info.client_addr else None
    server_addr = info.server_addr
    if server_addr.startswith("/"):  # a Unix socket: [path, None], as the spec says
        server: tuple[str, int | None] | None = (server_addr, None)
    else:
        server = (server_addr, info.server_port) if server_addr else None
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": ASGI_HTTP,
        "http_version": _VERSIONS.get(request.version, "1.1"),
        "method": request.method,
        "scheme": "https" if info.tls is not None else "http",
        "path": path if path.isascii() else _text(path),
        "raw_path": request.path.encode("latin-1"),
        "query_string": request.query.encode("latin-1"),
        "root_path": root_path if root_path.isascii() else _text(root_path),
        "headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in request.headers],
        "client": client,
        "server": server,
        "extensions": EXTENSIONS,
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope


def _text(latin1: str) -> str:
    """The router's path form (bytes as latin-1 characters) as the spec's UTF-8 text."""
    return latin1.encode("latin-1").decode("utf-8", "replace")
