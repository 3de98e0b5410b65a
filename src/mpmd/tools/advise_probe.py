"""`mpmctl advise --app`: the application's footprint measured in a real, short-lived mpmd.

It owns the probe: a generated configuration mounting the application at / on an ephemeral
127.0.0.1 port, a real `mpmd` started from it (the children import the application as they
would in production), a few requests so the code paths and caches a request touches are
resident, then each child's PSS and USS read from /proc (mpm/memory.py), then the server
stopped by its pid. A thread-safe application, or an ASGI one (found as `mpmd module:app` finds
it, and mounted with ASGIApp), is probed twice under event, with one thread a child and with
PROBE_THREADS, and the difference per thread is the cost of a thread; otherwise once under
prefork. An application that does not start is a `ProbeError` carrying the error log's
reason, never a traceback.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from mpmd.config.validators import MODULE_CALLABLE
from mpmd.handlers.asgi.app import detect_interface
from mpmd.mpm.memory import read_memory
from mpmd.tools.advise_core import ChildCost
from mpmd.tools.errorlog import parse_error_line

PROBE_REQUESTS = 20
PROBE_THREADS = 17  # a second event probe: (USS at 17 threads - USS at 1) / 16 per thread
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class ProbeError(Exception):
    """The application could not be probed; the message says why."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    cost: ChildCost
    service_ms: float  # median wall time of the probe's requests (one at a time, unloaded)
    cpu_ms: float  # the children's CPU time per probe request (/proc/PID/schedstat)
    asgi: bool = False  # an ASGI application (probed with ASGIApp under event)


def split_app(app: str) -> tuple[str, str]:
    """(directory to put on the path, module:callable) from `pkg.mod:app` or `dir/file.py:app`."""
    target, sep, name = app.rpartition(":")
    if not sep or not target or not name:
        raise ProbeError(f"--app {app!r} must be module:callable or path/to/file.py:callable")
    if target.endswith(".py") or os.sep in target:
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise ProbeError(f"--app {app!r}: no such file {path}")
        directory, module = os.path.split(path)
        target = module.removesuffix(".py")
    else:
        directory = os.getcwd()
    spec = f"{target}:{name}"
    if not MODULE_CALLABLE.fullmatch(spec):
        raise ProbeError(f"--app {app!r} must be module:callable or path/to/file.py:callable")
    return directory, spec


