"""config/build.py: MPM choice, Apache's clamping and warnings, contexts, inheritance, defaults."""

from __future__ import annotations

import dataclasses
import os
import pathlib

import pytest

from mpmd.config import directives as reg
from mpmd.config.build import DEFAULT_SITE, default_pid_file, load_config
from mpmd.config.model import MpmSettings, ServerConfig
from mpmd.config.mpm_limits import clamp_mpm
from mpmd.config.syntax import ConfigError


def _load(tmp_path: pathlib.Path, text: str, **kwargs) -> ServerConfig:
    conf = tmp_path / "httpd.conf"
    conf.write_text(text)
    return load_config(str(conf), **kwargs)


def _error(tmp_path: pathlib.Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    return str(err.value)


def _raw(mpm: str, **values: int) -> dict[str, float]:
    defaults = {
        "prefork": dict(StartServers=5, MinSpareServers=5, MaxSpareServers=10, ServerLimit=256,
                        MaxRequestWorkers=256),
        "worker": dict(StartServers=3, MinSpareThreads=75, MaxSpareThreads=250,
                       ThreadsPerChild=25, ThreadLimit=64, ServerLimit=16, MaxRequestWorkers=400),
    }[("prefork" if mpm == "prefork" else "worker")]  # fmt: skip
    common = dict(MaxConnectionsPerChild=0, GracefulShutdownTimeout=0, ListenBacklog=511,
                  MaxMemoryPerChild=0)  # fmt: skip
    return {**defaults, **common, **values}


# --- MPM selection and Apache's defaults (reference 3.1) ------------------------------------


@pytest.mark.parametrize(
    ("mpm", "expected"),
    [
        ("prefork", dict(start_servers=5, min_spare_servers=5, max_spare_servers=10,
                         server_limit=256, max_request_workers=256, threads_per_child=1)),
        ("worker", dict(start_servers=3, min_spare_threads=75, max_spare_threads=250,
                        threads_per_child=25, thread_limit=64, server_limit=16,
                        max_request_workers=400)),
        ("event", dict(start_servers=3, min_spare_threads=75, max_spare_threads=250,
                       threads_per_child=25, thread_limit=64, server_limit=16,
                       max_request_workers=400, async_request_worker_factor=2.0)),
    ],
)  # fmt: skip
def test_compiled_in_defaults(tmp_path, mpm, expected) -> None:
    config = _load(tmp_path, f"LoadModule mpm_{mpm}_module x.so\nListen 8080\n")
    assert config.mpm.name == mpm
    for name, value in expected.items():
        assert getattr(config.mpm, name) == value, name
    assert config.warnings == ()


def test_mpm_from_option_then_event(tmp_path) -> None:
    assert _load(tmp_path, "Listen 80\n", mpm="prefork").mpm.name == "prefork"
    assert _load(tmp_path, "Listen 80\n").mpm.name == "event"
    config = _load(tmp_path, "LoadModule mpm_worker_module x.so\n", mpm="prefork")
    assert config.mpm.name == "worker"
    assert any("--mpm prefork ignored" in w for w in config.warnings)


def test_two_mpms_is_an_error(tmp_path) -> None:
    text = "LoadModule mpm_worker_module a.so\nLoadModule mpm_event_module b.so\n"
    assert _error(tmp_path, text).endswith("httpd.conf:2: More than one MPM loaded.")


# --- clamping: one test per rule of reference 2.4 -------------------------------------------


def test_server_limit_above_compile_time_limit() -> None:
    m, w = clamp_mpm("event", _raw("event", ServerLimit=30000))
    assert m.server_limit == 20000
    assert w[0] == ("AH00497: WARNING: ServerLimit of 30000 exceeds compile-time limit of "
                    "20000 servers, decreasing to 20000.")  # fmt: skip


def test_server_limit_below_one() -> None:
    m, w = clamp_mpm("prefork", _raw("prefork", ServerLimit=0, MaxRequestWorkers=1))
    assert m.server_limit == 1
    assert w == ["AH00177: WARNING: ServerLimit of 0 not allowed, increasing to 1."]


def test_thread_limit_above_max_and_below_one() -> None:
    m, w = clamp_mpm("worker", _raw("worker", ThreadLimit=20001))
    assert m.thread_limit == 20000 and w[0].startswith("AH00305: WARNING: ThreadLimit of 20001")
    m, w = clamp_mpm("event", _raw("event", ThreadLimit=0, ThreadsPerChild=1, MaxRequestWorkers=16))
    assert m.thread_limit == 1
    assert w == ["AH00504: WARNING: ThreadLimit of 0 not allowed, increasing to 1."]


def test_threads_per_child_above_thread_limit() -> None:
    m, w = clamp_mpm("event", _raw("event", ThreadsPerChild=100, MaxRequestWorkers=6400))
    assert m.threads_per_child == 64
    assert w[0] == ("AH00507: WARNING: ThreadsPerChild of 100 exceeds ThreadLimit of 64 threads, "
                    "decreasing to 64. To increase, please see the ThreadLimit directive.")  # fmt: skip


def test_threads_per_child_below_one() -> None:
    m, w = clamp_mpm("worker", _raw("worker", ThreadsPerChild=0, MaxRequestWorkers=16))
    assert m.threads_per_child == 1
    assert w == ["AH00312: WARNING: ThreadsPerChild of 0 not allowed, increasing to 1."]


def test_max_request_workers_below_threads_per_child() -> None:
    m, w = clamp_mpm("event", _raw("event", MaxRequestWorkers=10))
    assert m.max_request_workers == 25
    assert w == ["AH00511: WARNING: MaxRequestWorkers of 10 is less than ThreadsPerChild of 25, "
                 "increasing to 25. MaxRequestWorkers must be at least as large as the number of "
                 "threads in a single server."]  # fmt: skip


def test_max_request_workers_rounded_down_to_a_multiple() -> None:
    m, w = clamp_mpm("worker", _raw("worker", MaxRequestWorkers=160))
    assert m.max_request_workers == 150 and m.active_daemons_limit == 6
    assert w == ["AH00316: WARNING: MaxRequestWorkers of 160 is not an integer multiple of "
                 "ThreadsPerChild of 25, decreasing to nearest multiple 150, for a maximum of 6 "
                 "servers."]  # fmt: skip


def test_max_request_workers_capped_by_server_limit_threaded() -> None:
    m, w = clamp_mpm("event", _raw("event", MaxRequestWorkers=500))
    assert m.max_request_workers == 400 and m.active_daemons_limit == 16
    assert w == ["AH00515: WARNING: MaxRequestWorkers of 500 would require 20 servers and would "
                 "exceed ServerLimit of 16, decreasing to 400. To increase, please see the "
                 "ServerLimit directive."]  # fmt: skip


def test_max_request_workers_capped_by_server_limit_prefork() -> None:
    m, w = clamp_mpm("prefork", _raw("prefork", MaxRequestWorkers=300))
    assert m.max_request_workers == 256
    assert w == ["AH00180: WARNING: MaxRequestWorkers of 300 exceeds ServerLimit value of 256 "
                 "servers, decreasing MaxRequestWorkers to 256. To increase, please see the "
                 "ServerLimit directive."]  # fmt: skip


def test_prefork_max_request_workers_below_one() -> None:
    m, w = clamp_mpm("prefork", _raw("prefork", MaxRequestWorkers=0))
    assert m.max_request_workers == 1
    assert w == ["AH00182: WARNING: MaxRequestWorkers of 0 not allowed, increasing to 1."]


def test_start_servers_below_one() -> None:
    m, w = clamp_mpm("prefork", _raw("prefork", StartServers=0))
    assert m.start_servers == 1
    assert w == ["AH00184: WARNING: StartServers of 0 not allowed, increasing to 1."]
    m, w = clamp_mpm("event", _raw("event", StartServers=-2))
    assert m.start_servers == 1
    assert w == ["AH00517: WARNING: StartServers of -2 not allowed, increasing to 1."]


def test_min_spare_below_one() -> None:
    m, w = clamp_mpm("prefork", _raw("prefork", MinSpareServers=0))
    assert m.min_spare_servers == 1
    assert w == ["AH00186: WARNING: MinSpareServers of 0 not allowed, increasing to 1 to avoid "
                 "almost certain server failure. Please read the documentation."]  # fmt: skip
    m, w = clamp_mpm("event", _raw("event", MinSpareThreads=0))
    assert m.min_spare_threads == 1 and w[0].startswith("AH00519: WARNING: MinSpareThreads of 0")


def test_max_spare_servers_raised_to_min_plus_one() -> None:
    m, w = clamp_mpm("prefork", _raw("prefork", MinSpareServers=10, MaxSpareServers=5))
    assert (m.min_spare_servers, m.max_spare_servers) == (10, 11)
    assert w == []


def test_max_spare_threads_raised_to_min_plus_tpc_plus_one() -> None:
    m, w = clamp_mpm("worker", _raw("worker", MinSpareThreads=50, MaxSpareThreads=60))
    assert m.max_spare_threads == 50 + 25 + 1
    assert w == []


def test_start_servers_capped_at_daemon_limit() -> None:
    m, _ = clamp_mpm("event", _raw("event", StartServers=10, MaxRequestWorkers=100))
    assert m.start_servers == 4
    m, _ = clamp_mpm("prefork", _raw("prefork", StartServers=20, MaxRequestWorkers=8))
    assert m.start_servers == 8


def test_deprecated_aliases_note(tmp_path) -> None:
    config = _load(tmp_path, "MaxClients 150\nMaxRequestsPerChild 10\nListen 80\n")
    assert config.mpm.max_request_workers == 150 and config.mpm.max_connections_per_child == 10
    assert "AH00521: MaxClients is deprecated, use MaxRequestWorkers instead." in config.warnings
    assert ("AH00545: MaxRequestsPerChild is deprecated, use MaxConnectionsPerChild instead."
            in config.warnings)  # fmt: skip


def _previous(**changes) -> MpmSettings:
    settings, _ = clamp_mpm("event", _raw("event"))
    fields = {f: getattr(settings, f) for f in MpmSettings.__slots__}
    return MpmSettings(**{**fields, **changes})


def test_restart_form_and_fixed_limits() -> None:
    prev = _previous(server_limit=16, thread_limit=64)
    m, w = clamp_mpm("event", _raw("event", ServerLimit=32, ThreadLimit=128,
                                   MaxRequestWorkers=160), previous=prev)  # fmt: skip
    assert (m.server_limit, m.thread_limit, m.max_request_workers) == (16, 64, 150)
    assert w == [
        "AH00501: changing ServerLimit to 32 from original value of 16 not allowed during restart",
        "AH00506: changing ThreadLimit to 128 from original value of 64 not allowed during restart",
        "AH00514: MaxRequestWorkers of 160 is not an integer multiple of ThreadsPerChild of 25, "
        "decreasing to nearest multiple 150",
    ]


def test_mpm_cannot_change_on_restart(tmp_path) -> None:
    first = _load(tmp_path, "Listen 80\n")
    conf = tmp_path / "httpd.conf"
    conf.write_text("LoadModule mpm_prefork_module x.so\nListen 80\n")
    with pytest.raises(ConfigError, match=r"The MPM cannot be changed during restart\."):
        load_config(str(conf), previous=first)


# --- errors with FILE:LINE ----------------------------------------------------------------


def test_wrong_context(tmp_path) -> None:
    text = "Listen 80\n<VirtualHost *:80>\n  MaxRequestWorkers 10\n</VirtualHost>\n"
    assert _error(tmp_path, text).endswith(
        "httpd.conf:3: MaxRequestWorkers cannot occur within <VirtualHost> section"
    )
    assert _error(tmp_path, "Require all granted\n").endswith(
        "httpd.conf:1: Require not allowed here"
    )
    text = "<Location />\n<Location /x>\n</Location>\n</Location>\n"
    assert _error(tmp_path, text).endswith(":2: <Location> cannot occur within <Location> section")


def test_bad_number_and_arity(tmp_path) -> None:
    assert _error(tmp_path, "\nStartServers two\n").endswith(
        'httpd.conf:2: StartServers "two" must be an integer'
    )
    assert _error(tmp_path, "KeepAlive\n").endswith("httpd.conf:1: KeepAlive must be On or Off")


def test_unknown_directive(tmp_path) -> None:
    message = _error(tmp_path, "Listen 80\nMaxRequestWorker 10\n")
    assert message.endswith("(did you mean MaxRequestWorkers?)")
    assert ":2: Invalid command 'MaxRequestWorker'" in message


# --- settings ------------------------------------------------------------------------------


def test_ignored_directives_warn_once_per_name(tmp_path) -> None:
    config = _load(tmp_path, "Listen 80\nAddType a/b .x\nAddType a/c .y\nRewriteEngine On\n")
    ignored = [w for w in config.warnings if "not implemented by mpmd" in w]
    assert len(ignored) == 2
    assert ignored[0].startswith(f"{tmp_path}/httpd.conf:2: AddType (mod_mime)")


def test_vhost_inherits_and_overrides(tmp_path) -> None:
    config = _load(
        tmp_path,
        """
Listen 8080
Timeout 30
KeepAliveTimeout 100ms
RequestReadTimeout header=5-10,MinRate=100
LogFormat "%h %>s" short
CustomLog logs/main.log short
<VirtualHost *:8080>
  ServerName a.example
  ServerAlias b.example c.example
  KeepAlive Off
  RequestReadTimeout body=7
</VirtualHost>
<VirtualHost *:8080>
  ServerName d.example:81
  CustomLog logs/d.log combined
</VirtualHost>
""",
    )
    main, a, d = config.main, *config.vhosts
    assert main.http.keep_alive_timeout == 0.1 and main.http.timeout == 30
    assert a.http.timeout == 30 and a.http.keep_alive is False
    assert a.http.header_read_timeout.timeout == 5 and a.http.body_read_timeout.timeout == 7
    assert a.server_aliases == ("b.example", "c.example") and a.port == 8080
    assert a.access_logs == main.access_logs
    assert main.access_logs[0].format == "%h %>s"
    assert main.access_logs[0].target == str(tmp_path / "logs/main.log")
    assert d.port == 81 and d.access_logs[0].format.endswith('"%{User-Agent}i"')


def test_request_read_timeout_defaults(tmp_path) -> None:
    http = _load(tmp_path, "Listen 80\n").main.http
    assert (http.header_read_timeout.timeout, http.header_read_timeout.max_timeout,
            http.header_read_timeout.min_rate) == (20, 40, 500)  # fmt: skip
    assert (http.body_read_timeout.timeout, http.body_read_timeout.min_rate) == (20, 500)


def test_unknown_log_nickname_is_a_literal_format(tmp_path) -> None:
    config = _load(tmp_path, "Listen 80\nCustomLog logs/x nosuchname\nCustomLog logs/y CLF\n")
    assert [log.format for log in config.main.access_logs] == [
        "nosuchname",
        '%h %l %u %t "%r" %>s %b',
    ]


def test_sections_and_require(tmp_path) -> None:
    config = _load(
        tmp_path,
        """
Listen 80
<Location /server-status>
  SetHandler server-status
  Require local
  Require ip 10.0.0.0/8 192.168
</Location>
<Directory /var/www/>
  Options Indexes FollowSymLinks
  DirectoryIndex index.html
  DirectoryIndex index.htm
  Require all granted
</Directory>
<LocationMatch "^/private">
  Require not host example.com
  Require valid-user
</LocationMatch>
""",
    )
    status, private = config.main.locations
    assert status.handler == "server-status"
    assert [(r.kind, r.values) for r in status.require] == [
        ("local", ()), ("ip", ("10.0.0.0/8", "192.168.0.0/16"))]  # fmt: skip
    (www,) = config.main.directories
    assert www.path == "/var/www" and www.options == {"Indexes", "FollowSymLinks"}
    assert www.directory_index == ("index.html", "index.htm")
    assert private.regex and private.require[0].negate
    assert private.require[1].values == ("denied",)
    assert any("Require valid-user is not implemented" in w for w in config.warnings)


def test_relative_paths_resolve_against_server_root(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    config = _load(tmp_path, """
Listen 80
PidFile run/x.pid
ErrorLog logs/err
DocumentRoot htdocs
ScoreBoardFile run/sb
WSGIScriptAlias /app app/site.wsgi
WSGIApp /api pkg.api:app
""", server_root=str(root))  # fmt: skip
    assert config.server_root == str(root)
    assert config.pid_file == str(root / "run/x.pid")
    assert config.main.error_log == str(root / "logs/err")
    assert config.main.document_root == str(root / "htdocs")
    assert config.scoreboard_file == str(root / "run/sb")
    assert [(m.url_path, m.target, m.kind) for m in config.main.wsgi_mounts] == [
        ("/app", str(root / "app/site.wsgi"), "script"), ("/api", "pkg.api:app", "app")]  # fmt: skip


def test_config_file_defaults(tmp_path) -> None:
    config = _load(tmp_path, "Listen 80\n")
    assert config.server_root == str(tmp_path)
    assert config.pid_file == str(tmp_path / "logs/httpd.pid")
    assert config.main.error_log == str(tmp_path / "logs/error_log")
    assert config.main.access_logs == ()


def test_absent_directives_take_the_registry_default(tmp_path, monkeypatch) -> None:
    """Change each default in the registry: the built config follows, as build.py restates none."""
    changed = {
        "PidFile": "run/other.pid",
        "ErrorLog": "logs/other_log",
        "LogLevel": "info",
        "ServerAdmin": "admin@example.com",
        "DocumentRoot": "public",
        "DirectoryIndex": ("default.htm",),
        "Options": ("Indexes",),
        "ExtendedStatus": True,
        "BufferedLogs": True,
        "WSGIPreload": True,
        "KeepAlive": False,
        "RequestReadTimeout": {"handshake": (0, 0, 0), "header": (5, 0, 0), "body": (7, 0, 0)},
        "ListenBacklog": 64,
    }
    for name, value in changed.items():
        directive = dataclasses.replace(reg.BY_NAME[name.lower()], default=value)
        monkeypatch.setitem(reg.BY_NAME, name.lower(), directive)
    config = _load(tmp_path, "Listen 80\n<Directory /srv>\n  Options +ExecCGI\n</Directory>\n")
    main = config.main
    assert config.pid_file == str(tmp_path / "run/other.pid")
    assert main.error_log == str(tmp_path / "logs/other_log")
    assert main.log_level == "info"
    assert main.server_admin == "admin@example.com"
    assert main.document_root == str(tmp_path / "public")
    assert main.directory_index == ("default.htm",)
    assert main.options == {"Indexes"}
    assert main.directories[0].options == {"Indexes", "ExecCGI"}
    assert config.extended_status and config.buffered_logs and config.wsgi_preload
    assert main.http.keep_alive is False
    assert main.http.header_read_timeout.timeout == 5
    assert main.http.body_read_timeout.timeout == 7
    assert config.mpm.listen_backlog == 64


def test_built_in_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    config = load_config(None, app="pkg.mod:app")
    assert config.config_file == ""
    assert [(a.host, a.port) for a in config.listeners] == [("127.0.0.1", 8080)]
    assert config.main.document_root == DEFAULT_SITE and os.path.isdir(DEFAULT_SITE)
    assert config.main.error_log == "stderr" and config.main.access_logs == ()
    assert config.pid_file == default_pid_file() == str(tmp_path / f"mpmd-{os.getuid()}.pid")
    assert config.main.wsgi_mounts[0].target == "pkg.mod:app"
    assert config.main.source == "(built-in)"


def test_command_line_listen_and_directives(tmp_path) -> None:
    config = load_config(None, pre_directives=["Listen 9000"], post_directives=["ServerLimit 4"])
    assert [(a.host, a.port) for a in config.listeners] == [("", 9000)]
    assert config.mpm.server_limit == 4
    config = _load(tmp_path, "Listen 80\n", listen=["127.0.0.1:9001", "[::1]:9002"])
    assert [(a.host, a.port) for a in config.listeners] == [("127.0.0.1", 9001), ("::1", 9002)]
    with pytest.raises(ConfigError, match="Port must be specified"):
        load_config(None, listen=["127.0.0.1:"])
