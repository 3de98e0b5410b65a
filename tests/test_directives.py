"""The directive registry: docs/directives.md is current, and every directive validates."""

from __future__ import annotations

import pathlib
from ipaddress import ip_network

import pytest

from mpmd.config import directives as reg
from mpmd.config import ignored
from mpmd.config.model import ListenAddress

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "directives.md"


def test_generated_docs_are_current() -> None:
    assert DOCS.read_text() == reg.render_markdown(), (
        "docs/directives.md is stale: run python -m mpmd.config.directives > docs/directives.md"
    )


# (directive, good args → expected value, bad args → error fragment). Every directive has a row.
GOOD = {
    "StartServers": (("4",), 4),
    "MinSpareServers": (("3",), 3),
    "MaxSpareServers": (("12",), 12),
    "MinSpareThreads": (("25",), 25),
    "MaxSpareThreads": (("75",), 75),
    "ThreadsPerChild": (("25",), 25),
    "ThreadLimit": (("64",), 64),
    "ServerLimit": (("16",), 16),
    "MaxRequestWorkers": (("150",), 150),
    "MaxConnectionsPerChild": (("0",), 0),
    "AsyncRequestWorkerFactor": (("1.5",), 1.5),
    "GracefulShutdownTimeout": (("30",), 30),
    "ListenBacklog": (("1024",), 1024),
    "MaxMemoryPerChild": (("512M",), 512 << 20),
    "Listen": (("[::1]:8080",), (ListenAddress("::1", 8080), "http")),
    "ListenCoresBucketsRatio": (("1",), 1),
    "ListenUnixMode": (("0660",), 0o660),
    "ListenUnixOwner": (("www-data:adm",), "www-data:adm"),
    "PidFile": (("run/x.pid",), "run/x.pid"),
    "ScoreBoardFile": (("run/sb",), "run/sb"),
    "ServerRoot": (("/srv",), "/srv"),
    "ServerName": (("www.example.com:80",), "www.example.com:80"),
    "ServerAlias": (("a.example", "b.example"), ("a.example", "b.example")),
    "ServerAdmin": (("root@example.com",), "root@example.com"),
    "User": (("www-data",), "www-data"),
    "Group": (("#33",), "#33"),
    "LoadModule": (("status_module", "mod_status.so"), ("status_module", "mod_status.so")),
    "ExtendedStatus": (("on",), True),
    "Timeout": (("2mi",), 120.0),
    "KeepAlive": (("Off",), False),
    "KeepAliveTimeout": (("100ms",), 0.1),
    "MaxKeepAliveRequests": (("0",), 0),
    "RequestReadTimeout": (("header=10-20,MinRate=100",), {"header": (10, 20, 100)}),
    "LimitRequestLine": (("4094",), 4094),
    "LimitRequestFieldSize": (("4094",), 4094),
    "LimitRequestFields": (("50",), 50),
    "LimitRequestBody": (("0",), 0),
    "DocumentRoot": (("/var/www",), "/var/www"),
    "Alias": (("/icons/", "/usr/share/icons/"), ("/icons/", "/usr/share/icons/")),
    "DirectoryIndex": (("index.html", "index.htm"), ("index.html", "index.htm")),
    "Options": (("+Indexes", "-followsymlinks"), (("+", "Indexes"), ("-", "FollowSymLinks"))),
    "AllowOverride": (("None",), ("None",)),
    "SetHandler": (("server-status",), "server-status"),
    "Require": (("not", "ip", "10.1"), (True, "ip", ("10.1.0.0/16",))),
    "ErrorLog": (("|/usr/bin/rotatelogs x 86400",), "|/usr/bin/rotatelogs x 86400"),
    "LogLevel": (("info", "ssl:warn"), "info"),
    "LogFormat": (("%h %l", "short"), ("%h %l", "short")),
    "CustomLog": (("logs/a", "common", "env=!nolog"), ("logs/a", "common", "env=!nolog")),
    "TransferLog": (("logs/t",), "logs/t"),
    "BufferedLogs": (("On",), True),
    "WSGIScriptAlias": (
        ("/app", "app.wsgi", "process-group=x"),
        ("/app", "app.wsgi", ("process-group=x",)),
    ),
    "WSGIApp": (("/", "pkg.mod:app"), ("/", "pkg.mod:app")),
    "ASGIApp": (("/api", "pkg.asgi:app"), ("/api", "pkg.asgi:app")),
    "ASGILifespan": (("On",), "on"),
    "WebSocketPingInterval": (("30",), 30.0),
    "WebSocketPingTimeout": (("500ms",), 0.5),
    "WebSocketMaxMessageSize": (("1M",), 1 << 20),
    "WebSocketPerMessageDeflate": (("Off",), False),
    "WebSocketCloseTimeout": (("2",), 2.0),
    "WSGIPythonPath": (("/srv/a:/srv/b",), "/srv/a:/srv/b"),
    "WSGIPreload": (("On",), True),
    "SSLEngine": (("On",), "on"),
    "SSLCertificateFile": (("/etc/ssl/a.pem",), "/etc/ssl/a.pem"),
    "SSLCertificateKeyFile": (("/etc/ssl/a.key",), "/etc/ssl/a.key"),
    "SSLCertificateChainFile": (("chain.pem",), "chain.pem"),
    "SSLCACertificateFile": (("ca.pem",), "ca.pem"),
    "SSLCACertificatePath": (("/etc/ssl/certs",), "/etc/ssl/certs"),
    "SSLVerifyClient": (("on",), "require"),
    "SSLVerifyDepth": (("10",), 10),
    "SSLProtocol": (("-all", "+TLSv1.3"), (frozenset({"TLSv1.3"}), ())),
    "SSLCipherSuite": (("tlsv1.3", "TLS_AES_256_GCM_SHA384"), ("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
    "SSLHonorCipherOrder": (("on",), True),
    "SSLSessionTickets": (("off",), False),
    "SSLSessionCache": (("shmcb:/run/c(512000)",), "shmcb:/run/c(512000)"),
    "SSLOptions": (("+StdEnvVars", "-exportcertdata"), (("+", "StdEnvVars"), ("-", "ExportCertData"))),
    "SSLStrictSNIVHostCheck": (("On",), True),
    "ProxyPass": (("/app", "balancer://c", "lbmethod=bytraffic"),
                  ("/app", "balancer://c", "lbmethod=bytraffic")),
    "ProxyPassMatch": (("^/(.*)$", "http://h/$1"), ("^/(.*)$", "http://h/$1")),
    "ProxyPassReverse": (("/app", "http://h/"), ("/app", "http://h/")),
    "ProxyPreserveHost": (("On",), True),
    "ProxyTimeout": (("30",), 30.0),
    "ProxyAddHeaders": (("off",), False),
    "ProxyRequests": (("Off",), False),
    "ProxyVia": (("full",), "Full"),
    "ProxyErrorOverride": (("On", "502", "503"), (True, frozenset({502, 503}))),
    "ProxyStatus": (("Full",), True),
    "BalancerMember": (("http://h:81", "route=a"), ("http://h:81", "route=a")),
    "ProxySet": (("balancer://c", "nonce=None"), ("balancer://c", "nonce=None")),
    "ProxyHCExpr": (("ok234", "{%{REQUEST_STATUS}", "=~", "/^[234]/}"),
                    ("ok234", "%{REQUEST_STATUS} =~ /^[234]/")),
    "ProxyHCTemplate": (("tcp5", "hcmethod=TCP"), ("tcp5", "hcmethod=TCP")),
    "ProxyHCTPsize": (("0",), 0),
    "RemoteIPHeader": (("X-Forwarded-For",), "x-forwarded-for"),
    "RemoteIPProxiesHeader": (("X-Forwarded-By",), "x-forwarded-by"),
    "RemoteIPTrustedProxy": (("10.1", "192.0.2.0/24"), (ip_network("10.1.0.0/16"), ip_network("192.0.2.0/24"))),
    "RemoteIPInternalProxy": (("::1",), (ip_network("::1/128"),)),
    "RemoteIPTrustedProxyList": (("conf/trusted.lst",), "conf/trusted.lst"),
    "RemoteIPInternalProxyList": (("internal.lst",), "internal.lst"),
    "RemoteIPProxyProtocol": (("on",), True),
    "RemoteIPProxyProtocolExceptions": (("10.0.0.0/255.0.0.0",), (ip_network("10.0.0.0/8"),)),
}  # fmt: skip
BAD = {
    "StartServers": (("two",), 'StartServers "two" must be an integer'),
    "MinSpareServers": (("1.5",), "must be an integer"),
    "MaxSpareServers": (("x",), "must be an integer"),
    "MinSpareThreads": (("",), "must be an integer"),
    "MaxSpareThreads": (("ten",), "must be an integer"),
    "ThreadsPerChild": (("25", "26"), "ThreadsPerChild takes one argument"),
    "ThreadLimit": ((), "ThreadLimit takes one argument"),
    "ServerLimit": (("16k",), "must be an integer"),
    "MaxRequestWorkers": (("lots",), "must be an integer"),
    "MaxConnectionsPerChild": (("-",), "must be an integer"),
    "AsyncRequestWorkerFactor": (
        ("0",),
        "AsyncRequestWorkerFactor argument must be a positive number",
    ),
    "GracefulShutdownTimeout": (("soon",), "must be an integer"),
    "ListenBacklog": (("0",), "ListenBacklog must be > 0"),
    "MaxMemoryPerChild": (("lots",), "must be a size"),
    "Listen": (("127.0.0.1:",), "Port must be specified"),
    "ListenCoresBucketsRatio": (("-1",), "must be a non-negative integer"),
    "ListenUnixMode": (("rw-rw----",), "must be an octal mode"),
    "ListenUnixOwner": ((":",), "takes user[:group]"),
    "PidFile": (("a", "b"), "PidFile takes one argument"),
    "ScoreBoardFile": ((), "takes one argument"),
    "ServerRoot": (("a", "b"), "takes one argument"),
    "ServerName": ((), "takes one argument"),
    "ServerAlias": ((), "ServerAlias requires at least one argument"),
    "ServerAdmin": (("a", "b"), "takes one argument"),
    "User": ((), "takes one argument"),
    "Group": (("a", "b"), "takes one argument"),
    "LoadModule": (("status_module",), "LoadModule takes two arguments"),
    "ExtendedStatus": (("yes",), "ExtendedStatus must be On or Off"),
    "Timeout": (("soon",), "Timeout has wrong format"),
    "KeepAlive": (("maybe",), "KeepAlive must be On or Off"),
    "KeepAliveTimeout": (("5 minutes",), "KeepAliveTimeout has wrong format"),
    "MaxKeepAliveRequests": (("many",), "must be an integer"),
    "RequestReadTimeout": (("header=20-40",), "Must set MinRate option if using timeout range"),
    "LimitRequestLine": (("-1",), 'LimitRequestLine "-1" must be a non-negative integer'),
    "LimitRequestFieldSize": (("-5",), "must be a non-negative integer"),
    "LimitRequestFields": (("-5",), "must be a non-negative integer"),
    "LimitRequestBody": (("1G",), "must be an integer"),
    "DocumentRoot": (("a", "b"), "DocumentRoot takes one argument"),
    "Alias": (("/x",), "Alias takes two arguments"),
    "DirectoryIndex": ((), "DirectoryIndex requires at least one argument"),
    "Options": (("+Indexes", "FollowSymLinks"), "Either all Options must start with + or -"),
    "AllowOverride": (("Everything",), "Illegal override option Everything"),
    "SetHandler": (("a", "b"), "SetHandler takes one argument"),
    "Require": (("all", "maybe"), "Argument for 'Require all' must be 'granted' or 'denied'"),
    "ErrorLog": ((), "ErrorLog takes one argument"),
    "LogLevel": (("verbose",), "LogLevel requires level keyword"),
    "LogFormat": (("a", "b", "c"), "LogFormat takes 1-2 arguments"),
    "CustomLog": (("logs/a", "common", "when=night"), "error in condition clause"),
    "TransferLog": (("a", "b"), "TransferLog takes one argument"),
    "BufferedLogs": (("2",), "BufferedLogs must be On or Off"),
    "WSGIScriptAlias": (("/app",), "WSGIScriptAlias requires at least two arguments"),
    "WSGIApp": (("/", "not a target"), "must be module:callable"),
    "ASGIApp": (("/", "not a target"), "must be module:callable"),
    "ASGILifespan": (("sometimes",), "must be one of auto, on, off"),
    "WebSocketPingInterval": (("soon",), "has wrong format"),
    "WebSocketPingTimeout": (("-1",), "has wrong format"),
    "WebSocketMaxMessageSize": (("big",), "must be a size"),
    "WebSocketPerMessageDeflate": (("maybe",), "must be On or Off"),
    "WebSocketCloseTimeout": (("x",), "has wrong format"),
    "WSGIPythonPath": ((), "takes one argument"),
    "WSGIPreload": (("sometimes",), "WSGIPreload must be On or Off"),
    "SSLEngine": (("yes",), "Argument must be On, Off, or Optional"),
    "SSLCertificateFile": (("a", "b"), "SSLCertificateFile takes one argument"),
    "SSLCertificateKeyFile": ((), "SSLCertificateKeyFile takes one argument"),
    "SSLCertificateChainFile": ((), "takes one argument"),
    "SSLCACertificateFile": ((), "takes one argument"),
    "SSLCACertificatePath": ((), "takes one argument"),
    "SSLVerifyClient": (("maybe",), "SSLVerifyClient: Invalid argument 'maybe'"),
    "SSLVerifyDepth": (("-1",), "SSLVerifyDepth: Invalid argument '-1'"),
    "SSLProtocol": (("+SSLv2",), "SSLProtocol: SSLv2 is no longer supported"),
    "SSLCipherSuite": (("TLSv1.2", "HIGH"), "protocol 'TLSv1.2' not supported"),
    "SSLHonorCipherOrder": (("x",), "must be On or Off"),
    "SSLSessionTickets": (("x",), "must be On or Off"),
    "SSLSessionCache": (("memory",), "SSLSessionCache: Invalid argument: 'memory'"),
    "SSLOptions": (("+FakeBasic",), "SSLOptions: Illegal option 'FakeBasic'"),
    "SSLStrictSNIVHostCheck": (("x",), "must be On or Off"),
    "ProxyPass": ((), "ProxyPass requires at least one argument"),
    "ProxyPassMatch": ((), "ProxyPassMatch requires at least one argument"),
    "ProxyPassReverse": (("a", "b", "c", "d"), "takes one, two or three arguments"),
    "ProxyPreserveHost": (("yes",), "ProxyPreserveHost must be On or Off"),
    "ProxyTimeout": (("0",), "Proxy Timeout must be at least 1 second."),
    "ProxyAddHeaders": (("2",), "ProxyAddHeaders must be On or Off"),
    "ProxyRequests": (("On",), "mpmd is a reverse proxy only; forward proxying is not supported"),
    "ProxyVia": (("maybe",), "ProxyVia must be one of: off | on | full | block"),
    "ProxyErrorOverride": (("Off", "502"), "status codes must follow a value of 'on'"),
    "ProxyStatus": (("extended",), "ProxyStatus must be one of: off | on | full"),
    "BalancerMember": ((), "BalancerMember requires at least one argument"),
    "ProxySet": ((), "ProxySet requires at least one argument"),
    "ProxyHCExpr": (("ok", "{x", "y}", "z"), "error: extra parameter(s)"),
    "ProxyHCTemplate": ((), "ProxyHCTemplate requires at least one argument"),
    "ProxyHCTPsize": (("-2",), "Invalid ProxyHCTPsize parameter. Parameter must be >= 0"),
    "RemoteIPHeader": (("a", "b"), "RemoteIPHeader takes one argument"),
    "RemoteIPProxiesHeader": ((), "RemoteIPProxiesHeader takes one argument"),
    "RemoteIPTrustedProxy": (
        ("10.0.0.0/33",),
        "RemoteIP: Error parsing IP 10.0.0.0/33 (The specified network mask is invalid. error) for RemoteIPTrustedProxy",
    ),
    "RemoteIPInternalProxy": (("1.2.3.4.5",), "(The specified IP address is invalid. error)"),
    "RemoteIPTrustedProxyList": ((), "RemoteIPTrustedProxyList takes one argument"),
    "RemoteIPInternalProxyList": (("a", "b"), "RemoteIPInternalProxyList takes one argument"),
    "RemoteIPProxyProtocol": (("yes",), "RemoteIPProxyProtocol must be On or Off"),
    "RemoteIPProxyProtocolExceptions": (
        ("lb.internal",),
        "ip address 'lb.internal' appears to be invalid",
    ),
}


def _run(name: str, args: tuple[str, ...]):
    directive = reg.lookup(name)
    assert directive is not None
    directive.check_arity(args)
    return directive.validate(directive.name, args)


def test_every_directive_has_validation_cases() -> None:
    names = {d.name for d in reg.DIRECTIVES}
    assert names == set(GOOD) == set(BAD)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_value(name: str) -> None:
    args, expected = GOOD[name]
    assert _run(name, args) == expected


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_value(name: str) -> None:
    args, fragment = BAD[name]
    with pytest.raises(reg.DirectiveValueError) as err:
        _run(name, args)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("header=10-5,MinRate=1", "Maximum timeout must be larger than initial timeout"),
        ("body=10,MinRate=0", "Minimum data rate must be larger than 0"),
        ("body=ten", "Value 'ten' not numerical"),
        ("head=10", "Unknown RequestReadTimeout parameter 'head'"),
        ("header", "Parameter must be in the form 'key=value'"),
    ],
)
def test_request_read_timeout_errors(text: str, message: str) -> None:
    with pytest.raises(reg.DirectiveValueError, match=message):
        _run("RequestReadTimeout", (text,))


