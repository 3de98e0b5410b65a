"""`python -m bench.run`: the one command that measures mpmd against its peers.

Owns the orchestration: install what is missing, make the fixtures in a temp dir, start each
server (pinned to cpu 1, on a free loopback port, from a generated config), run its workloads,
stop it by process group, and write bench/results/<timestamp>.json and docs/benchmarks.md.
Every process it starts is stopped on success, error, Ctrl-C and SIGTERM; every load run stops
by itself (wrk -d under `timeout`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import environment, report
from bench.asgi_servers import ASGI_SERVERS
from bench.backends import Backends, start_backends
from bench.fixtures import Fixtures, write_fixtures
from bench.process import RunningServer, ServerStartError, free_port
from bench.servers import SERVERS as WSGI_SERVERS
from bench.servers import Launch, ServerSpec
from bench.workloads import WORKLOADS, Settings, Workload, measure_idle, measure_load
from bench.ws_idle import measure_ws_idle

SERVER_CPU = "1"
READY_TIMEOUT = 30.0
SERVERS = {**WSGI_SERVERS, **ASGI_SERVERS}
RESULTS = environment.REPO / "bench" / "results"
DOCS = environment.REPO / "docs" / "benchmarks.md"


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _pinned(launch: Launch) -> Launch:
    return Launch(
        cmd=["taskset", "-c", SERVER_CPU, *launch.cmd],
        cwd=launch.cwd,
        check_cmd=launch.check_cmd,
        config_file=launch.config_file,
    )


class ServerSession:
    """Starts one server for a series of workloads and restarts it if it dies in between."""

    def __init__(self, spec: ServerSpec, fx: Fixtures, vbin: Path, record: dict) -> None:
        self.spec, self.fx, self.vbin, self.record = spec, fx, vbin, record
        self.server: RunningServer | None = None
        self.starts = 0

    def ensure_started(self) -> RunningServer:
        """A running, answering server; raises ServerStartError with a short reason."""
        if self.server is not None and self.server.alive():
            return self.server
        self.close()
        self.starts += 1
        run = self.fx.run_dir(f"{self.spec.name}-{self.starts}")
        port = free_port()
        launch = _pinned(self.spec.build(self.fx, run, port, self.vbin))
        if not self.record.get("cmd"):
            self.record["cmd"] = launch.cmd
        if launch.config_file is not None and "config" not in self.record:
            self.record["config"] = launch.config_file.read_text()
        if launch.check_cmd:
            check = _run_check(launch.check_cmd, launch.cwd)
            if check:
                raise ServerStartError(f"config check failed: {check}")
        self.server = RunningServer(launch, run / "server.out", port)
        try:
            self.server.wait_ready(self.spec.paths["hello"], READY_TIMEOUT, self.spec.tls)
        except ServerStartError as exc:
            tail = self.server.log_tail(lines=2) or _error_log_tail(run)
            self.close()
            raise ServerStartError(f"{exc}; {tail}" if tail else str(exc)) from None
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _error_log_tail(run: Path) -> str:
    """Last line of the server's own ErrorLog in its run folder, if it wrote one."""
    for name in ("error_log", "error.log"):
        path = run / name
        if path.exists():
            lines = path.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
    return ""


