"""mod_ssl's directives: parsing, merging, the contexts they build, and `mpmd -t`'s refusals.

The handshakes here run over memory BIOs (ssl.SSLObject, as the event loop drives TLS), so
SNI selection and the SSL_* variables are checked without a server; test_tls_serve.py runs
the real one.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from mpmd.config.build import load_config
from mpmd.config.syntax import ConfigError
from mpmd.config.validators import DirectiveValueError, v_ssl_protocol
from mpmd.http import tls_openssl
from mpmd.http.tls import TlsContexts, host_matches, ssl_environ, tls_info
from mpmd.http.tls_verify import ca_issuers, client_refusal, handshake_failure
from tls_certs import encrypted_key, make_pki

CLI = "import sys; from mpmd.cli import main; sys.exit(main())"
ALL = {"SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}


def mpmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          timeout=30)  # fmt: skip


@pytest.mark.parametrize(
    ("words", "enabled", "overriding"),
    [
        (("all", "-SSLv3"), ALL - {"SSLv3"}, ()),
        (("all", "-SSLv3", "-TLSv1", "-TLSv1.1"), {"TLSv1.2", "TLSv1.3"}, ()),
        (("-all", "+TLSv1.3"), {"TLSv1.3"}, ()),
        (("TLSv1.2",), {"TLSv1.2"}, ()),
        (("+tlsv1.2", "+TLSV1.3"), {"TLSv1.2", "TLSv1.3"}, ()),
        (("all", "TLSv1.3"), {"TLSv1.3"}, ("TLSv1.3",)),  # AH02532: a missing +/-
        (("-SSLv2", "all"), ALL, ()),
    ],
)
def test_ssl_protocol_syntax(words, enabled, overriding) -> None:
    assert v_ssl_protocol("SSLProtocol", words) == (frozenset(enabled), overriding)


@pytest.mark.parametrize(
    ("words", "message"),
    [(("SSLv2",), "SSLProtocol: SSLv2 is no longer supported"),
     (("TLSv9",), "SSLProtocol: Illegal protocol 'TLSv9'")],
)  # fmt: skip
def test_ssl_protocol_refusals(words, message) -> None:
    with pytest.raises(DirectiveValueError, match=message):
        v_ssl_protocol("SSLProtocol", words)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _conf(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "httpd.conf"
    path.write_text("Listen 127.0.0.1:8443\nServerName main\n" + textwrap.dedent(body))
    return path


def _two_hosts(tmp_path: Path, pki) -> Path:
    a_crt, a_key = pki.server("a.test", "www.a.test")
    b_crt, b_key = pki.server("b.test", "*.b.test")
    return _conf(
        tmp_path,
        f"""\
        SSLOptions +StdEnvVars
        <VirtualHost *:8443>
          ServerName a.test
          ServerAlias www.a.test
          SSLEngine on
          SSLCertificateFile {a_crt}
          SSLCertificateKeyFile {a_key}
          SSLOptions +ExportCertData
        </VirtualHost>
        <VirtualHost *:8443>
          ServerName b.test
          ServerAlias *.b.test
          SSLEngine on
          SSLCertificateFile {b_crt}
          SSLCertificateKeyFile {b_key}
          SSLVerifyClient require
          SSLCACertificateFile {pki.ca_file}
          SSLOptions StdEnvVars
        </VirtualHost>
        """,
    )


def test_settings_merge_and_defaults(tmp_path, pki) -> None:
    config = load_config(str(_two_hosts(tmp_path, pki)))
    a, b = config.vhosts
    assert config.main.ssl is None
    assert a.ssl.options == {"StdEnvVars", "ExportCertData"}  # prefixed: added to the main's
    assert b.ssl.options == {"StdEnvVars"}  # a bare word replaces
    assert a.ssl.protocols == {"TLSv1.2", "TLSv1.3"}
    assert (a.ssl.verify_client, a.ssl.verify_depth, b.ssl.verify_client) == ("none", 1, "require")
    assert (a.ssl.session_tickets, a.ssl.honor_cipher_order, a.ssl.strict_sni) == (
        True,
        False,
        False,
    )
    assert a.ssl.line_of("SSLCertificateFile").endswith("httpd.conf:8")


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, sni: str | None, session=None
):
    """Both sides over memory BIOs (the client resuming `session`, if given); returns the
    server's SSLObject and the client's, which has read the server's session tickets."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni, session=session)
    done: set[str] = set()
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if name not in done:
                try:
                    side.do_handshake()
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
        c_in.write(s_out.read())
        s_in.write(c_out.read())
        if len(done) == 2:
            break
    client.write(b"x")  # TLS 1.3: the client's certificate reaches the server after its Finished
    s_in.write(c_out.read())
    assert server.read(1) == b"x"
    server.write(b"y")
    c_in.write(s_out.read())
    assert client.read(1) == b"y"
    return server, client


