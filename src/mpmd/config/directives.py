"""The directive registry: every directive mpmd understands, declared once, as data.

Each `Directive` (config/declaration.py) names where it may appear, how many arguments it
takes, its default (per MPM where Apache's differ), a validator that turns the arguments into
a typed value (config/validators.py), and a one-line doc. The declarations live in one module
per group of directives in config/groups/; this module indexes them. config/build.py reads
values and defaults only through this table, and `python -m mpmd.config.directives` prints
docs/directives.md from it.

config/ignored.py lists the directives of Apache modules mpmd does not implement, so that real
Apache configurations load (with one warning per name). A name in neither table is an error.

This module never reads files or builds a ServerConfig: it validates one directive at a time.
"""

from __future__ import annotations

import difflib
from typing import Any

from mpmd.config.declaration import DIRECTORY, PROXY, SERVER, VHOST, Directive, PerMpm
from mpmd.config.groups import asgi, content, core, http, logs, mpm, proxy, remoteip, ssl, wsgi
from mpmd.config.ignored import (
    IGNORED,
    IGNORED_BY_NAME,
    IGNORED_CANONICAL,
    IGNORED_SECTIONS,
)
from mpmd.config.model import MPM_NAMES
from mpmd.config.validators import (
    MODULE_CALLABLE,
    OPTIONS_ALL,
    DirectiveValueError,
    apply_options,
    parse_listen,
    parse_listen_address,
)

__all__ = [
    "BY_NAME",
    "CONDITIONAL_SECTIONS",
    "DIRECTIVES",
    "DIRECTORY",
    "GROUPS",
    "MODULE_CALLABLE",
    "OPTIONS_ALL",
    "PARSER_DIRECTIVES",
    "PROXY",
    "SECTIONS",
    "SERVER",
    "VHOST",
    "Directive",
    "DirectiveValueError",
    "apply_options",
    "is_directive",
    "lookup",
    "parse_listen",
    "parse_listen_address",
    "render_markdown",
    "unknown_message",
]

# The groups, in the order docs/directives.md lists them. A new group of directives is a
# module in config/groups/ (GROUP, TITLE, DIRECTIVES) and its name here.
GROUPS = (mpm, core, http, content, logs, wsgi, asgi, proxy, ssl, remoteip)
DIRECTIVES: tuple[Directive, ...] = tuple(d for group in GROUPS for d in group.DIRECTIVES)

# Handled by config/syntax.py while reading; listed so names are known and documented.
PARSER_DIRECTIVES: dict[str, str] = {
    "Include": "Name(s) of the config file(s) to be included; fails if the wildcard matches none",
    "IncludeOptional": "Name or pattern of the config file(s) to be included; ignored if absent",
    "Define": "Define a variable, optionally to a value.  Same as passing -D to the command line.",
    "UnDefine": "Undefine the existence of a variable. Undo a Define.",
}

# Sections mpmd honours (their directives are applied) and conditionals the parser resolves.
SECTIONS = frozenset(
    {"virtualhost", "directory", "directorymatch", "location", "locationmatch"}
    | {"proxy", "proxymatch"}
)
CONDITIONAL_SECTIONS = frozenset(
    {"ifmodule", "ifdefine", "ifversion", "iffile", "ifdirective", "ifsection"}
)


def _index() -> dict[str, Directive]:
    by_name: dict[str, Directive] = {}
    for group in GROUPS:
        assert all(d.group == group.GROUP for d in group.DIRECTIVES), group.GROUP
    for directive in DIRECTIVES:
        for name in (directive.name, *directive.aliases):
            assert name.lower() not in by_name, name
            by_name[name.lower()] = directive
    overlap = set(by_name) & (set(IGNORED_BY_NAME) | set(PARSER_DIRECTIVES))
    assert not overlap, overlap
    return by_name