def _run_check(cmd: list[str], cwd: Path) -> str:
    """'' when the config check passes, else its last output line."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:  # e.g. mpmd not installed in the venv: that server fails, not the run
        return str(exc)
    if proc.returncode == 0:
        return ""
    return " / ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])


def measure_server(
    spec: ServerSpec,
    workloads: list[Workload],
    settings: Settings,
    fx: Fixtures,
    vbin: Path,
    record: dict,
) -> list[dict]:
    """All of one server's cells: a-d on one instance, e (and ws-idle) each on a fresh one; a balancer runs only
    the balancer workload (f), a TLS server only the TLS ones (g, h), an ASGI server only the
    ASGI ones (asgi-hello, ws-echo), the others the rest."""
    results: list[dict] = []
    kind = (spec.balancer, spec.tls, spec.asgi)
    workloads = [w for w in workloads if (w.balancer, w.tls, w.asgi) == kind]
    groups = [[w for w in workloads if not w.idle]] + [[w] for w in workloads if w.idle]
    for group in filter(None, groups):
        session = ServerSession(spec, fx, vbin, record)
        start_error = ""
        try:
            for workload in group:
                cell = {"server": spec.name, "workload": workload.key}
                if start_error:  # never answered once: do not wait for it again
                    results.append({**cell, "error": start_error})
                    continue
                starts_before = session.starts
                try:
                    server = session.ensure_started()
                except ServerStartError as exc:
                    log(f"{spec.name}: failed to start: {exc}")
                    start_error = _short(f"failed to start: {exc}")
                    results.append({**cell, "error": start_error})
                    continue
                first = session.starts != starts_before
                log(f"{spec.name} {workload.key}: {workload.title}")
                measure = measure_idle if workload.idle else measure_load
                measure = measure_ws_idle if workload.ws_idle else measure
                cell.update(measure(server, spec, workload, settings, first))
                unit = "msg/s" if workload.client == "ws" else "req/s"
                log(f"{spec.name} {workload.key}: {cell.get('median_rps') or 0:,.0f} {unit}")
                results.append(cell)
        finally:
            session.close()
    return results


def _short(text: str, limit: int = 240) -> str:
    """One table-friendly line: whitespace collapsed, cut at `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raise_fd_limit() -> None:
    """Servers and clients inherit this: thousands of idle connections need descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated names")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated names")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per workload")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per workload")
    parser.add_argument(
        "--first-warmup", type=float, default=6.0, help="warm-up before a server's first workload"
    )
    parser.add_argument(
        "--idle-conns", type=int, default=2000, help="idle connections in workload e"
    )
    parser.add_argument(
        "--ws-idle-conns", type=int, default=10000, help="idle WebSockets in workload ws-idle"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 run of 2 s, 1 s warm-ups: a smoke test"
    )
    parser.add_argument("--no-docs", action="store_true", help="write the JSON only")
    parser.add_argument("--no-install", action="store_true", help="skip apt-get and the venv check")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.runs, args.warmup, args.first_warmup = 2.0, 1, 1.0, 2.0
    unknown = [s for s in args.servers.split(",") if s not in SERVERS]
    unknown += [w for w in args.workloads.split(",") if w not in WORKLOADS]
    if unknown:
        parser.error(
            f"unknown: {', '.join(unknown)} (servers: {', '.join(SERVERS)}; workloads: {', '.join(WORKLOADS)})"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    signal.signal(signal.SIGTERM, _on_sigterm)
    _raise_fd_limit()
    if not args.no_install:
        environment.ensure_debian_packages(log)
        environment.ensure_venv(log)
    vbin = environment.venv_bin()
    settings = Settings(
        args.duration,
        args.runs,
        args.warmup,
        args.first_warmup,
        args.idle_conns,
        ws_idle_conns=args.ws_idle_conns,
    )
    workloads = [WORKLOADS[k] for k in args.workloads.split(",")]
    started = datetime.now(UTC)
    data: dict = {
        "schema": 1,
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "settings": settings.__dict__,
        "workloads": [w.key for w in workloads],
        "workload_titles": {w.key: w.title for w in WORKLOADS.values()},
        "machine": environment.machine(),
        "versions": environment.versions(vbin),
        "servers": {},
        "results": [],
        "interrupted": False,
    }
    tmp = Path(tempfile.mkdtemp(prefix="mpmd-bench-"))
    t0 = time.monotonic()
    specs = [SERVERS[name] for name in args.servers.split(",")]
    backends: Backends | None = None
    try:
        fx = write_fixtures(tmp)
        backend_error = ""
        if any(s.balancer for s in specs) and any(w.balancer for w in workloads):
            try:
                backends = start_backends(fx)
            except ServerStartError as exc:
                backend_error = _short(f"failed to start: {exc}")
                log(backend_error)
            else:
                fx = dataclasses.replace(fx, backend_ports=backends.ports)
                data["backends"] = backends.record
        for spec in specs:
            record = data["servers"].setdefault(spec.name, {"what": spec.what, "cmd": []})
            if spec.balancer and backend_error:
                data["results"] += [
                    {"server": spec.name, "workload": w.key, "error": backend_error}
                    for w in workloads
                    if w.balancer
                ]
                continue
            data["results"] += measure_server(spec, workloads, settings, fx, vbin, record)
    except KeyboardInterrupt:
        data["interrupted"] = True
        log("interrupted: every server was stopped; writing what was measured")
    finally:
        if backends is not None:
            backends.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    data["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    data["elapsed_s"] = round(time.monotonic() - t0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(data, indent=1) + "\n")
    log(f"wrote {out}")
    if not args.no_docs and not data["interrupted"]:
        report.write_docs(data, DOCS, out.name)
        log(f"wrote {DOCS}")
    return 130 if data["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main())
