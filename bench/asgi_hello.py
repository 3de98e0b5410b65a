"""Benchmark ASGI app for every ASGI server: hello world over HTTP, echo over WebSocket.

One plain ASGI 3.0 callable, no framework, so the workloads measure the servers: any HTTP
request gets `Hello, World!` as text/plain with Content-Length (workload asgi-hello); any
WebSocket is accepted and every text or bytes message is sent back as it came (ws-echo).
Lifespan is supported so no server logs a fallback. fixtures.py copies this file into the
run's apps/ folder, from which mpmd, uvicorn and granian all import `asgi_hello:app`.
"""

from collections.abc import Awaitable, Callable

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

HELLO = b"Hello, World!"
HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
HELLO_BODY = {"type": "http.response.body", "body": HELLO}


async def app(scope: dict, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "http":
        await send(HELLO_START)
        await send(HELLO_BODY)
    elif kind == "websocket":
        await _echo(receive, send)
    elif kind == "lifespan":
        await _lifespan(receive, send)


async def _echo(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
        elif kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        else:  # websocket.disconnect
            return


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
