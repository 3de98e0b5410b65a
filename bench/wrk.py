"""Running wrk and reading its output.

Owns the wrk command line (pinned to cpu 0, bounded by `timeout`) and the parser of wrk's text
report. The parser is pure so it is unit-tested without a server. wrk's units are binary
(KB = 1024 B) for sizes and us/ms/s/m/h for times.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

CLIENT_CPU = "0"

_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}

_RE_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RE_REQUESTS = re.compile(
    r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)(B|KB|MB|GB|TB) read", re.M
)
_RE_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_RE_TRANSFER = re.compile(r"^Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)", re.M)
_RE_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_RE_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass
class WrkResult:
    """One wrk run as the report needs it; `killed` means wrk overran -d and was stopped."""

    requests_per_sec: float = 0.0
    requests: int = 0
    seconds: float = 0.0
    bytes_read: int = 0
    transfer_mib_per_sec: float = 0.0
    percentiles_ms: dict[str, float] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    killed: bool = False

    @property
    def p99_ms(self) -> float | None:
        return self.percentiles_ms.get("99")

    def to_json(self) -> dict:
        return asdict(self)


def parse_time_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse_size_bytes(value: str, unit: str) -> int:
    return round(float(value) * _SIZE_UNITS[unit])


def parse_wrk_output(text: str) -> WrkResult:
    """Parse wrk's report (with --latency); missing parts stay at zero/empty."""
    result = WrkResult()
    for pct, value, unit in _RE_PERCENTILE.findall(text):
        key = pct.rstrip("0").rstrip(".") if "." in pct else pct
        result.percentiles_ms[key] = parse_time_ms(value, unit)
    if m := _RE_REQUESTS.search(text):
        result.requests = int(m.group(1))
        result.seconds = parse_time_ms(m.group(2), m.group(3)) / 1000.0
        result.bytes_read = parse_size_bytes(m.group(4), m.group(5))
    if m := _RE_RPS.search(text):
        result.requests_per_sec = float(m.group(1))
    if m := _RE_TRANSFER.search(text):
        mib = parse_size_bytes(m.group(1), m.group(2)) / 1024**2
        result.transfer_mib_per_sec = round(mib, 3)
    if m := _RE_SOCKET_ERRORS.search(text):
        result.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    if m := _RE_NON_2XX.search(text):
        result.non_2xx = int(m.group(1))
    return result


def wrk_command(
    url: str, connections: int, seconds: float, headers: tuple[str, ...] = ()
) -> list[str]:
    """wrk -t1 pinned to the client core, stopped by `timeout` if it overruns -d by 2 s."""
    cmd = ["timeout", "-s", "INT", "-k", "2", f"{seconds + 2:g}"]
    cmd += ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    cmd += ["--latency", "--timeout", "30s"]
    for header in headers:
        cmd += ["-H", header]
    return [*cmd, url]


def run_wrk(
    url: str, connections: int, seconds: float, headers: tuple[str, ...] = ()
) -> tuple[WrkResult, list[str], str]:
    """Run wrk once; a wrk killed by `timeout` counts as 0 req/s (the reference's rule)."""
    cmd = wrk_command(url, connections, seconds, headers)
    return run_client(cmd, seconds, parse_wrk_output, _RE_RPS)


def run_client(
    cmd: list[str], seconds: float, parse: Callable[[str], WrkResult], rps: re.Pattern[str]
) -> tuple[WrkResult, list[str], str]:
    """Run a load generator's `cmd` (wrk's or ab's) once and parse its report; one killed by
    `timeout`, or whose report has no rate line (`rps`), counts as 0 req/s."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=seconds + 15)
    except BaseException:  # also Ctrl-C / SIGTERM: the client must not outlive the harness
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    result = parse(stdout)
    if proc.returncode in (124, 137, -9) or not rps.search(stdout):
        result = WrkResult(killed=True, percentiles_ms=result.percentiles_ms)
    return result, cmd, stdout + stderr
