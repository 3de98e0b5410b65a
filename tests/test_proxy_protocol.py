"""The PROXY protocol: the sans-I/O parser (tables, every split), and mpmd reading it in each
MPM from hand-made bytes and from HAProxy itself (`send-proxy`, `send-proxy-v2`)."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import textwrap

import pytest

from mpmd.http.proxy_protocol import ProxyHeader, ProxyHeaderError, ProxyHeaderParser
from server import Server, children_of, free_port, pid_alive, wait_for

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int, family: int, block: bytes) -> bytes:
    return SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(block)) + block


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return v2(1, 0x11, block + tlvs)


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    block = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return v2(1, 0x21, block + struct.pack("!HH", sport, dport))


# TLVs a balancer may add: ALPN, AUTHORITY, UNIQUE_ID, an SSL block with a sub-TLV, NOOP, AWS's
TLVS = b"".join(
    bytes([kind]) + struct.pack("!H", len(value)) + value
    for kind, value in (
        (0x01, b"h2"),
        (0x02, b"example.com"),
        (0x05, b"id-123"),
        (0x20, b"\x01\x00\x00\x00\x00" + b"\x21\x00\x07TLSv1.3"),
        (0x04, b"\x00" * 3),
        (0xEA, b"\x01vpce-0123456789"),
    )
)

GOOD = [
    (b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n", ProxyHeader(1, "192.0.2.7", 56324)),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 80\r\n", ProxyHeader(1, "2001:db8::7", 4242)),
    (b"PROXY TCP6 2001:DB8:0:0::7 ::1 1 80\r\n", ProxyHeader(1, "2001:db8::7", 1)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, 0)),
    (b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n", ProxyHeader(1, None, 0)),
    (b"PROXY  TCP4  192.0.2.7  10.0.0.1  99  80\r\n", ProxyHeader(1, "192.0.2.7", 99)),  # strtok
    (b"PROXY TCP4 192.0.2.7 anything 80x\r\n", ProxyHeader(1, "192.0.2.7", 80)),  # %hu, no dport
    (v2_tcp4("203.0.113.9", "10.0.0.1", 40000, 80), ProxyHeader(2, "203.0.113.9", 40000)),
    (v2_tcp4("203.0.113.9", "10.0.0.1", 1, 80, TLVS), ProxyHeader(2, "203.0.113.9", 1)),
    (v2_tcp6("2001:db8::9", "2001:db8::1", 7, 80), ProxyHeader(2, "2001:db8::9", 7)),
    (v2(0, 0x00, b""), ProxyHeader(2, None, 0)),  # LOCAL: a health check, the real peer
    (v2(0, 0x11, b"\x00" * 12 + TLVS), ProxyHeader(2, None, 0)),  # LOCAL skips its block too
]


@pytest.mark.parametrize(("data", "expected"), GOOD)
def test_parses_whole_and_split_at_every_byte(data: bytes, expected: ProxyHeader) -> None:
    request = b"GET / HTTP/1.1\r\n"
    assert ProxyHeaderParser().feed(data + request) == (expected, request)
    for cut in range(1, len(data)):
        parser = ProxyHeaderParser()
        assert parser.feed(data[:cut]) is None, cut
        assert parser.feed(data[cut:] + request) == (expected, request)


BAD = [
    (
        b"GET / HTTP/1.1\r\n\r\n",
        "MP00260: no PROXY header: the connection began with 'GET / HTTP/1.1\\x0d\\x0a\\x0d\\x0a'",
    ),
    (b"\x16\x03\x01\x02\x00", "MP00260: no PROXY header"),  # a TLS ClientHello
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "MP00260"),
    (
        b"PROXY TCP4 " + b"1" * 120,
        "AH10185: RemoteIPProxyProtocol header too long, got 131 expected 108",
    ),
    (b"PROXY TCP4 1.2.3.4\rX", "MP00261: RemoteIPProxyProtocol: CR without LF"),
    (b"PROXY \r\n", "AH03497: RemoteIPProxyProtocol: no family found in header 'PROXY '"),
    (
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        "AH03499: RemoteIPProxyProtocol: unknown family 'TCP5'",
    ),
    (b"PROXY TCP4\r\n", "AH03497: RemoteIPProxyProtocol: no client-address found"),
    (b"PROXY TCP4 1.2.3.4\r\n", "AH03497: RemoteIPProxyProtocol: no destination-address found"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8\r\n", "AH03497: RemoteIPProxyProtocol: no client-port found"),
    (
        b"PROXY TCP4 1.2.3.x 5.6.7.8 1 2\r\n",
        "AH03500: RemoteIPProxyProtocol: invalid client-address '1.2.3.x'",
    ),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "AH03500"),
    (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 port 2\r\n",
        "AH03501: RemoteIPProxyProtocol: error parsing port 'port'",
    ),
    (
        b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
        "AH03502: RemoteIPProxyProtocol: error converting family '2', host '1.2.3.400', and port '1' to sockaddr",
    ),
    (SIG + b"\x11\x11\x00\x0c" + b"\x00" * 12, "MP00260: no PROXY header"),  # version 1 in v2 form
    (v2(2, 0x11, b"\x00" * 12), "AH03507: RemoteIPProxyProtocol: unsupported command 22"),
    (v2(1, 0x12, b"\x00" * 12), "AH10183: RemoteIPProxyProtocol: unsupported protocol 12"),
    (v2(1, 0x31, b"\x00" * 216), "AH10183: RemoteIPProxyProtocol: unsupported protocol 31"),
    (v2(1, 0x00, b""), "AH10183: RemoteIPProxyProtocol: unsupported protocol 00"),
    (
        v2(1, 0x11, b"\x00" * 6),
        "MP00262: RemoteIPProxyProtocol: address block of 6 bytes, 12 needed",
    ),
    (SIG + b"\x21\x11\x00\xd9", "AH10186: RemoteIPProxyProtocol protocol header length too long"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_refuses_with_httpd_message(data: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError) as caught:
        ProxyHeaderParser().feed(data)
    assert str(caught.value).startswith(message)


def test_refuses_as_soon_as_the_bytes_cannot_be_a_header() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PRO") is None
    with pytest.raises(ProxyHeaderError):
        parser.feed(b"XY/")  # "PROXY" without its space
    parser = ProxyHeaderParser()
    assert parser.feed(SIG[:5]) is None
    with pytest.raises(ProxyHeaderError):
        parser.feed(b"G")


def test_largest_v2_block_is_accepted() -> None:
    data = v2_tcp4("192.0.2.1", "192.0.2.2", 5, 6, b"\x04" + struct.pack("!H", 201) + b"\0" * 201)
    assert len(data) == 16 + 216
    assert ProxyHeaderParser().feed(data) == (ProxyHeader(2, "192.0.2.1", 5), b"")


# -- a real server, each MPM -----------------------------------------------------------------

MPMS = ("prefork", "worker", "event")
CONFIG = """\
StartServers 1
MinSpareThreads 1
MaxSpareThreads 8
ThreadsPerChild 4
LogFormat "%a|%{c}a|%{remote}p|%U" pp
CustomLog pp_log pp
WSGIApp / remoteipapp:application
RemoteIPHeader X-Forwarded-For
Listen 127.0.0.1:{proxied}
<VirtualHost *:{proxied}>
RemoteIPProxyProtocol On
</VirtualHost>
"""


def start_server(tmp, mpm: str, extra: str = "") -> Server:
    proxied = free_port()
    srv = Server(tmp, CONFIG.replace("{proxied}", str(proxied)) + extra, mpm=mpm)
    srv.proxied = proxied  # type: ignore[attr-defined]
    try:
        return srv.start()
    except BaseException:
        srv.stop()
        raise


@pytest.fixture(scope="module", params=MPMS)
def server(request, tmp_path_factory):
    srv = None
    try:
        srv = start_server(tmp_path_factory.mktemp("proxyproto"), request.param)
        yield srv
    finally:
        if srv is not None:
            srv.stop()


def talk(port: int, *pieces: bytes, source: str = "127.0.0.1") -> tuple[bytes, int]:
    """Send `pieces` (each its own segment) on one connection, read to EOF: (reply, our port)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:  # fmt: skip
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            sock.sendall(piece)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks), sock.getsockname()[1]