def _client(pki, *, verify: bool = True, cert: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert))
    return ctx


@pytest.mark.parametrize(
    ("sni", "expected"),
    [("a.test", "a.test"), ("WWW.A.TEST", "a.test"), ("b.test", "b.test"),
     ("x.b.test", "b.test"), (None, "a.test"), ("unknown.test", "a.test")],
)  # fmt: skip
def test_sni_picks_the_name_based_host(tmp_path, pki, sni, expected) -> None:
    config = load_config(str(_two_hosts(tmp_path, pki)))
    contexts = TlsContexts.build(config)
    assert contexts.for_listener(("127.0.0.1", 8443)) is not None
    assert contexts.for_listener(80) is None
    client_cert = pki.client("one@example.com", "Client One") if expected == "b.test" else None
    server, client = _handshake(
        contexts.for_listener(8443),
        _client(pki, verify=sni in ("a.test", "b.test"), cert=client_cert),
        sni,
    )
    info = tls_info(server)
    assert info.vhost.server_name == expected
    assert info.sni == sni
    assert client.selected_alpn_protocol() == "http/1.1"
    peer = client.getpeercert(binary_form=True)
    assert (
        ssl.DER_cert_to_PEM_cert(peer).strip()
        in Path(info.host.settings.certificate_files[0]).read_text()
    )


def test_client_certificate_variables(tmp_path, pki) -> None:
    contexts = TlsContexts.build(load_config(str(_two_hosts(tmp_path, pki))))
    cert = pki.client("one@example.com", "Client One")
    server, _ = _handshake(contexts.for_listener(8443), _client(pki, cert=cert), "b.test")
    info = tls_info(server)
    env = ssl_environ(info, info.host.settings.options)
    assert env["HTTPS"] == "on" and env["SSL_TLS_SNI"] == "b.test"
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"].startswith("CN=Client One,OU=Testing cert")
    assert env["SSL_CLIENT_S_DN_CN"] == "Client One"
    assert env["SSL_CLIENT_SAN_Email_0"] == "one@example.com"
    assert env["SSL_PROTOCOL"] == "TLSv1.3" and env["SSL_CIPHER"].startswith("TLS_")
    assert env["SSL_SESSION_RESUMED"] == "Initial"
    assert "SSL_CLIENT_CERT" not in env  # ExportCertData is a.test's only
    assert client_refusal(info) is None


def test_require_on_a_shared_port_refuses_a_client_without_certificate(tmp_path, pki) -> None:
    contexts = TlsContexts.build(load_config(str(_two_hosts(tmp_path, pki))))
    server, _ = _handshake(contexts.for_listener(8443), _client(pki), "b.test")
    level, ah, message = client_refusal(tls_info(server))
    assert (level, ah) == ("info", "MP00235") and "b.test has SSLVerifyClient require" in message
    server, _ = _handshake(contexts.for_listener(8443), _client(pki), "a.test")
    info = tls_info(server)
    assert client_refusal(info) is None
    env = ssl_environ(info, info.host.settings.options)
    assert env["SSL_CLIENT_VERIFY"] == "NONE" and env["SSL_CLIENT_CERT"] == ""
    assert env["SSL_SERVER_CERT"].startswith("-----BEGIN CERTIFICATE-----")
    assert host_matches(info.vhost, "www.a.test:8443") and not host_matches(info.vhost, "b.test")


