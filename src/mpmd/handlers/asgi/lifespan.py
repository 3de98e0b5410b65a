"""The ASGI lifespan protocol for one application in one event child (reference 4.4).

`startup` runs once per child before it accepts, `shutdown` once its connections are gone.
ASGILifespan auto (the default) treats an application that raises on the lifespan scope
before completing startup as one that does not support it ("appears unsupported", logged at
info, as uvicorn) and carries on; `on` makes that an error; `off` never calls it. A
`lifespan.startup.failed` always stops the child. `state` is the dict each request's scope
gets a shallow copy of.
"""

from __future__ import annotations

import asyncio
from typing import Any

LIFESPAN_ASGI = {"version": "3.0", "spec_version": "2.0"}


class Lifespan:
    """One application's lifespan task; `startup()`/`shutdown()` return an error or None."""

    def __init__(self, app: Any, mode: str, error_log: Any, name: str) -> None:
        self.app = app
        self.mode = mode
        self.error_log = error_log
        self.name = name
        self.state: dict[str, Any] = {}
        self.supported = mode != "off"
        self._inbox: asyncio.Queue[dict] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failure: str | None = None
        self._task: asyncio.Task | None = None

    async def startup(self) -> str | None:
        if not self.supported:
            return None
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failure is not None:
            return self._failure
        return None

    async def shutdown(self, timeout: float) -> str | None:
        """After the connections are gone; bounded by `timeout` (then the task is cancelled)."""
        task = self._task
        if not self.supported or task is None or task.done():
            return None
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout)
        except TimeoutError:
            task.cancel()
            return f"lifespan shutdown of '{self.name}' did not complete in {timeout:g} s"
        return self._failure

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": LIFESPAN_ASGI, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError):
                raise
            if self._started.is_set():  # after startup: a failed shutdown, logged
                self._failure = f"Exception in 'lifespan' protocol of '{self.name}': {error!r}"
            elif self.mode == "on":
                self.error_log.exception(
                    f"MP00287: Exception in 'lifespan' protocol of '{self.name}'", module="asgi"
                )
                self._failure = "the application raised on the lifespan scope (ASGILifespan on)"
            else:
                self.supported = False
                self.error_log.log(
                    "info",
                    f"MP00288: ASGI 'lifespan' protocol appears unsupported by '{self.name}'.",
                    module="asgi",
                )
        finally:
            if not self._started.is_set():  # returned without a word: no lifespan, as uvicorn
                self.supported = self.supported and self._failure is not None
            self._started.set()
            self._stopped.set()

    async def _receive(self) -> dict:
        return await self._inbox.get()

    async def _send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._failure = message.get("message", "") or "lifespan.startup.failed"
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self._failure = message.get("message", "") or "lifespan.shutdown.failed"
            self._stopped.set()
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message '{kind}'.")
