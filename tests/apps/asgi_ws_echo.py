"""An ASGI WebSocket echo application: the peer of the conformance table (tests/websocket_cases.py).

It accepts every WebSocket, sends back each text or bytes message as it came, and returns when the
client disconnects; an `http` request gets a short text answer and `lifespan` is acknowledged, so
the same module serves end-to-end runs against a real server.
"""

from __future__ import annotations


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"WebSocket echo\n"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "bytes": message["bytes"], "text": message["text"]})
