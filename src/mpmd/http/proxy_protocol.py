"""The PROXY protocol header (HAProxy's v1 text line and v2 binary block), sans-I/O.

A balancer that speaks the PROXY protocol (HAProxy `send-proxy`, an AWS NLB, nginx
`proxy_protocol on`) writes one header before anything else on the connection, naming the
client it accepted. `ProxyHeaderParser.feed()` takes the connection's first bytes as they
arrive and returns None until the header is complete, then the header and the bytes behind it
(the start of the request, or of a TLS ClientHello); a malformed header raises
ProxyHeaderError with the message httpd's mod_remoteip logs (its AH id), so the caller closes
the connection without answering, as httpd does. It never reads a socket and never decides
whether a header is required (http/remoteip.py does).

Differences from httpd 2.4's parser, all on the side of deciding sooner: bytes that cannot
begin a header are refused as soon as they arrive (httpd waits for 15), a lone CR in a v1 line
is refused at once (httpd waits for the 108-byte limit), and v2's LOCAL command is accepted
and keeps the real peer (httpd trunk since 2020; 2.4.x refuses it, AH03507).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 108  # a v1 line with its CRLF, as httpd's buffer (and the spec) allow
V2_MAX = 16 + 216  # httpd's proxy_v2 struct: the fixed part and the largest address block
_PORT = re.compile(r"\d+")
_AF = {"TCP4": 2, "TCP6": 10}  # APR_INET, APR_INET6 on Linux, as httpd prints them
_V4_CHARS = frozenset("0123456789.")
_V6_CHARS = frozenset("0123456789abcdefABCDEF:")


class ProxyHeaderError(Exception):
    """A header that is not one, or a malformed one: the message to log (with its id)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the header says. `client_addr` None: keep the real peer (v1 UNKNOWN, v2 LOCAL)."""

    version: int
    client_addr: str | None
    client_port: int


def shown(data: bytes) -> str:
    """Bytes for a log line: printable ASCII as is, anything else as \\xNN."""
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in data)


def _shown_text(text: str) -> str:
    return shown(text.encode("latin-1"))


class ProxyHeaderParser:
    """One connection's PROXY header, fed the bytes as they arrive."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """None while the header is incomplete; then (header, the bytes after it).
        Raises ProxyHeaderError."""
        buf = self._buf = self._buf + data
        if buf.startswith(V2_SIGNATURE) or V2_SIGNATURE.startswith(buf):
            return self._v2(buf)
        if buf.startswith(V1_PREFIX) or V1_PREFIX.startswith(buf):
            return self._v1(buf)
        raise ProxyHeaderError(f"MP00260: no PROXY header: the connection began with "
                               f"'{shown(buf[:32])}'")  # fmt: skip

    @staticmethod
    def _v1(buf: bytes) -> tuple[ProxyHeader, bytes] | None:
        cr = buf.find(b"\r", 0, V1_MAX - 1)
        if cr < 0 or cr + 1 >= len(buf):
            if len(buf) >= V1_MAX:
                raise ProxyHeaderError(f"AH10185: RemoteIPProxyProtocol header too long, "
                                       f"got {len(buf)} expected {V1_MAX}")  # fmt: skip
            return None
        line = buf[:cr]
        if buf[cr + 1] != 0x0A:
            raise ProxyHeaderError(f"MP00261: RemoteIPProxyProtocol: CR without LF in header "
                                   f"'{shown(buf[: cr + 2])}'")  # fmt: skip
        return _parse_v1(line), buf[cr + 2 :]

    @staticmethod
    def _v2(buf: bytes) -> tuple[ProxyHeader, bytes] | None:
        if len(buf) < 16:
            return None
        ver_cmd, family, length = struct.unpack_from("!BBH", buf, 12)
        if ver_cmd & 0xF0 != 0x20:
            raise ProxyHeaderError(f"MP00260: no PROXY header: the connection began with "
                                   f"'{shown(buf[:16])}'")  # fmt: skip
        if 16 + length > V2_MAX:
            raise ProxyHeaderError("AH10186: RemoteIPProxyProtocol protocol header length too long")
        if len(buf) < 16 + length:
            return None
        block = buf[16 : 16 + length]  # addresses, then TLVs, which nothing here needs
        return _parse_v2(ver_cmd, family, block), buf[16 + length :]


def _parse_v1(line: bytes) -> ProxyHeader:
    """`PROXY TCP4|TCP6|UNKNOWN src dst sport dport`, checked as httpd checks it (the
    destination is not validated, the destination port not even read)."""
    text = line.decode("latin-1")
    words = [w for w in text.split(" ") if w][1:]  # strtok: runs of spaces are one
    where = f"in header '{shown(line)}'"
    if not words:
        raise ProxyHeaderError(f"AH03497: RemoteIPProxyProtocol: no family found {where}")
    family = words[0]
    if family == "UNKNOWN":
        return ProxyHeader(1, None, 0)
    if family not in _AF:
        raise ProxyHeaderError(f"AH03499: RemoteIPProxyProtocol: unknown family "
                               f"'{_shown_text(family)}' {where}")  # fmt: skip
    for index, field in enumerate(("client-address", "destination-address", "client-port"), 1):
        if len(words) <= index:
            raise ProxyHeaderError(f"AH03497: RemoteIPProxyProtocol: no {field} found {where}")
    host, port_text = words[1], words[3]
    if not set(host) <= (_V4_CHARS if family == "TCP4" else _V6_CHARS):
        raise ProxyHeaderError(f"AH03500: RemoteIPProxyProtocol: invalid client-address "
                               f"'{_shown_text(host)}' found {where}")  # fmt: skip
    digits = _PORT.match(port_text)
    if digits is None:
        raise ProxyHeaderError(f"AH03501: RemoteIPProxyProtocol: error parsing port "
                               f"'{_shown_text(port_text)}' {where}")  # fmt: skip
    port = int(digits.group()) & 0xFFFF  # sscanf("%hu")
    try:
        address = ipaddress.IPv4Address(host) if family == "TCP4" else ipaddress.IPv6Address(host)
    except ValueError:
        raise ProxyHeaderError(f"AH03502: RemoteIPProxyProtocol: error converting family "
                               f"'{_AF[family]}', host '{host}', and port '{port}' to sockaddr; "
                               f"header was '{shown(line)}'") from None  # fmt: skip
    return ProxyHeader(1, str(address), port)


def _parse_v2(ver_cmd: int, family: int, block: bytes) -> ProxyHeader:
    command = ver_cmd & 0x0F
    if command == 0x00:  # LOCAL: the balancer's own connection (a health check)
        return ProxyHeader(2, None, 0)
    if command != 0x01:
        raise ProxyHeaderError(f"AH03507: RemoteIPProxyProtocol: unsupported command {ver_cmd:02x}")
    if family == 0x11:
        size, make = 12, ipaddress.IPv4Address
        port_at = 8
    elif family == 0x21:
        size, make = 36, ipaddress.IPv6Address
        port_at = 32
    else:
        raise ProxyHeaderError(f"AH10183: RemoteIPProxyProtocol: unsupported protocol {family:02x}")
    if len(block) < size:
        raise ProxyHeaderError(f"MP00262: RemoteIPProxyProtocol: address block of {len(block)} "
                               f"bytes, {size} needed for protocol {family:02x}")  # fmt: skip
    address = make(block[: port_at // 2])
    (port,) = struct.unpack_from("!H", block, port_at)
    return ProxyHeader(2, str(address), port)
