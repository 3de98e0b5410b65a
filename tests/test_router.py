"""Router: URL normalisation, virtual hosts, Location/SetHandler, WSGI mounts, Alias, Require."""

from __future__ import annotations

import dataclasses

import pytest

from helpers import FakeErrorLog, make_config, make_vhost, route
from mpmd.config.model import (
    AccessRule,
    AliasMapping,
    DirectorySection,
    LocationSection,
    WsgiMount,
)
from mpmd.handlers.router import AccessCheck, ReverseDns, Router, normalize_path

# -- URL normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/a/b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("//a///b", "/a/b"),
        ("/a%20b", "/a b"),
        ("/%7Euser/", "/~user/"),
        ("/caf%C3%A9", "/caf\u00c3\u00a9"),  # the UTF-8 bytes as latin-1 (PEP 3333)
        ("/../etc/passwd", 400),
        ("/a/../../etc/passwd", 400),
        ("/%2e%2e/etc/passwd", 400),
        ("/%2E%2E/%2e%2e/x", 400),
        ("/a%2Fb", 404),
        ("/a%2fb", 404),
        ("/a%00.txt", 404),
        ("/%zz", 400),
        ("/%4", 400),
        ("http://example.com/x/y", "/x/y"),
        ("http://example.com", "/"),
        ("nonsense", 400),
    ],
)
def test_normalize_path(raw, expected):
    assert normalize_path(raw) == expected


# -- virtual hosts ------------------------------------------------------------------------------


def test_select_vhost_by_name_alias_wildcard_and_port():
    first = make_vhost(addresses=("*:80",), server_name="first.example")
    second = make_vhost(
        addresses=("*:80",), server_name="second.example", server_aliases=("*.wild.example",)
    )
    other_port = make_vhost(addresses=("*:8080",), server_name="second.example")
    any_port = make_vhost(addresses=("_default_",), server_name="any.example")
    main = make_vhost(server_name="main.example")
    router = Router(make_config(main, (first, second, other_port, any_port)), FakeErrorLog())
    assert router.select_vhost("second.example", 80) is second
    assert router.select_vhost("SECOND.Example:80", 80) is second
    assert router.select_vhost("second.example.", 80) is second
    assert router.select_vhost("a.wild.example", 80) is second
    assert router.select_vhost("wild.example", 80) is first  # no match → the port's first
    assert router.select_vhost(None, 80) is first
    assert router.select_vhost("second.example", 8080) is other_port
    assert router.select_vhost("any.example", 8080) is any_port
    assert router.select_vhost("any.example", 9999) is any_port
    only_80 = Router(make_config(main, (first,)), FakeErrorLog())
    assert only_80.select_vhost("first.example", 9999) is main


def test_no_vhosts_means_main_server():
    main = make_vhost()
    router = Router(make_config(main), FakeErrorLog())
    assert router.select_vhost("whatever", 80) is main


# -- WSGI mounts ----------------------------------------------------------------------------------


def mount_router(tmp_path, calls: list, **changes) -> Router:
    module = tmp_path / "mpmd_router_apps.py"
    module.write_text(
        "from helpers import recording_app\n"
        "CALLS = []\n"
        "root = recording_app('root', CALLS)\n"
        "app = recording_app('app', CALLS)\n"
        "admin = recording_app('admin', CALLS)\n"
    )
    vhost = make_vhost(
        wsgi_mounts=(
            WsgiMount("", "mpmd_router_apps:root", "app"),
            WsgiMount("/app/admin", "mpmd_router_apps:admin", "app"),
            WsgiMount("/app", "mpmd_router_apps:app", "app"),
        ),
        **changes,
    )
    config = dataclasses.replace(make_config(vhost), wsgi_python_path=(str(tmp_path),))
    router = Router(config, FakeErrorLog())
    import mpmd_router_apps  # type: ignore[import-not-found]

    mpmd_router_apps.CALLS.clear()
    calls.append(mpmd_router_apps.CALLS)
    return router


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/app", ("app", "/app", "")),
        ("/app/", ("app", "/app", "/")),
        ("/app/x/y?q=1", ("app", "/app", "/x/y")),
        ("/apple", ("root", "", "/apple")),
        ("/app/admin", ("admin", "/app/admin", "")),
        ("/app/admin/users", ("admin", "/app/admin", "/users")),
        ("/app/administrator", ("app", "/app", "/administrator")),
        ("/", ("root", "", "/")),
        ("/app/a%20b/../c", ("app", "/app", "/c")),
    ],
)
def test_longest_mount_prefix_on_segment_boundary(tmp_path, target, expected):
    holder: list = []
    router = mount_router(tmp_path, holder)
    response, exchange = route(router, "GET", target)
    assert response.status == 200
    assert holder[0] == [expected]
    assert exchange.notes["handler"] == "wsgi-app"