def probe(app: str, *, thread_safe: bool, path: str = "/") -> ProbeResult:
    """The footprint of `app`: a one-thread child's USS and shared share, and a thread's,
    after PROBE_REQUESTS GETs of `path`."""
    directory, spec = split_app(app)
    asgi = detect_interface(spec, [directory])[0] == "asgi"
    mount = "ASGIApp" if asgi else "WSGIApp"
    with tempfile.TemporaryDirectory(prefix="mpmd-advise-") as tmp:
        if not (thread_safe or asgi):
            sizes, service_ms, cpu_ms = _run(tmp, directory, mount, spec, "prefork", 1, path)
            pss, uss = max(sizes)
            return ProbeResult(
                ChildCost(uss, pss - uss, 0.0, f"probe of {app} under prefork: largest of "
                          f"{len(sizes)} children PSS {pss} KiB, USS {uss} KiB"),
                service_ms,
                cpu_ms,
            )  # fmt: skip
        one, service_ms, cpu_ms = _run(tmp, directory, mount, spec, "event", 1, path)
        many, _, _ = _run(tmp, directory, mount, spec, "event", PROBE_THREADS, path)
    pss1, uss1 = max(one)
    _, uss_n = max(many)
    thread = max(0.0, (uss_n - uss1) / (PROBE_THREADS - 1))
    return ProbeResult(
        ChildCost(uss1, pss1 - uss1, round(thread, 1),
                  f"probe of {app}{' (ASGI)' if asgi else ''} under event: one thread PSS "
                  f"{pss1} KiB, USS {uss1} KiB; "
                  f"{PROBE_THREADS} threads USS {uss_n} KiB, so ({uss_n} - {uss1}) / "
                  f"{PROBE_THREADS - 1} = {thread:.1f} KiB a thread"),
        service_ms,
        cpu_ms,
        asgi,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(
    tmp: str, directory: str, mount: str, spec: str, mpm: str, threads: int, port: int
) -> str:
    pool = (
        "StartServers 2\nMinSpareServers 1\nMaxSpareServers 2\nMaxRequestWorkers 2\n"
        if mpm == "prefork"
        else f"StartServers 2\nServerLimit 2\nThreadsPerChild {threads}\n"
        f"ThreadLimit {threads}\nMaxRequestWorkers {2 * threads}\nMinSpareThreads 1\n"
        f"MaxSpareThreads {4 * threads}\n"
    )
    return (
        f"LoadModule mpm_{mpm}_module modules/mod_mpm_{mpm}.so\n"
        f'ServerRoot "{tmp}"\nListen 127.0.0.1:{port}\nServerName localhost\n'
        f'PidFile "{tmp}/mpmd.pid"\nErrorLog "{tmp}/error_log"\nLogLevel info\n'
        f'DocumentRoot "{tmp}"\nWSGIPythonPath "{directory}"\n{mount} / {spec}\n{pool}'
    )


def _run(
    tmp: str, directory: str, mount: str, spec: str, mpm: str, threads: int, path: str
) -> tuple[list[tuple[int, int]], float, float]:
    """Start, request, measure, stop: ([(PSS, USS) per child], median request ms, the
    children's CPU ms per request)."""
    port = _free_port()
    conf = os.path.join(tmp, f"probe-{mpm}-{threads}.conf")
    with open(conf, "w") as f:
        f.write(_config(tmp, directory, mount, spec, mpm, threads, port))
    log = os.path.join(tmp, "error_log")
    if os.path.exists(log):
        os.unlink(log)
    with open(os.path.join(tmp, "output"), "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mpmd", "-f", conf], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        _wait_ready(proc, port, path, tmp)
        cpu_before = _cpu_ns(proc.pid)
        times = sorted(_request(port, path) for _ in range(PROBE_REQUESTS))
        cpu_ms = max(0, _cpu_ns(proc.pid) - cpu_before) / 1e6 / PROBE_REQUESTS
        sizes = [(m.pss_kib, m.uss_kib) for pid in _children(proc.pid)
                 if (m := read_memory(pid)) is not None and m.pss_kib > 0]  # fmt: skip
        if not sizes:
            raise ProbeError(f"the probe's children could not be measured ({_reason(tmp)})")
        return sizes, times[len(times) // 2], cpu_ms
    finally:
        _stop(proc)


def _cpu_ns(pid: int) -> int:
    """Nanoseconds the children of `pid` have run on a CPU, all their threads (schedstat's
    first field): the difference around the requests is what serving them cost, import and
    startup excluded."""
    total = 0
    for child in _children(pid):
        try:
            tasks = os.listdir(f"/proc/{child}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{child}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def _request(port: int, path: str) -> float:
    """Milliseconds for one GET; a 5xx is the application failing (ProbeError)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=START_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    if response.status >= 500:
        raise ProbeError(f"GET {path} answered {response.status}")
    return (time.perf_counter() - started) * 1000


def _wait_ready(proc: subprocess.Popen, port: int, path: str, tmp: str) -> None:
    """Until a request is answered by a child that runs the application, or fail with the
    error log's reason (an import error, a crash)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProbeError(f"the application did not start: {_reason(tmp)}")
        if "MP00002" in _log(tmp):
            raise ProbeError(f"the application did not start: {_reason(tmp)}")
        try:
            _request(port, path)
            return
        except OSError:
            time.sleep(0.05)
        except ProbeError as err:
            raise ProbeError(f"the application failed: {err}: {_reason(tmp)}") from None
    raise ProbeError(f"the probe server did not answer within {START_TIMEOUT:g} s: {_reason(tmp)}")


def _log(tmp: str) -> str:
    text = ""
    for name in ("error_log", "output"):
        try:
            with open(os.path.join(tmp, name), encoding="utf-8", errors="replace") as f:
                text += f.read()
        except OSError:
            pass
    return text


def _reason(tmp: str) -> str:
    """The error log's most telling line: an exception's last line, else the last error."""
    lines = [line.strip() for line in _log(tmp).splitlines() if line.strip()]
    for line in reversed(lines):
        event = parse_error_line(line)
        message = event.message if event else line
        head = message.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return message
    errors = [line for line in lines if ":error]" in line or ":emerg]" in line]
    return (errors or lines or ["no error logged"])[-1]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
