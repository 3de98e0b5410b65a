"""Real back ends on loopback for the proxy and balancer tests: nginx and mpmd.

nginx (Debian nginx-light, /usr/sbin/nginx) runs from a config generated into the test's
tmp_path, in one process (`master_process off`) so that SIGKILL takes the whole back end down
and nothing is orphaned; its pid file, error log and temp folders stay in tmp_path. Every back
end answers with its name (body and `X-Backend` header) so a test can tell where a request
went. `NginxBackends` serves several back ends from one process (cheap, for selection
sequences); `NginxBackend` is one back end per process, for tests that kill one and start it
again on the same port. nginx's URLs: / and /hello (the name), /echo-headers (parse_echo),
/big (a generated file of `big_size` bytes, SHA-256 in `big_sha256`), PUT /upload/NAME
(stored under `uploaded(index, NAME)`), /cookie (the ROUTEID and JSESSIONID cookies, value
`s.<name>` so that the route after the dot is the name). `MpmdBackends` runs mpmd itself
(tests/server.py's Server) with tests/apps/backendapp.py, for what nginx cannot do: held
requests (Gate), slow and streamed-on-demand responses, any status, POST upload digests.
Everything is stopped by pid and waited for; tests skip when nginx is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import Server, free_port, pid_alive, wait_for

NGINX = Path("/usr/sbin/nginx")
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# The request headers /echo-headers returns, one `name: value` line each ("" when absent).
ECHOED = (
    "host", "connection", "keep-alive", "te", "upgrade", "transfer-encoding", "content-length",
    "via", "x-forwarded-for", "x-forwarded-host", "x-forwarded-server", "x-forwarded-proto",
    "cookie", "x-test",
)  # fmt: skip
STICKY_COOKIES = ("ROUTEID", "JSESSIONID")


def require_nginx() -> None:
    if not NGINX.exists():
        pytest.skip("nginx is not installed (Debian package nginx-light)")


def http_get(port: int, path: str = "/", headers: dict | None = None, timeout: float = 10.0):
    """One GET on its own connection: (status, headers (an HTTPMessage: any case, get_all for
    repeated ones), body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def parse_echo(body: bytes) -> dict[str, str]:
    """/echo-headers' body as {header: value}; the request line is under "request"."""
    pairs = (line.partition(": ") for line in body.decode().splitlines())
    return {name: value for name, _, value in pairs}


def refuses(port: int) -> bool:
    """True when nothing accepts connections on the port any more."""
    try:
        http_get(port, timeout=2)
    except ConnectionRefusedError:
        return True
    except (OSError, http.client.HTTPException):
        return False
    return False


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_big_file(path: Path, size: int) -> str:
    """`size` bytes of pseudo-random data (one random MiB repeated); returns its SHA-256."""
    block = os.urandom(min(size, 1 << 20)) if size else b""
    digest = hashlib.sha256()
    with path.open("wb") as file:
        left = size
        while left:
            piece = block[:left]
            file.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def _server_block(name: str, port: int, tmp: Path) -> str:
    """One back end: its name at / and /hello, headers echoed, /big, PUT /upload/, /cookie."""
    echo = "\\n".join(f"{h}: $http_{h.replace('-', '_')}" for h in ECHOED)
    cookies = " ".join(f'add_header Set-Cookie "{c}=s.{name}; Path=/";' for c in STICKY_COOKIES)
    return f"""
    server {{
        listen 127.0.0.1:{port};
        server_name {name};
        add_header X-Backend {name} always;
        location / {{ return 200 "{name}\\n"; }}
        location = /echo-headers {{ return 200 "request: $request\\n{echo}\\n"; }}
        location = /big {{ alias {tmp}/big.bin; }}
        location /upload/ {{
            root {tmp}/uploads/{name};
            dav_methods PUT DELETE;
            create_full_put_path on;
        }}
        location = /cookie {{
            add_header X-Backend {name} always;  # a location's add_header hides the server's
            {cookies}
            return 200 "{name}\\n";
        }}
    }}
"""


def nginx_config(servers: list[tuple[str, int]], tmp: Path) -> str:
    """One single-process nginx serving `servers`; every path it writes is under `tmp`."""
    temps = "".join(f"    {t}_temp_path {tmp}/temp/{t};\n" for t in TEMP_DIRS)
    blocks = "".join(_server_block(name, port, tmp) for name, port in servers)
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/access.log;
    default_type text/plain;
    types {{ application/octet-stream bin; }}
    keepalive_timeout 30;
    keepalive_requests 100000;
    client_max_body_size 0;
{temps}{blocks}}}
"""


class _Nginx:
    """One nginx process serving the named back ends; restartable on the same ports."""

    def __init__(self, tmp: Path, names: list[str], big_size: int) -> None:
        require_nginx()
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.names = names
        self.ports = [free_port() for _ in names]
        for folder in ("temp", *(f"uploads/{n}" for n in names)):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        self.big_size = big_size
        self.big_sha256 = write_big_file(tmp / "big.bin", big_size)
        self.conf = tmp / "nginx.conf"
        self.conf.write_text(nginx_config(list(zip(names, self.ports, strict=True)), tmp))
        self.error_log = tmp / "error.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> _Nginx:
        if self.running():
            raise RuntimeError("this nginx is already running: a second start would leak it")
        cmd = [str(NGINX), "-p", f"{self.tmp}/", "-e", str(self.error_log), "-c", str(self.conf)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for(self._ready, timeout=15)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            output = self.proc.stdout.read().decode(errors="replace")
            raise AssertionError(f"nginx exited with {self.proc.returncode}: {output}")
        return all(not refuses(port) for port in self.ports)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the back end vanishes mid-whatever, its connections reset."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown) by pid; SIGKILL if it is not gone within 10 s."""
        if not self.running():
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> _Nginx:
        """Start again on the same ports (after kill() or stop())."""
        self.stop()
        return self.start()

    def url(self, index: int = 0, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def members(self) -> list[str]:
        """The BalancerMember URLs, in order."""
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def uploaded(self, index: int, name: str) -> Path:
        """Where `PUT /upload/<name>` to back end `index` stored the body."""
        return self.tmp / "uploads" / self.names[index] / "upload" / name

    def log_text(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class NginxBackends(_Nginx):
    """`count` back ends named backend-0 ... in ONE nginx process (kill() takes all down)."""

    def __init__(self, count: int, tmp: Path, *, big_size: int = 1 << 20) -> None:
        super().__init__(tmp, [f"backend-{i}" for i in range(count)], big_size)


class NginxBackend(_Nginx):
    """One back end in its own nginx process, to SIGKILL and restart on the same port."""

    def __init__(self, tmp: Path, name: str = "backend-0", *, big_size: int = 1 << 20) -> None:
        super().__init__(tmp, [name], big_size)

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def member(self) -> str:
        return self.members()[0]


@contextlib.contextmanager
def nginx_each(count: int, tmp: Path, *, big_size: int = 1 << 20) -> Iterator[list[NginxBackend]]:
    """`count` NginxBackends named backend-0 ..., each in tmp/backend-N, all stopped on exit."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                NginxBackend(tmp / f"backend-{i}", f"backend-{i}", big_size=big_size)
            )
            for i in range(count)
        ]


# --- mpmd back ends ----------------------------------------------------------------------------

BACKEND_SCRIPT = """from backendapp import make_app

application = make_app({name!r})
"""


class Gate:
    """A held request of backendapp's /gate: the test sees it arrive and releases it."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.path = tmp / f"gate-{name}"
        self.entry = tmp / f"gate-{name}.in"  # backendapp creates it when the request arrives

    @property
    def query(self) -> str:
        return f"/gate?path={self.path}"

    def entered(self) -> bool:
        return self.entry.exists()

    def wait_entered(self, timeout: float = 10.0) -> None:
        wait_for(self.entered, timeout=timeout)

    def release(self) -> None:
        self.path.touch()


class MpmdBackends:
    """`count` mpmd servers (one process tree each) running backendapp as backend-0 ...;
    `config` is appended to every back end's configuration."""

    def __init__(self, count: int, tmp: Path, *, mpm: str = "event", config: str = "") -> None:
        self.names = [f"backend-{i}" for i in range(count)]
        self.servers: list[Server] = []
        for name in self.names:
            folder = tmp / name
            folder.mkdir(parents=True, exist_ok=True)
            script = folder / "backend.wsgi"
            script.write_text(BACKEND_SCRIPT.format(name=name))
            base = f'StartServers 1\nWSGIScriptAlias / "{script}"\n'
            self.servers.append(Server(folder, base + config, mpm=mpm))

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    def members(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def url(self, index: int = 0, path: str = "/") -> str:
        return self.servers[index].url(path)

    def start(self) -> MpmdBackends:
        for server in self.servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def kill(self, index: int) -> None:
        """SIGKILL the back end's whole process group (parent and children), waited for."""
        server = self.servers[index]
        if server.proc is None or server.proc.poll() is not None:
            return
        os.killpg(server.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        wait_for(lambda: not _group_alive(server.pid), timeout=10)

    def restart(self, index: int) -> None:
        """Start a killed or stopped back end again on the same port."""
        self.servers[index].stop()
        self.servers[index].start()

    def __enter__(self) -> MpmdBackends:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the group?"""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and pid_alive(int(entry)):
                    return True
            except ProcessLookupError:
                continue
    return False
