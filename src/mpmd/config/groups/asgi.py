"""ASGI applications and their WebSockets: mpmd's own directives (no Apache module has them)."""

from __future__ import annotations

from mpmd.config.declaration import FLAG, SV, TAKE1, TAKE2, Directive, S
from mpmd.config.validators import DirectiveValueError, v_flag, v_size, v_timeout, v_wsgi_app

GROUP = "asgi"
TITLE = "ASGI applications and WebSockets"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="ASGIApp",
        group=GROUP,
        contexts=SV,
        syntax=TAKE2,
        usage="URL-path module:callable",
        default=None,
        doc=(
            "mpmd extension: mount an importable ASGI 3 application at a URL-path (event MPM "
            "and -X; `root_path` is the URL-path)"
        ),
        validate=v_wsgi_app,
        repeatable=True,
        extension=True,
    ),
    Directive(
        name="ASGILifespan",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="auto|on|off",
        default="auto",
        doc=(
            "mpmd extension: the ASGI lifespan protocol in each child (auto: used when the "
            "application supports it; on: an application that does not is an error)"
        ),
        validate=lambda name, args: _choice(name, args[0], ("auto", "on", "off")),
        extension=True,
    ),
    Directive(
        name="WebSocketPingInterval",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="seconds",
        default=20.0,
        doc="mpmd extension: ping an idle WebSocket this often (0: never)",
        validate=v_timeout,
        extension=True,
    ),
    Directive(
        name="WebSocketPingTimeout",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="seconds",
        default=20.0,
        doc="mpmd extension: close a WebSocket (1011) whose pong is this late (0: never)",
        validate=v_timeout,
        extension=True,
    ),
    Directive(
        name="WebSocketMaxMessageSize",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="bytes[K|M|G]",
        default=16 << 20,
        default_doc="16M",
        doc="mpmd extension: a larger WebSocket message is refused with close code 1009",
        validate=v_size,
        extension=True,
    ),
    Directive(
        name="WebSocketPerMessageDeflate",
        group=GROUP,
        contexts=S,
        syntax=FLAG,
        usage="On|Off",
        default=True,
        doc="mpmd extension: accept permessage-deflate (RFC 7692) when a client offers it",
        validate=v_flag,
        extension=True,
    ),
    Directive(
        name="WebSocketCloseTimeout",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="seconds",
        default=5.0,
        doc=(
            "mpmd extension: on a graceful stop or restart, how long a WebSocket's peer gets "
            "to answer the server's close (1001) before the connection is cut"
        ),
        validate=v_timeout,
        extension=True,
    ),
)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    word = value.lower()
    if word not in choices:
        raise DirectiveValueError(f"{name} must be one of {', '.join(choices)}")
    return word
