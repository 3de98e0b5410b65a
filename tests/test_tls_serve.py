"""TLS served by the real server, per MPM: curl and Python's ssl client, SNI, mTLS, protocols,
plain HTTP on the TLS port, keep-alive and pipelining, a large file, a graceful restart that
swaps the certificate, and Debian's default-ssl.conf.

The event MPM's own TLS cases (handshakes and heads in its loop, slow clients, write
completion, the in-loop proxy) are in test_tls_event.py.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from server import Server, wait_for
from tls_certs import make_pki

MPMS = ["prefork", "worker", "event"]
CURL = shutil.which("curl")
DEBIAN_SSL_SITE = Path("/etc/apache2/sites-available/default-ssl.conf")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _hosts(pki, *, b_extra: str = "", a_extra: str = "") -> str:
    """Two name-based TLS hosts on every port (`*`), the app at /app on both."""
    a_crt, a_key = pki.server("a.test", "www.a.test")
    b_crt, b_key = pki.server("b.test")
    return f"""
        <VirtualHost *>
          ServerName a.test
          ServerAlias www.a.test
          SSLEngine on
          SSLCertificateFile {a_crt}
          SSLCertificateKeyFile {a_key}
          SSLOptions +StdEnvVars
          WSGIApp /app tlsapp:application
          {a_extra}
        </VirtualHost>
        <VirtualHost *>
          ServerName b.test
          SSLEngine on
          SSLCertificateFile {b_crt}
          SSLCertificateKeyFile {b_key}
          SSLOptions +StdEnvVars
          WSGIApp /app tlsapp:application
          {b_extra}
        </VirtualHost>
        """


def _client(pki, *, cert: Path | None = None, version: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if version is not None:
        tls = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
        ctx.minimum_version = ctx.maximum_version = tls
    if cert is not None:
        ctx.load_cert_chain(str(cert))
    return ctx


def _connect(port: int, ctx: ssl.SSLContext, sni: str | None) -> ssl.SSLSocket:
    if sni is None:
        ctx.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=sni)


class _Reader:
    """Responses read one after the other from one buffered stream (keep-alive, pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")

    def makefile(self, *_: object) -> object:
        return self

    def __getattr__(self, name: str) -> object:
        return getattr(self.file, name)

    def close(self) -> None:
        """HTTPResponse closes its stream after a body: the next response is on it too."""

    def response(self) -> tuple[int, dict[str, str], bytes]:
        resp = http.client.HTTPResponse(self)  # type: ignore[arg-type]
        resp.begin()
        return resp.status, dict(resp.getheaders()), resp.read()


def _get(sock: ssl.SSLSocket, path: str, host: str | None) -> tuple[int, dict, bytes]:
    host_line = f"Host: {host}\r\n" if host else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\n{host_line}\r\n".encode())
    return _Reader(sock).response()


def _environ(body: bytes) -> dict[str, str]:
    return json.loads(body)


def _curl(pki, port: int, name: str, path: str, *extra: str) -> subprocess.CompletedProcess:
    url = f"https://{name}:{port}{path}"
    args = [CURL, "-sS", "--cacert", str(pki.ca_file), "--resolve", f"{name}:{port}:127.0.0.1"]
    return subprocess.run([*args, *extra, url], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize("mpm", MPMS)
def test_curl_and_python_over_tls12_and_tls13(tmp_path, pki, mpm) -> None:
    log = tmp_path / "tls_log"
    config = f'CustomLog "{log}" "%{{SSL_PROTOCOL}}x %{{SSL_CIPHER}}x %{{HTTPS}}x %>s"\n'
    with Server(tmp_path, config + _hosts(pki), mpm=mpm) as server:
        for flags, protocol in ((("--tlsv1.2", "--tls-max", "1.2"), "TLSv1.2"),
                                (("--tlsv1.3",), "TLSv1.3")):  # fmt: skip
            result = _curl(pki, server.port, "a.test", "/app", *flags)
            assert result.returncode == 0, result.stderr
            env = _environ(result.stdout.encode())
            assert env["SSL_PROTOCOL"] == protocol and env["HTTPS"] == "on"
            assert env["wsgi.url_scheme"] == "https"
        for version in ("1.2", "1.3"):
            with _connect(server.port, _client(pki, version=version), "a.test") as sock:
                status, _, body = _get(sock, "/app", "a.test")
                assert status == 200
                assert _environ(body)["SSL_PROTOCOL"] == f"TLSv{version}"
                assert sock.version() == f"TLSv{version}"
                cipher = sock.cipher()[0]

        def tls_lines() -> list[str]:  # the readiness probe's plain-HTTP 400 logs "- - off"
            text = log.read_text() if log.exists() else ""
            return [line for line in text.splitlines() if not line.startswith("- ")]

        wait_for(lambda: len(tls_lines()) == 4)
        lines = tls_lines()
        assert lines[0].startswith("TLSv1.2 ") and lines[0].endswith(" on 200")
        assert lines[3] == f"TLSv1.3 {cipher} on 200"


@pytest.mark.parametrize("mpm", MPMS)
def test_sni_picks_the_host_and_its_certificate(tmp_path, pki, mpm) -> None:
    with Server(tmp_path, _hosts(pki), mpm=mpm) as server:
        for sni, name in (("a.test", "a.test"), ("www.a.test", "a.test"), ("b.test", "b.test")):
            with _connect(server.port, _client(pki), sni) as sock:
                leaf = ssl.DER_cert_to_PEM_cert(sock.getpeercert(binary_form=True)).strip()
                assert leaf in (pki.root / f"{name}.crt").read_text()
                assert sock.selected_alpn_protocol() in (None, "http/1.1")
                status, _, body = _get(sock, "/app", sni)
                assert status == 200
                env = _environ(body)
                assert (env["SERVER_NAME"], env["SSL_TLS_SNI"]) == (sni, sni)


@pytest.mark.parametrize("mpm", MPMS)
def test_no_sni_and_an_unknown_name_get_the_default_host(tmp_path, pki, mpm) -> None:
    with Server(tmp_path, _hosts(pki), mpm=mpm) as server:
        for sni in (None, "unknown.test"):
            ctx = _client(pki)
            ctx.check_hostname = False  # the default host's certificate names a.test
            with _connect(server.port, ctx, sni) as sock:
                leaf = ssl.DER_cert_to_PEM_cert(sock.getpeercert(binary_form=True)).strip()
                assert leaf in (pki.root / "a.test.crt").read_text()
                status, _, body = _get(sock, "/app", "a.test")
                assert status == 200  # no alert, no refusal (reference 1.2)
                assert "SSL_TLS_SNI" not in _environ(body) or sni is not None
        # SNI a.test, Host b.test: another certificate, no compatible setup -> 421
        with _connect(server.port, _client(pki), "a.test") as sock:
            status, headers, body = _get(sock, "/app", "b.test")
        assert (status, headers["Connection"]) == (421, "close")
        assert b"does not match the Server Name Indication (SNI)" in body
        # SNI given, no Host (HTTP/1.0) -> 400
        with _connect(server.port, _client(pki), "a.test") as sock:
            sock.sendall(b"GET /app HTTP/1.0\r\n\r\n")
            assert _Reader(sock).response()[0] == 400
        wait_for(lambda: "AH02031: Hostname a.test provided via SNI, but no hostname" in
                 server.log_text())  # fmt: skip
        assert "AH02032: Hostname a.test provided via SNI and hostname b.test" in server.log_text()


@pytest.mark.parametrize("mpm", MPMS)
def test_every_request_of_a_connection_is_checked_against_its_sni(tmp_path, pki, mpm) -> None:
    """The check a request passed is remembered for the connection's next requests to the
    same host (Session.sni_allowed), never for another host."""
    with Server(tmp_path, _hosts(pki), mpm=mpm) as server:
        with _connect(server.port, _client(pki), "a.test") as sock:
            for _ in range(2):
                assert _get(sock, "/app", "a.test")[0] == 200
            assert _get(sock, "/app", "www.a.test")[0] == 200  # a.test's alias: its vhost
            status, headers, _ = _get(sock, "/app", "b.test")
        assert (status, headers["Connection"]) == (421, "close")
        wait_for(lambda: "AH02032: Hostname a.test provided via SNI and hostname b.test" in
                 server.log_text())  # fmt: skip


@pytest.mark.parametrize("mpm", MPMS)
def test_strict_sni_refuses_a_client_without_sni(tmp_path, pki, mpm) -> None:
    config = _hosts(pki, a_extra="SSLStrictSNIVHostCheck on")
    with Server(tmp_path, config, mpm=mpm) as server:
        ctx = _client(pki)
        ctx.check_hostname = False
        with _connect(server.port, ctx, None) as sock:
            status, _, body = _get(sock, "/app", "a.test")
        assert status == 403
        assert b"did not provide a hostname using Server Name Indication (SNI)" in body
        with _connect(server.port, _client(pki), "a.test") as sock:
            assert _get(sock, "/app", "a.test")[0] == 200


@pytest.mark.parametrize("mpm", MPMS)
def test_mtls_require(tmp_path, pki, mpm) -> None:
    config = _hosts(pki, b_extra=f"SSLVerifyClient require\nSSLCACertificateFile {pki.ca_file}")
    cert = pki.client("one@example.com", "Client One")
    with Server(tmp_path, config, mpm=mpm) as server:
        with _connect(server.port, _client(pki, cert=cert), "b.test") as sock:
            status, _, body = _get(sock, "/app", "b.test")
        assert status == 200
        env = _environ(body)
        assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert env["SSL_CLIENT_S_DN"].startswith("CN=Client One,")
        assert env["SSL_CLIENT_S_DN_CN"] == "Client One"
        refused = (ssl.SSLError, ConnectionError, http.client.HTTPException)
        with pytest.raises(refused), _connect(server.port, _client(pki), "b.test") as sock:
            _get(sock, "/app", "b.test")
        with _connect(server.port, _client(pki), "a.test") as sock:  # a.test asks for none
            assert _environ(_get(sock, "/app", "a.test")[2])["SSL_CLIENT_VERIFY"] == "NONE"


@pytest.mark.parametrize("mpm", MPMS)
def test_verify_depth_refuses_a_longer_chain(tmp_path, pki, mpm) -> None:
    """Default SSLVerifyDepth 1: a certificate from an intermediate CA is refused with
    mod_ssl's AH02040; b.test's SSLVerifyDepth 2 lets the same certificate in."""
    verify = f"SSLVerifyClient require\nSSLCACertificateFile {pki.ca_file}"
    config = _hosts(pki, a_extra=verify, b_extra=verify + "\nSSLVerifyDepth 2")
    cert = pki.client("two@example.com", "Client Two", intermediate=True)
    with Server(tmp_path, config, mpm=mpm) as server:
        refused = (ssl.SSLError, ConnectionError, http.client.HTTPException)
        for version in ("1.2", "1.3"):
            ctx = _client(pki, cert=cert, version=version)
            with pytest.raises(refused), _connect(server.port, ctx, "a.test") as sock:
                _get(sock, "/app", "a.test")
        with _connect(server.port, _client(pki, cert=cert), "b.test") as sock:
            status, _, body = _get(sock, "/app", "b.test")
        assert status == 200
        assert _environ(body)["SSL_CLIENT_S_DN_CN"] == "Client Two"
        wait_for(lambda: server.log_text().count("AH02040: Certificate Verification: "
                 "Certificate Chain too long (chain has 2 certificates, but maximum allowed "
                 "are only 1)") == 2)  # fmt: skip


@pytest.mark.parametrize("mpm", MPMS)
def test_verify_depth_refuses_in_the_handshake_where_the_port_agrees(tmp_path, pki, mpm) -> None:
    """Every host of the port requires a certificate with one SSLVerifyDepth (the default 1):
    OpenSSL itself refuses a longer chain during the handshake, as mod_ssl does (AH02040),
    so the client never gets a session ticket (prefork and worker, checking after the
    handshake, had sent them). Its TLS 1.3 handshake ends on its side before the server's
    verdict, so the refusal reaches it on its first read: the alert (unknown CA), which the
    lingering close keeps from being lost to a reset while its request is still unread."""
    verify = f"SSLVerifyClient require\nSSLCACertificateFile {pki.ca_file}"
    config = _hosts(pki, a_extra=verify, b_extra=verify)
    deep = _client(pki, cert=pki.client("four@example.com", "Four", intermediate=True),
                   version="1.3")  # fmt: skip
    with Server(tmp_path, config, mpm=mpm) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with deep.wrap_socket(raw, server_hostname="a.test", do_handshake_on_connect=False) as sock:
            with pytest.raises((ssl.SSLError, ConnectionError)) as refused:
                sock.do_handshake()
                sock.sendall(b"GET /app HTTP/1.1\r\nHost: a.test\r\n\r\n")
                while sock.recv(65536):
                    pass
            assert sock.session is None or not sock.session.has_ticket
        assert getattr(refused.value, "reason", None) == "TLSV1_ALERT_UNKNOWN_CA", refused.value
        wait_for(lambda: "AH02040: Certificate Verification: Certificate Chain too long (chain "
                 "has 2 certificates, but maximum allowed are only 1)" in server.log_text())  # fmt: skip
        near = pki.client("five@example.com", "Five")
        with _connect(server.port, _client(pki, cert=near), "b.test") as sock:
            assert _get(sock, "/app", "b.test")[0] == 200


@pytest.mark.parametrize("depth", [1, 0])
@pytest.mark.parametrize("mpm", MPMS)
def test_a_refused_certificate_has_no_session_to_resume(tmp_path, pki, mpm, depth) -> None:
    """a.test requires a certificate, b.test none, so the port's hosts differ. At depth 1
    OpenSSL refuses the longer chain in the handshake (the SNI callback gave the connection
    a.test's depth), in every MPM: the alert (unknown CA), no session to resume. Depth 0,
    which OpenSSL cannot say, is checked after the handshake, and every MPM holds back the
    TLS 1.3 session tickets until the check passes: the refused client has none to resume
    (before, prefork and worker had sent them with the handshake, and it resumed)."""
    verify = f"SSLVerifyClient require\nSSLCACertificateFile {pki.ca_file}\nSSLVerifyDepth {depth}"
    config = _hosts(pki, a_extra=verify)
    cert = pki.client(f"d{depth}@example.com", "Deep", intermediate=depth == 1)
    ctx = _client(pki, cert=cert, version="1.3")
    request = b"GET /app HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    with Server(tmp_path, config, mpm=mpm) as server:
        session, resumed, errors = None, [], []
        for _ in range(2):
            answer = b""
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            with ctx.wrap_socket(raw, server_hostname="a.test", session=session) as sock:
                resumed.append(sock.session_reused)
                try:
                    sock.sendall(request)
                    while chunk := sock.recv(65536):
                        answer += chunk
                except (ssl.SSLError, ConnectionError) as error:
                    errors.append(getattr(error, "reason", None))
                session = sock.session
            assert not answer.startswith(b"HTTP/1.1 200"), answer
        assert resumed == [False, False]
        if depth == 1:
            assert errors == ["TLSV1_ALERT_UNKNOWN_CA"] * 2
        wait_for(lambda: server.log_text().count("AH02040: Certificate Verification: "
                 f"Certificate Chain too long (chain has {depth + 1} certificates") == 2)  # fmt: skip


@pytest.mark.parametrize("mpm", MPMS)
def test_tls13_only_refuses_a_tls12_client(tmp_path, pki, mpm) -> None:
    config = _hosts(pki, a_extra="SSLProtocol -all +TLSv1.3")
    with Server(tmp_path, config, mpm=mpm) as server:
        with pytest.raises(ssl.SSLError):
            _connect(server.port, _client(pki, version="1.2"), "a.test").close()
        with _connect(server.port, _client(pki, version="1.3"), "a.test") as sock:
            assert _get(sock, "/app", "a.test")[0] == 200


PLAIN_400 = (
    b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
    b"<title>400 Bad Request</title>\n</head><body>\n<h1>Bad Request</h1>\n"
    b"<p>Your browser sent a request that this server could not understand.<br />\n"
    b"Reason: You're speaking plain HTTP to an SSL-enabled server port.<br />\n"
    b" Instead use the HTTPS scheme to access this URL, please.<br />\n</p>\n</body></html>\n"
)


@pytest.mark.parametrize("mpm", MPMS)
def test_plain_http_on_the_tls_port_gets_apaches_400(tmp_path, pki, mpm) -> None:
    with Server(tmp_path, _hosts(pki), mpm=mpm) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/app", headers={"Host": "a.test"})
        resp = conn.getresponse()
        assert resp.status == 400
        assert resp.getheader("Content-Type") == "text/html; charset=iso-8859-1"
        assert resp.read() == PLAIN_400
        conn.close()
        wait_for(lambda: '"GET / HTTP/1.0" 400 362' in server.access_log.read_text())
        assert "AH01996: SSL handshake failed: HTTP spoken on HTTPS port" in server.log_text()


@pytest.mark.parametrize("mpm", MPMS)
def test_keep_alive_and_pipelining_over_tls(tmp_path, pki, mpm) -> None:
    server = Server(tmp_path, _hosts(pki), mpm=mpm)
    with server, _connect(server.port, _client(pki), "a.test") as sock:
        reader = _Reader(sock)
        sock.sendall(b"GET /app HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert reader.response()[0] == 200
        sock.sendall(b"GET /app?1 HTTP/1.1\r\nHost: a.test\r\n\r\n" * 3)
        for _ in range(3):
            status, headers, _ = reader.response()
            assert status == 200 and headers.get("Connection") != "close"


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_idle_and_stalled_tls_clients_are_closed(tmp_path, pki, mpm) -> None:
    """KeepAliveTimeout ends an idle TLS connection (with close_notify), and
    RequestReadTimeout handshake= one that never completes its handshake."""
    config = "KeepAliveTimeout 1\nRequestReadTimeout handshake=1\n" + _hosts(pki)
    with Server(tmp_path, config, mpm=mpm) as server:
        with _connect(server.port, _client(pki), "a.test") as sock:
            assert _get(sock, "/app", "a.test")[0] == 200
            sock.settimeout(10)
            assert sock.recv(1) == b""  # closed by the server, well before 10 s
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
            assert raw.recv(1024) == b""


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_a_large_static_file_arrives_intact(tmp_path, pki, mpm) -> None:
    server = Server(tmp_path, _hosts(pki), mpm=mpm)
    data = os.urandom(1536 * 1024 + 7)
    (tmp_path / "htdocs" / "big.bin").write_bytes(data)
    with server, _connect(server.port, _client(pki), "a.test") as sock:
        status, headers, body = _get(sock, "/big.bin", "a.test")
        assert status == 200 and int(headers["Content-Length"]) == len(data)
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        assert _get(sock, "/app", "a.test")[0] == 200  # the connection carries on


def _metric(server: Server, pki, name: str) -> dict[str, float]:
    with _connect(server.port, _client(pki), "a.test") as sock:
        _, _, body = _get(sock, "/metrics", "a.test")
    found = {}
    for line in body.decode().splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            found[labels[len(name) :]] = float(value)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_graceful_restart_swaps_the_certificate(tmp_path, pki, mpm) -> None:
    config = _hosts(pki) + "<Location /metrics>\nSetHandler metrics\n</Location>\n"
    with Server(tmp_path, config, mpm=mpm) as server:
        old = (pki.root / "a.test.crt").read_text()
        kept = _connect(server.port, _client(pki), "a.test")
        assert _get(kept, "/app", "a.test")[0] == 200
        pki.server("a.test", "www.a.test")  # a new pair over the same files
        assert (pki.root / "a.test.crt").read_text() != old
        server.signal(signal.SIGUSR1)

        def new_certificate() -> bool:
            with _connect(server.port, _client(pki), "a.test") as sock:
                pem = ssl.DER_cert_to_PEM_cert(sock.getpeercert(binary_form=True)).strip()
                return pem in (pki.root / "a.test.crt").read_text()

        wait_for(new_certificate, timeout=15)
        assert _get(kept, "/app", "a.test")[0] == 200  # the open connection still works
        kept.close()
        # a broken certificate: logged with FILE:LINE, the running configuration serves on
        (pki.root / "a.test.crt").write_text("broken\n")
        server.signal(signal.SIGUSR1)
        wait_for(lambda: "holds no PEM certificate; keeping the running configuration"
                 in server.log_text(), timeout=15)  # fmt: skip
        ctx = _client(pki)
        with _connect(server.port, ctx, "a.test") as sock:
            assert _get(sock, "/app", "a.test")[0] == 200
        counts = _metric(server, pki, "mpmd_tls_handshakes_total")
        assert counts['{result="ok"}'] >= 3


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_SSL_SITE.exists(), reason="the apache2 Debian package is absent")
@pytest.mark.parametrize("mpm", MPMS)
def test_debian_default_ssl_conf_loads_and_serves(tmp_path, pki, mpm) -> None:
    crt, key = pki.server("localhost")
    server = Server(tmp_path, mpm=mpm)
    site = DEBIAN_SSL_SITE.read_text()
    site = site.replace("/etc/ssl/certs/ssl-cert-snakeoil.pem", str(crt))
    site = site.replace("/etc/ssl/private/ssl-cert-snakeoil.key", str(key))
    site = site.replace(":443>", f":{server.port}>")
    (tmp_path / "default-ssl.conf").write_text(site)
    (tmp_path / "htdocs" / "index.html").write_text("debian\n")
    server.conf.write_text(
        server.conf.read_text()
        + f"Define APACHE_LOG_DIR {tmp_path}\nInclude {tmp_path}/default-ssl.conf\n"
    )
    test = subprocess.run(
        [*_python_m_mpmd(), "-t", "-f", str(server.conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (test.returncode, test.stdout) == (0, "Syntax OK\n"), test.stderr
    assert "Traceback" not in test.stderr
    with server:
        with _connect(server.port, _client(pki), "localhost") as sock:
            status, _, _ = _get(sock, "/", "localhost")
        assert status in (200, 403, 404)  # DocumentRoot /var/www/html: whatever it holds


def _python_m_mpmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "mpmd"]


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_a_websocket_tunnel_over_tls(tmp_path, pki, mpm) -> None:
    """wss:// to a TLS host whose ProxyPass tunnels to a plain ws:// back end."""
    pytest.importorskip("websockets")
    from websockets.sync.client import connect

    from test_proxy_tunnel import WsBackend

    with WsBackend() as backend:
        rule = f"ProxyPass /ws/ ws://127.0.0.1:{backend.port}/"
        with Server(tmp_path, _hosts(pki, a_extra=rule), mpm=mpm) as server:
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            uri = f"wss://a.test:{server.port}/ws/chat"
            with connect(uri, sock=raw, ssl=_client(pki), open_timeout=10) as ws:
                ws.send("hello")
                assert ws.recv(timeout=10) == "hello"
                big = bytes(range(256)) * 1024
                ws.send(big)
                assert ws.recv(timeout=10) == big
            assert ws.close_code == 1000
            wait_for(lambda: '"GET /ws/chat HTTP/1.1" 101 ' in server.access_log.read_text())


@pytest.mark.parametrize("mpm", MPMS)
def test_proxypassreverse_behind_tls_keeps_https(tmp_path, pki, mpm) -> None:
    """A back end's redirect, mapped by ProxyPassReverse, sends a TLS client to https:// (as
    Apache's ap_construct_url does), never back to plain http://."""
    from proxy_doubles import Backend, serve_ok

    moved = serve_ok(b"moved", (("Location", "http://internal.example/next?x=1"),))
    with Backend(moved) as backend:
        rules = (
            f"ProxyPass /be/ http://127.0.0.1:{backend.port}/\n"
            "ProxyPassReverse /be/ http://internal.example/\n"
        )
        server = Server(tmp_path, _hosts(pki, a_extra=rules), mpm=mpm)
        with server, _connect(server.port, _client(pki), "a.test") as sock:
            status, headers, body = _get(sock, "/be/old", f"a.test:{server.port}")
    assert (status, body) == (200, b"moved")
    assert headers["Location"] == f"https://a.test:{server.port}/be/next?x=1"
