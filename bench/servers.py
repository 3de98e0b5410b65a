"""Every server the harness measures: how to configure it, start it, and which URL it serves.

Owns the registry SERVERS (name -> ServerSpec) and the config generators for Apache, nginx and
mpmd. Peers are configured exactly as in shared/reference/peer-benchmarks.md ("Servers as
measured"); mpmd gets the same keep-alive policy (KeepAliveTimeout 30, unlimited requests) and no
access log. The `-tls` servers (workloads g, h, issue 13) serve https only, all with the run's one
certificate (fixtures.py): Apache event + mod_ssl with Debian's ssl.conf settings, granian with
its --ssl flags, mpmd with SSLEngine and the two file directives (its defaults otherwise). The balancers of workload f (issue 11) front the back ends in fx.backend_ports:
Apache and mpmd from one generated httpd.conf, nginx from an `upstream` block, HAProxy. Only builds
command lines and config text: starting and stopping is process.py's job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.fixtures import Fixtures

APACHE_MODULES = Path("/usr/lib/apache2/modules")

WSGI_PATHS = {"hello": "/", "1k": "/1k.bin", "1m": "/1m.bin"}
STATIC_PATHS = {"hello": "/hello.txt", "1k": "/1k.bin", "1m": "/1m.bin"}
MPMD_PATHS = {"hello": "/hello", "1k": "/1k.bin", "1m": "/1m.bin"}
BALANCER_PATHS = {"hello": "/"}  # proxied as is to the back ends' "/"


@dataclass(frozen=True)
class Launch:
    """A server ready to start: argv, working folder, and an optional config check to run first."""

    cmd: list[str]
    cwd: Path
    check_cmd: list[str] | None = None
    config_file: Path | None = None


@dataclass(frozen=True)
class ServerSpec:
    name: str
    what: str
    paths: dict[str, str]
    build: Callable[[Fixtures, Path, int, Path], Launch]  # (fixtures, run_dir, port, venv_bin)
    family: str  # "mpmd", "python", "apache", "nginx", "haproxy"
    balancer: bool = False  # fronts fx.backend_ports; runs only the balancer workload
    tls: bool = False  # serves https only; runs only the TLS workloads
    asgi: bool = False  # serves bench/asgi_hello.py (asgi_servers.py); runs only ASGI workloads


# --- Python peers ---------------------------------------------------------------------------


def _gunicorn(*extra: str) -> Callable[[Fixtures, Path, int, Path], Launch]:
    def build(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
        cmd = [str(vbin / "gunicorn"), "-b", f"127.0.0.1:{port}", *extra]
        cmd += ["--chdir", str(fx.apps), "--pid", str(run / "gunicorn.pid"), "hello:application"]
        return Launch(cmd=cmd, cwd=fx.apps)

    return build


def _waitress(*extra: str) -> Callable[[Fixtures, Path, int, Path], Launch]:
    def build(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
        cmd = [str(vbin / "waitress-serve"), "--host", "127.0.0.1", f"--port={port}"]
        cmd += ["--threads=8", "--connection-limit=10000", "--backlog=2048", *extra]
        return Launch(cmd=[*cmd, "hello:application"], cwd=fx.apps)

    return build


def _granian(tls: bool) -> Callable[[Fixtures, Path, int, Path], Launch]:
    def build(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
        cmd = [str(vbin / "granian"), "--interface", "wsgi", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", "1", "--working-dir", str(fx.apps)]
        if tls:
            cmd += ["--ssl-certificate", str(fx.tls_cert), "--ssl-keyfile", str(fx.tls_key)]
        return Launch(cmd=[*cmd, "hello:application"], cwd=fx.apps)

    return build


# --- Apache httpd ---------------------------------------------------------------------------


# mod_ssl as Debian's mods-available/ssl.conf sets it (SSLRandomSeed and the passphrase dialog
# left out: OpenSSL seeds itself, the key has no passphrase).
APACHE_SSL = ("SSLCipherSuite HIGH:!aNULL", "SSLProtocol all -SSLv3",
              "SSLSessionCacheTimeout 300")  # fmt: skip


def apache_config(
    fx: Fixtures, run: Path, port: int, mpm: str, wsgi: str | None, tls: bool = False
) -> str:
    """httpd.conf for one MPM; wsgi is None (static), 'embedded' or 'daemon' (mod_wsgi); tls:
    mod_ssl on the one port with the run's certificate."""
    lines = [
        f'ServerRoot "{run}"',
        f'DefaultRuntimeDir "{run}"',
        f'PidFile "{run}/httpd.pid"',
        f"Listen 127.0.0.1:{port}",
        "ServerName 127.0.0.1",
        f'ErrorLog "{run}/error_log"',
        "LogLevel warn",
        f"LoadModule mpm_{mpm}_module {APACHE_MODULES}/mod_mpm_{mpm}.so",
    ]
    for module in ("authz_core", "authz_host", "mime", "status"):
        lines.append(f"LoadModule {module}_module {APACHE_MODULES}/mod_{module}.so")
    if tls:
        for module in ("socache_shmcb", "ssl"):  # Debian's ssl.load needs socache_shmcb
            lines.append(f"LoadModule {module}_module {APACHE_MODULES}/mod_{module}.so")
        lines += [
            *APACHE_SSL,
            f'SSLSessionCache "shmcb:{run}/ssl_scache(512000)"',
            "SSLEngine on",
            f'SSLCertificateFile "{fx.tls_cert}"',
            f'SSLCertificateKeyFile "{fx.tls_key}"',
        ]
    if os.geteuid() == 0:
        lines += ["User www-data", "Group www-data"]
    lines += [
        "TypesConfig /etc/mime.types",
        "KeepAlive On",
        "KeepAliveTimeout 30",
        "MaxKeepAliveRequests 0",
        "EnableSendfile On",
        f'DocumentRoot "{fx.static}"',
        f'<Directory "{fx.static}">',
        "    Require all granted",
        "</Directory>",
    ]
    if wsgi is not None:
        lines += [
            f"LoadModule wsgi_module {APACHE_MODULES}/mod_wsgi.so",
            f"WSGISocketPrefix {run}/wsgi",
            f"WSGIScriptAlias / {fx.apps}/hello.py",
            "WSGIApplicationGroup %{GLOBAL}",
            f'<Directory "{fx.apps}">',
            "    Require all granted",
            "</Directory>",
        ]
        if wsgi == "daemon":
            lines += [
                f"WSGIDaemonProcess bench processes=2 threads=8 python-path={fx.apps}",
                "WSGIProcessGroup bench",
            ]
    return "\n".join(lines) + "\n"