def test_script_mount_and_failed_load(tmp_path):
    script = tmp_path / "site.wsgi"
    script.write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [environ['SCRIPT_NAME'].encode() + b'|' + environ['PATH_INFO'].encode()]\n"
    )
    broken = tmp_path / "broken.wsgi"
    broken.write_text("raise ImportError('no such thing')\n")
    log = FakeErrorLog()
    vhost = make_vhost(
        wsgi_mounts=(
            WsgiMount("/site", str(script), "script"),
            WsgiMount("/broken", str(broken), "script"),
        )
    )
    router = Router(make_config(vhost), log)
    assert "no such thing" in log.text()  # logged once at start-up
    response, exchange = route(router, "GET", "/site/p")
    assert response.body == b"/site|/p"
    assert exchange.notes["handler"] == "wsgi-script"
    response, exchange = route(router, "GET", "/broken/x")
    assert response.status == 500 and not exchange.keep_alive
    assert b"no such thing" not in response.body


# -- Location, SetHandler ---------------------------------------------------------------------------


def test_sethandler_lookup_unknown_and_none():
    seen = []

    def status_handler(exchange):
        seen.append(exchange.request.path)
        exchange.respond("200 OK", [("Content-Type", "text/plain")], b"status")

    log = FakeErrorLog()
    vhost = make_vhost(
        locations=(
            LocationSection("/server-status", False, "server-status", None),
            LocationSection("/server-status/off", False, "None", None),
            LocationSection("^/metrics$", True, "metrics", None),
        )
    )
    router = Router(make_config(vhost), log, extra_handlers={"server-status": status_handler})
    response, exchange = route(router, "GET", "/server-status")
    assert response.body == b"status" and exchange.notes["handler"] == "server-status"
    response, _ = route(router, "GET", "/server-statusx")  # segment boundary: not the handler
    assert response.status == 404
    response, _ = route(router, "GET", "/server-status/off")  # SetHandler None → static → 404
    assert response.status == 404
    response, exchange = route(router, "GET", "/metrics")
    assert response.status == 500
    assert "metrics" in log.text()
    assert seen == ["/server-status"]


# -- Require --------------------------------------------------------------------------------------


def rule(kind, *values, negate=False) -> AccessRule:
    return AccessRule(kind, tuple(values), negate)


class Conn:
    def __init__(self, client: str, server: str = "192.0.2.1") -> None:
        self.client_addr = client
        self.server_addr = server


@pytest.mark.parametrize(
    ("rules", "client", "allowed"),
    [
        ((rule("all", "granted"),), "203.0.113.9", True),
        ((rule("all", "denied"),), "127.0.0.1", False),
        ((rule("ip", "10.0.0.0/8"),), "10.2.3.4", True),
        ((rule("ip", "10.0.0.0/8"),), "11.2.3.4", False),
        ((rule("ip", "10.1"),), "10.1.200.3", True),
        ((rule("ip", "10.1"),), "10.10.0.1", False),
        ((rule("ip", "10.0.0.0/255.0.0.0"),), "10.9.9.9", True),
        ((rule("ip", "192.168.1.5"),), "::ffff:192.168.1.5", True),
        ((rule("ip", "2001:db8::/32"),), "2001:db8::1", True),
        ((rule("ip", "2001:db8::/32"),), "2001:db9::1", False),
        ((rule("local"),), "127.0.0.5", True),
        ((rule("local"),), "::1", True),
        ((rule("local"),), "192.0.2.1", True),  # the server's own address
        ((rule("local"),), "192.0.2.2", False),
        ((rule("ip", "10.0.0.0/8"), rule("local")), "127.0.0.1", True),  # any of the lines
        ((rule("all", "granted"), rule("ip", "10.0.0.1", negate=True)), "10.0.0.1", False),
        ((rule("all", "granted"), rule("ip", "10.0.0.1", negate=True)), "10.0.0.2", True),
    ],
)
def test_access_rules(rules, client, allowed):
    check = AccessCheck(rules, ReverseDns(), FakeErrorLog())
    assert check.allows(Conn(client)) is allowed