def request(path: str, *, keep: bool = False) -> bytes:
    connection = "keep-alive" if keep else "close"
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.1\r\n"
            f"Connection: {connection}\r\n\r\n").encode()  # fmt: skip


def answers(reply: bytes) -> list[dict]:
    """The JSON bodies of the responses in `reply`, in order."""
    decode = json.JSONDecoder().raw_decode
    return [decode(part.decode())[0] for part in reply.split(b"\r\n\r\n")[1:]]


def log_line(server: Server, path: str) -> list[str]:
    def find():
        log = server.tmp / "pp_log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line.split("|") for line in lines if line.endswith("|" + path)]

    return wait_for(find)[-1]


def test_v1_sets_the_client_and_ignores_the_header(server: Server) -> None:
    header = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"
    reply, port = talk(server.proxied, header + request("/v1"))
    assert reply.startswith(b"HTTP/1.1 200 ")
    seen = answers(reply)[0]
    assert seen["REMOTE_ADDR"] == "192.0.2.7"
    assert seen["forwarded_for"] == "203.0.113.1"  # RemoteIPHeader is ignored under PROXY
    assert seen["REMOTE_PORT"] == str(port)  # the peer's, as httpd 2.4 keeps it
    assert log_line(server, "/v1") == ["192.0.2.7", "127.0.0.1", str(port), "/v1"]


