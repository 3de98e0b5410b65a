"""An ASGI app for the WebSocket end-to-end tests: the handshake answers an app can give.

By the request's path below the mount (`path` less `root_path`): `/protocol` accepts with the
last subprotocol the client offered and two extra headers (`x-picked`: the offers, `x-pid`: the
serving child), then echoes; `/deny` answers with an HTTP response through the
`websocket.http.response` extension; `/refuse` closes before accepting (the server's 403). An
`http` request to `/gate` creates the file named by its query string plus `.started`, then is
held until the file itself exists: a request in flight across a restart, released by the test
without sleeps. Any other `http` request gets a short answer.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import unquote


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "http":
        await _http(scope, send)
        return
    await receive()  # websocket.connect
    path = scope["path"].removeprefix(scope["root_path"])
    if path == "/deny":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"entry\n"})
        return
    if path == "/refuse":
        await send({"type": "websocket.close"})
        return
    offered = scope["subprotocols"]
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": offered[-1] if offered else None,
            "headers": [
                (b"x-picked", ",".join(offered).encode()),
                (b"x-pid", str(os.getpid()).encode()),
            ],
        }
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "bytes": message["bytes"], "text": message["text"]})


async def _http(scope, send) -> None:
    body = b"extra\n"
    if scope["path"].removeprefix(scope["root_path"]) == "/gate":
        gate = unquote(scope["query_string"].decode())
        open(gate + ".started", "w").close()  # the request is in flight
        while not os.path.exists(gate):
            await asyncio.sleep(0.02)
        body = b"released\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})
