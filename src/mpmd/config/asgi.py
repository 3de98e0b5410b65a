"""The ASGI part of the configuration: ASGIApp mounts (which need the event MPM) and the
settings of config/groups/asgi.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mpmd.config.listen import COMMAND_LINE
from mpmd.config.model import AsgiSettings, MpmName, WsgiMount
from mpmd.config.syntax import ConfigError, Node

NEEDS_EVENT = (
    "ASGIApp needs the event MPM (or -X): an ASGI application runs on the event child's loop"
)


def asgi_mount(node: Node, value: tuple[str, str], mpm: MpmName, one_process: bool) -> WsgiMount:
    """An ASGIApp line; refused (FILE:LINE) under prefork and worker, which have no loop."""
    if mpm != "event" and not one_process:
        raise ConfigError(node.file, node.line, NEEDS_EVENT)
    return WsgiMount(value[0].rstrip("/"), value[1], "asgi")


def app_mount(app: str, interface: str, mpm: MpmName, one_process: bool) -> WsgiMount:
    """The positional `mpmd module:app`, mounted at / as the interface it was detected as."""
    if interface != "asgi":
        return WsgiMount("", app, "app")
    if mpm != "event" and not one_process:
        raise ConfigError(COMMAND_LINE, 0, f"{app} is an ASGI application: {NEEDS_EVENT}")
    return WsgiMount("", app, "asgi")


def asgi_settings(last: Callable[[str, Any], Any], default: Callable[[str], Any]) -> AsgiSettings:
    """The main server's ASGI directives (0 seconds: no pings, no ping timeout)."""

    def value(name: str) -> Any:
        return last(name, default(name))

    return AsgiSettings(
        lifespan=value("ASGILifespan"),
        ping_interval=value("WebSocketPingInterval") or None,
        ping_timeout=value("WebSocketPingTimeout") or None,
        max_message_size=value("WebSocketMaxMessageSize"),
        per_message_deflate=value("WebSocketPerMessageDeflate"),
        close_timeout=value("WebSocketCloseTimeout"),
    )
