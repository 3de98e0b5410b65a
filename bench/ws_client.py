"""WebSocket echo load client of workload ws-echo: N connections, one message in flight each.

wrk cannot speak WebSocket and the Python WebSocket libraries cost more per message than the
servers measured, so this is a bare client: raw asyncio Protocols on uvloop (asyncio without
it), the masked frame built once and written as is, the echo recognised by comparing bytes
(a general frame parser only when the server splits or batches frames). Each connection
upgrades, then sends its message, waits for the echo, and sends it again, for `--duration`
seconds counted from the moment every connection is open. Prints one JSON line with the
fields of bench.wrk.WrkResult (messages as requests). Stdlib only (plus uvloop if installed),
run by path: `python bench/ws_client.py --url ws://127.0.0.1:PORT/ws`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
from urllib.parse import urlsplit

MESSAGE = b"Hello, World!"
MASK = b"\x5a\x17\xc3\x81"  # fixed: servers must unmask, none may check its randomness
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PERCENTILES = ("50", "75", "90", "99")


def masked_frame(opcode: int, payload: bytes, mask: bytes = MASK) -> bytes:
    """One final client frame (RFC 6455 5.2): client frames are always masked."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big") if size else b""
    return head + mask + body


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


class Stats:
    """Counters shared by every connection of the process; `running` gates new sends."""

    def __init__(self) -> None:
        self.running = False
        self.messages = 0
        self.bytes_read = 0
        self.latencies: list[float] = []
        self.refused = 0  # handshake answered, but not with a valid 101
        self.closed = 0  # closed by the server (close frame or EOF) while running
        self.connect_failed = 0


class EchoConnection(asyncio.Protocol):
    """One WebSocket: the upgrade, then send / await echo / send until the run ends."""

    def __init__(self, stats: Stats, host: str, path: str, frame: bytes, echo: bytes) -> None:
        self.stats, self.frame, self.echo = stats, frame, echo
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.upgraded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent_at = 0.0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def start(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(self.frame)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded.done():
            self._handshake(data)
        elif data == self.echo and not self.buffer:  # the fast path: exactly one echo
            self._echoed(len(data))
        else:
            self._frames(self.buffer + data)

    def _handshake(self, data: bytes) -> None:
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        self.buffer = b""
        lines = head.split(b"\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in lines[1:])
        }
        ok = lines[0].split(b" ")[1:2] == [b"101"]
        if not ok or headers.get(b"sec-websocket-accept") != accept_key(self.key):
            self.stats.refused += 1
            self.upgraded.set_result(False)
            self.transport.close()
            return
        self.upgraded.set_result(True)
        if rest:
            self._frames(rest)

    def _frames(self, data: bytes) -> None:
        """General server-frame parser (unmasked frames, any length) for the slow path."""
        pos, end = 0, len(data)
        while end - pos >= 2:
            first, size, head = data[pos], data[pos + 1] & 0x7F, 2
            if size == 126:
                size, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                size, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            if end - pos < head + size:
                break
            opcode = first & 0x0F
            if opcode == 0x9:  # ping: answer with a pong carrying its payload
                self.transport.write(masked_frame(0xA, data[pos + head : pos + head + size]))
            elif opcode == 0x8:
                self._gone()
                self.transport.close()
                return
            elif first & 0x80 and opcode in (0x0, 0x1, 0x2):
                self._echoed(head + size)
            pos += head + size
        self.buffer = data[pos:]

    def _echoed(self, size: int) -> None:
        stats = self.stats
        if not stats.running:
            return
        now = time.perf_counter()
        stats.messages += 1
        stats.bytes_read += size
        stats.latencies.append(now - self.sent_at)
        self.sent_at = now
        self.transport.write(self.frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_result(False)
        else:
            self._gone()

    def _gone(self) -> None:
        """Count a connection the server ended during the run, once."""
        if self.stats.running and not self.lost:
            self.stats.closed += 1
        self.lost = True

    def close(self) -> None:
        """A close frame (1000), then the socket: the server sees a clean goodbye."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()


async def _open(
    loop: asyncio.AbstractEventLoop, args: argparse.Namespace, stats: Stats, frame: bytes
) -> EchoConnection | None:
    url = urlsplit(args.url)
    echo = bytes((0x81 if args.text else 0x82, len(MESSAGE))) + MESSAGE
    try:
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: EchoConnection(stats, url.netloc, url.path or "/", frame, echo),
                url.hostname,
                url.port or 80,
            ),
            args.connect_timeout,
        )
        ok = await asyncio.wait_for(conn.upgraded, args.connect_timeout)
    except (OSError, TimeoutError):
        stats.connect_failed += 1
        return None
    return conn if ok else None


def percentile_ms(ordered: list[float], pct: float) -> float:
    """The nearest-rank percentile of sorted seconds, in milliseconds."""
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return round(ordered[index] * 1000, 3)


async def run(args: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    stats = Stats()
    frame = masked_frame(0x1 if args.text else 0x2, MESSAGE)
    opened = await asyncio.gather(*(_open(loop, args, stats, frame) for _ in range(args.conns)))
    conns = [c for c in opened if c is not None]
    started = time.perf_counter()
    stats.running = True
    for conn in conns:
        conn.start()
    await asyncio.sleep(args.duration)
    stats.running = False
    seconds = time.perf_counter() - started
    for conn in conns:
        conn.close()
    await asyncio.sleep(0.05)  # let the close frames go out before the loop stops
    ordered = sorted(stats.latencies)
    return {
        "requests_per_sec": round(stats.messages / seconds, 2),
        "requests": stats.messages,
        "seconds": round(seconds, 3),
        "bytes_read": stats.bytes_read,
        "transfer_mib_per_sec": round(stats.bytes_read / seconds / 1024**2, 3),
        "percentiles_ms": {p: percentile_ms(ordered, float(p)) for p in PERCENTILES}
        if ordered
        else {},
        "socket_errors": {
            "connect": stats.connect_failed,
            "handshake": stats.refused,
            "closed": stats.closed,
        },
        "connections": len(conns),
        "loop": type(loop).__module__.split(".")[0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ws://host:port/path")
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--binary", dest="text", action="store_false", help="bytes messages")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # `timeout -s INT`: no traceback, no report
        main()