def test_plain_vhost_means_no_tls(tmp_path) -> None:
    config = load_config(
        str(_conf(tmp_path, "<VirtualHost *:8443>\nServerName p\n</VirtualHost>\n"))
    )
    assert config.vhosts[0].ssl is None
    assert not TlsContexts.build(config)


# -- mpmd -t: FILE:LINE, exit 1, no traceback --------------------------------------------


def _host(crt: object, key: object = None, extra: str = "") -> str:
    lines = ["<VirtualHost *:8443>", "ServerName a.test", "SSLEngine on"]
    lines += [f"SSLCertificateFile {crt}"] if crt is not None else []
    lines += [f"SSLCertificateKeyFile {key}"] if key is not None else []
    return "\n".join([*lines, *extra.splitlines(), "</VirtualHost>", ""])


def _refusals(pki, root: Path) -> dict[str, tuple[str, int, str]]:
    """name -> (config body, line, message part)."""
    crt, key = pki.server("a.test")
    other_crt, other_key = pki.server("a.test", tag="-other")
    locked = encrypted_key(key, root / "locked.key")
    (root / "garbage.pem").write_text("not a certificate\n")
    (root / "empty.pem").write_text("")
    return {
        "missing-cert": (_host(root / "nope.crt", key), 6, "SSLCertificateFile: file '"),
        "empty-cert": (_host(root / "empty.pem", key), 6, "does not exist or is empty"),
        "garbage-cert": (_host(root / "garbage.pem", key), 6, "holds no PEM certificate"),
        "unreadable-key": (_host(crt, root), 7, "SSLCertificateKeyFile: file '"),
        "garbage-key": (_host(crt, root / "garbage.pem"), 7, "AH02564: Failed to configure"),
        "mismatch": (_host(crt, other_key), 7, "AH02565: Certificate and private key a.test:8443"),
        "passphrase": (_host(crt, locked), 7, "MP00233: the private key in"),
        "no-cert": (_host(None), 3, "AH02572: Failed to configure at least one certificate"),
        "cipher": (_host(crt, key, "SSLCipherSuite NOSUCHCIPHER"), 8, "AH01898:"),
        "tls13-suite": (_host(crt, key, "SSLCipherSuite TLSv1.3 TLS_FOO"), 8, "AH02894:"),
        "no-ca": (_host(crt, key, "SSLVerifyClient require"), 8, "MP00234:"),
        "protocol": (_host(crt, key, "SSLProtocol -all +TLSv1.1"), 8, "no protocol left"),
        "verify-word": (_host(crt, key, "SSLVerifyClient maybe"), 8, "Invalid argument 'maybe'"),
        "option": (_host(crt, key, "SSLOptions +Nope"), 8, "SSLOptions: Illegal option 'Nope'"),
        "chain": (_host(crt, key, f"SSLCertificateChainFile {root}/nope"), 8, "does not exist"),
        "other-cert": (_host(other_crt, key), 7, "AH02565:"),
    }


@pytest.mark.parametrize("case", [
    "missing-cert", "empty-cert", "garbage-cert", "unreadable-key", "garbage-key", "mismatch",
    "passphrase", "no-cert", "cipher", "tls13-suite", "no-ca", "protocol", "verify-word",
    "option", "chain", "other-cert"])  # fmt: skip
def test_mpmd_t_refuses_with_file_and_line(tmp_path, pki, case) -> None:
    body, line, message = _refusals(pki, tmp_path)[case]
    conf = tmp_path / "httpd.conf"
    conf.write_text("Listen 127.0.0.1:8443\n\n" + body)
    result = mpmd("-t", "-f", str(conf))
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith(f"{conf}:{line}: "), result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_mpmd_t_and_m_accept_a_tls_host(tmp_path, pki) -> None:
    crt, key = pki.server("a.test")
    conf = tmp_path / "httpd.conf"
    conf.write_text("LoadModule ssl_module modules/mod_ssl.so\nListen 127.0.0.1:8443\n"
                    "SSLSessionCache shmcb:/run/x(512000)\n"
                    + _host(crt, key, "SSLProtocol all -SSLv3"))  # fmt: skip
    result = mpmd("-t", "-f", str(conf))
    assert (result.returncode, result.stdout, result.stderr) == (0, "Syntax OK\n", "")
    assert " ssl_module (shared)" in mpmd("-M", "-f", str(conf)).stdout.splitlines()


