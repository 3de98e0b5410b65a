"""What one directive declaration names: the `Directive` record and the words it is written in.

A declaration is data: where the directive may appear (contexts), how many arguments it takes
(syntax, after Apache's command_rec kinds), its default, its validator and its doc. The
declarations themselves live in config/groups/ (one module per group of directives) and
config/directives.py indexes them; this module only defines their shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mpmd.config.model import MPM_NAMES, MpmName
from mpmd.config.validators import DirectiveValueError

# Where a directive may appear. "server" = main server config, "vhost" = <VirtualHost>,
# "directory" = <Directory>, <Location> and their Match forms; "proxy" = <Proxy>/<ProxyMatch>,
# which also takes every directory-context directive (as Apache's ACCESS_CONF).
SERVER = "server"
VHOST = "vhost"
DIRECTORY = "directory"
PROXY = "proxy"
S = frozenset({SERVER})
V = frozenset({VHOST})
SV = frozenset({SERVER, VHOST})
SVD = frozenset({SERVER, VHOST, DIRECTORY})
D = frozenset({DIRECTORY})
SVP = frozenset({SERVER, VHOST, PROXY})

# Argument syntax, named after Apache's command_rec kinds: (label, min, max or None).
TAKE1 = ("TAKE1", 1, 1)
TAKE2 = ("TAKE2", 2, 2)
TAKE12 = ("TAKE12", 1, 2)
TAKE23 = ("TAKE23", 2, 3)
TAKE123 = ("TAKE123", 1, 3)
FLAG = ("FLAG", 1, 1)
ITERATE = ("ITERATE", 1, None)
ITERATE2 = ("ITERATE2", 2, None)

# Which MPMs use a directive (the others warn once and ignore it).
ALL_MPMS: frozenset[MpmName] = frozenset(MPM_NAMES)
PREFORK: frozenset[MpmName] = frozenset({"prefork"})
THREADED: frozenset[MpmName] = frozenset({"worker", "event"})
EVENT: frozenset[MpmName] = frozenset({"event"})

Validator = Callable[[str, tuple[str, ...]], Any]

_ARITY_WORDING = {
    "TAKE1": "takes one argument",
    "TAKE2": "takes two arguments",
    "TAKE12": "takes 1-2 arguments",
    "TAKE23": "takes two or three arguments",
    "TAKE123": "takes one, two or three arguments",
    "ITERATE": "requires at least one argument",
    "ITERATE2": "requires at least two arguments",
}


class PerMpm(dict[MpmName, Any]):
    """A default that differs per MPM, as Apache compiles one into each; unlisted MPMs: none."""


@dataclass(frozen=True, slots=True)
class Directive:
    name: str
    group: str  # the config/groups/ module that declares it, which titles its docs section
    contexts: frozenset[str]
    syntax: tuple[str, int, int | None]
    usage: str  # argument synopsis for the docs, e.g. "number"
    default: Any  # the value config/build.py uses when the directive is absent (None = none)
    doc: str
    validate: Validator
    default_doc: str | None = None  # shown in the docs instead of `default` (gunicorn's name)
    aliases: tuple[str, ...] = ()
    mpms: frozenset[MpmName] = ALL_MPMS  # MPMs that use it
    global_only: bool = False  # Apache's GLOBAL_ONLY: "cannot occur within <VirtualHost>"
    repeatable: bool = False  # every occurrence counts (Listen, Alias ...) instead of last-wins
    extension: bool = False  # an mpmd extension, not an Apache directive

    def default_for(self, mpm: MpmName) -> Any:
        if isinstance(self.default, PerMpm):
            return self.default.get(mpm)
        return self.default

    def check_arity(self, args: tuple[str, ...]) -> None:
        """Raise with Apache's invoke_cmd wording when the argument count is wrong."""
        label, low, high = self.syntax
        if low <= len(args) and (high is None or len(args) <= high):
            return
        if label == "FLAG":
            raise DirectiveValueError(f"{self.name} must be On or Off")
        raise DirectiveValueError(f"{self.name} {_ARITY_WORDING[label]}, {self.doc}")
