"""Content mapping and access: what a URL maps to, and who may fetch it."""

from __future__ import annotations

from mpmd.config.declaration import ITERATE, SV, SVD, TAKE1, TAKE2, D, Directive
from mpmd.config.validators import (
    v_alias,
    v_allow_override,
    v_options,
    v_require,
    v_string,
    v_strings,
)

GROUP = "content"
TITLE = "Content mapping and access"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="DocumentRoot",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="path",
        default="htdocs",
        default_doc="htdocs (built-in default: mpmd's page)",
        doc="Root directory of the document tree",
        validate=v_string,
    ),
    Directive(
        name="Alias",
        group=GROUP,
        contexts=SV,
        syntax=TAKE2,
        usage="URL-path file-path",
        default=None,
        doc="a fakename and a realname",
        validate=v_alias,
        repeatable=True,
    ),
    Directive(
        name="DirectoryIndex",
        group=GROUP,
        contexts=SVD,
        syntax=ITERATE,
        usage="file ...|disabled",
        default=("index.html",),
        doc="a list of file names",
        validate=v_strings,
    ),
    Directive(
        name="Options",
        group=GROUP,
        contexts=SVD,
        syntax=ITERATE,
        usage="[+|-]option ...",
        default=("FollowSymLinks",),
        doc="Set a number of attributes for a given directory",
        validate=v_options,
    ),
    Directive(
        name="AllowOverride",
        group=GROUP,
        contexts=D,
        syntax=ITERATE,
        usage="None|All|type ...",
        default=("None",),
        doc=(
            "Controls what groups of directives can be configured by per-directory config files "
            "(mpmd never reads .htaccess)"
        ),
        validate=v_allow_override,
    ),
    Directive(
        name="SetHandler",
        group=GROUP,
        contexts=D,
        syntax=TAKE1,
        usage="handler",
        default=None,
        doc=(
            "A handler name that overrides any other configured handler (mpmd has server-status, "
            "metrics, balancer-manager and none)"
        ),
        validate=v_string,
    ),
    Directive(
        name="Require",
        group=GROUP,
        contexts=D,
        syntax=ITERATE,
        usage="[not] all|ip|local|host ...",
        default=None,
        doc="Selects which authenticated users or groups may access a protected space",
        validate=v_require,
        repeatable=True,
    ),
)