def test_a_directory_value_warns(tmp_path, pki) -> None:
    crt, key = pki.server("a.test")
    extra = "<Directory /srv>\nSSLOptions +StdEnvVars\n</Directory>"
    config = load_config(str(_conf(tmp_path, _host(crt, key, extra))))
    assert any("MP00232" in w for w in config.warnings)


def test_load_config_keeps_the_error_type(tmp_path) -> None:
    with pytest.raises(ConfigError):
        load_config(str(_conf(tmp_path, _host(None))))


def test_the_docs_worked_example_loads(tmp_path, pki) -> None:
    """docs/tls.md's Let's Encrypt layout, with its paths pointed at test certificates."""
    text = (Path(__file__).parent.parent / "docs" / "tls.md").read_text()
    conf = re.search(r"```apache\n(.*?)```", text, re.S)[1]
    for name in ("www.example.org", "api.example.org"):
        crt, key = pki.server(name)
        conf = conf.replace(f"/etc/letsencrypt/live/{name}/fullchain.pem", str(crt))
        conf = conf.replace(f"/etc/letsencrypt/live/{name}/privkey.pem", str(key))
    path = tmp_path / "le.conf"
    path.write_text(conf.replace("Listen 80", "Listen 18080").replace("Listen 443", "Listen 18443"))
    result = mpmd("-t", "-f", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (0, "Syntax OK\n", "")


@pytest.mark.parametrize(
    ("depth", "via", "refused"),
    [(0, "ca", True), (1, "ca", False), (1, "intermediate", True), (2, "intermediate", False)],
)
def test_verify_depth_counts_the_chain_as_mod_ssl(
    tmp_path, pki, monkeypatch, depth, via, refused
) -> None:
    """SSLVerifyDepth N allows N CA certificates above the client's: 1 (the default) one the
    server trusts directly, so a certificate an intermediate CA issued needs 2 (AH02040).
    The check after the handshake, as where OpenSSL cannot be given the depth (depth 0, a
    Python without the ctypes route: set off here)."""
    monkeypatch.setattr(tls_openssl, "_FUNCTIONS", None)
    path = _two_hosts(tmp_path, pki)
    path.write_text(path.read_text().replace("SSLVerifyClient require", f"SSLVerifyDepth {depth}"
                                             "\nSSLVerifyClient require"))  # fmt: skip
    contexts = TlsContexts.build(load_config(str(path)))
    cert = pki.client("one@example.com", "Client One", intermediate=via == "intermediate")
    client_ctx = _client(pki, cert=cert)
    server, client = _handshake(contexts.for_listener(8443), client_ctx, "b.test")
    info = tls_info(server)
    assert info.chain_depth == (2 if via == "intermediate" else 1)
    refusal = client_refusal(info)
    # Resumed, the session has the certificate but no verified chain: the depth comes from
    # the certificate's issuer among b.test's CA certificates, and the verdict is the same.
    server, _ = _handshake(contexts.for_listener(8443), client_ctx, "b.test", client.session)
    resumed = tls_info(server)
    assert resumed.resumed and resumed.chain_depth == info.chain_depth
    assert client_refusal(resumed) == refusal
    if not refused:
        assert refusal is None
        return
    assert refusal == (
        "error",
        "AH02040",
        f"Certificate Verification: Certificate Chain too long (chain has {info.chain_depth} "
        f"certificates, but maximum allowed are only {depth})",
    )


def test_ca_issuers_reads_the_ca_file_and_the_hash_directory(tmp_path, pki) -> None:
    """SSLCACertificatePath's certificates count as the file's do; other files are skipped."""
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / "ca.pem").write_text(pki.ca_file.read_text())
    (folder / "README").write_text("not a certificate\n")
    settings = load_config(str(_two_hosts(tmp_path, pki))).vhosts[1].ssl  # b.test's
    assert settings.ca_file == str(pki.ca_file)
    [(subject, issuer)] = ca_issuers(settings).items()
    assert subject == issuer  # the root: self-signed
    assert ca_issuers(replace(settings, ca_file=None, ca_path=str(folder))) == {subject: issuer}


