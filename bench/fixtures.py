"""The content every server serves: one hello-world WSGI app, three static files, one certificate.

Owns the temp tree (apps/hello.py, static/hello.txt, static/1k.bin, static/1m.bin, and
tls/cert.pem + tls/key.pem: the one self-signed certificate every TLS server serves, made by
openssl per run, ECDSA P-256 as certbot's default, the key in PKCS#8 as granian needs). The same app
file serves every WSGI server; it also serves the 1 KiB and 1 MiB files through
wsgi.file_wrapper so WSGI-only peers run the static workloads through their app. The ASGI
servers import apps/asgi_hello.py, a copy of bench/asgi_hello.py. Everything is
world-readable because Apache and nginx children drop to an unprivileged user when run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HELLO_BODY = b"Hello, World!"
STATIC_FILES = {"1k.bin": 1024, "1m.bin": 1024 * 1024}
ASGI_APP_SOURCE = Path(__file__).with_name("asgi_hello.py")

HELLO_APP = '''"""Benchmark app: hello world, plus /1k.bin and /1m.bin through wsgi.file_wrapper."""

import os

HELLO = b"Hello, World!"
HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(HELLO)))]
FILES = {"/1k.bin": %(k1)r, "/1m.bin": %(m1)r}


def application(environ, start_response):
    path = FILES.get(environ.get("PATH_INFO", ""))
    if path is None:
        start_response("200 OK", HELLO_HEADERS)
        return [HELLO]
    f = open(path, "rb")
    size = os.fstat(f.fileno()).st_size
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, 65536)
    return _chunks(f)


def _chunks(f):
    with f:
        while block := f.read(65536):
            yield block
'''


@dataclass(frozen=True)
class Fixtures:
    root: Path
    apps: Path
    static: Path
    tls: Path  # cert.pem, key.pem
    backend_ports: tuple[int, ...] = ()  # the balancer workload's back ends, once started

    def run_dir(self, server: str) -> Path:
        """A fresh world-readable folder for one server's config, pid file and logs."""
        path = self.root / "run" / server
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        return path

    @property
    def tls_cert(self) -> Path:
        return self.tls / "cert.pem"

    @property
    def tls_key(self) -> Path:
        return self.tls / "key.pem"


def write_certificate(folder: Path) -> None:
    """cert.pem and key.pem for localhost and 127.0.0.1 (wrk does not verify; none is needed)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"),
         "-days", "30", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def write_fixtures(root: Path) -> Fixtures:
    """Create apps/, static/ and tls/ under `root` (a temp dir) and return their paths."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    apps, static, tls = root / "apps", root / "static", root / "tls"
    for folder in (apps, static, tls, root / "run"):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
    (static / "hello.txt").write_bytes(HELLO_BODY)
    for name, size in STATIC_FILES.items():
        (static / name).write_bytes(os.urandom(size))
    app_source = HELLO_APP % {"k1": str(static / "1k.bin"), "m1": str(static / "1m.bin")}
    (apps / "hello.py").write_text(app_source)
    shutil.copyfile(ASGI_APP_SOURCE, apps / ASGI_APP_SOURCE.name)
    write_certificate(tls)
    for path in [*static.iterdir(), *apps.iterdir(), *tls.iterdir()]:
        path.chmod(0o644)
    return Fixtures(root=root, apps=apps, static=static, tls=tls)
