"""Reading a connection's PROXY header (RemoteIPProxyProtocol), for either transport.

The blocking connection (connection.py) and the event loop (event.py) feed the connection's
first bytes here before any HTTP, as httpd's REMOTEIP_INPUT filter sits below every other
connection filter. This module logs what httpd logs and sets the connection's client address;
it owns no socket and never waits (the transports bound the wait by the header stage of
RequestReadTimeout, which httpd's mod_reqtimeout applies to the same reads).
"""

from __future__ import annotations

from mpmd.http.exchange import ConnectionInfo
from mpmd.http.proxy_protocol import ProxyHeaderError, ProxyHeaderParser


class ProxyHeaderReader:
    """One connection's PROXY header: parser, log lines, and the address it yields."""

    __slots__ = ("error_log", "info", "parser")

    def __init__(self, info: ConnectionInfo, error_log) -> None:
        self.info = info
        self.error_log = error_log
        self.parser = ProxyHeaderParser()

    def feed(self, data: bytes) -> bytes | None:
        """None while the header is incomplete, then the bytes after it (HTTP's). A missing
        or malformed header, or the client closing first, raises ConnectionAbortedError: the
        caller closes without answering, as httpd aborts the connection (logged here)."""
        info = self.info
        try:
            if not data:
                raise ConnectionAbortedError("closed before its PROXY header")
            done = self.parser.feed(data)
        except ProxyHeaderError as error:
            self.error_log.log("error", str(error), module="remoteip",
                               client=f"{info.peer_addr}:{info.client_port}")  # fmt: skip
            raise ConnectionAbortedError(str(error)) from None
        if done is None:
            return None
        header, rest = done
        port = info.client_port
        if header.client_addr is not None:  # else UNKNOWN or LOCAL: the peer it is
            info.conn_addr = info.client_addr = header.client_addr
            port = header.client_port
        self.error_log.log("debug", "AH03511: RemoteIPProxyProtocol: received valid PROXY "
                           f"header: {info.conn_addr}:{port}", module="remoteip")  # fmt: skip
        return rest

    def timed_out(self) -> None:
        """The header did not arrive within the header stage: httpd's failed read."""
        info = self.info
        self.error_log.log("error", "AH10184: failed reading input", module="remoteip",
                           client=f"{info.peer_addr}:{info.client_port}")  # fmt: skip
