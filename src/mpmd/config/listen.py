"""Where the server listens and what it is called: `Listen` (or `--listen`) and `ServerName`."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace

from mpmd.config import directives as reg
from mpmd.config.model import ListenAddress
from mpmd.config.syntax import ConfigError

COMMAND_LINE = "(command line)"  # where a command-line option's error is reported
DEFAULT_LISTEN = ListenAddress("127.0.0.1", 8080)  # the built-in configuration's


def listen_addresses(
    directives: Sequence[tuple[ListenAddress, str | None]],
    resolve: Callable[[str], str],
    listen: Sequence[str],
    builtin: bool,
) -> tuple[ListenAddress, ...]:
    """--listen (a relative socket path from the current directory) or the Listen directives
    (`resolve`: from ServerRoot), duplicates dropped."""
    found: list[ListenAddress] = []
    if listen:
        for text in listen:
            try:
                address = reg.parse_listen_address(text)
            except reg.DirectiveValueError as err:
                raise ConfigError(COMMAND_LINE, 0, f"--listen {text}: {err}") from None
            if address.path:
                address = replace(address, path=os.path.abspath(address.path))
            found.append(address)
    else:
        for address, _ in directives:
            found.append(replace(address, path=resolve(address.path)) if address.path else address)
        if not found and builtin:
            found = [DEFAULT_LISTEN]
    return tuple(dict.fromkeys(found))


def server_name(text: str | None, default_port: int) -> tuple[str, int]:
    """ServerName `[scheme://]host[:port]` -> (host, port); the machine's name when unset."""
    if not text:
        return socket.gethostname(), default_port
    text = text.split("://", 1)[-1]
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and not host.endswith(":"):
        return host.strip("[]"), int(port)
    return text, default_port
