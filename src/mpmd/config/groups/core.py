"""The server's identity and process: ServerRoot, ServerName, User, LoadModule ..."""

from __future__ import annotations

from mpmd.config.declaration import FLAG, ITERATE, SV, TAKE1, TAKE2, Directive, S, V
from mpmd.config.validators import v_flag, v_load_module, v_string, v_strings

GROUP = "core"
TITLE = "Server"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="ServerRoot",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="path",
        default=None,
        default_doc="(directory of the config file)",
        doc="Common directory of server-related files (logs, confs, etc.)",
        validate=v_string,
    ),
    Directive(
        name="ServerName",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="[scheme://]host[:port]",
        default=None,
        default_doc="(the host name)",
        doc="The hostname and port of the server",
        validate=v_string,
    ),
    Directive(
        name="ServerAlias",
        group=GROUP,
        contexts=V,
        syntax=ITERATE,
        usage="name ...",
        default=None,
        doc="A name or names alternately used to access the server",
        validate=v_strings,
        repeatable=True,
    ),
    Directive(
        name="ServerAdmin",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="email",
        default="[no address given]",
        doc="The email address of the server administrator",
        validate=v_string,
    ),
    Directive(
        name="User",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="name|#uid",
        default=None,
        doc="Effective user id for this server",
        validate=v_string,
    ),
    Directive(
        name="Group",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="name|#gid",
        default=None,
        doc="Name or number of group to run httpd as",
        validate=v_string,
    ),
    Directive(
        name="LoadModule",
        group=GROUP,
        contexts=S,
        syntax=TAKE2,
        usage="module file",
        default=None,
        doc=(
            "A module name and the name of a shared object file to load it from (mpmd reads it to "
            "pick the MPM and for <IfModule>)"
        ),
        validate=v_load_module,
        repeatable=True,
    ),
    Directive(
        name="ExtendedStatus",
        group=GROUP,
        contexts=S,
        syntax=FLAG,
        usage="On|Off",
        default=False,
        default_doc="Off (On when status_module is loaded)",
        doc='"On" to track extended status information, "Off" to disable',
        validate=v_flag,
    ),
)
