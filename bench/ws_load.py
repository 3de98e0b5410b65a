"""Running bench/ws_client.py for workload ws-echo, and reading its report.

Same pinning and bounds as wrk: the client on cpu 0 under `timeout` (a killed client counts
as 0 messages/s). The client prints one JSON line with WrkResult's fields, messages counted
as requests; the parser is pure and unit-tested.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from bench.wrk import CLIENT_CPU, WrkResult, run_client

CLIENT = Path(__file__).with_name("ws_client.py")
_RE_RATE = re.compile(r'"requests_per_sec":')
HANDSHAKE_SECONDS = 10  # the client's connect and upgrade bound, on top of -d


def parse_ws_output(text: str) -> WrkResult:
    """The client's JSON line as a WrkResult; an empty result if there is none."""
    for line in reversed(text.strip().splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        fields = WrkResult.__dataclass_fields__
        return WrkResult(**{k: v for k, v in data.items() if k in fields})
    return WrkResult()


def ws_command(
    url: str, connections: int, seconds: float, headers: tuple[str, ...] = ()
) -> list[str]:
    """The client pinned to the client core, stopped by `timeout` if it overruns."""
    if headers:
        raise ValueError("the WebSocket client sends no extra headers")
    cmd = ["timeout", "-s", "INT", "-k", "2", f"{seconds + HANDSHAKE_SECONDS + 2:g}"]
    cmd += ["taskset", "-c", CLIENT_CPU, sys.executable, str(CLIENT), "--url", url]
    return [*cmd, "--conns", str(connections), "--duration", f"{seconds:g}"]


def run_ws(
    url: str, connections: int, seconds: float, headers: tuple[str, ...] = ()
) -> tuple[WrkResult, list[str], str]:
    """Run the WebSocket client once, as run_wrk runs wrk."""
    cmd = ws_command(url, connections, seconds, headers)
    return run_client(cmd, seconds + HANDSHAKE_SECONDS, parse_ws_output, _RE_RATE)