def _apache(
    mpm: str, wsgi: str | None, tls: bool = False
) -> Callable[[Fixtures, Path, int, Path], Launch]:
    def build(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
        conf = run / "httpd.conf"
        conf.write_text(apache_config(fx, run, port, mpm, wsgi, tls))
        return Launch(
            cmd=["apache2", "-f", str(conf), "-DFOREGROUND"],
            cwd=run,
            check_cmd=["apache2", "-t", "-f", str(conf)],
            config_file=conf,
        )

    return build


# --- nginx ----------------------------------------------------------------------------------


def nginx_config(fx: Fixtures, run: Path, port: int) -> str:
    return f"""worker_processes 1;
worker_rlimit_nofile 20000;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 30;
    keepalive_requests 100000000;
    types {{ text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {fx.static};
    }}
}}
"""


def _nginx(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
    conf = run / "nginx.conf"
    conf.write_text(nginx_config(fx, run, port))
    base = ["nginx", "-p", f"{run}/", "-e", f"{run}/error.log", "-c", str(conf)]
    return Launch(
        cmd=[*base, "-g", "daemon off;"], cwd=run, check_cmd=[*base, "-t"], config_file=conf
    )


# --- mpmd -----------------------------------------------------------------------------------


def mpmd_config(fx: Fixtures, run: Path, port: int, mpm: str | None, tls: bool = False) -> str:
    """Apache-syntax config for mpmd: hello app at /hello, the static files from DocumentRoot;
    tls: the port serves https with the run's certificate and mpmd's default TLS settings."""
    lines = [
        f'ServerRoot "{run}"',
        f"Listen 127.0.0.1:{port}",
        f"PidFile {run}/mpmd.pid",
        f"ErrorLog {run}/error_log",
        "LogLevel warn",
    ]
    if mpm is not None:
        lines.append(f"LoadModule mpm_{mpm}_module modules/mod_mpm_{mpm}.so")
    lines += [
        f'DocumentRoot "{fx.static}"',
        "KeepAlive On",
        "KeepAliveTimeout 30",
        "MaxKeepAliveRequests 0",
        f'WSGIPythonPath "{fx.apps}"',
        "WSGIApp /hello hello:application",
    ]
    if tls:
        lines += [
            "SSLEngine on",
            f'SSLCertificateFile "{fx.tls_cert}"',
            f'SSLCertificateKeyFile "{fx.tls_key}"',
        ]
    return "\n".join(lines) + "\n"


def _mpmd(mpm: str | None, tls: bool = False) -> Callable[[Fixtures, Path, int, Path], Launch]:
    def build(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
        conf = run / "mpmd.conf"
        conf.write_text(mpmd_config(fx, run, port, mpm, tls))
        mpmd = str(vbin / "mpmd")
        # -DFOREGROUND as for apache2: the harness owns the process, mpmd must not detach.
        flags = ["-f", str(conf), "-DFOREGROUND"] if mpm else ["-X", "-f", str(conf)]
        return Launch(
            cmd=[mpmd, *flags], cwd=run, check_cmd=[mpmd, "-t", "-f", str(conf)], config_file=conf
        )

    return build


# --- balancers (workload f) ---------------------------------------------------------------

# Apache's compiled-in sizing, written out so the file states it; mpmd has the same defaults.
BALANCER_SIZING = {
    "event": ("StartServers 3", "MinSpareThreads 75", "MaxSpareThreads 250",
              "ThreadsPerChild 25", "MaxRequestWorkers 400"),
    "worker": ("StartServers 3", "MinSpareThreads 75", "MaxSpareThreads 250",
               "ThreadsPerChild 25", "MaxRequestWorkers 400"),
    "prefork": ("StartServers 5", "MinSpareServers 5", "MaxSpareServers 10",
                "MaxRequestWorkers 256"),
}  # fmt: skip
BALANCER_MODULES = (
    "authz_core", "slotmem_shm", "proxy", "proxy_http", "proxy_balancer", "lbmethod_byrequests"
)  # fmt: skip


def balancer_config(fx: Fixtures, run: Path, port: int, mpm: str) -> str:
    """The one httpd.conf that Apache and mpmd both run: mod_proxy_balancer, byrequests, over
    the back ends in fx.backend_ports; Debian's module paths, which mpmd reads by name."""
    lines = [
        f'ServerRoot "{run}"',
        f'DefaultRuntimeDir "{run}"',
        f'PidFile "{run}/httpd.pid"',
        f"Listen 127.0.0.1:{port}",
        "ServerName 127.0.0.1",
        f'ErrorLog "{run}/error_log"',
        "LogLevel warn",
        f"LoadModule mpm_{mpm}_module {APACHE_MODULES}/mod_mpm_{mpm}.so",
        *(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in BALANCER_MODULES),
    ]
    if os.geteuid() == 0:
        lines += ["User www-data", "Group www-data"]
    lines += [*BALANCER_SIZING[mpm], "KeepAlive On", "KeepAliveTimeout 30"]
    lines += ["MaxKeepAliveRequests 0", "<Proxy balancer://bench>"]
    lines += [f"    BalancerMember http://127.0.0.1:{p}" for p in fx.backend_ports]
    lines += ["    ProxySet lbmethod=byrequests", "</Proxy>", "ProxyPass / balancer://bench/"]
    return "\n".join(lines) + "\n"


def _apache_balancer(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
    conf = run / "httpd.conf"
    conf.write_text(balancer_config(fx, run, port, "event"))
    return Launch(
        cmd=["apache2", "-f", str(conf), "-DFOREGROUND"],
        cwd=run,
        check_cmd=["apache2", "-t", "-f", str(conf)],
        config_file=conf,
    )


def _mpmd_balancer(mpm: str) -> Callable[[Fixtures, Path, int, Path], Launch]:
    def build(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
        conf = run / "httpd.conf"
        conf.write_text(balancer_config(fx, run, port, mpm))
        mpmd = str(vbin / "mpmd")
        return Launch(
            cmd=[mpmd, "-f", str(conf), "-DFOREGROUND"],
            cwd=run,
            check_cmd=[mpmd, "-t", "-f", str(conf)],
            config_file=conf,
        )

    return build


def nginx_upstream_config(fx: Fixtures, run: Path, port: int) -> str:
    """nginx as a balancer: round robin over the back ends, pooled keep-alive upstream
    connections with no request limit (as Apache's and mpmd's pools have none)."""
    members = "".join(f"        server 127.0.0.1:{p};\n" for p in fx.backend_ports)
    return f"""worker_processes 1;
worker_rlimit_nofile 20000;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    keepalive_timeout 30;
    keepalive_requests 100000000;
    upstream bench {{
{members}        keepalive 32;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def _nginx_upstream(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
    conf = run / "nginx.conf"
    conf.write_text(nginx_upstream_config(fx, run, port))
    base = ["nginx", "-p", f"{run}/", "-e", f"{run}/error.log", "-c", str(conf)]
    return Launch(
        cmd=[*base, "-g", "daemon off;"], cwd=run, check_cmd=[*base, "-t"], config_file=conf
    )


def haproxy_config(fx: Fixtures, run: Path, port: int) -> str:
    """HAProxy as a balancer: one thread, round robin, idle server connections reused."""
    members = "".join(f"    server b{i} 127.0.0.1:{p}\n" for i, p in enumerate(fx.backend_ports))
    return f"""global
    nbthread 1
    maxconn 4096
    pidfile {run}/haproxy.pid
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s
frontend bench
    bind 127.0.0.1:{port}
    default_backend members
backend members
    balance roundrobin
    http-reuse always
{members}"""


def _haproxy(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
    conf = run / "haproxy.cfg"
    conf.write_text(haproxy_config(fx, run, port))
    return Launch(
        cmd=["haproxy", "-db", "-f", str(conf)],
        cwd=run,
        check_cmd=["haproxy", "-c", "-q", "-f", str(conf)],
        config_file=conf,
    )


def _spec(
    name: str,
    what: str,
    paths: dict[str, str],
    build,
    family: str,
    balancer: bool = False,
    tls: bool = False,
) -> ServerSpec:
    return ServerSpec(name, what, paths, build, family, balancer, tls)


SERVERS: dict[str, ServerSpec] = {
    s.name: s
    for s in (
        _spec("mpmd-X", "mpmd -X: one process, foreground", MPMD_PATHS, _mpmd(None), "mpmd"),
        _spec("mpmd-prefork", "mpmd prefork MPM", MPMD_PATHS, _mpmd("prefork"), "mpmd"),
        _spec("mpmd-worker", "mpmd worker MPM", MPMD_PATHS, _mpmd("worker"), "mpmd"),
        _spec("mpmd-event", "mpmd event MPM", MPMD_PATHS, _mpmd("event"), "mpmd"),
        _spec(
            "apache-prefork-wsgi",
            "Apache prefork + mod_wsgi embedded mode (WSGIApplicationGroup %{GLOBAL})",
            WSGI_PATHS,
            _apache("prefork", "embedded"),
            "apache",
        ),
        _spec(
            "apache-event-wsgid",
            "Apache event + mod_wsgi daemon mode, WSGIDaemonProcess processes=2 threads=8",
            WSGI_PATHS,
            _apache("event", "daemon"),
            "apache",
        ),
        *(
            _spec(
                f"apache-{mpm}-static",
                f"Apache {mpm} MPM, static files (core handler, EnableSendfile On)",
                STATIC_PATHS,
                _apache(mpm, None),
                "apache",
            )
            for mpm in ("prefork", "worker", "event")
        ),
        _spec(
            "nginx-static",
            "nginx, 1 worker process, static files (sendfile on)",
            STATIC_PATHS,
            _nginx,
            "nginx",
        ),
        _spec(
            "gunicorn-sync",
            "gunicorn sync worker, -w 4 (sync workers never keep a connection alive)",
            WSGI_PATHS,
            _gunicorn("-w", "4"),
            "python",
        ),
        _spec(
            "gunicorn-gthread",
            "gunicorn gthread worker, -w 2 --threads 8 --keep-alive 30",
            WSGI_PATHS,
            _gunicorn("-k", "gthread", "-w", "2", "--threads", "8", "--keep-alive", "30"),
            "python",
        ),
        _spec(
            "waitress",
            "waitress, threads=8, connection_limit raised 100 -> 10000, backlog 2048",
            WSGI_PATHS,
            _waitress(),
            "python",
        ),
        _spec(
            "waitress-poll",
            "waitress as above + --asyncore-use-poll (its default select() dies past 1024 fds)",
            WSGI_PATHS,
            _waitress("--asyncore-use-poll"),
            "python",
        ),
        _spec(
            "granian",
            "granian --interface wsgi, 1 worker, defaults otherwise",
            WSGI_PATHS,
            _granian(tls=False),
            "python",
        ),
        _spec(
            "apache-balancer",
            "Apache event + mod_proxy_balancer (byrequests), the shared httpd.conf",
            BALANCER_PATHS,
            _apache_balancer,
            "apache",
            balancer=True,
        ),
        *(
            _spec(
                f"mpmd-balancer-{mpm}",
                f"mpmd {mpm} MPM as the balancer, the shared httpd.conf (mpm_{mpm}_module)",
                BALANCER_PATHS,
                _mpmd_balancer(mpm),
                "mpmd",
                balancer=True,
            )
            for mpm in ("event", "worker", "prefork")
        ),
        _spec(
            "nginx-upstream",
            "nginx, 1 worker process, upstream round robin with keepalive 32 to the back ends",
            BALANCER_PATHS,
            _nginx_upstream,
            "nginx",
            balancer=True,
        ),
        _spec(
            "haproxy",
            "HAProxy, nbthread 1, balance roundrobin, http-reuse always",
            BALANCER_PATHS,
            _haproxy,
            "haproxy",
            balancer=True,
        ),
        *(
            _spec(
                f"mpmd-{mpm}-tls",
                f"mpmd {mpm} MPM, https: SSLEngine on + the certificate, TLS defaults otherwise",
                MPMD_PATHS,
                _mpmd(mpm, tls=True),
                "mpmd",
                tls=True,
            )
            for mpm in ("prefork", "worker", "event")
        ),
        _spec(
            "apache-event-tls",
            "Apache event MPM + mod_ssl (Debian's ssl.conf settings), static files",
            STATIC_PATHS,
            _apache("event", None, tls=True),
            "apache",
            tls=True,
        ),
        _spec(
            "granian-tls",
            "granian --interface wsgi, 1 worker, --ssl-certificate/--ssl-keyfile",
            WSGI_PATHS,
            _granian(tls=True),
            "python",
            tls=True,
        ),
    )
}
