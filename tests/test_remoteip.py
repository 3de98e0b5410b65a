"""mod_remoteip: the RemoteIPHeader walk (tables after httpd's remoteip_modify_request), its
directives, and the result in REMOTE_ADDR, %a/%h/%{c}a, Require ip and the status page of
a real server under prefork, worker and event."""

from __future__ import annotations

import http.client
import ipaddress
import json
import subprocess
import sys

import pytest

from mpmd.config.build import load_config
from mpmd.config.model import ProxyProtocolSettings, RemoteIpSettings
from mpmd.config.syntax import ConfigError
from mpmd.http.remoteip import (
    WalkResult,
    header_value,
    proxy_header_required,
    rewrite_headers,
    walk,
)
from server import Server, free_port, wait_for

NET = ipaddress.ip_network


def settings(*proxies: tuple[str, bool] | None, proxies_header: str | None = None):
    listed = None if proxies == (None,) else tuple((NET(n), internal) for n, internal in proxies)
    return RemoteIpSettings("x-forwarded-for", proxies_header, listed)


NO_LIST = settings(None)
TRUSTED_LO = settings(("127.0.0.1", False))
INTERNAL = settings(("127.0.0.1", True), ("10.0.0.0/8", True))
MIXED = settings(("127.0.0.1", True), ("198.51.100.7", False))
OTHER = settings(("192.0.2.1", False))

WALKS = [
    # (settings, header) -> (client, header left, proxies) or None for "nothing changes"
    (NO_LIST, "203.0.113.5", WalkResult("203.0.113.5", None, "127.0.0.1")),
    (NO_LIST, "10.0.0.5", None),  # every peer trusted, as external: no private address
    (
        NO_LIST,
        "203.0.113.5, 198.51.100.7",
        WalkResult("203.0.113.5", None, "127.0.0.1, 198.51.100.7"),
    ),
    (
        NO_LIST,
        "203.0.113.5, 10.0.0.1, 198.51.100.7",
        WalkResult("198.51.100.7", "203.0.113.5, 10.0.0.1", "127.0.0.1"),
    ),
    (
        TRUSTED_LO,
        "203.0.113.5, 198.51.100.7",
        WalkResult("198.51.100.7", "203.0.113.5", "127.0.0.1"),
    ),
    (TRUSTED_LO, "203.0.113.5, 10.1.2.3", None),  # a trusted proxy may not present 10/8
    (
        TRUSTED_LO,
        "1.2.3.4, 203.0.113.5",  # the client's own X-Forwarded-For stays, ignored
        WalkResult("203.0.113.5", "1.2.3.4", "127.0.0.1"),
    ),
    (OTHER, "203.0.113.5", None),  # the peer is not trusted: spoofing ignored
    (INTERNAL, "203.0.113.5, 10.1.2.3", WalkResult("203.0.113.5", None, None)),
    (INTERNAL, "10.9.9.9, 10.1.2.3", WalkResult("10.9.9.9", None, None)),
    (MIXED, "203.0.113.5, 198.51.100.7", WalkResult("203.0.113.5", None, "198.51.100.7")),
    (
        MIXED,
        "10.0.0.1, 198.51.100.7",  # what an external proxy presents is external
        WalkResult("198.51.100.7", "10.0.0.1", None),
    ),
    (TRUSTED_LO, "203.0.113.5, unknown", None),  # not an address: the walk ends
    (TRUSTED_LO, "example.com", None),  # names are never resolved per request
    (TRUSTED_LO, "203.0.113.5, ", None),  # an empty element ends it too
    (
        TRUSTED_LO,
        " 203.0.113.5 ,  198.51.100.7 ",
        WalkResult("198.51.100.7", " 203.0.113.5 ", "127.0.0.1"),
    ),
    (TRUSTED_LO, "2001:db8::1", WalkResult("2001:db8::1", None, "127.0.0.1")),
    (TRUSTED_LO, "fd00::1", None),  # IPv6 outside 2000::/3
    (TRUSTED_LO, "::ffff:203.0.113.5", WalkResult("203.0.113.5", None, "127.0.0.1")),
    (TRUSTED_LO, "203.0.113.5:4711", None),  # a port is not an address
    (
        NO_LIST,
        "198.51.100.7, 10.0.0.1, 203.0.113.5",  # the comma goes back over the element
        WalkResult("203.0.113.5", "198.51.100.7, 10.0.0.1", "127.0.0.1"),
    ),
]


@pytest.mark.parametrize(("config", "header", "expected"), WALKS)
def test_walk(config: RemoteIpSettings, header: str, expected: WalkResult | None) -> None:
    assert walk("127.0.0.1", header, config) == expected


