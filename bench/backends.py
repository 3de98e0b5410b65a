"""The balancer workload's back ends: three nginx listeners pinned to the client core.

Owns their config and lifetime. One nginx process (master + 1 worker) listens on three
loopback ports, each a back end answering "Hello, World!"; one worker with three listeners
costs the shared client core less than three workers taking turns with wrk. Pinned with wrk on
cpu 0 so that cpu 1 belongs to the balancer under test alone (issue 11).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench.fixtures import HELLO_BODY, Fixtures
from bench.process import RunningServer, ServerStartError, free_port, http_get_status
from bench.servers import Launch
from bench.wrk import CLIENT_CPU

COUNT = 3
READY_TIMEOUT = 15.0


def backend_config(run: Path, ports: tuple[int, ...]) -> str:
    """One nginx, one worker, a `server` per back end port; no access log, no request limit."""
    servers = "".join(
        f"    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "
        f'"{HELLO_BODY.decode()}"; }} }}\n'
        for port in ports
    )
    return f"""worker_processes 1;
worker_rlimit_nofile 20000;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_timeout 30;
    keepalive_requests 100000000;
{servers}}}
"""


def _wait_ready(server: RunningServer, ports: tuple[int, ...]) -> None:
    """Every port answers 200 within READY_TIMEOUT, or ServerStartError."""
    deadline = time.monotonic() + READY_TIMEOUT
    for port in ports:
        while http_get_status(port, "/") != 200:
            if not server.alive():
                raise ServerStartError(f"exited with status {server.proc.returncode}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"port {port}: no 200 within {READY_TIMEOUT:g} s")
            time.sleep(0.1)


@dataclass
class Backends:
    """The started back ends; `record` goes into the results JSON as the method."""

    ports: tuple[int, ...]
    server: RunningServer
    record: dict

    def stop(self) -> None:
        self.server.stop()


def start_backends(fx: Fixtures, count: int = COUNT) -> Backends:
    """Start the back ends pinned to the client core; every port answers before this returns."""
    run = fx.run_dir("backends")
    ports = tuple(free_port() for _ in range(count))
    conf = run / "nginx.conf"
    conf.write_text(backend_config(run, ports))
    base = ["nginx", "-p", f"{run}/", "-e", f"{run}/error.log", "-c", str(conf)]
    cmd = ["taskset", "-c", CLIENT_CPU, *base, "-g", "daemon off;"]
    server = RunningServer(Launch(cmd=cmd, cwd=run), run / "server.out", ports[0])
    try:
        _wait_ready(server, ports)
    except BaseException as exc:  # also Ctrl-C: nginx must not outlive the harness
        tail = server.log_tail(lines=2)
        server.stop()
        if not isinstance(exc, ServerStartError):
            raise
        raise ServerStartError(f"back ends {exc}; {tail}" if tail else f"back ends {exc}") from None
    what = (
        f"{count} back ends: one nginx, 1 worker, a server block per port, pinned cpu {CLIENT_CPU}"
    )
    record = {"what": what, "cmd": cmd, "config": conf.read_text()}
    return Backends(ports=ports, server=server, record=record)
