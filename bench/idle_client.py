"""The idle keep-alive client of workload e: open N connections, one GET each, then hold them.

Run as its own process pinned to the client core (`python -m bench.idle_client ...`). It opens
`--conns` connections with at most `--in-flight` connects pending (each bounded by
`--connect-timeout`), sends one GET on each and reads the response, then keeps the connection
idle. After `--ramp` seconds it prints one JSON line {"event": "ready", ...}; on a line from stdin
(or after `--max-seconds`) it prints {"event": "report", ...} and exits. A connection the server
closes is closed here too, as a browser would. Never sends more than one request per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass


@dataclass
class IdleCounts:
    connected: int = 0
    connect_failed: int = 0
    answered: int = 0
    closed_by_server: int = 0
    errors: int = 0

    def report(self, total: int) -> dict:
        counts = asdict(self)
        counts["still_open"] = self.answered - self.closed_by_server
        counts["never_answered"] = total - self.answered - self.connect_failed
        return counts


async def _read_response(reader: asyncio.StreamReader) -> None:
    """Read one response with a Content-Length body (what every measured server sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)


async def _hold_one(args: argparse.Namespace, gate: asyncio.Semaphore, counts: IdleCounts) -> None:
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", args.port), args.connect_timeout
            )
        except (OSError, TimeoutError):
            counts.connect_failed += 1
            return
    counts.connected += 1
    try:
        writer.write(f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await _read_response(reader)
        counts.answered += 1
        if await reader.read(1) == b"":
            counts.closed_by_server += 1
        else:
            counts.errors += 1  # the server sent bytes nobody asked for
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        counts.errors += 1
    finally:
        writer.close()


async def _main(args: argparse.Namespace) -> None:
    counts = IdleCounts()
    gate = asyncio.Semaphore(args.in_flight)
    tasks = [asyncio.create_task(_hold_one(args, gate, counts)) for _ in range(args.conns)]
    started = time.monotonic()
    deadline = started + args.ramp
    while time.monotonic() < deadline and counts.answered + counts.connect_failed < args.conns:
        await asyncio.sleep(0.05)
    ramp = counts.report(args.conns)
    emit({"event": "ready", "seconds": round(time.monotonic() - started, 2), **ramp})
    await report_asked(args.max_seconds - args.ramp)
    emit({"event": "report", "answered_in_ramp": ramp["answered"], **counts.report(args.conns)})
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def report_asked(seconds: float) -> None:
    """Until the harness writes a line on stdin (asking for the report), at most `seconds`."""
    asked = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wait_for_stdin() -> None:
        sys.stdin.readline()
        with contextlib.suppress(RuntimeError):  # the loop may be gone already
            loop.call_soon_threadsafe(asked.set)

    threading.Thread(target=wait_for_stdin, daemon=True).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asked.wait(), seconds)


def emit(record: dict) -> None:
    """One JSON line for the harness."""
    print(json.dumps(record), flush=True)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(_main(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
