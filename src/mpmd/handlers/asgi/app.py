"""Loading an ASGI application, and telling one from a WSGI callable.

`ASGIApp` names an ASGI 3 callable (`async def app(scope, receive, send)`, or an object whose
`__call__` is a coroutine function). The spec still asks servers to run ASGI 2 ("double
callable": `app(scope)` returns a coroutine function of receive, send); a class whose instances
are ASGI 2 instances is the common form, and it is wrapped here. The positional `mpmd module:app`
asks `detect_interface`, which imports the module in a short-lived forked process so that the
parent never holds the application's code (a graceful restart loads it afresh in new children).
"""

from __future__ import annotations

import inspect
import os
import pickle
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mpmd.config.model import WsgiMount
from mpmd.handlers.wsgi import WsgiLoadError, extend_sys_path, load_module_app

AsgiApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Any]


def is_asgi3(obj: Any) -> bool:
    """An ASGI 3 single callable: a coroutine function, or an object whose __call__ is one."""
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - the bound method is what runs
    return call is not None and inspect.iscoroutinefunction(call)


def is_asgi2(obj: Any) -> bool:
    """An ASGI 2 double callable: a class whose instances (built from the scope) are awaited
    with (receive, send)."""
    if not inspect.isclass(obj):
        return False
    call = getattr(obj, "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)


def as_asgi3(app: Any) -> AsgiApp:
    """The application as an ASGI 3 callable (ASGI 2 instances wrapped, as the spec asks)."""
    if is_asgi3(app) and not inspect.isclass(app):
        return app

    async def asgi2(scope: dict, receive: Any, send: Any) -> None:
        await app(scope)(receive, send)

    return asgi2


def load_asgi_app(mount: WsgiMount, python_path: Sequence[str]) -> AsgiApp:
    """The callable an ASGIApp names (imports the user's module)."""
    extend_sys_path(python_path)
    app = load_module_app(mount.target)
    if not (is_asgi3(app) or is_asgi2(app)):
        raise WsgiLoadError(
            f"ASGI application '{mount.target}' is not an ASGI callable "
            "(a coroutine function of scope, receive, send)"
        )
    return as_asgi3(app)


def detect_interface(target: str, python_path: Sequence[str]) -> tuple[str, str | None]:
    """("asgi" or "wsgi", None), or ("wsgi", why) when the module could not be imported here
    (the child then reports the import error as for any WSGIApp). Runs in a forked process."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: import, answer, exit without running the parent's atexit
        os.close(read_fd)
        try:
            extend_sys_path(python_path)
            app = load_module_app(target)
            kind = "asgi" if is_asgi3(app) or is_asgi2(app) else "wsgi"
            answer: tuple[str, str | None] = (kind, None)
        except BaseException as error:  # any failure is reported, not raised
            answer = ("wsgi", f"{type(error).__name__}: {error}")
        try:
            os.write(write_fd, pickle.dumps(answer))
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    try:
        return pickle.loads(b"".join(chunks))
    except (pickle.UnpicklingError, EOFError):
        return "wsgi", "the application's import ended the process"


class AsgiMount:
    """An ASGIApp in the router's table: the application and its root_path. The event child's
    ASGI loop serves it; a thread never should (the loop routes these requests first)."""

    __slots__ = ("app", "error_log", "root_path", "target")

    def __init__(self, app: AsgiApp, root_path: str, target: str, error_log: Any) -> None:
        self.app = app
        self.root_path = root_path
        self.target = target
        self.error_log = error_log

    def __call__(self, exchange: Any, path_info: str | None = None) -> None:
        self.error_log.log(
            "error",
            f"MP00286: ASGI application '{self.target}' reached outside the ASGI loop",
            module="asgi",
        )
        exchange.keep_alive = False
        exchange.send_error(500)
