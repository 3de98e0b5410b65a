"""The client-certificate checks made after a TLS handshake, as mod_ssl's verify callback
makes them during it (Python's `ssl` has no verify callback): the chosen host's
`SSLVerifyClient require`, and `SSLVerifyDepth` against the depth of the chain.

OpenSSL itself is given the depth (http/tls.py: the port's context where every host of the
port verifies clients with one depth, else each connection from the SNI callback,
tls_openssl.py) and refuses a longer chain during the handshake, as mod_ssl does;
`handshake_failure` words that failure as mod_ssl's AH02040. Depth 0, which OpenSSL cannot
say, is left to the check after the handshake. Its depth is that of the chain OpenSSL
verified; a resumed session has none (OpenSSL keeps the client's certificate in the session,
not the chain it verified), so its depth is worked out from the certificate's issuer among
the host's CA certificates: exact up to a chain with one CA certificate the client sent
itself (depth 2), at least 2 beyond.
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Any

from mpmd.config.model import SslSettings

if TYPE_CHECKING:
    from mpmd.http.tls import TlsInfo

_LONGEST_CHAIN = 100  # OpenSSL's own verify depth limit: a loop in the CA files ends here
_CHAIN_TOO_LONG = 22  # X509_V_ERR_CERT_CHAIN_TOO_LONG


def ca_issuers(settings: SslSettings) -> dict[tuple, tuple]:
    """The issuer of each CA certificate of SSLCACertificateFile and SSLCACertificatePath, by
    subject (decoded names, as getpeercert() shapes them). The files were checked when the
    host's context loaded them."""
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    paths = [settings.ca_file] if settings.ca_file else []
    if settings.ca_path and os.path.isdir(settings.ca_path):
        paths += sorted(e.path for e in os.scandir(settings.ca_path) if e.is_file())
    for path in paths:
        try:
            scratch.load_verify_locations(cafile=path)
        except (ssl.SSLError, OSError):
            pass  # not a certificate (a CRL in the hash directory, a README)
    return {cert["subject"]: cert["issuer"] for cert in scratch.get_ca_certs()}


def chain_depth(conn: ssl.SSLSocket | ssl.SSLObject, cert: dict, issuers: dict) -> int:
    """The depth of the top (trust anchor) certificate of the client's chain: 0 for a trusted
    self-signed certificate, 1 for one a trusted CA issued; see the module docstring for a
    resumed session."""
    # Python 3.13 names it; 3.10-3.12 have it on the C object only
    get_chain = getattr(conn, "get_verified_chain", None) or conn._sslobj.get_verified_chain
    chain = get_chain()
    if chain:
        return len(chain) - 1
    name, issuer = cert.get("subject"), cert.get("issuer")
    depth = 0
    while issuer != name and depth < _LONGEST_CHAIN:
        depth += 1
        if issuer not in issuers:
            return depth + 1  # a CA the client sent, issued by at least one more above it
        name, issuer = issuer, issuers[issuer]
    return depth


def handshake_failure(error: ssl.SSLError, conn: Any) -> tuple[str, str, str]:
    """How a failed handshake is logged, as (level, AH id, message): mod_ssl's AH02040 when
    OpenSSL refused a chain longer than the verify depth http/tls.py gave it
    (the chain is counted to the first certificate past the limit), else
    mod_ssl's AH02008 at info, a failed handshake being the client's doing."""
    host = getattr(conn, "mpmd_host", None)
    if getattr(error, "verify_code", None) == _CHAIN_TOO_LONG and host is not None:
        allowed = host.settings.verify_depth
        return "error", "AH02040", _too_long(allowed + 1, allowed)
    return "info", "AH02008", f"SSL handshake failed: {error.reason or error}"


def _too_long(depth: int, allowed: int) -> str:
    return (f"Certificate Verification: Certificate Chain too long (chain has {depth} "
            f"certificates, but maximum allowed are only {allowed})")  # fmt: skip


def client_refusal(info: TlsInfo) -> tuple[str, str, str] | None:
    """Why the chosen host refuses the client's certificate, as (level, AH id, message) for
    the error log, or None: SSLVerifyClient require of the chosen host and no certificate
    (the port asked for one only optionally because another host on it does not require
    one), and SSLVerifyDepth, as mod_ssl's ssl_callback_SSLVerify."""
    host = info.host
    if host is None:
        return None
    settings = host.settings
    if settings.verify_client == "require" and not info.client_der:
        message = (f"the client sent no certificate; {host.vhost.server_name} has "
                   "SSLVerifyClient require")  # fmt: skip
        return "info", "MP00235", message
    if info.chain_depth > settings.verify_depth:
        return "error", "AH02040", _too_long(info.chain_depth, settings.verify_depth)
    return None
