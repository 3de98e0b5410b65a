"""Running ab (ApacheBench) for workload h, and reading its output.

wrk cannot measure full TLS handshakes: it keeps each connection's SSL object across
reconnects (SSL_clear keeps the session), so from the second connection on it resumes with
the server's TLS 1.3 ticket and skips the certificate and its signature. ab (apache2-utils,
installed with apache2) makes a new SSL object per connection, so each connection is a full
handshake. Same pinning and bounds as wrk: cpu 0, `timeout`; a killed ab counts as 0 req/s.
The parser is pure, unit-tested on ab's text report, and fills wrk's WrkResult.
"""

from __future__ import annotations

import re

from bench.wrk import CLIENT_CPU, WrkResult, run_client

_RE_RPS = re.compile(r"^Requests per second:\s+([\d.]+)", re.M)
_RE_COMPLETE = re.compile(r"^Complete requests:\s+(\d+)", re.M)
_RE_TIME = re.compile(r"^Time taken for tests:\s+([\d.]+) seconds", re.M)
_RE_TOTAL = re.compile(r"^Total transferred:\s+(\d+) bytes", re.M)
_RE_RATE = re.compile(r"^Transfer rate:\s+([\d.]+) \[Kbytes/sec\]", re.M)
_RE_PERCENTILE = re.compile(r"^\s*(\d+)%\s+(\d+)", re.M)
_RE_FAILED = re.compile(r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)")
_RE_NON_2XX = re.compile(r"^Non-2xx responses:\s+(\d+)", re.M)
MAX_REQUESTS = 100_000_000  # -t stops ab; -n after it lifts -t's implied 50000


def parse_ab_output(text: str) -> WrkResult:
    """ab's report as a WrkResult: percentiles in whole ms as ab prints them; failed requests
    (connect, receive, length, exceptions) under socket_errors."""
    result = WrkResult()
    for pct, value in _RE_PERCENTILE.findall(text):
        result.percentiles_ms[pct] = float(value)
    if m := _RE_COMPLETE.search(text):
        result.requests = int(m.group(1))
    if m := _RE_TIME.search(text):
        result.seconds = float(m.group(1))
    if m := _RE_TOTAL.search(text):
        result.bytes_read = int(m.group(1))
    if m := _RE_RATE.search(text):
        result.transfer_mib_per_sec = round(float(m.group(1)) / 1024, 3)
    if m := _RE_RPS.search(text):
        result.requests_per_sec = float(m.group(1))
    if m := _RE_FAILED.search(text):
        names = ("connect", "read", "length", "exceptions")
        result.socket_errors = dict(zip(names, map(int, m.groups()), strict=True))
    if m := _RE_NON_2XX.search(text):
        result.non_2xx = int(m.group(1))
    return result


def ab_command(
    url: str, connections: int, seconds: float, headers: tuple[str, ...] = ()
) -> list[str]:
    """ab pinned to the client core for `seconds`, stopped by `timeout` 2 s after; -r: a
    receive error is counted, not fatal."""
    cmd = ["timeout", "-s", "INT", "-k", "2", f"{seconds + 2:g}"]
    cmd += ["taskset", "-c", CLIENT_CPU, "ab", "-r", "-c", str(connections)]
    cmd += ["-t", f"{seconds:g}", "-n", str(MAX_REQUESTS), "-s", "30"]
    for header in headers:
        cmd += ["-H", header]
    return [*cmd, url]


def run_ab(
    url: str, connections: int, seconds: float, headers: tuple[str, ...] = ()
) -> tuple[WrkResult, list[str], str]:
    """Run ab once, as run_wrk runs wrk."""
    return run_client(ab_command(url, connections, seconds, headers), seconds, parse_ab_output,
                      _RE_RPS)  # fmt: skip