def test_lookup_is_case_insensitive_and_knows_aliases() -> None:
    assert reg.lookup("maxclients") is reg.lookup("MaxRequestWorkers")
    assert reg.lookup("MAXREQUESTSPERCHILD").name == "MaxConnectionsPerChild"


def test_unknown_directive_suggests_closest_name() -> None:
    message = reg.unknown_message("MaxRequestWorker")
    assert message.startswith("Invalid command 'MaxRequestWorker', perhaps misspelled")
    assert message.endswith("(did you mean MaxRequestWorkers?)")
    assert "did you mean" not in reg.unknown_message("Frobnicate")


def test_ignored_directives_name_their_module() -> None:
    assert ignored.ignored_module("rewriteengine") == "mod_rewrite"
    assert ignored.ignored_module("AddType") == "mod_mime"
    assert ignored.ignored_module("FilesMatch") == "core"
    assert ignored.ignored_module("MaxRequestWorkers") is None


def test_options_resolution() -> None:
    base = frozenset({"FollowSymLinks"})
    assert reg.apply_options(base, _run("Options", ("+Indexes",))) == {"FollowSymLinks", "Indexes"}
    assert reg.apply_options(base, _run("Options", ("None",))) == frozenset()
    assert reg.apply_options(base, _run("Options", ("All",))) == reg.OPTIONS_ALL
