"""A FastAPI app for the ASGI end-to-end tests (issue 15): what real apps ask of a server.

JSON routes, a streaming body, Server-Sent Events held open (the long-poll case), a file
response (sendfile through `http.response.pathsend` where the server offers it), a WebSocket
chat that broadcasts to every client, and lifespan state read back by a route. /file serves
MPMD_TEST_FILE when set, else this module's own source (a file every checkout has).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, StreamingResponse

DEFAULT_FILE = Path(__file__)
STREAM_CHUNKS = 10
SSE_INTERVAL = float(os.environ.get("MPMD_TEST_SSE_INTERVAL", "5"))


def served_file() -> Path:
    """The file /file serves: MPMD_TEST_FILE, or DEFAULT_FILE."""
    return Path(os.environ.get("MPMD_TEST_FILE") or DEFAULT_FILE)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
    """Runs once per process before it serves: its dict becomes every request's state."""
    yield {"started_at": time.time(), "startups": 1, "pid": os.getpid()}


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def get_item(item_id: int, q: str | None = None) -> dict:
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(request: Request) -> dict:
    return {"received": await request.json()}


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(STREAM_CHUNKS):
            yield f"chunk {n}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/events")
async def events(request: Request) -> StreamingResponse:
    """One event at once, then a comment every SSE_INTERVAL s until the client goes away."""

    async def feed() -> AsyncIterator[bytes]:
        yield b"event: hello\ndata: connected\n\n"
        while not await request.is_disconnected():
            await asyncio.sleep(SSE_INTERVAL)
            yield b": keep-alive\n\n"

    headers = {"Cache-Control": "no-cache"}
    return StreamingResponse(feed(), media_type="text/event-stream", headers=headers)


@app.get("/file")
async def file() -> FileResponse:
    return FileResponse(served_file(), media_type="application/octet-stream")


@app.get("/state")
async def state(request: Request) -> dict:
    return {
        "started_at": request.state.started_at,
        "startups": request.state.startups,
        "pid": request.state.pid,
    }


class ChatRoom:
    """Every connected socket of this process; a message goes to all of them, sender included."""

    def __init__(self) -> None:
        self.members: dict[WebSocket, str] = {}

    async def broadcast(self, text: str) -> None:
        for socket in list(self.members):
            try:
                await socket.send_text(text)
            except (WebSocketDisconnect, RuntimeError):  # left while we sent
                self.members.pop(socket, None)


room = ChatRoom()


@app.websocket("/ws/chat")
async def chat(websocket: WebSocket, name: str = "anonymous") -> None:
    await websocket.accept()
    room.members[websocket] = name
    await room.broadcast(f"* {name} joined")
    try:
        while True:
            text = await websocket.receive_text()
            await room.broadcast(f"{name}: {text}")
    except WebSocketDisconnect:
        room.members.pop(websocket, None)
        await room.broadcast(f"* {name} left")
