"""TLS for every MPM: the OpenSSL contexts of a generation, SNI, and what a request sees.

`TlsContexts.build(config)` runs once per generation (in the parent, so `mpmd -t` and a
graceful restart check the certificate files, and the children inherit the contexts and
their session-ticket keys): one `ssl.SSLContext` per TLS virtual host, and per TLS port the
context of the port's default (first) host, whose `sni_callback` swaps in the context of the
name-based host the client named (reference 1.2) and records that host on the connection.
`tls_info()` reads a finished handshake (an `ssl.SSLSocket` of prefork and worker or the
event loop's `ssl.SSLObject`: they share the API) and `ssl_environ()` turns it into HTTPS and
the SSL_* variables of reference 1.3. Loading a file that is wrong raises a ConfigError with
the FILE:LINE of its directive, never a traceback. This module does no socket I/O.
"""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from itertools import zip_longest
from typing import Any

from mpmd import __version__
from mpmd.config.model import HttpSettings, ListenAddress, ServerConfig, SslSettings, VirtualHost
from mpmd.config.syntax import ConfigError
from mpmd.http.errors import HttpError
from mpmd.http.fields import host_name
from mpmd.http.response import build_head, error_body
from mpmd.http.tls_openssl import (
    connection_depth_settable,
    set_connection_depth,
    set_tls13_suites,
    set_verify_depth,
)
from mpmd.http.tls_verify import ca_issuers, chain_depth

ALPN = ("http/1.1",)
# The TLS 1.3 suites OpenSSL knows (SSLCipherSuite TLSv1.3 is checked against them).
TLS13_SUITES = frozenset({"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                          "TLS_AES_128_GCM_SHA256", "TLS_AES_128_CCM_SHA256",
                          "TLS_AES_128_CCM_8_SHA256"})  # fmt: skip
# The TLS 1.2 list without SSLCipherSuite: Python's default minus its CBC suites (forward-secret
# AEAD only, Mozilla's "intermediate"), so testssl.sh finds no LUCKY13 exposure (docs/tls.md).
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!aDSS"
_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
           "optional_no_ca": ssl.CERT_OPTIONAL, "require": ssl.CERT_REQUIRED}  # fmt: skip
# OpenSSL's short names for the attributes of a distinguished name (RFC 2253 output).
_DN_TAGS = {"countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
            "organizationName": "O", "organizationalUnitName": "OU", "commonName": "CN",
            "emailAddress": "emailAddress", "title": "title", "givenName": "GN",
            "surname": "SN", "serialNumber": "serialNumber", "userId": "UID",
            "domainComponent": "DC", "initials": "initials"}  # fmt: skip
# SSL_*_DN_<tag> variables: mod_ssl's tag names for the same attributes.
_ENV_TAGS = {"C": "C", "ST": "ST", "L": "L", "O": "O", "OU": "OU", "CN": "CN", "title": "T",
             "initials": "I", "GN": "G", "SN": "S", "UID": "UID", "emailAddress": "Email"}  # fmt: skip
LIBRARY = "/".join(ssl.OPENSSL_VERSION.split()[:2])  # "OpenSSL/3.0.19", as mod_ssl shows it


_last: tuple[ServerConfig, TlsContexts] | None = None  # see TlsContexts.build


class _Encrypted(Exception):
    """Raised from the passphrase callback: mpmd has no SSLPassPhraseDialog."""


def _no_passphrase() -> bytes:
    raise _Encrypted


