"""TLS: mod_ssl's directives (reference edge-and-asgi 1.1), per virtual host.

config/ssl.py merges them into a VirtualHost's SslSettings; http/tls.py turns those into
OpenSSL contexts. Where mpmd cannot do what mod_ssl does through Python's `ssl` module (a
shared session cache, TLS 1.3 cipher suites, the verify depth) docs/tls.md says so.
"""

from __future__ import annotations

from mpmd.config.declaration import FLAG, ITERATE, SV, SVD, TAKE1, TAKE12, Directive, S
from mpmd.config.validators import (
    v_flag,
    v_ssl_cipher_suite,
    v_ssl_engine,
    v_ssl_options,
    v_ssl_protocol,
    v_ssl_session_cache,
    v_ssl_verify_client,
    v_ssl_verify_depth,
    v_string,
)

GROUP = "ssl"
TITLE = "TLS (mod_ssl)"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="SSLEngine",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="on|off|optional",
        default="off",
        doc="SSL switch for the protocol engine (`optional`, RFC 2817's upgrade, serves plain "
        "HTTP in mpmd)",
        validate=v_ssl_engine,
    ),
    Directive(
        name="SSLCertificateFile",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="path",
        default=None,
        doc="SSL Server Certificate file (PEM: the leaf, then its intermediates)",
        validate=v_string,
        repeatable=True,
    ),
    Directive(
        name="SSLCertificateKeyFile",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="path",
        default=None,
        doc="SSL Server Private Key file (PEM, unencrypted; may be omitted if the key is in the "
        "certificate file)",
        validate=v_string,
        repeatable=True,
    ),
    Directive(
        name="SSLCertificateChainFile",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="path",
        default=None,
        doc="SSL Server CA Certificate Chain file (deprecated: append the chain to "
        "SSLCertificateFile)",
        validate=v_string,
    ),
    Directive(
        name="SSLCACertificateFile",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="path",
        default=None,
        doc="SSL CA Certificate file (PEM) for client authentication",
        validate=v_string,
    ),
    Directive(
        name="SSLCACertificatePath",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="directory",
        default=None,
        doc="SSL CA Certificate path (hash.N links) for client authentication",
        validate=v_string,
    ),
    Directive(
        name="SSLVerifyClient",
        group=GROUP,
        contexts=SVD,
        syntax=TAKE1,
        usage="none|optional|require|optional_no_ca",
        default="none",
        doc="SSL Client verify type (per host in mpmd: a <Directory> value is ignored with a "
        "warning)",
        validate=v_ssl_verify_client,
    ),
    Directive(
        name="SSLVerifyDepth",
        group=GROUP,
        contexts=SVD,
        syntax=TAKE1,
        usage="number",
        default=1,
        doc="SSL Client verify depth (checked after the handshake, see docs/tls.md)",
        validate=v_ssl_verify_depth,
    ),
    Directive(
        name="SSLProtocol",
        group=GROUP,
        contexts=SV,
        syntax=ITERATE,
        usage="[+|-]protocol ...",
        default=(frozenset({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}), ()),
        default_doc="all -SSLv3 (mpmd offers nothing below TLSv1.2)",
        doc="Enable or disable various SSL protocols: SSLv3 TLSv1 TLSv1.1 TLSv1.2 TLSv1.3 all",
        validate=v_ssl_protocol,
    ),
    Directive(
        name="SSLCipherSuite",
        group=GROUP,
        contexts=SV,
        syntax=TAKE12,
        usage="[SSL|TLSv1.3] cipher-spec",
        default=None,
        default_doc="ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!aDSS",
        doc="Colon-delimited list of permitted SSL Ciphers (the TLSv1.3 form is checked but "
        "cannot be applied through Python's ssl: see docs/tls.md)",
        validate=v_ssl_cipher_suite,
        repeatable=True,
    ),
    Directive(
        name="SSLHonorCipherOrder",
        group=GROUP,
        contexts=SV,
        syntax=FLAG,
        usage="on|off",
        default=False,
        doc="Use the server's cipher ordering preference",
        validate=v_flag,
    ),
    Directive(
        name="SSLSessionTickets",
        group=GROUP,
        contexts=SV,
        syntax=FLAG,
        usage="on|off",
        default=True,
        doc="TLS Session Tickets (RFC 5077) support (keys are shared by a generation's children)",
        validate=v_flag,
    ),
    Directive(
        name="SSLSessionCache",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="none|nonenotnull|dbm:path|shmcb:path[(size)]|dc:...",
        default="none",
        doc="SSL Session Cache storage (accepted; each child keeps OpenSSL's own cache, see "
        "docs/tls.md)",
        validate=v_ssl_session_cache,
    ),
    Directive(
        name="SSLOptions",
        group=GROUP,
        contexts=SVD,
        syntax=ITERATE,
        usage="[+|-]option ...",
        default=None,
        doc="Set one or more options to configure the SSL engine: StdEnvVars, ExportCertData, "
        "StrictRequire (per host in mpmd: a <Directory> value is ignored with a warning)",
        validate=v_ssl_options,
        repeatable=True,
    ),
    Directive(
        name="SSLStrictSNIVHostCheck",
        group=GROUP,
        contexts=SV,
        syntax=FLAG,
        usage="on|off",
        default=False,
        doc="Strict SNI virtual host checking: refuse a client without SNI (403)",
        validate=v_flag,
    ),
)