def test_require_host_uses_double_reverse_name(monkeypatch):
    dns = ReverseDns()
    names = {"10.0.0.7": "web1.corp.example", "10.0.0.8": None}
    monkeypatch.setattr(dns, "name_of", lambda ip: names.get(ip))
    check = AccessCheck((rule("host", "corp.example"),), dns, FakeErrorLog())
    assert check.allows(Conn("10.0.0.7"))
    assert not check.allows(Conn("10.0.0.8"))
    exact = AccessCheck((rule("host", "web1.corp.example"),), dns, FakeErrorLog())
    assert exact.allows(Conn("10.0.0.7"))
    suffix_only = AccessCheck((rule("host", "orp.example"),), dns, FakeErrorLog())
    assert not suffix_only.allows(Conn("10.0.0.7"))


def test_require_before_handler_location_and_directory(tmp_path):
    docroot = tmp_path / "www"
    (docroot / "private").mkdir(parents=True)
    (docroot / "private" / "secret.txt").write_text("secret")
    (docroot / "public.txt").write_text("public")
    ran = []

    def status_handler(exchange):
        ran.append(True)
        exchange.respond("200 OK", [], b"status")

    log = FakeErrorLog()
    vhost = make_vhost(
        document_root=str(docroot),
        locations=(LocationSection("/server-status", False, "server-status", (rule("local"),)),),
        directories=(
            DirectorySection(
                str(docroot / "private"), False, None, None, None, (rule("ip", "10.9"),)
            ),
        ),
    )
    router = Router(make_config(vhost), log, extra_handlers={"server-status": status_handler})
    response, _ = route(router, "GET", "/server-status", client="10.0.0.7")
    assert response.status == 403 and not ran
    assert "AH01630" in str(log.lines[-1])
    response, _ = route(router, "GET", "/server-status", client="127.0.0.1")
    assert response.status == 200 and ran
    response, _ = route(router, "GET", "/private/secret.txt", client="10.0.0.7")
    assert response.status == 403 and b"secret" not in response.body
    response, _ = route(router, "GET", "/private/secret.txt", client="10.9.0.1")
    assert response.body == b"secret"
    response, _ = route(router, "GET", "/public.txt", client="10.0.0.7")
    assert response.body == b"public"


def test_alias_longest_prefix_and_docroot(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "static").mkdir()
    (docroot / "static" / "f.txt").write_text("docroot copy")
    icons = tmp_path / "icons"
    (icons / "small").mkdir(parents=True)
    (icons / "f.txt").write_text("icon")
    small = tmp_path / "small-icons"
    small.mkdir()
    (small / "f.txt").write_text("small icon")
    vhost = make_vhost(
        document_root=str(docroot),
        aliases=(
            AliasMapping("/static", str(icons)),
            AliasMapping("/static/small", str(small)),
        ),
    )
    router = Router(make_config(vhost), FakeErrorLog())
    assert route(router, "GET", "/static/f.txt")[0].body == b"icon"
    assert route(router, "GET", "/static/small/f.txt")[0].body == b"small icon"
    assert route(router, "GET", "/staticx/f.txt")[0].status == 404
    response, exchange = route(router, "GET", "/static/../static/f.txt")
    assert response.body == b"icon" and exchange.notes["handler"] == "static"


def test_alias_maps_before_any_wsgi_mount(tmp_path):
    """mod_alias runs before mod_wsgi: an Alias wins even over a longer mount below it."""
    files = tmp_path / "files"
    (files / "admin").mkdir(parents=True)
    (files / "admin" / "f.txt").write_text("file")
    holder: list = []
    router = mount_router(tmp_path, holder, aliases=(AliasMapping("/app", str(files)),))
    response, exchange = route(router, "GET", "/app/admin/f.txt")
    assert response.body == b"file" and exchange.notes["handler"] == "static"
    assert route(router, "GET", "/app/x")[0].status == 404
    route(router, "GET", "/apple")
    assert holder[0] == [("root", "", "/apple")]


@pytest.mark.parametrize(
    ("target", "status"),
    [("/../etc/passwd", 400), ("/%2e%2e/etc/passwd", 400), ("/a%2Fb", 404), ("/a%00", 404)],
)
def test_bad_paths_never_reach_a_handler(tmp_path, target, status):
    holder: list = []
    router = mount_router(tmp_path, holder)
    response, exchange = route(router, "GET", target)
    assert response.status == status
    assert holder[0] == []
    if status == 400:
        assert not exchange.keep_alive


def test_options_star():
    router = Router(make_config(), FakeErrorLog())
    response, _ = route(router, "OPTIONS", "*")
    assert response.status == 200 and "GET" in response.header("Allow")
