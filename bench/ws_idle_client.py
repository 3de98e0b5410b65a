"""The idle WebSocket client of workload ws-idle: open N WebSockets, then hold them idle.

Run as its own process pinned to the client core (`python -m bench.ws_idle_client ...`), the
WebSocket counterpart of bench/idle_client.py with the same stdin/stdout protocol: it opens
`--conns` connections with at most `--in-flight` connects pending (each connect and handshake
bounded by `--connect-timeout`), upgrades each (a plain load client's handshake: no
permessage-deflate unless `--deflate`), then sends nothing. It answers the server's pings with
pongs, as a browser does, so a server's keep-alive pings do not close it. Once every
connection is upgraded, refused or failed (or after `--ramp` seconds) it prints one JSON line
{"event": "ready", ...}; on a line from stdin (or after `--max-seconds`) it prints
{"event": "report", ...} and exits. Raw asyncio Protocols: a connection costs the client a
socket and one small object, so 10,000 fit on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from dataclasses import asdict, dataclass

from bench.idle_client import emit, raise_fd_limit, report_asked
from bench.ws_client import accept_key, masked_frame

DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


@dataclass
class WsIdleCounts:
    connected: int = 0
    connect_failed: int = 0
    upgraded: int = 0
    refused: int = 0  # answered, but not with a valid 101
    closed_by_server: int = 0  # after the upgrade: a close frame or EOF
    pings: int = 0
    deflate: int = 0  # upgrades whose 101 accepted permessage-deflate

    def report(self, total: int) -> dict:
        counts = asdict(self)
        counts["still_open"] = self.upgraded - self.closed_by_server
        counts["never_answered"] = total - self.upgraded - self.refused - self.connect_failed
        return counts


def parse_handshake(head: bytes, key: bytes) -> tuple[bool, bool]:
    """(a valid 101 for `key`, permessage-deflate accepted) from a response head."""
    lines = head.split(b"\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    }
    ok = lines[0].split(b" ")[1:2] == [b"101"]
    ok = ok and headers.get(b"sec-websocket-accept") == accept_key(key)
    return ok, b"permessage-deflate" in headers.get(b"sec-websocket-extensions", b"")


def split_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete server frames (unmasked) as (opcode, payload), and the incomplete rest."""
    frames: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    while end - pos >= 2:
        opcode, size, head = data[pos] & 0x0F, data[pos + 1] & 0x7F, 2
        if size == 126:
            size, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif size == 127:
            size, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        if end - pos < head + size:
            break
        frames.append((opcode, data[pos + head : pos + head + size]))
        pos += head + size
    return frames, data[pos:]


class IdleWebSocket(asyncio.Protocol):
    """One WebSocket: the upgrade, then silence but for pongs."""

    def __init__(self, counts: WsIdleCounts, host: str, path: str, deflate: bool) -> None:
        self.counts = counts
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{DEFLATE_OFFER if deflate else ''}\r\n"
        ).encode()
        self.upgraded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded.done():
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            ok, deflate = parse_handshake(head, self.key)
            self.buffer = rest
            self.upgraded.set_result(ok)
            if not ok:
                self.counts.refused += 1
                self.transport.close()
                return
            self.counts.deflate += deflate
        frames, self.buffer = split_frames(self.buffer)
        for opcode, payload in frames:
            if opcode == 0x9:
                self.counts.pings += 1
                self.transport.write(masked_frame(0xA, payload))
            elif opcode == 0x8:
                self._gone()
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_result(False)
        elif self.upgraded.result():
            self._gone()

    def _gone(self) -> None:
        if not self.gone:
            self.gone = True
            self.counts.closed_by_server += 1

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def _open(
    args: argparse.Namespace, gate: asyncio.Semaphore, counts: WsIdleCounts, held: list
) -> None:
    loop = asyncio.get_running_loop()
    async with gate:
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: IdleWebSocket(
                        counts, f"127.0.0.1:{args.port}", args.path, args.deflate
                    ),
                    "127.0.0.1",
                    args.port,
                ),
                args.connect_timeout,
            )
        except (OSError, TimeoutError):
            counts.connect_failed += 1
            return
        counts.connected += 1
        held.append(conn)
        try:
            ok = await asyncio.wait_for(asyncio.shield(conn.upgraded), args.connect_timeout)
        except TimeoutError:
            ok = False
        if ok:
            counts.upgraded += 1


async def _main(args: argparse.Namespace) -> None:
    counts = WsIdleCounts()
    gate = asyncio.Semaphore(args.in_flight)
    held: list[IdleWebSocket] = []
    tasks = [asyncio.create_task(_open(args, gate, counts, held)) for _ in range(args.conns)]
    started = time.monotonic()
    await asyncio.wait(tasks, timeout=args.ramp)
    ramp = counts.report(args.conns)
    emit({"event": "ready", "seconds": round(time.monotonic() - started, 2), **ramp})
    await report_asked(max(1.0, args.max_seconds - args.ramp))
    emit({"event": "report", "upgraded_in_ramp": ramp["upgraded"], **counts.report(args.conns)})
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in held:
        conn.close()
    await asyncio.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--conns", type=int, default=10000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--ramp", type=float, default=60.0, help="at most this long to open")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(_main(args))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
