"""A trivial WebSocket echo server, only to measure bench/ws_client.py's own ceiling.

No ASGI, no library, no validation beyond the upgrade: a raw asyncio Protocol on uvloop that
answers the handshake and sends every complete client frame back unmasked. It costs about what
the client costs per message, so pinned on the server core it shows how many messages per
second the client can drive and how busy the client core is doing it (bench/README.md has the
figures). `python -m bench.ws_raw_echo --port PORT` serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawEcho(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        data = self.buffer + data
        if not self.upgraded:
            head, sep, data = data.partition(b"\r\n\r\n")
            if not sep:
                self.buffer = head
                return
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.upgraded = True
        self.buffer = self._echo(data)

    def _echo(self, data: bytes) -> bytes:
        """Echo every complete masked frame in `data`; return the incomplete rest."""
        pos, end = 0, len(data)
        while end - pos >= 6:
            first, size, head = data[pos], data[pos + 1] & 0x7F, 2
            if size == 126:
                size, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                size, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            if end - pos < head + 4 + size:
                break
            mask = data[pos + head : pos + head + 4]
            body = data[pos + head + 4 : pos + head + 4 + size]
            key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
            plain = (int.from_bytes(body, "big") ^ key).to_bytes(size, "big") if size else b""
            if first & 0x0F == 0x8:
                self.transport.write(b"\x88\x02" + plain[:2])
                self.transport.close()
                return b""
            length = bytes((size,)) if size < 126 else b"\x7e" + size.to_bytes(2, "big")
            self.transport.write(bytes((first,)) + length + plain)
            pos += head + 4 + size
        return data[pos:]


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RawEcho, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
