"""The parsed mod_ssl directives → each VirtualHost's SslSettings (None for plain HTTP).

config/build.py checks every directive's context and arity, then calls build_ssl with the
main server's scope and the <VirtualHost> scopes. Merging follows mod_ssl's
ssl_config_server_merge: a host's own value wins, else the main server's, else the default;
SSLOptions with every word prefixed (+/-) adds to the main server's. This module reads no
file: http/tls.py loads the certificates (and reports their errors with the FILE:LINE kept in
SslSettings.where).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mpmd.config.model import SslSettings
from mpmd.config.syntax import ConfigError

# Apache appends this to every TLS <= 1.2 cipher list it is given (ssl_cmd_SSLCipherSuite).
CIPHER_SUFFIX = ":!aNULL:!eNULL:!EXP"
MODERN = frozenset({"TLSv1.2", "TLSv1.3"})  # what mpmd offers at most (docs/tls.md)
_OLD = frozenset({"tlsv1", "tlsv1.1"})


@dataclass(frozen=True, slots=True)
class SslBuild:
    main: SslSettings | None
    vhosts: tuple[SslSettings | None, ...]
    warnings: tuple[str, ...]


class _Merged:
    """A host's view of the SSL directives: its own entries, else the main server's."""

    def __init__(self, scope: Any, main: Any | None) -> None:
        self.scope = scope
        self.main = main

    def entries(self, name: str) -> list[tuple[Any, Any]]:
        own = self.scope.seen.get(name)
        if own:
            return own
        return self.main.seen.get(name, []) if self.main is not None else []

    def last(self, name: str) -> tuple[Any, Any] | None:
        entries = self.entries(name)
        return entries[-1] if entries else None


def build_ssl(
    main: Any, vhosts: Sequence[Any], path: Callable[[str], str], default: Callable[[str], Any]
) -> SslBuild:
    """The SslSettings of the main server and of each <VirtualHost> scope (build.py's _Scope)."""
    warnings: list[str] = []
    main_ssl = _settings(_Merged(main, None), path, default, warnings, "main server")
    hosts = tuple(
        _settings(_Merged(scope, main), path, default, warnings, _host_label(scope))
        for scope in vhosts
    )
    engine = main.seen.get("SSLEngine")
    if vhosts and engine and engine[-1][1] == "on":
        warnings.append(f"{engine[-1][0].where}: AH02569: Illegal attempt to re-initialise "
                        "SSL for server (SSLEngine On should go in the VirtualHost, not in "
                        "global scope.)")  # fmt: skip
    return SslBuild(main_ssl, hosts, tuple(dict.fromkeys(warnings)))


def _host_label(scope: Any) -> str:
    names = scope.seen.get("ServerName")
    return names[-1][1] if names else " ".join(scope.node.args)


def _settings(
    m: _Merged,
    path: Callable[[str], str],
    default: Callable[[str], Any],
    warnings: list[str],
    label: str,
) -> SslSettings | None:
    where: dict[str, str] = {}

    def value(name: str) -> Any:
        entry = m.last(name)
        if entry is None:
            return default(name)
        where[name] = entry[0].where
        return entry[1]

    def file(name: str) -> str | None:
        text = value(name)
        return path(text) if text else None

    engine = value("SSLEngine")
    if engine == "optional":
        node = m.last("SSLEngine")[0]  # type: ignore[index]
        warnings.append(f"{node.where}: MP00230: SSLEngine optional (RFC 2817 upgrade) is not "
                        "implemented by mpmd; this host serves plain HTTP")  # fmt: skip
    if engine != "on":
        return None
    certs = m.entries("SSLCertificateFile")
    keys = m.entries("SSLCertificateKeyFile")
    if not certs:
        node = m.scope.node if m.scope.node is not None else m.last("SSLEngine")[0]  # type: ignore[index]
        raise ConfigError(node.file, node.line, "AH02572: Failed to configure at least one "
                          f"certificate and key for {label}")  # fmt: skip
    where["SSLCertificateFile"] = certs[0][0].where
    if keys:
        where["SSLCertificateKeyFile"] = keys[0][0].where
    protocols, overriding = value("SSLProtocol")
    node = m.last("SSLProtocol")
    if node is not None:
        for word in overriding:
            warnings.append(f"{node[0].where}: AH02532: SSLProtocol: Protocol '{word}' "
                            "overrides already set parameter(s). Check if a +/- prefix is "
                            "missing.")  # fmt: skip
        old = [w for w in node[0].args if w[:1] != "-" and w.lstrip("+").lower() in _OLD]
        if old:
            warnings.append(f"{node[0].where}: MP00231: SSLProtocol: mpmd offers nothing below "
                            "TLSv1.2 (OpenSSL's security level refuses TLSv1 and TLSv1.1)")  # fmt: skip
    offered = protocols & MODERN
    if not offered:
        where_ = node[0] if node is not None else m.last("SSLEngine")[0]  # type: ignore[index]
        raise ConfigError(where_.file, where_.line, "SSLProtocol: no protocol left to offer "
                          "(mpmd offers TLSv1.2 and TLSv1.3)")  # fmt: skip
    suites = {"SSL": None, "TLSv1.3": None}
    for node_, (kind, spec) in m.entries("SSLCipherSuite"):
        suites[kind] = spec
        where["SSLCipherSuite" if kind == "SSL" else "SSLCipherSuite TLSv1.3"] = node_.where
    return SslSettings(
        certificate_files=tuple(path(v) for _, v in certs),
        key_files=tuple(path(v) for _, v in keys),
        chain_file=file("SSLCertificateChainFile"),
        ca_file=file("SSLCACertificateFile"),
        ca_path=file("SSLCACertificatePath"),
        verify_client=value("SSLVerifyClient"),
        verify_depth=value("SSLVerifyDepth"),
        protocols=frozenset(offered),
        cipher_suite=suites["SSL"] + CIPHER_SUFFIX if suites["SSL"] else "",
        cipher_suite_tls13=suites["TLSv1.3"],
        honor_cipher_order=value("SSLHonorCipherOrder"),
        session_tickets=value("SSLSessionTickets"),
        session_cache=m.main.last("SSLSessionCache", default("SSLSessionCache"))
        if m.main is not None
        else m.scope.last("SSLSessionCache", default("SSLSessionCache")),
        options=_options(m),
        strict_sni=value("SSLStrictSNIVHostCheck"),
        where=tuple(where.items()),
    )


def _options(m: _Merged) -> frozenset[str]:
    """SSLOptions merged as mod_ssl does: all words prefixed → added to the inherited set."""
    result: frozenset[str] = frozenset()
    layers = [m.main, m.scope] if m.main is not None else [m.scope]
    for layer in layers:
        for parsed in layer.all("SSLOptions"):
            if any(action == "" for action, _ in parsed):
                result = frozenset()
            for action, option in parsed:
                result = result - {option} if action == "-" else result | {option}
    return result
