"""The ASGI servers of workloads asgi-hello and ws-echo (issue 15), all on one core.

Owns their command lines and mpmd's generated config. Every one serves the same app,
bench/asgi_hello.py (copied into the run's apps/ folder by fixtures.py), from one process on
cpu 1: mpmd's event MPM with one child (StartServers 1, ServerLimit 1, `ASGIApp /`), started as
`python -m mpmd` from the peers' venv; uvicorn as its own benchmarks run it (`--loop uvloop
--http httptools`, no access log, one process); granian `--interface asgi` with one worker and
its defaults otherwise (loop `auto`, i.e. uvloop when installed; one runtime thread). Keep-alive
timeout 30 s where the server has the knob (granian has none), as for the WSGI peers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.fixtures import Fixtures
from bench.servers import Launch, ServerSpec

ASGI_MODULE = "asgi_hello"  # apps/asgi_hello.py, a copy of bench/asgi_hello.py
ASGI_APP = f"{ASGI_MODULE}:app"
ASGI_PATHS = {"hello": "/", "ws": "/ws"}

# One event child with Apache's default 25 threads; the spare-thread bounds are lowered to fit
# one child (MaxSpareThreads >= MinSpareThreads + ThreadsPerChild, as Apache requires), so the
# parent neither asks for children it may not start nor logs AH10159 about them.
MPMD_ONE_CHILD = ("StartServers 1", "ServerLimit 1", "ThreadsPerChild 25",
                  "MaxRequestWorkers 25", "MinSpareThreads 1", "MaxSpareThreads 26")  # fmt: skip


def mpmd_asgi_config(fx: Fixtures, run: Path, port: int) -> str:
    """mpmd's event MPM, one child, the benchmark app mounted at / with ASGIApp."""
    lines = [
        f'ServerRoot "{run}"',
        f"Listen 127.0.0.1:{port}",
        f"PidFile {run}/mpmd.pid",
        f"ErrorLog {run}/error_log",
        "LogLevel warn",
        "LoadModule mpm_event_module modules/mod_mpm_event.so",
        *MPMD_ONE_CHILD,
        "KeepAlive On",
        "KeepAliveTimeout 30",
        "MaxKeepAliveRequests 0",
        f'WSGIPythonPath "{fx.apps}"',
        f"ASGIApp / {ASGI_APP}",
    ]
    return "\n".join(lines) + "\n"


def _mpmd_asgi(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
    conf = run / "mpmd.conf"
    conf.write_text(mpmd_asgi_config(fx, run, port))
    mpmd = [str(vbin / "python"), "-m", "mpmd"]
    return Launch(
        cmd=[*mpmd, "-f", str(conf), "-DFOREGROUND"],
        cwd=run,
        check_cmd=[*mpmd, "-t", "-f", str(conf)],
        config_file=conf,
    )


def _uvicorn(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
    cmd = [str(vbin / "uvicorn"), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    cmd += ["--timeout-keep-alive", "30", "--app-dir", str(fx.apps), ASGI_APP]
    return Launch(cmd=cmd, cwd=fx.apps)


def _granian_asgi(fx: Fixtures, run: Path, port: int, vbin: Path) -> Launch:
    cmd = [str(vbin / "granian"), "--interface", "asgi", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", "1", "--working-dir", str(fx.apps), ASGI_APP]
    return Launch(cmd=cmd, cwd=fx.apps)


def _asgi_spec(
    name: str, what: str, build: Callable[[Fixtures, Path, int, Path], Launch], family: str
) -> ServerSpec:
    return ServerSpec(name, what, ASGI_PATHS, build, family, asgi=True)


ASGI_SERVERS: dict[str, ServerSpec] = {
    s.name: s
    for s in (
        _asgi_spec(
            "mpmd-event-asgi",
            "mpmd event MPM, one child (StartServers 1, ServerLimit 1), ASGIApp /",
            _mpmd_asgi,
            "mpmd",
        ),
        _asgi_spec(
            "uvicorn",
            "uvicorn --loop uvloop --http httptools --no-access-log, 1 process",
            _uvicorn,
            "python",
        ),
        _asgi_spec(
            "granian-asgi",
            "granian --interface asgi, 1 worker, defaults otherwise",
            _granian_asgi,
            "python",
        ),
    )
}
