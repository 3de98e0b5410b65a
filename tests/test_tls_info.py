"""tls_info() and the SSL session: CPython 3.11's `SSLObject.session` getter leaks about
1 KiB per call, so it is read only for a host whose SSLOptions include +StdEnvVars (the only
place SSL_SESSION_ID shows); an event child doing full handshakes otherwise grew without bound
(PSS 35 MiB → 80 MiB over 40,000 handshakes, flat at 35 MiB once it stopped reading it)."""

from __future__ import annotations

import ssl
from types import SimpleNamespace

import pytest
import trustme

from mpmd.http.tls import tls_info


def _handshaken() -> ssl.SSLObject:
    """A server-side SSLObject after a real in-memory TLS handshake."""
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(6):
        for side, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
    server.do_handshake()
    return server


class _Watched:
    """The SSLObject's API, counting reads of `.session`."""

    def __init__(self, obj: ssl.SSLObject, options: frozenset[str]) -> None:
        self._obj = obj
        self.session_reads = 0
        self.mpmd_host = SimpleNamespace(
            settings=SimpleNamespace(options=options, verify_client="none")
        )

    @property
    def session(self):
        self.session_reads += 1
        return self._obj.session

    def __getattr__(self, name: str):
        return getattr(self._obj, name)


@pytest.mark.parametrize(("options", "reads"), [(frozenset(), 0), (frozenset({"StdEnvVars"}), 1)])
def test_the_session_is_read_only_for_std_env_vars(options, reads) -> None:
    conn = _Watched(_handshaken(), options)
    info = tls_info(conn)  # type: ignore[arg-type]
    assert conn.session_reads == reads
    assert info.protocol.startswith("TLSv1")
    assert bool(info.session_id) == bool(reads)