def test_walk_from_an_ipv4_mapped_peer_matches_the_ipv4_list() -> None:
    assert walk("::ffff:127.0.0.1", "203.0.113.5", TRUSTED_LO) == WalkResult(
        "203.0.113.5", None, "::ffff:127.0.0.1"
    )


def test_headers_merged_and_rewritten() -> None:
    headers = [
        ("x-forwarded-for", "1.2.3.4"),
        ("host", "a"),
        ("x-forwarded-for", "203.0.113.5"),
        ("x-forwarded-by", "spoofed"),
    ]
    assert header_value(headers, "x-forwarded-for") == "1.2.3.4, 203.0.113.5"
    config = settings(("127.0.0.1", False), proxies_header="x-forwarded-by")
    result = walk("127.0.0.1", "1.2.3.4, 203.0.113.5", config)
    rewrite_headers(headers, config, result)
    assert headers == [
        ("host", "a"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-by", "127.0.0.1"),
    ]
    rewrite_headers(headers, config, WalkResult("1.2.3.4", None, None))
    assert headers == [("host", "a"), ("x-forwarded-by", "127.0.0.1")]


def test_proxy_header_required_by_address_port_and_exception() -> None:
    local = ("127.0.0.1", 8080)
    assert not proxy_header_required(None, local, "127.0.0.1")
    anywhere = ProxyProtocolSettings((("", 0),), (), ())
    assert proxy_header_required(anywhere, local, "127.0.0.1")
    port = ProxyProtocolSettings((("", 8080),), (), ())
    assert proxy_header_required(port, local, "127.0.0.1")
    assert not proxy_header_required(port, ("127.0.0.1", 8081), "127.0.0.1")
    assert proxy_header_required(port, ("::ffff:127.0.0.1", 8080), "::1")
    off = ProxyProtocolSettings((("", 0),), (("127.0.0.1", 8080),), ())
    assert not proxy_header_required(off, local, "127.0.0.1")
    assert proxy_header_required(off, ("127.0.0.2", 8080), "127.0.0.1")
    exempt = ProxyProtocolSettings((("", 0),), (), (NET("10.0.0.0/8"),))
    assert not proxy_header_required(exempt, local, "10.1.2.3")
    assert proxy_header_required(exempt, local, "192.0.2.1")


# -- configuration ---------------------------------------------------------------------------


def build(tmp_path, text: str):
    conf = tmp_path / "mpmd.conf"
    conf.write_text(f'ServerRoot "{tmp_path}"\nListen 127.0.0.1:8080\n' + text)
    return load_config(str(conf))


def test_directives_build_per_host_with_the_server_merge(tmp_path) -> None:
    (tmp_path / "trusted.lst").write_text(
        "# the balancers\n198.51.100.0/24   192.0.2.9 # and one more\n\n  10.1.\n"
    )
    config = build(
        tmp_path,
        """\
RemoteIPHeader X-Real-IP
RemoteIPInternalProxy 127.0.0.1
RemoteIPTrustedProxyList trusted.lst
<VirtualHost *:8080>
ServerName a
</VirtualHost>
<VirtualHost *:8080>
ServerName b
RemoteIPHeader X-Forwarded-For
RemoteIPProxiesHeader X-Forwarded-By
RemoteIPTrustedProxy 203.0.113.1
</VirtualHost>
""",
    )
    main = config.main.remoteip
    assert main == RemoteIpSettings(
        "x-real-ip",
        None,
        (
            (NET("127.0.0.1/32"), True),
            (NET("198.51.100.0/24"), False),
            (NET("192.0.2.9/32"), False),
            (NET("10.1.0.0/16"), False),
        ),
    )
    assert config.vhosts[0].remoteip == main
    assert config.vhosts[1].remoteip == RemoteIpSettings(
        "x-forwarded-for", "x-forwarded-by", ((NET("203.0.113.1/32"), False),)
    )
    assert config.remoteip_headers and config.proxy_protocol is None
    assert not [w for w in config.warnings if "RemoteIP" in w]  # no "not implemented"


def test_no_header_no_walk(tmp_path) -> None:
    config = build(tmp_path, "RemoteIPTrustedProxy 127.0.0.1\n")
    assert config.main.remoteip is None and not config.remoteip_headers


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "RemoteIPTrustedProxy 10.0.0.0/99",
            "RemoteIP: Error parsing IP 10.0.0.0/99 (The specified network mask is invalid. error) "
            "for RemoteIPTrustedProxy",
        ),
        (
            "RemoteIPInternalProxy 10.0.0.300",
            "RemoteIP: Error parsing IP 10.0.0.300 (The specified IP address is invalid. error) "
            "for RemoteIPInternalProxy",
        ),
        (
            "RemoteIPTrustedProxy proxy.invalid/8",
            "RemoteIP: Error parsing IP proxy.invalid/8 the subnet /8 is invalid for "
            "RemoteIPTrustedProxy",
        ),
        (
            "RemoteIPProxyProtocolExceptions 10.0.0.0/0",
            "ip address '10.0.0.0' appears to be invalid: The specified network mask is invalid.",
        ),
        (
            "RemoteIPProxyProtocolExceptions lb.example",
            "ip address 'lb.example' appears to be invalid",
        ),
        ("RemoteIPProxyProtocol maybe", "RemoteIPProxyProtocol must be On or Off"),
        ("RemoteIPHeader", "RemoteIPHeader takes one argument"),
    ],
)
def test_bad_values_are_file_line_errors(tmp_path, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build(tmp_path, f"ServerName x\n{line}\n")
    assert str(caught.value).startswith(f"{tmp_path / 'mpmd.conf'}:4: {message}")


def test_bad_list_entry_names_its_line(tmp_path) -> None:
    (tmp_path / "list").write_text("10.0.0.1\n# fine\n10.0.0.0/33\n")
    with pytest.raises(ConfigError) as caught:
        build(tmp_path, "RemoteIPInternalProxyList list\n")
    assert str(caught.value) == (
        f"{tmp_path / 'mpmd.conf'}:3: RemoteIP: Error parsing IP 10.0.0.0/33 (The specified "
        f"network mask is invalid. error) for RemoteIPInternalProxy at line 3 of "
        f"{tmp_path / 'list'}"
    )
    with pytest.raises(ConfigError, match="RemoteIPTrustedProxyList: Could not open file"):
        build(tmp_path, "RemoteIPTrustedProxyList missing\n")


def test_proxy_protocol_per_address_last_wins_with_notice(tmp_path) -> None:
    config = build(
        tmp_path,
        """\
Listen 127.0.0.1:8081
RemoteIPProxyProtocolExceptions 10.0.0.0/8 192.0.2.1
<VirtualHost 127.0.0.1:8081>
ServerName a
RemoteIPProxyProtocol On
</VirtualHost>
<VirtualHost 127.0.0.1:8081>
ServerName b
RemoteIPProxyProtocol Off
</VirtualHost>
<VirtualHost *:8080>
ServerName c
RemoteIPProxyProtocol On
</VirtualHost>
""",
    )
    assert config.proxy_protocol == ProxyProtocolSettings(
        (("", 8080),), (("127.0.0.1", 8081),), (NET("10.0.0.0/8"), NET("192.0.2.1/32"))
    )
    notice = [w for w in config.warnings if w.startswith("AH03491")]
    assert len(notice) == 1 and "new setting is 'Off'" in notice[0], config.warnings


def test_mpmd_t_reports_a_bad_cidr_and_M_lists_the_module(tmp_path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text(
        f'ServerRoot "{tmp_path}"\nListen 127.0.0.1:8080\nRemoteIPTrustedProxy 192.168.0.0/40\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "mpmd", "-f", str(conf), "-t"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert f"{conf}:3: RemoteIP: Error parsing IP 192.168.0.0/40" in out.stdout + out.stderr
    conf.write_text(
        f'ServerRoot "{tmp_path}"\nListen 127.0.0.1:8080\n'
        "LoadModule remoteip_module modules/mod_remoteip.so\n"
        "RemoteIPHeader X-Forwarded-For\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mpmd", "-f", str(conf), "-M"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and " remoteip_module (shared)" in out.stdout
    assert "not implemented" not in out.stdout + out.stderr


# -- a real server, each MPM -----------------------------------------------------------------

MPMS = ("prefork", "worker", "event")
LOG_FORMAT = '"%a|%h|%{c}a|%{c}h|%{X-Forwarded-For}i|%{remoteip-proxy-ip-list}n|%U"'


def e2e_config(untrusted_port: int) -> str:
    return f"""\
StartServers 1
MinSpareThreads 1
MaxSpareThreads 8
ThreadsPerChild 4
ExtendedStatus On
LogFormat {LOG_FORMAT} rip
CustomLog rip_log rip
WSGIApp / remoteipapp:application
RemoteIPHeader X-Forwarded-For
RemoteIPProxiesHeader X-Forwarded-By
RemoteIPTrustedProxy 127.0.0.1
<Location /secret>
Require ip 203.0.113.0/24
</Location>
<Location /server-status>
SetHandler server-status
</Location>
Listen 127.0.0.1:{untrusted_port}
<VirtualHost *:{untrusted_port}>
RemoteIPTrustedProxy 192.0.2.1
</VirtualHost>
"""


@pytest.fixture(scope="module", params=MPMS)
def server(request, tmp_path_factory):
    untrusted = free_port()
    srv = Server(tmp_path_factory.mktemp("remoteip"), e2e_config(untrusted), mpm=request.param)
    srv.untrusted_port = untrusted  # type: ignore[attr-defined]
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def get(port: int, path: str = "/", xff: str | None = None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"X-Forwarded-For": xff} if xff is not None else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def log_lines(server: Server, path: str) -> list[list[str]]:
    log = server.tmp / "rip_log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split("|") for line in lines if line.endswith("|" + path)]


def test_trusted_chain_sets_remote_addr_and_headers(server: Server) -> None:
    status, body = get(server.port, "/chain", "198.51.100.1, 203.0.113.5")
    assert status == 200
    seen = json.loads(body)
    assert seen["REMOTE_ADDR"] == "203.0.113.5"
    assert seen["forwarded_for"] == "198.51.100.1"
    assert seen["forwarded_by"] == "127.0.0.1"
    assert seen["REMOTE_PORT"] != "0"  # the peer's port, as httpd keeps it


def test_access_log_items(server: Server) -> None:
    get(server.port, "/logged", "198.51.100.1, 203.0.113.6")
    lines = wait_for(lambda: log_lines(server, "/logged"))
    assert lines[-1] == [
        "203.0.113.6",
        "203.0.113.6",
        "127.0.0.1",
        "127.0.0.1",
        "198.51.100.1",
        "127.0.0.1",
        "/logged",
    ]


def test_untrusted_peer_is_ignored(server: Server) -> None:
    status, body = get(server.untrusted_port, "/spoof", "203.0.113.5")
    seen = json.loads(body)
    assert (status, seen["REMOTE_ADDR"], seen["forwarded_for"]) == (200, "127.0.0.1", "203.0.113.5")
    status, body = get(server.port, "/private", "10.0.0.7")  # a trusted proxy, private client
    assert json.loads(body)["REMOTE_ADDR"] == "127.0.0.1"


def test_require_ip_uses_the_result(server: Server) -> None:
    assert get(server.port, "/secret", "203.0.113.77")[0] == 200
    assert get(server.port, "/secret", "198.51.100.1")[0] == 403
    assert get(server.port, "/secret")[0] == 403
    assert get(server.untrusted_port, "/secret", "203.0.113.77")[0] == 403  # spoofed


def test_each_request_on_a_connection_starts_from_the_peer(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        first = json.loads(get(server.port, "/ka", "203.0.113.8", conn)[1])
        second = json.loads(get(server.port, "/ka", None, conn)[1])
    finally:
        conn.close()
    assert (first["REMOTE_ADDR"], second["REMOTE_ADDR"]) == ("203.0.113.8", "127.0.0.1")
    assert first["REMOTE_PORT"] == second["REMOTE_PORT"]


def test_status_page_shows_the_client(server: Server) -> None:
    status, body = get(server.port, "/server-status", "203.0.113.99")
    assert status == 200 and b"203.0.113.99" in body


@pytest.mark.parametrize("mpm", ["prefork", "event"])  # event: proxied in the loop
def test_the_proxy_forwards_the_rewritten_client(tmp_path, mpm: str) -> None:
    from backends import NginxBackend, http_get, parse_echo, require_nginx

    require_nginx()
    config = (
        "RemoteIPHeader X-Forwarded-For\nRemoteIPTrustedProxy 127.0.0.1\n"
        f"LogFormat {LOG_FORMAT} rip\nCustomLog rip_log rip\n"
    )
    with NginxBackend(tmp_path / "nginx") as backend:
        config += f"ProxyPass /app/ http://127.0.0.1:{backend.port}/\n"
        with Server(tmp_path, config, mpm=mpm) as front:
            status, _, body = http_get(
                front.port, "/app/echo-headers", {"X-Forwarded-For": "198.51.100.1, 203.0.113.5"}
            )
            assert status == 200
            # mod_proxy appends the client mod_remoteip found to what the walk left
            assert parse_echo(body)["x-forwarded-for"] == "198.51.100.1, 203.0.113.5"
            line = wait_for(lambda: log_lines(front, "/app/echo-headers"))[-1]
            assert line[:5] == ["203.0.113.5", "203.0.113.5", "127.0.0.1", "127.0.0.1",
                                "198.51.100.1"]  # fmt: skip