@pytest.mark.parametrize(
    ("suites", "honor", "chosen"),
    [
        ("TLS_CHACHA20_POLY1305_SHA256", "off", "TLS_CHACHA20_POLY1305_SHA256"),
        ("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "on", "TLS_AES_128_GCM_SHA256"),
        ("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", "off", "TLS_AES_256_GCM_SHA384"),
    ],
)
def test_tls13_suites_are_applied(tmp_path, pki, suites, honor, chosen) -> None:
    """SSLCipherSuite TLSv1.3 is what the context offers (the client's order first, the
    server's with SSLHonorCipherOrder on); without it OpenSSL's three AEAD suites."""
    crt, key = pki.server("a.test")
    extra = f"SSLCipherSuite TLSv1.3 {suites}\nSSLHonorCipherOrder {honor}"
    path = tmp_path / "httpd.conf"
    path.write_text("Listen 127.0.0.1:8443\n" + _host(crt, key, extra))
    context = TlsContexts.build(load_config(str(path))).for_listener(8443)
    offered = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.3"]
    assert offered == suites.split(":")
    server, _ = _handshake(context, _client(pki), "a.test")  # the client: OpenSSL's order
    assert server.cipher()[0] == chosen
    assert mpmd("-t", "-f", str(path)).returncode == 0


def test_tls13_suites_that_cannot_be_applied_are_a_config_error(tmp_path, pki, monkeypatch):
    """Where this Python's ssl does not reach SSL_CTX_set_ciphersuites: MP00236 at its line."""
    monkeypatch.setattr(tls_openssl, "_FUNCTIONS", None)
    crt, key = pki.server("a.test")
    path = tmp_path / "httpd.conf"
    path.write_text("Listen 127.0.0.1:8443\n" + _host(crt, key, "SSLCipherSuite TLSv1.3 "
                                                                "TLS_AES_128_GCM_SHA256"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"MP00236: SSLCipherSuite TLSv1\.3 cannot be applied"):
        TlsContexts.build(load_config(str(path)))


@pytest.mark.parametrize("port", ["one host", "hosts differ"])
@pytest.mark.parametrize(("depth", "via", "refused"), [(1, "ca", False), (1, "intermediate", True),
                                                       (2, "intermediate", False)])  # fmt: skip
def test_verify_depth_is_openssls_own(tmp_path, pki, port, depth, via, refused):
    """A host requiring a certificate: OpenSSL gets SSLVerifyDepth (minus one, its own count)
    and refuses a longer chain in the handshake; the failure is logged as mod_ssl's AH02040
    (handshake_failure), and no session is issued. Alone on its port, the port's context
    has the depth; beside a.test, which verifies nothing, the SNI callback gives it to the
    connection that chose b.test."""
    extra = f"SSLVerifyClient require\nSSLCACertificateFile {pki.ca_file}\nSSLVerifyDepth {depth}"
    if port == "one host":
        crt, key = pki.server("b.test")
        path = tmp_path / "httpd.conf"
        path.write_text("Listen 127.0.0.1:8443\n" + _host(crt, key, extra))
    else:
        path = _two_hosts(tmp_path, pki)
        path.write_text(path.read_text().replace("SSLVerifyClient require", extra))
    context = TlsContexts.build(load_config(str(path))).for_listener(8443)
    cert = pki.client("one@example.com", "Client One", intermediate=via == "intermediate")
    if not refused:
        server, _ = _handshake(context, _client(pki, cert=cert), "b.test")
        assert client_refusal(tls_info(server)) is None
        return
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = context.wrap_bio(s_in, s_out, server_side=True)
    client = _client(pki, cert=cert).wrap_bio(c_in, c_out, server_hostname="b.test")
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        for _ in range(4):
            for side in (client, server):
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
            c_in.write(s_out.read())
            s_in.write(c_out.read())
    assert caught.value.verify_code == 22  # X509_V_ERR_CERT_CHAIN_TOO_LONG
    assert handshake_failure(caught.value, server) == (
        "error",
        "AH02040",
        "Certificate Verification: Certificate Chain too long (chain has 2 certificates, but "
        "maximum allowed are only 1)",
    )
