"""`SSLCipherSuite TLSv1.3` applied: OpenSSL's SSL_CTX_set_ciphersuites, which Python's `ssl`
does not expose, called through ctypes on the SSL_CTX an `ssl.SSLContext` wraps.

CPython's context object holds its SSL_CTX pointer right after the object header (the layout
Modules/_ssl.c has kept throughout Python 3, and which PyPI's sslpsk reads the same way);
the function is looked up through the `_ssl` module itself, so it is the OpenSSL that module
uses. Each step is checked before the next: the pointer must give the context's own options
back (SSL_CTX_get_options) before anything is written through it, and afterwards the context
must list exactly the suites asked for. Where a step fails the caller refuses the
configuration (MP00236). No library offers this call for `ssl`'s contexts (pyOpenSSL has it
for its own only).
"""

from __future__ import annotations

import ctypes
import ssl
import sys


def _functions() -> tuple | None:
    """(SSL_CTX_get_options, SSL_CTX_set_ciphersuites) of the `_ssl` module's libssl."""
    if sys.implementation.name != "cpython":
        return None
    try:
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        get_options, set_suites = lib.SSL_CTX_get_options, lib.SSL_CTX_set_ciphersuites
    except (OSError, AttributeError):
        return None
    get_options.argtypes = (ctypes.c_void_p,)
    get_options.restype = ctypes.c_uint64
    set_suites.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
    set_suites.restype = ctypes.c_int
    return get_options, set_suites


_FUNCTIONS = _functions()


def set_tls13_suites(context: ssl.SSLContext, suites: str) -> bool:
    """Offer only `suites` (OpenSSL's names, colon-separated, in order) over TLS 1.3; False
    (nothing changed) where this Python cannot."""
    if _FUNCTIONS is None:
        return False
    get_options, set_suites = _FUNCTIONS
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or get_options(pointer) != context.options:
        return False
    if set_suites(pointer, suites.encode("ascii")) != 1:
        return False
    offered = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"]
    return offered == suites.split(":")