BY_NAME = _index()
_CANONICAL = {
    **{n.lower(): n for d in DIRECTIVES for n in (d.name, *d.aliases)},
    **IGNORED_CANONICAL,
    **{n.lower(): n for n in PARSER_DIRECTIVES},
    **{
        n.lower(): n
        for n in (
            *("VirtualHost", "Directory", "DirectoryMatch", "Location", "LocationMatch"),
            *("Proxy", "ProxyMatch"),
            *("IfModule", "IfDefine", "IfVersion", "IfFile", "IfDirective", "IfSection"),
        )
    },
}


def lookup(name: str) -> Directive | None:
    """The implemented directive called `name` (case-insensitive, aliases included)."""
    return BY_NAME.get(name.lower())


def is_directive(name: str) -> bool:
    """Whether `name` is a directive or section mpmd knows (for <IfDirective>/<IfSection>)."""
    return name.lower().lstrip("<") in _CANONICAL


def unknown_message(name: str) -> str:
    """Apache's "Invalid command" error, with the closest known name as a suggestion."""
    message = (
        f"Invalid command '{name}', perhaps misspelled or defined by a module not included "
        "in the server configuration"
    )
    close = difflib.get_close_matches(name.lower(), list(_CANONICAL), n=1, cutoff=0.75)
    if close:
        message += f" (did you mean {_CANONICAL[close[0]]}?)"
    return message


# --- documentation ------------------------------------------------------------------------

_CONTEXT_ORDER = (
    (SERVER, "server config"),
    (VHOST, "virtual host"),
    (DIRECTORY, "directory"),
    (PROXY, "proxy section"),
)


def _format_default(directive: Directive) -> str:
    default = directive.default
    if directive.default_doc is not None:
        return directive.default_doc
    if default is None:
        return "—"
    if isinstance(default, PerMpm):
        return ", ".join(f"{mpm}: {_plain(default[mpm])}" for mpm in MPM_NAMES if mpm in default)
    return _plain(default)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "On" if value else "Off"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render_markdown() -> str:
    """docs/directives.md, generated from the registry (python -m mpmd.config.directives)."""
    lines = [
        "# mpmd directives",
        "",
        "Generated from `src/mpmd/config/directives.py` by "
        "`python -m mpmd.config.directives > docs/directives.md`; do not edit by hand.",
        "Names are case-insensitive. Defaults that differ per MPM are listed per MPM.",
        "",
    ]
    for group in GROUPS:
        lines += [
            f"## {group.TITLE}",
            "",
            "| Directive | Aliases | Context | Syntax | Default | Description |",
            "|---|---|---|---|---|---|",
        ]
        for d in group.DIRECTIVES:
            context = ", ".join(label for key, label in _CONTEXT_ORDER if key in d.contexts)
            if d.mpms != frozenset(MPM_NAMES):
                context += f" ({'/'.join(m for m in MPM_NAMES if m in d.mpms)} only)"
            cells = [
                f"`{d.name}`",
                ", ".join(f"`{a}`" for a in d.aliases) or "—",
                context,
                f"`{d.name} {d.usage}`",
                _format_default(d),
                d.doc,
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    lines += ["## Read by the configuration parser", "", "| Directive | Description |", "|---|---|"]
    lines += [f"| `{name}` | {doc} |" for name, doc in PARSER_DIRECTIVES.items()]
    lines += [
        "",
        "## Accepted and ignored",
        "",
        "Directives of Apache modules mpmd does not implement load with one warning per name "
        "(`FILE:LINE: Name (module) is not implemented by mpmd; every Name is ignored`).",
        "",
        "| Module | Directives |",
        "|---|---|",
    ]
    for module, names in IGNORED.items():
        sections = IGNORED_SECTIONS.get(module, "")
        shown = [f"`{n}`" for n in names.split()] + [f"`<{n}>`" for n in sections.split()]
        if shown:
            lines.append(f"| {module} | {', '.join(shown)} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown(), end="")
