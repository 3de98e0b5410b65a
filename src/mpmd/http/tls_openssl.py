"""What mod_ssl sets on OpenSSL that Python's `ssl` does not expose: the TLS 1.3 suites
(`SSLCipherSuite TLSv1.3`) and the verify depth (`SSLVerifyDepth`), set through ctypes on the
SSL_CTX an `ssl.SSLContext` wraps, or on the SSL of one connection (the depth of the host
SNI chose, as mod_ssl sets it when it switches hosts).

CPython's context object holds its SSL_CTX pointer right after the object header, and its
connection object (`_sslobj`) its SSL pointer one pointer further on (the layouts
Modules/_ssl.c has kept throughout Python 3; PyPI's sslpsk reads them the same way). The
functions are looked up through the `_ssl` module itself, so it is the OpenSSL that module
uses. A pointer is checked before anything is written through it (a context's must give its
own options back, a connection's its context's SSL_CTX), and each setting is read back
after. Where a step fails the setter returns False and changes nothing the caller relies
on. No library offers these calls for `ssl`'s objects (pyOpenSSL has them for its own only).
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from typing import Any

_SIGNATURES = {  # our name: (libssl's, argument types, result type)
    "get_options": ("SSL_CTX_get_options", (ctypes.c_void_p,), ctypes.c_uint64),
    "set_suites": ("SSL_CTX_set_ciphersuites", (ctypes.c_void_p, ctypes.c_char_p), ctypes.c_int),
    "set_depth": ("SSL_CTX_set_verify_depth", (ctypes.c_void_p, ctypes.c_int), None),
    "get_depth": ("SSL_CTX_get_verify_depth", (ctypes.c_void_p,), ctypes.c_int),
    "ssl_ctx": ("SSL_get_SSL_CTX", (ctypes.c_void_p,), ctypes.c_void_p),
    "ssl_set_depth": ("SSL_set_verify_depth", (ctypes.c_void_p, ctypes.c_int), None),
    "ssl_get_depth": ("SSL_get_verify_depth", (ctypes.c_void_p,), ctypes.c_int),
}
_SSL_OFFSET = object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)  # after `Socket`


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


def context_pointer(context: ssl.SSLContext) -> int | None:
    """The context's SSL_CTX pointer, once it has proved to be one; else None."""
    if _FUNCTIONS is None:
        return None
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or _FUNCTIONS["get_options"](pointer) != context.options:
        return None
    return pointer


def set_tls13_suites(context: ssl.SSLContext, suites: str) -> bool:
    """Offer only `suites` (OpenSSL's names, colon-separated, in order) over TLS 1.3."""
    pointer = context_pointer(context)
    if pointer is None or _FUNCTIONS["set_suites"](pointer, suites.encode("ascii")) != 1:
        return False
    offered = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"]
    return offered == suites.split(":")


def set_verify_depth(context: ssl.SSLContext, depth: int) -> bool:
    """OpenSSL's verify depth: how many CA certificates may come between the client's and
    the trust anchor (mod_ssl's SSLVerifyDepth minus one), checked during the handshake."""
    pointer = context_pointer(context)
    if pointer is None:
        return False
    _FUNCTIONS["set_depth"](pointer, depth)
    return _FUNCTIONS["get_depth"](pointer) == depth


def connection_depth_settable(context: ssl.SSLContext) -> int | None:
    """The context's SSL_CTX pointer if set_connection_depth works for its connections (tried
    once, on a connection made for the purpose), else None."""
    pointer = context_pointer(context)
    if pointer is None:
        return None
    probe = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    ssl_pointer = _connection_ssl(probe)
    if ssl_pointer is None or _FUNCTIONS["ssl_ctx"](ssl_pointer) != pointer:
        return None
    _FUNCTIONS["ssl_set_depth"](ssl_pointer, 7)
    return pointer if _FUNCTIONS["ssl_get_depth"](ssl_pointer) == 7 else None


def set_connection_depth(conn: Any, depth: int, context: int) -> bool:
    """OpenSSL's verify depth for one connection (an ssl.SSLObject or ssl.SSLSocket, during
    its handshake, before the client's certificate), whose context has the SSL_CTX pointer
    `context` (connection_depth_settable's): False, nothing set, if it has another."""
    pointer = _connection_ssl(conn)
    if pointer is None or _FUNCTIONS["ssl_ctx"](pointer) != context:
        return False
    _FUNCTIONS["ssl_set_depth"](pointer, depth)
    return True


def _connection_ssl(conn: Any) -> int | None:
    """The SSL pointer of a connection's C object (`_sslobj`, of ssl.SSLObject and SSLSocket)."""
    if _FUNCTIONS is None:
        return None
    return ctypes.c_void_p.from_address(id(conn._sslobj) + _SSL_OFFSET).value or None