def test_v2_ipv6_with_tlvs_in_pieces_then_keep_alive(server: Server) -> None:
    header = v2_tcp6("2001:db8::9", "2001:db8::1", 7, 80)
    header = v2(1, 0x21, header[16:] + TLVS)
    reply, _ = talk(server.proxied, header[:5], header[5:30], header[30:],
                    request("/v2", keep=True) + request("/v2"))  # fmt: skip
    seen = answers(reply)
    assert [s["REMOTE_ADDR"] for s in seen] == ["2001:db8::9", "2001:db8::9"]


def test_v2_local_keeps_the_peer(server: Server) -> None:
    reply, _ = talk(server.proxied, v2(0, 0x00, b"") + request("/local"))
    assert answers(reply)[0]["REMOTE_ADDR"] == "127.0.0.1"


MALFORMED = [
    (request("/none"), "MP00260: no PROXY header: the connection began with 'GET /none HTTP/1.1"),
    (
        b"PROXY TCP4 192.0.2.x 10.0.0.1 1 2\r\n",
        "AH03500: RemoteIPProxyProtocol: invalid client-address '192.0.2.x'",
    ),
    (b"PROXY TCP4 " + b"9" * 200, "AH10185: RemoteIPProxyProtocol header too long"),
    (v2(1, 0x31, b"\x00" * 216), "AH10183: RemoteIPProxyProtocol: unsupported protocol 31"),
    (v2(3, 0x11, b"\x00" * 12), "AH03507: RemoteIPProxyProtocol: unsupported command 23"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_header_closes_unanswered_and_the_worker_lives(
    server: Server, data: bytes, message: str
) -> None:
    children = children_of(server.pid)
    reply, port = talk(server.proxied, data)
    assert reply == b""  # no HTTP response, as httpd aborts the connection
    wait_for(lambda: f"[client 127.0.0.1:{port}] {message}" in server.log_text())
    header = b"PROXY TCP4 192.0.2.8 10.0.0.1 1 2\r\n"
    assert (
        answers(talk(server.proxied, header + request("/after"))[0])[0]["REMOTE_ADDR"]
        == "192.0.2.8"
    )
    assert all(pid_alive(pid) for pid in children)


@pytest.mark.slow
@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_exceptions_and_a_header_that_never_comes(tmp_path, mpm: str) -> None:
    extra = "RemoteIPProxyProtocolExceptions 127.0.0.2\nRequestReadTimeout header=1\n"
    srv = start_server(tmp_path, mpm, extra)
    try:
        reply, _ = talk(srv.proxied, request("/exempt"), source="127.0.0.2")
        # plain HTTP from an exception, so RemoteIPHeader applies (no list: every peer trusted)
        assert answers(reply)[0]["REMOTE_ADDR"] == "203.0.113.1"
        reply, port = talk(srv.proxied, b"PROXY TCP4 192.0.2.")  # then silence
        assert reply == b""
        wait_for(lambda: f"[client 127.0.0.1:{port}] AH10184: failed reading input"
                 in srv.log_text())  # fmt: skip
    finally:
        srv.stop()


# -- HAProxy itself --------------------------------------------------------------------------

HAPROXY = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/usr/local/sbin")


def haproxy_config(v1: int, v2_port: int, target: int) -> str:
    return textwrap.dedent(f"""\
        defaults
            mode tcp
            timeout connect 5s
            timeout client 30s
            timeout server 30s
        frontend v1
            bind 127.0.0.1:{v1}
            default_backend v1
        backend v1
            server s1 127.0.0.1:{target} send-proxy
        frontend v2
            bind 127.0.0.1:{v2_port}
            default_backend v2
        backend v2
            option httpchk GET /health
            server s1 127.0.0.1:{target} send-proxy-v2 check inter 200ms
        """)


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
def test_haproxy_send_proxy_v1_and_v2(server: Server, tmp_path) -> None:
    v1_port, v2_port = free_port(), free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text(haproxy_config(v1_port, v2_port, server.proxied))
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:

        def up() -> bool:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                socket.create_connection(("127.0.0.1", v2_port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(up)
        for port, path in ((v1_port, "/haproxy-v1"), (v2_port, "/haproxy-v2")):
            reply, _ = talk(port, request(path), source="127.0.0.2")
            assert answers(reply)[0]["REMOTE_ADDR"] == "127.0.0.2", reply
            assert log_line(server, path)[:2] == ["127.0.0.2", "127.0.0.1"]
        # the health checks come with a v2 LOCAL header: the peer's own address
        assert log_line(server, "/health")[:2] == ["127.0.0.1", "127.0.0.1"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
