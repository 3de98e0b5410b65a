"""What mod_ssl sets on OpenSSL that Python's `ssl` does not expose: the TLS 1.3 suites
(`SSLCipherSuite TLSv1.3`) and the verify depth (`SSLVerifyDepth`), set through ctypes on the
SSL_CTX an `ssl.SSLContext` wraps.

CPython's context object holds its SSL_CTX pointer right after the object header (the layout
Modules/_ssl.c has kept throughout Python 3, and which PyPI's sslpsk reads the same way);
the functions are looked up through the `_ssl` module itself, so it is the OpenSSL that
module uses. The pointer is checked before anything is written through it (it must give the
context's own options back), and each setting is read back after. Where a step fails the
setter returns False and changes nothing the caller relies on. No library offers these calls
for `ssl`'s contexts (pyOpenSSL has them for its own only).
"""

from __future__ import annotations

import ctypes
import ssl
import sys

_SIGNATURES = {  # our name: (libssl's, argument types, result type)
    "get_options": ("SSL_CTX_get_options", (ctypes.c_void_p,), ctypes.c_uint64),
    "set_suites": ("SSL_CTX_set_ciphersuites", (ctypes.c_void_p, ctypes.c_char_p), ctypes.c_int),
    "set_depth": ("SSL_CTX_set_verify_depth", (ctypes.c_void_p, ctypes.c_int), None),
    "get_depth": ("SSL_CTX_get_verify_depth", (ctypes.c_void_p,), ctypes.c_int),
}


def _functions() -> dict | None:
    """The libssl functions of the `_ssl` module, typed; None where they cannot be reached."""
    if sys.implementation.name != "cpython":
        return None
    functions = {}
    try:
        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        for name, (symbol, argtypes, restype) in _SIGNATURES.items():
            function = getattr(lib, symbol)
            function.argtypes = argtypes
            function.restype = restype
            functions[name] = function
    except (OSError, AttributeError):
        return None
    return functions


_FUNCTIONS = _functions()


def _ssl_ctx(context: ssl.SSLContext) -> int | None:
    """The context's SSL_CTX pointer, once it has proved to be one; else None."""
    if _FUNCTIONS is None:
        return None
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or _FUNCTIONS["get_options"](pointer) != context.options:
        return None
    return pointer


def set_tls13_suites(context: ssl.SSLContext, suites: str) -> bool:
    """Offer only `suites` (OpenSSL's names, colon-separated, in order) over TLS 1.3."""
    pointer = _ssl_ctx(context)
    if pointer is None or _FUNCTIONS["set_suites"](pointer, suites.encode("ascii")) != 1:
        return False
    offered = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"]
    return offered == suites.split(":")


def set_verify_depth(context: ssl.SSLContext, depth: int) -> bool:
    """OpenSSL's verify depth: how many CA certificates may come between the client's and
    the trust anchor (mod_ssl's SSLVerifyDepth minus one), checked during the handshake."""
    pointer = _ssl_ctx(context)
    if pointer is None:
        return False
    _FUNCTIONS["set_depth"](pointer, depth)
    return _FUNCTIONS["get_depth"](pointer) == depth