@dataclass(frozen=True, slots=True)
class TlsHost:
    """A TLS virtual host: its settings, context and the facts of its own certificate."""

    vhost: VirtualHost
    settings: SslSettings
    context: ssl.SSLContext
    server_cert: dict  # the decoded leaf of SSLCertificateFile (as getpeercert() shapes it)
    server_pem: str  # that leaf in PEM, for SSLOptions +ExportCertData
    ca_issuers: dict  # its CA certificates' issuers by subject, when it verifies clients


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What one finished handshake established (reference 1.3's variables come from it)."""

    protocol: str  # "TLSv1.3"
    cipher: str  # OpenSSL's name
    cipher_bits: int
    sni: str | None  # the name the client sent, None without SNI
    host: TlsHost | None  # the virtual host the handshake chose
    client_cert: dict  # decoded, {} without a certificate
    client_der: bytes | None
    verify: str  # SSL_CLIENT_VERIFY: NONE, SUCCESS
    chain_depth: int  # the depth of the verified chain's top certificate; -1 if not verified
    session_id: str
    resumed: bool
    name_based: bool = False  # the port has more than one TLS host (SSLStrictSNIVHostCheck)

    @property
    def vhost(self) -> VirtualHost | None:
        return self.host.vhost if self.host is not None else None


class TlsContexts:
    """The TLS contexts of one generation, by virtual host and by listening port."""

    def __init__(self, hosts: dict[int, TlsHost], by_port: dict[int, list[TlsHost]]) -> None:
        self._hosts = hosts  # id(VirtualHost) -> TlsHost
        self._by_port = by_port  # port -> the TLS hosts on it, the default (first) first
        self._listener: dict[int, ssl.SSLContext] = {}
        for port, hosts_here in by_port.items():
            self._listener[port] = self._listener_context(hosts_here)

    @classmethod
    def build(cls, config: ServerConfig) -> TlsContexts:
        """Load every TLS host's files; ConfigError (FILE:LINE: message) for a bad one.

        The last configuration's contexts are kept: the CLI builds them when it loads the
        configuration (so -t and a graceful restart check the files), and the children forked
        from it find them here, sharing one set of session-ticket keys per generation."""
        global _last
        if _last is not None and _last[0] is config:
            return _last[1]
        vhosts = config.vhosts or (config.main,)
        hosts: dict[int, TlsHost] = {}
        for vhost in vhosts:
            if vhost.ssl is not None:
                hosts[id(vhost)] = _build_host(vhost, vhost.ssl)
        by_port: dict[int, list[TlsHost]] = {}
        for port in dict.fromkeys(a.port for a in config.listeners):
            here = [v for v in vhosts if _on_port(v, port)]
            if here and id(here[0]) in hosts:  # the port's default host decides (reference 1.2)
                by_port[port] = [hosts[id(v)] for v in here if id(v) in hosts]
        contexts = cls(hosts, by_port)
        _last = (config, contexts)
        return contexts

    def __bool__(self) -> bool:
        return bool(self._listener)

    def host(self, vhost: VirtualHost) -> TlsHost | None:
        return self._hosts.get(id(vhost))

    def for_listener(self, where: Any) -> ssl.SSLContext | None:
        """The server context for a listening socket, ListenAddress, (host, port) or port;
        None for a plain-HTTP port."""
        if isinstance(where, int):
            port = where
        elif isinstance(where, ListenAddress):
            port = where.port
        elif isinstance(where, tuple):
            port = where[1]
        else:
            port = where.getsockname()[1]
        return self._listener.get(port)

    def _listener_context(self, hosts: list[TlsHost]) -> ssl.SSLContext:
        """The default host's context, with the SNI callback that picks a name-based host.

        A context of its own (not the host's), so setting the callback leaves the hosts'
        contexts as they are: the callback switches the connection to one of them."""
        default = hosts[0]
        context = _context(default.settings, default.vhost)
        names = [(h, _names(h.vhost)) for h in hosts]
        verifying = [h for h in hosts if h.settings.verify_client != "none"]
        if verifying:
            # OpenSSL keeps the first context's verify mode when SNI switches contexts, so
            # the port asks for what its hosts need and every context on it knows their CAs;
            # client_refusal() then applies each host's own SSLVerifyClient (docs/tls.md).
            every = all(h.settings.verify_client == "require" for h in hosts)
            for ctx in (context, *(h.context for h in hosts)):
                for h in verifying:
                    _load_client_cas(ctx, h.settings, verify=False)
                ctx.verify_mode = ssl.CERT_REQUIRED if every else ssl.CERT_OPTIONAL
        # SSLVerifyDepth in the handshake, as mod_ssl refuses (no session for a refused client):
        # the port's, where its hosts all verify with one depth; else each connection gets its
        # host's once SNI chose it. Depth 0, which OpenSSL cannot say, and a Python where this
        # cannot be done are left to client_refusal(), after the handshake.
        depths = {h.settings.verify_depth for h in verifying}
        per_connection: dict[int, tuple[int, int]] = {}  # id(host): (depth, its SSL_CTX)
        if len(verifying) == len(hosts) and len(depths) == 1 and min(depths) >= 1:
            set_verify_depth(context, min(depths) - 1)
        else:
            for h in (h for h in verifying if h.settings.verify_depth >= 1):
                settable = connection_depth_settable(context if h is default else h.context)
                if settable is not None:
                    per_connection[id(h)] = (h.settings.verify_depth - 1, settable)

        def choose(conn: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            chosen = default
            if server_name:
                chosen = _match(names, server_name.lower().rstrip(".")) or default
            conn.mpmd_host = chosen
            conn.mpmd_sni = server_name
            conn.mpmd_name_based = len(hosts) > 1
            if chosen is not default:
                conn.context = chosen.context
            if id(chosen) in per_connection:
                set_connection_depth(conn, *per_connection[id(chosen)])

        context.sni_callback = choose
        return context


def _on_port(vhost: VirtualHost, port: int) -> bool:
    """The router's rule: a host without addresses, `*`, `_default_` or `host:*` is on every
    port; `addr:port` on that port."""
    if not vhost.addresses:
        return True
    for address in vhost.addresses:
        if address.startswith("["):
            _, _, rest = address.partition("]")
            text = rest[1:] if rest.startswith(":") else ""
        else:
            text = address.partition(":")[2] if address.count(":") == 1 else ""
        if not text.isdigit() or int(text) == port:
            return True
    return False


def _names(vhost: VirtualHost) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """ServerName, the exact ServerAlias names, the wildcard ones (lower case)."""
    aliases = tuple(host_name(a) for a in vhost.server_aliases)
    return (
        host_name(vhost.server_name),
        tuple(a for a in aliases if not any(c in a for c in "*?[")),
        tuple(a for a in aliases if any(c in a for c in "*?[")),
    )


def _match(names: list[tuple[TlsHost, tuple]], name: str) -> TlsHost | None:
    """mod_ssl's ssl_find_vhost order: ServerName, then ServerAlias, then wildcard aliases."""
    for step in range(3):
        for host, (server_name, exact, wild) in names:
            if step == 0 and name == server_name:
                return host
            if step == 1 and name in exact:
                return host
            if step == 2 and any(fnmatchcase(name, pattern) for pattern in wild):
                return host
    return None


def host_matches(vhost: VirtualHost, name: str) -> bool:
    """Whether `name` names `vhost` by the SNI rules (for the Host-versus-SNI check)."""
    server_name, exact, wild = _names(vhost)
    name = host_name(name)
    return name == server_name or name in exact or any(fnmatchcase(name, p) for p in wild)


# -- building a host's context ----------------------------------------------------------------


def _fail(settings: SslSettings, name: str, message: str) -> ConfigError:
    where = settings.line_of(name) or settings.line_of("SSLCertificateFile")
    file, _, line = where.rpartition(":")
    return ConfigError(file, int(line) if line.isdigit() else 0, message)


def _context(settings: SslSettings, vhost: VirtualHost) -> ssl.SSLContext:
    """A server context from the settings; raises ConfigError for what it cannot load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    offered = sorted(settings.protocols)
    context.minimum_version = _VERSIONS[offered[0]]
    context.maximum_version = _VERSIONS[offered[-1]]
    try:
        context.set_ciphers(settings.cipher_suite or DEFAULT_CIPHERS)
    except ssl.SSLError:
        raise _fail(settings, "SSLCipherSuite", "AH01898: Unable to configure permitted "
                    f"SSL ciphers ({settings.cipher_suite})") from None  # fmt: skip
    if settings.cipher_suite_tls13:
        unknown = set(settings.cipher_suite_tls13.split(":")) - TLS13_SUITES
        if unknown:
            raise _fail(settings, "SSLCipherSuite TLSv1.3", "AH02894: Unable to configure "
                        f"permitted TLSv1.3 ciphers ({', '.join(sorted(unknown))})")  # fmt: skip
        if not set_tls13_suites(context, settings.cipher_suite_tls13):
            raise _fail(settings, "SSLCipherSuite TLSv1.3", "MP00236: SSLCipherSuite TLSv1.3 "
                        "cannot be applied: this Python's ssl module does not reach OpenSSL's "
                        "SSL_CTX_set_ciphersuites (docs/tls.md)")  # fmt: skip
    if settings.honor_cipher_order:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:  # Python sets it on every context; mod_ssl's default is the client's order
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if not settings.session_tickets:
        context.options |= ssl.OP_NO_TICKET
    context.set_alpn_protocols(list(ALPN))
    _load_certificates(context, settings, vhost)
    if settings.verify_client != "none":
        _load_client_cas(context, settings)
    return context


def _load_certificates(context: ssl.SSLContext, settings: SslSettings, vhost: VirtualHost) -> None:
    chain = _read(settings, "SSLCertificateChainFile", settings.chain_file)
    for cert, key in zip_longest(settings.certificate_files, settings.key_files):
        if cert is None:
            raise _fail(settings, "SSLCertificateKeyFile", "SSLCertificateKeyFile without a "
                        "SSLCertificateFile before it")  # fmt: skip
        pem = _read(settings, "SSLCertificateFile", cert)
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise _fail(settings, "SSLCertificateFile", f"SSLCertificateFile: '{cert}' holds no "
                        "PEM certificate")  # fmt: skip
        if key is not None:
            _read(settings, "SSLCertificateKeyFile", key)
        where = "SSLCertificateKeyFile" if key is not None else "SSLCertificateFile"
        try:
            if chain:
                with _memory_file(pem.rstrip("\n") + "\n" + chain) as joined:
                    context.load_cert_chain(joined, key or cert, password=_no_passphrase)
            else:
                context.load_cert_chain(cert, key or cert, password=_no_passphrase)
        except _Encrypted:
            raise _fail(settings, where, f"MP00233: the private key in '{key or cert}' is "
                        "protected by a passphrase, which mpmd cannot ask for: store it "
                        "unencrypted (openssl pkey -in KEY -out KEY.plain)") from None  # fmt: skip
        except ssl.SSLError as error:
            if "KEY_VALUES_MISMATCH" in str(error):
                name = f"{vhost.server_name}:{vhost.port}"
                raise _fail(settings, where, f"AH02565: Certificate and private key {name} "
                            f"from {cert} and {key or cert} do not match") from None  # fmt: skip
            if "CERT" in str(error).upper() and "KEY" not in str(error).upper():
                raise _fail(settings, "SSLCertificateFile", f"SSLCertificateFile: '{cert}' "
                            f"cannot be used: {error.reason or error}") from None  # fmt: skip
            raise _fail(settings, where, f"AH02564: Failed to configure private key "
                        f"{key or cert}: {error.reason or error}") from None  # fmt: skip


def _load_client_cas(context: ssl.SSLContext, settings: SslSettings, verify: bool = True) -> None:
    if settings.ca_file is None and settings.ca_path is None:
        raise _fail(settings, "SSLVerifyClient", "MP00234: SSLVerifyClient "
                    f"{settings.verify_client} needs SSLCACertificateFile or "
                    "SSLCACertificatePath")  # fmt: skip
    if verify:
        context.verify_mode = _VERIFY[settings.verify_client]
    if settings.ca_file is not None:
        _read(settings, "SSLCACertificateFile", settings.ca_file)
        try:
            context.load_verify_locations(cafile=settings.ca_file)
        except ssl.SSLError as error:
            raise _fail(settings, "SSLCACertificateFile", "SSLCACertificateFile: "
                        f"'{settings.ca_file}' cannot be used: {error.reason or error}") from None  # fmt: skip
    if settings.ca_path is not None:
        if not os.path.isdir(settings.ca_path):
            raise _fail(settings, "SSLCACertificatePath", "SSLCACertificatePath: directory "
                        f"'{settings.ca_path}' does not exist")  # fmt: skip
        context.load_verify_locations(capath=settings.ca_path)


def _read(settings: SslSettings, name: str, path: str | None) -> str:
    """A file's text, or ConfigError worded as Apache's ssl_cmd_check_file."""
    if path is None:
        return ""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    except OSError as error:
        raise _fail(settings, name, f"{name}: file '{path}' cannot be read: "
                    f"{error.strerror}") from None  # fmt: skip
    if not text.strip():
        raise _fail(settings, name, f"{name}: file '{path}' does not exist or is empty")
    return text


class _memory_file:
    """A PEM held in memory under a path OpenSSL can open (/proc/self/fd/N), no disk."""

    def __init__(self, text: str) -> None:
        self.fd = os.memfd_create("mpmd-chain")
        os.write(self.fd, text.encode("ascii", "replace"))

    def __enter__(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)


def _build_host(vhost: VirtualHost, settings: SslSettings) -> TlsHost:
    context = _context(settings, vhost)
    pem = _read(settings, "SSLCertificateFile", settings.certificate_files[0])
    start = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    leaf = pem[start:end] + "\n"
    with _memory_file(leaf) as path:
        try:
            decoded = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
        except (ssl.SSLError, AttributeError):
            decoded = {}
    issuers = ca_issuers(settings) if settings.verify_client != "none" else {}
    return TlsHost(vhost, settings, context, decoded, leaf, issuers)


# -- a finished handshake ----------------------------------------------------------------------


def tls_info(conn: ssl.SSLSocket | ssl.SSLObject) -> TlsInfo:
    """Read what the handshake established (both ssl.SSLSocket and ssl.SSLObject)."""
    name, _, bits = conn.cipher() or ("", "", 0)
    host = getattr(conn, "mpmd_host", None)
    der = conn.getpeercert(binary_form=True)
    if host is not None and host.settings.verify_client == "none":
        der = None  # asked for by another host on the port: not this host's business
    cert = (conn.getpeercert() or {}) if der else {}
    # SSL_SESSION_ID only where +StdEnvVars can show it: CPython 3.11's `.session` getter
    # leaks about 1 KiB per call (measured: RSS +5 MiB per 5,000 handshakes that read it)
    wanted = host is None or "StdEnvVars" in host.settings.options
    session = conn.session if wanted else None
    return TlsInfo(
        protocol=conn.version() or "",
        cipher=name,
        cipher_bits=bits or 0,
        sni=getattr(conn, "mpmd_sni", None),
        host=host,
        client_cert=cert,
        client_der=der,
        verify="SUCCESS" if der else "NONE",
        chain_depth=chain_depth(conn, cert, host.ca_issuers if host else {}) if der else -1,
        session_id=session.id.hex() if session is not None else "",
        resumed=conn.session_reused,
        name_based=getattr(conn, "mpmd_name_based", False),
    )


# What two hosts must share for a request to go to the other one than the handshake chose
# (mod_ssl's ssl_server_compatible); the rest of SslSettings may differ.
_COMPATIBLE = ("protocols", "verify_client", "verify_depth", "ca_file", "ca_path",
               "cipher_suite", "cipher_suite_tls13", "certificate_files", "key_files")  # fmt: skip
SNI_REQUIRED = (
    "You don't have permission to access this resource.Reason: The client software did not "
    "provide a hostname using Server Name Indication (SNI), which is required to access this "
    "server.<br />\n"
)
MISDIRECTED = (
    "The client needs a new connection for this request as the requested host name does not "
    "match the Server Name Indication (SNI) in use for this connection."
)


def sni_refusal(
    info: TlsInfo, host_header: str | None, vhost: VirtualHost, request_line: str
) -> tuple[str, HttpError] | None:
    """mod_ssl's ssl_hook_ReadReq (reference 1.2): the request's host against the handshake's.
    Returns (log level, the error to answer) or None when the request may be served."""
    chosen = info.vhost
    if info.sni:
        if not host_header:
            message = (f"AH02031: Hostname {info.sni} provided via SNI, but no hostname "
                       "provided in HTTP request")  # fmt: skip
            return "error", HttpError(400, message, request_line=request_line)
        if vhost is not chosen and not _compatible(vhost.ssl, chosen.ssl if chosen else None):
            message = (f"AH02032: Hostname {info.sni} provided via SNI and hostname "
                       f"{host_name(host_header)} provided via HTTP have no compatible SSL "
                       "setup")  # fmt: skip
            return "error", HttpError(421, message, request_line=request_line, detail=MISDIRECTED)
        return None
    strict = (vhost.ssl is not None and vhost.ssl.strict_sni) or (
        chosen is not None and chosen.ssl is not None and chosen.ssl.strict_sni
    )
    if info.name_based and strict:
        message = "AH02033: No hostname was provided via SNI for a name based virtual host"
        return "info", HttpError(403, message, request_line=request_line, detail=SNI_REQUIRED)
    return None


def _compatible(a: SslSettings | None, b: SslSettings | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(getattr(a, name) == getattr(b, name) for name in _COMPATIBLE)


# Apache's answer to plain HTTP on a TLS port (reference 1.5), logged as its injected request.
PLAIN_HTTP_REQUEST_LINE = "GET / HTTP/1.0"
PLAIN_HTTP_DETAIL = (
    "Your browser sent a request that this server could not understand.<br />\n"
    "Reason: You're speaking plain HTTP to an SSL-enabled server port.<br />\n"
    " Instead use the HTTPS scheme to access this URL, please.<br />\n"
)


def plain_http_response() -> tuple[bytes, bytes]:
    """(head, body) of that 400, to be written in clear past the TLS layer; then close."""
    body = error_body(400, PLAIN_HTTP_DETAIL)
    head = build_head(
        "HTTP/1.1",
        "400 Bad Request",
        [("Content-Type", "text/html; charset=iso-8859-1")],
        content_length=len(body),
        chunked=False,
        keep_alive=False,
    )
    return head, body


def handshake_timeout(settings: HttpSettings) -> float:
    """Timeout, or RequestReadTimeout handshake=N when it is set and shorter."""
    stage = settings.handshake_read_timeout.timeout
    return min(settings.timeout, stage) if stage > 0 else settings.timeout


def rfc2253(name: tuple) -> str:
    """A decoded certificate name as RFC 2253 text: most specific first, escaped."""
    parts = []
    for rdn in reversed(name):
        parts.append("+".join(f"{_DN_TAGS.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(parts)


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if out[:1] in ("#", " "):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def _cert_vars(prefix: str, cert: dict) -> dict[str, str]:
    """SSL_{CLIENT,SERVER}_* from a decoded certificate (reference 1.3)."""
    if not cert:
        return {}
    env = {
        f"{prefix}_M_VERSION": str(cert.get("version", "")),
        f"{prefix}_M_SERIAL": cert.get("serialNumber", ""),
        f"{prefix}_V_START": cert.get("notBefore", ""),
        f"{prefix}_V_END": cert.get("notAfter", ""),
        f"{prefix}_S_DN": rfc2253(cert.get("subject", ())),
        f"{prefix}_I_DN": rfc2253(cert.get("issuer", ())),
    }
    if prefix == "SSL_CLIENT" and cert.get("notAfter"):
        left = ssl.cert_time_to_seconds(cert["notAfter"]) - time.time()
        env["SSL_CLIENT_V_REMAIN"] = str(max(0, int(left // 86400)))
    for part in ("subject", "issuer"):
        letter = "S" if part == "subject" else "I"
        seen: dict[str, int] = {}
        for rdn in cert.get(part, ()):
            for key, value in rdn:
                tag = _ENV_TAGS.get(_DN_TAGS.get(key, ""))
                if tag is None:
                    continue
                n = seen.get(tag, 0)
                seen[tag] = n + 1
                env[f"{prefix}_{letter}_DN_{tag}" + (f"_{n}" if n else "")] = value
    counts: dict[str, int] = {}
    for kind, value in cert.get("subjectAltName", ()):
        label = {"DNS": "DNS", "email": "Email"}.get(kind)
        if label:
            n = counts.get(label, 0)
            counts[label] = n + 1
            env[f"{prefix}_SAN_{label}_{n}"] = value
    return env


def ssl_environ(info: TlsInfo, options: frozenset[str]) -> dict[str, str]:
    """HTTPS=on and SSL_TLS_SNI always; +StdEnvVars the SSL_* variables; +ExportCertData the
    PEMs (reference 1.3). Empty values are left out, as mod_ssl does (SSL_CLIENT_CERT is the
    exception: set even when empty)."""
    env = {"HTTPS": "on"}
    if info.sni:
        env["SSL_TLS_SNI"] = info.sni
    if "StdEnvVars" in options:
        env.update(standard_vars(info))
    if "ExportCertData" in options:
        env["SSL_SERVER_CERT"] = info.host.server_pem if info.host is not None else ""
        der = info.client_der
        env["SSL_CLIENT_CERT"] = ssl.DER_cert_to_PEM_cert(der) if der else ""
    return {k: v for k, v in env.items() if v or k == "SSL_CLIENT_CERT"}


def ssl_variable(info: TlsInfo, name: str) -> str | None:
    """One SSL_* variable by name, as %{NAME}x looks it up (no SSLOptions needed)."""
    if name == "SSL_TLS_SNI":
        return info.sni
    if name in ("SSL_SERVER_CERT", "SSL_CLIENT_CERT"):
        return ssl_environ(info, frozenset({"ExportCertData"})).get(name)
    return standard_vars(info).get(name)


def standard_vars(info: TlsInfo) -> dict[str, str]:
    """The +StdEnvVars set (also what %{SSL_*}x looks up in LogFormat)."""
    env = {
        "SSL_VERSION_INTERFACE": f"mpmd/{__version__}",
        "SSL_VERSION_LIBRARY": LIBRARY,
        "SSL_PROTOCOL": info.protocol,
        "SSL_COMPRESS_METHOD": "NULL",
        "SSL_CIPHER": info.cipher,
        "SSL_CIPHER_EXPORT": "true" if info.cipher_bits < 56 else "false",
        "SSL_CIPHER_USEKEYSIZE": str(info.cipher_bits),
        "SSL_CIPHER_ALGKEYSIZE": str(info.cipher_bits),
        "SSL_CLIENT_VERIFY": info.verify,
        "SSL_SESSION_ID": info.session_id,
        "SSL_SESSION_RESUMED": "Resumed" if info.resumed else "Initial",
    }
    env.update(_cert_vars("SSL_CLIENT", info.client_cert))
    if info.host is not None:
        env.update(_cert_vars("SSL_SERVER", info.host.server_cert))
    return env
